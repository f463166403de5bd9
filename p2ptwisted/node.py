# -*- test-case-name: tests.test_node -*-
"""
The node: identity, connections, the peer book and gossip policy.

Everything a node decides -- who to dial, which of two duplicate connections
survives, what to tell peers about other peers -- lives here, not in the
protocol, so it can be driven in memory with a fake clock.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Callable, Dict, List, Optional, Sequence, Set

import attrs
from twisted.application.service import Service
from twisted.internet import endpoints, threads
from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from p2ptwisted import wire
from p2ptwisted.peers import BookEntry, PeerBook, parse_dial_target, split_expected_id
from p2ptwisted.logbudget import LogBudget
from p2ptwisted.protocol import PeerFactory, PeerProtocol
from p2ptwisted.watch import ShareWatcher
from p2ptwisted.core.planner import SEND_ONLY, SEND_RECEIVE
from p2ptwisted.folder import Folder
from p2ptwisted.sync import DELETION_LIFETIME
from p2ptwisted.trash import DEFAULT_KEEP_DAYS
from p2ptwisted.identity import Identity, format_id, load_or_create_identity
from p2ptwisted.knownids import KnownIds
from p2ptwisted.limits import Limits
from p2ptwisted.state import StateLock
from p2ptwisted.uploads import RateLimit

#: Seconds between two PEERS frames to the same peer.
GOSSIP_INTERVAL = 2.0

#: How often the dialler looks for addresses that are due.
DIAL_TICK = 1.0

#: Dials in flight at once, so a flood of gossip cannot turn us into a
#: tool for flooding someone else.
MAX_PENDING_DIALS = 8

#: Connections (open or opening, either direction) in total, and from one
#: remote IP address.  Beyond them a new connection is dropped at once.
#: Several nodes may share one address (one machine, or a NAT), hence 16.
MAX_CONNECTIONS = 256
MAX_PER_ADDRESS = 16

#: Threads for blocking disk work (hashing the share, fsync).
DISK_THREADS = 8

#: TCP connect timeout for a dial.
CONNECT_TIMEOUT = 10.0

#: Nodes whose reachability (who dialled whom) we remember for the doctor.
MAX_REACH = 1024

#: Seconds after start-up at which the node logs its reachability summary.
DOCTOR_AFTER = 15.0


@attrs.define
class Reach:
    """
    How this node and one peer have reached each other: the last time a
    connection we dialled, and one it dialled, completed the handshake.
    """

    name: str = ""
    outbound: Optional[float] = None
    inbound: Optional[float] = None
    address: Optional[str] = None


def default_endpoint(reactor, entry: BookEntry) -> IStreamClientEndpoint:
    """
    The client endpoint that dials a book entry.

    Gossiped addresses are IP literals and get a plain TCP endpoint;
    operator-given names and endpoint strings are resolved as Twisted does.
    """
    if entry.endpoint is not None:
        return endpoints.clientFromString(reactor, entry.endpoint)
    host, port = entry.address.host, entry.address.port
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)
    cls = endpoints.TCP6ClientEndpoint if ip.version == 6 else endpoints.TCP4ClientEndpoint
    return cls(reactor, host, port, timeout=CONNECT_TIMEOUT)


class Node(Service):
    """
    A p2pshare node: one identity, many equal connections.

    @ivar connections: handshaken connections, by the peer's node id.
    @ivar book: every address we might dial (see L{PeerBook}).
    @ivar listen_ports: the TCP ports we accept connections on, announced in
        HELLO; filled in by the listener once it is bound.
    """

    log = Logger()
    name = "node"

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
        # What we listen and dial with: the peer factory itself, or the
        # same factory behind TLS (set up once the identity is loaded).
        self.listen_factory = self.dial_factory = None
        self.listen_ports: List[int] = []
        self.connections: Dict[str, PeerProtocol] = {}
        self.pending: List[PeerProtocol] = []
        self.book = book if book is not None else PeerBook()
        self.factory = PeerFactory(self)
        self._lock = StateLock(state_dir)
        self.log_budget = LogBudget(clock=self.clock)
        self.limits = limits if limits is not None else Limits()
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.rate_limit = RateLimit(rate=max_rate, clock=self.clock) if max_rate else None
        self._disk_pool: Optional[ThreadPool] = None
        if run_blocking is None:
            if hasattr(reactor, "callFromThread"):
                # A small pool of our own: disk work (hashing, fsync) only
                # needs a couple of threads, and every extra thread makes the
                # reactor wait longer for the GIL after each system call.
                self._disk_pool = ThreadPool(minthreads=0, maxthreads=DISK_THREADS,
                                             name="p2pshare-disk")

                def run_blocking(f, *args):
                    return threads.deferToThreadPool(reactor, self._disk_pool, f, *args)
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
        self._gossip_timers: Dict[PeerProtocol, object] = {}
        self.reach: Dict[str, Reach] = {}
        self.discovery = None  # a p2ptwisted.discovery.Discovery, if on
        self.listen_host = ""  # the address the listener binds ("" = all)
        self.started_at: Optional[float] = None
        self._summary_call = None
        self._last_gossip: Dict[PeerProtocol, float] = {}
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
            self.node_id = self.identity.node_id
            self.folder = Folder(
                self.share_dir, self.state_dir, self.node_id, self.clock, self._run_blocking,
                lambda: self.connections, mode=self.mode, keep_days=self.keep_days,
                deletion_lifetime=self.deletion_lifetime,
                stall_timeout=self.limits.stall_timeout,
                uploads_per_peer=self.limits.uploads_per_peer)
        except Exception:
            if self._disk_pool is not None and self._disk_pool.started:
                self._disk_pool.stop()
            self._lock.release()
            raise
        if self.tls:
            from p2ptwisted.tls import wrap

            self.listen_factory = wrap(self.identity, self.factory, False, self.clock)
            self.dial_factory = wrap(self.identity, self.factory, True, self.clock)
        else:
            self.listen_factory = self.dial_factory = self.factory
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
            self._watcher = ShareWatcher(self.reactor, self.share_dir, self.rescan,
                                         known=self.folder.is_current)
            self._watcher.start()
        self.folder.start()

    def rescan(self) -> Deferred:
        """
        Look at the share again (in a thread: hashing is slow) and publish
        what changed.  Asked during a scan, it runs one more scan after
        that one.  Fires with the number of local changes recorded.
        """
        return self.folder.rescan()

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

    def wait_for(self, condition: Callable[["Node"], bool]) -> Deferred:
        """
        A Deferred that fires with this node once C{condition(node)} holds,
        checked whenever a connection opens a handshake or closes.

        For scripts and tests: C{node.wait_for(lambda n: len(n.connections) >= 2)}.
        """
        d = Deferred(lambda d: self._waiters.remove((condition, d)))
        if condition(self):
            d.callback(self)
        else:
            self._waiters.append((condition, d))
        return d

    def _check_waiters(self) -> None:
        for waiter in list(self._waiters):
            condition, d = waiter
            if condition(self):
                self._waiters.remove(waiter)
                d.callback(self)

    # -- the peer book and dialling ------------------------------------------

    def add_bootstrap(self, text: str) -> BookEntry:
        """
        Add an operator-named peer: C{host:port} or a client endpoint
        string, optionally prefixed with C{ID@} to require that node there.
        """
        expected, target = split_expected_id(text)
        key, address, endpoint = parse_dial_target(target)
        entry = self.book.add_bootstrap(key, address=address, endpoint=endpoint)
        if expected is not None:
            entry.expected_id = expected
        return entry

    def dial_due(self) -> None:
        """
        Dial every address whose time has come, within the pending limit.
        """
        if not self.running:
            return
        now = self.clock.seconds()
        for entry in self.book.due(now, set(self.connections)):
            if len(self._dials) >= MAX_PENDING_DIALS:
                break
            self._dial(entry)

    def _dial(self, entry: BookEntry) -> None:
        self.book.dial_started(entry)
        try:
            endpoint = self._endpoint_for(entry)
        except Exception as e:
            self.book.dial_failed(entry, self.clock.seconds())
            self.log.warn("cannot dial {key}: {error}", key=entry.key, error=e)
            return
        self.log.debug("dialling {key}", key=entry.key)
        d = endpoint.connect(self.dial_factory)
        self._dials.add(d)

        def connected(proto: PeerProtocol) -> None:
            self._dials.discard(d)
            getattr(proto, "wrappedProtocol", proto).dialed = entry

        def failed(failure) -> None:
            self._dials.discard(d)
            self.book.dial_failed(entry, self.clock.seconds(), failure.getErrorMessage())
            if failure.check(CancelledError) and not self.running:
                return
            self.log.info(
                "could not reach {key} (attempt {n}, next in {delay:.0f}s): {why}",
                key=entry.key, n=entry.failures,
                delay=entry.next_attempt - self.clock.seconds(),
                why=failure.getErrorMessage(),
            )

        d.addCallbacks(connected, failed)

    # -- called by PeerProtocol ------------------------------------------------

    def make_hello(self) -> wire.Hello:
        return wire.Hello(
            versions=wire.SUPPORTED_VERSIONS,
            node_id=self.node_id,
            listen_ports=tuple(self.listen_ports[: wire.MAX_LISTEN_PORTS]),
            name=self.display_name[: wire.MAX_NAME],
        )

    def connection_made(self, proto: PeerProtocol) -> None:
        """
        A connection opened (either way): refuse it if it would pass the
        limits on connections in total or from one remote address, so no
        single host can use up the node.
        """
        total = len(self.pending) + len(self.connections)
        host = getattr(proto.transport.getPeer(), "host", None)
        same_host = sum(
            1 for p in list(self.pending) + list(self.connections.values())
            if getattr(p.transport.getPeer(), "host", None) == host
        )
        if total >= self.max_connections:
            proto.drop(f"already {total} connections (limit {self.max_connections})")
        elif same_host >= self.max_per_address:
            proto.drop(f"already {same_host} connections from {host}"
                       f" (limit {self.max_per_address})")
        else:
            self.pending.append(proto)

    def certificate_received(self, proto: PeerProtocol, node_id: str) -> Optional[str]:
        """
        Over TLS, before either side says HELLO: may the node whose
        certificate proves C{node_id} talk to us?  Returns why not, or
        C{None}.

        Fails closed: with an allow list, anyone not on it is refused; a
        dial to an address where we expect a particular node is refused if
        another one answers.
        """
        if node_id == self.node_id:
            return None  # a self-connection: HELLO handling says so and stops dialling it
        if self.allow is not None and node_id not in self.allow:
            return f"node {format_id(node_id)} is not in the allowed ids"
        entry = proto.dialed
        if entry is not None and entry.expected_id is not None and entry.expected_id != node_id:
            return (f"expected node {entry.expected_id[:12]} at {entry.key}"
                    f" but {node_id[:12]} answered")
        return None

    def handshake_completed(self, proto: PeerProtocol) -> None:
        """
        The peer said HELLO: decide whether this connection is the one we
        keep to that node.
        """
        if proto in self.pending:
            self.pending.remove(proto)
        remote = proto.remote_id
        if remote != self.node_id:
            self._record_reach(proto)
        if remote == self.node_id:
            if proto.dialed is not None:
                self.book.mark_self(proto.dialed)
                proto.close("self", f"connected to ourselves at {proto.dialed.key};"
                            " not dialling it again")
            else:
                proto.close("self", "connected to ourselves")
            return
        existing = self.connections.get(remote)
        if existing is not None:
            loser = self._duplicate_loser(existing, proto)
            if loser is proto:
                if proto.dialed is not None:
                    self.book.connected(proto.dialed, remote)
                proto.close("duplicate", "already connected to this node")
                self._check_waiters()  # the dialled address is now known to be connected
                return
            existing.close("duplicate", "a preferred connection to this node opened")
        self.connections[remote] = proto
        if self.known_ids.add(remote):
            self.log.info(
                "first contact with node {readable} ({name}){hint}",
                readable=format_id(remote), name=wire.safe_text(proto.hello.name, 32),
                hint="" if self.allow is not None or not self.tls else
                "; list known ids with --allow or --trust to admit only them",
            )
        address = self._listen_address(proto)
        if proto.dialed is not None:
            self.book.connected(proto.dialed, remote)
        if address is not None:
            self.book.learn(address, self.clock.seconds(), node_id=remote)
        self.log.info(
            "connected to {peer} ({direction})",
            peer=proto.describe(),
            direction="outbound" if proto.dialed is not None else "inbound",
        )
        proto.start_files()
        self.folder.peer_ready(proto)
        self._peers_changed()

    def _record_reach(self, proto: PeerProtocol) -> None:
        """
        Remember that this node and that one reached each other, and which
        way: the doctor's answer to "why do files move one way only?".
        """
        reach = self.reach.pop(proto.remote_id, None) or Reach()
        reach.name = wire.safe_text(proto.hello.name, 32)
        now = self.clock.seconds()
        if proto.dialed is not None:
            reach.outbound = now
            reach.address = proto.dialed.key
        else:
            reach.inbound = now
        self.reach[proto.remote_id] = reach  # most recent last
        while len(self.reach) > MAX_REACH:
            del self.reach[next(iter(self.reach))]

    def discovered(self, host: str, port: int, node_id: str, restarted: bool) -> None:
        """
        LAN discovery heard node C{node_id} announce C{host:port}: dial it
        unless we are connected to it.

        The address goes through the peer book like any other, so its
        backoff holds; only a node that restarted (a new instance id) is
        dialled at once.  Who answers is proven by TLS, not by the datagram.
        """
        if node_id in self.connections or not self.running:
            return
        try:
            address = wire.parse_address(str(wire.PeerAddress(wire.normalize_host(host), port)))
        except wire.ProtocolError:
            return
        now = self.clock.seconds()
        entry = self.book.get(str(address)) or self.book.learn(address, now)
        if entry is None or entry.is_self:
            return
        if not entry.discovered:
            entry.discovered = True
            self.log.info("heard node {id} on the LAN at {address}",
                          id=node_id[:12], address=str(address))
        if restarted and not entry.dialing and entry.node_id == node_id:
            # That very node answered here before and has restarted: dial
            # now.  (A datagram alone never cuts an address's backoff.)
            entry.next_attempt = min(entry.next_attempt, now)
        self.dial_due()

    def _duplicate_loser(self, existing: PeerProtocol, new: PeerProtocol) -> PeerProtocol:
        """
        Two connections to one node: pick the one to close.

        Both ends must close the same one whatever order they saw the
        handshakes in, so the rule uses only what both ends see alike: keep
        the connection dialled by the node with the smaller id; if one node
        dialled both, keep the one from the lower source port.
        """
        def rank(p: PeerProtocol):
            if p.dialed is not None:
                dialer, dialer_side = self.node_id, p.transport.getHost()
            else:
                dialer, dialer_side = p.remote_id, p.transport.getPeer()
            return (dialer, getattr(dialer_side, "port", 0))

        return new if rank(new) > rank(existing) else existing

    def connection_lost(self, proto: PeerProtocol, reason) -> None:
        if proto in self.pending:
            self.pending.remove(proto)
        timer = self._gossip_timers.pop(proto, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._last_gossip.pop(proto, None)
        now = self.clock.seconds()
        remote = proto.remote_id
        if remote is not None and self.connections.get(remote) is proto:
            del self.connections[remote]
            self.log.info(
                "{peer} left: {why}", peer=proto.describe(),
                why=proto.closed_because or reason.getErrorMessage(),
            )
            for entry in self.book.entries_for(remote):
                self.book.disconnected(entry, now, now - proto.connected_at)
            self.folder.peer_lost(proto)
            self._peers_changed()
        elif proto.downloads and self.folder is not None:
            # A replaced connection's downloads go to the one that stays.
            self.folder.fetcher.peer_lost(proto)
        if proto.dialed is not None and proto.dialed.dialing:
            # The dial reached something that never became a connection of
            # ours: no HELLO, or no common protocol version.
            self.book.dial_failed(proto.dialed, now,
                                  proto.closed_because or reason.getErrorMessage())
        # Waiters may watch pending connections too (a script waiting for a
        # refused stranger to be gone, say).
        self._check_waiters()

    def peers_received(self, proto: PeerProtocol, message: wire.Peers) -> None:
        """
        Learn the addresses a peer gossips, within bounds.
        """
        now = self.clock.seconds()
        last = proto.peers_received_at
        if last is not None and now - last < self.limits.gossip_spacing:
            self.log.debug("ignoring PEERS from {peer}: too frequent", peer=proto.describe())
            return
        proto.peers_received_at = now
        from_loopback = wire.is_loopback(getattr(proto.transport.getPeer(), "host", ""))
        ignored = message.rejected
        learned = 0
        ignored += max(0, len(message.addresses) - self.limits.gossip_entries)
        for address in message.addresses[: self.limits.gossip_entries]:
            if wire.is_loopback(address.host) and not from_loopback:
                # A remote peer naming a loopback address would have us
                # dial services on our own machine.
                ignored += 1
                continue
            if self.book.learn(address, now) is not None:
                learned += 1
        if ignored:
            self.log.info(
                "ignored {n} invalid entries in PEERS from {peer}",
                n=ignored, peer=proto.describe(),
            )
        if learned:
            self.log.debug("learned {n} addresses from {peer}", n=learned, peer=proto.describe())
            self.dial_due()

    # -- gossip ------------------------------------------------------------------

    def _listen_address(self, proto: PeerProtocol) -> Optional[wire.PeerAddress]:
        """
        Where the peer on C{proto} accepts connections, if it told us.

        For a connection we dialled that is the address we reached; for an
        inbound one it is the peer's host and the port its HELLO announced,
        never the ephemeral source port.
        """
        peer = proto.transport.getPeer()
        host = getattr(peer, "host", None)
        if proto.dialed is not None:
            port = getattr(peer, "port", None)
        elif proto.hello.listen_ports:
            port = proto.hello.listen_ports[0]
        else:
            return None
        if not isinstance(host, str) or not isinstance(port, int):
            return None  # not an IP connection (say, a UNIX socket)
        try:
            return wire.parse_address(str(wire.PeerAddress(wire.normalize_host(host), port)))
        except wire.ProtocolError:
            return None

    def gossip_for(self, proto: PeerProtocol) -> wire.Peers:
        """
        The PEERS frame for one peer: the listen addresses of the other
        peers we are connected to.
        """
        to_loopback = wire.is_loopback(getattr(proto.transport.getPeer(), "host", ""))
        addresses = []
        for remote, other in self.connections.items():
            if other is proto or remote == proto.remote_id:
                continue
            address = self._listen_address(other)
            if address is None or (wire.is_loopback(address.host) and not to_loopback):
                continue
            addresses.append(address)
            if len(addresses) == self.limits.gossip_entries:
                break
        return wire.Peers(addresses=tuple(addresses))

    def _peers_changed(self) -> None:
        for proto in list(self.connections.values()):
            self._schedule_gossip(proto)
        self._check_waiters()

    def _schedule_gossip(self, proto: PeerProtocol) -> None:
        if proto in self._gossip_timers:
            return  # a send is already scheduled and will carry the new set
        last = self._last_gossip.get(proto)
        now = self.clock.seconds()
        delay = 0.0 if last is None else max(0.0, last + GOSSIP_INTERVAL - now)
        self._gossip_timers[proto] = self.clock.callLater(delay, self._send_gossip, proto)

    def _send_gossip(self, proto: PeerProtocol) -> None:
        self._gossip_timers.pop(proto, None)
        if self.connections.get(proto.remote_id) is not proto:
            return
        self._last_gossip[proto] = self.clock.seconds()
        proto.send(self.gossip_for(proto))
