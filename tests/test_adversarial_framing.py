"""
Adversarial suite, family "Framing" (threats.md): lengths over the limit,
empty frames, unknown types, truncated or malformed bodies, valid messages
in the wrong order or before HELLO, the same conversation split at every
possible byte boundary, frames dripped slowly -- each against a real node
(TLS unless the case is about plaintext), followed by the invariant check
in L{tests.adversary}; the cases that need a fake clock or every split of
a conversation run in memory and check the invariants that make sense
there.
"""

import json
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import limits, wire
from p2ptwisted.core.index import DIR, FILE, PERM_MASK, Entry
from p2ptwisted.core.versions import MAX_COUNTER, Vector
from p2ptwisted.logbudget import LogBudget
from p2ptwisted.wire_index import (
    Index, IndexHello, decode_any_frame, encode_index_hello, pack_index)

from .adversary import (
    SHARED_BYTES, SHARED_HASH, SHARED_NAME, WAIT, Conversation, Target, content_hash)
from .helpers import capture_logs, make_node


def framed(frame: bytes) -> bytes:
    """
    A frame (type byte and body) with its length prefix.
    """
    return struct.pack("!I", len(frame)) + frame


def message(m) -> bytes:
    return framed(wire.encode_frame(m))


def index_hello(index_id: str = "0123456789abcdef") -> bytes:
    """
    A valid INDEX_HELLO, length prefix included: a fresh index that holds
    nothing of the receiver's.
    """
    return framed(encode_index_hello(IndexHello(index_id=index_id, have_index_id="",
                                                have_sequence=0)))


def registered(messages) -> bool:
    """
    The target has registered the peer: it sent its INDEX_HELLO, which it
    does only for a connection past HELLO.
    """
    return any(isinstance(m, IndexHello) for m in messages)


def lists(messages, path: str) -> bool:
    """
    An INDEX among C{messages} holds a live entry at C{path}.
    """
    return any(isinstance(m, Index) and any(e.path == path and e.live for e in m.entries)
               for m in messages)


class Received:
    """
    What the node sent an attacker, decoded incrementally as it arrives,
    with a way to wait until it holds something.
    """

    def __init__(self, attacker):
        self.attacker = attacker
        self.messages = []
        self._pos = 0
        self._waiters = []
        original = attacker.dataReceived

        def data_received(data):
            original(data)
            self._parse()

        attacker.dataReceived = data_received
        attacker.lost.addCallback(self._lost)
        self._parse()

    def _parse(self):
        data = self.attacker.received
        while len(data) - self._pos >= 4:
            n = int.from_bytes(data[self._pos:self._pos + 4], "big")
            if len(data) - self._pos - 4 < n:
                break
            self.messages.append(decode_any_frame(bytes(data[self._pos + 4:self._pos + 4 + n])))
            self._pos += 4 + n
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(self.messages):
                self._waiters.remove(waiter)
                d.callback(self.messages)

    def _lost(self, result):
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(AssertionError(
                f"connection closed before the awaited frames; got {self.messages!r}"))
        return result

    def wait(self, predicate) -> Deferred:
        if predicate(self.messages):
            d = Deferred()
            d.callback(self.messages)
            return d
        if self.attacker.lost.called:
            raise AssertionError(f"connection already closed; got {self.messages!r}")
        d = Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(WAIT, reactor)

    def of(self, kind):
        return [m for m in self.messages if isinstance(m, kind)]


def pong(nonce):
    return lambda messages: wire.Pong(nonce) in messages


class FramingTests(TestCase):
    """
    Bad framing against a real TLS node: each is dropped with one line, and
    the node keeps every invariant.
    """

    timeout = 60

    async def dropped_after(self, payload, pattern: str, hello: bool = False,
                            tls: bool = True):
        """
        Send C{payload} (bytes, or a function of the attacker giving bytes),
        after a valid HELLO if C{hello}; the node must drop the connection
        with one line matching C{pattern}.
        """
        target = await Target.start(self, tls=tls)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        if hello:
            attacker.hello()
        attacker.send(payload(attacker) if callable(payload) else payload)
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1, pattern=pattern)
        return target, attacker, received

    async def test_length_over_limit(self):
        """
        A declared length over the frame limit is refused before any body.
        """
        await self.dropped_after((wire.MAX_FRAME + 1).to_bytes(4, "big"), r"exceeds")

    async def test_empty_frame(self):
        """
        An empty frame (length 0, not even a type byte) is dropped.
        """
        await self.dropped_after(b"\x00\x00\x00\x00", r"empty frame")

    async def test_unknown_type_after_hello(self):
        """
        An unknown type byte after a valid HELLO is dropped.
        """
        await self.dropped_after(b"\x00\x00\x00\x02\x55\x00", r"unknown|type", hello=True)

    async def test_malformed_json_hello(self):
        """
        A HELLO frame whose body is truncated JSON (the frame itself is
        complete) is a malformed body: drop, one line, nothing sent but (at
        most) the node's own HELLO.
        """
        target, attacker, received = await self.dropped_after(
            framed(b"\x01" + b'{"versions":[1],"node_id":"ab'), r"HELLO body is not valid JSON")
        self.assertEqual([m for m in received.messages if not isinstance(m, wire.Hello)], [])

    async def test_hello_field_of_wrong_type(self):
        """
        A HELLO whose listen_ports is a string instead of an array of
        integers (with the right id, so only the type is wrong) is dropped.
        """
        def payload(attacker):
            body = {"versions": [2], "node_id": attacker.identity.node_id,
                    "listen_ports": "12345", "name": "mallory"}
            return framed(b"\x01" + json.dumps(body).encode())

        await self.dropped_after(payload, r"HELLO field 'listen_ports' has the wrong type")

    async def test_hello_boolean_version(self):
        """
        JSON true is never an integer: a HELLO with versions [true] is
        dropped, not taken for version 1.
        """
        def payload(attacker):
            body = {"versions": [True], "node_id": attacker.identity.node_id,
                    "listen_ports": []}
            return framed(b"\x01" + json.dumps(body).encode())

        await self.dropped_after(payload, r"HELLO field 'versions' has a bad entry")

    async def test_index_hello_before_hello(self):
        """
        A well-formed INDEX_HELLO as the first frame breaks the handshake
        rule: dropped, and no INDEX (nothing of the index) is sent.
        """
        target, attacker, received = await self.dropped_after(
            index_hello(), r"INDEX_HELLO before HELLO")
        self.assertEqual([m for m in received.messages if not isinstance(m, wire.Hello)], [])

    async def test_index_before_hello(self):
        """
        An INDEX offering a file, as the first frame: dropped before any of
        it is stored or planned.
        """
        entry = Entry(path="offered.txt", kind=FILE, size=1, mtime_ns=0, perms=0o644,
                      hash=SHARED_HASH, deleted=False, version=Vector({"ab" * 8: 1}),
                      modified_by="ab" * 8, sequence=1)
        [frame] = pack_index([entry])
        target, attacker, received = await self.dropped_after(
            framed(frame), r"INDEX before HELLO")
        self.assertEqual(target.node.folder.store.remote_for("offered.txt"), {})

    async def test_version_1_frame_after_hello(self):
        """
        A version 1 LIST (type 0x20) after a valid version 2 HELLO -- a peer
        that claims version 2 but speaks 1 -- is an unknown frame type on
        version 2: dropped with one line naming the type.
        """
        await self.dropped_after(b"\x00\x00\x00\x01\x20", r"unknown frame type 0x20",
                                 hello=True)

    async def test_get_before_hello(self):
        """
        A GET for a file the node really shares, with its right hash, sent
        before HELLO: dropped, and not one byte of the file is sent.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        self.assertEqual(target.node.folder.store.get(SHARED_NAME).hash, SHARED_HASH)
        attacker.send_frame(wire.Get(transfer=1, path=SHARED_NAME, hash=SHARED_HASH, offset=0))
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual([m for m in received.messages if not isinstance(m, wire.Hello)], [])
        self.assertNotIn(SHARED_BYTES[:40], bytes(attacker.received))
        await target.check(self, before, attacker, lines=1, pattern=r"GET before HELLO")

    async def test_data_before_hello(self):
        """
        A DATA frame as the first frame (binary, no JSON to reject) is
        dropped like any other frame before HELLO.
        """
        await self.dropped_after(
            message(wire.Data(transfer=1, payload=b"x" * 100)), r"DATA before HELLO")

    async def test_second_hello(self):
        """
        A second HELLO after a valid, accepted one (the node has answered
        with INDEX_HELLO) is dropped, even though it is well-formed and carries the
        same id.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        attacker.hello()
        await received.wait(registered)
        self.assertIn(attacker.identity.node_id, target.node.connections)
        attacker.send(message(wire.Hello(versions=(2,), node_id=attacker.identity.node_id,
                                         listen_ports=(), name="again")))
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1, pattern=r"second HELLO")

    async def test_json_body_over_control_limit(self):
        """
        A PEERS frame with a JSON body one byte over MAX_CONTROL_BODY (well
        under MAX_FRAME) is a malformed body: dropped.
        """
        body = b'{"peers":[],"pad":"' + b"x" * (wire.MAX_CONTROL_BODY - 20) + b'"}'
        self.assertEqual(len(body), wire.MAX_CONTROL_BODY + 1)
        await self.dropped_after(framed(b"\x10" + body), r"PEERS body too long", hello=True)

    async def test_ping_body_of_wrong_length(self):
        """
        A PING whose body is 7 bytes instead of 8 is dropped and not
        answered.
        """
        target, attacker, received = await self.dropped_after(
            framed(b"\x7e" + b"\x01" * 7), r"PING body is 7 bytes", hello=True)
        self.assertEqual(received.of(wire.Pong), [])

    async def test_truncated_frame_then_close_before_hello(self):
        """
        Half a HELLO, then the peer closes: the node forgets the pending
        connection and its half frame, logs no refusal about it (the peer
        left; nothing was refused) and keeps every invariant.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        hello = message(wire.Hello(versions=(2,), node_id=attacker.identity.node_id,
                                   listen_ports=(), name="mallory"))
        attacker.send(hello[: len(hello) // 2])
        attacker.transport.loseConnection()  # sends the half frame, then closes
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=0)
        self.assertNotIn(attacker.identity.node_id, target.node.connections)

    async def test_truncated_frame_then_abort_after_hello(self):
        """
        After a valid HELLO, half a GET frame and then a reset: the node
        ends the registered connection cleanly (no traceback, no refusal
        line, no upload started) and keeps every invariant.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        attacker.hello()
        await received.wait(registered)
        get = message(wire.Get(transfer=3, path=SHARED_NAME, hash=SHARED_HASH, offset=0))
        # One write: the PONG proves the node has read the half GET behind it.
        attacker.send(message(wire.Ping(5)) + get[:-5])
        await received.wait(pong(5))
        attacker.transport.abortConnection()
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual(received.of(wire.Data), [])
        await target.check(self, before, attacker, lines=0)

    async def test_hello_dripped_one_byte_at_a_time(self):
        """
        A valid HELLO dripped one byte at a time with small gaps (each byte
        its own TLS record) is accepted: the node then treats the sender as
        a peer and answers its INDEX_HELLO with an INDEX listing the shared
        file.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        hello = message(wire.Hello(versions=(2,), node_id=attacker.identity.node_id,
                                   listen_ports=(), name="drip"))
        for i in range(len(hello)):
            attacker.send(hello[i:i + 1])
            await deferLater(reactor, 0.002, lambda: None)
        self.assertFalse(attacker.lost.called)
        attacker.send(index_hello())
        await received.wait(lambda ms: lists(ms, SHARED_NAME))
        [entry] = [e for m in received.of(Index) for e in m.entries if e.path == SHARED_NAME]
        self.assertEqual((entry.size, entry.hash), (len(SHARED_BYTES), SHARED_HASH))
        self.assertIn(attacker.identity.node_id, target.node.connections)
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0)

    async def test_frame_exactly_at_limit(self):
        """
        A frame of exactly MAX_FRAME bytes passes the framing layer: the
        attacker offers a file of MAX_DATA_PAYLOAD bytes and sends all of
        it in one DATA frame of MAX_FRAME bytes; the target takes it, the
        file lands verified, and the connection stays up (it answers a
        PING that follows).
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        content = bytes(range(256)) * (wire.MAX_DATA_PAYLOAD // 256) + b"\xaa" * (
            wire.MAX_DATA_PAYLOAD % 256)
        conv.offer(conv.entry("limit.bin", content))
        get = await conv.next(wire.Get)
        frame = bytes([wire.DATA]) + struct.pack("!I", get.transfer) + content
        self.assertEqual(len(frame), wire.MAX_FRAME)
        conv.attacker.send(framed(frame))
        conv.end(get.transfer, len(content), content_hash(content))
        await conv.landed("limit.bin", content)
        await conv.roundtrip()
        with open(os.path.join(target.share, "limit.bin"), "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertFalse(conv.attacker.lost.called)
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=["limit.bin"])

    async def test_frame_one_byte_over_limit(self):
        """
        The same frame one byte longer (MAX_FRAME + 1), sent in full with a
        PING behind it: dropped on the length alone, the PING never
        answered.
        """
        frame = bytes([wire.DATA]) + struct.pack("!I", 77) + b"\xaa" * (wire.MAX_DATA_PAYLOAD + 1)
        self.assertEqual(len(frame), wire.MAX_FRAME + 1)
        target, attacker, received = await self.dropped_after(
            framed(frame) + message(wire.Ping(4242)),
            rf"frame of {wire.MAX_FRAME + 1} bytes exceeds", hello=True)
        self.assertEqual(received.of(wire.Pong), [])

    async def test_tls_client_hello_to_plaintext_node(self):
        """
        A real TLS ClientHello sent to a node running with --no-tls: the
        node drops the connection saying the peer speaks TLS (not a
        misleading "frame too long"), and the TLS handshake never completes.
        """
        target = await Target.start(self, tls=False)
        before = target.baseline()
        attacker = await target.attack(tls=True, handshake=False)
        try:
            await attacker.handshake.addTimeout(WAIT, reactor)
        except Exception:
            pass
        else:
            self.fail("a TLS handshake with a plaintext node completed")
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1,
                           pattern=r"speaks TLS and this node runs with --no-tls")


class InMemoryFramingTests(SynchronousTestCase):
    """
    Framing cases that need every split of a conversation or a fake clock,
    on a node in memory (helpers.make_node) with StringTransports.
    """

    other_id = "cd" * 32

    def setUp(self):
        self.node = make_node(self, "target")
        self.clock = self.node.clock
        self.logs = capture_logs(self)
        self.share_file = os.path.join(self.node.share_dir, "docs", "a.txt")
        os.makedirs(os.path.dirname(self.share_file))
        with open(self.share_file, "wb") as f:
            f.write(b"in-memory share content\n" * 50)
        self.node.rescan()  # synchronous in memory (run_blocking=maybeDeferred)
        self.entry = self.node.folder.store.get("docs/a.txt")

    def connect(self, port=50000):
        proto = self.node.factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 12345),
            peerAddress=IPv4Address("TCP", "127.0.0.1", port),
        )
        proto.makeConnection(transport)
        return proto, transport

    def drops(self):
        return [line for line in self.logs() if line.startswith("dropping")]

    def sent(self, transport):
        out, data = [], transport.value()
        while len(data) >= 4:
            (n,) = struct.unpack("!I", data[:4])
            m = decode_any_frame(data[4:4 + n])
            out.append(("DATA", m.transfer, bytes(m.payload)) if isinstance(m, wire.Data) else m)
            data = data[4 + n:]
        self.assertEqual(data, b"")
        return out

    def conversation(self) -> bytes:
        return b"".join([
            message(wire.Hello(versions=(2,), node_id=self.other_id, listen_ports=(23456,),
                               name="split")),
            index_hello(),
            message(wire.Ping(1)),
            message(wire.Get(transfer=9, path="docs/a.txt", hash=self.entry.hash, offset=0)),
            message(wire.Peers(addresses=(wire.PeerAddress("127.0.0.1", 40001),))),
            message(wire.Error(code="busy", message="just saying")),
            message(wire.Ping(2)),
        ])

    def run_split(self, data, points):
        """
        Feed C{data} cut at C{points}; return what the node sent, then close.
        """
        self.node.log_budget = LogBudget(clock=self.clock)
        proto, transport = self.connect()
        for start, end in zip([0] + points, points + [len(data)]):
            proto.dataReceived(data[start:end])
        # Only now let timers run (the upload scheduler, gossip): how
        # replies to independent frames interleave depends on timing, and
        # this case is about the framing alone.
        for _ in range(5):
            self.clock.advance(0)
        self.assertFalse(transport.disconnecting)
        out = self.sent(transport)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.node.connections, {})
        self.assertEqual(self.node.pending, [])
        return out

    def test_conversation_split_at_every_byte_boundary(self):
        """
        A valid conversation (HELLO, INDEX_HELLO, PING, GET, PEERS, ERROR,
        PING) delivered in two pieces cut at every possible byte boundary,
        and once one byte at a time: the node answers exactly as it does to
        the unsplit stream (its HELLO, INDEX_HELLO, PEERS, INDEX, PONG 1,
        the file's DATA and END, PONG 2), never drops, and its connections
        return to baseline each time.
        """
        data = self.conversation()
        # Once first: from then on the node's INDEX_HELLO says how much of
        # this peer's index it holds, the same in every run.
        self.run_split(data, [])
        reference = self.run_split(data, [])
        kinds = [type(m).__name__ if not isinstance(m, tuple) else m[0] for m in reference]
        for kind in ("Hello", "IndexHello", "Index", "Pong", "DATA", "End"):
            self.assertIn(kind, kinds)
        self.assertTrue(lists(reference, "docs/a.txt"))
        self.assertIn(wire.Pong(1), reference)
        self.assertIn(wire.Pong(2), reference)
        payload = b"".join(m[2] for m in reference if isinstance(m, tuple))
        with open(self.share_file, "rb") as f:
            self.assertEqual(payload, f.read())
        for cut in range(1, len(data)):
            self.assertEqual(self.run_split(data, [cut]), reference, f"cut at {cut}")
        self.assertEqual(self.run_split(data, list(range(1, len(data)))), reference)
        self.assertEqual(self.drops(), [])
        self.assertTrue(self.node.running)

    def test_half_frame_then_silence(self):
        """
        Half a HELLO and then nothing: the handshake timeout drops the
        connection with one line, and the half frame is released.
        """
        proto, transport = self.connect()
        hello = message(wire.Hello(versions=(2,), node_id=self.other_id, listen_ports=(),
                                   name="half"))
        proto.dataReceived(hello[:20])
        self.clock.advance(limits.HANDSHAKE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        [line] = self.drops()
        self.assertIn("no HELLO within", line)
        self.assertIn("127.0.0.1:50000", line)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.node.pending, [])
        self.assertEqual(self.node.connections, {})

    def test_slowloris_hello(self):
        """
        A HELLO dripped one byte per second: bytes keep arriving, but the
        handshake timeout counts from the connection, not from the last
        byte, so the connection is dropped at HANDSHAKE_TIMEOUT with one
        line, before the HELLO completes.
        """
        proto, transport = self.connect()
        hello = message(wire.Hello(versions=(2,), node_id=self.other_id, listen_ports=(),
                                   name="slow"))
        self.assertGreater(len(hello), limits.HANDSHAKE_TIMEOUT + 5)
        for i in range(len(hello)):
            if transport.disconnecting:
                break
            proto.dataReceived(hello[i:i + 1])
            self.clock.advance(1.0)
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(i, limits.HANDSHAKE_TIMEOUT + 1)
        [line] = self.drops()
        self.assertIn("no HELLO within", line)
        self.assertNotIn(self.other_id, self.node.connections)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.node.pending, [])
        self.assertIsNone(proto._timer)


# -- hypothesis: decode_frame is total ----------------------------------------

_hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


def _valid_path(text):
    try:
        wire.check_path(text)
        return True
    except wire.ProtocolError:
        return False


_path = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
    min_size=1, max_size=4,
).map("/".join).filter(_valid_path)
_transfer = st.integers(0, wire.MAX_TRANSFER_ID)
_short = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)
_version = st.dictionaries(_short, st.integers(1, MAX_COUNTER), min_size=1,
                           max_size=4).map(Vector)
_live_file = st.builds(Entry, path=_path, kind=st.just(FILE),
                       size=st.integers(0, wire.MAX_FILE_SIZE),
                       mtime_ns=st.integers(-(2**63), 2**63 - 1), perms=st.integers(0, PERM_MASK),
                       hash=_hex64, deleted=st.just(False), version=_version,
                       modified_by=_short, sequence=st.integers(1, 2**63 - 1))
_no_content = st.builds(Entry, path=_path, kind=st.sampled_from([FILE, DIR]), size=st.just(0),
                        mtime_ns=st.integers(-(2**63), 2**63 - 1),
                        perms=st.integers(0, PERM_MASK), hash=st.just(""),
                        deleted=st.booleans(), version=_version, modified_by=_short,
                        sequence=st.integers(1, 2**63 - 1)).filter(
    lambda e: e.deleted or e.kind == DIR)
_entry = st.one_of(_live_file, _no_content)
_index_id = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)

_messages = st.one_of(
    st.builds(wire.Hello,
              versions=st.lists(st.integers(1, 65535), min_size=1, max_size=16).map(tuple),
              node_id=_hex64,
              listen_ports=st.lists(st.integers(1, 65535), max_size=8).map(tuple),
              name=_text),
    st.builds(wire.Error, code=st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
              message=_text, transfer=st.none() | _transfer),
    st.builds(wire.Peers, addresses=st.lists(
        st.builds(wire.PeerAddress, host=st.sampled_from(["127.0.0.1", "10.1.2.3", "2001:db8::7"]),
                  port=st.integers(1, 65535)), max_size=5, unique=True).map(tuple)),
    st.builds(IndexHello, index_id=_index_id, have_index_id=st.just("") | _index_id,
              have_sequence=st.integers(0, 2**63 - 1), sequence=st.integers(0, 2**63 - 1)),
    st.builds(Index, entries=st.lists(_entry, min_size=1, max_size=3).map(tuple)),
    st.builds(wire.Get, transfer=_transfer, path=_path, hash=_hex64,
              offset=st.integers(0, wire.MAX_FILE_SIZE)),
    st.builds(wire.Data, transfer=_transfer, payload=st.binary(max_size=64)),
    st.builds(wire.End, transfer=_transfer, size=st.integers(0, wire.MAX_FILE_SIZE), hash=_hex64),
    st.builds(wire.Cancel, transfer=_transfer),
    st.builds(wire.Ping, nonce=st.integers(0, 2**64 - 1)),
    st.builds(wire.Pong, nonce=st.integers(0, 2**64 - 1)),
)


def encode_any(m) -> bytes:
    """
    One version 2 frame (type byte and body) for any message.
    """
    if isinstance(m, IndexHello):
        return encode_index_hello(m)
    if isinstance(m, Index):
        [frame] = pack_index(list(m.entries))
        return frame
    return wire.encode_frame(m)


def _decodes_or_protocol_error(frame):
    """
    decode_any_frame(frame) gives a message or raises ProtocolError;
    anything else propagates and fails the property.
    """
    try:
        return decode_any_frame(frame)
    except wire.ProtocolError:
        return None


class DecodeFrameProperties(SynchronousTestCase):
    """
    Hypothesis: whatever bytes a peer frames, wire_index.decode_any_frame
    (every version 2 frame, the index frames included) gives a message or
    raises wire.ProtocolError -- never any other exception.
    """

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400))
    def test_random_bytes_only_protocol_error(self, frame):
        """
        Random byte strings: a message or a ProtocolError.
        """
        _decodes_or_protocol_error(frame)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([0x23, 0x24]), st.binary(max_size=300))
    def test_random_index_bodies_only_protocol_error(self, kind, body):
        """
        Random bodies behind the two index type bytes (which random frames
        rarely start with): a message or a ProtocolError.
        """
        _decodes_or_protocol_error(bytes([kind]) + body)

    @settings(max_examples=500, deadline=None)
    @given(_messages, st.integers(0, 10**6), st.integers(0, 10**6), st.binary(max_size=8),
           st.integers(0, 255))
    def test_cut_valid_frames_only_protocol_error(self, msg, a, b, junk, flip):
        """
        A valid frame decodes back to its message; the same frame cut short,
        with a piece cut out of its middle, with junk spliced in, or with
        one byte changed, gives a message or a ProtocolError only.
        """
        frame = encode_any(msg)
        decoded = decode_any_frame(frame)
        if isinstance(msg, wire.Data):
            self.assertEqual((decoded.transfer, bytes(decoded.payload)),
                             (msg.transfer, msg.payload))
        else:
            self.assertEqual(decoded, msg)
        i, j = sorted((a % (len(frame) + 1), b % (len(frame) + 1)))
        for variant in (frame[:i], frame[:i] + frame[j:], frame[:i] + junk + frame[i:],
                        frame[i:], frame[:i] + bytes([flip]) + frame[i + 1:]):
            _decodes_or_protocol_error(variant)
