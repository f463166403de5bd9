# -*- test-case-name: tests.test_node -*-
"""
Gossip: the PEERS frames a node sends and what it learns from those it
gets.  A mixin of L{p2ptwisted.node.Node}, kept apart so the node class
stays readable; it uses the node's C{connections}, C{book}, C{limits},
C{clock}, C{log}, C{dial_due} and C{_check_waiters}, and its
C{_gossip_timers}, C{_last_gossip} and C{_gossip_cache}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.protocol import PeerProtocol

if TYPE_CHECKING:
    from p2ptwisted.limits import Limits
    from p2ptwisted.peers import PeerBook

#: A connection's listen address (or None) and whether it is loopback.
GossipEntry = Tuple[Optional[wire.PeerAddress], bool]

#: Seconds between two PEERS frames to the same peer.
GOSSIP_INTERVAL = 2.0

#: When gossip names a node we have never met whose id is smaller than
#: ours, we wait this long before dialling it: the gossip that told us of
#: it told it of us, and the node with the smaller id dials at once.  So
#: two nodes rarely dial each other at the same moment, and the connection
#: that forms is the one the duplicate rule keeps (the smaller id's).  If
#: the other node cannot reach us, we dial it after this delay.
YIELD_DELAY = 4.0


class GossipMixin:
    # The node's, set in Node.__init__ (or, for methods, defined by the
    # node's other mixins): annotations only, nothing shadows them.
    connections: Dict[str, PeerProtocol]
    book: PeerBook
    limits: Limits
    clock: IReactorTime
    log: Logger
    node_id: Optional[str]
    _gossip_timers: Dict[PeerProtocol, IDelayedCall]
    _last_gossip: Dict[PeerProtocol, float]
    _gossip_cache: Dict[PeerProtocol, GossipEntry]
    dial_due: Callable[[], None]
    _check_waiters: Callable[[], None]

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
        ids = message.ids or (None,) * len(message.addresses)
        assert self.node_id is not None  # PEERS come after our HELLO: the node started
        for address, claimed in zip(message.addresses[: self.limits.gossip_entries], ids):
            if not from_loopback and wire.is_loopback(address.host):
                # A remote peer naming a loopback address would have us
                # dial services on our own machine.
                ignored += 1
                continue
            if claimed == self.node_id:
                claimed = None  # our own address: the dial will find out
            entry = self.book.learn(address, now, claimed_id=claimed)
            if entry is not None:
                learned += 1
                if claimed is not None and claimed < self.node_id:
                    entry.next_attempt = now + YIELD_DELAY * (1.0 + 0.25 * self.book.jitter())
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
        return self._gossip_entry(proto)[0]

    def _gossip_entry(self, proto: PeerProtocol) -> GossipEntry:
        """
        C{(listen address or None, whether it is loopback)} for a
        registered connection, worked out once: every PEERS frame to every
        peer lists it, and parsing addresses again each time was most of
        the cost of a big mesh forming.
        """
        entry = self._gossip_cache.get(proto)
        if entry is None:
            address = self._find_listen_address(proto)
            entry = (address, address is not None and wire.is_loopback(address.host))
            if proto.remote_id is not None and self.connections.get(proto.remote_id) is proto:
                self._gossip_cache[proto] = entry
        return entry

    def _find_listen_address(self, proto: PeerProtocol) -> Optional[wire.PeerAddress]:
        peer = proto.transport.getPeer()
        host = getattr(peer, "host", None)
        if proto.dialed is not None:
            port = getattr(peer, "port", None)
        else:
            assert proto.hello is not None  # asked of connections past their HELLO
            if not proto.hello.listen_ports:
                return None
            port = proto.hello.listen_ports[0]
        if not isinstance(host, str) or not isinstance(port, int):
            return None  # not an IP connection (say, a UNIX socket)
        try:
            return wire.parse_address(str(wire.PeerAddress(wire.normalize_host(host), port)))
        except wire.ProtocolError:
            return None

    def gossip_for(self, proto: PeerProtocol) -> wire.Peers:
        """
        The PEERS frame for one peer: the listen addresses of the other
        peers we are connected to, each with its node id, so the receiver
        does not dial a node it is connected to at another address.
        """
        to_loopback = wire.is_loopback(getattr(proto.transport.getPeer(), "host", ""))
        addresses, ids, seen = [], [], set()
        for remote, other in self.connections.items():
            if other is proto or remote == proto.remote_id:
                continue
            address, loopback = self._gossip_entry(other)
            if address is None or (loopback and not to_loopback):
                continue
            if address in seen:
                continue  # two nodes behind one address and port: hardly; keep the first
            seen.add(address)
            addresses.append(address)
            ids.append(remote)
            if len(addresses) == self.limits.gossip_entries:
                break
        return wire.Peers(addresses=tuple(addresses), ids=tuple(ids))

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
        if proto.remote_id is None or self.connections.get(proto.remote_id) is not proto:
            return
        self._last_gossip[proto] = self.clock.seconds()
        proto.send(self.gossip_for(proto))
