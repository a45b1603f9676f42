// The Schedules panel: periodic tasks from GET /queue/schedules (name, cron or interval, next
// run, paused), read with the snapshot's cadence. Steering them is the CLI's and the API's.

import { badge, el, fillTable, fmtInt } from "./dom.js";

function when(s) {
  if (s.cron !== null && s.cron !== undefined) return s.tz === "UTC" ? s.cron : `${s.cron} (${s.tz})`;
  return `every ${s.every} s`;
}

export function renderSchedules(body) {
  const rows = body.items.map((s) =>
    el(
      "tr",
      { data: { schedule: s.name } },
      el("td", { class: "mono name", text: s.name, title: `${s.type} on ${s.queue}` }),
      el("td", { class: "mono", text: when(s) }),
      el("td", { class: "num", text: new Date(s.next_run).toLocaleString(), title: s.next_run }),
      el("td", {}, s.paused ? badge("paused") : badge("active")),
    ),
  );
  fillTable("schedules-table", rows, "schedules-empty");
  document.getElementById("schedules-count").textContent = body.items.length ? fmtInt(body.items.length) : "";
}
