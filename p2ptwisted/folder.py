# -*- test-case-name: tests.test_exchange -*-
"""
The node's shared folder, assembled: the index in the state directory, the
sync engine, the scanner and the disk, the sync shell that drives them,
and the three network pieces (index exchange, serving, fetching) that the
protocol hands frames to.

The node owns the connections; this owns everything about the folder, so
the node stays about peers and the protocol stays about frames.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from p2ptwisted.apply import Disk
from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.index import DIR, PERM_MASK, LocalIndex
from p2ptwisted.core.planner import SEND_RECEIVE
from p2ptwisted.core.versions import short_id
from p2ptwisted.exchange import IndexExchange
from p2ptwisted.fetcher import Fetcher
from p2ptwisted.hashing import ScanStopped
from p2ptwisted.scanner import Scanner
from p2ptwisted.serving import Server
from p2ptwisted.store import SqliteStore
from p2ptwisted.sync import DELETION_LIFETIME, FolderSync
from p2ptwisted.trash import DEFAULT_KEEP_DAYS
from p2ptwisted.web.hub import EventHub
from p2ptwisted.wire_index import IndexHello

#: Seconds between two tidy-ups (old deletions forgotten, old trash-can
#: versions removed).
TIDY_INTERVAL = 24 * 3600.0

#: Meta key set once a scan has completed: the stored index is then whole
#: as of the last run, and can be sent before this run's first scan.
WHOLE_KEY = "scanned_whole"


class Folder:
    """
    @ivar sync: the L{FolderSync} shell.
    @ivar server: answers GETs; @ivar fetcher: sends them;
        @ivar exchange: the index frames.
    """

    log = Logger()

    def __init__(self, root: str, state_dir: str, node_id: str, clock, run_blocking,
                 connections: Callable[[], Dict[str, Any]], *, mode: str = SEND_RECEIVE,
                 keep_days: int = DEFAULT_KEEP_DAYS, deletion_lifetime: int = DELETION_LIFETIME,
                 stall_timeout: float = 60.0, uploads_per_peer: int = 64,
                 events: Optional[EventHub] = None):
        self.root = root
        self.clock = clock
        self.deletion_lifetime = deletion_lifetime
        self.store = SqliteStore.open(state_dir)
        scanner = Scanner(root, state_dir, self.store)
        self.index = LocalIndex(self.store, short_id(node_id))
        self.engine = SyncEngine(self.index, self.store, mode=mode, ignored=scanner.ignored)
        self.engine.sweep()
        self.disk = Disk(root, state_dir, keep_days=keep_days)
        self.exchange = IndexExchange(self.engine, clock, connections, changed=self._kick)
        self.server = Server(self.store, self.disk, uploads_per_peer)
        self.fetcher = Fetcher(clock, run_blocking, self._open_dir, connections, stall_timeout,
                               remove_made=self.disk.remove_made, store=self.store,
                               disk=self.disk, me=node_id)
        self.server.partial_block = self.fetcher.partial_block
        self.sync = FolderSync(self.engine, scanner, self.disk, clock,
                               fetch=lambda action, sources: self.fetcher.fetch(action.entry,
                                                                              sources),
                               announce=self.exchange.announce, run_blocking=run_blocking,
                               mode=mode, events=events)
        self._tidy_call = clock.callLater(TIDY_INTERVAL, self.tidy)
        #: Whether peers may hear of our index (see L{start}): at once if
        #: it is whole as of our last run, else once the first scan is done.
        self.ready = self.store.meta(WHOLE_KEY) == "1"
        #: Connections waiting for our first scan, with the INDEX_HELLO each
        #: peer sent meanwhile (None until it comes).
        self._hello_waiting: Dict[Any, Optional[IndexHello]] = {}
        self._waiters: List[Tuple[Callable[[], bool], Deferred]] = []
        self._busy_since: Optional[Tuple[float, int, int, int, int]] = None
        self.sync.observers.append(self._observe)

    def when(self, condition: Callable[[], bool]) -> Deferred:
        """
        A Deferred firing once C{condition()} is true, checked now and
        after every round of planning (a script's, or a test's, way to
        wait for the folder: C{folder.when(folder.in_sync)}).
        """
        d: Deferred[None] = Deferred()
        if condition():
            d.callback(None)
        else:
            self._waiters.append((condition, d))
        return d

    def _observe(self) -> None:
        self._log_in_step()
        self._check_waiters()

    def _log_in_step(self) -> None:
        """
        One line each time the folder comes back in step after applying
        peers' changes: what a user watching the log waits for.
        """
        fetcher = self.fetcher
        if not self.in_sync():
            if self._busy_since is None:
                self._busy_since = (self.clock.seconds(), self.sync.applied,
                                    fetcher.completed, fetcher.bytes_received,
                                    fetcher.bytes_reused)
            return
        if self._busy_since is None:
            return
        started, applied, fetched, received, reused = self._busy_since
        self._busy_since = None
        if self.sync.applied > applied:
            seconds = self.clock.seconds() - started
            size = fetcher.bytes_received - received
            local = fetcher.bytes_reused - reused
            self.log.info(
                "in step with peers: applied {changes} changes, fetched {files} files"
                " ({size} bytes) in {seconds:.1f}s, {rate:.1f} MiB/s{local}",
                changes=self.sync.applied - applied, files=fetcher.completed - fetched,
                size=size, seconds=seconds, rate=size / max(seconds, 1e-3) / 2**20,
                local=f"; reused {local} bytes from local files" if local else "")

    def _check_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for condition, d in waiters:
            try:
                met = condition()
            except Exception:
                d.errback()  # the waiter hears of it; the folder goes on
                continue
            if met:
                d.callback(None)
            else:
                self._waiters.append((condition, d))

    def _kick(self) -> None:
        self.sync.kick()

    def _open_dir(self, path: str):
        return self.disk.parent_made(path)

    @property
    def mode(self) -> str:
        return self.sync.mode

    # -- connections ---------------------------------------------------------------

    def start(self) -> Deferred:
        """
        The first scan.  A new index is not sent before it is done: it
        would be partial, and a peer would log it as complete.  A peer's
        INDEX_HELLO that arrives meanwhile is held, and handled once ours
        is sent, so the exchange always starts in order.

        An index that a whole scan has filled before (a restart) is sent
        at once: it is what peers last saw of us, whole, and the scan then
        streams what changed while we were off, as any change.  Peers are
        safe meanwhile: we serve a file only if the disk still has the
        size and mtime the index says, and we replace nothing on disk that
        differs from what we last scanned.
        """
        def scanned(result):
            if self.sync.scans.count and self.store.meta(WHOLE_KEY) != "1":
                self.store.set_meta(WHOLE_KEY, "1")
            if not self.ready:
                self.ready = True
                self._release_held()
            return result

        return self.rescan().addCallback(scanned)

    def _release_held(self) -> None:
        waiting, self._hello_waiting = self._hello_waiting, {}
        connected = self.exchange.connections()
        for proto, held in waiting.items():
            if connected.get(proto.remote_id) is proto:
                self.exchange.peer_ready(proto)
                if held is not None:
                    self.exchange.hello_received(proto, held)

    def peer_ready(self, proto) -> None:
        if self.ready:
            self.exchange.peer_ready(proto)
        else:
            self._hello_waiting[proto] = None

    def hello_received(self, proto, message) -> None:
        """
        The peer's INDEX_HELLO: held until our own is sent (see L{start}).
        """
        if proto in self._hello_waiting:
            self._hello_waiting[proto] = message
        else:
            self.exchange.hello_received(proto, message)

    def peer_lost(self, proto) -> None:
        self._hello_waiting.pop(proto, None)
        self.exchange.peer_lost(proto)
        self.fetcher.peer_lost(proto)

    # -- the disk --------------------------------------------------------------------

    def rescan(self, finished: FrozenSet[str] = frozenset()) -> Deferred:
        """
        Scan now; fires with the number of local changes recorded (0 if
        the scan failed, which is logged, or was stopped).  C{finished}:
        see L{LocalScans.rescan}.
        """
        return self.sync.rescan(finished).addErrback(self._scan_failed)

    def _scan_failed(self, failure) -> int:
        if not failure.check(ScanStopped):
            self.log.failure("scanning the share failed", failure)
        return 0

    def is_current(self, relative: str) -> bool:
        """
        Whether the path (relative to the root, as the watcher saw it) is
        in the index as it is on disk -- a file this node just placed --
        so a change notification for it needs no rescan.
        """
        path = unicodedata.normalize("NFC", relative.replace(os.sep, "/"))
        if path in self.engine.busy:
            # Ours in flight: its outcome records it (and the placing
            # checks the disk first, so a user's change is not lost).
            return True
        try:
            st = os.lstat(os.path.join(self.root, relative))
        except OSError:
            return False
        entry = self.store.get(path)
        if entry is None or not entry.live:
            return False
        if stat.S_ISDIR(st.st_mode):
            return entry.kind == DIR
        return stat.S_ISREG(st.st_mode) and entry.kind != DIR and (
            entry.size, entry.mtime_ns, entry.perms) == (
            st.st_size, st.st_mtime_ns, st.st_mode & PERM_MASK)

    def tidy(self) -> Deferred:
        self._tidy_call = self.clock.callLater(TIDY_INTERVAL, self.tidy)
        d = self.sync.tidy(self.deletion_lifetime)

        def done(result):
            forgotten, removed = result
            if forgotten or removed:
                self.log.info("tidied: forgot {forgotten} old deletions, removed {removed}"
                              " old versions from the trash can",
                              forgotten=forgotten, removed=removed)
            return result

        return d.addCallback(done)

    def unplanned(self) -> List[str]:
        """
        The paths the sync has yet to plan, or is to try again: what may
        still need fetching beyond the fetches under way.
        """
        engine = self.engine
        return [path for path in set(engine.dirty).union(engine.waiting)
                if path not in engine.busy]

    def in_sync(self) -> bool:
        """
        Nothing left to do here: no scan running, no action planned,
        waiting or in flight.  (Peers may still have news on the way.)
        """
        return (not self.sync.scanning and self.engine.in_sync()
                and not self.fetcher.active and not self.fetcher.queue)

    def stop(self) -> None:
        if self._tidy_call.active():
            self._tidy_call.cancel()
        self.sync.stop()
        self.fetcher.stop()

    def close(self) -> None:
        self.disk.close()
        self.store.close()
