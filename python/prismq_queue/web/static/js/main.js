// The dashboard: loads each panel from the API, then keeps it current from the live stream.
//
// Events say *that* something changed; panels are re-read from the API (coalesced: one read per
// panel per short delay however many events arrive), except progress, which moves the bar in
// place so it follows a handler step by step. Workers' heartbeats write no event, so the workers
// panel is also polled, and every panel is re-read now and then in case an event was missed
// while reconnecting.

import { api, ApiError, takeTokenFromUrl, token, urlHasToken, wsUrl } from "./api.js";
import { DepthChart } from "./chart.js";
import { setServerNow, tickAges } from "./dom.js";
import { LiveStream } from "./live.js";
import * as panels from "./panels.js";

const $ = (id) => document.getElementById(id);

const retryNotes = new Map(); // task id -> {text, kind}: what the last Retry click said
let chart = null;
let live = null;
let started = false;
let lastTotals = null;
let lastWorkers = null;

// ------------------------------------------------------------------ loading the panels
const loaders = {
  async breakdown() {
    const body = await api("queue/breakdown");
    setServerNow(body.at);
    lastTotals = body.totals;
    panels.renderBreakdown(body);
    panels.renderTotals(lastTotals, lastWorkers);
  },
  async active() {
    panels.renderRunning(await api("queue/active?limit=100"), openTask);
  },
  async workers() {
    lastWorkers = await api("queue/workers");
    panels.renderWorkers(lastWorkers, openTask);
    panels.renderTotals(null, lastWorkers);
  },
  async failures() {
    panels.renderFailures(await api("queue/failures?limit=25"), retryNotes, retry, openTask);
  },
  async dead() {
    const body = await api("queue/dead-letters?limit=25");
    panels.renderDeadLetters(body, retryNotes, retry, openTask);
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
  const d = msg.data || {};
  switch (msg.event) {
    case "ready": // (re)connected: what happened while we were away is only in the database
      loadAll();
      break;
    case "task.progress":
      if (!panels.updateProgress(d)) schedule("active");
      break;
    case "task.created":
      schedule("breakdown", 2000);
      break;
    case "task.status":
      schedule("active");
      schedule("workers", 500);
      schedule("failures", 500);
      schedule("dead", 500);
      schedule("breakdown", 2000);
      break;
    case "queue.updated":
      schedule("breakdown", 2000);
      break;
    case "queue.depth":
      if (chart) chart.append([d]);
      lastTotals = { ...(lastTotals || {}), ...d };
      panels.renderTotals(lastTotals, null);
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
  await Promise.all([load("failures"), load("dead")]);
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
  setInterval(() => started && schedule("workers", 0), 5000);
  setInterval(() => started && ["breakdown", "active", "failures", "dead"].forEach((p) => schedule(p, 0)), 30000);
  // uPlot is a deferred script: it has run by the time the window's load event fires.
  window.addEventListener("load", () => chart && chart.mount());
}

takeTokenFromUrl();
wire();
start();
