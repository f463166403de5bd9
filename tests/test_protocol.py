"""
Tests for L{p2ptwisted.protocol}: framing, the handshake, timeouts, and what
happens to bad input, on in-memory transports.
"""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import limits, wire
from p2ptwisted.logbudget import LogBudget
from p2ptwisted.wire import Hello, Peers, Ping, Pong, encode_frame
from p2ptwisted.wire_index import decode_any_frame as decode_frame

from .helpers import capture_logs, make_node

OTHER_ID = "cd" * 32


def framed(message_or_bytes):
    frame = (
        message_or_bytes if isinstance(message_or_bytes, bytes)
        else encode_frame(message_or_bytes)
    )
    return struct.pack("!I", len(frame)) + frame


def other_hello(versions=(2,), node_id=OTHER_ID):
    return Hello(versions=versions, node_id=node_id, listen_ports=(23456,), name="other")


def read_frames(data):
    """
    Split what a transport received into decoded messages.
    """
    messages = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        messages.append(decode_frame(data[4 : 4 + length]))
        data = data[4 + length :]
    return messages


class ProtocolTestMixin:
    def setUp(self):
        self.node = make_node(self, "me")
        self.clock = self.node.clock
        self.logs = capture_logs(self)

    def connect(self):
        proto = self.node.factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 12345),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        )
        proto.makeConnection(transport)
        return proto, transport

    def drops(self):
        return [line for line in self.logs() if line.startswith("dropping")]


class HandshakeTests(ProtocolTestMixin, SynchronousTestCase):
    def test_hello_sent_first(self):
        proto, transport = self.connect()
        [hello] = read_frames(transport.value())
        self.assertEqual(hello, self.node.make_hello())
        self.assertEqual(hello.node_id, self.node.node_id)
        self.assertEqual(hello.listen_ports, tuple(self.node.listen_ports))
        self.assertEqual(hello.name, "me")

    def test_handshake_registers_connection(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        self.assertIs(self.node.connections[OTHER_ID], proto)
        self.assertEqual(proto.version, 2)
        self.assertFalse(transport.disconnecting)

    def test_version_1_peer_refused_with_one_line(self):
        """
        A node from before versioned sync (protocol version 1 only) gets an
        ERROR that says what to do, and the close is logged in one line.
        """
        proto, transport = self.connect()
        transport.clear()
        proto.dataReceived(framed(other_hello(versions=(1,))))
        [error] = read_frames(transport.value())
        self.assertEqual(error.code, "version")
        self.assertIn("peer speaks [1]", error.message)
        self.assertIn("from before versioned sync; upgrade it", error.message)
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(OTHER_ID, self.node.connections)
        closing = [line for line in self.logs() if line.startswith("closing")]
        self.assertEqual(len(closing), 1)
        self.assertIn("upgrade it", closing[0])

    def test_index_hello_sent_after_handshake(self):
        """
        Once HELLOs are exchanged, the node says what it holds of the
        peer's index (nothing yet: a first contact).
        """
        proto, transport = self.connect()
        transport.clear()
        proto.dataReceived(framed(other_hello()))
        [index_hello] = read_frames(transport.value())
        self.assertEqual(index_hello.have_index_id, "")
        self.assertEqual(index_hello.have_sequence, 0)
        self.assertEqual(index_hello.index_id, self.node.folder.index.index_id)

    def test_anything_before_hello_is_dropped(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(Ping(1)))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.drops()), 1)
        self.assertIn("PING before HELLO", self.drops()[0])
        self.assertEqual(self.node.connections, {})

    def test_second_hello_is_dropped(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()) + framed(other_hello()))
        self.assertTrue(transport.disconnecting)
        self.assertIn("second HELLO", self.drops()[0])

    def test_no_common_version(self):
        """
        A peer speaking only versions we do not gets an ERROR saying so and
        a graceful close.
        """
        proto, transport = self.connect()
        transport.clear()
        proto.dataReceived(framed(other_hello(versions=(7, 8))))
        [error] = read_frames(transport.value())
        self.assertEqual(error.code, "version")
        self.assertIn("[7, 8]", error.message)
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(OTHER_ID, self.node.connections)

    def test_error_text_within_limits(self):
        """
        Our own ERROR frames respect the limits we impose on others, whatever
        text the reason carries.
        """
        proto, transport = self.connect()
        transport.clear()
        proto.close("self", "x\n" * 2000)
        [error] = read_frames(transport.value())
        self.assertLessEqual(len(error.message), wire.MAX_ERROR_MESSAGE)

    def test_highest_common_version(self):
        self.patch(wire, "SUPPORTED_VERSIONS", (1, 2, 3))
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello(versions=(2, 3, 9))))
        self.assertEqual(proto.version, 3)

    def test_handshake_timeout(self):
        proto, transport = self.connect()
        self.clock.advance(limits.HANDSHAKE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertIn("no HELLO within", self.drops()[0])

    def test_hello_dripped_byte_by_byte(self):
        proto, transport = self.connect()
        for byte in framed(other_hello()):
            proto.dataReceived(bytes([byte]))
        self.assertIs(self.node.connections[OTHER_ID], proto)


class BadInputTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Each kind of garbage: the connection is aborted, with one log line.
    """

    def assertDropped(self, data, fragment, handshake=True):
        proto, transport = self.connect()
        if handshake:
            proto.dataReceived(framed(other_hello()))
        proto.dataReceived(data)
        self.assertTrue(transport.disconnecting)
        [line] = self.drops()
        self.assertIn(fragment, line)
        return proto, transport

    def test_huge_length_prefix(self):
        """
        A declared length over the limit is refused before any of the body
        is buffered.
        """
        proto, transport = self.assertDropped(
            b"\xff\xff\xff\xff" + b"x" * 10, "exceeds the 262144-byte limit"
        )
        self.assertLess(len(proto._buffer), 100)

    def test_limit_plus_one(self):
        self.assertDropped(struct.pack("!I", wire.MAX_FRAME + 1), "exceeds")

    def test_frame_at_limit_accepted(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        # A frame of exactly MAX_FRAME bytes passes the framing layer and is
        # judged on its content (here: an unknown type).
        proto.dataReceived(framed(b"\x55" + b"x" * (wire.MAX_FRAME - 1)))
        self.assertIn("unknown frame type 0x55", self.drops()[0])

    def test_empty_frame(self):
        self.assertDropped(b"\x00\x00\x00\x00", "empty frame")

    def test_empty_frame_before_hello(self):
        self.assertDropped(b"\x00\x00\x00\x00", "empty frame", handshake=False)

    def test_unknown_type(self):
        self.assertDropped(framed(b"\x99"), "unknown frame type 0x99")

    def test_malformed_body(self):
        self.assertDropped(framed(b"\x10{bad"), "PEERS body is not valid JSON")

    def test_log_line_escapes_peer_text(self):
        proto, transport = self.connect()
        hello = Hello(versions=(2,), node_id=OTHER_ID, listen_ports=(), name="na\u202eme")
        proto.dataReceived(framed(hello))
        proto.dataReceived(framed(b"\x99"))
        [line] = self.drops()
        self.assertIn("na\\u202eme", line)
        self.assertNotIn("\u202e", line)

    def test_nothing_after_drop_is_processed(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        proto.dataReceived(framed(b"\x99") + framed(Ping(5)))
        transport.clear()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(self.drops()), 1)


class LivenessTests(ProtocolTestMixin, SynchronousTestCase):
    def test_ping_answered(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        transport.clear()
        proto.dataReceived(framed(Ping(2**63 + 5)))
        self.assertIn(Pong(2**63 + 5), read_frames(transport.value()))

    def test_ping_after_exactly_the_interval(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        self.clock.advance(limits.PING_INTERVAL - 1)
        proto.dataReceived(framed(Ping(1)))  # the peer is alive: restart the count
        transport.clear()
        self.clock.advance(limits.PING_INTERVAL - 0.5)
        self.assertEqual([m for m in read_frames(transport.value()) if isinstance(m, Ping)], [])
        self.clock.advance(0.5)
        self.assertEqual(len([m for m in read_frames(transport.value()) if isinstance(m, Ping)]), 1)

    def test_idle_peer_pinged_then_dropped(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        self.clock.advance(2.0)  # let the first gossip go out
        transport.clear()
        self.clock.advance(limits.PING_INTERVAL)
        pings = [m for m in read_frames(transport.value()) if isinstance(m, Ping)]
        self.assertEqual(len(pings), 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(limits.IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertIn("silent for", self.drops()[0])

    def test_answering_peer_stays(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        for _ in range(10):
            self.clock.advance(limits.PING_INTERVAL)
            for message in read_frames(transport.value()):
                if isinstance(message, Ping):
                    proto.dataReceived(framed(Pong(message.nonce)))
            transport.clear()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.drops(), [])

    def test_probe_with_a_deadline(self):
        """
        A probe's waiters share one PING; the PONG answers all of them; a
        waiter whose deadline passes first hears False, and the others
        still hear the PONG.
        """
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        transport.clear()
        heard = []
        proto.probe(lambda alive: heard.append(("short", alive)), 1.0)
        proto.probe(lambda alive: heard.append(("long", alive)), 10.0)
        proto.probe(lambda alive: heard.append(("none", alive)))
        [ping] = [m for m in read_frames(transport.value()) if isinstance(m, Ping)]
        self.clock.advance(1.0)
        self.assertEqual(heard, [("short", False)])
        self.assertTrue(proto.probing)
        proto.dataReceived(framed(Pong(ping.nonce)))
        self.assertEqual(heard, [("short", False), ("long", True), ("none", True)])
        self.assertFalse(proto.probing)
        self.clock.advance(10.0)
        self.assertEqual(len(heard), 3)

    def test_check_alive_drops_a_connection_that_does_not_answer(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        proto.check_alive(5.0, "while testing")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn("no answer to a PING within 5 seconds while testing", self.drops()[0])

    def test_check_alive_keeps_a_connection_that_answers(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        transport.clear()
        proto.check_alive(5.0, "while testing")
        [ping] = [m for m in read_frames(transport.value()) if isinstance(m, Ping)]
        proto.dataReceived(framed(Pong(ping.nonce)))
        self.clock.advance(10.0)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.drops(), [])

    def test_timers_cancelled_on_close(self):
        proto, transport = self.connect()
        proto.dataReceived(framed(other_hello()))
        proto.connectionLost(Failure(ConnectionDone()))
        self.node.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SplitTests(ProtocolTestMixin, SynchronousTestCase):
    """
    The framing layer delivers the same messages however the bytes are cut.
    """

    conversation = [
        other_hello(),
        Peers(addresses=(wire.PeerAddress("127.0.0.1", 40001),)),
        Ping(1),
        wire.Error(code="busy", message="x"),
        Ping(2),
    ]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=400), max_size=20))
    def test_valid_conversation_any_split(self, cuts):
        data = b"".join(framed(m) for m in self.conversation)
        proto, transport = self.connect()
        transport.clear()
        points = sorted({c % (len(data) + 1) for c in cuts})
        for start, end in zip([0] + points, points + [len(data)]):
            proto.dataReceived(data[start:end])
        pongs = [m for m in read_frames(transport.value()) if isinstance(m, Pong)]
        self.assertEqual(pongs, [Pong(1), Pong(2)])
        self.assertFalse(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))

    @settings(max_examples=1000, deadline=None)
    @given(
        st.booleans(),
        st.binary(max_size=600),
        st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    )
    def test_random_bytes_any_split(self, handshake, junk, cuts):
        """
        Random bytes, cut anywhere, after or before a handshake: never an
        exception, and either the connection is intact or it was aborted
        with exactly one log line.
        """
        # Each example is a new host as far as the log budget goes: the
        # property is one line per aborted connection (the budget has its
        # own tests, in test_logbudget).
        self.node.log_budget = LogBudget(clock=self.clock)
        proto, transport = self.connect()
        before = len(self.drops())
        if handshake:
            proto.dataReceived(framed(other_hello()))
        points = sorted({c % (len(junk) + 1) for c in cuts})
        for start, end in zip([0] + points, points + [len(junk)]):
            proto.dataReceived(junk[start:end])
        drops = len(self.drops()) - before
        self.assertEqual(drops, 1 if transport.disconnecting else 0)
        proto.connectionLost(Failure(ConnectionDone()))
