# -*- test-case-name: tests.test_sync -*-
"""
Scanning the share, the sync shell's other half (L{p2ptwisted.sync}):
runs the scanner in a thread, one scan at a time, and records what it
found as local changes, a chunk at a time.

What a scan saw of a path that we changed ourselves while it ran is not
news from the user (L{LocalScans._settled}): a file we placed mid-scan
must come out neither as a deletion nor, with its old bytes, as an edit.
"""

from __future__ import annotations

from typing import Callable, FrozenSet, List, Optional, Set

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.planner import RECEIVE_ONLY
from p2ptwisted.hashing import ScanStopped
from p2ptwisted.scanner import Scanner
from p2ptwisted.web.hub import MAX_CHANGES, EventHub

#: Seconds before a path changed under us (during a scan, or under an
#: action: the user is writing it) is looked at again.
RESCAN_PAUSE = 1.0

#: Local changes recorded per index transaction.
RECORD_CHUNK = 2000


class LocalScans:
    """
    @param changed: called after each scan with the number of local
        changes recorded (the shell announces them and plans again).
    """

    log = Logger()

    def __init__(self, engine: SyncEngine, scanner: Scanner, clock, run_blocking, mode: str,
                 changed: Callable[[int], None], events: Optional[EventHub] = None):
        self.engine = engine
        self.events = events
        self.scanner = scanner
        self.clock = clock
        self.run_blocking = run_blocking
        self.mode = mode
        self.changed = changed
        #: Receive-only: what differs here from the folder's versions
        #: (local changes are not published; a newer remote version
        #: replaces them, keeping them in the trash can).
        self.local_changes: Set[str] = set()
        #: Scans done since start.
        self.count = 0
        self.stopped = False
        #: Why .p2pignore could not be used, if it could not.
        self.ignore_error: Optional[str] = None
        self._skipped: tuple = ()  # the last scan's skipped names, logged once
        self._scanning: Optional[Deferred] = None
        self._next_waiters: List[Deferred] = []
        self._next_finished: Set[str] = set()  # (for the scan after this one)
        self._again_call = None
        self._scan_started = 0.0
        self._scan_sequence = 0

    @property
    def skipped(self) -> tuple:
        """
        What the last scan could not sync (names that cannot travel,
        unreadable files), as it logged them.
        """
        return self._skipped

    @property
    def scanning(self) -> bool:
        return self._scanning is not None

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    def rescan(self, finished: FrozenSet[str] = frozenset()) -> Deferred:
        """
        Scan the share (in a thread) and record what changed; fires with
        the number of local changes recorded.  Asked while a scan runs, it
        scans once more after that one (however often it is asked), and
        fires when that one is done: a caller that just changed the disk
        gets a scan that saw its change.

        @param finished: files known to be written whole (closed after
            writing, or moved in): hashed at once, however new their mtime.
        """
        d: Deferred[int] = Deferred()
        if self.stopped:
            d.callback(0)
            return d
        if self._scanning is not None:
            self._next_finished |= finished
            self._next_waiters.append(d)
            return d
        self._scan_started = self.clock.seconds()
        self._scan_sequence = self.engine.index.sequence
        self._scanning = running = self.run_blocking(self.scanner.scan, self.now_ns(),
                                                     finished)
        running.addCallback(self._scanned)
        running.addBoth(self._scan_ended, d)
        return d

    def _scanned(self, report) -> int:
        if self.stopped:
            return 0
        if report.ignore_error != self.ignore_error and report.ignore_error:
            self.log.warn("{why}; the ignore patterns before it stay in force",
                          why=report.ignore_error)
        self.ignore_error = report.ignore_error
        skipped = tuple(report.skipped)
        if skipped and skipped != self._skipped:
            self.log.warn("not syncing {n} names that cannot travel on the wire, such as"
                          " {example}", n=len(skipped), example=skipped[0])
        self._skipped = skipped
        changed, gone = self._settled(report)
        report.changed = report.gone = []  # freed chunk by chunk below
        first = not self.count
        self.count += 1
        if first or changed or gone:
            self.log.info(
                "{which} scan: {changed} new or changed, {gone} gone, {hashed} files hashed"
                " ({seconds:.2f}s)", which="first" if first else "share",
                changed=len(changed), gone=len(gone), hashed=report.hashed,
                seconds=self.clock.seconds() - self._scan_started)
        if self.mode == RECEIVE_ONLY:
            self.local_changes = {o.path for o in changed} | set(gone)
            made = 0
        else:
            made = self._record(changed, gone)
        if report.recheck_at is not None:
            self._rescan_in(max(0.0, report.recheck_at / 1e9 - self.clock.seconds()))
        self.changed(made)
        return made

    def _record(self, changed: list, gone: list) -> int:
        """
        Record local changes a chunk at a time, letting go of each chunk's
        observations and new entries before the next: a first scan of
        100,000 files must not hold them all at once.
        """
        now = int(self.clock.seconds())
        made = 0
        # For the event stream, if anyone listens: the first changes with
        # what the index held before them (an edit, or an addition?).
        before = {}
        if self.events is not None and self.events.listening:
            store = self.engine.store
            before = {path: store.get(path)
                      for path in ([o.path for o in changed] + gone)[:MAX_CHANGES]}
        described: list = []
        changed.reverse()  # popped from the end, in scan order
        while changed:
            chunk = [changed.pop() for _ in range(min(RECORD_CHUNK, len(changed)))]
            entries = self.engine.local_changed(chunk, (), now)
            made += len(entries)
            described += [(before[e.path], e) for e in entries if e.path in before]
        gone.sort(reverse=True)  # deepest first across chunks, as within one
        for i in range(0, len(gone), RECORD_CHUNK):
            entries = self.engine.local_changed((), gone[i:i + RECORD_CHUNK], now)
            made += len(entries)
            described += [(before[e.path], e) for e in entries if e.path in before]
        if described and self.events is not None:
            self.events.changes(described, local=True)
        return made

    def _settled(self, report):
        """
        What the scan saw, less the paths we changed ourselves while it ran
        (an action in flight, or one applied since it started): the walk
        may have passed them before or after our change, so what it saw of
        them is not news from the user -- a file we placed mid-scan must
        not come out as a deletion, nor the old bytes as an edit.  Those
        paths are looked at again by a scan soon after.
        """
        since = self._scan_sequence
        busy = self.engine.busy
        store = self.engine.store

        def settled(path: str) -> bool:
            if path in busy:
                return False
            entry = store.get(path)
            return entry is None or entry.sequence <= since

        changed = [o for o in report.changed if settled(o.path)]
        gone = [path for path in report.gone if settled(path)]
        if len(changed) < len(report.changed) or len(gone) < len(report.gone):
            self._rescan_in(RESCAN_PAUSE)
        return changed, gone

    def _rescan_in(self, delay: float) -> None:
        """
        One scan, C{delay} seconds from now or sooner if one is due sooner.
        """
        call = self._again_call
        if call is not None and call.active():
            if call.getTime() <= self.clock.seconds() + delay:
                return
            call.cancel()
        self._again_call = self.clock.callLater(delay, self.rescan)

    def _scan_ended(self, result, d: Deferred):
        self._scanning = None
        waiters, self._next_waiters = self._next_waiters, []
        finished, self._next_finished = frozenset(self._next_finished), set()
        if waiters:
            again = fail(ScanStopped()) if self.stopped else self.rescan(finished)
            again.addBoth(_fire_all, waiters)
        _fire_all(result, [d])
        return None

    def stop(self) -> None:
        self.stopped = True
        if self._again_call is not None and self._again_call.active():
            self._again_call.cancel()
        self.scanner.stopped = lambda: True


def _fire_all(result, waiters: List[Deferred]) -> None:
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)
