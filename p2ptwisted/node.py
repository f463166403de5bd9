# -*- test-case-name: tests.test_node -*-
"""
The node: identity, connections, the peer book and gossip policy.

Everything a node decides -- who to dial, which of two duplicate connections
survives, what to tell peers about other peers -- lives here, not in the
protocol, so it can be driven in memory with a fake clock.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from p2ptwisted import wire
from p2ptwisted.batching import BatchedCalls
from p2ptwisted.connections import (  # noqa: F401 (re-exported)
    MAX_CONNECTIONS, MAX_HANDSHAKES, MAX_PER_ADDRESS, MAX_REACH, ConnectionsMixin, Reach)
from p2ptwisted.dialing import (  # noqa: F401 (re-exported)
    CONNECT_TIMEOUT, MAX_PENDING_DIALS, DialBudget, DialingMixin, default_endpoint)
from p2ptwisted.gossip import GOSSIP_INTERVAL, GossipMixin  # noqa: F401 (re-exported)
from p2ptwisted.peers import BookEntry, PeerBook
from p2ptwisted.logbudget import LogBudget
from p2ptwisted.factories import OutboundFactory, PeerFactory
from p2ptwisted.protocol import PeerProtocol
from p2ptwisted.watch import ShareWatcher
from p2ptwisted.core.planner import SEND_ONLY, SEND_RECEIVE
from p2ptwisted.folder import Folder
from p2ptwisted.sync import DELETION_LIFETIME
from p2ptwisted.trash import DEFAULT_KEEP_DAYS
from p2ptwisted.identity import Identity, format_id, load_or_create_identity
from p2ptwisted.knownids import KnownIds
from p2ptwisted.approvals import Approvals
from p2ptwisted.core.versions import short_id
from p2ptwisted.web.hub import EventHub
from p2ptwisted.limits import Limits
from p2ptwisted.state import StateLock
from p2ptwisted.uploads import RateLimit

if TYPE_CHECKING:
    from p2ptwisted.discovery import Discovery


#: How often the dialler looks for addresses that are due.
DIAL_TICK = 1.0

#: Threads for blocking disk work (hashing the share, fsync).
DISK_THREADS = 8

#: Seconds after start-up at which the node logs its reachability summary.
DOCTOR_AFTER = 15.0


class Node(ConnectionsMixin, DialingMixin, GossipMixin, Service):
    """
    A p2pshare node: one identity, many equal connections.

    @ivar connections: handshaken connections, by the peer's node id.
    @ivar book: every address we might dial (see L{PeerBook}).
    @ivar listen_ports: the TCP ports we accept connections on, announced in
        HELLO; filled in by the listener once it is bound.
    """

    log = Logger()
    name = "node"  # type: ignore[assignment]  # (Service annotates it as None)

    def __init__(
        self,
        reactor,
        state_dir: str,
        share_dir: str,
        display_name: Optional[str] = None,
        bootstrap: Sequence[str] = (),
        endpoint_factory: Optional[Callable[[BookEntry], IStreamClientEndpoint]] = None,
        book: Optional[PeerBook] = None,
        sync: bool = True,
        mode: str = SEND_RECEIVE,
        keep_days: int = DEFAULT_KEEP_DAYS,
        deletion_lifetime: int = DELETION_LIFETIME,
        run_blocking: Optional[Callable[[Callable], Deferred]] = None,
        watch: bool = True,
        max_rate: Optional[float] = None,
        max_connections: int = MAX_CONNECTIONS,
        max_per_address: int = MAX_PER_ADDRESS,
        max_handshakes: int = MAX_HANDSHAKES,
        tls: bool = True,
        allow: Optional[Set[str]] = None,
        limits: Optional[Limits] = None,
    ):
        self.reactor = reactor
        self.clock = reactor
        self.state_dir = state_dir
        self.share_dir = share_dir
        self.display_name = display_name if display_name is not None else socket.gethostname()
        self.node_id: Optional[str] = None
        self.identity: Optional[Identity] = None
        self.tls = tls
        # None: open to any node.  An empty set admits nobody (fail closed).
        self.allow = frozenset(allow) if allow is not None else None
        self.known_ids = KnownIds(state_dir)
        #: What happens here, for the web API's event stream (see docs/api.md).
        self.events = EventHub()
        self.events.now = reactor.seconds
        self.events.names = self._name_of
        self.approvals = Approvals(state_dir, self.events)
        # What we listen and dial with: the peer factory itself, or the
        # same factory behind TLS (set up once the identity is loaded).
        self.listen_factory: Optional[IProtocolFactory] = None
        self.dial_factory: Optional[IProtocolFactory] = None
        self.listen_ports: List[int] = []
        self.connections: Dict[str, PeerProtocol] = {}
        self.pending: List[PeerProtocol] = []
        self.book = book if book is not None else PeerBook()
        self.factory = PeerFactory(self)
        self.outbound_factory = OutboundFactory(self)
        self._lock = StateLock(state_dir)
        self.log_budget = LogBudget(clock=self.clock)
        self.dial_budget = DialBudget(self.clock)
        self.limits = limits if limits is not None else Limits()
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.max_handshakes = max_handshakes
        self.rate_limit = RateLimit(rate=max_rate, clock=self.clock) if max_rate else None
        self._disk_pool: Optional[ThreadPool] = None
        if run_blocking is None:
            if hasattr(reactor, "callFromThread"):
                # A small pool of our own: disk work (hashing, fsync) only
                # needs a couple of threads, and every extra thread makes the
                # reactor wait longer for the GIL after each system call.
                self._disk_pool = ThreadPool(minthreads=0, maxthreads=DISK_THREADS,
                                             name="p2pshare-disk")

                def in_thread(f, *args):
                    return threads.deferToThreadPool(reactor, self._disk_pool, f, *args)

                run_blocking = BatchedCalls(in_thread, DISK_THREADS)
            else:  # a reactor without threads (a test's memory reactor)
                run_blocking = maybeDeferred
        self._run_blocking = run_blocking
        # --no-sync: serve our files, take nothing from peers.
        self.mode = mode if sync else SEND_ONLY
        self.keep_days = keep_days
        self.deletion_lifetime = deletion_lifetime
        #: The shared folder, opened once the state directory is ours.
        self.folder: Optional[Folder] = None
        self._watch = watch
        self._watcher: Optional[ShareWatcher] = None
        self._endpoint_for = endpoint_factory or (lambda e: default_endpoint(reactor, e))
        self._dials: set = set()
        self._dialer: Optional[LoopingCall] = None
        self._waiters: List[tuple] = []
        self._gossip_timers: Dict[PeerProtocol, IDelayedCall] = {}
        self.reach: Dict[str, Reach] = {}
        self.discovery: Optional[Discovery] = None  # if on
        self.listen_host = ""  # the address the listener binds ("" = all)
        self.started_at: Optional[float] = None
        self._summary_call: Optional[IDelayedCall] = None
        self._last_gossip: Dict[PeerProtocol, float] = {}
        self._gossip_cache: Dict[PeerProtocol, tuple] = {}
        for text in bootstrap:
            self.add_bootstrap(text)

    # -- lifecycle -------------------------------------------------------------

    def startService(self) -> None:
        """
        Lock the state directory, load our identity, and start dialling.

        Raises L{p2ptwisted.state.StateError} if another node holds the
        state directory: two nodes with one identity would split the mesh.
        """
        os.makedirs(self.share_dir, exist_ok=True)
        self._lock.acquire()
        if self._disk_pool is not None:
            self._disk_pool.start()
        try:
            self.identity = load_or_create_identity(self.state_dir)
            self.known_ids.load()
            if self.allow is not None:
                self.allow = self.allow | self.approvals.load()
            self.node_id = self.identity.node_id
            self.folder = Folder(
                self.share_dir, self.state_dir, self.node_id, self.clock, self._run_blocking,
                lambda: self.connections, mode=self.mode, keep_days=self.keep_days,
                deletion_lifetime=self.deletion_lifetime,
                stall_timeout=self.limits.stall_timeout,
                uploads_per_peer=self.limits.uploads_per_peer, events=self.events)
        except Exception:
            if self._disk_pool is not None and self._disk_pool.started:
                self._disk_pool.stop()
            self._lock.release()
            raise
        if self.tls:
            from p2ptwisted.tls import wrap

            self.listen_factory = wrap(self.identity, self.factory, False, self.clock)
            self.dial_factory = wrap(self.identity, self.outbound_factory, True, self.clock)
        else:
            self.listen_factory, self.dial_factory = self.factory, self.outbound_factory
        Service.startService(self)
        self.log.info(
            "node {name} ({node_id}) starting; share {share}, state {state}",
            name=self.display_name, node_id=self.node_id,
            share=self.share_dir, state=self.state_dir,
        )
        self.log.info(
            "node id {readable} ({security})",
            readable=format_id(self.node_id),
            security=(
                "TLS off: --no-tls, for debugging only" if not self.tls
                else f"TLS; only {len(self.allow)} allowed ids may connect"
                if self.allow is not None
                else "TLS; any node may connect"
            ),
        )
        self.started_at = self.clock.seconds()
        self._summary_call = self.clock.callLater(DOCTOR_AFTER, self._log_summary)
        self._dialer = LoopingCall(self.dial_due)
        self._dialer.clock = self.clock
        self._dialer.start(DIAL_TICK, now=True)
        if self._watch:
            folder = self.folder
            self._watcher = watcher = ShareWatcher(
                self.reactor, self.share_dir, lambda: folder.rescan(watcher.finished),
                known=folder.is_current)
            self._watcher.start()
        self.folder.start()

    def rescan(self) -> Deferred:
        """
        Look at the share again (in a thread: hashing is slow) and publish
        what changed.  Asked during a scan, it runs one more scan after
        that one.  Fires with the number of local changes recorded.
        """
        assert self.folder is not None  # opened by startService, before any scan
        return self.folder.rescan()

    def _name_of(self, short: str) -> str:
        """
        The display name of the node with this short id (vectors name
        nodes so), for events: ours, a connected peer's, else the short id.
        """
        for node_id, proto in self.connections.items():
            if short_id(node_id) == short and proto.hello is not None:
                return proto.hello.name
        return self.display_name if self.node_id and short_id(self.node_id) == short else short

    def stopService(self) -> Deferred:
        """
        Stop dialling, close every connection, and release the state
        directory once they are closed.
        """
        Service.stopService(self)
        if self._summary_call is not None and self._summary_call.active():
            self._summary_call.cancel()
        if self._dialer is not None and self._dialer.running:
            self._dialer.stop()
        for timer in self._gossip_timers.values():
            if timer.active():
                timer.cancel()
        self._gossip_timers.clear()
        for d in list(self._dials):
            d.cancel()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.folder is not None:
            self.folder.stop()
        protos = list(self.connections.values()) + list(self.pending)
        waiting = [p.when_lost() for p in protos]
        for proto in protos:
            proto.close_transport()
        done = gatherResults(waiting)

        def stopped(_):
            if self._disk_pool is not None and self._disk_pool.started:
                self._disk_pool.stop()
            if self.folder is not None:
                self.folder.close()
            self._lock.release()

        done.addBoth(stopped)
        return done

    def listening_on(self, port: int) -> None:
        """
        Called by the listener once bound, so HELLO announces the real port.
        """
        if port not in self.listen_ports:
            self.listen_ports.append(port)
            if self.discovery is not None:
                self.discovery.changed()

    def _log_summary(self) -> None:
        """
        A little after start-up, log what the doctor sees: where we listen,
        whether discovery works, who reached whom.
        """
        from p2ptwisted.doctor import diagnose

        self._summary_call = None
        self.log.info("reachability after {seconds:.0f}s:\n{report}",
                      seconds=DOCTOR_AFTER, report="\n".join(diagnose(self)))

    # -- called by PeerProtocol ------------------------------------------------

    def make_hello(self) -> wire.Hello:
        assert self.node_id is not None  # loaded by startService, before any connection
        return wire.Hello(
            versions=wire.SUPPORTED_VERSIONS,
            node_id=self.node_id,
            listen_ports=tuple(self.listen_ports[: wire.MAX_LISTEN_PORTS]),
            name=self.display_name[: wire.MAX_NAME],
        )
