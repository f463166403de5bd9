// Each part of the page drawn from what the API returned.  Buttons inside
// lists (approve, restore) carry what they act on in data-act and data-*
// attributes; app.js handles their clicks in one place.

import { $, el, setText, showEmpty, syncChildren, timeEl } from "./dom.js";
import {
  count, humanBytes, humanDuration, humanRate, percent, shortId,
} from "./format.js";

// Transfers as last heard of, by id: progress events update one between
// the polls that bring the whole list.
const transfers = new Map();

// The folder as last heard of: progress events move its bar between polls.
let folderNow = {};

export function renderStatus(status) {
  setText($("#node-name"), status.name || "(unnamed)");
  document.title = `${status.name || "p2pshare"} · p2pshare`;
  const id = $("#node-id");
  setText(id, status.id_readable || status.id || "");
  id.title = status.id || "";
  setText($("#node-version"), status.version ? `v${status.version}` : "");
  setText($("#folder-path"), status.share || "");
  setText($("#node-mode"), [status.mode, status.tls ? "TLS" : null].filter(Boolean).join(" · "));
  syncChildren($("#node-addresses"), status.addresses || [], (a) => a, (a) => el("li", {}, a));
  const pause = $("#pause");
  pause.dataset.paused = String(Boolean(status.paused));
  setText(pause, status.paused ? "Resume" : "Pause");
  renderFolder(status.folder || {});
}

const STATE_NAMES = { "in sync": "In sync", syncing: "Syncing", paused: "Paused" };

export function renderFolder(folder) {
  folderNow = folder;
  const state = folder.state || "";
  const badge = $("#folder-state");
  badge.dataset.state = state;
  setText(badge, STATE_NAMES[state] || state);
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

export function renderPeers(peers) {
  syncChildren($("#peers tbody"), peers, (p) => p.id, createPeerRow, updatePeerRow);
  showEmpty("peers", peers);
}

function idCode(node) {
  const id = node.id_readable || node.id;
  return el("code", { class: "mono", title: id }, shortId(id));
}

function createPeerRow(peer) {
  return el("tr", { "data-peer-id": peer.id },
    el("td", { class: "peer-name" }),
    el("td", {}, idCode(peer)),
    el("td", { class: "mono" }),
    el("td", { class: "direction" }),
    el("td", {}, timeEl(peer.since)),
    el("td", { class: "num rate-in" }),
    el("td", { class: "num rate-out" }),
    el("td", {}, el("div", { class: "completion" },
                    el("progress", { max: 100, value: 0, "aria-label": "completion" }),
                    el("span"))));
}

function updatePeerRow(row, peer) {
  const cells = row.children;
  setText(cells[0], peer.name || "");
  setText(cells[2], peer.address || "");
  const inbound = peer.direction === "in";
  setText(cells[3], inbound ? "↓ inbound" : "↑ outbound");
  cells[3].title = inbound ? "It connected to us" : "We connected to it";
  cells[4].firstChild.dataset.ts = peer.since || "";
  setText(cells[5], humanRate(peer.rate_in));
  cells[5].title = `${humanBytes(peer.bytes_in)} received`;
  setText(cells[6], humanRate(peer.rate_out));
  cells[6].title = `${humanBytes(peer.bytes_out)} sent`;
  cells[7].querySelector("progress").value = peer.completion || 0;
  setText(cells[7].querySelector("span"), percent(peer.completion));
}

/** Nodes the allow-list turned away; approving one lets it in next time it dials. */
export function renderPending(pending) {
  $("#pending-card").hidden = pending.length === 0;
  syncChildren($("#pending tbody"), pending, (p) => p.id, (p) =>
    el("tr", { "data-pending-id": p.id },
      // The whole id: it is what a person compares before letting a node in.
      el("td", {}, el("code", { class: "mono" }, p.id_readable || p.id)),
      el("td", { class: "mono" }, p.address || ""),
      el("td", {}, timeEl(p.time)),
      el("td", { class: "num" }),
      el("td", { class: "num" },
         el("button", { type: "button", class: "small primary", "data-act": "approve",
                        "data-id": p.id, "data-label": shortId(p.id_readable || p.id) },
            "Approve"))),
  (row, p) => setText(row.children[3], String(p.attempts || "")));
}

export function renderTransfers(list) {
  transfers.clear();
  for (const t of list) transfers.set(String(t.id), t);
  drawTransfers();
}

/** A progress event: the transfer's moving figures; its peer came with the last poll. */
export function updateTransferFigures(data) {
  if (data.id === undefined) return;
  const key = String(data.id);
  transfers.set(key, Object.assign(transfers.get(key) || {}, data));
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
    el("progress", { "data-path": t.path, max: Math.max(t.size || 0, 1), value: 0,
                     "aria-label": t.path }));
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

export function renderChanges(changes) {
  syncChildren($("#changes"), changes, (c) => `${c.time}|${c.path}|${c.action}`, (c) => {
    const shown = c.kind === "dir" ? `${c.path}/` : c.path;
    return el("li", { "data-path": c.path },
      el("span", { class: "path", title: c.from ? `${c.from} → ${shown}` : shown },
        el("span", { class: "action", "data-action": c.action }, c.action), shown),
      el("span", { class: "meta" }, c.by ? `${c.by} · ` : "", timeEl(c.time)));
  });
  showEmpty("changes", changes);
}

export function renderDoctor(report) {
  const lines = (report && report.lines) || [];
  syncChildren($("#doctor"), lines, (line) => line, (line) => el("li", {}, line));
  showEmpty("doctor", lines);
}

/** Conflict copies, each with the file it is a copy of. */
export function renderConflicts(items) {
  syncChildren($("#conflicts"), items, (c) => c.path, (c) =>
    el("li", { "data-path": c.path },
      el("span", { class: "path mono", title: c.path }, c.path),
      el("span", { class: "meta" }, c.original ? `of ${c.original} · ` : "",
         humanBytes(c.size))));
  showEmpty("conflicts", items);
}

const IGNORED_KINDS = { pattern: ".p2pignore", skipped: "skipped", error: "error" };

/**
 * What is not synced: the .p2pignore patterns in force, what the last
 * scan had to skip, and why .p2pignore could not be used, if it could not.
 */
export function renderIgnored(ignored) {
  const items = [];
  if (ignored.error) items.push({ kind: "error", text: ignored.error });
  for (const text of ignored.patterns || []) items.push({ kind: "pattern", text });
  for (const text of ignored.skipped || []) items.push({ kind: "skipped", text });
  syncChildren($("#ignored"), items, (i) => `${i.kind}|${i.text}`, (i) =>
    el("li", { "data-kind": i.kind },
      el("span", { class: "path mono", title: i.text }, i.text),
      el("span", { class: "meta" }, IGNORED_KINDS[i.kind])));
  showEmpty("ignored", items);
}

/** The trash can: each version kept, with a Restore button. */
export function renderTrash(items) {
  syncChildren($("#trash"), items, (t) => t.trashed, (t) =>
    el("li", { "data-path": t.original, "data-trashed": t.trashed },
      el("span", { class: "path mono", title: t.trashed }, t.original),
      el("span", { class: "meta" }, `${humanBytes(t.size)} · `, timeEl(t.time, "deleted "), " ",
         el("button", { type: "button", class: "small", "data-act": "restore",
                        "data-trashed": t.trashed, "data-label": t.original }, "Restore"))));
  showEmpty("trash", items);
}
