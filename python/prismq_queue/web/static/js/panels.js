// Rendering of each panel from the API's JSON. Pure DOM building: no fetching here.

import { ageCell, badge, el, fillTable, fmtInt, fmtPercent, json } from "./dom.js";

// What a failed task is doing now, in words an operator reads at a glance.
const NOW = {
  failed: ["failed", "dead letter"],
  queued: ["retrying", "retrying"],
  running: ["running", "running again"],
  completed: ["completed", "recovered"],
  cancelled: ["cancelled", "cancelled"],
};

/** A task id that opens the task in the search panel. */
function taskLink(id, onOpen) {
  return el("button", { class: "task-link", type: "button", title: "Show this task", onclick: () => onOpen(String(id)) }, `#${id}`);
}

function typeCell(task) {
  return el("td", { class: "names" }, el("span", { class: "type", text: task.type, title: task.type }), el("span", { class: "sub", text: task.queue, title: task.queue }));
}

function errorCell(text) {
  const first = (text || "").split("\n")[0];
  return el("td", { class: "error-text", title: text || "" }, first || "-");
}

function progressBar(progress) {
  const pct = Math.max(0, Math.min(100, progress ?? 0));
  const fill = el("span", { class: "fill" });
  fill.style.width = `${pct}%`; // CSSOM, allowed by the page's CSP (no inline style attribute)
  return el(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(pct) },
    fill,
  );
}

function progressText(t) {
  return [fmtPercent(t.progress), t.step, t.message].filter((x) => x !== "" && x !== null && x !== undefined).join(" · ");
}

export function renderTotals(totals, workers) {
  const set = (id, text) => (document.getElementById(id).textContent = text);
  set("tile-queued", fmtInt(totals.queued));
  // Parts of Queued, not more tasks: a task waiting to retry is queued (and not due yet).
  const parts = [];
  if (totals.retrying) parts.push(`${fmtInt(totals.retrying)} retrying`);
  if (totals.scheduled) parts.push(`${fmtInt(totals.scheduled)} not due yet`);
  set("tile-queued-parts", parts.length ? `incl. ${parts.join(", ")}` : "");
  set("tile-running", fmtInt(totals.running));
  set("tile-failed", fmtInt(totals.failed));
  set("dead-count", totals.failed ? fmtInt(totals.failed) : "");
  set("tile-completed", fmtInt(totals.completed));
  set("tile-workers", fmtInt(workers.active));
  set("tile-stale", workers.stale ? `${fmtInt(workers.stale)} stale` : "");
}

export function renderRunning(active, onOpen) {
  const rows = active.items.map((t) =>
    el(
      "tr",
      { data: { taskId: t.id, progress: t.progress ?? "" } },
      el("td", {}, taskLink(t.id, onOpen)),
      typeCell(t),
      el("td", { class: "wide" }, progressBar(t.progress), el("div", { class: "progress-text", text: progressText(t) })),
      el("td", { class: "mono name opt", text: t.locked_by || "-", title: t.locked_by }),
      t.started_at ? ageCell(t.started_at, { mode: "elapsed" }) : el("td", { class: "num", text: "-" }),
    ),
  );
  fillTable("running-table", rows, "running-empty");
  document.getElementById("running-count").textContent = active.count ? fmtInt(active.count) : "";
}

export function renderWorkers(body, onOpen) {
  const rows = body.workers.map((w) =>
    el(
      "tr",
      { data: { workerId: w.id } },
      el("td", { class: "mono name", title: w.id }, w.id, w.stale ? badge("stale") : null),
      el("td", { class: "sub-cell opt", text: [w.host, w.pid].filter(Boolean).join(" / ") || "-" }),
      ageCell(w.last_heartbeat),
      el("td", { class: "num opt", text: fmtInt(w.tasks_done) }),
      el(
        "td",
        { class: "chips" },
        w.current_tasks.length
          ? w.current_tasks.map((t) =>
              el("span", { class: "chip" }, taskLink(t.id, onOpen), ` ${t.type}`, t.progress != null ? ` ${fmtPercent(t.progress)}` : ""),
            )
          : el("span", { class: "sub", text: "idle" }),
      ),
    ),
  );
  fillTable("workers-table", rows, "workers-empty");
  document.getElementById("workers-count").textContent = body.workers.length ? fmtInt(body.workers.length) : "";
}

function countCells(row) {
  return [
    el("td", { class: "num", text: fmtInt(row.queued) }),
    el("td", { class: "num" + (row.retrying ? " warn" : ""), text: fmtInt(row.retrying) }),
    el("td", { class: "num", text: fmtInt(row.running) }),
    el("td", { class: "num" + (row.failed ? " bad" : ""), text: fmtInt(row.failed) }),
    el("td", { class: "num opt", text: fmtInt(row.cancelled) }),
    el("td", { class: "num opt", text: fmtInt(row.since_start.completed) }),
  ];
}

export function renderBreakdown(body) {
  fillTable(
    "queues-table",
    body.queues.map((r) => el("tr", { data: { queue: r.queue } }, el("td", { class: "mono name", text: r.queue, title: r.queue }), ...countCells(r))),
    "queues-empty",
  );
  fillTable(
    "types-table",
    body.types.map((r) =>
      el("tr", { data: { queue: r.queue, type: r.type } }, el("td", { class: "mono sub-cell name opt", text: r.queue, title: r.queue }), el("td", { class: "mono name", text: r.type, title: r.type }), ...countCells(r)),
    ),
    "types-empty",
  );
  document.getElementById("scan-limit").textContent = fmtInt(body.finished_scan_limit);
  document.getElementById("queues-note").textContent = body.since ? "done: since the server started" : "";
}

/** A limit's slots: "running / concurrency" with a bar, or per key ("1 per project"), or a count. */
function slotsCell(l) {
  if (l.concurrency === null || l.concurrency === undefined) {
    return el("td", { class: "wide", text: `${fmtInt(l.running)} running` });
  }
  if (l.per) {
    return el("td", { class: "wide", text: `${fmtInt(l.running)} running, at most ${fmtInt(l.concurrency)} per ${l.per}` });
  }
  const full = l.running >= l.concurrency;
  return el(
    "td",
    { class: "wide" + (full ? " warn" : "") },
    progressBar((100 * l.running) / l.concurrency),
    el("div", { class: "progress-text", text: `${fmtInt(l.running)} / ${fmtInt(l.concurrency)}${full ? " (full)" : ""}` }),
  );
}

export function renderLimits(limits) {
  const rows = limits.map((l) =>
    el(
      "tr",
      { data: { queue: l.queue, type: l.type ?? "" } },
      el("td", { class: "mono name", text: l.queue, title: l.queue }),
      el("td", { class: "mono name", text: l.type ?? "all types", title: l.type ?? "every task of the queue" }),
      slotsCell(l),
      el("td", { class: "num" + (l.waiting ? " warn" : ""), text: fmtInt(l.waiting) }),
      el("td", { class: "sub-cell", text: l.rate ? `${l.rate}, ${Math.floor(l.tokens ?? 0)} left now` : "-" }),
    ),
  );
  fillTable("limits-table", rows, "limits-empty");
  document.getElementById("limits-count").textContent = limits.length ? fmtInt(limits.length) : "";
}

/** The Retry cell: the button, and what the last click said (kept across re-renders). */
function retryCell(task, notes, onRetry) {
  const note = notes.get(task.id);
  const cell = el("td", { class: "actions" });
  if (task.status === "failed") {
    cell.append(el("button", { class: "retry", type: "button", data: { taskId: task.id }, onclick: (e) => onRetry(task.id, e.currentTarget) }, "Retry"));
  }
  if (note) cell.append(el("div", { class: `row-note ${note.kind}`, role: note.kind === "error" ? "alert" : null, text: note.text }));
  return cell;
}

export function renderFailures(body, notes, onRetry, onOpen) {
  const rows = body.items.map((f) => {
    const [cls, label] = NOW[f.task.status] || [f.task.status, f.task.status];
    return el(
      "tr",
      { data: { taskId: f.task.id, status: f.task.status } },
      el("td", {}, taskLink(f.task.id, onOpen)),
      typeCell(f.task),
      errorCell(f.error),
      el("td", { class: "now" }, badge(cls, label), el("span", { class: "sub", text: `attempt ${f.attempts}/${f.task.max_attempts}` })),
      ageCell(f.failed_at, { cls: "num opt" }),
      retryCell(f.task, notes, onRetry),
    );
  });
  fillTable("failures-table", rows, "failures-empty");
}

export function renderDeadLetters(body, notes, onRetry, onOpen) {
  const rows = body.items.map((t) =>
    el(
      "tr",
      { data: { taskId: t.id } },
      el("td", {}, taskLink(t.id, onOpen)),
      typeCell(t),
      errorCell(t.error),
      el("td", { class: "num opt", text: `${t.attempts}/${t.max_attempts}` }),
      ageCell(t.finished_at || t.updated_at, { cls: "num opt" }),
      retryCell(t, notes, onRetry),
    ),
  );
  fillTable("dead-table", rows, "dead-empty");
}

function field(label, value) {
  return [el("dt", { text: label }), el("dd", { text: value === null || value === undefined || value === "" ? "-" : value })];
}

function when(iso) {
  return iso ? `${new Date(iso).toLocaleString()}` : null;
}

/** Each failed attempt, its traceback shown on demand (a closed <details> per attempt). */
function attemptsSection(attempts) {
  if (!attempts || !attempts.length) return null;
  const gap = attempts[0].seq > 1 ? el("p", { class: "sub", text: `${attempts[0].seq - 1} earlier attempts not kept` }) : null;
  const items = attempts.map((a) =>
    el(
      "details",
      { class: "attempt", data: { seq: a.seq } },
      el(
        "summary",
        {},
        `#${a.seq} attempt ${a.number}/${a.max_attempts} · ${a.outcome} · ${a.worker || "-"} · ${when(a.finished_at)} · `,
        el("span", { class: "attempt-error", text: a.error.split("\n")[0] }),
      ),
      el("pre", { class: "json error-text", text: a.error }),
      a.traceback ? el("pre", { class: "json traceback", text: a.traceback }) : el("p", { class: "empty", text: "No traceback for this attempt." }),
    ),
  );
  return [el("h4", { text: `Failed attempts (${attempts.length})` }), gap, ...items];
}

export function renderSearch(body) {
  document.getElementById("search-query").textContent = body.query;
  const container = document.getElementById("search-body");
  if (!body.matches.length) {
    container.replaceChildren(el("p", { class: "empty", text: `No task has the id or idempotency key "${body.query}".` }));
    return;
  }
  container.replaceChildren(
    ...body.matches.map(({ matched_by: how, task: t, logs, failed_attempts: attempts }) =>
      el(
        "article",
        { class: "task-detail", data: { taskId: t.id } },
        el("h3", {}, `Task #${t.id} `, badge(t.status), el("span", { class: "sub", text: `found by ${how === "id" ? "id" : "idempotency key"}` })),
        el(
          "dl",
          { class: "fields" },
          field("Type", t.type),
          field("Queue", t.queue),
          field("Priority", t.priority),
          field("Attempts", `${t.attempts}/${t.max_attempts}`),
          field("Idempotency key", t.idempotency_key),
          field("Progress", progressText(t)),
          field("Worker", t.locked_by),
          field("Created", when(t.created_at)),
          field("Started", when(t.started_at)),
          field("Finished", when(t.finished_at)),
        ),
        el("h4", { text: "Payload" }),
        el("pre", { class: "json", text: json(t.payload) }),
        t.result !== null && t.result !== undefined ? [el("h4", { text: "Result" }), el("pre", { class: "json", text: json(t.result) })] : null,
        t.error ? [el("h4", { text: "Error" }), el("pre", { class: "json error-text", text: t.error })] : null,
        attemptsSection(attempts),
        el("h4", { text: `Log (${logs.length})` }),
        logs.length
          ? el(
              "table",
              { class: "table log" },
              el("tbody", {}, logs.map((l) => el("tr", {}, el("td", { class: "mono sub-cell", text: when(l.at) }), el("td", {}, badge(`log-${l.level}`, l.level)), el("td", { class: "wide", text: l.message })))),
            )
          : el("p", { class: "empty", text: "No log line." }),
      ),
    ),
  );
}
