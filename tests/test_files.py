"""
Tests for L{p2ptwisted.files} (with L{p2ptwisted.transfer} and
L{p2ptwisted.share} underneath): files moving between nodes joined in
memory on a fake clock, faults injected into the byte stream between them,
hostile names on both the serving and the receiving side, and one slow
reader over real TCP on 127.0.0.1.

In memory, every connection gets TCP-like back-pressure (see L{throttle}):
iosim's transport never pauses its producer, so without it a node's upload
scheduler would write a whole file in one reactor turn and no two transfers
could ever be seen in flight together.
"""

import json
import os
import random
import secrets
import stat
import struct
import threading

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import limits
from p2ptwisted import files as files_module
from p2ptwisted import wire
from p2ptwisted.share import PARTIAL_PREFIX, conflict_name, new_hasher
from p2ptwisted.tap import Options, makeService
from p2ptwisted.transfer import SMALL_FILE, partial_name

from .helpers import capture_logs, first_pause, first_scan, link, make_node, until_settled

MiB = 1024 * 1024

#: Bytes an in-memory transport buffers before it pauses its producer.
WINDOW = 256 * 1024

#: Upper bound on pump steps in one L{Mesh.run}, so a livelock fails
#: instead of hanging.
MAX_STEPS = 20000


# ---------------------------------------------------------------------------
# Helpers


def content(seed, size):
    return random.Random(seed).randbytes(size)


def content_hash(data):
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def write_file(root, path, data, mtime_ns=None):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(full, ns=(mtime_ns, mtime_ns))
    return full


def read_file(root, path):
    with open(os.path.join(root, *path.split("/")), "rb") as f:
        return f.read()


def names_in(root):
    """
    Every non-directory under C{root}, as relative paths (links, FIFOs and
    partial downloads included).
    """
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return found


def snapshot(root, exclude=()):
    """
    Everything under C{root} (not following links): type, size and content
    hash of each entry, except under the directories in C{exclude}.
    """
    exclude = [os.path.abspath(e) for e in exclude]
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.path.abspath(os.path.join(dirpath, d)) not in exclude]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    digest = content_hash(f.read())
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(full)
            result[os.path.relpath(full, root)] = (stat.S_IFMT(st.st_mode), st.st_size, digest)
    return result


def framed(message_or_frame):
    frame = (message_or_frame if isinstance(message_or_frame, bytes)
             else wire.encode_frame(message_or_frame))
    return struct.pack("!I", len(frame)) + frame


def read_frames(data):
    messages = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        messages.append(wire.decode_frame(data[4 : 4 + length]))
        data = data[4 + length :]
    return messages


def control_frame(type_byte, body):
    """
    A raw JSON control frame: lets a test send what the encoder would
    never produce on its own.
    """
    return bytes((type_byte,)) + json.dumps(body).encode("utf-8")


def throttle(pump, limit=WINDOW):
    """
    Give both fake transports of an iosim pump TCP-like back-pressure: a
    registered streaming producer is paused once more than C{limit} bytes
    wait to be delivered, and resumed when the pump takes them -- what a
    real TCP transport does with its send buffer.
    """
    for io in (pump.clientIO, pump.serverIO):
        _throttle(io, limit)


def _throttle(io, limit):
    write, get = io.write, io.getOutBuffer
    state = {"buffered": 0, "paused": False}

    def throttled_write(data):
        write(data)
        if io.disconnecting:
            return
        state["buffered"] += len(data)
        if io.producer is not None and io.streamingProducer and state["buffered"] > limit:
            state["paused"] = True
            io.producer.pauseProducing()

    def throttled_get():
        data = get()
        state["buffered"] = 0
        if state["paused"] and io.producer is not None:
            state["paused"] = False
            io.producer.resumeProducing()
        return data

    io.write = throttled_write
    io.getOutBuffer = throttled_get


def tap(io, edit):
    """
    See (and optionally change) every frame a fake transport carries:
    C{edit(frame)} gets each frame (type byte and body) and returns the
    frame to deliver instead.
    """
    get = io.getOutBuffer
    held = bytearray()

    def tapped():
        data = get()
        if data:
            held.extend(data)
        out = []
        while len(held) >= 4:
            (length,) = struct.unpack("!I", held[:4])
            if len(held) < 4 + length:
                break
            frame = edit(bytes(held[4 : 4 + length]))
            out.append(struct.pack("!I", len(frame)) + frame)
            del held[: 4 + length]
        return b"".join(out) or None

    io.getOutBuffer = tapped


def record_gets(io):
    """
    The GET messages a fake transport carries, as a list that grows.
    """
    gets = []

    def edit(frame):
        if frame[0] == wire.GET:
            gets.append(wire.decode_frame(frame))
        return frame

    tap(io, edit)
    return gets


def sever(pump, why="connection reset by the test"):
    """
    The network between the two ends of C{pump} fails: bytes in flight are
    lost and both ends see the connection lost.
    """
    for io in (pump.clientIO, pump.serverIO):
        io.stream.clear()
        io.disconnectReason = ConnectionLost(why)
        io.disconnecting = True
        io.disconnected = True
    pump.clientIO.reportDisconnect()
    pump.serverIO.reportDisconnect()


class Mesh:
    """
    Nodes on one fake clock, joined by throttled in-memory connections.
    """

    def __init__(self, testcase):
        self.test = testcase
        self.reactor = MemoryReactorClock()
        self.pumps = []

    def node(self, name, **kwargs):
        return make_node(self.test, name, reactor=self.reactor, **kwargs)

    def link(self, dialer, listener, limit=WINDOW):
        client, server, pump = link(dialer, listener)
        throttle(pump, limit)
        self.pumps.append(pump)
        return client, server, pump

    def step(self, each=None):
        """
        Run what is due now, then move bytes once on every connection.
        Returns whether any bytes moved.
        """
        self.reactor.advance(0)
        if each is not None:
            each()
        moved = False
        for pump in self.pumps:
            if pump.pump(advanceClock=False):
                moved = True
            if each is not None:
                each()
        return moved

    def run(self, until, timeout=60.0, tick=0.1, each=None):
        """
        Step until C{until()} holds, letting fake time pass (C{tick} at a
        time) only while no bytes are moving; fail after C{timeout} fake
        seconds.
        """
        deadline = self.reactor.seconds() + timeout
        for _ in range(MAX_STEPS):
            moved = self.step(each)
            if until():
                return
            if not moved:
                if self.reactor.seconds() >= deadline:
                    self.test.fail(f"condition not met within {timeout} fake seconds")
                self.reactor.advance(tick)
        self.test.fail(f"condition not met within {MAX_STEPS} steps")

    def run_for(self, seconds, each=None):
        end = self.reactor.seconds() + seconds
        self.run(lambda: self.reactor.seconds() >= end, timeout=seconds + 1, each=each)


def partials(node):
    return {n for n in names_in(node.share_dir) if n.rsplit("/", 1)[-1].startswith(PARTIAL_PREFIX)}


# ---------------------------------------------------------------------------
# Syncing between nodes


class BothWaysTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)

    def test_simultaneous_transfers_over_one_connection(self):
        """
        Two nodes fetch from each other at the same time over their one
        connection: both downloads are under way together, and both files
        arrive intact.
        """
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        data_a, data_b = content(1, 3 * MiB), content(2, 3 * MiB)
        write_file(a.share_dir, "a.bin", data_a)
        write_file(b.share_dir, "b.bin", data_b)
        client, server, pump = mesh.link(a, b)
        a.rescan()
        b.rescan()
        overlap = []

        def each():
            a_busy = [d for d in client.downloads.values() if 0 < d.offset < d.entry.size]
            b_busy = [d for d in server.downloads.values() if 0 < d.offset < d.entry.size]
            if a_busy and b_busy:
                overlap.append((a_busy[0].offset, b_busy[0].offset))

        def done():
            return (os.path.exists(os.path.join(a.share_dir, "b.bin"))
                    and os.path.exists(os.path.join(b.share_dir, "a.bin")))

        mesh.run(done, each=each)
        mesh.run_for(1)
        for node in (a, b):
            self.assertEqual(read_file(node.share_dir, "a.bin"), data_a)
            self.assertEqual(read_file(node.share_dir, "b.bin"), data_b)
            self.assertEqual(names_in(node.share_dir), {"a.bin", "b.bin"})
        self.assertTrue(overlap, "the two downloads were never in flight together")
        # Exactly one connection, and no other was even attempted.
        self.assertEqual(a.connections, {b.node_id: client})
        self.assertEqual(b.connections, {a.node_id: server})
        self.assertEqual((a.pending, b.pending), ([], []))
        self.assertEqual(mesh.reactor.tcpClients, [])
        self.assertEqual((client.downloads, server.downloads), ({}, {}))
        self.assertEqual((a.files.wants, b.files.wants), ({}, {}))


class ChainTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)

    def test_files_cross_a_chain(self):
        """
        A - B - C with no A-C connection: a file added on A reaches C, and
        one added on C (in a subdirectory) reaches A, through B.
        """
        mesh = Mesh(self)
        a, b, c = mesh.node("a"), mesh.node("b"), mesh.node("c")
        mesh.link(a, b)
        mesh.link(c, b)
        mesh.run(lambda: len(b.connections) == 2)
        from_a = content(3, 1536 * 1024)
        from_c = content(4, 50_000)
        write_file(a.share_dir, "from_a.bin", from_a)
        a.rescan()
        write_file(c.share_dir, "docs/from_c.txt", from_c)
        c.rescan()

        def done():
            return all(
                os.path.exists(os.path.join(n.share_dir, p))
                for n in (a, b, c) for p in ("from_a.bin", "docs/from_c.txt")
            )

        mesh.run(done)
        mesh.run_for(1)
        for node in (a, b, c):
            self.assertEqual(read_file(node.share_dir, "from_a.bin"), from_a)
            self.assertEqual(read_file(node.share_dir, "docs/from_c.txt"), from_c)
            self.assertEqual(names_in(node.share_dir), {"from_a.bin", "docs/from_c.txt"})
        self.assertEqual(set(a.connections), {b.node_id})
        self.assertEqual(set(c.connections), {b.node_id})


class ConflictTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)

    def test_both_versions_kept_on_both_nodes(self):
        """
        The same path with different content on two nodes: the newer
        version ends up at the path on both, the older one beside it under
        its conflict name on both, and the move is logged.
        """
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        older, newer = b"written on a, first\n", b"written on b, later\n"
        old_mtime, new_mtime = 1_600_000_000 * 10**9, 1_700_000_000 * 10**9
        write_file(a.share_dir, "notes.txt", older, mtime_ns=old_mtime)
        write_file(b.share_dir, "notes.txt", newer, mtime_ns=new_mtime)
        a.rescan()
        b.rescan()
        kept = conflict_name("notes.txt", content_hash(older))
        self.assertEqual(kept, f"notes.conflict-{content_hash(older)[:8]}.txt")
        mesh.link(a, b)
        expected = {"notes.txt", kept}
        mesh.run(lambda: names_in(a.share_dir) == expected == names_in(b.share_dir)
                 and read_file(a.share_dir, "notes.txt") == newer)
        mesh.run_for(2)
        for node in (a, b):
            self.assertEqual(names_in(node.share_dir), expected)
            self.assertEqual(read_file(node.share_dir, "notes.txt"), newer)
            self.assertEqual(read_file(node.share_dir, kept), older)
            self.assertEqual(os.stat(os.path.join(node.share_dir, "notes.txt")).st_mtime_ns,
                             new_mtime)
            self.assertEqual(set(node.share.files), expected)
        lines = [l for l in self.logs() if kept in l]
        self.assertTrue(lines, "no log line names the conflict copy")
        self.assertTrue(any("notes.txt" in l and "kept ours as" in l for l in lines), lines)


# ---------------------------------------------------------------------------
# Faults in the byte stream


class FaultTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.data = content(5, 2 * MiB + 12345)
        write_file(self.b.share_dir, "big.bin", self.data)
        self.b.rescan()
        self.dest = os.path.join(self.a.share_dir, "big.bin")

    def never_wrong(self):
        if os.path.exists(self.dest):
            with open(self.dest, "rb") as f:
                self.assertTrue(f.read() == self.data, "big.bin appeared with wrong content")

    def test_flipped_bit_is_caught_and_fetched_again(self):
        """
        One bit flipped in the first DATA frame of a file: the file never
        appears with the wrong content, the failure is logged, the partial
        file is removed, and after the retry delay the file is fetched again,
        intact.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, server, pump = mesh.link(a, b)
        flipped = []

        def flip(frame):
            if frame[0] == wire.DATA and not flipped:
                (transfer,) = struct.unpack("!I", frame[1:5])
                download = client.downloads.get(transfer)
                if download is not None and download.dest == "big.bin":
                    frame = bytearray(frame)
                    frame[5 + 1000] ^= 0x08
                    flipped.append(transfer)
                    return bytes(frame)
            return frame

        tap(pump.serverIO, flip)
        gets = record_gets(pump.clientIO)

        def failures():
            return [l for l in self.logs() if l.startswith("fetching big.bin") and "failed" in l]

        mesh.run(failures, each=self.never_wrong)
        failed_at = mesh.reactor.seconds()
        self.assertEqual(len(flipped), 1)
        [line] = failures()
        self.assertIn("content hash", line)
        self.assertIn("bad data discarded", line)
        self.assertFalse(os.path.exists(self.dest))
        self.assertEqual(partials(a), set())
        mesh.run(lambda: os.path.exists(self.dest), each=self.never_wrong)
        self.assertGreaterEqual(mesh.reactor.seconds() - failed_at, files_module.RETRY_DELAY)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertEqual([g.offset for g in gets if g.path == "big.bin"], [0, 0])
        self.assertEqual(names_in(a.share_dir), {"big.bin"})
        self.assertEqual(len(failures()), 1)

    def test_interrupted_download_resumes(self):
        """
        The connection drops mid-transfer: the partial file keeps what
        arrived; over a new connection the GET asks for the rest only, and
        the file ends up intact.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, server, pump = mesh.link(a, b)
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()),
                 each=self.never_wrong)
        [download] = client.downloads.values()
        sever(pump)
        mesh.pumps.remove(pump)
        self.assertEqual(a.connections, {})
        [part] = partials(a)
        self.assertEqual(part, partial_name("big.bin", content_hash(self.data)))
        kept = os.path.getsize(os.path.join(a.share_dir, part))
        self.assertGreater(kept, 0)
        self.assertLess(kept, len(self.data))
        self.assertEqual(read_file(a.share_dir, part), self.data[:kept])
        self.assertTrue(any("interrupted" in l and f"{kept} bytes kept" in l for l in self.logs()))
        mesh.run_for(3, each=self.never_wrong)

        client, server, pump = mesh.link(a, b)
        gets = record_gets(pump.clientIO)
        mesh.run(lambda: os.path.exists(self.dest), each=self.never_wrong)
        self.assertEqual([(g.path, g.offset) for g in gets], [("big.bin", kept)])
        self.assertTrue(any(l.startswith("resuming big.bin") and f"at byte {kept} of" in l
                            for l in self.logs()))
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertEqual(names_in(a.share_dir), {"big.bin"})


# ---------------------------------------------------------------------------
# A slow reader over real TCP


class SlowReader(Protocol):
    """
    Sends its frames, then stops reading.
    """

    def __init__(self, frames):
        self.frames = frames
        self.received = 0

    def connectionMade(self):
        self.transport.write(b"".join(framed(f) for f in self.frames))
        self.transport.pauseProducing()

    def dataReceived(self, data):
        self.received += len(data)


class SlowReaderTests(TestCase):
    timeout = 60

    #: Fixed bounds: buffered output in the server's transport, and bytes
    #: the scheduler may push into a connection whose reader has stopped.
    MAX_BUFFERED = 8 * MiB
    MAX_SENT = 24 * MiB

    async def test_slow_reader_is_not_buffered_for(self):
        """
        A peer asks for a 64 MiB file and stops reading: the upload
        scheduler is paused, the server's output buffer stays bounded, and
        only a small part of the file is ever read for it.
        """
        base = self.mktemp()
        share = os.path.join(base, "share")
        os.makedirs(share)
        block = content(6, MiB)
        with open(os.path.join(share, "big.bin"), "wb") as f:
            for i in range(64):
                f.write(block[i:] + block[:i])
        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--share", share,
                              "--no-tls", "--no-discover",
                              "--state", os.path.join(base, "state"), "--name", "server"])
        service = makeService(options, reactor=reactor)
        node = service.getServiceNamed("node")
        scanned = first_scan(node, "big.bin")
        paused = first_pause(self)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        await scanned.addTimeout(20, reactor)
        entry = node.share.files["big.bin"].entry
        self.assertEqual(entry.size, 64 * MiB)

        client_id = secrets.token_hex(32)
        hello = wire.Hello(versions=(1,), node_id=client_id, listen_ports=(), name="slow")
        get = wire.Get(transfer=1, path="big.bin", hash=entry.hash, offset=0)
        reader = SlowReader([wire.encode_frame(hello), wire.encode_frame(get)])
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", node.listen_ports[0])
        await connectProtocol(endpoint, reader)
        self.addCleanup(reader.transport.abortConnection)
        scheduler = await paused.addTimeout(20, reactor)
        proto = node.connections[client_id]
        self.assertIs(proto.scheduler, scheduler)
        transport = proto.transport

        # Let the reactor run until the kernel's buffers are full and the
        # scheduler has stopped making progress.
        still, buffered_max = await until_settled(scheduler, transport)
        self.assertEqual(still, 50, "the scheduler never settled")
        self.assertTrue(scheduler.paused)
        self.assertLess(buffered_max, self.MAX_BUFFERED)
        self.assertLess(scheduler.bytes_sent, self.MAX_SENT)
        self.assertEqual(reader.received, 0)
        self.assertEqual([u.transfer for u in scheduler.uploads], [1])

        lost = proto.when_lost()
        reader.transport.abortConnection()
        await lost.addTimeout(20, reactor)
        await service.stopService()


# ---------------------------------------------------------------------------
# Hostile names


def bounded(testcase, f, fifo=None, seconds=10.0):
    """
    Run C{f} in a thread and fail if it has not returned within C{seconds}
    (a FIFO open that blocks); if it blocks on C{fifo}, open the FIFO's
    other end so the thread can finish.
    """
    result = {}

    def run():
        try:
            result["value"] = f()
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        thread.join(seconds)
        testcase.fail(f"{f!r} blocked for {seconds} seconds")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class ServingHostileNamesTests(SynchronousTestCase):
    """
    What a peer may ask us to serve.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.node = make_node(self, "server")
        self.share = self.node.share_dir
        self.outside = os.path.abspath(self.mktemp())
        os.makedirs(self.outside)
        self.secret = b"outside the share, never to be served\n" * 50
        write_file(self.outside, "secret.txt", self.secret)
        self.public = b"public file\n"
        write_file(self.share, "public.txt", self.public)

    def connect(self):
        proto = self.node.factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 12345),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000 + len(self.node.pending)),
        )
        proto.makeConnection(transport)
        proto.dataReceived(framed(wire.Hello(versions=(1,), node_id=secrets.token_hex(32),
                                             listen_ports=(), name="asker")))
        self.node.clock.advance(0)
        transport.clear()
        self.addCleanup(lambda: proto._lost or proto.connectionLost(Failure(ConnectionLost())))
        return proto, transport

    def ask(self, proto, transport, path, content_hash="ab" * 32, transfer=7):
        body = {"transfer": transfer, "path": path, "hash": content_hash, "offset": 0}
        proto.dataReceived(framed(control_frame(wire.GET, body)))
        self.node.clock.advance(0)
        self.node.clock.advance(0)
        return read_frames(transport.value())

    def test_paths_leaving_the_share_drop_the_connection(self):
        for path in ["../x", "/etc/passwd", "a/../../b", "nul\x00byte", ".p2pshare-part-x",
                     ".p2pshare/node-id", "sub/.p2pshare-part-0123"]:
            before = len(self.logs())
            proto, transport = self.connect()
            frames = self.ask(proto, transport, path)
            self.assertTrue(transport.disconnecting, path)
            self.assertFalse(any(isinstance(m, wire.Data) for m in frames), path)
            new = self.logs()[before:]
            drops = [l for l in new if l.startswith("dropping")]
            self.assertEqual(len(drops), 1, (path, new))
            self.assertIn("path", drops[0])
            self.assertNotIn("\x00", drops[0])
            self.assertFalse([l for l in new if "Traceback" in l], new)

    def test_path_not_in_catalog_is_refused_not_dropped(self):
        self.node.rescan()
        proto, transport = self.connect()
        frames = self.ask(proto, transport, "missing.txt", transfer=42)
        self.assertEqual(frames, [wire.Error(code="not_found", message=frames[0].message,
                                             transfer=42)])
        self.assertFalse(transport.disconnecting)
        # The same connection still serves a real file.
        transport.clear()
        frames = self.ask(proto, transport, "public.txt", content_hash(self.public), transfer=43)
        self.assertEqual(b"".join(bytes(m.payload) for m in frames if isinstance(m, wire.Data)),
                         self.public)
        self.assertEqual(frames[-1], wire.End(transfer=43, size=len(self.public),
                                              hash=content_hash(self.public)))

    def test_symlinks_out_of_the_share_are_not_listed_or_served(self):
        os.symlink(os.path.join(self.outside, "secret.txt"), os.path.join(self.share, "link.txt"))
        os.symlink(self.outside, os.path.join(self.share, "linkdir"))
        self.node.rescan()
        self.assertEqual(set(self.node.share.files), {"public.txt"})
        secret_hash = content_hash(self.secret)
        for path in ("link.txt", "linkdir/secret.txt"):
            proto, transport = self.connect()
            frames = self.ask(proto, transport, path, secret_hash)
            self.assertEqual([(type(m), m.code, m.transfer) for m in frames],
                             [(wire.Error, "not_found", 7)], path)
            self.assertNotIn(self.secret[:30], transport.value())
            self.assertFalse(transport.disconnecting)

    def test_file_replaced_by_symlink_after_cataloguing(self):
        write_file(self.share, "sub/inner.txt", b"inner\n")
        self.node.rescan()
        catalog = {p: f.entry.hash for p, f in self.node.share.files.items()}
        self.assertEqual(set(catalog), {"public.txt", "sub/inner.txt"})
        # The file itself becomes a link ...
        os.unlink(os.path.join(self.share, "public.txt"))
        os.symlink(os.path.join(self.outside, "secret.txt"), os.path.join(self.share, "public.txt"))
        # ... and a directory on the way becomes one.
        os.rename(os.path.join(self.share, "sub"), os.path.join(self.outside, "moved"))
        write_file(self.outside, "inner.txt", self.secret)
        os.symlink(self.outside, os.path.join(self.share, "sub"))
        for path in ("public.txt", "sub/inner.txt"):
            proto, transport = self.connect()
            frames = self.ask(proto, transport, path, catalog[path])
            self.assertEqual(len(frames), 1, (path, frames))
            self.assertIsInstance(frames[0], wire.Error)
            self.assertIn(frames[0].code, ("not_regular", "changed"))
            self.assertEqual(frames[0].transfer, 7)
            self.assertNotIn(self.secret[:30], transport.value())

    def test_fifo_not_listed_and_never_blocks(self):
        fifo = os.path.join(self.share, "pipe")
        os.mkfifo(fifo)
        result = bounded(self, self.node.share.scan, fifo=fifo)
        self.assertNotIn("pipe", result.files)
        self.node.rescan()
        self.assertEqual(set(self.node.share.files), {"public.txt"})
        proto, transport = self.connect()
        frames = bounded(self, lambda: self.ask(proto, transport, "pipe"), fifo=fifo)
        self.assertEqual([(type(m), m.code) for m in frames], [(wire.Error, "not_found")])

        # A catalogued file replaced by a FIFO: refused, without blocking.
        public = os.path.join(self.share, "public.txt")
        os.unlink(public)
        os.mkfifo(public)
        transport.clear()
        frames = bounded(self, lambda: self.ask(proto, transport, "public.txt",
                                                content_hash(self.public), transfer=8),
                         fifo=public)
        self.assertEqual(len(frames), 1, frames)
        self.assertIsInstance(frames[0], wire.Error)
        self.assertIn(frames[0].code, ("not_regular", "changed"))
        self.assertEqual(frames[0].transfer, 8)


#: Catalog entries no node may accept, whatever the peer says.
HOSTILE_PATHS = [
    "../evil",
    "sub/../../evil2",
    "/abs",
    "a\\b",
    "C:x",
    "ctl\x01name",
    "new\nline",
    "esc\x1b[31m",
    "cafe\u0301.txt",  # not NFC
    ".p2pshare-part-x",
    "d/.p2pshare/x",
    "a//b",
    "./dot",
    "trailing/",
    "",
    "lone\ud800surrogate",
]


def hostile_entries(size=100):
    return [{"path": p, "size": size, "mtime": 1, "hash": "ab" * 32} for p in HOSTILE_PATHS]


class ReceivingHostileNamesTests(SynchronousTestCase):
    """
    What a peer may offer us.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.a_base = os.path.dirname(self.a.share_dir)
        self.around = os.path.dirname(self.a_base)

    def outside_snapshot(self):
        return snapshot(self.around, exclude=[self.a.share_dir, self.a.state_dir])

    def offered(self, edit_type):
        """
        Link a to b, replacing b's first frame of C{edit_type} with one that
        also carries the hostile entries; returns the GETs a sends.
        """
        client, server, pump = self.mesh.link(self.a, self.b)
        done = []

        def edit(frame):
            if frame[0] == edit_type and not done:
                done.append(True)
                body = json.loads(frame[1:])
                body["files"] = hostile_entries() + body["files"]
                return control_frame(edit_type, body)
            return frame

        tap(pump.serverIO, edit)
        return record_gets(pump.clientIO), done

    def check_outcome(self, gets, what, good):
        self.assertEqual([g.path for g in gets], [good])
        self.assertEqual(names_in(self.a.share_dir), {good})
        lines = [l for l in self.logs() if "invalid file entries" in l]
        self.assertEqual(lines, [f"ignored {len(HOSTILE_PATHS)} invalid file entries in {what}"
                                 f" from {self.a.connections[self.b.node_id].describe()}"])

    def test_hostile_catalog_entries_ignored(self):
        good = content(7, 300_000)
        write_file(self.b.share_dir, "good.bin", good)
        self.b.rescan()
        before = self.outside_snapshot()
        gets, done = self.offered(wire.CATALOG)
        self.mesh.run(lambda: os.path.exists(os.path.join(self.a.share_dir, "good.bin")))
        self.mesh.run_for(10)
        self.assertEqual(done, [True])
        self.assertEqual(read_file(self.a.share_dir, "good.bin"), good)
        self.check_outcome(gets, "CATALOG", "good.bin")
        self.assertEqual(self.outside_snapshot(), before)

    def test_hostile_have_entries_ignored(self):
        before = self.outside_snapshot()
        gets, done = self.offered(wire.HAVE)
        self.mesh.run(lambda: len(self.a.connections) == 1)
        good = content(8, 10_000)
        write_file(self.b.share_dir, "good.txt", good)
        self.b.rescan()
        self.mesh.run(lambda: os.path.exists(os.path.join(self.a.share_dir, "good.txt")))
        self.mesh.run_for(10)
        self.assertEqual(done, [True])
        self.assertEqual(read_file(self.a.share_dir, "good.txt"), good)
        self.check_outcome(gets, "HAVE", "good.txt")
        self.assertEqual(self.outside_snapshot(), before)

    def make_outside(self):
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        write_file(outside, "precious.txt", b"not to be touched\n")
        return outside

    def test_link_planted_as_destination_directory(self):
        """
        share/sub is a link to a directory outside: fetching sub/x.bin
        writes nothing there.
        """
        outside = self.make_outside()
        os.symlink(outside, os.path.join(self.a.share_dir, "sub"))
        self.a.rescan()
        write_file(self.b.share_dir, "sub/x.bin", content(9, 200_000))
        write_file(self.b.share_dir, "sub/small.txt", b"small\n")
        self.b.rescan()
        before = snapshot(outside)
        self.mesh.link(self.a, self.b)
        self.mesh.run_for(30)
        self.assertEqual(snapshot(outside), before)
        self.assertEqual(names_in(self.a.share_dir), {"sub"})
        self.assertTrue(os.path.islink(os.path.join(self.a.share_dir, "sub")))
        self.assertTrue(any(l.startswith("cannot fetch sub/x.bin now") for l in self.logs()))

    def test_links_planted_at_partial_names(self):
        """
        Links planted where a download's partial file will be written (for a
        large file, written as it arrives; for a small one, written at the
        end) are never followed: they are removed, nothing outside changes,
        and the files arrive intact.
        """
        outside = self.make_outside()
        large, small = content(10, 400_000), content(11, 1000)
        self.assertGreater(len(large), SMALL_FILE)
        write_file(self.b.share_dir, "large.bin", large)
        write_file(self.b.share_dir, "small.bin", small)
        self.b.rescan()
        target = os.path.join(outside, "precious.txt")
        for path, data in (("large.bin", large), ("small.bin", small)):
            os.symlink(target, os.path.join(self.a.share_dir,
                                            partial_name(path, content_hash(data))))
        before = snapshot(outside)
        self.mesh.link(self.a, self.b)
        self.mesh.run_for(30)
        self.assertEqual(snapshot(outside), before)
        self.assertEqual(read_file(self.a.share_dir, "large.bin"), large)
        self.assertEqual(read_file(self.a.share_dir, "small.bin"), small)
        self.assertEqual(partials(self.a), set())

    def test_link_planted_at_destination_file(self):
        """
        share/x.bin is a link to a file outside: the fetched file is kept
        beside it under its conflict name, the outside file is untouched,
        and the file is fetched once -- not again each time something makes
        the node rethink what it wants.
        """
        outside = self.make_outside()
        target = os.path.join(outside, "precious.txt")
        os.symlink(target, os.path.join(self.a.share_dir, "x.bin"))
        self.a.rescan()
        data = content(12, 300_000)
        write_file(self.b.share_dir, "x.bin", data)
        self.b.rescan()
        before = snapshot(outside)
        client, server, pump = self.mesh.link(self.a, self.b)
        gets = record_gets(pump.clientIO)
        kept = conflict_name("x.bin", content_hash(data))
        self.mesh.run(lambda: os.path.exists(os.path.join(self.a.share_dir, kept)))
        self.mesh.run_for(10)
        # Unrelated news from the peer: each makes a rebuild what it wants.
        for i in range(3):
            write_file(self.b.share_dir, f"other{i}.txt", b"other %d\n" % i)
            self.b.rescan()
            self.mesh.run_for(10)
        self.assertEqual(snapshot(outside), before)
        self.assertTrue(os.path.islink(os.path.join(self.a.share_dir, "x.bin")))
        self.assertEqual(os.readlink(os.path.join(self.a.share_dir, "x.bin")), target)
        self.assertEqual(read_file(self.a.share_dir, kept), data)
        for i in range(3):
            self.assertTrue(os.path.exists(os.path.join(self.a.share_dir, f"other{i}.txt")))
        self.assertEqual([g.path for g in gets if g.path == "x.bin"], ["x.bin"])


# ---------------------------------------------------------------------------
# --no-sync


class NoSyncTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)

    def test_fetch_on_request_only(self):
        mesh = Mesh(self)
        a, b = mesh.node("a", sync=False), mesh.node("b")
        one, two = content(13, 700_000), content(14, 2000)
        write_file(b.share_dir, "one.bin", one)
        write_file(b.share_dir, "two.txt", two)
        b.rescan()
        client, server, pump = mesh.link(a, b)
        gets = record_gets(pump.clientIO)
        mesh.run_for(30)
        self.assertEqual(set(a.files.remote[b.node_id]), {"one.bin", "two.txt"})
        self.assertEqual(gets, [])
        self.assertEqual(names_in(a.share_dir), set())

        results = []
        transfer = a.files.fetch("one.bin")
        transfer.done.addBoth(results.append)
        mesh.run(lambda: results)
        self.assertEqual(results, ["one.bin"])
        self.assertEqual((transfer.state, transfer.done_bytes), ("done", len(one)))
        self.assertIn(transfer, a.files.transfers())
        self.assertEqual(read_file(a.share_dir, "one.bin"), one)
        mesh.run_for(30)
        self.assertEqual(names_in(a.share_dir), {"one.bin"})
        self.assertEqual([g.path for g in gets], ["one.bin"])

        self.assertRaises(LookupError, a.files.fetch, "nobody-has-this")


# ---------------------------------------------------------------------------
# Rescans


class RescanTests(SynchronousTestCase):
    def test_rescan_requested_during_a_scan(self):
        """
        A rescan asked for while a scan is running (the watcher does this
        whenever the share changes during a scan) runs once more after it,
        and the Deferred it returned fires -- it does not start an endless
        chain of scans.
        """
        scans = []

        def run_blocking(f):
            d = Deferred()
            scans.append((f, d))
            return d

        node = make_node(self, "a", run_blocking=run_blocking)
        self.assertEqual(len(scans), 1)  # the start-up scan, still running
        write_file(node.share_dir, "new.txt", b"new\n")
        results = []
        node.rescan().addBoth(results.append)
        ran = 0
        while scans and ran < 10:
            f, d = scans.pop(0)
            ran += 1
            d.callback(f())
        self.assertEqual(len(scans), 0, "scans keep being started")
        self.assertLessEqual(ran, 2)
        self.assertEqual(len(results), 1)
        self.assertIn("new.txt", node.share.files)


class StallTests(SynchronousTestCase):
    def test_stalled_download_is_given_up_and_resumed(self):
        """
        A peer that keeps the connection alive (it answers PING) but stops
        sending a file: after STALL_TIMEOUT the download is cancelled with
        its partial file kept, and fetched again later from where it
        stopped.
        """
        logs = capture_logs(self)
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        data = content(21, 2 * MiB)
        write_file(b.share_dir, "big.bin", data)
        b.rescan()
        client, server, pump = mesh.link(a, b)
        gets = record_gets(pump.clientIO)
        cancels = []

        def note_cancel(frame):
            if frame[0] == wire.CANCEL:
                cancels.append(json.loads(frame[1:]))
            return frame

        tap(pump.clientIO, note_cancel)
        # Let the first MiB arrive, then the sender goes quiet for the file.
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()))
        scheduler = server.scheduler
        [upload] = list(scheduler.uploads)
        scheduler.uploads.clear()  # still in flight, never sent
        stalled_at = mesh.reactor.seconds()
        mesh.run(lambda: cancels, timeout=limits.STALL_TIMEOUT + 2 * files_module.STALL_CHECK)
        self.assertGreaterEqual(mesh.reactor.seconds() - stalled_at, limits.STALL_TIMEOUT)
        self.assertEqual(a.connections[b.node_id], client)  # the connection lives on
        [kept] = partials(a)
        self.assertGreaterEqual(os.path.getsize(os.path.join(a.share_dir, kept)), MiB)
        self.assertTrue(any("no data for 60 seconds" in line for line in logs()))
        mesh.run(lambda: os.path.exists(os.path.join(a.share_dir, "big.bin")))
        self.assertEqual(read_file(a.share_dir, "big.bin"), data)
        self.assertEqual(len(gets), 2)
        self.assertGreaterEqual(gets[1].offset, MiB)

    def test_empty_file_sent_late(self):
        """
        An empty file whose (empty) DATA frame comes more than a progress
        interval after the GET: no division by zero, the file lands.
        """
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        write_file(b.share_dir, "empty.bin", b"")
        b.rescan()
        client, server, pump = mesh.link(a, b)
        mesh.run(lambda: server.scheduler is not None and server.scheduler.uploads)
        scheduler = server.scheduler
        [upload] = list(scheduler.uploads)
        scheduler.uploads.clear()
        mesh.run_for(files_module.PROGRESS_INTERVAL + 1)
        scheduler.uploads.append(upload)
        scheduler.resumeProducing()
        mesh.run(lambda: os.path.exists(os.path.join(a.share_dir, "empty.bin")))
        self.assertEqual(read_file(a.share_dir, "empty.bin"), b"")
        self.assertEqual(a.connections[b.node_id], client)


class EarlyListTests(SynchronousTestCase):
    def test_list_before_first_scan_is_answered_after_it(self):
        """
        A peer asking for our catalog while our first scan still runs gets
        the whole catalog once the scan is done, not an empty one now.
        """
        pending = []

        def later(f):
            d = Deferred()
            pending.append((f, d))
            return d

        mesh = Mesh(self)
        a = mesh.node("a")
        b = mesh.node("b", run_blocking=later)
        write_file(b.share_dir, "one.txt", b"one")
        b.rescan()
        client, server, pump = mesh.link(a, b)
        mesh.run_for(1)
        self.assertNotIn(b.node_id, a.files.remote)  # no (empty) answer yet
        while pending:
            f, d = pending.pop(0)
            d.callback(f())
        mesh.run(lambda: b.node_id in a.files.remote)
        self.assertEqual(set(a.files.remote[b.node_id]), {"one.txt"})
