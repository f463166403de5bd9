# -*- test-case-name: tests.test_web_events -*-
"""
What the node does not announce itself, watched a few times a second:
rates (per peer connection, per transfer), transfer progress and ends,
and the folder's state.

The data path stays as it is: this reads the counters it already keeps
(a connection's C{bytes_in}/C{bytes_out}, a fetch's C{got}, its state and
C{finished_at}) on a timer, turns them into rates, and emits C{progress}
(at most once a tick per transfer, so at most 4 a second), C{fetched},
C{error} (a fetch that failed) and C{folder-state} events into the hub.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Optional, Tuple

from twisted.internet.task import LoopingCall

from p2ptwisted import wire
from p2ptwisted.core.planner import SEND_ONLY

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.node import Node

#: Seconds between two looks.
TICK = 0.25

#: Rates are measured over about this many seconds.
WINDOW = 2.0

#: A syncing folder's state is sent at most this often as it changes.
FOLDER_EVERY = 1.0

#: Paths not yet planned looked up in the index, at most, for a folder's
#: files and bytes still needed (the rest is estimated from them).
NEED_SAMPLE = 5000


class Rate:
    """
    Bytes per second of a growing counter, over the last L{WINDOW} seconds.

    @ivar started: when the first sample was taken (the samples themselves
        only go L{WINDOW} seconds back).
    """

    def __init__(self) -> None:
        self.samples: Deque[Tuple[float, int]] = deque()
        self.started: Optional[float] = None

    def add(self, now: float, total: int) -> None:
        if self.started is None:
            self.started = now
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0


def transfer_state(want) -> str:
    """
    A fetch's state as the API names it: waiting, running, done, failed.
    """
    if want.state.startswith("failed"):
        return "failed"
    if want.finished_at is not None:
        return "done"
    return "waiting" if want.state == "waiting" else "running"


def unplanned_need(folder) -> Tuple[int, int]:
    """
    Files and bytes still to fetch for the paths the folder has yet to
    plan (L{Folder.unplanned}), as its index has them from peers; past
    L{NEED_SAMPLE} paths, worked out for that many and scaled up.
    """
    paths = folder.unplanned()
    if not paths:
        return 0, 0
    sample = paths[:NEED_SAMPLE]
    files, size = folder.store.needed(sample)
    scale = len(paths) / len(sample)
    return round(files * scale), round(size * scale)


class Monitor:
    """
    @ivar rates_in, rates_out: per connected peer id, a L{Rate}.
    """

    def __init__(self, node: "Node", clock,
                 watched: Optional[Callable[[], bool]] = None) -> None:
        self.node = node
        self.clock = clock
        #: Whether anyone watches the event stream: the folder's state
        #: (which counts the whole index) is only worked out for them.
        self.watched = watched if watched is not None else (lambda: node.events.listening)
        self.rates_in: Dict[str, Rate] = {}
        self.rates_out: Dict[str, Rate] = {}
        self._want_rates: "weakref.WeakKeyDictionary[Any, Rate]" = weakref.WeakKeyDictionary()
        self._ids: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
        self._reported: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
        self._next_id = 0
        self._folder: Optional[Dict[str, Any]] = None
        self._folder_at = 0.0
        self._totals: Optional[Tuple[int, int]] = None
        self._totals_at = 0.0
        #: The folder's bytes fetched: its rate, even when every file is
        #: fetched between two ticks (small ones).
        self.fetched = Rate()
        self._unplanned: Optional[Tuple[int, int]] = None
        self._unplanned_at = 0.0
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(TICK, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def id_of(self, want) -> int:
        """
        A transfer's id, stable for its life (the API's and events').
        """
        found = self._ids.get(want)
        if found is None:
            self._next_id += 1
            found = self._ids[want] = self._next_id
        return found

    def rate_of(self, want) -> float:
        rate = self._want_rates.get(want)
        return rate.rate() if rate is not None else 0.0

    def tick(self) -> None:
        node, now = self.node, self.clock.seconds()
        for rates in (self.rates_in, self.rates_out):
            for gone in set(rates) - set(node.connections):
                del rates[gone]
        for peer_id, proto in node.connections.items():
            self.rates_in.setdefault(peer_id, Rate()).add(now, proto.bytes_in)
            self.rates_out.setdefault(peer_id, Rate()).add(now, proto.bytes_out)
        if node.folder is None:
            return
        self.fetched.add(now, node.folder.fetcher.bytes_received)
        events = node.events
        for want in node.folder.fetcher.transfers():
            rate = self._want_rates.get(want)
            if rate is None:
                rate = self._want_rates[want] = Rate()
            got = want.got
            rate.add(now, got)
            if not events.listening:
                continue
            state = transfer_state(want)
            # _reported: the bytes last reported, or -1 once its end was.
            if state in ("done", "failed"):
                if self._reported.get(want) != -1:
                    self._reported[want] = -1
                    self._ended(want, state)
            elif state == "running" and self._reported.get(want) != got:
                self._reported[want] = got
                events.emit("progress", self.progress(want))
        if self.watched():
            self._folder_state(now)

    def progress(self, want) -> Dict[str, Any]:
        rate = self.rate_of(want)
        size, got = want.entry.size, want.got
        return {"id": self.id_of(want), "path": wire.safe_text(want.path), "done": got,
                "size": size, "rate": rate, "state": transfer_state(want),
                "eta": (size - got) / rate if rate > 0 else None}

    def _ended(self, want, state: str) -> None:
        events = self.node.events
        if state == "done":
            started = self._want_rates[want].started
            started = want.finished_at if started is None else started
            events.emit("fetched", {"id": self.id_of(want), "path": wire.safe_text(want.path),
                                    "size": want.entry.size, "peer": want.peer,
                                    "seconds": max(0.0, want.finished_at - started)})
        else:
            events.emit("error", {"path": wire.safe_text(want.path),
                                  "message": f"fetching {wire.safe_text(want.path)}"
                                             f" {want.state}"})

    def folder(self, fresh: bool = True) -> Dict[str, Any]:
        """
        The folder's state, as C{/api/status} and C{folder-state} give it.
        Unless C{fresh}, the count of files and bytes may be a second old
        (it reads the whole index).
        """
        folder = self.node.folder
        assert folder is not None  # the web service starts after the node
        now = self.clock.seconds()
        if fresh or self._totals is None or now - self._totals_at >= FOLDER_EVERY:
            self._totals, self._totals_at = folder.store.totals(), now
        files, size = self._totals
        pending = [w for w in folder.fetcher.transfers() if w.finished_at is None]
        need_files = len(pending)
        need = sum(max(0, w.entry.size - w.got) for w in pending)
        rate = max(self.fetched.rate(), sum(self.rate_of(w) for w in pending))
        state = ("paused" if folder.sync.paused
                 else "in sync" if folder.in_sync() else "syncing")
        if state != "in sync" and folder.mode != SEND_ONLY:
            if fresh or self._unplanned is None or now - self._unplanned_at >= FOLDER_EVERY:
                self._unplanned, self._unplanned_at = unplanned_need(folder), now
            need_files, need = need_files + self._unplanned[0], need + self._unplanned[1]
        return {"state": state, "files": files, "bytes": size, "need_files": need_files,
                "need_bytes": need, "rate": rate, "eta": need / rate if rate > 0 else None}

    def forget(self) -> None:
        """
        Send the folder's state at the next look, changed or not (a new
        client is watching).
        """
        self._folder = None

    def _folder_state(self, now: float) -> None:
        current = self.folder(fresh=False)
        last = self._folder
        if last is not None and current["state"] != last["state"]:
            # A new state comes with the count it is true for ("in sync"
            # with the file just placed counted).
            current = self.folder(fresh=True)
        if last is not None and current["state"] == last["state"] and (
                now - self._folder_at < FOLDER_EVERY
                or (current["need_bytes"], current["need_files"], current["files"])
                == (last["need_bytes"], last["need_files"], last["files"])):
            return
        self._folder, self._folder_at = current, now
        self.node.events.emit("folder-state", current)
