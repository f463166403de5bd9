// Building and updating the page's elements.
//
// Everything shown comes from peers or from file names on disk, so nothing
// is ever put into the page as HTML: elements are built with el() and text
// goes in as text.

import { relativeTime } from "./format.js";

export const $ = (selector) => document.querySelector(selector);

/** el("td", {class: "num"}, "text", child...): children as text or nodes. */
export function el(tag, attrs, ...children) {
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

/** A relative time ("4 min ago") that tickTimes keeps current. */
export function timeEl(unix, prefix = "") {
  const node = el("time", {
    "data-ts": unix || "",
    "data-prefix": prefix,
    datetime: unix ? new Date(unix * 1000).toISOString() : null,
    title: unix ? new Date(unix * 1000).toLocaleString() : null,
  });
  node.textContent = prefix + relativeTime(unix);
  return node;
}

/** Relative times age without any news: rewrite each (once a second). */
export function tickTimes() {
  for (const node of document.querySelectorAll("time[data-ts]")) {
    setText(node, node.dataset.prefix + relativeTime(Number(node.dataset.ts)));
  }
}

/** Set text only when it changed, so a selection or a tooltip survives a poll. */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Make container's children one per item, keyed by key(item): existing
 * elements are updated in place (a progress bar keeps its element as its
 * value grows), new ones created, gone ones removed, in the items' order.
 */
export function syncChildren(container, items, key, create, update = () => {}) {
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

/** A card's "nothing here" line when its list is empty, and its count. */
export function showEmpty(name, items) {
  const empty = $(`#${name}-empty`);
  if (empty) empty.hidden = items.length > 0;
  const count = $(`#${name}-count`);
  if (count) setText(count, items.length ? String(items.length) : "");
}

let toastTimer = null;

/** Say something briefly at the bottom of the page (errors stay longer). */
export function toast(message, isError = false) {
  const box = $("#toast");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 6000 : 3000);
}
