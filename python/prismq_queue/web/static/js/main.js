// The dashboard: every update of its panels is rendered from one snapshot of the queue.
//
// One request (/queue/dashboard) returns everything the panels show, read from one state of the
// database, and one render draws all of them: the tiles, tables and workers never disagree, not
// even for a moment. Events say *that* something changed: they schedule the next snapshot
// (coalesced: one read per short delay however many events arrive). Workers' heartbeats write no
// event, so the snapshot is also read every few seconds. The chart follows the depth samples of
// the live stream; it is a history, not part of the snapshot.

import { api, ApiError, takeTokenFromUrl, token, urlHasToken, wsUrl } from "./api.js";
import { DepthChart } from "./chart.js";
import { setServerNow, tickAges } from "./dom.js";
import { LiveStream } from "./live.js";
import * as panels from "./panels.js";
import { renderSchedules } from "./schedules.js";

const $ = (id) => document.getElementById(id);

const retryNotes = new Map(); // task id -> {text, kind}: what the last Retry click said
let chart = null;
let live = null;
let started = false;

// ------------------------------------------------------------------ loading
const loaders = {
  async snapshot() {
    const s = await api("queue/dashboard");
    setServerNow(s.at);
    panels.renderTotals(s.totals, s.workers);
    panels.renderBreakdown(s);
    panels.renderRunning(s.running, openTask);
    panels.renderWorkers(s.workers, openTask);
    panels.renderFailures(s.failures, retryNotes, retry, openTask);
    panels.renderDeadLetters(s.dead_letters, retryNotes, retry, openTask);
    panels.renderLimits(s.limits || []);
  },
  async schedules() {
    renderSchedules(await api("queue/schedules"));
  },
  async history() {
    const body = await api("queue/history");
    if (!chart) chart = new DepthChart($("chart"), body.size);
    chart.mount();
    chart.reset(body.samples);
    $("chart-note").textContent = `a sample every ${body.interval} s, the last ${Math.round((body.interval * body.size) / 60)} min`;
  },
};

const pending = new Map(); // panel -> timer: reads already scheduled

/** Read `panel` in `delay` ms, unless a read of it is already scheduled. */
function schedule(panel, delay = 300) {
  if (pending.has(panel)) return;
  pending.set(
    panel,
    setTimeout(() => {
      pending.delete(panel);
      load(panel);
    }, delay),
  );
}

async function load(panel) {
  try {
    await loaders[panel]();
  } catch (e) {
    handleError(e, panel);
  }
}

function loadAll() {
  return Promise.all(Object.keys(loaders).map(load));
}

function handleError(e, what) {
  if (e instanceof ApiError && e.status === 401) {
    showPrompt(token.get() ? "The token was refused: it is not one this server knows." : "This dashboard needs a token to read the queue.");
  } else if (e instanceof ApiError && e.status === 403) {
    showPrompt(`This token may not read the whole queue (${e.detail}). Use a token with the 'read' scope for every project.`);
  } else {
    toast(`Could not load ${what}: ${e.detail || e.message}`, "error");
  }
}

// ------------------------------------------------------------------ live events
function onMessage(msg) {
  switch (msg.event) {
    case "ready": // (re)connected: what happened while we were away is only in the database
      loadAll();
      break;
    case "task.progress":
    case "task.status":
      schedule("snapshot", 250);
      break;
    case "task.created":
    case "queue.updated":
      schedule("snapshot", 1000);
      break;
    case "queue.depth":
      if (chart) chart.append([msg.data || {}]);
      break;
  }
}

function onState(state, detail) {
  $("conn-dot").className = `dot ${state}`;
  $("conn-text").textContent = { connecting: "connecting", live: "live", retrying: detail || "reconnecting", refused: "refused" }[state] || state;
}

// ------------------------------------------------------------------ actions
async function retry(taskId, button) {
  button.disabled = true;
  try {
    const body = await api(`queue/dead-letters/${taskId}/retry`, { method: "POST" });
    retryNotes.set(taskId, { text: `Re-queued (${body.status})`, kind: "ok" });
    toast(`Task #${taskId} is back in the queue.`, "ok");
  } catch (e) {
    const text =
      e.status === 403
        ? `Not allowed: ${e.detail}. Retrying needs a token with the 'write' scope.`
        : e.status === 409
          ? e.detail
          : `Retry failed: ${e.detail || e.message}`;
    retryNotes.set(taskId, { text, kind: "error" });
    toast(text, "error");
    if (e.status === 401) handleError(e, "retry");
  }
  await load("snapshot");
}

async function openTask(query) {
  const q = query.trim();
  if (!q) return;
  $("search-input").value = q;
  try {
    panels.renderSearch(await api(`queue/search?q=${encodeURIComponent(q)}`));
    $("search-results").hidden = false;
    $("search-results").scrollIntoView({ block: "nearest" });
  } catch (e) {
    if (e.status === 401 || e.status === 403) handleError(e, "the search");
    else toast(`Search: ${e.detail || e.message}`, "error");
  }
}

let toastTimer = null;
function toast(text, kind) {
  const node = $("toast");
  node.textContent = text;
  node.className = `toast ${kind}`;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 6000);
}

// ------------------------------------------------------------------ token prompt and start
function showPrompt(reason) {
  if (live) live.stop();
  live = null;
  started = false;
  $("dashboard").hidden = true;
  $("search-form").hidden = true;
  $("token-prompt").hidden = false;
  $("token-reason").textContent = reason;
  $("forget-token").hidden = !token.get();
  onState("refused");
  $("conn-text").textContent = "no access";
  $("token-input").focus();
}

async function start() {
  if (live) live.stop(); // (a new token: start over)
  live = null;
  retryNotes.clear();
  try {
    await api("queue/stats"); // one cheap read first: 401/403 shows the prompt, no panel flashes
  } catch (e) {
    handleError(e, "the queue");
    return;
  }
  started = true;
  $("token-prompt").hidden = true;
  $("dashboard").hidden = false;
  $("search-form").hidden = false;
  $("forget-token").hidden = !token.get();
  live = new LiveStream({
    url: wsUrl("queue/ws"),
    token: () => token.get(),
    onMessage,
    onState,
    onRefused: (status, detail) => handleError(new ApiError(status, detail), "live events"),
  });
  live.start(); // its "ready" loads every panel
}

function wire() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    token.set(value);
    $("token-input").value = "";
    start();
  });
  $("forget-token").addEventListener("click", () => {
    token.clear();
    showPrompt("Token forgotten.");
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openTask($("search-input").value);
  });
  $("search-close").addEventListener("click", () => ($("search-results").hidden = true));
  // A link with another #token= opened in this tab changes only the fragment: no page load.
  window.addEventListener("hashchange", () => {
    if (!urlHasToken()) return;
    takeTokenFromUrl();
    start();
  });
  setInterval(tickAges, 1000);
  setInterval(() => started && schedule("snapshot", 0), 5000);
  setInterval(() => started && schedule("schedules", 0), 5000);
  // uPlot is a deferred script: it has run by the time the window's load event fires.
  window.addEventListener("load", () => chart && chart.mount());
}

takeTokenFromUrl();
wire();
start();
