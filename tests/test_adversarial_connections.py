"""
Adversarial suite, family "Connections" (threats.md): idle and half-open
connections, connections that never finish TLS, floods from one address and
in total, self-connections, two nodes dialling each other at once, slow
readers and peers vanishing mid-transfer.

Timeouts are tested in memory on a L{MemoryReactorClock} (15 or 90 seconds
of real waiting would be too slow); everything else runs against real
nodes on loopback through the harness in L{tests.adversary}.
"""

from __future__ import annotations

import re

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import limits, logbudget, wire
from p2ptwisted.identity import load_or_create_identity
from p2ptwisted.tls import PeerTLS

from .adversary import FORBIDDEN, REFUSAL, WAIT, Attacker, Target
from .helpers import first_pause, make_node, until_settled
from .test_adversarial_gossip import (
    RawPeer,
    capture_events,
    connect_raw,
    disk_outside_state,
    fake_hello,
    handshaken_raw,
)

MiB = 1 << 20

# ---------------------------------------------------------------------------
# In memory: the deadlines


class InMemoryTimeoutTests(SynchronousTestCase):
    timeout = 60

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.events = capture_events(self)

    def baseline(self, node):
        return {
            "disk": disk_outside_state(node),
            "pending": list(node.pending),
            "connections": dict(node.connections),
            "timers": self.timers(node),
        }

    def timers(self, node):
        # The node's one-shot start-up summary (15 s after start) fires on
        # its own during these cases; it is not something an attack leaves.
        return len([c for c in self.reactor.getDelayedCalls()
                    if c.active() and c is not node._summary_call])

    def assert_baseline(self, node, before):
        self.assertTrue(node.running)
        self.assertEqual(node.pending, before["pending"])
        self.assertEqual(node.connections, before["connections"])
        self.assertEqual(self.timers(node), before["timers"])
        for _, text in self.events:
            self.assertIsNone(FORBIDDEN.search(text), text)
        self.assertEqual(disk_outside_state(node), before["disk"])

    def lines_about(self, where, mark=0):
        return [t for _, t in self.events[mark:] if where in t and REFUSAL.search(t)]

    def flush(self, pump):
        pump.flush()
        self.reactor.advance(0)
        pump.flush()

    def test_idle_connection_without_hello(self):
        """
        A peer opens a plaintext connection and never says anything: it is
        dropped (aborted) once HANDSHAKE_TIMEOUT has passed, not before,
        with one line; the node is back to baseline.
        """
        node = make_node(self, "target", reactor=self.reactor)
        self.reactor.advance(0)
        before = self.baseline(node)
        server, client, pump = connect_raw(node, "10.0.0.5")
        self.flush(pump)
        where = f"10.0.0.5:{server.transport.getPeer().port}"
        self.assertEqual(node.pending, [server])
        self.reactor.advance(limits.HANDSHAKE_TIMEOUT - 0.5)
        self.flush(pump)
        self.assertFalse(client.lost)
        self.reactor.advance(1)
        self.flush(pump)
        self.assertTrue(client.lost)
        self.assertTrue(server.transport.aborted)
        lines = self.lines_about(where)
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"dropping .*no (TLS handshake and )?HELLO within 15 seconds")
        self.assert_baseline(node, before)

    def tls_node(self):
        node = make_node(self, "target", reactor=self.reactor, tls=True)
        self.reactor.advance(0)
        return node

    def test_tcp_connection_that_never_starts_tls(self):
        """
        A peer connects to a TLS node and never sends a byte of the TLS
        handshake: the node's own HELLO is never sent, the connection is
        aborted at HANDSHAKE_TIMEOUT with one line, and the node is back to
        baseline.
        """
        node = self.tls_node()
        before = self.baseline(node)
        wrapper, client, pump = connect_raw(node, "10.0.0.6", factory=node.listen_factory)
        self.flush(pump)
        inner = wrapper.wrappedProtocol
        self.assertEqual(node.pending, [inner])
        self.reactor.advance(limits.HANDSHAKE_TIMEOUT - 0.5)
        self.flush(pump)
        self.assertFalse(client.lost)
        self.reactor.advance(1)
        self.flush(pump)
        self.assertTrue(client.lost)
        self.assertTrue(wrapper.transport.aborted)
        # Nothing but (at most) TLS handshake bytes ever went out: no HELLO.
        self.assertIsNone(inner.hello)
        self.assertEqual(inner.bytes_out, 0)
        lines = self.lines_about("10.0.0.6:")
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"dropping .*no (TLS handshake and )?HELLO within 15 seconds")
        self.assert_baseline(node, before)

    def test_tls_handshake_done_but_no_hello(self):
        """
        A peer finishes the TLS handshake with a valid certificate of its
        own, receives the node's HELLO, and then stays silent: it is
        aborted at HANDSHAKE_TIMEOUT (which covers TLS and HELLO together)
        with one line, and the node is back to baseline.
        """
        node = self.tls_node()
        before = self.baseline(node)
        identity = load_or_create_identity(self.mktemp())
        tls_client = TLSMemoryBIOFactory(PeerTLS(identity), True,
                                         Factory.forProtocol(RawPeer),
                                         clock=self.reactor).buildProtocol(None)
        wrapper, _, pump = connect_raw(node, "10.0.0.7", factory=node.listen_factory,
                                       client=tls_client)
        self.flush(pump)
        inner = wrapper.wrappedProtocol
        raw = tls_client.wrappedProtocol
        self.assertEqual(inner.certificate_id, identity.node_id)
        self.assertIsInstance(raw.frames()[0], wire.Hello)
        self.assertEqual(node.pending, [inner])
        self.reactor.advance(limits.HANDSHAKE_TIMEOUT - 0.5)
        self.flush(pump)
        self.assertFalse(raw.lost)
        self.reactor.advance(1)
        self.flush(pump)
        self.assertTrue(raw.lost)
        self.assertTrue(wrapper.transport.aborted)
        lines = self.lines_about("10.0.0.7:")
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"dropping .*no (TLS handshake and )?HELLO within 15 seconds")
        self.assert_baseline(node, before)

    def test_half_open_peer_after_hello(self):
        """
        A peer says HELLO and then never sends another frame (nor reads
        what it gets): after PING_INTERVAL the node sends one PING, nothing
        more while it waits, and at IDLE_TIMEOUT it aborts the connection
        with one line; connections and timers are back to baseline.
        """
        node = make_node(self, "target", reactor=self.reactor)
        self.reactor.advance(0)
        before = self.baseline(node)
        server, client, pump = connect_raw(node, "10.0.0.8")
        client.send(fake_hello())
        self.flush(pump)
        self.assertIn(server.remote_id, node.connections)

        def pings():
            return [m for m in client.frames() if isinstance(m, wire.Ping)]

        self.reactor.advance(limits.PING_INTERVAL - 0.5)
        self.flush(pump)
        self.assertEqual(pings(), [])
        self.reactor.advance(1)
        self.flush(pump)
        self.assertEqual(len(pings()), 1)
        self.reactor.advance(limits.IDLE_TIMEOUT - limits.PING_INTERVAL - 1)
        self.flush(pump)
        self.assertEqual(len(pings()), 1)
        self.assertFalse(client.lost)
        self.assertIn(server.remote_id, node.connections)
        self.reactor.advance(1)
        self.flush(pump)
        self.assertTrue(client.lost)
        self.assertTrue(server.transport.aborted)
        lines = self.lines_about("10.0.0.8:")
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"dropping .*silent for 90 seconds")
        self.assert_baseline(node, before)


    def test_idle_handshakes_give_way(self):
        """
        Issue 11 point 6, in memory: with an established peer, 400 idle
        connections arrive from 100 hosts (4 each, none says anything):
        at most MAX_HANDSHAKES of them are ever held, each newcomer taking
        the place of the oldest; an honest peer that connects then is
        registered at once (no time passes), and the established one is
        untouched.  (Before the fix the 400 filled the 256 slots and the
        honest peer was dropped until the 15-second deadline freed one.)
        """
        from p2ptwisted import connections

        node = make_node(self, "target", reactor=self.reactor)
        self.reactor.advance(0)
        established, _, _ = handshaken_raw(node, "10.1.0.1")
        idle, pumps = [], []
        most = 0
        for i in range(400):
            server, client, pump = connect_raw(node, f"10.2.{i // 4 // 200}.{i // 4 % 200 + 1}")
            self.flush(pump)
            idle.append(client)
            pumps.append(pump)
            most = max(most, len(node.pending))
        for pump in pumps:
            pump.flush()
        self.assertLessEqual(most, connections.MAX_HANDSHAKES)
        self.assertEqual(sum(not c.lost for c in idle), connections.MAX_HANDSHAKES)
        server, client, pump = connect_raw(node, "10.3.0.1")
        client.send(fake_hello())
        self.flush(pump)
        self.assertIs(node.connections.get(server.remote_id), server)
        self.assertIs(node.connections.get(established.remote_id), established)
        self.assertFalse(client.lost)
        for _, text in self.events:
            self.assertIsNone(FORBIDDEN.search(text), text)
        # One line per drop at most, within each host's budget.
        drops = [t for _, t in self.events if "the oldest still in the handshake" in t]
        self.assertEqual(len(drops), 400 - connections.MAX_HANDSHAKES + 1)

    def test_full_node_gives_an_idle_handshake_slot_away(self):
        """
        The total limit works the same way: a node at --max-connections
        whose connections are partly still in the handshake drops the
        oldest of those for a newcomer; when all are established, the
        newcomer is refused.
        """
        node = make_node(self, "target", reactor=self.reactor, max_connections=3)
        self.reactor.advance(0)
        handshaken_raw(node, "10.1.0.1")
        _, idle, idle_pump = connect_raw(node, "10.2.0.1")
        self.flush(idle_pump)
        handshaken_raw(node, "10.1.0.2")
        self.assertEqual((len(node.connections), len(node.pending)), (2, 1))
        handshaken_raw(node, "10.1.0.3")
        self.flush(idle_pump)
        self.assertTrue(idle.lost)
        self.assertEqual((len(node.connections), len(node.pending)), (3, 0))
        server, client, pump = connect_raw(node, "10.1.0.4")
        self.flush(pump)
        self.assertTrue(client.lost)
        self.assertEqual(len(node.connections), 3)
        self.assertTrue(any("already 3 connections (limit 3)" in t for _, t in self.events))


# ---------------------------------------------------------------------------
# Real TCP helpers


async def raw_connect(testcase, target, source: str, identity) -> Attacker:
    """
    Open a TLS connection to C{target} from the loopback address C{source}
    (the whole of 127/8 is ours), without waiting for the TLS handshake.
    C{attacker.handshake} fires with True once the handshake is done, or
    False if the connection closed first.
    """
    attacker = Attacker()
    attacker.identity = identity
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", target.port, bindAddress=(source, 0))
    endpoint = wrapClientTLS(PeerTLS(identity), endpoint)
    await connectProtocol(endpoint, attacker)
    attacker.handshake.addCallbacks(lambda _: True, lambda _: False)
    testcase.addCleanup(
        lambda: attacker.transport.connected and attacker.transport.abortConnection()
    )
    return attacker


def when_count(deferreds, n) -> Deferred:
    """
    A Deferred that fires once C{n} of C{deferreds} have fired.
    """
    done = Deferred()
    fired = [0]

    def one(result):
        fired[0] += 1
        if fired[0] == n and not done.called:
            done.callback(None)
        return result

    for d in deferreds:
        d.addBoth(one)
    if n == 0:
        done.callback(None)
    return done


class NodeWatch:
    """
    Watches real nodes' connections: every protocol each makes, and a
    Deferred for any condition, re-checked whenever a connection of any of
    them opens, completes its handshake or closes (pending ones included,
    which a node's own C{wait_for} does not see).
    """

    def __init__(self, testcase, *nodes):
        self.protos = {node: [] for node in nodes}
        self.waiters = []
        for node in nodes:
            for name in ("connection_made", "handshake_completed", "connection_lost"):
                original = getattr(node, name)
                testcase.patch(node, name, self._wrap(node, name, original))

    def _wrap(self, node, name, original):
        def wrapper(proto, *args):
            if name == "connection_made":
                self.protos[node].append(proto)
            result = original(proto, *args)
            self.check()
            return result

        return wrapper

    def all_protos(self):
        return [p for protos in self.protos.values() for p in protos]

    def check(self):
        for waiter in list(self.waiters):
            condition, d = waiter
            if condition():
                self.waiters.remove(waiter)
                d.callback(None)

    def until(self, condition) -> Deferred:
        d = Deferred()
        if condition():
            d.callback(None)
        else:
            self.waiters.append((condition, d))
        return d.addTimeout(WAIT, reactor)


def refusals_from(lines, host):
    return [line for line in lines if f"{host}:" in line and REFUSAL.search(line)]


# ---------------------------------------------------------------------------
# Real TCP: floods and limits


class FloodTests(TestCase):
    timeout = 60

    async def test_flood_from_one_address(self):
        """
        One host (127.0.0.2) opens 30 TLS connections to a node run with
        --max-per-address 4 and keeps the first ones open without saying
        HELLO: exactly 4 are kept, the other 26 are dropped at once; the
        drop lines are rate-limited (at most the log budget's burst, fewer
        than the drops); an honest node from another address fetches a
        file while the flood holds; once the flooder goes the node is back
        to baseline.
        """
        target = await Target.start(self, args=["--max-per-address", "4"])
        before = target.baseline()
        watch = NodeWatch(self, target.node)
        identity = load_or_create_identity(self.mktemp())
        attackers = [await raw_connect(self, target, "127.0.0.2", identity) for _ in range(30)]
        await when_count([a.lost for a in attackers], 26).addTimeout(WAIT, reactor)
        kept = [a for a in attackers if not a.lost.called]
        self.assertEqual(len(kept), 4)
        for attacker in kept:
            self.assertTrue(await attacker.handshake.addTimeout(WAIT, reactor))
        flooders = [p for p in target.node.pending
                    if p.transport.getPeer().host == "127.0.0.2"]
        self.assertEqual(len(flooders), 4)
        # Still serving, while the flood holds its four connections.
        await target.honest_fetch()
        for attacker in kept:
            attacker.transport.abortConnection()
        await when_count([a.lost for a in kept], 4).addTimeout(WAIT, reactor)
        await watch.until(lambda: len(target.node.pending) == before["pending"])
        await target.check(self, before, None, lines=None)
        drops = refusals_from(target.lines_since(before["mark"]), "127.0.0.2")
        self.assertGreaterEqual(len(drops), 1)
        self.assertLessEqual(len(drops), logbudget.BURST)
        self.assertLess(len(drops), 26)
        for line in drops:
            self.assertRegex(line, r"dropping 127\.0\.0\.2:\d+: already 4 connections from "
                                   r"127\.0\.0\.2 \(limit 4\)")

    async def test_total_connection_limit(self):
        """
        With --max-connections 4, four nodes from one host hold
        connections open (HELLO said, so they are established: connections
        still in the handshake would give way, see
        test_idle_handshakes_do_not_keep_peers_out) and six more arrive
        from another: each of the six is dropped at once with one line
        naming the limit; once the holders go, an honest node is served and
        the node is back to baseline.
        """
        target = await Target.start(self, args=["--max-connections", "4"])
        before = target.baseline()
        watch = NodeWatch(self, target.node)
        identity = load_or_create_identity(self.mktemp())
        holders = []
        for _ in range(4):
            holder = await raw_connect(self, target, "127.0.0.2",
                                       load_or_create_identity(self.mktemp()))
            self.assertTrue(await holder.handshake.addTimeout(WAIT, reactor))
            holder.hello()
            holders.append(holder)
        await watch.until(lambda: len(target.node.connections) == 4)
        extras = [await raw_connect(self, target, "127.0.0.3", identity) for _ in range(6)]
        await when_count([a.lost for a in extras], 6).addTimeout(WAIT, reactor)
        for attacker in extras:
            self.assertFalse(await attacker.handshake)
        self.assertFalse(any(a.lost.called for a in holders))
        for attacker in holders:
            attacker.transport.abortConnection()
        await when_count([a.lost for a in holders], 4).addTimeout(WAIT, reactor)
        await watch.until(lambda: len(target.node.pending) == before["pending"])
        await target.check(self, before, None, lines=None)
        drops = refusals_from(target.lines_since(before["mark"]), "127.0.0.3")
        self.assertEqual(len(drops), 6, drops)
        for line in drops:
            self.assertRegex(line, r"dropping 127\.0\.0\.3:\d+: already 4 connections "
                                   r"\(limit 4\)")
        self.assertEqual(refusals_from(target.lines_since(before["mark"]), "127.0.0.2"), [])


    async def test_idle_handshakes_do_not_keep_peers_out(self):
        """
        Issue 11 point 6 over real TCP: 400 idle sockets from 25 loopback
        addresses (16 each, the per-address limit) hold connections that
        never start TLS; an honest node that connects then gets in and
        fetches a file within 5 seconds -- far inside the 15-second
        handshake deadline the idle ones would otherwise hold their slots
        for.  At most MAX_HANDSHAKES of the idle ones are held at a time.
        """
        from twisted.internet.defer import ensureDeferred

        from p2ptwisted import connections

        target = await Target.start(self)
        watch = NodeWatch(self, target.node)
        most = [0]
        original = watch.check

        def check():
            most[0] = max(most[0], len(target.node.pending))
            original()

        watch.check = check
        idle = []
        for i in range(400):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", target.port,
                                          bindAddress=(f"127.0.0.{2 + i // 16}", 0))
            attacker = await connectProtocol(endpoint, Attacker())
            self.addCleanup(lambda a=attacker: a.transport.connected
                            and a.transport.abortConnection())
            idle.append(attacker)
        await watch.until(lambda: len(watch.all_protos()) >= 400)
        await when_count([a.lost for a in idle], 400 - connections.MAX_HANDSHAKES
                         ).addTimeout(WAIT, reactor)
        self.assertLessEqual(most[0], connections.MAX_HANDSHAKES)
        self.assertEqual(sum(not a.lost.called for a in idle), connections.MAX_HANDSHAKES)
        start = reactor.seconds()
        await ensureDeferred(target.honest_fetch()).addTimeout(5, reactor)
        self.assertLess(reactor.seconds() - start, 5)
        for attacker in idle:
            attacker.transport.abortConnection()


# ---------------------------------------------------------------------------
# Real TCP: who connects to whom


class DialRaceTests(TestCase):
    timeout = 60

    async def test_self_dial(self):
        """
        A node is told to dial its own listen address: it connects to
        itself once, recognises its own id on both ends, closes, marks the
        address as itself, and never dials it again; the node is back to
        baseline and still serves.
        """
        target = await Target.start(self)
        node = target.node
        before = target.baseline()
        watch = NodeWatch(self, node)
        dials = []
        original_dial = node._dial
        self.patch(node, "_dial", lambda entry: (dials.append(entry.key), original_dial(entry)))
        own = f"127.0.0.1:{target.port}"
        entry = node.add_bootstrap(own)
        node.dial_due()
        await watch.until(lambda: entry.is_self and len(watch.all_protos()) == 2
                          and all(p.when_lost().called for p in watch.all_protos()))
        self.assertEqual(dials, [own])
        self.assertEqual(sorted(node.connections), before["connections"])
        self.assertNotIn(entry, node.book.due(reactor.seconds() + 1e6, set()))
        for _ in range(5):
            node.dial_due()
        self.assertEqual(dials, [own])
        self.assertEqual(len(watch.all_protos()), 2)
        new = target.lines_since(before["mark"])
        closing = (rf"closing .*: connected to ourselves at {re.escape(own)};"
                   r" not dialling it again")
        marked = [line for line in new if re.search(closing, line)]
        self.assertEqual(len(marked), 1, "\n".join(new))
        await target.check(self, before, None, lines=None)
        self.assertEqual(dials, [own])

    async def test_simultaneous_dial(self):
        """
        Two nodes dial each other in the same reactor turn: both TCP
        connections open, and both nodes close the same one, so exactly
        one connection is left between them (the one dialled by the node
        with the smaller id), and neither dials again.
        """
        first = await Target.start(self)
        second = await Target.start(self)
        mark = first.mark()
        watch = NodeWatch(self, first.node, second.node)
        first.node.add_bootstrap(f"127.0.0.1:{second.port}")
        second.node.add_bootstrap(f"127.0.0.1:{first.port}")
        first.node.dial_due()
        second.node.dial_due()
        a, b = first.node, second.node

        def settled():
            protos = watch.all_protos()
            return (len(protos) == 4
                    and sum(p.when_lost().called for p in protos) == 2
                    and list(a.connections) == [b.node_id]
                    and list(b.connections) == [a.node_id]
                    and not a.pending and not b.pending)

        await watch.until(settled)
        kept_a, kept_b = a.connections[b.node_id], b.connections[a.node_id]
        self.assertFalse(kept_a.when_lost().called or kept_b.when_lost().called)
        # The two survivors are the two ends of one TCP connection.
        self.assertEqual(kept_a.transport.getHost().port, kept_b.transport.getPeer().port)
        self.assertEqual(kept_a.transport.getPeer().port, kept_b.transport.getHost().port)
        smaller = a if a.node_id < b.node_id else b
        dialler_end = kept_a if smaller is a else kept_b
        self.assertIsNotNone(dialler_end.dialed)
        for node in (a, b):
            node.dial_due()
        self.assertEqual(len(watch.all_protos()), 4)
        # Both still serve.
        await first.honest_fetch()
        await second.honest_fetch()
        self.assertEqual(list(a.connections)[:1], [b.node_id])
        for line in first.lines_since(mark):
            self.assertIsNone(FORBIDDEN.search(line), line)


# ---------------------------------------------------------------------------
# Real TCP over TLS: transfers and peers that stop reading or vanish


BIG = "big/blob.bin"
BIG_SIZE = 32 * MiB


def big_bytes() -> bytes:
    block = bytes(range(256)) * 4096  # 1 MiB
    return b"".join(block[i:] + block[:i] for i in range(BIG_SIZE // MiB))


class TransferTests(TestCase):
    timeout = 60

    #: Bounds on what a peer that stopped reading can make the node hold:
    #: buffered output in its socket transport, and bytes the upload
    #: scheduler pushes into the connection (kernel buffers included).
    MAX_BUFFERED = 8 * MiB
    MAX_SENT = 24 * MiB

    async def start(self):
        target = await Target.start(self, files={BIG: big_bytes()})
        entry = target.node.folder.store.get(BIG)
        self.assertEqual(entry.size, BIG_SIZE)
        return target, entry

    async def test_slow_reader_over_tls(self):
        """
        A TLS peer asks for a 32 MiB file and never reads: the upload
        scheduler is paused, the node's buffered output stays bounded and
        it never pushes the whole file; when the peer aborts, the node is
        back to baseline (the file it was serving is closed) and serves an
        honest node.
        """
        target, entry = await self.start()
        before = target.baseline()
        paused = first_pause(self)
        attacker = await target.attack()
        attacker.transport.pauseProducing()  # stop reading from the socket
        attacker.hello()
        attacker.send_frame(wire.Get(transfer=1, path=BIG, hash=entry.hash, offset=0))
        scheduler = await paused.addTimeout(WAIT, reactor)
        proto = target.node.connections[attacker.identity.node_id]
        self.assertIs(proto.scheduler, scheduler)
        socket_transport = proto.transport.transport

        still, buffered_max = await until_settled(scheduler, socket_transport)
        self.assertEqual(still, 50, "the scheduler never settled")
        self.assertTrue(scheduler.paused)
        self.assertLess(buffered_max, self.MAX_BUFFERED)
        self.assertLess(scheduler.bytes_sent, self.MAX_SENT)
        self.assertFalse(attacker.lost.called)
        attacker.transport.abortConnection()
        await target.check(self, before, attacker, lines=None)

    async def test_peer_vanishes_mid_transfer(self):
        """
        A TLS peer asks for a 32 MiB file, reads some of its DATA (1 MiB)
        and then vanishes (abort): the node ends the upload, closes the
        file, logs no traceback, is back to baseline and serves an honest
        node.
        """
        target, entry = await self.start()
        before = target.baseline()
        attacker = await target.attack()
        gone = Deferred()
        original = attacker.dataReceived

        def received(data):
            original(data)
            if len(attacker.received) >= MiB and not gone.called:
                attacker.transport.abortConnection()
                gone.callback(None)

        attacker.dataReceived = received
        attacker.hello()
        attacker.send_frame(wire.Get(transfer=1, path=BIG, hash=entry.hash, offset=0))
        await gone.addTimeout(WAIT, reactor)
        data = [f for f in attacker.frames() if isinstance(f, wire.Data)]
        self.assertTrue(data)
        self.assertFalse(any(isinstance(f, wire.End) for f in attacker.frames()))
        await target.check(self, before, attacker, lines=None)
