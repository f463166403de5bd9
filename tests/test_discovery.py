"""
Tests for L{p2ptwisted.discovery}: the announcement datagram, the choice of
interfaces, how a node reacts to what it hears (on a fake clock), and nodes
on one machine finding each other for real over loopback multicast.

Nothing here sends a packet outside loopback: every real socket is bound to
127.0.0.1, joins a test-private group on 127.0.0.1 and sends with
C{IP_MULTICAST_IF} 127.0.0.1 (and TTL 1).
"""

import os
import random
import socket

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import peers as peers_module
from p2ptwisted import wire
from p2ptwisted.discovery import (
    ANNOUNCE_MAX,
    ANNOUNCE_MIN,
    FLAG_TLS,
    MAGIC,
    MAX_HEARD,
    REACT_INTERVAL,
    REACT_PER_SOURCE,
    SIZE,
    Announcement,
    Discovery,
    Interface,
    MalformedAnnouncement,
    announce_interfaces,
    decode,
    encode,
)
from p2ptwisted.logbudget import BURST

from .helpers import capture_logs, flush, link, make_node

#: The only interface any test here announces on.
LOOPBACK = Interface("lo", "127.0.0.1", True, True, False)


def loopback_only():
    return [LOOPBACK]


def private_group():
    """
    A multicast group no real node (and no other test run, most likely)
    uses.
    """
    return f"239.255.43.{random.randint(100, 250)}"


def free_udp_port():
    """
    A UDP port free on 127.0.0.1 right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_id(n):
    """
    A made-up node id (64 hex digits), distinct for each C{n}.
    """
    return f"{n:064x}"


def instance(n):
    return f"{n:016x}"


def datagram(node, n=1, port=4000, inst=1, tls=None):
    """
    The announcement of made-up node C{n}, with the TLS flag of C{node}
    unless told otherwise.
    """
    return encode(Announcement(node_id=node_id(n), port=port, instance=instance(inst),
                               tls=node.tls if tls is None else tls))


class FakeSocket:
    """
    Just enough of a UDP socket for L{Discovery} to configure and send on.
    """

    def __init__(self):
        self.options = []
        self.sent = []

    def setsockopt(self, *args):
        self.options.append(args)

    def sendto(self, data, address):
        self.sent.append((data, address))


class FakeMulticastPort:
    def __init__(self):
        self.socket = FakeSocket()
        self.stopped = False

    def stopListening(self):
        self.stopped = True


class MulticastClock(MemoryReactorClock):
    """
    A memory reactor that can "listen" for multicast: the socket is fake,
    the clock is fake, so the sending schedule can be checked in memory.
    """

    def __init__(self):
        super().__init__()
        self.multicast = []

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        listening = FakeMulticastPort()
        self.multicast.append((port, protocol, listenMultiple, listening))
        return listening


class RealSocketsFakeClock:
    """
    The real reactor's multicast sockets with a fake clock: real datagrams
    over loopback, but the 30-60 s announcement timer is under test control.
    """

    def __init__(self, clock):
        from twisted.internet import reactor

        self._reactor = reactor
        self.clock = clock
        self.callLater = clock.callLater
        self.seconds = clock.seconds

    def listenMulticast(self, *args, **kwargs):
        return self._reactor.listenMulticast(*args, **kwargs)


class Listener(DatagramProtocol):
    """
    A test socket joined to the group on 127.0.0.1: collects the
    announcements that really went out, and fires Deferreds as they come.
    """

    def __init__(self):
        self.received = []
        self._waiting = []

    def datagramReceived(self, data, address):
        self.received.append((decode(data), address))
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            if len(self.received) >= count:
                d.callback(self.received)
            else:
                self._waiting.append((count, d))

    def wait_for(self, count):
        """
        Fires once C{count} announcements in all have arrived.
        """
        d = defer.Deferred()
        if len(self.received) >= count:
            d.callback(self.received)
        else:
            self._waiting.append((count, d))
        return d


def announce_timer(clock, discovery):
    """
    The pending call that sends C{discovery}'s next announcement.
    """
    [call] = [c for c in clock.getDelayedCalls() if c.func == discovery.announce]
    return call


def listen_to_group(testcase, port, group):
    from twisted.internet import reactor

    listener = Listener()
    listening = reactor.listenMulticast(port, listener, listenMultiple=True)
    testcase.addCleanup(listening.stopListening)
    listening.joinGroup(group, "127.0.0.1")
    try:
        listening.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MULTICAST_ALL", 49), 0)
    except OSError:
        pass
    return listener


# ---------------------------------------------------------------------------
# The datagram


class DatagramTests(SynchronousTestCase):
    def test_round_trip(self):
        """
        What L{encode} writes, L{decode} reads back unchanged, TLS flag
        either way, in exactly L{SIZE} bytes.
        """
        for tls in (True, False):
            a = Announcement(node_id=node_id(0xABCDEF), port=54321,
                             instance="0123456789abcdef", tls=tls)
            data = encode(a)
            self.assertEqual(len(data), SIZE)
            self.assertEqual(data[:4], MAGIC)
            self.assertEqual(data[5], FLAG_TLS if tls else 0)
            self.assertEqual(decode(data), a)

    def test_short_datagram(self):
        """
        Anything shorter than the fixed format is refused, including the
        empty datagram, saying how long it was.
        """
        data = encode(Announcement(node_id(1), 4000, instance(1), True))
        for n in (0, 1, 4, SIZE - 1):
            e = self.assertRaises(MalformedAnnouncement, decode, data[:n])
            self.assertIn(f"{n} bytes", str(e))

    def test_wrong_magic(self):
        """
        A datagram of the right length but another magic is not ours.
        """
        data = encode(Announcement(node_id(1), 4000, instance(1), True))
        e = self.assertRaises(MalformedAnnouncement, decode, b"XXXX" + data[4:])
        self.assertIn("magic", str(e))

    def test_version_zero(self):
        """
        Version 0 is refused; any later version is accepted and reported.
        """
        data = bytearray(encode(Announcement(node_id(1), 4000, instance(1), True)))
        data[4] = 0
        e = self.assertRaises(MalformedAnnouncement, decode, bytes(data))
        self.assertIn("version 0", str(e))
        data[4] = 7
        self.assertEqual(decode(bytes(data)).version, 7)

    def test_port_zero(self):
        """
        Port 0 cannot be dialled: refused.
        """
        data = encode(Announcement(node_id(1), 0, instance(1), True))
        e = self.assertRaises(MalformedAnnouncement, decode, data)
        self.assertIn("port 0", str(e))

    def test_trailing_bytes_accepted(self):
        """
        A longer datagram (a later version's extra fields) still decodes
        to the fields this version knows.
        """
        a = Announcement(node_id(2), 12345, instance(9), False)
        self.assertEqual(decode(encode(a) + b"\x00future fields" * 10), a)


def announce_addresses_of(listen_host, interfaces):
    return [i.address for i in announce_interfaces(listen_host, interfaces)]


class AnnounceAddressesTests(SynchronousTestCase):
    interfaces = [
        Interface("lo", "127.0.0.1", True, True, False),
        Interface("eth0", "192.0.2.2", True, False, True),
        Interface("eth1", "198.51.100.7", False, False, True),  # down
        Interface("tun0", "10.8.0.1", True, False, False),  # no multicast
        Interface("wlan0", "203.0.113.9", True, False, True),
    ]

    def test_bound_to_one_address(self):
        """
        A node bound to one address announces on that interface alone
        (whatever its multicast flag), if it is up.
        """
        self.assertEqual(announce_addresses_of("192.0.2.2", self.interfaces), ["192.0.2.2"])
        self.assertEqual(announce_addresses_of("127.0.0.1", self.interfaces), ["127.0.0.1"])
        self.assertEqual(announce_addresses_of("10.8.0.1", self.interfaces), ["10.8.0.1"])

    def test_bound_address_down_or_unknown(self):
        """
        Bound to an interface that is down, or to an address no interface
        has: nothing to announce on.
        """
        self.assertEqual(announce_addresses_of("198.51.100.7", self.interfaces), [])
        self.assertEqual(announce_addresses_of("192.0.2.99", self.interfaces), [])

    def test_all_interfaces(self):
        """
        Listening on all interfaces: every interface that is up, not
        loopback and can multicast.
        """
        for host in ("", "0.0.0.0", "::"):
            self.assertEqual(announce_addresses_of(host, self.interfaces),
                             ["192.0.2.2", "203.0.113.9"])


# ---------------------------------------------------------------------------
# Receiving, on a fake clock


class ReceiveTests(SynchronousTestCase):
    """
    What L{Discovery.datagram_received} does with what it hears; the
    node's reaction is recorded instead of dialling.
    """

    source = ("10.0.0.9", 12345)

    def setUp(self):
        self.logs = capture_logs(self)
        self.reactor = MemoryReactorClock()
        self.node = make_node(self, "a", reactor=self.reactor)
        self.discovery = Discovery(self.node, self.reactor, interfaces=loopback_only,
                                   listen_host="127.0.0.1")
        self.node.discovery = self.discovery
        self.calls = []
        self.node.discovered = lambda *args: self.calls.append(args)

    def hear(self, data, source=None):
        self.discovery.datagram_received(data, source or self.source)

    def test_heard_is_bounded(self):
        """
        Forged announcements with ever-new ids cannot grow the record of
        nodes heard (which the doctor reports) without bound: the longest
        unheard are forgotten first.
        """
        for n in range(MAX_HEARD + 50):
            self.hear(datagram(self.node, 1000 + n), (f"10.0.{n // 200}.{n % 200 + 1}", 12345))
        self.assertEqual(len(self.discovery.heard), MAX_HEARD)
        self.assertNotIn(node_id(1000), self.discovery.heard)
        self.assertIn(node_id(1000 + MAX_HEARD + 49), self.discovery.heard)

    def test_reaction(self):
        """
        A node heard is passed on to the node with the datagram's source
        host, the announced port and node id, and remembered in C{heard}.
        """
        self.reactor.advance(100)
        self.hear(datagram(self.node, 5, port=4321, inst=3))
        self.assertEqual(self.calls, [("10.0.0.9", 4321, node_id(5), False)])
        heard = self.discovery.heard[node_id(5)]
        self.assertEqual((heard["host"], heard["port"], heard["at"], heard["instance"]),
                         ("10.0.0.9", 4321, 100, instance(3)))

    def test_own_announcements_ignored(self):
        """
        Our own announcement, looped back, counts in C{heard_own} and
        nothing else: no reaction, no dial, nothing heard.  The same id
        from another instance (a previous run of ours) is ignored too.
        """
        own = encode(Announcement(self.node.node_id, self.node.listen_ports[0],
                                  self.discovery.instance, self.node.tls))
        for _ in range(3):
            self.hear(own, ("127.0.0.1", 12345))
        self.assertEqual(self.discovery.heard_own, 3)
        stale = encode(Announcement(self.node.node_id, 4000, instance(77), self.node.tls))
        self.hear(stale)
        self.assertEqual(self.discovery.heard_own, 3)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.discovery.heard, {})
        self.reactor.advance(5)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_own_announcements_do_not_dial(self):
        """
        With the node's real reaction in place, our own announcement still
        dials nothing and adds nothing to the book.
        """
        del self.node.discovered  # the class's method again
        own = encode(Announcement(self.node.node_id, self.node.listen_ports[0],
                                  self.discovery.instance, self.node.tls))
        self.hear(own, ("127.0.0.1", 12345))
        self.reactor.advance(5)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(len(self.node.book), 0)
        self.assertEqual(self.discovery.heard_own, 1)

    def test_same_node_once_per_interval(self):
        """
        Ten announcements of one node within REACT_INTERVAL give one
        reaction; once the interval has passed, the next gives another.
        """
        for _ in range(10):
            self.hear(datagram(self.node, 5))
            self.reactor.advance((REACT_INTERVAL - 1) / 10)
        self.assertEqual(len(self.calls), 1)
        self.assertLess(self.reactor.seconds(), REACT_INTERVAL)
        self.reactor.advance(REACT_INTERVAL - self.reactor.seconds())
        self.hear(datagram(self.node, 5))
        self.assertEqual(len(self.calls), 2)
        self.assertEqual(self.calls[-1], ("10.0.0.9", 4000, node_id(5), False))
        self.hear(datagram(self.node, 5))
        self.assertEqual(len(self.calls), 2)
        # Still remembered as heard, with the latest time.
        self.assertEqual(self.discovery.heard[node_id(5)]["at"], REACT_INTERVAL)

    def test_restart_reacts_at_once(self):
        """
        A new instance id (the node restarted) is reacted to at once, even
        within REACT_INTERVAL, and flagged as a restart.
        """
        self.hear(datagram(self.node, 5, inst=1))
        self.reactor.advance(1)
        self.hear(datagram(self.node, 5, inst=1))
        self.hear(datagram(self.node, 5, inst=2))
        self.assertEqual(self.calls, [("10.0.0.9", 4000, node_id(5), False),
                                      ("10.0.0.9", 4000, node_id(5), True)])
        # The restarted instance is now the one remembered: repeats wait.
        self.hear(datagram(self.node, 5, inst=2))
        self.assertEqual(len(self.calls), 2)

    def test_per_source_limit(self):
        """
        More than REACT_PER_SOURCE distinct node ids from one source address
        within the interval: only REACT_PER_SOURCE reactions.  Another
        source is not affected, and the source gets its allowance back
        after the interval.
        """
        for n in range(1, 3 * REACT_PER_SOURCE + 1):
            self.hear(datagram(self.node, n, port=4000 + n))
        self.assertEqual(len(self.calls), REACT_PER_SOURCE)
        self.assertEqual({c[0] for c in self.calls}, {"10.0.0.9"})
        self.hear(datagram(self.node, 999), ("10.0.0.10", 1))
        self.assertEqual(len(self.calls), REACT_PER_SOURCE + 1)
        self.reactor.advance(REACT_INTERVAL)
        self.hear(datagram(self.node, 100))
        self.assertEqual(len(self.calls), REACT_PER_SOURCE + 2)

    def test_tls_mismatch(self):
        """
        A node running the other TLS setting is not dialled, and one
        warning says why, however often it announces.
        """
        self.hear(datagram(self.node, 5, port=4444, tls=not self.node.tls))
        self.reactor.advance(REACT_INTERVAL + 1)
        self.hear(datagram(self.node, 5, port=4444, tls=not self.node.tls))
        self.assertEqual(self.calls, [])
        warnings = [l for l in self.logs() if "not dialling it" in l]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"heard node {node_id(5)[:12]} at 10.0.0.9:4444", warnings[0])
        self.assertIn("runs TLS and we run --no-tls", warnings[0])

    def test_malformed_datagrams_budgeted(self):
        """
        Fifty garbage datagrams from one host: at most the log budget's
        burst of lines, and a later line reports how many were suppressed.
        The node keeps working: a good announcement is still acted on.
        """
        for i in range(50):
            self.hear(b"garbage %d" % i)
        self.assertEqual(self.discovery.malformed, 50)
        lines = [l for l in self.logs() if "malformed LAN announcement" in l]
        self.assertEqual(len(lines), BURST)
        self.assertTrue(all("from 10.0.0.9" in l for l in lines))
        self.assertFalse(any("suppressed" in l for l in lines))
        # Once the budget refills a little, the next line counts the rest.
        self.reactor.advance(10)
        self.hear(b"more garbage")
        lines = [l for l in self.logs() if "malformed LAN announcement" in l]
        self.assertEqual(len(lines), BURST + 1)
        self.assertIn(f"({50 - BURST} similar lines suppressed)", lines[-1])
        # Another host has its own budget.
        self.hear(b"x", ("10.0.0.77", 1))
        self.assertIn("from 10.0.0.77", [l for l in self.logs()
                                         if "malformed LAN announcement" in l][-1])
        self.hear(datagram(self.node, 5))
        self.assertEqual(len(self.calls), 1)
        self.assertTrue(self.node.running)


class OnLinkTests(SynchronousTestCase):
    """
    Only neighbours count: a datagram whose source is outside the subnets
    of the interfaces we joined on (a forged source, say) is ignored, so a
    datagram can never make us dial off the LAN.
    """

    def test_off_link_source_ignored(self):
        reactor = MulticastClock()
        node = make_node(self, "a", reactor=reactor)
        lan = Interface("eth0", "10.0.0.2", True, False, True, "255.255.255.0")
        discovery = Discovery(node, reactor, listen_host="10.0.0.2", interfaces=lambda: [lan])
        node.discovery = discovery
        calls = []
        node.discovered = lambda *args: calls.append(args)
        discovery.startService()
        self.addCleanup(discovery.stopService)
        self.assertEqual([str(n) for n in discovery.networks], ["10.0.0.0/24"])
        discovery.datagram_received(datagram(node, 5, port=4000), ("192.0.2.50", 12345))
        discovery.datagram_received(datagram(node, 6, port=4000), ("10.0.1.9", 12345))
        self.assertEqual(calls, [])
        self.assertEqual(discovery.heard, {})
        discovery.datagram_received(datagram(node, 7, port=4000), ("10.0.0.9", 12345))
        self.assertEqual(calls, [("10.0.0.9", 4000, node_id(7), False)])


class DiscoveredTests(SynchronousTestCase):
    """
    L{Node.discovered}: what hearing a node makes the node dial, through
    the peer book.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.reactor = MemoryReactorClock()
        self.node = make_node(self, "a", reactor=self.reactor)
        self.discovery = Discovery(self.node, self.reactor, interfaces=loopback_only,
                                   listen_host="127.0.0.1")
        self.node.discovery = self.discovery
        self.failed = 0
        self.dial_times = []

    def fail_new_dials(self):
        """
        Refuse every dial made since the last call, recording when each
        was made.
        """
        while self.failed < len(self.reactor.tcpClients):
            host, port, factory, timeout, bind = self.reactor.tcpClients[self.failed]
            self.assertEqual((host, port), ("10.0.0.7", 5000))
            self.dial_times.append(self.reactor.seconds())
            connector = self.reactor.connectors[self.failed]
            self.failed += 1
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def test_heard_address_dialled_once(self):
        """
        A node heard is dialled at the datagram's source address and the
        announced port, at once, and its book entry is marked discovered.
        """
        self.discovery.datagram_received(datagram(self.node, 5, port=5000), ("10.0.0.7", 999))
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("10.0.0.7", 5000)])
        entry = self.node.book.get("10.0.0.7:5000")
        self.assertTrue(entry.discovered)
        self.assertFalse(entry.bootstrap)
        self.assertTrue(entry.dialing)
        # A datagram proves nothing: no id is expected at that address.
        self.assertIsNone(entry.expected_id)
        self.assertIsNone(entry.node_id)
        self.assertTrue(any(f"heard node {node_id(5)[:12]} on the LAN at 10.0.0.7:5000" in l
                            for l in self.logs()))

    def test_failing_address_follows_backoff(self):
        """
        Announcements every 5 s for ten simulated minutes from a node whose
        port refuses: the dials follow the book's backoff (1, 2, 4 ... up to
        MAX_DELAY seconds apart), far fewer than the reactions.
        """
        reactions = []
        original = self.node.discovered

        def discovered(*args):
            reactions.append(args)
            original(*args)

        self.node.discovered = discovered
        for second in range(600):
            if second % 5 == 0:
                self.discovery.datagram_received(datagram(self.node, 5, port=5000),
                                                 ("10.0.0.7", 999))
            self.fail_new_dials()
            self.reactor.advance(1)
            self.fail_new_dials()
        gaps = [b - a for a, b in zip(self.dial_times, self.dial_times[1:])]
        self.assertGreater(len(gaps), 8)
        for i, gap in enumerate(gaps):
            expected = min(peers_module.MAX_DELAY,
                           peers_module.INITIAL_DELAY * peers_module.FACTOR ** i)
            self.assertGreaterEqual(gap, expected, (i, gaps))
            self.assertLessEqual(gap, expected + 1, (i, gaps))
        # Ten minutes: 1+2+4+8+16+32 s, then one a minute.
        self.assertLessEqual(len(self.dial_times), 16)
        self.assertEqual(len(reactions), 600 // REACT_INTERVAL)
        entry = self.node.book.get("10.0.0.7:5000")
        self.assertEqual(entry.failures, len(self.dial_times))
        self.assertTrue(entry.discovered)

    def test_restart_makes_due_at_once(self):
        """
        Deep in its backoff, an address where that node answered before is
        dialled at once when the node announces a new instance id (it
        restarted).  (A datagram alone never cuts the backoff of an address
        that never answered: see test_restart_of_unknown_address.)
        """
        self.node.book.learn(wire.PeerAddress("10.0.0.7", 5000), 0.0, node_id=node_id(5))
        for second in range(200):
            if second % 5 == 0:
                self.discovery.datagram_received(datagram(self.node, 5, port=5000),
                                                 ("10.0.0.7", 999))
            self.fail_new_dials()
            self.reactor.advance(1)
        self.fail_new_dials()
        entry = self.node.book.get("10.0.0.7:5000")
        self.assertGreater(entry.next_attempt, self.reactor.seconds() + 10)
        before = len(self.reactor.tcpClients)
        # The same instance again, past REACT_INTERVAL: still backing off.
        self.reactor.advance(REACT_INTERVAL - 25)
        self.discovery.datagram_received(datagram(self.node, 5, port=5000), ("10.0.0.7", 999))
        self.assertEqual(len(self.reactor.tcpClients), before)
        self.discovery.datagram_received(datagram(self.node, 5, port=5000, inst=2),
                                         ("10.0.0.7", 999))
        self.assertEqual(len(self.reactor.tcpClients), before + 1)
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("10.0.0.7", 5000))

    def test_restart_of_unknown_address(self):
        """
        A "restart" (new instance id) announced for an address that never
        answered with that id leaves its backoff alone: forged datagrams
        cannot make us hammer an address.
        """
        for second in range(200):
            if second % 5 == 0:
                self.discovery.datagram_received(datagram(self.node, 5, port=5000),
                                                 ("10.0.0.7", 999))
            self.fail_new_dials()
            self.reactor.advance(1)
        self.fail_new_dials()
        before = len(self.reactor.tcpClients)
        for inst in range(2, 12):
            self.discovery.datagram_received(datagram(self.node, 5, port=5000, inst=inst),
                                             ("10.0.0.7", 999))
        self.assertEqual(len(self.reactor.tcpClients), before)

    def test_connected_node_not_dialled(self):
        """
        A node we are already connected to is not dialled when heard.
        """
        b = make_node(self, "b", reactor=self.reactor)
        client, server, pump = link(self.node, b)
        flush(pump)
        before = len(self.reactor.tcpClients)
        announcement = encode(Announcement(b.node_id, b.listen_ports[0], instance(1), b.tls))
        self.discovery.datagram_received(announcement, ("10.0.0.8", 999))
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.tcpClients), before)

    def test_connected_nodes_do_not_use_up_source_allowance(self):
        """
        Announcements of nodes we are already connected to are ignored
        before the per-source limit is counted (protocol.md section 21,
        receiving rules 2 then 3): with REACT_PER_SOURCE connected nodes
        announcing from one host, a new node announcing from that host is
        still dialled at once.
        """
        others = [make_node(self, f"n{i}", reactor=self.reactor)
                  for i in range(REACT_PER_SOURCE)]
        for other in others:
            client, server, pump = link(self.node, other)
            flush(pump)
            self.assertIn(other.node_id, self.node.connections)
        before = len(self.reactor.tcpClients)
        for other in others:
            self.discovery.datagram_received(
                encode(Announcement(other.node_id, other.listen_ports[0], instance(1),
                                    other.tls)), ("10.0.0.7", 999))
        self.assertEqual(len(self.reactor.tcpClients), before)
        self.discovery.datagram_received(datagram(self.node, 5, port=5000), ("10.0.0.7", 999))
        self.assertEqual([c[:2] for c in self.reactor.tcpClients[before:]],
                         [("10.0.0.7", 5000)])


# ---------------------------------------------------------------------------
# Starting, stopping, sending


class OffTests(SynchronousTestCase):
    """
    Discovery that cannot work here is off, says why once, and never
    stops the node.
    """

    def setUp(self):
        self.logs = capture_logs(self)

    def start(self, reactor, **kwargs):
        node = make_node(self, "a", reactor=reactor)
        discovery = Discovery(node, reactor, **kwargs)
        node.discovery = discovery
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return node, discovery

    def assertOff(self, node, discovery, why):
        self.assertTrue(discovery.state.startswith("off: "), discovery.state)
        self.assertIn(why, discovery.state)
        lines = [l for l in self.logs() if l.startswith("LAN discovery off: ")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(why, lines[0])
        self.assertIn("--peer HOST:PORT", lines[0])
        self.assertFalse([l for l in self.logs() if l.startswith("LAN discovery on")])
        self.assertTrue(node.running)
        self.assertEqual(discovery.sent, 0)
        # The node still works: it connects to a peer given by hand.
        b = make_node(self, "b", reactor=node.reactor)
        client, server, pump = link(node, b)
        flush(pump)
        self.assertIn(b.node_id, node.connections)
        # A port change announces nothing.
        node.listening_on(node.listen_ports[0] + 1)
        self.assertEqual(discovery.sent, 0)

    def test_no_interfaces(self):
        """
        No interface at all: off, one line.
        """
        node, discovery = self.start(MulticastClock(), interfaces=lambda: [])
        self.assertOff(node, discovery, "no IPv4 interface that can multicast"
                                        " to announce on (all interfaces)")

    def test_only_down_interface(self):
        """
        Bound to an address whose interface is down: off, naming it.
        """
        down = Interface("eth0", "192.0.2.2", False, False, True)
        reactor = MulticastClock()
        node, discovery = self.start(reactor, interfaces=lambda: [down],
                                     listen_host="192.0.2.2")
        self.assertOff(node, discovery, "(192.0.2.2)")
        self.assertEqual(reactor.multicast, [])

    def test_interfaces_unreadable(self):
        """
        Listing the interfaces fails: off, with the error.
        """
        def broken():
            raise OSError("no ioctl for you")

        node, discovery = self.start(MulticastClock(), interfaces=broken)
        self.assertOff(node, discovery, "cannot list network interfaces: no ioctl for you")

    def test_reactor_without_multicast(self):
        """
        A reactor without C{listenMulticast} (here a memory reactor): off,
        saying so.
        """
        node, discovery = self.start(MemoryReactorClock(), interfaces=loopback_only,
                                     listen_host="127.0.0.1")
        self.assertOff(node, discovery, "no UDP multicast")

    def test_not_started(self):
        """
        Before it starts, the state says so.
        """
        node = make_node(self, "a")
        self.assertEqual(Discovery(node, node.reactor).state, "off: not started")


class ScheduleTests(SynchronousTestCase):
    """
    When announcements are sent, in memory (fake socket, fake clock).
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.reactor = MulticastClock()
        self.node = make_node(self, "a", reactor=self.reactor, port=4567)
        self.discovery = Discovery(self.node, self.reactor, interfaces=loopback_only,
                                   listen_host="127.0.0.1", port=7777, group="239.255.43.200",
                                   rng=random.Random(4))
        self.node.discovery = self.discovery
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.socket = self.reactor.multicast[0][3].socket

    def test_on(self):
        """
        It listens on the UDP port (shared), joins the group on the
        interface, and says it is on.
        """
        self.assertEqual(self.discovery.state, "on")
        port, protocol, shared, listening = self.reactor.multicast[0]
        self.assertEqual((port, shared), (7777, True))
        self.assertIn((socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                       socket.inet_aton("239.255.43.200") + socket.inet_aton("127.0.0.1")),
                      self.socket.options)
        self.assertIn((socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1), self.socket.options)
        self.assertTrue(any(l.startswith("LAN discovery on: announcing on 127.0.0.1 to"
                                         " 239.255.43.200 UDP port 7777") for l in self.logs()))

    def test_sent_at_start(self):
        """
        One announcement goes out at start: our id, our listen port, our
        instance, to the group and port.
        """
        self.assertEqual(self.discovery.sent, 1)
        self.assertEqual(self.discovery.last_sent, 0)
        [(data, address)] = self.socket.sent
        self.assertEqual(address, ("239.255.43.200", 7777))
        self.assertEqual(decode(data), Announcement(self.node.node_id, 4567,
                                                    self.discovery.instance, self.node.tls))

    def test_sent_when_port_changes(self):
        """
        A new listen port announces at once; a port already known does not.
        """
        self.node.listening_on(4568)
        self.assertEqual(self.discovery.sent, 2)
        self.node.listening_on(4568)
        self.node.listening_on(4567)
        self.assertEqual(self.discovery.sent, 2)

    def test_periodic(self):
        """
        Then every ANNOUNCE_MIN to ANNOUNCE_MAX seconds (random within that):
        nothing sooner, one send when the time comes.
        """
        gaps = []
        for i in range(20):
            last = self.discovery.last_sent
            delay = announce_timer(self.reactor, self.discovery).getTime() - last
            self.assertTrue(ANNOUNCE_MIN <= delay <= ANNOUNCE_MAX, delay)
            self.reactor.advance(delay - 0.01)
            self.assertEqual(self.discovery.sent, i + 1)
            self.reactor.advance(0.01)
            self.assertEqual(self.discovery.sent, i + 2)
            self.assertEqual(len(self.socket.sent), i + 2)
            gaps.append(self.discovery.last_sent - last)
        self.assertTrue(all(ANNOUNCE_MIN <= g <= ANNOUNCE_MAX for g in gaps), gaps)
        self.assertGreater(len(set(round(g, 3) for g in gaps)), 10)  # not in step

    def test_port_change_restarts_period(self):
        """
        An announcement for a port change also restarts the period: one
        timer, counted from that send.
        """
        self.reactor.advance(10)
        self.node.listening_on(4568)
        timers = [c for c in self.reactor.getDelayedCalls()
                  if c.func == self.discovery.announce]
        self.assertEqual(len(timers), 1)
        self.assertGreaterEqual(timers[0].getTime(), 10 + ANNOUNCE_MIN)

    def test_stop_stops_sending(self):
        """
        After stopService nothing more is sent, and the socket is closed.
        """
        self.discovery.stopService()
        self.reactor.advance(10 * ANNOUNCE_MAX)
        self.assertEqual(self.discovery.sent, 1)
        self.assertTrue(self.reactor.multicast[0][3].stopped)


# ---------------------------------------------------------------------------
# For real, over loopback


class RealLoopbackTests(TestCase):
    """
    Real multicast datagrams over loopback, to a test-private group and
    port.
    """

    timeout = 20

    def setUp(self):
        self.group = private_group()
        self.udp_port = free_udp_port()
        self.base = self.mktemp()

    def start_node(self, name):
        """
        A node built the way twistd builds it, without its own discovery,
        listening on 127.0.0.1; returns the node and a Discovery for it on
        loopback, not yet started.
        """
        from twisted.internet import reactor

        from p2ptwisted.tap import Options, makeService

        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--no-discover",
                              "--share", os.path.join(self.base, name), "--name", name])
        service = makeService(options, reactor=reactor, quiet=False)
        self.assertEqual(len(service.getServiceNamed("node").book), 0)  # no --peer
        service.startService()
        self.addCleanup(service.stopService)
        node = service.getServiceNamed("node")
        self.assertIsNone(node.discovery)
        discovery = Discovery(node, reactor, listen_host="127.0.0.1", interfaces=loopback_only,
                              port=self.udp_port, group=self.group)
        node.discovery = discovery
        self.addCleanup(discovery.stopService)
        return node, discovery

    @defer.inlineCallbacks
    def test_unicast_is_not_heard(self):
        """
        The socket is bound to the group: a datagram sent straight to the
        port (unicast, as anyone anywhere could) never reaches discovery,
        while the same bytes to the group do.
        """
        from twisted.internet import reactor

        node, discovery = self.start_node("a")
        discovery.startService()
        heard = defer.Deferred()
        original = discovery.datagram_received
        received_all = []

        def received(data, address):
            received_all.append(data)
            original(data, address)
            if not heard.called and "cd" * 32 in discovery.heard:
                heard.callback(data)

        discovery.datagram_received = received
        other = encode(Announcement("cd" * 32, 4000, "01" * 8, node.tls))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"unicast " + other, ("127.0.0.1", self.udp_port))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.sendto(other, (self.group, self.udp_port))
        data = yield heard.addTimeout(10, reactor)
        self.assertEqual(data, other)
        self.assertEqual(list(discovery.heard), ["cd" * 32])
        self.assertEqual([d for d in received_all if d.startswith(b"unicast")], [])
        self.assertEqual(discovery.malformed, 0)

    @defer.inlineCallbacks
    def test_three_nodes_find_each_other(self):
        """
        Three nodes on one machine, none given a --peer, all connect to
        each other through LAN discovery alone.
        """
        nodes = [self.start_node(name) for name in ("a", "b", "c")]
        for node, discovery in nodes:
            self.assertEqual(len(node.book), 0)
            discovery.startService()
            self.assertEqual(discovery.state, "on")
            self.assertEqual(discovery.addresses, ["127.0.0.1"])
        # The first two announced before the others had joined the group;
        # announce again so that every node hears every other one.
        for _, discovery in nodes[:2]:
            discovery.announce()
        ids = {node.node_id for node, _ in nodes}
        yield defer.gatherResults([
            node.wait_for(lambda n: set(n.connections) == ids - {n.node_id})
            for node, _ in nodes
        ])
        for node, discovery in nodes:
            self.assertGreaterEqual(discovery.heard_own, 1)
            self.assertEqual(set(discovery.heard), ids - {node.node_id})
            self.assertFalse([e for e in node.book if e.bootstrap])
            for other, _ in nodes:
                if other is node:
                    continue
                proto = node.connections[other.node_id]
                self.assertTrue(proto.tls)
                key = f"127.0.0.1:{other.listen_ports[0]}"
                entry = node.book.get(key)
                self.assertIsNotNone(entry, key)
                self.assertTrue(entry.discovered, key)
                self.assertEqual(entry.node_id, other.node_id)
                if proto.dialed is not None:
                    self.assertIs(proto.dialed, entry)
                    self.assertTrue(proto.dialed.discovered)

    @defer.inlineCallbacks
    def test_announcements_really_sent(self):
        """
        What goes out is seen by another socket in the group: one datagram
        at start, one when the listen port changes, then one per 30-60 s of
        (fake) time; each names the node, its first port and instance.
        """
        listener = listen_to_group(self, self.udp_port, self.group)
        clock = Clock()
        node = make_node(self, "a", port=4567)
        discovery = Discovery(node, RealSocketsFakeClock(clock), listen_host="127.0.0.1",
                              interfaces=loopback_only, port=self.udp_port, group=self.group)
        node.discovery = discovery
        discovery.startService()
        self.addCleanup(discovery.stopService)
        self.assertEqual(discovery.state, "on")
        yield listener.wait_for(1)
        node.listening_on(4568)
        yield listener.wait_for(2)
        for i in range(3):
            delay = announce_timer(clock, discovery).getTime() - clock.seconds()
            self.assertTrue(ANNOUNCE_MIN <= delay <= ANNOUNCE_MAX, delay)
            clock.advance(delay - 0.01)
            self.assertEqual(discovery.sent, 2 + i)
            clock.advance(0.01)
            self.assertEqual(discovery.sent, 3 + i)
            yield listener.wait_for(3 + i)
        self.assertEqual(len(listener.received), 5)
        expected = Announcement(node.node_id, 4567, discovery.instance, node.tls)
        for announcement, source in listener.received:
            self.assertEqual(announcement, expected)
            self.assertEqual(source[0], "127.0.0.1")
        self.assertIsNone(discovery.send_error)
