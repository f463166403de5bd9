# -*- test-case-name: tests.test_sync -*-
"""
One shared folder kept in step: the Twisted shell around the sync core.

It wires the pure L{SyncEngine} to the disk: the L{Scanner} finds local
changes, L{Disk} applies the engine's decisions, both in a thread (they
block), and everything the engine is told happens on the reactor thread
(the index's sqlite connection lives there).  The network is not here:
the node gives it a C{fetch} function that brings a file's verified bytes
into a temporary file beside its destination, and an C{announce} function
called whenever our index has entries peers have not had.

How one action is applied (L{p2ptwisted.diskactions.DiskActions}):

  1. Check before replace: if the disk no longer holds what our index says
     (the user is editing it), rescan and plan again; nothing is touched.
  2. Keep what is replaced: a conflict copy by rename if our version lost
     a conflict, else the trash can.
  3. Bytes come from the disk when any file of ours has them (a rename or a
     copy elsewhere moves no bytes), else from a peer.
  4. A directory that would be deleted or replaced while it holds files
     still needed is kept (L{SyncEngine.revive}).
"""

from __future__ import annotations

from typing import Callable, FrozenSet, List, Optional, Set

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.apply import Disk
from p2ptwisted.batching import Batches
from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.planner import (DELETE, FETCH, SEND_RECEIVE,
                                     Action)
from p2ptwisted.core.trouble import Trouble
from p2ptwisted.diskactions import (BLOCKED, DONE, NEED_BYTES, RESCAN,
                                     DiskActions)
from p2ptwisted.localscan import RESCAN_PAUSE, LocalScans
from p2ptwisted.pausing import Pausable
from p2ptwisted.scanner import Scanner
from p2ptwisted.web.hub import EventHub

#: Seconds before an action that failed (no source, a disk error, a
#: directory still being emptied) is planned again.
RETRY_DELAY = 5.0

#: Retries of one path back off up to this many seconds.
MAX_RETRY_DELAY = 300.0

#: Rescans in a row that did not let an action through before the path
#: is treated as stuck (backed off, logged once).
STUCK_AFTER = 3

#: How long a deletion is remembered by default: a node that was off for
#: less than this learns of it; one off for longer brings the file back.
DELETION_LIFETIME = 180 * 24 * 3600

#: Actions in flight at most (fetches included): more would only queue,
#: and a change that jumps the queue (L{p2ptwisted.core.dirty}) must not
#: then wait behind them.
MAX_IN_FLIGHT = 256

#: Batches of fetched files being placed at once (L{p2ptwisted.placing}).
PLACING_JOBS = 2



class FolderSync(Pausable):
    """
    @param fetch: C{(action, sources) -> Deferred} firing with the name of
        a complete, verified temporary file in the destination's directory.
    @param announce: called with no arguments when peers have new entries
        to get from us.
    @param run_blocking: runs a function in a thread, returning a
        Deferred (C{deferToThreadPool}); C{maybeDeferred} in tests.
    """

    log = Logger()

    def __init__(self, engine: SyncEngine, scanner: Scanner, disk: Disk, clock,
                 fetch: Callable[[Action, tuple], Deferred],
                 announce: Callable[[], None] = lambda: None,
                 run_blocking=maybeDeferred, mode: str = SEND_RECEIVE,
                 events: Optional[EventHub] = None):
        self.mode = engine.mode = mode
        self.events = events or EventHub()  # (what happens, for the web API)
        self.engine = engine
        self.scanner = scanner
        self.disk = disk
        self.clock = clock
        self.fetch = fetch
        self.announce = announce
        self.run_blocking = run_blocking
        self.actions = DiskActions(disk, mode)
        #: Fetched files wait here to be placed together.
        self.placing = Batches(run_blocking, self.actions.place, max_jobs=PLACING_JOBS,
                               around=engine.index.batch)
        self._pump_call = None
        #: Actions applied since start.
        self.applied = 0
        #: Called after every round of planning: L{Folder.when} uses it.
        self.observers: List[Callable[[], None]] = []
        self.trouble = Trouble(RETRY_DELAY, MAX_RETRY_DELAY)
        self.stopped = False
        self.scans = LocalScans(engine, scanner, clock, run_blocking, mode,
                                changed=self._scanned, events=self.events)

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    # -- scanning (L{LocalScans}) ---------------------------------------------------

    def rescan(self, finished: FrozenSet[str] = frozenset()) -> Deferred:
        return self.scans.rescan(finished)

    @property
    def scanning(self) -> bool:
        return self.scans.scanning

    @property
    def local_changes(self) -> Set[str]:
        return self.scans.local_changes

    # -- applying ------------------------------------------------------------------

    def kick(self) -> None:
        """
        Plan and apply soon: in the next turn, even if a later round is
        already scheduled (for a retry).
        """
        if self.stopped:
            return
        call = self._pump_call
        if call is None or not call.active():
            self._pump_call = self.clock.callLater(0, self.pump)
        elif call.getTime() > self.clock.seconds():
            call.reset(0)

    def pump(self) -> None:
        self._pump_call = None
        if self.stopped or self.held():
            return
        now = self.clock.seconds()
        room = MAX_IN_FLIGHT - len(self.engine.busy)
        actions = self.engine.next_actions(now, limit=room) if room > 0 else []
        # Parents before children; deletions last, deepest first.
        rest = sorted((a for a in actions if a.kind != DELETE), key=lambda a: a.path)
        deletes = sorted((a for a in actions if a.kind == DELETE), key=lambda a: a.path,
                         reverse=True)
        for action in rest + deletes:
            self._apply(action)
        if room > 0 and len(actions) < room and self.engine.has_planning():
            # Paths planned to nothing left room: plan the next ones in the
            # next turn (a bounded batch per turn keeps the reactor free).
            self._pump_call = self.clock.callLater(0, self.pump)
        else:
            due = [at for at in self.engine.waiting.values() if at != float("inf")]
            if due:  # (held paths wait for their rescan, not for a time)
                self._pump_call = self.clock.callLater(max(0.0, min(due) - now), self.pump)
        for observer in list(self.observers):
            observer()

    def _apply(self, action: Action) -> Deferred:
        local_copies = []
        if action.kind == FETCH:
            local_copies = [e.path for e in self.engine.store.with_hash(action.entry.hash)
                            if e.path != action.path]
        d = self.run_blocking(self.actions.apply, action, local_copies, self.now_ns())
        d.addCallback(self._outcome, action)
        d.addErrback(self._error, action)
        return d

    def _outcome(self, outcome: str, action: Action) -> None:
        if self.stopped:
            return
        if outcome == DONE:
            self.applied += 1
            self.trouble.cleared(action.path)
            self.engine.done(action)
            if action.conflict_copy:
                self.rescan()  # the copy is a new file of ours
            self.events.applied(action)
            self._announce()
        elif outcome == RESCAN:
            if self.trouble.in_a_row(action.path) >= STUCK_AFTER:
                # Rescanning has not helped: something a scan does not
                # index (a link, a special file) is in the way, or the
                # user keeps changing the path.  Back off; say so once.
                delay, _ = self.trouble.failed(action.path)
                if self.trouble.in_a_row(action.path) == STUCK_AFTER + 1:
                    self.log.warn(
                        "leaving {path} alone: something sync must not replace (a link, a"
                        " special file) is there, or it keeps changing; trying again in"
                        " {delay:.0f}s", path=wire.safe_text(action.path), delay=delay)
                self.engine.failed(action, self.clock.seconds() + delay)
            else:
                self.trouble.failed(action.path)
                # Released (so the scan records the path: it is no longer
                # ours in flight) but held out of planning until the scan
                # is done.
                self.engine.hold(action)
                d = self.rescan()
                d.addBoth(lambda _: self._replan(action))
                return
        elif outcome == BLOCKED:
            now = int(self.clock.seconds())
            if self.engine.needed_under(action.path, now):
                self.log.info("keeping directory {path}: it holds files still needed",
                              path=wire.safe_text(action.path))
                self.engine.revive(action, now)
                self._announce()
            else:
                # Its files are gone here but for what we do not sync
                # (ignored, or names that cannot travel): the directory
                # stays until they go.  Said once; tried again, less often.
                delay, first = self.trouble.failed(action.path)
                if first:
                    self.log.warn(
                        "cannot remove directory {path}: it holds files that are not synced"
                        " (ignored, or names that cannot travel); remove them to let it go."
                        " Trying again in {delay:.0f}s", path=wire.safe_text(action.path),
                        delay=delay)
                self.engine.failed(action, self.clock.seconds() + delay)
        elif outcome == NEED_BYTES:
            self._fetch(action)
            return
        else:
            self.engine.failed(action, self.clock.seconds() + RETRY_DELAY)
        self.kick()

    def _replan(self, action: Action) -> None:
        # After a short pause: a file still being written is not recorded
        # by the scan, and would otherwise be checked again at once.
        self.engine.retry(action, self.clock.seconds() + RESCAN_PAUSE)
        self.kick()

    def _fetch(self, action: Action) -> None:
        sources = self.engine.sources_for(action)
        if not sources:
            self.engine.failed(action, self.clock.seconds() + RETRY_DELAY)
            self.kick()  # so the retry is scheduled
            return
        d = self.fetch(action, sources)
        d.addCallback(lambda tmp: self.placing.add((action, tmp, self.now_ns())))
        d.addCallback(self._outcome, action)
        d.addErrback(self._error, action)

    def _error(self, failure, action: Action) -> None:
        why = failure.value
        code = getattr(why, "code", type(why).__name__)
        delay, first = self.trouble.failed(action.path)
        self.events.emit("error", {"path": action.path, "message": f"{action.kind}: {why}"})
        if first and not getattr(why, "logged", False):
            self.log.warn("cannot apply {kind} to {path}: {code}: {why}; trying again later",
                          kind=action.kind, path=wire.safe_text(action.path), code=code,
                          why=str(why))
        if not self.stopped:
            self.engine.failed(action, self.clock.seconds() + delay)
            self.kick()

    def tidy(self, lifetime: int = DELETION_LIFETIME) -> Deferred:
        """
        Forget deletions older than C{lifetime} seconds and clear trash-can
        versions past their keep-days (in a thread): run daily, so neither
        grows without bound.

        @return: a Deferred firing with (deletions forgotten, versions
            removed).
        """
        forgotten = self.engine.expire_tombstones(int(self.clock.seconds()), lifetime)
        d = self.run_blocking(self.disk.clean_trash, self.now_ns())
        d.addCallback(lambda removed: (forgotten, removed))
        return d

    def stop(self) -> None:
        self.stopped = True
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self.scans.stop()

