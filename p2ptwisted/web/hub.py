# -*- test-case-name: tests.test_web_events -*-
"""
The node's event hub: what happens in the node (a peer comes or goes, a
change is found or applied, a conflict, an error), as small JSON-ready
events with increasing ids, for the web API's event stream.

The node owns one hub whether or not a web server runs, and emits into
it from the few places where things happen; emitting with nobody
listening costs a dict and a deque append.  Producers that would have to
work to describe an event (the scanner reading the previous entries to
tell an edit from an addition) ask L{EventHub.listening} first.

This module imports nothing of twisted.web: the node imports it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

import attrs

from p2ptwisted import wire
from p2ptwisted.core.index import DIR, Entry
from p2ptwisted.core.planner import ADOPT
from p2ptwisted.identity import format_id

#: Events kept for clients that reconnect with Last-Event-ID.
BACKLOG = 100

#: Changes described per scan or per round: a first scan of 100,000
#: files is one line in the log, not 100,000 events.
MAX_CHANGES = 100


@attrs.frozen
class Event:
    id: int
    type: str
    data: Any


class EventHub:
    """
    Numbered events, a short backlog of them, and their listeners.

    @ivar names: C{short id -> display name} for the C{by} of changes; the
        node sets it (connected peers and itself), else the short id.
    @ivar clock: for the C{time} of changes (set by the node).
    """

    def __init__(self, backlog: int = BACKLOG):
        self._listeners: List[Callable[[Event], None]] = []
        self.backlog: Deque[Event] = deque(maxlen=backlog)
        self.last_id = 0
        self.names: Callable[[str], str] = lambda short: short
        self.now: Callable[[], float] = lambda: 0.0

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """
        Call C{listener} with every event from now on; returns the function
        that stops it.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, type: str, data: Any) -> Event:
        self.last_id += 1
        event = Event(self.last_id, type, data)
        self.backlog.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def since(self, last_id: int) -> List[Event]:
        """
        The kept events after C{last_id}; all kept events if C{last_id} is
        not one of ours (a node restarted since the client saw it).
        """
        if last_id > self.last_id:
            last_id = 0
        return [e for e in self.backlog if e.id > last_id]

    def changes(self, pairs: Iterable[Tuple[Optional[Entry], Entry]], local: bool) -> None:
        """
        Emit C{local-change} (found on our disk) or C{remote-change} (a
        peer's, applied here) events for C{(before, after)} entry pairs.
        """
        kind = "local-change" if local else "remote-change"
        for change in describe_changes(pairs, self.names, self.now(), local):
            self.emit(kind, change)

    def applied(self, action) -> None:
        """
        Emit what a peer's change, applied here, did (an L{Action}), and
        the conflict it lost, if it did.
        """
        if action.conflict_copy:
            self.emit("conflict", {"path": action.path, "copy": action.conflict_copy})
        if action.kind == ADOPT or not self.listening:
            return
        pairs = [(action.local, action.entry)]
        if action.source is not None:  # a move: the source's deletion too
            pairs.append((action.source.local, action.source.entry))
        self.changes(pairs, local=False)


def describe_changes(pairs: Iterable[Tuple[Optional[Entry], Entry]],
                     names: Callable[[str], str], now: float,
                     local: bool) -> List[Dict[str, Any]]:
    """
    What happened to each path, as a person says it: added, changed,
    deleted, or renamed (a deletion and an addition of the same content
    among the same pairs).  At most L{MAX_CHANGES}.
    """
    pairs = list(pairs)[:MAX_CHANGES]
    added_by_hash: Dict[str, Dict[str, Any]] = {}
    found: List[Dict[str, Any]] = []
    for before, after in pairs:
        was = before is not None and before.live
        if not after.live:
            action = "deleted"
        elif not was:
            action = "added"
        else:
            action = "changed"
        change = {"time": now, "path": wire.safe_text(after.path), "action": action,
                  "kind": "dir" if after.kind == DIR else "file",
                  "by": names(after.modified_by), "local": local}
        if action == "added" and after.kind != DIR and after.hash:
            added_by_hash.setdefault(after.hash, change)
        found.append(change)
    # A rename is the deletion of a path and the addition of its content.
    for (before, _), change in zip(pairs, found):
        if change["action"] == "deleted" and before is not None and before.hash:
            target = added_by_hash.pop(before.hash, None)
            if target is not None:
                target["action"] = "renamed"
                target["from"] = change["path"]
                change["action"] = None
    return [c for c in found if c["action"] is not None]


def peer_summary(proto) -> Dict[str, Any]:
    """
    A connected peer as events and the API name it (without rates).
    """
    hello = proto.hello
    peer = proto.transport.getPeer() if proto.transport else None
    host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
    return {
        "id": hello.node_id,
        "id_readable": format_id(hello.node_id),
        "name": wire.safe_text(hello.name, 64),
        "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "direction": "out" if proto.dialed is not None else "in",
        "since": proto.connected_at,
    }
