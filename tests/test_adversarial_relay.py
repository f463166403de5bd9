"""
Adversarial suite, family "Connections" and "Sizes and integrity" of
threats.md, on real processes: faults on the wire between two C{twistd -n
p2pshare} nodes, injected by the relay of L{tests.relay} ("peers vanishing
mid-transfer", corruption, a slow link).

The receiver B dials the sender A through the relay (C{--peer
127.0.0.1:RELAY}); the relay damages the first connection only, so a
reconnection gets a clean link.  B's sync learns the file from A's INDEX
and fetches it block by block (protocol version 3).  Whatever the fault, the file must end
up at B complete and verified, with no partial file left, and both nodes
running with no traceback.

L{RelayTests} first checks the relay itself, in process, against a small
echo server, so the real-process cases rest on a relay known to work.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from blake3 import blake3

# The module, not its classes: trial would collect and run its tests again here.
from . import test_twistd as base
from .relay import Fault, Relay

MiB = 1024 * 1024

#: Bound on the in-process waits.
WAIT = 10

#: Seconds for a node's first scan, or a file to cross the faulty link.
SYNC_TIMEOUT = 20.0

#: The prefix of a partial download's name (beside its destination).
PARTIAL_PREFIX = ".p2pshare-part-"

# The log lines of a version 2 node these cases wait for (sync.py and
# fetcher.py).
#: A scan that recorded files (a file just written is recorded by the scan
#: after the first, once it has been stable for a moment).
SCANNED = re.compile(r"(first|share) scan: [1-9]\d* new or changed, ")


#: The receiver is back in step: the file it fetched is in place.
IN_STEP = re.compile(r"in step with peers: applied \d+ changes, fetched (?P<files>\d+) files"
                     r" \((?P<bytes>\d+) bytes\)")

#: Blocks of the files these cases move (8 MiB and less: 128 KiB), and the
#: most a download has asked and not received at once (a quarter of the
#: file: swarm.DEPTH_SHARE).
BLOCK = 128 * 1024
IN_FLIGHT = 2 * MiB


def peer_text(node) -> str:
    """
    How C{node} is named in its peers' log lines: "NAME (ID...) at HOST:PORT".
    """
    return rf"{re.escape(node.name)} \({node.node_id[:12]}\) at \S+"


def fetched_line(path: str, source) -> str:
    return (rf"fetched {re.escape(path)} \((?P<size>\d+) bytes\) from {peer_text(source)}"
            rf" \(\d+ blocks\) at [\d.]+ MiB/s$")


def write_random_file(path: str, size: int) -> str:
    """
    Write C{size} random bytes to C{path}, 1 MiB at a time; return their
    BLAKE3 hex digest.
    """
    hasher = blake3()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            hasher.update(block)
            f.write(block)
    return hasher.hexdigest()


def hash_file(path: str) -> str:
    hasher = blake3()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            hasher.update(block)
    return hasher.hexdigest()


class _Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class _Client(Protocol):
    def __init__(self, expect: int = 0):
        self.received = bytearray()
        self.expect = expect
        self.enough: Deferred = Deferred()
        self.lost: Deferred = Deferred()

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.expect and not self.enough.called:
            self.enough.callback(bytes(self.received))

    def connectionLost(self, reason):
        self.lost.callback(reason.value)


class RelayTests(TestCase):
    """
    The relay's faults, each against an echo server on 127.0.0.1.
    """

    timeout = 60

    async def relay_to_echo(self, **faults) -> Relay:
        factory = Factory.forProtocol(_Echo)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        relay = Relay(port.getHost().port, **faults)
        await relay.start(self)
        return relay

    async def client(self, relay: Relay, expect: int) -> _Client:
        client = _Client(expect)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", relay.port), client)
        self.addCleanup(lambda: client.transport.connected and client.transport.abortConnection())
        return client

    async def test_clean(self):
        """
        Without faults every byte comes back unchanged.
        """
        relay = await self.relay_to_echo()
        data = os.urandom(300_000)
        client = await self.client(relay, len(data))
        client.transport.write(data)
        self.assertTrue(await client.enough.addTimeout(WAIT, reactor) == data)
        self.assertEqual(relay.events, [])

    async def test_flip(self):
        """
        C{flip_at=N, bit=B} inverts exactly that bit, once.
        """
        relay = await self.relay_to_echo(to_client=Fault(flip_at=1000, bit=3))
        data = bytes(5000)
        client = await self.client(relay, len(data))
        client.transport.write(data)
        got = await client.enough.addTimeout(WAIT, reactor)
        self.assertEqual(len(got), len(data))
        self.assertEqual([i for i in range(len(got)) if got[i] != data[i]], [1000])
        self.assertEqual(got[1000], 1 << 3)

    async def test_cut(self):
        """
        C{cut_after=N} forwards exactly N bytes, then closes the connection.
        """
        relay = await self.relay_to_echo(to_client=Fault(cut_after=777))
        client = await self.client(relay, 10**9)
        data = os.urandom(5000)
        client.transport.write(data)
        await client.lost.addTimeout(WAIT, reactor)
        self.assertTrue(bytes(client.received) == data[:777])
        self.assertEqual(relay.events, ["to_client: cut after 777 bytes"])

    async def test_stall(self):
        """
        C{stall_after=N} forwards N bytes and then nothing, keeping the
        connection open; a second connection (not faulty) is clean.
        """
        relay = await self.relay_to_echo(to_client=Fault(stall_after=100))
        client = await self.client(relay, 100)
        client.transport.write(bytes(1000))
        await client.enough.addTimeout(WAIT, reactor)
        await relay.faulted.addTimeout(WAIT, reactor)
        # A round trip on a second, clean connection proves the relay went
        # on reading the first's echo (and dropped it) meanwhile.
        second = await self.client(relay, 1000)
        second.transport.write(bytes(1000))
        await second.enough.addTimeout(WAIT, reactor)
        self.assertEqual(len(client.received), 100)
        self.assertTrue(client.transport.connected)
        self.assertEqual(relay.connections[0].to_client.offset, 1000)

    async def test_trickle(self):
        """
        C{trickle=(K, delay)} delivers everything, at most K bytes a write.
        """
        relay = await self.relay_to_echo(to_client=Fault(trickle=(100, 0.0)))
        data = os.urandom(20_000)
        client = await self.client(relay, len(data))
        client.transport.write(data)
        self.assertTrue(await client.enough.addTimeout(WAIT, reactor) == data)
        self.assertGreaterEqual(relay.connections[0].to_client.writes, 200)


class RelayedTransferTests(TestCase):
    """
    A file crosses a faulty link between two real nodes, and arrives whole.
    """

    timeout = 60

    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    start_node = base.TwistdTests.start_node

    PATH = "blob.bin"

    async def transfer(self, size: int, **faults):
        """
        Start A sharing a random file of C{size} bytes, a relay to A with
        C{faults}, and B dialling A through the relay; return A, B, the
        relay, the file's digest and B's share.
        """
        root = tempfile.mkdtemp(prefix="p2ptwisted-relay-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        a_share = os.path.join(root, "a")
        os.makedirs(a_share)
        digest = write_random_file(os.path.join(a_share, self.PATH), size)
        a = await self.started(self.start_node("A", share=a_share))
        await a.wait_for(SCANNED, timeout=SYNC_TIMEOUT)
        relay = Relay(a.port, **faults)
        relay_port = await relay.start(self)
        b_share = os.path.join(root, "b")
        b = self.start_node("B", share=b_share, options=["--peer", f"127.0.0.1:{relay_port}"])
        await self.started(b)
        return a, b, relay, digest, b_share

    async def arrived(self, b, b_share: str, digest: str, size: int) -> None:
        """
        B placed the file (it says it is in step) whole and verified, and
        left no partial file.
        """
        await b.wait_for(IN_STEP, timeout=SYNC_TIMEOUT)
        self.assertEqual(hash_file(os.path.join(b_share, self.PATH)), digest)
        self.assertEqual(os.path.getsize(os.path.join(b_share, self.PATH)), size)
        leftovers = [n for n in os.listdir(b_share) if n.startswith(PARTIAL_PREFIX)]
        self.assertEqual(leftovers, [], b.output())

    def no_errors(self, *nodes) -> None:
        for node in nodes:
            self.assertTrue(node.running, node.output())
            self.assertEqual(node.matching(r"Traceback|Unhandled|CRITICAL"), [], node.output())

    async def resumed(self, a, b, size: int):
        """
        B's download was interrupted and resumed: one "interrupted" line
        saying how much was kept, one "fetched" line for the whole file,
        and what B received in all is the file plus at most what was on
        its way at the cut: the verified blocks were not fetched again.
        Returns the bytes kept.
        """
        path = re.escape(self.PATH)
        interrupted = await b.wait_for(
            rf"fetching {path} from {peer_text(a)} interrupted; (?P<kept>\d+) bytes kept",
            timeout=SYNC_TIMEOUT)
        kept = int(interrupted.group("kept"))
        self.assertLess(kept, size, b.output())
        self.assertEqual(kept % BLOCK, 0, b.output())
        got = await b.wait_for(fetched_line(self.PATH, a), timeout=SYNC_TIMEOUT)
        self.assertEqual(int(got.group("size")), size)
        in_step = await b.wait_for(IN_STEP, timeout=SYNC_TIMEOUT)
        self.assertLessEqual(int(in_step.group("bytes")), size + IN_FLIGHT, b.output())
        self.assertEqual(len(b.matching(rf"fetching {path} .*interrupted")), 1, b.output())
        return kept

    async def test_bit_flip_mid_transfer(self):
        """
        One bit flipped in the TLS stream from A to B, 3 MiB in (inside the
        file's data): TLS's integrity check catches it, B's connection to
        A ends with one line naming A and the TLS error, B redials with
        backoff, keeps the blocks it had verified and fetches the others,
        and the file arrives verified and identical -- the corruption never
        reaches the disk.
        """
        size = 8 * MiB
        a, b, relay, digest, b_share = await self.transfer(
            size, to_client=Fault(flip_at=3 * MiB, bit=5))
        await relay.faulted.addTimeout(base.EVENT_TIMEOUT, reactor)
        await self.resumed(a, b, size)
        await self.arrived(b, b_share, digest, size)
        drops = b.matching(rf"{peer_text(a)} left: (?P<why>.*)$")
        tls_drops = [d for d in drops
                     if re.search(r"(?i)decrypt|bad record mac|SSL|TLS", d.group("why"))]
        self.assertEqual(len(tls_drops), 1, b.output())
        # Until A notices that the relayed connection is gone, the two
        # nodes' redials make duplicate connections, which one side or the
        # other closes: every other connection to A that ended in a "left"
        # line ended after A's "duplicate" error (one B closed itself says
        # "closing ...: a preferred connection"); nothing else.
        duplicates = b.matching(rf"{peer_text(a)} reports error duplicate")
        self.assertLessEqual(len(drops) - 1, len(duplicates), b.output())
        self.assertEqual(relay.events, [f"to_client: flipped bit 5 of byte {3 * MiB}"])
        self.no_errors(a, b)

    async def test_cut_mid_transfer(self):
        """
        The link from A to B is cut (both sides aborted) 2 MiB into the
        stream: B keeps the blocks it verified, redials, fetches only the
        others, and the file arrives verified.
        """
        size = 8 * MiB
        a, b, relay, digest, b_share = await self.transfer(
            size, to_client=Fault(cut_after=2 * MiB))
        await relay.faulted.addTimeout(base.EVENT_TIMEOUT, reactor)
        kept = await self.resumed(a, b, size)
        self.assertLess(kept, 2 * MiB)
        await self.arrived(b, b_share, digest, size)
        self.assertEqual(len(b.matching(rf"{peer_text(a)} left: ")), 1, b.output())
        self.no_errors(a, b)

    async def test_flipped_bit_costs_one_block_from_another_source(self):
        """
        Without TLS, nothing below the blocks notices a flipped bit: a relay
        flips one bit in the stream from A to B while B takes a file from A
        (through the relay) and from C (directly), which hold the same
        bytes.  The block it lands in fails its digest; B says which peer
        sent it, asks another source for that block, and the file arrives
        verified, having cost one block more than its size.
        """
        size = 32 * MiB
        root = tempfile.mkdtemp(prefix="p2ptwisted-relay-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        plain = ["--no-tls"]
        a_share, c_share, b_share = (os.path.join(root, n) for n in "acb")
        os.makedirs(a_share)
        os.makedirs(c_share)
        digest = write_random_file(os.path.join(a_share, self.PATH), size)
        shutil.copy2(os.path.join(a_share, self.PATH), os.path.join(c_share, self.PATH))
        # A and C do not know each other (nor, so, tell B the other's own
        # address): B reaches A only through the relay.
        a = await self.started(self.start_node("A", share=a_share, options=plain))
        c = await self.started(self.start_node("C", share=c_share, options=plain))
        await a.wait_for(SCANNED, timeout=SYNC_TIMEOUT)
        await c.wait_for(SCANNED, timeout=SYNC_TIMEOUT)
        relay = Relay(a.port, to_client=Fault(flip_at=2 * MiB + 12345, bit=3))
        relay_port = await relay.start(self)
        b = await self.started(self.start_node(
            "B", share=b_share, options=plain + ["--peer", f"127.0.0.1:{relay_port}",
                                                 "--peer", f"127.0.0.1:{c.port}"]))
        try:
            await relay.faulted.addTimeout(base.EVENT_TIMEOUT, reactor)
        except Exception:
            self.fail("the relay never flipped a bit\n" + b.output())
        bad = await b.wait_for(rf"{peer_text(a)} sent a bad copy of block \d+ of"
                               rf" {re.escape(self.PATH)}: digest ", timeout=SYNC_TIMEOUT)
        self.assertIn("asking another source", bad.string)
        in_step = await b.wait_for(IN_STEP, timeout=SYNC_TIMEOUT)
        await self.arrived(b, b_share, digest, size)
        self.assertEqual(int(in_step.group("bytes")), size + BLOCK, b.output())
        self.no_errors(a, b, c)

    async def test_trickling_link(self):
        """
        Both directions trickle through the relay in 1500-byte writes, one
        per millisecond at best (TLS records and frames split everywhere):
        the transfer completes on the one connection, without a drop or a
        resume, and the file arrives verified.
        """
        size = 1 * MiB
        trickle = Fault(trickle=(1500, 0.001))
        a, b, relay, digest, b_share = await self.transfer(
            size, to_client=trickle, to_target=Fault(trickle=(1500, 0.001)))
        await b.wait_for(fetched_line(self.PATH, a), timeout=SYNC_TIMEOUT)
        await self.arrived(b, b_share, digest, size)
        self.assertEqual(len(relay.connections), 1)
        pipe = relay.connections[0].to_client
        self.assertGreaterEqual(pipe.writes, size // 1500, "the link did not trickle")
        self.assertEqual(b.matching(r" left: |interrupted|resuming|dropping|failed"), [],
                         b.output())
        self.no_errors(a, b)
