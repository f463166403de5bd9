# -*- test-case-name: tests.test_cli -*-
"""
A reader of a Server-Sent Events stream (the HTML standard's
"event stream interpretation"), over any binary file-like object.

Only what C{p2pshare watch} needs: fields C{id}, C{event}, C{data} (joined
by newlines when repeated) and C{retry}; comment lines (a leading colon,
the server's keep-alives) are skipped.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, Optional

import attrs


@attrs.frozen
class Event:
    """
    One dispatched event: its type (C{"message"} when the stream named
    none), its data, the last event id seen so far, and the reconnection
    delay the server asked for, in seconds, if it did.
    """

    type: str
    data: str
    id: Optional[str] = None
    retry: Optional[float] = None


def read_events(stream: BinaryIO) -> Iterator[Event]:
    """
    The events in C{stream}, each as soon as its blank line arrives; ends
    when the stream does (an event not yet finished by a blank line is
    dropped, as the standard says).
    """
    last_id: Optional[str] = None
    retry: Optional[float] = None
    kind = ""
    data: list = []
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(kind or "message", "\n".join(data), last_id, retry)
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value) / 1000.0
