# -*- test-case-name: tests.test_web_events -*-
"""
C{/api/events}: the hub's events as Server-Sent Events.

Each client gets C{hello}, then what it missed (C{Last-Event-ID}, from the
hub's short backlog), then every event as it happens, and a comment line
every L{KEEP_ALIVE} seconds so proxies and browsers keep the connection
open and a dead client is noticed.  A client that goes away is forgotten
at once (C{notifyFinish}).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional

from twisted.internet.task import LoopingCall
from twisted.web.server import NOT_DONE_YET

from p2ptwisted.web.hub import Event, EventHub

#: Seconds between keep-alive comments.
KEEP_ALIVE = 15.0

#: Output buffered for one slow client before it is dropped: the node
#: must not hold memory for a client that does not read.
MAX_BUFFERED = 4 * 1024 * 1024


def frame(event: Event) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode("utf-8")


class EventStream:
    """
    The connected event-stream clients of one web server.
    """

    def __init__(self, events: EventHub, clock, joined: Callable[[], None] = lambda: None):
        self.events = events
        self.clock = clock
        #: Called when a client joins (the monitor then sends the folder's
        #: state at its next look).
        self.joined = joined
        #: request -> its unsubscribe function
        self.clients: Dict[Any, Any] = {}
        self._keep_alive = LoopingCall(self._ping)
        self._keep_alive.clock = clock

    def start(self) -> None:
        self._keep_alive.start(KEEP_ALIVE, now=False)

    def stop(self) -> None:
        if self._keep_alive.running:
            self._keep_alive.stop()
        for request in list(self.clients):
            self._drop(request)
            request.finish()

    def render(self, request):
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        last = _last_event_id(request.getHeader(b"last-event-id"))
        # (hello has no id: a reconnecting browser keeps the last real one)
        hello = json.dumps({"last": self.events.last_id})
        request.write(f"retry: 2000\nevent: hello\ndata: {hello}\n\n".encode("ascii"))
        if last is not None:
            for event in self.events.since(last):
                request.write(frame(event))
        self.clients[request] = self.events.subscribe(lambda event: self._send(request, event))
        request.notifyFinish().addBoth(lambda _: self._drop(request))
        self.joined()
        return NOT_DONE_YET

    def _send(self, request, event: Event) -> None:
        transport = getattr(getattr(request, "channel", None), "transport", None)
        buffered = len(getattr(transport, "dataBuffer", b"")) + getattr(
            transport, "_tempDataLen", 0)
        if buffered > MAX_BUFFERED:
            self._drop(request)
            request.loseConnection()
            return
        request.write(frame(event))

    def _drop(self, request) -> None:
        unsubscribe = self.clients.pop(request, None)
        if unsubscribe is not None:
            unsubscribe()

    def _ping(self) -> None:
        for request in list(self.clients):
            request.write(b": keep-alive\n\n")


def _last_event_id(header: Optional[bytes]) -> Optional[int]:
    if header is None:
        return None
    text = header.strip()
    return int(text) if text.isdigit() else 0
