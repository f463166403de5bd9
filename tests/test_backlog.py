"""
What a node buffers for a peer stays bounded, whatever the peer sends
(issue 11, point 8): a peer that floods requests and never reads the
answers makes the node stop reading from it once its output to that peer
is backed up, and the node goes on serving everyone else.

Over real TCP (and TLS) on 127.0.0.1, where the kernel's buffers are what
is being tested: the node's buffered output is measured on its transport,
not guessed from the process's memory.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import backlog, wire
from p2ptwisted.backlog import buffered

from .adversary import Target, _until

MiB = 1 << 20


def framed(message) -> bytes:
    frame = wire.encode_frame(message)
    return len(frame).to_bytes(4, "big") + frame


async def until_still(proto, quiet: int = 200, turns: int = 200_000):
    """
    Let the reactor run until the node has read nothing from C{proto}'s
    peer for C{quiet} turns (it stopped reading, or read everything).

    @return: the most output the node held buffered for that peer.
    """
    most, last, still = 0, -1, 0
    for _ in range(turns):
        await deferLater(reactor, 0, lambda: None)
        most = max(most, buffered(proto.transport))
        if proto.bytes_in == last:
            still += 1
            if still >= quiet:
                break
        else:
            last, still = proto.bytes_in, 0
    return most


class FloodTests(TestCase):
    timeout = 120

    #: The bound the node must keep: its pause threshold plus the answers
    #: to what one socket read can hold.
    BOUND = backlog.READ_PAUSE_AT + 2 * MiB

    async def test_requests_whose_answers_are_never_read(self):
        """
        A peer (over TLS) sends GETs for files the node does not have and
        PINGs, far more than the node's bound in answers, and never reads:
        the node's buffered output for it stays under the bound (it stops
        reading from the peer instead), an honest node meanwhile connects
        and fetches at once, and when the flooder goes nothing is left.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        attacker.hello()
        await _until(lambda: attacker.identity.node_id in target.node.connections, target.node)
        proto = target.node.connections[attacker.identity.node_id]
        attacker.transport.pauseProducing()  # never reads again
        refused = framed(wire.Get(transfer=1, path="no/such/file", hash="0" * 64, offset=0))
        pings = framed(wire.Ping(7))
        flood = refused * 40_000 + pings * 800_000  # ~ 14 MiB of answers
        attacker.send(flood)

        most = await until_still(proto)
        self.assertLess(most, self.BOUND)
        self.assertLess(proto.bytes_in, len(flood))  # it stopped reading
        self.assertTrue(proto.paused)

        # Everyone else is served as usual meanwhile.
        await target.honest_fetch()
        attacker.transport.abortConnection()
        await target.check(self, before, attacker, lines=None)


    async def test_gets_for_a_real_file_whose_data_is_never_read(self):
        """
        Over plain TCP: GETs for a file the node has, each with its own
        transfer id, never read -- the first ones become uploads (paused
        once the socket is full), the rest are refused "busy"; what the
        node buffers stays under the bound all the same.
        """
        from .adversary import SHARED_HASH, SHARED_NAME

        target = await Target.start(self, tls=False)
        before = target.baseline()
        attacker = await target.attack()
        attacker.send_frame(wire.Hello(versions=(2,), node_id="ab" * 32, listen_ports=(),
                                       name="mallory"))
        await _until(lambda: "ab" * 32 in target.node.connections, target.node)
        proto = target.node.connections["ab" * 32]
        attacker.transport.pauseProducing()
        flood = b"".join(framed(wire.Get(transfer=i, path=SHARED_NAME, hash=SHARED_HASH,
                                         offset=0)) for i in range(150_000))
        attacker.send(flood)
        most = await until_still(proto)
        self.assertLess(most, self.BOUND)
        self.assertLess(proto.bytes_in, len(flood))
        self.assertTrue(proto.held_for_output)
        attacker.transport.abortConnection()
        await target.check(self, before, attacker, lines=None)


class BufferedTests(SynchronousTestCase):
    def test_plain_transport_without_a_buffer(self):
        """
        A transport that does not buffer (a test's) counts as empty.
        """
        self.assertEqual(buffered(StringTransport()), 0)


class BufferingTransport(StringTransport):
    """
    A transport that holds what is written until the test lets the
    kernel take it (L{drain}), as a socket transport does with a peer that
    does not read: C{dataBuffer} is what L{buffered} measures.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataBuffer = bytearray()
        self.reading = True

    def write(self, data):
        super().write(data)
        self.dataBuffer += data
        if self.producer is not None and len(self.dataBuffer) > 1 << 20:
            self.producer.pauseProducing()

    def drain(self):
        self.dataBuffer = bytearray()
        if self.producer is not None:
            self.producer.resumeProducing()

    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True


class HoldTests(SynchronousTestCase):
    """
    The protocol's side, on a fake clock: stop reading, read again, drop.
    """

    def setUp(self):
        from twisted.internet.address import IPv4Address

        from .helpers import capture_logs, make_node
        from .test_protocol import other_hello

        self.node = make_node(self, "me")
        self.clock = self.node.clock
        self.logs = capture_logs(self)
        self.proto = self.node.factory.buildProtocol(None)
        self.transport = BufferingTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 12345),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(framed(other_hello()))
        self.assertIsNotNone(self.proto.scheduler)

    def pongs(self):
        data, out, pos = self.transport.value(), 0, 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 4], "big")
            out += data[pos + 4] == wire.PONG
            pos += 4 + n
        return out

    def test_stops_reading_then_reads_again(self):
        """
        Past the threshold no more frames are handled and the socket is no
        longer read; once the output has drained, the frames that were
        held are handled and reading goes on.
        """
        count = backlog.READ_PAUSE_AT // 13 + 1000  # a PONG is 13 bytes
        self.proto.dataReceived(framed(wire.Ping(1)) * count)
        self.assertTrue(self.proto.held_for_output)
        self.assertFalse(self.transport.reading)
        handled = self.pongs()
        self.assertLess(handled, count)
        self.assertLess(buffered(self.transport), backlog.READ_PAUSE_AT + 13)
        self.transport.drain()
        self.assertFalse(self.proto.held_for_output)
        self.assertTrue(self.transport.reading)
        self.assertEqual(self.pongs(), count)
        self.assertFalse(self.transport.disconnecting)

    def test_dropped_far_past_the_threshold(self):
        """
        Output we send unasked can still grow while we do not read: past
        DROP_AT the peer is dropped, with one line saying why.
        """
        self.transport.dataBuffer = bytearray(backlog.DROP_AT - 5)
        self.proto.send(wire.Ping(1))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len([line for line in self.logs() if "does not read" in line]), 1)

    def test_idle_drop_says_it_does_not_read(self):
        """
        A peer held for its backlog that never reads is dropped by the idle
        check, which says so (its silence is ours).
        """
        self.proto.dataReceived(framed(wire.Ping(1)) * (backlog.READ_PAUSE_AT // 13 + 10))
        self.assertTrue(self.proto.held_for_output)
        self.clock.advance(self.node.limits.idle_timeout + 1)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue([line for line in self.logs()
                         if "it does not read what we send: our output to it has been backed up"
                          in line], self.logs())
