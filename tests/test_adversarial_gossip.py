"""
Adversarial suite, family "Gossip" (threats.md): huge and rapid peer lists,
invalid addresses, our own address, a third party's address (the node must
never become a tool to flood someone), and many fake peers from one network.

Cases that need the real stack (TLS, the harness's invariant check) run
against a L{tests.adversary.Target}; the ones about dialling policy over
minutes run in memory on a L{MemoryReactorClock}, where every dial the node
makes is visible in C{reactor.tcpClients} and fails when the case says so.
No case ever dials anything but loopback or a memory reactor.
"""

from __future__ import annotations

import json
import os
import secrets
import struct

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import limits, logbudget
from p2ptwisted import node as node_module
from p2ptwisted import peers as peers_module
from p2ptwisted import wire
from p2ptwisted.wire_index import decode_any_frame

from .adversary import FORBIDDEN, WAIT, Target, tree
from .helpers import make_node

# ---------------------------------------------------------------------------
# Small local helpers (in memory)


def framed(message_or_bytes) -> bytes:
    """
    A message (or a hand-made frame: type byte and body) with its length
    prefix.
    """
    frame = (message_or_bytes if isinstance(message_or_bytes, bytes)
             else wire.encode_frame(message_or_bytes))
    return struct.pack("!I", len(frame)) + frame


def peers_frame(entries) -> bytes:
    """
    A hand-crafted PEERS frame, length prefix included: C{entries} go into
    the JSON array as they are, whatever they are.
    """
    body = json.dumps({"peers": list(entries)}, separators=(",", ":")).encode()
    return framed(bytes([wire.PEERS]) + body)


def decode_stream(data: bytes):
    """
    The complete frames in C{data}, decoded.
    """
    out, pos = [], 0
    while len(data) - pos >= 4:
        (n,) = struct.unpack("!I", data[pos:pos + 4])
        if len(data) - pos - 4 < n:
            break
        out.append(decode_any_frame(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


class RecordingTransport(iosim.FakeTransport):
    """
    An iosim transport that remembers whether it was aborted (a drop) or
    closed gracefully.
    """

    aborted = False

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


class RawPeer(Protocol):
    """
    The far end of an in-memory connection: says exactly what the case
    tells it to, and records what the node sends.
    """

    def __init__(self):
        self.received = bytearray()
        self.lost = False

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def frames(self):
        return decode_stream(bytes(self.received))


_source_port = [50000]


def connect_raw(node, host="127.0.0.1", factory=None, clock=None, client=None):
    """
    Open an in-memory connection from C{host} to C{node}, as an inbound
    connection the node accepted.  Returns C{(server, client, pump)}: the
    node's protocol (the TLS wrapper if C{factory} is the node's TLS
    factory), the far end, and the pump.
    """
    _source_port[0] += 1
    source = IPv4Address("TCP", host, _source_port[0])
    local = IPv4Address("TCP", "127.0.0.1", node.listen_ports[0])
    server = (factory or node.factory).buildProtocol(source)
    client = client if client is not None else RawPeer()
    server_transport = RecordingTransport(server, isServer=True, hostAddress=local,
                                          peerAddress=source)
    client_transport = RecordingTransport(client, isServer=False, hostAddress=source,
                                          peerAddress=local)
    pump = iosim.connect(server, server_transport, client, client_transport, greet=False,
                         clock=clock if clock is not None else node.clock)
    return server, client, pump


def fake_hello(node_id=None, listen_ports=(), name="mallory") -> bytes:
    return framed(wire.Hello(versions=(2,), node_id=node_id or secrets.token_hex(32),
                             listen_ports=tuple(listen_ports), name=name))


def handshaken_raw(node, host="127.0.0.1", **kwargs):
    """
    A raw in-memory peer from C{host} that has said a valid HELLO and is
    now a registered connection of C{node}.
    """
    server, client, pump = connect_raw(node, host)
    client.send(fake_hello(**kwargs))
    pump.flush()
    assert server.hello is not None and node.connections[server.remote_id] is server
    return server, client, pump


def capture_events(testcase):
    """
    Collect log events (level and text) for the rest of the test.
    """
    events = []

    def observe(event):
        events.append((event.get("log_level"), formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def visible(events, after=0):
    """
    The lines at info level or above (what an operator sees), from index
    C{after} on.
    """
    return [text for level, text in events[after:]
            if level is not None and level >= LogLevel.info]


def fail_dial(reactor_, index) -> None:
    """
    Make the in-memory dial number C{index} fail, as an unreachable host
    would.
    """
    factory = reactor_.tcpClients[index][2]
    factory.clientConnectionFailed(reactor_.connectors[index],
                                   Failure(ConnectionRefusedError()))


def disk_outside_state(node) -> dict:
    """
    Everything on disk under an in-memory node's directory (its share
    included) except its own state directory.
    """
    base = os.path.dirname(os.path.abspath(node.share_dir))
    state = os.path.relpath(os.path.abspath(node.state_dir), base)
    return {k: v for k, v in tree(base).items() if k != state and not k.startswith(state + os.sep)}


def attempt_bound(duration: float) -> int:
    """
    The most dial attempts the book's backoff allows one address within
    C{duration} seconds, derived from L{p2ptwisted.peers}: the first dial at
    once, then waits of INITIAL_DELAY * FACTOR ** (n - 1), capped at
    MAX_DELAY (jitter only lengthens them).  About log2(MAX_DELAY) attempts
    to ramp up, then one per MAX_DELAY.
    """
    t, failures, attempts = 0.0, 0, 0
    while t <= duration:
        attempts += 1
        failures += 1
        t += min(peers_module.MAX_DELAY,
                 peers_module.INITIAL_DELAY * peers_module.FACTOR ** (failures - 1))
    return attempts


async def until_received(attacker, predicate):
    """
    Wait (event-driven, bounded) until the frames an attacker received
    satisfy C{predicate}.
    """
    if predicate(attacker.frames()):
        return
    done = Deferred()
    original = attacker.dataReceived

    def received(data):
        original(data)
        if not done.called and predicate(attacker.frames()):
            done.callback(None)

    attacker.dataReceived = received
    lost = attacker.lost

    def gone(_):
        if not done.called:
            done.errback(AssertionError("connection lost while waiting for a frame"))
        return _

    lost.addBoth(gone)
    await done.addTimeout(WAIT, reactor)


# ---------------------------------------------------------------------------
# Over real TCP and TLS, with the harness's invariant check


class GossipAgainstTargetTests(TestCase):
    timeout = 60

    async def test_peers_with_more_than_64_entries_dropped(self):
        """
        A handshaken peer sends a hand-crafted PEERS whose array holds 65
        (valid, loopback) addresses: the decoder refuses it, the node drops
        the connection with one line, learns none of them, and is otherwise
        unharmed.
        """
        target = await Target.start(self)
        before = target.baseline()
        book_before = {e.key for e in target.node.book}
        attacker = await target.attack()
        attacker.hello()
        entries = [f"127.0.1.{i + 1}:9" for i in range(wire.MAX_PEERS_PER_FRAME + 1)]
        attacker.send(peers_frame(entries))
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual({e.key for e in target.node.book}, book_before)
        await target.check(self, before, attacker, lines=1,
                           pattern=r"dropping .*PEERS carries 65 entries")

    async def test_invalid_addresses_ignored_in_one_line(self):
        """
        A handshaken peer gossips only invalid entries: host names (which
        the node must never resolve for a stranger), bad ports, refused
        address kinds and plain garbage.  Not an error: the connection
        stays up, one line counts them all, the book does not change, and
        nothing is dialled.
        """
        target = await Target.start(self)
        before = target.baseline()
        book_before = {e.key for e in target.node.book}
        dialled = []
        original_dial = target.node._dial
        self.patch(target.node, "_dial", lambda entry: (dialled.append(entry.key),
                                                         original_dial(entry)))
        attacker = await target.attack()
        attacker.hello()
        entries = [
            # names
            "localhost:12345", "example.com:80", "node.invalid:1",
            # bad ports
            "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:", "127.0.0.1:http",
            "127.0.0.1:1e3", "127.0.0.1:123456", "127.0.0.1:\u0665",
            # bad syntax and refused kinds
            "127.0.0.1", "01.2.3.4:5", "1.2.3:5", "[127.0.0.1]:5", "::1:5", "[::1]",
            "[fe80::1%eth0]:5", "0.0.0.0:5", "224.0.0.1:5", "255.255.255.255:5", "[::]:5",
            "[::ffff:127.0.0.1]:5", "127.0.0.1:5\n", "x" * 70 + ":1", "",
            # not strings at all
            1, None, True, {}, [], 1.5,
        ]
        attacker.send(peers_frame(entries))
        attacker.send_frame(wire.Ping(7))
        # The PONG comes after the PEERS was handled (frames are handled in
        # order), and shows the connection survived it.
        await until_received(attacker, lambda fs: wire.Pong(7) in fs)
        self.assertFalse(attacker.lost.called)
        self.assertEqual({e.key for e in target.node.book}, book_before)
        self.assertEqual(dialled, [])
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=1,
                           pattern=rf"ignored {len(entries)} invalid entries in PEERS")


# ---------------------------------------------------------------------------
# In memory, on a fake clock


class GossipInMemoryTests(SynchronousTestCase):
    timeout = 60

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.events = capture_events(self)
        self.node = make_node(self, "target", reactor=self.reactor)
        self.reactor.advance(0)
        self.disk = disk_outside_state(self.node)

    def dials_to(self, host, port=None, start=0):
        return [i for i, c in enumerate(self.reactor.tcpClients)
                if i >= start and c[0] == host and (port is None or c[1] == port)]

    def assert_invariants(self):
        """
        What makes sense in memory: the node runs, logged no traceback,
        and wrote nothing on disk outside its state directory.
        """
        self.assertTrue(self.node.running)
        for _, text in self.events:
            self.assertIsNone(FORBIDDEN.search(text), text)
        self.assertEqual(disk_outside_state(self.node), self.disk)

    def test_rapid_peers_ignored(self):
        """
        A peer sends 20 PEERS frames within half a second, each naming a
        new address: only the first is used, the rest are ignored without
        an error and without a line an operator sees; the connection stays
        up.  Once GOSSIP_MIN_SPACING has passed, PEERS is heard again.
        """
        server, client, pump = handshaken_raw(self.node)
        mark = len(self.events)
        for i in range(20):
            client.send(peers_frame([f"192.0.2.{i + 1}:12345"]))
            pump.flush()
            self.reactor.advance(0.025)
        learned = sorted(e.key for e in self.node.book if e.key.startswith("192.0.2."))
        self.assertEqual(learned, ["192.0.2.1:12345"])
        self.assertFalse(client.lost)
        self.assertIs(self.node.connections[server.remote_id], server)
        about = [line for line in visible(self.events, mark)
                 if server.describe() in line and "PEERS" in line]
        self.assertEqual(about, [])
        self.reactor.advance(limits.GOSSIP_MIN_SPACING)
        client.send(peers_frame(["192.0.2.100:12345"]))
        pump.flush()
        self.assertIsNotNone(self.node.book.get("192.0.2.100:12345"))
        self.assert_invariants()

    def test_invalid_and_valid_mixed(self):
        """
        One PEERS mixes names, bad ports and garbage with one good
        address: the good one is learned and dialled (as an IP literal,
        never resolved), the others are counted in one line.
        """
        server, client, pump = handshaken_raw(self.node)
        start = len(self.reactor.tcpClients)
        mark = len(self.events)
        bad = ["evil.example:80", "localhost:22", "192.0.2.9:0", "192.0.2.9:99999",
               "garbage", 42, None, {"host": "192.0.2.9"}, "[192.0.2.9]:7"]
        client.send(peers_frame(bad + ["192.0.2.9:7"]))
        pump.flush()
        self.assertIsNotNone(self.node.book.get("192.0.2.9:7"))
        self.assertEqual([e.key for e in self.node.book if "example" in e.key
                          or "localhost" in e.key], [])
        self.assertEqual([c[:2] for c in self.reactor.tcpClients[start:]], [("192.0.2.9", 7)])
        lines = [e for e in self.events[mark:] if "invalid entries" in e[1]]
        self.assertEqual(len(lines), 1)
        self.assertIn(f"ignored {len(bad)} invalid entries", lines[0][1])
        self.assertIn(server.describe(), lines[0][1])
        self.assertFalse(client.lost)
        self.assert_invariants()

    def test_own_address_recognised_and_never_redialled(self):
        """
        A peer keeps gossiping the node's own listen address for ten
        minutes.  The node may dial it once at most (it cannot know all its
        own addresses); that connection reaches itself, is recognised by
        id, closed, and the address is marked so it is never dialled again.
        """
        node = self.node
        own = f"127.0.0.1:{node.listen_ports[0]}"
        server, client, pump = handshaken_raw(node)
        start = len(self.reactor.tcpClients)
        mark = len(self.events)
        client.send(peers_frame([own]))
        pump.flush()
        dials = self.dials_to("127.0.0.1", node.listen_ports[0], start)
        self.assertLessEqual(len(dials), 1)
        if dials:
            # The dial reaches this very node: connect it to our listener.
            wrapping = self.reactor.tcpClients[dials[0]][2]
            out = wrapping.buildProtocol(IPv4Address("TCP", "127.0.0.1", node.listen_ports[0]))
            inbound, _, self_pump = connect_raw(node, "127.0.0.1", client=out)
            self_pump.flush()
            entry = node.book.get(own)
            self.assertTrue(entry.is_self)
            self.assertNotIn(node.node_id, node.connections)
            self.assertEqual(node.pending, [])
            closing = [t for _, t in self.events[mark:] if "connected to ourselves at" in t]
            self.assertEqual(len(closing), 1, closing)
        for second in range(600):
            if second % 2 == 0:
                client.send(peers_frame([own]))
                pump.flush()
            self.reactor.advance(1)
        self.assertEqual(self.dials_to("127.0.0.1", node.listen_ports[0], start), dials)
        self.assertEqual(list(node.connections), [server.remote_id])
        self.assert_invariants()

    def test_loopback_from_remote_peer_ignored(self):
        """
        A peer on another machine (10.0.0.5) gossips loopback addresses,
        which would have the node dial services on its own machine: they
        are ignored and counted in one line, the other address is learned,
        nothing on loopback is ever dialled; and the node never gossips a
        loopback address to that remote peer either.
        """
        node = self.node
        # A local peer with a loopback listen address, so the node has one
        # it could (wrongly) pass on.
        local, _, local_pump = handshaken_raw(node, "127.0.0.1", listen_ports=(4444,))
        server, client, pump = handshaken_raw(node, "10.0.0.5")
        start = len(self.reactor.tcpClients)
        mark = len(self.events)
        loopbacks = ["127.0.0.1:22", "127.1.2.3:8080", "[::1]:631", "127.255.255.254:1"]
        client.send(peers_frame(loopbacks + ["192.0.2.7:12345"]))
        pump.flush()
        for key in ("127.0.0.1:22", "127.1.2.3:8080", "[::1]:631", "127.255.255.254:1"):
            self.assertIsNone(node.book.get(key))
        self.assertIsNotNone(node.book.get("192.0.2.7:12345"))
        lines = [t for _, t in self.events[mark:] if "invalid entries" in t]
        self.assertEqual(len(lines), 1)
        self.assertIn(f"ignored {len(loopbacks)} invalid entries", lines[0])
        self.assertIn("10.0.0.5", lines[0])
        # A minute (the silent peer would be dropped as idle after 90 s).
        for _ in range(60):
            self.reactor.advance(1)
            pump.flush()
        hosts = {c[0] for c in self.reactor.tcpClients[start:]}
        self.assertEqual({h for h in hosts if wire.is_loopback(h)}, set())
        # Sender rule: the node knows a loopback listen address (the local
        # peer's), yet never tells the remote peer about it.
        gossiped = [a for m in client.frames() if isinstance(m, wire.Peers)
                    for a in m.addresses]
        self.assertEqual([a for a in gossiped if wire.is_loopback(a.host)], [])
        self.assertTrue(any(isinstance(m, wire.Peers) for m in client.frames()))
        self.assertIsNotNone(node.book.get("127.0.0.1:4444"))
        self.assertEqual(node.gossip_for(server).addresses, ())
        self.assertFalse(client.lost)
        self.assert_invariants()

    def test_third_party_address_never_hammered(self):
        """
        50 different peers (each from its own address) gossip the same
        unreachable third-party address every 5 seconds for 10 simulated
        minutes -- 6000 PEERS frames, each accepted.  Every dial to it
        fails (3 seconds after it starts).  The node dials it at most as
        often as the book's backoff allows for one address (derived from
        peers.py: about log2(MAX_DELAY) + 600/MAX_DELAY attempts), never
        twice at once, and never once per gossip message; in fact, as it
        never answers, it is forgotten after MAX_UNANSWERED attempts and
        the gossip repeating it is ignored for FORGET_FOR seconds.
        """
        node = self.node
        victim_host, victim_port = "192.0.2.66", 12345
        victim = f"{victim_host}:{victim_port}"
        peers = [handshaken_raw(node, f"10.0.{i // 200}.{i % 200 + 1}") for i in range(50)]
        self.assertEqual(len(node.connections), 50)
        duration = 600
        gossip_messages = 0
        seen = 0
        in_flight = {}  # dial index -> time it fails
        most_in_flight = 0
        for tick in range(duration * 10):
            now = tick / 10
            for i, (server, _, _) in enumerate(peers):
                if tick % 50 == i:  # every 5 s, staggered by 0.1 s
                    server.dataReceived(peers_frame([victim]))
                    gossip_messages += 1
                    self.assertEqual(server.peers_received_at, self.reactor.seconds())
            for index in self.dials_to(victim_host, victim_port, seen):
                in_flight[index] = now + 3.0
            seen = len(self.reactor.tcpClients)
            most_in_flight = max(most_in_flight, len(in_flight))
            for index, due in list(in_flight.items()):
                if due <= now:
                    del in_flight[index]
                    fail_dial(self.reactor, index)
            self.reactor.advance(0.1)
        attempts = len(self.dials_to(victim_host, victim_port))
        bound = attempt_bound(duration)
        self.assertEqual(gossip_messages, 6000)
        self.assertLessEqual(most_in_flight, 1)
        self.assertLessEqual(attempts, bound)
        # The dials did fail and were retried (the case can tell the
        # difference), until the address was forgotten.
        self.assertLessEqual(duration, peers_module.FORGET_FOR)
        self.assertEqual(attempts, peers_module.MAX_UNANSWERED)
        self.assertIsNone(node.book.get(victim))
        self.assertEqual(len(node.connections), 50)
        self.assert_invariants()

    def test_many_fake_peers_from_one_network(self):
        """
        Peers gossip 640 different addresses, all in 10.7.7.0/24, for two
        simulated minutes, while dials to them hang for a while and then
        fail: the book never holds more than MAX_BOOK entries, an operator's
        bootstrap peer is never evicted, and no more than MAX_PENDING_DIALS
        connection attempts are ever in flight.
        """
        node = self.node
        bootstrap = node.add_bootstrap("192.0.2.1:12345")
        feeders = [handshaken_raw(node, f"10.9.0.{i + 1}") for i in range(5)]
        addresses = [f"10.7.7.{i % 254 + 1}:{20000 + i}" for i in range(640)]
        chunks = [addresses[i:i + wire.MAX_PEERS_PER_FRAME]
                  for i in range(0, len(addresses), wire.MAX_PEERS_PER_FRAME)]
        seen = 0
        in_flight = {}
        most_in_flight = most_book = 0
        dialled = set()
        for tick in range(120 * 4):
            now = tick / 4
            if tick % 8 == 0:  # every 2 s, one frame from a feeder in turn
                k = tick // 8
                server = feeders[k % len(feeders)][0]
                server.dataReceived(peers_frame(chunks[k % len(chunks)]))
            for index in range(seen, len(self.reactor.tcpClients)):
                host, port = self.reactor.tcpClients[index][:2]
                dialled.add(f"{host}:{port}")
                in_flight[index] = now + 5.0  # hang 5 s, then fail
            seen = len(self.reactor.tcpClients)
            most_in_flight = max(most_in_flight, len(in_flight))
            most_book = max(most_book, len(node.book))
            self.assertLessEqual(len(node.book), peers_module.MAX_BOOK)
            for index, due in list(in_flight.items()):
                if due <= now:
                    del in_flight[index]
                    fail_dial(self.reactor, index)
            self.reactor.advance(0.25)
        self.assertLessEqual(most_in_flight, node_module.MAX_PENDING_DIALS)
        self.assertEqual(most_book, peers_module.MAX_BOOK)
        self.assertIs(node.book.get("192.0.2.1:12345"), bootstrap)
        # The book was really under pressure: many more addresses were
        # offered than it can hold, and dialling went on all along.
        self.assertGreater(len(dialled), node_module.MAX_PENDING_DIALS * 4)
        self.assertEqual(len(node.connections), len(feeders))
        self.assert_invariants()


class DeadAddressTests(SynchronousTestCase):
    """
    Issue 11 point 7: gossip of dead addresses.  Every dial the node makes
    fails at once (connection refused), as it would for addresses where
    nothing listens.
    """

    timeout = 60

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.events = capture_events(self)
        self.node = make_node(self, "target", reactor=self.reactor)
        self.reactor.advance(0)
        self.failed = 0
        self.dial_times = []

    def run_for(self, seconds, step=0.25, each=None):
        """
        Advance the clock, failing every dial as soon as it is made;
        C{each(now)} runs at every step.
        """
        for tick in range(int(seconds / step)):
            now = self.reactor.seconds()
            if each is not None:
                each(tick, now)
            while self.failed < len(self.reactor.tcpClients):
                self.dial_times.append(now)
                fail_dial(self.reactor, self.failed)
                self.failed += 1
            self.reactor.advance(step)

    def test_dead_addresses_forgotten(self):
        """
        One PEERS frame names 64 addresses on one host where nothing
        listens, and a second peer repeats it every 30 seconds: each
        address is dialled MAX_UNANSWERED times, then forgotten and not
        dialled again for the rest of ten simulated minutes; the failures
        are logged within the host's log budget.  (Before the fix: 103
        dials in the first 12 s, then 64 every minute or so, forever, and
        one line for each.)
        """
        dead = [f"10.66.0.1:{20000 + i}" for i in range(64)]
        first, _, _ = handshaken_raw(self.node, "10.0.0.1")
        second, _, _ = handshaken_raw(self.node, "10.0.0.2")
        first.dataReceived(peers_frame(dead))

        def repeat(tick, now):
            if tick % 120 == 119:
                second.dataReceived(peers_frame(dead))

        self.run_for(600, each=repeat)
        self.assertEqual(len(self.dial_times), 64 * peers_module.MAX_UNANSWERED)
        self.assertLess(max(self.dial_times), 120)  # the dial rate bound spreads them
        self.assertEqual([e for e in self.node.book if e.key in dead], [])
        lines = [t for t in visible(self.events) if "could not reach 10.66.0.1:" in t]
        self.assertLessEqual(len(lines), logbudget.BURST + 120 / logbudget.REFILL)
        self.assertTrue(any("similar lines about this host suppressed" in t for t in lines))
        self.assertTrue(any("forgetting it" in t for t in lines))
        self.assertEqual(len(self.node.connections), 2)

    def test_total_dial_rate_bounded(self):
        """
        Ten peers each gossip 64 new dead addresses every two seconds
        (so forgetting alone cannot help) for two simulated minutes: the
        node never dials more than DIAL_BURST + DIAL_RATE * t addresses
        in any t seconds.
        """
        from p2ptwisted import dialing

        feeders = [handshaken_raw(self.node, f"10.0.1.{i + 1}")[0] for i in range(10)]
        fresh = iter(range(10 ** 6))

        def gossip(tick, now):
            if tick % 8 == 0:
                for feeder in feeders:
                    feeder.dataReceived(peers_frame(
                        [f"10.{70 + n // 60000}.{n // 250 % 240}.{n % 250 + 1}:12345"
                         for n in (next(fresh) for _ in range(64))]))

        self.run_for(120, each=gossip)
        times = self.dial_times
        self.assertGreater(len(times), dialing.DIAL_BURST)
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                if j - i + 1 > dialing.DIAL_BURST + dialing.DIAL_RATE * (times[j] - start) + 1:
                    self.fail(f"{j - i + 1} dials in {times[j] - start:.2f} s")
        self.assertLessEqual(len(times), dialing.DIAL_BURST + dialing.DIAL_RATE * 120 + 1)
        self.assertEqual(len(self.node.connections), 10)
