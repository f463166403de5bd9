// p2pshare's page: draws what the node's JSON API tells and keeps it live
// with the node's event stream (/api/events).  Plain JavaScript, no build
// step, nothing fetched from another host.
//
// Everything shown comes from peers or from file names on disk, so nothing
// is ever put into the page as HTML: elements are built with el() and text
// goes in as text.
"use strict";

(() => {
  // The node puts the token for state-changing requests into the page it
  // serves; the session cookie that goes with it is HttpOnly.
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;

  // Rates and completion change without an event saying so: the figures
  // that move on their own are asked for again this often while connected.
  const POLL_MS = 2000;
  // Lists that change only when something happens are also refreshed now
  // and then, in case an event was missed across a reconnect.
  const SLOW_POLL_MS = 15000;
  // Reconnecting after the node went away: first try soon, then back off.
  const RETRY_MS = [1000, 2000, 4000, 8000];

  const $ = (selector) => document.querySelector(selector);

  // ---------------------------------------------------------------------
  // Formatting for people

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  /** 1536 -> "1.5 KiB": binary units, three significant digits. */
  function humanBytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    let i = 0;
    let v = Math.max(0, n);
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i += 1;
    }
    const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
    return `${v.toFixed(digits)} ${UNITS[i]}`;
  }

  /** Bytes per second -> "12.3 MiB/s"; nothing moving is a dash, not "0 B/s". */
  function humanRate(bps) {
    if (!bps || bps < 1) return "–";
    return `${humanBytes(bps)}/s`;
  }

  /** Seconds -> "1 h 5 min", "3 min 20 s", "12 s". */
  function humanDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} days`;
  }

  /** A unix time -> "just now", "4 min ago", "2 h ago", or a date. */
  function relativeTime(unix) {
    if (!unix) return "–";
    const ago = Date.now() / 1000 - unix;
    if (ago < 5) return "just now";
    if (ago < 60) return `${Math.floor(ago)} s ago`;
    if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
    if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
    return new Date(unix * 1000).toLocaleDateString();
  }

  /** 97.25 -> "97 %", but 99.99 -> "99.9 %": never "100 %" until it is. */
  function percent(p) {
    if (p === null || p === undefined || !isFinite(p)) return "–";
    if (p >= 100) return "100 %";
    if (p >= 99) return `${(Math.floor(p * 10) / 10).toFixed(1)} %`;
    return `${Math.floor(p)} %`;
  }

  /** A readable id is long: show its start, the whole in a tooltip. */
  function shortId(id) {
    return id && id.length > 17 ? `${id.slice(0, 15)}…` : id || "";
  }

  // ---------------------------------------------------------------------
  // Building elements

  /** el("td", {class: "num"}, "text", child...) -- children as text or nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** A relative time that the clock tick keeps current (see tickTimes). */
  function timeEl(unix, prefix) {
    const node = el("time", {
      "data-ts": unix || "",
      "data-prefix": prefix || "",
      datetime: unix ? new Date(unix * 1000).toISOString() : null,
      title: unix ? new Date(unix * 1000).toLocaleString() : null,
    });
    node.textContent = (prefix || "") + relativeTime(unix);
    return node;
  }

  /** Relative times age: rewrite each once a second. */
  function tickTimes() {
    for (const node of document.querySelectorAll("time[data-ts]")) {
      const unix = Number(node.dataset.ts);
      node.textContent = node.dataset.prefix + relativeTime(unix);
    }
  }

  /** Set text only when it changed, so selection and hovering survive a poll. */
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /**
   * Make container's children one per item, keyed by key(item): existing
   * elements are updated in place (a progress bar keeps its element as its
   * value grows), new ones created, gone ones removed, in the items' order.
   */
  function syncChildren(container, items, key, create, update) {
    const old = new Map();
    for (const child of container.children) old.set(child.dataset.key, child);
    let previous = null;
    for (const item of items) {
      const k = String(key(item));
      let node = old.get(k);
      if (node) {
        old.delete(k);
      } else {
        node = create(item);
        node.dataset.key = k;
      }
      update(node, item);
      const next = previous ? previous.nextSibling : container.firstChild;
      if (node !== next) container.insertBefore(node, next);
      previous = node;
    }
    for (const gone of old.values()) gone.remove();
  }

  /** Show a card's "nothing here" line when its list is empty. */
  function showEmpty(name, items) {
    const empty = $(`#${name}-empty`);
    if (empty) empty.hidden = items.length > 0;
    const count = $(`#${name}-count`);
    if (count) setText(count, items.length ? String(items.length) : "");
  }

  // ---------------------------------------------------------------------
  // Talking to the node

  /** An error the node explained: {"error": "..."} with its HTTP status. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function request(method, path, body) {
    const options = { method, headers: { Accept: "application/json" },
                      credentials: "same-origin" };
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = CSRF;
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body || {});
    }
    const response = await fetch(path, options);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && data.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  const getJSON = (path) => request("GET", path);
  const post = (path, body) => request("POST", path, body);

  // ---------------------------------------------------------------------
  // Drawing each part of the page

  function renderStatus(status) {
    setText($("#node-name"), status.name || "(unnamed)");
    document.title = `${status.name || "p2pshare"} · p2pshare`;
    const id = $("#node-id");
    setText(id, status.id_readable || status.id || "");
    id.title = status.id || "";
    setText($("#node-version"), status.version ? `v${status.version}` : "");
    setText($("#folder-path"), status.share || "");
    setText($("#node-mode"), [status.mode, status.tls ? "TLS" : null].filter(Boolean).join(" · "));
    syncChildren($("#node-addresses"), status.addresses || [], (a) => a,
      (a) => el("li", {}, a), () => {});
    const pause = $("#pause");
    pause.dataset.paused = String(Boolean(status.paused));
    setText(pause, status.paused ? "Resume" : "Pause");
    renderFolder(status.folder || {});
  }

  // The folder as last heard of: progress events move its bar between polls.
  let folderNow = {};

  function renderFolder(folder) {
    folderNow = folder;
    const state = folder.state || "";
    const badge = $("#folder-state");
    badge.dataset.state = state;
    setText(badge, state === "in sync" ? "In sync" : state === "syncing" ? "Syncing"
      : state === "paused" ? "Paused" : state);
    const bar = $("#folder-progress");
    bar.value = state === "in sync" ? 100 : Math.min(folderPercent(folder), 99.9);
    bar.classList.toggle("done", state === "in sync");
    setText($("#folder-percent"), state === "in sync" ? "" : percent(bar.value));
    setText($("#folder-local"), `${count(folder.files, "file")}, ${humanBytes(folder.bytes)}`);
    setText($("#folder-need"), folder.need_files
      ? `${count(folder.need_files, "file")}, ${humanBytes(folder.need_bytes)}` : "nothing");
    const rate = folderRate(folder);
    setText($("#folder-rate"), humanRate(rate));
    const eta = folder.eta ?? (rate ? (folder.need_bytes || 0) / rate : null);
    setText($("#folder-eta"), folder.need_files ? humanDuration(eta) : "–");
  }

  /**
   * The node's folder rate is measured over the last seconds and reads 0
   * as a transfer starts; the transfers' own rates show the movement then.
   */
  function folderRate(folder) {
    if (folder.rate) return folder.rate;
    let sum = 0;
    for (const t of transfers.values()) if (t.state === "running") sum += t.rate || 0;
    return sum;
  }

  /**
   * How much of what we should hold we hold.  The folder's bytes are the
   * files already in our index and need_bytes what is still lacking: the
   * bytes of files on their way are in neither, so they come from the
   * transfers in flight.
   */
  function folderPercent(folder) {
    let arriving = 0;
    for (const t of transfers.values()) {
      if (t.state === "running" || t.state === "waiting") arriving += t.done || 0;
    }
    const have = (folder.bytes || 0) + arriving;
    const total = have + (folder.need_bytes || 0);
    return total ? 100 * have / total : 100;
  }

  function count(n, noun) {
    const k = n || 0;
    return `${k.toLocaleString()} ${noun}${k === 1 ? "" : "s"}`;
  }

  function renderPeers(peers) {
    syncChildren($("#peers tbody"), peers, (p) => p.id, createPeerRow, updatePeerRow);
    showEmpty("peers", peers);
  }

  function createPeerRow(peer) {
    const row = el("tr", { "data-peer-id": peer.id });
    row.append(
      el("td", { class: "peer-name" }),
      el("td", {}, el("code", { class: "mono", title: peer.id_readable || peer.id },
                      shortId(peer.id_readable || peer.id))),
      el("td", { class: "mono" }),
      el("td", { class: "direction" }),
      el("td", {}, timeEl(peer.since)),
      el("td", { class: "num rate-in" }),
      el("td", { class: "num rate-out" }),
      el("td", {}, el("div", { class: "completion" },
                      el("progress", { max: 100, value: 0 }), el("span"))),
    );
    return row;
  }

  function updatePeerRow(row, peer) {
    const cells = row.children;
    setText(cells[0], peer.name || "");
    setText(cells[2], peer.address || "");
    setText(cells[3], peer.direction === "in" ? "↓ inbound" : "↑ outbound");
    cells[3].title = peer.direction === "in" ? "It connected to us" : "We connected to it";
    const since = cells[4].firstChild;
    since.dataset.ts = peer.since || "";
    cells[5].textContent = humanRate(peer.rate_in);
    cells[5].title = `${humanBytes(peer.bytes_in)} received`;
    cells[6].textContent = humanRate(peer.rate_out);
    cells[6].title = `${humanBytes(peer.bytes_out)} sent`;
    const bar = cells[7].querySelector("progress");
    bar.value = peer.completion || 0;
    setText(cells[7].querySelector("span"), percent(peer.completion));
  }

  /** Nodes the allow-list turned away; approving one lets it in next time it dials. */
  function renderPending(pending) {
    $("#pending-card").hidden = pending.length === 0;
    syncChildren($("#pending tbody"), pending, (p) => p.id, (p) => {
      const approve = el("button", { type: "button", class: "small primary" }, "Approve");
      approve.addEventListener("click", () => act(approve, "/api/approve", { id: p.id },
                                                  `Approved ${shortId(p.id_readable || p.id)}`,
                                                  refreshLists));
      return el("tr", { "data-pending-id": p.id },
        el("td", {}, el("code", { class: "mono", title: p.id_readable || p.id },
                        shortId(p.id_readable || p.id))),
        el("td", { class: "mono" }, p.address || ""),
        el("td", {}, timeEl(p.time)),
        el("td", { class: "num" }, p.attempts || ""),
        el("td", { class: "num" }, approve));
    }, (row, p) => { setText(row.children[3], String(p.attempts || "")); });
  }

  // Transfers as last heard of, by id: progress events update one between
  // the polls that bring the whole list.
  const transfers = new Map();

  function renderTransfers(list) {
    transfers.clear();
    for (const t of list) transfers.set(String(t.id), t);
    drawTransfers();
  }

  // What is moving comes first, then what waits, then what ended, newest first.
  const TRANSFER_ORDER = { running: 0, waiting: 1, failed: 2, done: 3 };

  function byInterest(a, b) {
    const rank = (t) => TRANSFER_ORDER[t.state] ?? 1;
    return rank(a) - rank(b) || (b.finished || 0) - (a.finished || 0)
      || String(a.path).localeCompare(String(b.path));
  }

  function drawTransfers() {
    const list = [...transfers.values()].sort(byInterest);
    syncChildren($("#transfers"), list, (t) => t.id, createTransfer, updateTransfer);
    showEmpty("transfers", list);
    renderFolder(folderNow);
  }

  function createTransfer(t) {
    return el("li", { "data-transfer-id": t.id },
      el("div", { class: "transfer-line" },
        el("span", { class: "transfer-path", title: t.path }, t.path),
        el("span", { class: "transfer-meta" })),
      el("progress", { "data-path": t.path, max: Math.max(t.size || 0, 1), value: 0 }));
  }

  function updateTransfer(item, t) {
    item.dataset.state = t.state || "";
    const bar = item.querySelector("progress");
    bar.max = Math.max(t.size || 0, 1);
    bar.value = Math.min(t.done || 0, bar.max);
    const who = t.peer_name || shortId(t.peer);
    const way = who ? (t.direction === "up" ? `to ${who}` : `from ${who}`) : "";
    const pct = t.size ? percent(100 * (t.done || 0) / t.size) : "";
    const parts = [way, `${humanBytes(t.done)} of ${humanBytes(t.size)}`, pct];
    if (t.state === "running") parts.push(humanRate(t.rate), `${humanDuration(t.eta)} left`);
    else if (t.state) parts.push(t.state);
    setText(item.querySelector(".transfer-meta"), parts.filter(Boolean).join(" · "));
  }

  function renderChanges(changes) {
    syncChildren($("#changes"), changes, (c) => `${c.time}|${c.path}|${c.action}`, (c) =>
      el("li", { "data-path": c.path },
        el("span", { class: "path", title: c.path },
          el("span", { class: "action", "data-action": c.action }, c.action), c.path),
        el("span", { class: "meta" }, c.by ? `${c.by} · ` : "", timeEl(c.time))),
    () => {});
    showEmpty("changes", changes);
  }

  function renderDoctor(report) {
    const lines = (report && report.lines) || [];
    syncChildren($("#doctor"), lines, (line) => line, (line) => el("li", {}, line), () => {});
    showEmpty("doctor", lines);
  }

  /** Conflict copies, each with the file it is a copy of. */
  function renderConflicts(items) {
    syncChildren($("#conflicts"), items, (c) => c.path, (c) =>
      el("li", { "data-path": c.path },
        el("span", { class: "path mono", title: c.path }, c.path),
        el("span", { class: "meta" }, c.original ? `of ${c.original} · ` : "",
           humanBytes(c.size))),
    () => {});
    showEmpty("conflicts", items);
  }

  /**
   * What is not synced: the .p2pignore patterns in force, what the last
   * scan had to skip, and why .p2pignore could not be used, if it could not.
   */
  function renderIgnored(ignored) {
    const items = [];
    if (ignored.error) items.push({ key: `error|${ignored.error}`, kind: "error",
                                    text: ignored.error });
    for (const p of ignored.patterns || []) items.push({ key: `p|${p}`, kind: "pattern", text: p });
    for (const s of ignored.skipped || []) items.push({ key: `s|${s}`, kind: "skipped", text: s });
    syncChildren($("#ignored"), items, (i) => i.key, (i) =>
      el("li", { "data-kind": i.kind },
        el("span", { class: "path mono", title: i.text }, i.text),
        el("span", { class: "meta" }, i.kind === "pattern" ? ".p2pignore"
          : i.kind === "skipped" ? "skipped" : "error")),
    () => {});
    showEmpty("ignored", items);
  }

  /** The trash can: each version kept, newest first, with a Restore button. */
  function renderTrash(items) {
    syncChildren($("#trash"), items, (t) => t.trashed, (t) => {
      const restore = el("button", { type: "button", class: "small" }, "Restore");
      restore.addEventListener("click", () => act(restore, "/api/restore",
        { trashed: t.trashed }, `Restored ${t.original}`, refreshLists));
      return el("li", { "data-path": t.original, "data-trashed": t.trashed },
        el("span", { class: "path mono", title: t.trashed }, t.original),
        el("span", { class: "meta" }, `${humanBytes(t.size)} · `, timeEl(t.time, "deleted "),
           " ", restore));
    }, () => {});
    showEmpty("trash", items);
  }

  // ---------------------------------------------------------------------
  // Actions

  let toastTimer = null;

  /** Say something briefly at the bottom of the page. */
  function toast(message, isError) {
    const box = $("#toast");
    box.textContent = message;
    box.classList.toggle("error", Boolean(isError));
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 6000 : 3000);
  }

  /**
   * POST an action, with its button disabled until the node answers: a
   * second click must not send it twice.  The node's error, if any, is
   * shown as it wrote it.
   */
  async function act(button, path, body, done, then) {
    button.disabled = true;
    try {
      await post(path, body);
      if (done) toast(done);
      await (then || refreshFast)();
    } catch (e) {
      toast(e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  function wireActions() {
    $("#rescan").addEventListener("click", (e) =>
      act(e.currentTarget, "/api/rescan", {}, "Rescanning the folder", refreshAll));
    $("#pause").addEventListener("click", (e) => {
      const paused = e.currentTarget.dataset.paused === "true";
      act(e.currentTarget, paused ? "/api/resume" : "/api/pause", {},
          paused ? "Sync resumed" : "Sync paused");
    });
    $("#connect-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = $("#connect-address");
      const address = input.value.trim();
      if (!address) return;
      act(e.submitter || e.target.querySelector("button"), "/api/connect", { address },
          `Connecting to ${address}`).then(() => { input.value = ""; });
    });
  }

  // ---------------------------------------------------------------------
  // Keeping the page live

  /** Ask for the figures that move on their own. */
  async function refreshFast() {
    const [status, peers, list] = await Promise.all([
      getJSON("/api/status"), getJSON("/api/peers"), getJSON("/api/transfers")]);
    renderStatus(status);
    renderPeers(peers);
    renderTransfers(list);
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
   * Run a refresh; a failure to reach the node is shown by the banner (the
   * event stream notices too), not thrown at the console.
   */
  function quietly(refresh) {
    return refresh().catch((e) => {
      if (e instanceof ApiError && e.status === 401) sessionExpired();
      else if (!(e instanceof ApiError)) setLive(false, "The node does not answer.");
      else toast(e.message, true);
    });
  }

  /**
   * Several events in a burst (a folder of files fetched) should cost one
   * refresh, not one each: coalesce by name within a short window.
   */
  const pending = new Map();
  function soon(name, refresh, delay = 250) {
    if (pending.has(name)) return;
    pending.set(name, setTimeout(() => {
      pending.delete(name);
      quietly(refresh);
    }, delay));
  }

  /** Changes found here or applied from peers: the lists and the figures move. */
  function changed() {
    soon("lists", refreshLists);
    soon("fast", refreshFast);
  }

  /** What each event of the stream changes on the page. */
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
    fetched: changed,
    progress: (data) => {
      // A progress event carries the transfer's moving figures; the rest
      // (its peer, its direction) came with the last poll.
      if (data.id === undefined) return;
      const key = String(data.id);
      transfers.set(key, Object.assign(transfers.get(key) || {}, data));
      drawTransfers();
    },
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

  /**
   * The node's own "error" events and the stream's failures arrive at the
   * same listener: only the node's carry data.
   */
  function onStreamErrorOrEvent(event) {
    if (event instanceof MessageEvent) {
      const data = parseData(event);
      toast(data.message || "The node reported an error", true);
    } else {
      onStreamError();
    }
  }

  let source = null;
  let retries = 0;
  let retryTimer = null;

  /** Open the event stream; on each (re)connection bring everything up to date. */
  function connectEvents() {
    clearTimeout(retryTimer);
    source = new EventSource("/api/events", { withCredentials: true });
    source.addEventListener("open", () => {
      retries = 0;
      setLive(true);
      quietly(refreshAll);
    });
    source.addEventListener("error", onStreamErrorOrEvent);
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
   * The browser retries a dropped stream by itself; but once the node has
   * answered with an error (it restarted and forgot our session, say) the
   * stream is closed for good, and reconnecting is up to us.
   */
  function onStreamError() {
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
      else onStreamError();
    }
  }

  /**
   * A restarted node has a new session: only loading the page again gets
   * its cookie and token.
   */
  function sessionExpired() {
    setLive(false, "The node restarted; loading the page again…");
    window.location.reload();
  }

  let live = false;

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
})();
