# -*- test-case-name: tests.test_web_api -*-
"""
What the API's GET endpoints answer: the node's state as JSON-ready
values (docs/api.md), built from what the manhole's functions already
give (L{Control}, the doctor, the trash can), plus the rates the
L{Monitor} measures.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional

from twisted.internet.defer import Deferred

from p2ptwisted import __version__, wire
from p2ptwisted.core.index import DIR
from p2ptwisted.identity import format_id
from p2ptwisted.web.hub import Event, EventHub, peer_summary
from p2ptwisted.web.monitor import Monitor, transfer_state

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.control import Control
    from p2ptwisted.node import Node

#: Recent changes kept for C{/api/changes}.
KEEP_CHANGES = 200

#: A conflict copy's tag (L{p2ptwisted.core.planner.conflict_name}).
CONFLICT_TAG = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{7}")


class ChangeLog:
    """
    The most recent changes, local and applied from peers, from the hub.
    """

    def __init__(self, events: EventHub, keep: int = KEEP_CHANGES):
        self.changes: Deque[Dict[str, Any]] = deque(maxlen=keep)
        self.stop = events.subscribe(self._heard)

    def _heard(self, event: Event) -> None:
        if event.type in ("local-change", "remote-change"):
            self.changes.append(event.data)

    def recent(self, limit: int) -> List[Dict[str, Any]]:
        return list(reversed(self.changes))[:limit]


class Views:
    """
    The node's state, endpoint by endpoint.
    """

    def __init__(self, node: "Node", control: "Control", monitor: Monitor, changes: ChangeLog):
        self.node = node
        self.control = control
        self.monitor = monitor
        self.changes = changes

    @property
    def folder(self):
        folder = self.node.folder
        assert folder is not None  # the web service starts after the node
        return folder

    def status(self) -> Dict[str, Any]:
        node = self.node
        assert node.node_id is not None
        host = node.listen_host or "0.0.0.0"
        return {
            "name": node.display_name, "id": node.node_id, "id_readable": format_id(node.node_id),
            "version": __version__,
            "addresses": [f"[{host}]:{p}" if ":" in host else f"{host}:{p}"
                          for p in node.listen_ports],
            "tls": node.tls, "mode": self.folder.mode, "allow_list": node.allow is not None,
            "paused": self.folder.sync.paused, "share": node.share_dir,
            "started": node.started_at, "folder": self.monitor.folder(),
            "peers": len(node.connections),
        }

    def peer(self, proto) -> Dict[str, Any]:
        found = peer_summary(proto)
        peer_id = found["id"]
        rate_in, rate_out = self.monitor.rates_in.get(peer_id), self.monitor.rates_out.get(peer_id)
        store = self.folder.store
        ours = store.totals()[1]
        found.update(
            rate_in=rate_in.rate() if rate_in else 0.0,
            rate_out=rate_out.rate() if rate_out else 0.0,
            bytes_in=proto.bytes_in, bytes_out=proto.bytes_out,
            completion=100.0 if not ours else min(100.0, 100.0 * store.held_by(peer_id) / ours))
        return found

    def peers(self) -> List[Dict[str, Any]]:
        return [self.peer(p) for p in self.node.connections.values()]

    def transfers(self) -> List[Dict[str, Any]]:
        found = []
        for want in self.control.transfers():
            size, got = want.entry.size, want.got
            rate = self.monitor.rate_of(want) if want.finished_at is None else 0.0
            proto = self.node.connections.get(want.peer)
            found.append({
                "id": self.monitor.id_of(want), "path": wire.safe_text(want.path),
                "peer": want.peer or None,
                "peer_name": wire.safe_text(proto.hello.name) if proto and proto.hello else None,
                "direction": "down", "size": size, "done": got, "rate": rate,
                "eta": (size - got) / rate if rate > 0 else None,
                "state": transfer_state(want), "finished": want.finished_at,
            })
        return found

    def recent_changes(self, limit: int) -> List[Dict[str, Any]]:
        return self.changes.recent(limit)

    def conflicts(self) -> List[Dict[str, Any]]:
        store = self.folder.store
        found = []
        for path in store.local_paths():
            if ".sync-conflict-" not in path:
                continue
            entry = store.get(path)
            if entry is None or not entry.live or entry.kind == DIR:
                continue
            found.append({"path": wire.safe_text(path),
                          "original": wire.safe_text(CONFLICT_TAG.sub("", path, count=1)),
                          "size": entry.size, "mtime": entry.mtime_ns / 1e9})
        return sorted(found, key=lambda c: c["path"])

    def ignored(self) -> Dict[str, Any]:
        scans = self.folder.sync.scans
        spec = scans.scanner.rules.spec
        patterns = [str(getattr(p, "pattern", "")) for p in spec.patterns] if spec else []
        return {"patterns": [p for p in patterns if p.strip() and not p.startswith("#")],
                "error": scans.ignore_error, "skipped": list(scans.skipped)}

    def trash(self) -> Deferred:
        """
        The trash can's versions (its directories are walked in a thread).
        """
        disk = self.folder.disk
        d = self.folder.sync.run_blocking(disk.trash_list)
        return d.addCallback(lambda versions: [
            {"trashed": wire.safe_text(v.trashed), "original": wire.safe_text(v.original),
             "time": _stamp_time(v.stamp), "size": v.size} for v in versions])

    def doctor(self) -> Dict[str, Any]:
        from p2ptwisted.doctor import diagnose

        return {"lines": list(diagnose(self.node))}

    def ls(self, peer: Optional[str]) -> List[Dict[str, Any]]:
        entries = self.control.catalog() if peer is None else self.control.catalog_of(peer)
        return [{"path": wire.safe_text(e.path), "kind": "dir" if e.kind == DIR else "file",
                 "size": e.size, "mtime": e.mtime_ns / 1e9, "hash": e.hash,
                 "perms": f"{e.perms:04o}"} for e in entries]

    def pending(self) -> List[Dict[str, Any]]:
        return [p.as_json() for p in self.node.approvals.newest_first()]


def _stamp_time(stamp: str) -> Optional[float]:
    """
    A trash-can stamp (C{YYYYMMDD-HHMMSS}, UTC) as Unix seconds.
    """
    try:
        return float(calendar.timegm(time.strptime(stamp, "%Y%m%d-%H%M%S")))
    except ValueError:
        return None
