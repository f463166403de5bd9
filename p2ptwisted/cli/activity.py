# -*- test-case-name: tests.test_cli -*-
"""
What C{p2pshare watch} knows of a node's activity, kept current from the
API's snapshots (C{/api/status}, C{/api/transfers}) and its event stream,
and each event told in one line for people.

No I/O here: L{p2ptwisted.cli.watch} feeds it and draws it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import attrs

import p2ptwisted.cli.formatting as fmt
from p2ptwisted.cli.sse import Event

#: Transfer states that are not over yet.
MOVING = ("waiting", "running")


def transfer_key(transfer: dict) -> str:
    """
    A transfer's identity across snapshots and events: its id, or else
    what it moves, between whom.
    """
    if transfer.get("id") is not None:
        return str(transfer["id"])
    return f"{transfer.get('direction')}:{transfer.get('peer')}:{transfer.get('path')}"


def transfer_line(t: dict) -> str:
    """
    One transfer in one line: path, percent, bytes, rate, time left, peer.
    """
    size, done = t.get("size"), t.get("done")
    part = (f"{100 * done / size:3.0f}%" if isinstance(size, (int, float)) and size
            and isinstance(done, (int, float)) else "  -")
    peer = fmt.clean(fmt.peer_name(t), 40) if t.get("peer") or t.get("peer_name") else ""
    way = "to" if t.get("direction") == "up" else "from"
    return (f"{fmt.clean(t.get('path'), 80)}  {part}  {fmt.human(done)} of {fmt.human(size)}"
            f"  {fmt.rate(t.get('rate'))}  ETA {fmt.duration(t.get('eta'))}"
            f"  {fmt.clean(t.get('state'))}" + (f" {way} {peer}" if peer else ""))


def _data(event: Event) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        return event.data


def _name(data: Any) -> str:
    if not isinstance(data, dict):
        return fmt.clean(data)
    name = fmt.clean(data.get("name") or data.get("peer") or "?", 60)
    ident = data.get("id_readable") or data.get("id")
    return name + (f" ({fmt.clean(ident, 80)})" if ident else "")


@attrs.define
class Activity:
    """
    The folder's state, the peer count, and every transfer seen since
    C{watch} started (finished ones stay, so the overall figures count
    them, as rsync's do).
    """

    folder: Dict[str, Any] = attrs.Factory(dict)
    peers: Optional[int] = None
    transfers: Dict[str, dict] = attrs.Factory(dict)

    def snapshot(self, status: Any, transfers: Any) -> None:
        """
        Take the node's current state, as the API lists it.
        """
        if isinstance(status, dict):
            self.folder = status.get("folder") or {}
            self.peers = status.get("peers")
        listed = set()
        for t in transfers if isinstance(transfers, list) else []:
            if isinstance(t, dict):
                key = transfer_key(t)
                listed.add(key)
                # What had ended before watch began is not part of this
                # watch's figures (the node lists the last few that ended).
                if key in self.transfers or t.get("state") in MOVING:
                    self.transfers[key] = t
        # A transfer we saw moving but the node no longer lists is over.
        for key, t in self.transfers.items():
            if key not in listed and t.get("state") in MOVING:
                t["state"] = "done"

    def apply(self, event: Event) -> Optional[str]:
        """
        Take one event into account; the line that tells it, if any.
        """
        data = _data(event)
        kind = event.type
        if kind == "hello":
            return None
        if kind == "progress" and isinstance(data, dict):
            # The event has the moving parts; the snapshot had the peer.
            key = transfer_key(data)
            merged = self.transfers[key] = {**self.transfers.get(key, {}), **data}
            merged.setdefault("state", "running")
            return transfer_line(merged)
        if kind == "folder-state" and isinstance(data, dict):
            before = fmt.folder_text(self.folder) if self.folder else None
            self.folder = data.get("folder", data)
            now = fmt.folder_text(self.folder)
            # (a new stream starts with the state already shown)
            return None if now == before else "folder " + now
        if kind == "fetched" and isinstance(data, dict):
            self._finished(data)
            seconds = data.get("seconds")
            took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
            return (f"fetched {fmt.clean(data.get('path'))} ({fmt.human(data.get('size'))})"
                    f" from {fmt.clean(fmt.peer_name(self.transfers[transfer_key(data)]), 40)}"
                    + took)
        if kind in ("peer-connected", "peer-lost"):
            if isinstance(self.peers, int):
                self.peers = max(0, self.peers + (1 if kind == "peer-connected" else -1))
            where = data.get("address") if isinstance(data, dict) else None
            return (f"{kind.replace('-', ' ')}: {_name(data)}"
                    + (f" at {fmt.clean(where)}" if where else ""))
        if kind in ("local-change", "remote-change") and isinstance(data, dict):
            by = f" by {fmt.clean(data.get('by'), 40)}" if kind == "remote-change" else ""
            return (f"{kind.replace('-', ' ')}: {fmt.clean(data.get('action'))}"
                    f" {fmt.clean(data.get('path'))}{by}")
        if kind == "paused" and isinstance(data, dict):
            return "paused" if data.get("paused") else "resumed"
        if kind == "pending" and isinstance(data, dict):
            return (f"a node asks to join: {_name(data)} from {fmt.clean(data.get('address'))}"
                    " (approve it on the page)")
        if kind == "conflict" and isinstance(data, dict):
            return f"conflict: {fmt.clean(data.get('path'))}" + (
                f" (copy {fmt.clean(data.get('copy'))})" if data.get("copy") else "")
        if kind == "error":
            text = (data.get("message") or data.get("error")) if isinstance(data, dict) else data
            path = data.get("path") if isinstance(data, dict) else None
            return f"error: {fmt.clean(text, 500)}" + (f" ({fmt.clean(path)})" if path else "")
        return f"{fmt.clean(kind)}: {fmt.clean(event.data, 200)}"

    def new_transfer(self, event: Event) -> bool:
        """
        Whether C{event} is about a transfer not seen before.
        """
        data = _data(event)
        return isinstance(data, dict) and transfer_key(data) not in self.transfers

    def _finished(self, data: dict) -> None:
        key = transfer_key(data)
        self.transfers[key] = {**self.transfers.get(key, {}), **data, "state": "done",
                               "done": data.get("size"), "rate": 0, "eta": None}

    def moving(self) -> List[dict]:
        return [t for t in self.transfers.values() if t.get("state") in MOVING]

    def idle(self) -> bool:
        """
        In sync, and nothing moving.
        """
        return self.folder.get("state") == "in sync" and not self.moving()

    def overall(self) -> Tuple[float, float, float, Optional[float]]:
        """
        Of all transfers seen: bytes done, bytes in all, the rate now, and
        the time left (the folder's figure if the node gives one).
        """
        done = total = speed = 0.0
        for t in self.transfers.values():
            total += fmt.number(t.get("size"))
            done += fmt.number(t.get("done"))
            if t.get("state") == "running":
                speed += fmt.number(t.get("rate"))
        eta = self.folder.get("eta")
        if not isinstance(eta, (int, float)):
            eta = (total - done) / speed if speed > 0 else None
        return done, total, speed, eta

    def overall_line(self) -> str:
        done, total, speed, eta = self.overall()
        part = f"{100 * done / total:.0f}%" if total else "-"
        moving = len(self.moving())
        return (f"{fmt.human(done)} of {fmt.human(total)}  {part}  {fmt.rate(speed)}"
                f"  ETA {fmt.duration(eta)}  ({moving} moving, folder "
                f"{fmt.clean(self.folder.get('state') or '?')})")
