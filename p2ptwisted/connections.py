# -*- test-case-name: tests.test_node -*-
"""
The node's connection policy: which connections it admits (limits, the
allow list, the id expected at an address), which one of two to the same
node it keeps, and what a finished handshake or a lost connection means
for the peer book, the folder and the doctor's record of who reached
whom.  A mixin of L{p2ptwisted.node.Node}, kept apart so the node class
stays readable; it uses the node's C{connections}, C{pending}, C{book},
C{folder}, C{known_ids}, C{allow}, C{tls}, C{limits}, C{clock}, C{log},
C{max_connections}, C{max_per_address}, C{reach}, C{node_id} and its
gossip (L{p2ptwisted.gossip}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.identity import format_id
from p2ptwisted.limits import buffer_share
from p2ptwisted.filechannel import set_buffer
from p2ptwisted.protocol import PeerProtocol
from p2ptwisted.web.hub import EventHub, peer_summary

if TYPE_CHECKING:
    from p2ptwisted.approvals import Approvals
    from p2ptwisted.folder import Folder
    from p2ptwisted.gossip import GossipEntry
    from p2ptwisted.knownids import KnownIds
    from p2ptwisted.peers import PeerBook

#: Nodes whose reachability (who dialled whom) we remember for the doctor.
MAX_REACH = 1024

#: Connections (open or opening, either direction) in total.  Beyond it a
#: new connection is dropped at once -- or, if some inbound connection is
#: still in its handshake, the oldest of those is dropped to make room.
MAX_CONNECTIONS = 256

#: Inbound connections still in the handshake (TLS and HELLO), OpenSSH's
#: MaxStartups: when they are all taken, a new connection takes the place
#: of the oldest, so sockets that never finish their handshake cannot keep
#: honest peers out (an honest handshake takes milliseconds).
MAX_HANDSHAKES = 64

#: Inbound connections from one remote IP address.  Outbound connections
#: never count, nor connections from this very machine (both ends have the
#: same IP address: the operator's own nodes), so one machine can run a
#: mesh of any size.  Several nodes may share one address (a machine, or a
#: NAT), hence 16.
MAX_PER_ADDRESS = 16

#: Seconds a connection we keep has to answer a PING when its node
#: connects again (see L{ConnectionsMixin._probe}).
PROBE_TIMEOUT = 3.0


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


class ConnectionsMixin:
    # The node's, set in Node.__init__ (or, for methods, defined by the
    # node's other mixins): annotations only, nothing shadows them.
    connections: Dict[str, PeerProtocol]
    pending: List[PeerProtocol]
    book: PeerBook
    folder: Optional[Folder]
    known_ids: KnownIds
    events: EventHub
    approvals: Approvals
    allow: Optional[FrozenSet[str]]
    tls: bool
    clock: IReactorTime
    log: Logger
    running: int
    node_id: Optional[str]
    max_connections: int
    max_per_address: int
    max_handshakes: int
    reach: Dict[str, Reach]
    _waiters: List[Tuple[Callable[[Any], bool], Deferred]]
    _gossip_timers: Dict[PeerProtocol, IDelayedCall]
    _last_gossip: Dict[PeerProtocol, float]
    _gossip_cache: Dict[PeerProtocol, GossipEntry]
    dial_failed: Callable[..., None]
    _listen_address: Callable[[PeerProtocol], Optional[wire.PeerAddress]]
    _peers_changed: Callable[[], None]

    def wait_for(self, condition: Callable[[object], bool]) -> Deferred:
        """
        A Deferred that fires with this node once C{condition(node)} holds,
        checked whenever a connection opens a handshake or closes.

        For scripts and tests: C{node.wait_for(lambda n: len(n.connections) >= 2)}.
        """
        d: Deferred[object] = Deferred(lambda d: self._waiters.remove((condition, d)))
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

    def connection_made(self, proto: PeerProtocol) -> None:
        """
        A connection opened (either way): refuse it if it would pass the
        limits on connections in total, in the handshake, or from one
        remote address, so no single host can use up the node.
        """
        if not _outbound(proto):
            refusal = self._admit_inbound(proto)
            if refusal is not None:
                proto.drop(refusal)
                return
        elif len(self.pending) + len(self.connections) >= self.max_connections:
            proto.drop(f"already {len(self.pending) + len(self.connections)} connections"
                       f" (limit {self.max_connections})")
            return
        self.pending.append(proto)

    def _admit_inbound(self, proto: PeerProtocol) -> Optional[str]:
        """
        Why an inbound connection may not open, or C{None}: then it has a
        place, if need be the one of the oldest inbound connection still
        in its handshake (dropped here).
        """
        host = _host(proto)
        if host != getattr(proto.transport.getHost(), "host", None):
            same_host = sum(1 for p in list(self.pending) + list(self.connections.values())
                            if not _outbound(p) and _host(p) == host)
            if same_host >= self.max_per_address:
                return (f"already {same_host} connections from {host}"
                        f" (limit {self.max_per_address})")
        handshaking = [p for p in self.pending if not _outbound(p)]
        total = len(self.pending) + len(self.connections)
        if total >= self.max_connections:
            full = f"already {total} connections (limit {self.max_connections})"
        elif len(handshaking) >= self.max_handshakes:
            full = (f"already {len(handshaking)} connections in the handshake"
                    f" (limit {self.max_handshakes})")
        else:
            return None
        if not handshaking:
            return full
        oldest = handshaking[0]
        self.pending.remove(oldest)
        oldest.drop(f"{full}; the oldest still in the handshake makes room for a new one")
        return None

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
            self.approvals.refused(node_id, proto.describe(), self.clock.seconds())
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
        remote = _hello(proto).node_id
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
                self._probe(existing, proto)
                return
            existing.close("duplicate", "a preferred connection to this node opened")
        self._register(proto)

    def _probe(self, existing: PeerProtocol, new: PeerProtocol) -> None:
        """
        The node we are connected to dialled again (or answered our dial):
        the connection we would keep may be dead on its side (a broken
        path it noticed and we did not).  Ask it (PING): if it answers
        within L{PROBE_TIMEOUT}, the new connection is the duplicate; if
        not, the old one goes and the new one takes its place -- so a peer
        behind a path that broke is back within seconds, not after the
        idle timeout.  Frames on the new connection wait meanwhile.
        """
        remote = _hello(new).node_id
        new.paused = True  # FrameReceiver buffers what arrives meanwhile
        decided: List[bool] = []

        def decide(alive: bool) -> None:
            if decided:
                return
            decided.append(alive)
            if timer.active():
                timer.cancel()
            if new._lost or new._closing:
                return
            if self.connections.get(remote) is not existing:
                alive = False  # the old one is gone meanwhile
            elif not alive:
                existing.drop(f"no answer to a PING within {PROBE_TIMEOUT:g} seconds while"
                              " its node connected again")
            if alive:
                if new.dialed is not None:
                    self.book.connected(new.dialed, remote)
                new.close("duplicate", "already connected to this node")
                self._check_waiters()  # the dialled address is now known to be connected
                return
            if self.connections.get(remote) is existing:
                del self.connections[remote]
                assert self.folder is not None  # it is connected: the node started
                self.folder.peer_lost(existing)
            self._register(new)
            new.paused = False
            new.dataReceived(b"")  # what arrived meanwhile

        timer = self.clock.callLater(PROBE_TIMEOUT, decide, False)
        existing.probe(decide)

    def _register(self, proto: PeerProtocol) -> None:
        """
        C{proto} is our one connection to its node from now on.
        """
        hello = _hello(proto)
        remote = hello.node_id
        self.connections[remote] = proto
        if self.known_ids.add(remote):
            self.log.info(
                "first contact with node {readable} ({name}){hint}",
                readable=format_id(remote), name=wire.safe_text(hello.name, 32),
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
        self._share_buffers()
        assert self.folder is not None  # a handshake completed: the node started
        self.folder.peer_ready(proto)
        self._peers_changed()
        self.events.emit("peer-connected", peer_summary(proto))

    def _share_buffers(self) -> None:
        """
        Split the node's socket buffers between its connections (memory
        stays flat however many peers a node serves).
        """
        size = buffer_share(len(self.connections))
        for proto in self.connections.values():
            set_buffer(proto, size)

    def _record_reach(self, proto: PeerProtocol) -> None:
        """
        Remember that this node and that one reached each other, and which
        way: the doctor's answer to "why do files move one way only?".
        """
        hello = _hello(proto)
        reach = self.reach.pop(hello.node_id, None) or Reach()
        reach.name = wire.safe_text(hello.name, 32)
        now = self.clock.seconds()
        if proto.dialed is not None:
            reach.outbound = now
            reach.address = proto.dialed.key
        else:
            reach.inbound = now
        self.reach[hello.node_id] = reach  # most recent last
        while len(self.reach) > MAX_REACH:
            del self.reach[next(iter(self.reach))]

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
        self._gossip_cache.pop(proto, None)
        now = self.clock.seconds()
        remote = proto.remote_id
        if remote is not None and self.connections.get(remote) is proto:
            del self.connections[remote]
            if proto.closed_because is None:
                # (A connection we dropped or closed was logged then, with
                # why: one line per drop, not a second "left" line.)
                self.log.info("{peer} left: {why}", peer=proto.describe(),
                              why=reason.getErrorMessage())
            for entry in self.book.entries_for(remote):
                self.book.disconnected(entry, now, dropped=proto.closed_because is not None)
            self._share_buffers()
            assert self.folder is not None  # it was connected: the node started
            self.folder.peer_lost(proto)
            self._peers_changed()
            why = proto.closed_because or reason.getErrorMessage()
            self.events.emit("peer-lost", {"id": remote, "reason": why,
                                           "name": wire.safe_text(_hello(proto).name)})
        elif proto.downloads and self.folder is not None:
            # A replaced connection's downloads go to the one that stays.
            self.folder.fetcher.peer_lost(proto)
        if proto.dialed is not None and proto.dialed.dialing:
            # The dial reached something that never became a connection of
            # ours: no HELLO, or no common protocol version.
            self.dial_failed(proto.dialed, proto.closed_because or reason.getErrorMessage(),
                             quiet=not self.running or proto.closed_because is not None)
        # Waiters may watch pending connections too (a script waiting for a
        # refused stranger to be gone, say).
        self._check_waiters()


def _hello(proto: PeerProtocol) -> wire.Hello:
    """
    The HELLO of a connection whose handshake completed.
    """
    assert proto.hello is not None  # only asked once the peer said HELLO
    return proto.hello


def _host(proto: PeerProtocol) -> Optional[str]:
    return getattr(proto.transport.getPeer(), "host", None)


def _outbound(proto: PeerProtocol) -> bool:
    """
    Whether we dialled C{proto}: its book entry is set once the dial's
    Deferred fires, after C{connectionMade}; before that only the factory
    that built it (L{OutboundFactory}) tells.
    """
    return proto.dialed is not None or getattr(proto, "outbound", False)
