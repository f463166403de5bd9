# -*- test-case-name: tests.test_discovery -*-
"""
Finding peers on the LAN without configuration: UDP announcements to a
multicast group.

Each node sends a small datagram (see L{Announcement} and protocol.md
section 21) to L{GROUP} on UDP L{PORT}, from each IPv4 interface it
accepts connections on, at start, when its listen ports change, and every
30 to 60 seconds.  A node that hears one from a node it is not connected
to dials the datagram's source address at the announced port, through the
peer book (so backoff and the dial limits apply); who answers is still
proven by the TLS handshake, never by the datagram.

Only the datagram's parsing lives here ("parse at the edge"); what to do
with a node heard is the node's decision (L{p2ptwisted.node.Node.discovered}).
"""

from __future__ import annotations

import fcntl
import ipaddress
import random
import secrets
import socket
import struct
from typing import Any, Callable, Dict, List, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger


#: The multicast group (administratively scoped, RFC 2365) and UDP port.
GROUP = "239.255.43.21"
PORT = 12345

MAGIC = b"P2PS"
VERSION = 1

#: Flags: the sender speaks TLS.
FLAG_TLS = 0x01

#: magic, version, flags, node id, listen port, instance id.
_FORMAT = struct.Struct("!4sBB32sH8s")
SIZE = _FORMAT.size

#: Announce every ANNOUNCE_MIN to ANNOUNCE_MAX seconds (random, so nodes
#: started together do not stay in step).
ANNOUNCE_MIN = 30.0
ANNOUNCE_MAX = 60.0

#: React to any one node at most once per this many seconds (unless it
#: restarted: a new instance id).
REACT_INTERVAL = 30.0

#: Distinct nodes heard from one source address acted on per REACT_INTERVAL:
#: forged datagrams must not turn us into a port scanner of that address.
REACT_PER_SOURCE = 4


#: Nodes heard that we remember (for the doctor); forged ids must not grow
#: it without bound.
MAX_HEARD = 256


class MalformedAnnouncement(ValueError):
    pass


@attrs.frozen
class Announcement:
    node_id: str
    port: int
    instance: str
    tls: bool
    version: int = VERSION


def encode(a: Announcement) -> bytes:
    return _FORMAT.pack(MAGIC, a.version, FLAG_TLS if a.tls else 0,
                        bytes.fromhex(a.node_id), a.port, bytes.fromhex(a.instance))


def decode(data: bytes) -> Announcement:
    """
    Parse a datagram, or raise L{MalformedAnnouncement} saying why.

    Longer datagrams are accepted (later versions may append fields);
    shorter ones, another magic, version 0, or port 0 are not.
    """
    if len(data) < SIZE:
        raise MalformedAnnouncement(f"{len(data)} bytes, fewer than {SIZE}")
    magic, version, flags, node_id, port, instance = _FORMAT.unpack_from(data)
    if magic != MAGIC:
        raise MalformedAnnouncement("not a p2pshare announcement (wrong magic)")
    if version == 0:
        raise MalformedAnnouncement("version 0")
    if port == 0:
        raise MalformedAnnouncement("port 0")
    return Announcement(node_id=node_id.hex(), port=port, instance=instance.hex(),
                        tls=bool(flags & FLAG_TLS), version=version)


@attrs.frozen
class Interface:
    name: str
    address: str
    up: bool
    loopback: bool
    multicast: bool
    netmask: str = "255.255.255.255"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.address}/{self.netmask}", strict=False)


_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFF_UP, _IFF_LOOPBACK, _IFF_MULTICAST = 0x1, 0x8, 0x1000


def ipv4_interfaces() -> List[Interface]:
    """
    This machine's network interfaces with an IPv4 address (the primary
    one of each), read with the standard ioctls: no extra dependency.
    """
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("16sH14s", name.encode()[:15], socket.AF_INET, b"\0" * 14)
            try:
                address = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)[20:24])
                flags = struct.unpack_from(
                    "H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request), 16)[0]
                netmask = socket.inet_ntoa(
                    fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK, request)[20:24])
            except OSError:
                continue  # no IPv4 address
            found.append(Interface(name, address, bool(flags & _IFF_UP),
                                   bool(flags & _IFF_LOOPBACK), bool(flags & _IFF_MULTICAST),
                                   netmask))
    return found


def announce_interfaces(listen_host: str, interfaces: List[Interface]) -> List[Interface]:
    """
    The interfaces to announce on, for a node listening on C{listen_host}:
    the one with that address if it is bound to one, else every interface
    that is up, not loopback, and can multicast.
    """
    if listen_host not in ("", "0.0.0.0", "::"):
        return [i for i in interfaces if i.address == listen_host and i.up]
    return [i for i in interfaces if i.up and not i.loopback and i.multicast]



class _Receiver(DatagramProtocol):
    noisy = False

    def __init__(self, discovery: "Discovery"):
        self.discovery = discovery

    def datagramReceived(self, data, address):
        self.discovery.datagram_received(data, address)


class Discovery(Service):
    """
    Announce this node on the LAN and tell the node about others heard.

    Never stops the node: if multicast cannot be used here, discovery is
    off, L{state} says why, and one line is logged.

    @ivar state: C{"on"}, or C{"off: <why>"}.
    """

    log = Logger()
    name = "discovery"  # type: ignore[assignment]  # (Service annotates it as None)

    def __init__(self, node, reactor, listen_host: str = "",
                 interfaces: Callable[[], List[Interface]] = ipv4_interfaces,
                 port: int = PORT, group: str = GROUP,
                 rng: Optional[random.Random] = None):
        self.node = node
        self.reactor = reactor
        self.listen_host = listen_host
        self._interfaces = interfaces
        self.udp_port = port
        self.group = group
        self.rng = rng or random.Random()
        self.instance = secrets.token_hex(8)
        self.state = "off: not started"
        self.addresses: List[str] = []
        #: The subnets of the interfaces we joined on: the only sources we
        #: react to, so a forged datagram cannot make us dial off the LAN.
        self.networks: List[ipaddress.IPv4Network] = []
        self.sent = 0
        self.last_sent: Optional[float] = None
        self.send_error: Optional[str] = None
        self.heard: Dict[str, dict] = {}
        self.heard_own = 0
        self.malformed = 0
        self._reactions: Dict[str, float] = {}
        self._source_ids: Dict[str, Dict[str, float]] = {}
        self._listening: Any = None  # IListeningPort once on
        self._timer = None

    # -- life cycle ---------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        try:
            chosen = announce_interfaces(self.listen_host, self._interfaces())
        except OSError as e:
            return self._off(f"cannot list network interfaces: {e}")
        self.addresses = [i.address for i in chosen]
        if not self.addresses:
            where = self.listen_host or "all interfaces"
            return self._off(f"no IPv4 interface that can multicast to announce on ({where})")
        if not hasattr(self.reactor, "listenMulticast"):
            return self._off("this reactor has no UDP multicast")
        try:
            # Bound to the group address, so the kernel hands us only
            # datagrams sent to the group: no unicast from off the link.
            self._listening = self.reactor.listenMulticast(
                self.udp_port, _Receiver(self), interface=self.group, listenMultiple=True)
        except Exception as e:
            return self._off(f"cannot listen on UDP port {self.udp_port}: {e}")
        sock = self._listening.socket
        joined = []
        for address in self.addresses:
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(self.group) + socket.inet_aton(address))
                joined.append(address)
            except OSError as e:
                self.log.info("cannot join {group} on {address}: {error}",
                              group=self.group, address=address, error=e.strerror)
        if not joined:
            self._listening.stopListening()
            self._listening = None
            return self._off(f"cannot join multicast group {self.group} on any interface")
        self.addresses = joined
        self.networks = [i.network for i in chosen if i.address in joined]
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        # Only the groups this socket joined (Linux otherwise delivers any
        # group joined by anyone on the machine).
        try:
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MULTICAST_ALL", 49), 0)
        except OSError:
            pass
        self.state = "on"
        self.log.info(
            "LAN discovery on: announcing on {addresses} to {group} UDP port {port}",
            addresses=", ".join(self.addresses), group=self.group, port=self.udp_port,
        )
        self.announce()

    def _off(self, why: str) -> None:
        self.state = f"off: {why}"
        self.log.warn("LAN discovery off: {why}; give peers with --peer HOST:PORT", why=why)

    def stopService(self):
        Service.stopService(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._listening is not None:
            listening, self._listening = self._listening, None
            return listening.stopListening()

    # -- sending --------------------------------------------------------------

    def changed(self) -> None:
        """
        Something we announce changed (a listen port): announce now.
        """
        if self.running and self.state == "on":
            self.announce()

    def announce(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(
            self.rng.uniform(ANNOUNCE_MIN, ANNOUNCE_MAX), self.announce)
        ports = self.node.listen_ports
        if not ports or self._listening is None:
            return
        data = encode(Announcement(node_id=self.node.node_id, port=ports[0],
                                   instance=self.instance, tls=self.node.tls))
        sock = self._listening.socket
        errors = []
        for address in self.addresses:
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(address))
                sock.sendto(data, (self.group, self.udp_port))
            except OSError as e:
                errors.append(f"from {address}: {e.strerror}")
        if len(errors) < len(self.addresses):
            self.sent += 1
            self.last_sent = self.reactor.seconds()
        if errors:
            if self.send_error is None:
                self.log.warn("cannot send LAN announcements {errors}", errors="; ".join(errors))
            self.send_error = "; ".join(errors)
        else:
            self.send_error = None

    # -- receiving ------------------------------------------------------------

    @staticmethod
    def _heard_entry(host: str, announcement: Announcement, now: float) -> dict:
        return {"host": host, "port": announcement.port, "at": now,
                "instance": announcement.instance, "tls": announcement.tls}

    def _on_link(self, host: str) -> bool:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def datagram_received(self, data: bytes, address) -> None:
        host, _ = address
        if self.networks and not self._on_link(host):
            return  # not from a neighbour: never dial off the LAN for a datagram
        try:
            announcement = decode(data)
        except MalformedAnnouncement as e:
            self.malformed += 1
            # The node's per-host budget: one host gets one allowance,
            # whether it misbehaves by TCP or by datagram.
            suppressed = self.node.log_budget.spend(host)
            if suppressed is not None:
                self.log.info(
                    "ignoring a malformed LAN announcement from {host}: {why}{more}",
                    host=host, why=e,
                    more=f" ({suppressed} similar lines suppressed)" if suppressed else "",
                )
            return
        if announcement.node_id == self.node.node_id:
            if announcement.instance == self.instance:
                self.heard_own += 1  # our own, looped back: they do go out
            return
        now = self.reactor.seconds()
        if announcement.node_id in self.node.connections:
            # A node we are connected to (its id is proven): note that it
            # was heard, and spend none of the limits below on it.
            self.heard[announcement.node_id] = self._heard_entry(host, announcement, now)
            return
        # At most REACT_PER_SOURCE different ids from one source per
        # interval, counted before anything is remembered: forged ids must
        # not turn us into a port scanner, nor push real nodes out of heard.
        ids = {i: t for i, t in self._source_ids.get(host, {}).items()
               if now - t < REACT_INTERVAL}
        if announcement.node_id not in ids and len(ids) >= REACT_PER_SOURCE:
            self._source_ids[host] = ids
            return
        ids[announcement.node_id] = now
        self._source_ids[host] = ids
        if len(self._source_ids) > 4096:
            self._source_ids = {h: i for h, i in self._source_ids.items()
                                if any(now - t < REACT_INTERVAL for t in i.values())}
        previous = self.heard.pop(announcement.node_id, None)
        self.heard[announcement.node_id] = self._heard_entry(host, announcement, now)
        while len(self.heard) > MAX_HEARD:
            del self.heard[next(iter(self.heard))]  # the longest unheard
        restarted = previous is not None and previous["instance"] != announcement.instance
        last = self._reactions.get(announcement.node_id)
        if last is not None and now - last < REACT_INTERVAL and not restarted:
            return
        self._reactions[announcement.node_id] = now
        if len(self._reactions) > 4096:
            self._reactions = {k: t for k, t in self._reactions.items()
                               if now - t < REACT_INTERVAL}
        if announcement.tls != self.node.tls:
            if previous is None or restarted:
                self.log.warn(
                    "heard node {id} at {host}:{port} but it runs {theirs} and we run"
                    " {ours}: not dialling it",
                    id=announcement.node_id[:12], host=host, port=announcement.port,
                    theirs="TLS" if announcement.tls else "--no-tls",
                    ours="TLS" if self.node.tls else "--no-tls",
                )
            return
        self.node.discovered(host, announcement.port, announcement.node_id, restarted)
