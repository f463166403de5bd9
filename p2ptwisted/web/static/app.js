// p2pshare's page: draws what the node's JSON API tells and keeps it live
// with the node's event stream (/api/events).  Plain JavaScript modules, no
// build step, nothing fetched from another host.  This module: the
// actions, the refreshes, the event stream and reconnecting to it.

import { ApiError, getJSON, post } from "./api.js";
import { $, setText, tickTimes, toast } from "./dom.js";
import {
  renderChanges, renderConflicts, renderDoctor, renderFolder, renderIgnored, renderPeers,
  renderPending, renderStatus, renderTransfers, renderTrash, updateTransferFigures,
} from "./views.js";

// Rates and completion change without an event saying so: the figures
// that move on their own are asked for again this often while connected.
const POLL_MS = 2000;
// Lists that change only when something happens are also refreshed now
// and then, in case an event was missed across a reconnect.
const SLOW_POLL_MS = 15000;
// Reconnecting after the node went away: first try soon, then back off.
const RETRY_MS = [1000, 2000, 4000, 8000];
// A page loaded again for a fresh session this recently is not loaded
// again: the node refuses its sessions for another reason.
const RELOAD_GUARD_MS = 30000;

// ---------------------------------------------------------------------
// Refreshing

/** Ask for the figures that move on their own. */
async function refreshFast() {
  const [status, peers, transfers] = await Promise.all([
    getJSON("/api/status"), getJSON("/api/peers"), getJSON("/api/transfers")]);
  renderStatus(status);
  renderPeers(peers);
  renderTransfers(transfers);
}

/** Ask for the lists that change only when something happens. */
async function refreshLists() {
  const [changes, conflicts, ignored, trash, pending] = await Promise.all([
    getJSON("/api/changes?limit=50"), getJSON("/api/conflicts"), getJSON("/api/ignored"),
    getJSON("/api/trash"), getJSON("/api/pending")]);
  renderChanges(changes);
  renderConflicts(conflicts);
  renderIgnored(ignored);
  renderTrash(trash);
  renderPending(pending);
}

async function refreshDoctor() {
  renderDoctor(await getJSON("/api/doctor"));
}

const refreshAll = () => Promise.all([refreshFast(), refreshLists(), refreshDoctor()]);

/**
 * Run a refresh.  Failing to reach the node shows in the banner, not as an
 * uncaught error: the event stream notices too and reconnects.
 */
function quietly(refresh) {
  return refresh().catch((e) => {
    if (e instanceof ApiError && e.status === 401) sessionExpired();
    else if (e instanceof ApiError) toast(e.message, true);
    else setLive(false, "The node does not answer.");
  });
}

/**
 * Events come in bursts (a folder of files fetched): coalesce the
 * refreshes they ask for, by name, within a short window.
 */
const scheduled = new Map();
function soon(name, refresh, delay = 250) {
  if (scheduled.has(name)) return;
  scheduled.set(name, setTimeout(() => {
    scheduled.delete(name);
    quietly(refresh);
  }, delay));
}

// ---------------------------------------------------------------------
// Actions

/**
 * POST an action with its button disabled until the node answers (a second
 * click must not send it twice); say how it went, the node's error as it
 * wrote it.  Fires true when it was done.
 */
async function act(button, path, body, done, then = refreshFast) {
  button.disabled = true;
  try {
    await post(path, body);
    toast(done);
    await quietly(then);
    return true;
  } catch (e) {
    toast(e.message, true);
    return false;
  } finally {
    button.disabled = false;
  }
}

/** The buttons views.js puts into lists, by their data-act. */
const LIST_ACTIONS = {
  approve: (b) => act(b, "/api/approve", { id: b.dataset.id }, `Approved ${b.dataset.label}`,
                      refreshLists),
  restore: (b) => act(b, "/api/restore", { trashed: b.dataset.trashed },
                      `Restored ${b.dataset.label}`, refreshLists),
};

function wireActions() {
  $("#rescan").addEventListener("click", (e) =>
    act(e.currentTarget, "/api/rescan", {}, "Folder rescanned", refreshAll));
  $("#pause").addEventListener("click", (e) => {
    const paused = e.currentTarget.dataset.paused === "true";
    act(e.currentTarget, paused ? "/api/resume" : "/api/pause", {},
        paused ? "Sync resumed" : "Sync paused");
  });
  $("#connect-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#connect-address");
    const address = input.value.trim();
    if (!address) return;
    const button = e.target.querySelector("button");
    toast(`Connecting to ${address}…`);
    if (await act(button, "/api/connect", { address }, `Connected to ${address}`)) {
      input.value = "";
    }
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-act]");
    if (button && LIST_ACTIONS[button.dataset.act]) LIST_ACTIONS[button.dataset.act](button);
  });
}

// ---------------------------------------------------------------------
// The event stream

/** Changes found here or applied from peers: the lists and the figures move. */
function changed() {
  soon("lists", refreshLists);
  soon("fast", refreshFast);
}

/** What each event of the stream changes on the page (docs/api.md lists them). */
const HANDLERS = {
  "peer-connected": (data) => {
    toast(`${data.name || "A peer"} connected`);
    soon("fast", refreshFast);
  },
  "peer-lost": (data) => {
    toast(`${data.name || "A peer"} disconnected`);
    soon("fast", refreshFast);
  },
  "local-change": changed,
  "remote-change": changed,
  fetched: (data) => {
    // Ended well: the bar is full now, not at the next poll.
    updateTransferFigures({ id: data.id, path: data.path, done: data.size, size: data.size,
                            state: "done" });
    changed();
  },
  progress: updateTransferFigures,
  conflict: (data) => {
    toast(`Conflict: ${data.path || "a file"}`, true);
    soon("lists", refreshLists);
  },
  "folder-state": (data) => {
    if (data.state) renderFolder(data);
  },
  paused: () => soon("fast", refreshFast),
  pending: () => soon("lists", refreshLists),
};

let source = null;
let retries = 0;
let retryTimer = null;

/** Open the event stream; on each (re)connection bring everything up to date. */
function connectEvents() {
  clearTimeout(retryTimer);
  source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    retries = 0;
    setLive(true);
    quietly(refreshAll);
  });
  source.addEventListener("error", onErrorEvent);
  for (const [type, handle] of Object.entries(HANDLERS)) {
    source.addEventListener(type, (event) => handle(parseData(event)));
  }
}

function parseData(event) {
  try {
    return JSON.parse(event.data) || {};
  } catch (e) {
    return {};
  }
}

/**
 * The node's own "error" events and the stream's failures come to the
 * same listener: only the node's carry data.
 */
function onErrorEvent(event) {
  if (event instanceof MessageEvent) {
    toast(parseData(event).message || "The node reported an error", true);
  } else {
    streamFailed();
  }
}

/**
 * The browser retries a dropped stream by itself; but once the node has
 * answered with an error (it restarted and forgot our session, say) the
 * stream is closed for good, and reconnecting is up to us.
 */
function streamFailed() {
  setLive(false, "Reconnecting…");
  if (source.readyState !== EventSource.CLOSED) return;
  source.close();
  const delay = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
  retries += 1;
  setLive(false, `Reconnecting in ${Math.round(delay / 1000)} s…`);
  retryTimer = setTimeout(checkThenReconnect, delay);
}

/** Before opening the stream again, find out whether our session still holds. */
async function checkThenReconnect() {
  try {
    await getJSON("/api/status");
    connectEvents();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) sessionExpired();
    else streamFailed();
  }
}

/**
 * A restarted node has forgotten our session: only loading the page again
 * gets a new cookie and token.  Not in a loop, though.
 */
function sessionExpired() {
  const last = Number(sessionStorage.getItem("p2pshare-reloaded") || 0);
  if (Date.now() - last < RELOAD_GUARD_MS) {
    setLive(false, "The node refuses this page's session: load the page again.");
    return;
  }
  sessionStorage.setItem("p2pshare-reloaded", String(Date.now()));
  setLive(false, "The node restarted: loading the page again…");
  window.location.reload();
}

// ---------------------------------------------------------------------
// Live or not

let live = false;

/** The dot by the name, and the banner and faded figures when not live. */
function setLive(isLive, detail) {
  live = isLive;
  $("#banner").hidden = isLive;
  document.body.classList.toggle("offline", !isLive);
  if (detail) setText($("#banner-detail"), detail);
  const dot = $("#live-dot");
  dot.classList.toggle("live", isLive);
  dot.classList.toggle("lost", !isLive);
  dot.title = isLive ? "Live: updates as they happen" : "Not connected to the node";
}

function start() {
  wireActions();
  connectEvents();
  setInterval(tickTimes, 1000);
  setInterval(() => { if (live) quietly(refreshFast); }, POLL_MS);
  setInterval(() => { if (live) quietly(refreshLists); }, SLOW_POLL_MS);
  setInterval(() => { if (live) quietly(refreshDoctor); }, 4 * SLOW_POLL_MS);
}

start();
