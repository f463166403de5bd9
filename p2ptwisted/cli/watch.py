# -*- test-case-name: tests.test_cli -*-
"""
C{p2pshare watch}: the node's transfers and folder, live.

On a terminal it draws, like C{rsync --info=progress2}, one overall line
(bytes, percent, rate, time left) and a bar per transfer, redrawn in place
with C{rich}, with what happens (peers, fetched files, conflicts) printed
above.  Into a pipe or file it prints one plain line per event instead,
and with C{--json} each event as one JSON object per line.

A thread reads the event stream (a blocking socket) and hands events to
the main thread through a queue; the main thread alone touches the
display.  The stream is opened before the first snapshot is taken, so no
event falls between the two.  When the node goes away the reader
reconnects, with C{Last-Event-ID}, for C{--reconnect} seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import threading
import time
from typing import Any, Iterator, Optional, TextIO

import p2ptwisted.cli.formatting as fmt
from p2ptwisted.cli.activity import Activity, transfer_key, transfer_line
from p2ptwisted.cli.client import EXIT_NO_NODE, CliError, Target
from p2ptwisted.cli.sse import Event

#: Seconds between fresh snapshots while waiting for --until-idle, in case
#: an event was missed; and between redraws of the terminal display.
POLL = 2.0
REDRAW = 0.25


class Reader(threading.Thread):
    """
    Reads the event stream into a queue of C{(kind, value)}: C{("event",
    Event)}, C{("lost", None)}, C{("back", None)} after a reconnection,
    C{("gone", CliError)} when it gives up.
    """

    def __init__(self, target: Target, stream: Iterator[Event], reconnect_for: float):
        super().__init__(daemon=True, name="p2pshare-events")
        self.target = target
        self.stream = stream
        self.reconnect_for = reconnect_for
        self.queue: "queue.Queue[tuple]" = queue.Queue()
        self.stopped = threading.Event()

    def stop(self) -> None:
        """
        Read no more, reconnect no more (the thread ends when its current
        connection does; it is a daemon, so it never holds up the exit).
        """
        self.stopped.set()

    def run(self) -> None:
        last_id: Optional[str] = None
        retry = 1.0
        while True:
            try:
                for event in self.stream:
                    if self.stopped.is_set():
                        return
                    last_id = event.id if event.id is not None else last_id
                    retry = event.retry if event.retry is not None else retry
                    self.queue.put(("event", event))
            except (OSError, http.client.HTTPException, CliError):
                pass
            if self.stopped.is_set():
                return
            self.queue.put(("lost", None))
            deadline = time.monotonic() + self.reconnect_for
            while True:
                if self.stopped.wait(min(retry, 5.0)):
                    return
                try:
                    self.stream = self.target.events(last_id)
                    break
                except CliError as e:
                    if time.monotonic() >= deadline:
                        self.queue.put(("gone", e))
                        return
            self.queue.put(("back", None))


def run(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """
    Watch until Ctrl-C, or --until-idle, or --count events.
    """
    reader = Reader(target, target.events(), args.reconnect)
    activity = Activity()
    _snapshot(target, activity)
    display = (JsonLines(out) if args.json
               else Terminal(out) if out.isatty() else Plain(out))
    try:
        with display:
            return _loop(target, args, reader, activity, display)
    finally:
        reader.stop()


def _loop(target: Target, args: argparse.Namespace, reader: Reader, activity: Activity,
          display: "Plain") -> int:
    if args.until_idle and activity.idle():
        display.finish(activity)
        return 0
    display.start(activity)
    reader.start()
    seen = 0
    polled = time.monotonic()
    while True:
        try:
            kind, value = reader.queue.get(timeout=display.wait)
        except queue.Empty:
            kind, value = "tick", None
        if kind == "gone":
            raise value
        if kind == "event":
            if value.type == "progress" and activity.new_transfer(value):
                # Progress events carry what moves; the list has the peer.
                _refresh(target, activity)
            line = activity.apply(value)
            if value.type != "hello":
                seen += 1
                display.event(value, line)
        elif kind == "lost":
            display.say("lost the node's event stream; reconnecting")
        elif kind == "back":
            display.say("reconnected")
            _refresh(target, activity)
        if args.until_idle and time.monotonic() - polled > POLL:
            # In case an event was missed (more than the node keeps).
            polled = time.monotonic()
            _refresh(target, activity)
        display.draw(activity)
        if args.count is not None and seen >= args.count:
            return 0
        if args.until_idle and activity.idle():
            # The last word is the node's own, fresh.
            _refresh(target, activity)
            display.finish(activity)
            return 0


def _snapshot(target: Target, activity: Activity) -> None:
    activity.snapshot(target.get("/api/status"), target.get("/api/transfers"))


def _refresh(target: Target, activity: Activity) -> None:
    """
    A fresh snapshot, unless the node is out of reach just now: then the
    reader's reconnecting (and giving up) decides.
    """
    try:
        _snapshot(target, activity)
    except CliError as e:
        if e.status != EXIT_NO_NODE:
            raise


class Plain:
    """
    One line per event, flushed at once (a pipe or a log file reads them
    as they come).
    """

    wait: Optional[float] = POLL

    def __init__(self, out: TextIO):
        self.out = out
        self.last = ""

    def __enter__(self) -> "Plain":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.out.flush()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
        self.last = line

    def event(self, event: Event, line: Optional[str]) -> None:
        if line:
            self.say(line)

    def start(self, activity: Activity) -> None:
        """
        Say where things stand as watching begins.
        """
        self.say("folder " + fmt.folder_text(activity.folder))
        for t in activity.moving():
            self.say(transfer_line(t))

    def draw(self, activity: Activity) -> None:
        pass

    def finish(self, activity: Activity) -> None:
        line = "folder " + fmt.folder_text(activity.folder)
        if line != self.last:
            self.say(line)


class JsonLines(Plain):
    """
    Each event as one JSON object: C{{"id", "event", "data"}}.
    """

    def event(self, event: Event, line: Optional[str]) -> None:
        try:
            data = json.loads(event.data)
        except ValueError:
            data = event.data
        self.say(json.dumps({"id": event.id, "event": event.type, "data": data}))

    def say(self, line: str) -> None:
        if line.startswith("{"):
            super().say(line)

    def start(self, activity: Activity) -> None:
        pass

    def finish(self, activity: Activity) -> None:
        pass


class Terminal(Plain):
    """
    Bars redrawn in place (rich's Live), event lines printed above them.
    """

    wait = REDRAW

    def __init__(self, out: TextIO):
        super().__init__(out)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)

    def __enter__(self) -> "Terminal":
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()

    def say(self, line: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(line))

    def event(self, event: Event, line: Optional[str]) -> None:
        if line and event.type != "progress":
            self.say(line)

    def start(self, activity: Activity) -> None:
        self.draw(activity)

    def draw(self, activity: Activity) -> None:
        self.live.update(render(activity), refresh=True)

    def finish(self, activity: Activity) -> None:
        self.draw(activity)


def render(activity: Activity):
    """
    The display: the overall line and bar, then a bar per transfer (the
    moving ones, and the last few finished).
    """
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    done, total, speed, eta = activity.overall()
    head: Any = Text("nothing has moved since watch began", style="dim")
    if total:
        head = Table.grid(padding=(0, 1))
        for _ in range(6):
            head.add_column()
        head.add_row(
            Text("total", style="bold"), ProgressBar(total=total, completed=done, width=30),
            Text(f"{100 * done / total:3.0f}%"),
            Text(f"{fmt.human(done)} of {fmt.human(total)}"), Text(fmt.rate(speed)),
            Text(f"ETA {fmt.duration(eta)}"))
    folder = Text("folder " + fmt.folder_text(activity.folder)
                  + (f"; {activity.peers} peers" if activity.peers is not None else ""),
                  style="dim")
    rows = Table.grid(padding=(0, 1))
    for _ in range(7):
        rows.add_column()
    moving = activity.moving()
    moving_keys = {transfer_key(t) for t in moving}
    recent = [t for k, t in activity.transfers.items() if k not in moving_keys][-3:]
    for t in (recent + moving)[-12:]:
        size, got = fmt.number(t.get("size")), fmt.number(t.get("done"))
        rows.add_row(
            Text(fmt.clean(t.get("path"), 40)), ProgressBar(total=size or 1, completed=got,
                                                           width=20),
            Text(f"{100 * got / size:3.0f}%" if size else "  -"), Text(fmt.human(got)),
            Text(fmt.rate(t.get("rate"))), Text(f"ETA {fmt.duration(t.get('eta'))}"),
            Text(fmt.clean(t.get("state")) + " " + fmt.clean(fmt.peer_name(t), 20)),
        )
    return Group(head, folder, rows)
