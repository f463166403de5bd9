"""
Whole version 2 nodes against hostile peers and a hostile local disk:
what a peer may ask us to serve, what it may make us write, and what
links, FIFOs and odd names planted in the share can make a node do.
Also the timing corners of scanning (a rescan asked during a scan, a
download placed during one, a peer that connects before the first scan
ends).

In memory, on one fake clock, with the L{Mesh} of L{tests.test_exchange};
one slow reader over real TCP on 127.0.0.1, where the kernel's buffers
are what is being tested.
"""

import contextlib
import json
import os
import secrets
import stat
import struct
import threading
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import fetcher as fetcher_module
from p2ptwisted import scanner as scanner_module
from p2ptwisted import wire
from p2ptwisted.downloads import SMALL_FILE, partial_name
from p2ptwisted.folder import WHOLE_KEY
from p2ptwisted.node import Node
from p2ptwisted.peers import PeerBook
from p2ptwisted.tap import Options, makeService
from p2ptwisted.wire_index import INDEX, INDEX_HELLO, IndexHello, encode_index_hello

from .helpers import capture_logs, first_pause, indexed, until_settled
from .test_exchange import (
    Mesh, MiB, all_names, content, content_hash, partials, read_file, record, tap, write_file,
)


# ---------------------------------------------------------------------------
# Helpers


def snapshot(root, exclude=()):
    """
    Everything under C{root} (not following links): type, size and content
    hash (or link target) of each entry, except under C{exclude}.
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


def control_frame(type_byte, body):
    """
    A raw JSON control frame: what the encoder would never produce.
    """
    return bytes((type_byte,)) + json.dumps(body).encode("utf-8")


def past_ns(mesh, seconds=60):
    """
    An mtime safely in the past on the mesh's clock: the scanner does not
    wait for such a file to settle.
    """
    return int((mesh.reactor.seconds() - seconds) * 1e9)


def live_paths(node):
    """
    The paths of the node's index that are live, sorted.
    """
    store = node.folder.store
    return sorted(p for p in store.local_paths() if store.get(p).live)


@contextlib.contextmanager
def never_blocks(testcase, *fifos, seconds=10.0):
    """
    Fail if the code in the block waits on one of C{fifos} (an open or a
    read that waits for a writer): a watchdog thread opens and closes
    their writing ends after C{seconds}, so the test fails instead of
    hanging.  (The block itself runs in the test's thread: the node's
    index may only be used there.)
    """
    done = threading.Event()
    rescued = []

    def watch():
        if done.wait(seconds):
            return
        rescued.append(True)
        while not done.wait(0.1):
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if rescued:
        testcase.fail(f"blocked on a FIFO for more than {seconds} seconds")


class Held:
    """
    A node's C{run_blocking} that holds the work it is given until the
    test runs it, so a test decides what happens while a scan or a
    placement is under way.

    @ivar auto: run work at once (as C{maybeDeferred}) instead of
        holding it, except what C{hold} picks.
    @ivar hold: a predicate on the function: which work to hold even
        while C{auto}.
    """

    def __init__(self, auto=False, hold=lambda f: False):
        self.auto = auto
        self.hold = hold
        self.jobs = []

    def __call__(self, f, *args):
        if self.auto and not self.hold(f):
            return maybeDeferred(f, *args)
        d = Deferred()
        self.jobs.append((f, args, d))
        return d

    def named(self, name):
        return [job for job in self.jobs if getattr(job[0], "__name__", "") == name]

    def run(self, job):
        self.jobs.remove(job)
        f, args, d = job
        maybeDeferred(f, *args).chainDeferred(d)

    def run_all(self, limit=100):
        """
        Run held work (and the work it leads to) until none is left.

        @return: how many jobs ran.
        """
        ran = 0
        while self.jobs and ran < limit:
            self.run(self.jobs[0])
            ran += 1
        return ran


def restart(testcase, mesh, node, **kwargs):
    """
    Stop C{node} (it must have no connections) and start a new node on its
    share and state directories, on the mesh's clock.
    """
    testcase.assertEqual(node.connections, {})
    stopped = []
    node.stopService().addBoth(stopped.append)
    testcase.assertEqual(len(stopped), 1)  # at once: nothing to wait for
    kwargs.setdefault("run_blocking", maybeDeferred)
    again = Node(mesh.reactor, state_dir=node.state_dir, share_dir=node.share_dir,
                 display_name=node.display_name, book=PeerBook(jitter=lambda: 0.0),
                 watch=False, tls=False, **kwargs)
    again.startService()
    testcase.addCleanup(lambda: again.running and again.stopService())
    again.listening_on(node.listen_ports[0])
    return again


# ---------------------------------------------------------------------------
# A slow reader over real TCP


def framed(frame):
    return struct.pack("!I", len(frame)) + frame


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
        scheduler is paused, the node's output buffer stays bounded, and
        only a small part of the file is ever read for it -- a peer cannot
        make us hold a file in memory by not reading.
        """
        base = self.mktemp()
        share = os.path.join(base, "share")
        os.makedirs(share)
        block = content(6, MiB)
        path = os.path.join(share, "big.bin")
        with open(path, "wb") as f:  # noqa: ASYNC230 (before the reactor has work)
            f.writelines(block[i:] + block[:i] for i in range(64))
        os.utime(path, ns=(10**18, 10**18))  # settled: hashed by the first scan
        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--share", share,
                              "--no-tls", "--no-discover",
                              "--state", os.path.join(base, "state"), "--name", "server"])
        service = makeService(options, reactor=reactor, quiet=False)
        node = service.getServiceNamed("node")
        paused = first_pause(self)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        await indexed(node, "big.bin").addTimeout(20, reactor)
        entry = node.folder.store.get("big.bin")
        self.assertEqual(entry.size, 64 * MiB)

        client_id = secrets.token_hex(32)
        hello = wire.Hello(versions=tuple(wire.SUPPORTED_VERSIONS), node_id=client_id,
                           listen_ports=(), name="slow")
        get = wire.Get(transfer=1, path="big.bin", hash=entry.hash, offset=0)
        reader = SlowReader([wire.encode_frame(hello), wire.encode_frame(get)])
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", node.listen_ports[0])
        await connectProtocol(endpoint, reader)
        self.addCleanup(reader.transport.abortConnection)
        scheduler = await paused.addTimeout(20, reactor)
        proto = node.connections[client_id]
        self.assertIs(proto.scheduler, scheduler)

        # Let the reactor run until the kernel's buffers are full and the
        # scheduler has stopped making progress.
        still, buffered_max = await until_settled(scheduler, proto.transport)
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
# What a peer may ask us to serve


class ServingHostileNamesTests(SynchronousTestCase):
    """
    A serves; B's connection sends it raw GETs.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a = self.mesh.node("a")
        self.share = self.a.share_dir
        self.outside = os.path.abspath(self.mktemp())
        self.secret = b"outside the share, never to be served\n" * 50
        self.public = b"public file\n"
        self.mtime = past_ns(self.mesh)
        write_file(self.outside, "secret.txt", self.secret)
        write_file(self.share, "public.txt", self.public, mtime_ns=self.mtime)
        self.b = self.mesh.node("b", sync=False)
        self.transfer = 100

    def scan(self):
        self.a.rescan()
        self.mesh.run(self.a.folder.in_sync)

    def connect(self):
        """
        A new, handshaken connection from B to A: B's end (C{client}), A's
        (C{server}), what A sends on it from now on (C{answers} decoded,
        C{raw} frames), and whether it is C{lost}.
        """
        client, server, pump = self.mesh.link(self.b, self.a)
        self.mesh.run(lambda: server.scheduler is not None and client.scheduler is not None)
        answers = record(pump.serverIO, wire.DATA, wire.END, wire.ERROR)
        raw = []
        tap(pump.serverIO, lambda frame: raw.append(frame) or frame)
        # B asked nothing itself, and would drop A for DATA it never asked
        # for: what answers the test's GETs stops here.
        tap(pump.serverIO, lambda frame: wire.encode_frame(wire.Pong(0))
            if frame[0] in (wire.DATA, wire.END) else frame)
        return SimpleNamespace(client=client, server=server, answers=answers, raw=raw,
                               lost=server.when_lost())

    def ask(self, connection, path, content_hash="ab" * 32):
        """
        Send a GET (its path unchecked) and run until it is answered (END
        or ERROR) or the connection is gone; return the answers.
        """
        self.transfer += 1
        transfer = self.transfer
        body = {"transfer": transfer, "path": path, "hash": content_hash, "offset": 0}
        connection.client.send_frame(control_frame(wire.GET, body))

        def answered():
            return connection.lost.called or any(
                getattr(m, "transfer", None) == transfer and not isinstance(m, wire.Data)
                for m in connection.answers)

        self.mesh.run(answered)
        return [m for m in connection.answers if getattr(m, "transfer", None) == transfer]

    def sent_bytes(self, answers):
        return b"".join(bytes(m.payload) for m in answers if isinstance(m, wire.Data))

    def test_paths_leaving_the_share_drop_the_connection(self):
        """
        A GET naming a path no valid peer would send (outside the share,
        our own names, a NUL) breaks the protocol: the connection is
        dropped with one log line, escaped, and nothing is served.
        """
        self.scan()
        for path in ["../x", "/etc/passwd", "a/../../b", "nul\x00byte", ".p2pshare-part-x",
                     ".p2pshare/identity", "sub/.p2pshare-part-0123", "C:x", "a\\..\\b",
                     "public.txt/", "./public.txt"]:
            before = len(self.logs())
            connection = self.connect()
            answers = self.ask(connection, path, content_hash(self.public))
            self.assertTrue(connection.lost.called, path)
            self.assertEqual(answers, [], path)
            self.assertNotIn(self.b.node_id, self.a.connections)
            new = self.logs()[before:]
            drops = [line for line in new if line.startswith("dropping")]
            self.assertEqual(len(drops), 1, (path, new))
            self.assertIn("path", drops[0])
            self.assertNotIn("\x00", drops[0])
            self.assertFalse([line for line in new if "Traceback" in line], new)

    def test_no_such_version_is_refused_not_dropped(self):
        """
        A valid path with no such version here (nothing there, a
        directory, another hash) is an ordinary refusal: an ERROR naming
        the transfer, and the same connection still serves a real file.
        """
        os.makedirs(os.path.join(self.share, "somedir"))
        self.scan()
        connection = self.connect()
        for path, asked in [("missing.txt", content_hash(b"missing")),
                            ("somedir", content_hash(b"")),
                            ("public.txt", content_hash(b"another version"))]:
            [error] = self.ask(connection, path, asked)
            self.assertEqual((type(error), error.code), (wire.Error, "not_found"), path)
        self.assertFalse(connection.lost.called)
        answers = self.ask(connection, "public.txt", content_hash(self.public))
        self.assertEqual(self.sent_bytes(answers), self.public)
        self.assertEqual(answers[-1], wire.End(transfer=self.transfer, size=len(self.public),
                                               hash=content_hash(self.public)))

    def test_links_are_not_indexed_or_served(self):
        """
        Links are never followed or indexed, wherever they point (outside
        the share, inside it, nowhere), and a GET through one is refused:
        the bytes they lead to never go on the wire.
        """
        write_file(self.share, "dir/inner.txt", b"inner", mtime_ns=self.mtime)
        write_file(self.outside, "sub/more.txt", self.secret + b"more")
        links = {
            "out-file": os.path.join(self.outside, "secret.txt"),
            "out-dir": self.outside,
            "in-file": "public.txt",
            "in-dir": "dir",
            "dangling": os.path.join(self.outside, "nothing"),
            "dir/nested-out": os.path.join(self.outside, "sub"),
        }
        for name, target in links.items():
            os.symlink(target, os.path.join(self.share, *name.split("/")))
        self.scan()
        self.assertEqual(live_paths(self.a), ["dir", "dir/inner.txt", "public.txt"])
        connection = self.connect()
        for path, data in [("out-file", self.secret), ("out-dir/secret.txt", self.secret),
                           ("dir/nested-out/more.txt", self.secret + b"more")]:
            [error] = self.ask(connection, path, content_hash(data))
            self.assertEqual((type(error), error.code), (wire.Error, "not_found"), path)
        self.assertFalse(connection.lost.called)
        self.assertNotIn(self.secret[:30], b"".join(connection.raw))

    def test_replaced_after_indexing_is_refused(self):
        """
        A file indexed, then replaced on disk before a peer asks for it --
        by a link to an identical copy outside (same size and mtime, so
        only refusing to follow links stops it), by a FIFO, a directory,
        with a directory on its way become a link or a file, or simply
        deleted or rewritten -- is refused with an ERROR naming the
        transfer, at once (a FIFO never blocks the node), and nothing of
        what is there now is sent.
        """
        names = ["link.txt", "fifo.txt", "dir.txt", "gone.txt", "grown.txt",
                 "viadirlink/x.txt", "viafile/x.txt"]
        for name in names:
            write_file(self.share, name, self.public, mtime_ns=self.mtime)
        self.scan()
        twin = write_file(self.outside, "twin.txt", self.public, mtime_ns=self.mtime)
        write_file(self.outside, "twindir/x.txt", self.public, mtime_ns=self.mtime)
        # Remove the one good copy left: any DATA now could only come from
        # what replaced a file.
        os.unlink(os.path.join(self.share, "public.txt"))

        def path(name):
            return os.path.join(self.share, *name.split("/"))

        os.unlink(path("link.txt"))
        os.symlink(twin, path("link.txt"))
        os.unlink(path("fifo.txt"))
        os.mkfifo(path("fifo.txt"))
        os.unlink(path("dir.txt"))
        os.mkdir(path("dir.txt"))
        os.unlink(path("gone.txt"))
        write_file(self.share, "grown.txt", self.public + b"more", mtime_ns=self.mtime)
        os.rename(path("viadirlink"), os.path.join(self.outside, "moved"))
        os.symlink(os.path.join(self.outside, "twindir"), path("viadirlink"))
        os.unlink(path("viafile/x.txt"))
        os.rmdir(path("viafile"))
        write_file(self.share, "viafile", b"a file now")
        connection = self.connect()
        for name in names:
            with never_blocks(self, path("fifo.txt")):
                answers = self.ask(connection, name, content_hash(self.public))
            self.assertEqual(len(answers), 1, (name, answers))
            [error] = answers
            self.assertIsInstance(error, wire.Error, name)
            self.assertEqual(error.transfer, self.transfer)
        self.assertFalse(connection.lost.called)

    def test_fifo_is_never_indexed_and_never_blocks(self):
        """
        FIFOs anywhere in the share, even as .p2pignore, are not indexed
        and never block a scan (opening one for reading would wait for a
        writer); a GET for one is refused.
        """
        fifos = [os.path.join(self.share, *name.split("/"))
                 for name in ("pipe", "d/pipe2", ".p2pignore")]
        os.makedirs(os.path.join(self.share, "d"))
        for fifo in fifos:
            os.mkfifo(fifo)
        with never_blocks(self, *fifos):
            self.scan()
            connection = self.connect()
            [error] = self.ask(connection, "pipe", content_hash(b""))
        self.assertEqual(live_paths(self.a), ["d", "public.txt"])
        self.assertEqual((type(error), error.code), (wire.Error, "not_found"))


# ---------------------------------------------------------------------------
# What a peer may make us write


#: Index entry paths no node may accept, whatever the peer says.
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


class ReceivingHostileNamesTests(SynchronousTestCase):
    """
    A fetches from B, whose index (or A's own share) is hostile.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.around = os.path.dirname(os.path.dirname(self.a.share_dir))
        self.outside = os.path.abspath(self.mktemp())
        write_file(self.outside, "precious.txt", b"not to be touched\n")

    def outside_snapshot(self):
        """
        Everything near A's share but the share and A's state: where an
        escaping write would land.
        """
        return snapshot(self.around, exclude=[self.a.share_dir, self.a.state_dir])

    def offer(self, *files):
        for path, data in files:
            write_file(self.b.share_dir, path, data, mtime_ns=past_ns(self.mesh))
        self.b.rescan()
        self.mesh.run(self.b.folder.in_sync)

    def test_hostile_index_entries_dropped_and_counted(self):
        """
        B's INDEX, edited in flight to carry entries under every kind of
        path a node must refuse (each otherwise a copy of a good entry),
        plus one for A's own .p2pignore: the bad ones are dropped and
        counted in one line, the .p2pignore entry is not applied, only the
        good file is fetched, and nothing outside A's share changes.
        """
        good = content(7, 300_000)
        self.offer(("good.bin", good))
        before = self.outside_snapshot()
        client, _, pump = self.mesh.link(self.a, self.b)
        edited = []

        def edit(frame):
            if frame[0] == INDEX and not edited:
                body = json.loads(frame[1:])
                [template] = body["entries"]
                body["entries"] = ([dict(template, path=p) for p in HOSTILE_PATHS]
                                   + [dict(template, path=".p2pignore")] + body["entries"])
                edited.append(body)
                return control_frame(INDEX, body)
            return frame

        tap(pump.serverIO, edit)
        gets = record(pump.clientIO, wire.GET)
        self.mesh.settle(self.a, self.b)
        self.assertEqual(len(edited), 1)
        self.assertEqual(read_file(self.a.share_dir, "good.bin"), good)
        self.assertEqual({g.path for g in gets}, {"good.bin"})
        self.assertEqual(all_names(self.a.share_dir), {"good.bin"})
        self.assertEqual(self.a.folder.store.remote_for(".p2pignore"), {})
        lines = [line for line in self.logs() if "invalid index entries" in line]
        self.assertEqual(lines, [(f"ignored {len(HOSTILE_PATHS)} invalid index entries from"
                                  f" {client.describe()}")])
        self.assertEqual(len(self.a.connections), 1)
        self.assertEqual(self.outside_snapshot(), before)

    def test_link_planted_as_destination_directory(self):
        """
        A's sub is a link to a directory outside; B has a directory sub
        with files: nothing is written through the link (nor is it
        replaced), no partial file is left anywhere, and A says why --
        once, not every few seconds for as long as the link is there.
        """
        os.symlink(self.outside, os.path.join(self.a.share_dir, "sub"))
        self.a.rescan()
        self.offer(("sub/x.bin", content(9, 200_000)), ("sub/small.txt", b"small\n"))
        before = snapshot(self.outside)
        around = self.outside_snapshot()
        self.mesh.link(self.a, self.b)
        later = self.mesh.reactor.seconds() + 60
        self.mesh.run(lambda: self.mesh.reactor.seconds() >= later, timeout=61)
        self.assertEqual(snapshot(self.outside), before)
        self.assertEqual(self.outside_snapshot(), around)
        self.assertEqual(all_names(self.a.share_dir), {"sub"})
        self.assertTrue(os.path.islink(os.path.join(self.a.share_dir, "sub")))
        lines = [line for line in self.logs() if "sub/x.bin" in line]
        self.assertTrue(lines and "in the way" in lines[0], self.logs())
        # The link stays until the user moves it: saying so every few
        # seconds only floods the log.
        self.assertLessEqual(len(lines), 2, lines)

    def test_links_planted_at_partial_names(self):
        """
        Links planted where a download's partial file goes (a large file's,
        written as it arrives, and a small file's, written at the end) --
        symbolic links and hard links to a file outside -- are never
        written through: nothing outside changes, and the files arrive
        intact.
        """
        large, small = content(10, 400_000), content(11, 1000)
        self.assertGreater(len(large), SMALL_FILE)
        self.assertLessEqual(len(small), SMALL_FILE)
        hard_large, hard_small = content(12, 300_000), content(13, 2000)
        self.offer(("large.bin", large), ("small.bin", small),
                   ("hard-large.bin", hard_large), ("hard-small.bin", hard_small))
        # One target per kind of link, so that no check stands in for
        # another (a followed symlink to a file with two links would be
        # caught by the hard link check).
        target = os.path.join(self.outside, "precious.txt")
        for path, data in (("large.bin", large), ("small.bin", small)):
            os.symlink(target, os.path.join(self.a.share_dir,
                                            partial_name(path, content_hash(data))))
        for path, data in (("hard-large.bin", hard_large), ("hard-small.bin", hard_small)):
            hard = write_file(self.outside, path + ".txt", b"linked from the share\n")
            os.link(hard, os.path.join(self.a.share_dir, partial_name(path, content_hash(data))))
        before = snapshot(self.outside)
        self.mesh.link(self.a, self.b)
        self.mesh.settle(self.a, self.b)
        self.assertEqual(snapshot(self.outside), before)
        for name in ("hard-large.bin.txt", "hard-small.bin.txt"):
            self.assertEqual(os.stat(os.path.join(self.outside, name)).st_nlink, 1)
        for path, data in (("large.bin", large), ("small.bin", small),
                           ("hard-large.bin", hard_large), ("hard-small.bin", hard_small)):
            self.assertEqual(read_file(self.a.share_dir, path), data)
        self.assertEqual(partials(self.a), set())

    def test_link_planted_at_destination_file(self):
        """
        A's x.bin is a link to a file outside (links are not synced, so
        A's index has nothing there); B has a file x.bin.  The link is
        never written through or replaced, and A does not busy itself with
        it: no bytes are fetched for a file that cannot be placed, it does
        not rescan its share over and over, and it says (once) why x.bin
        is not synced.
        """
        target = os.path.join(self.outside, "precious.txt")
        os.symlink(target, os.path.join(self.a.share_dir, "x.bin"))
        self.a.rescan()
        self.offer(("x.bin", content(12, 300_000)), ("other.txt", b"other\n"))
        before = snapshot(self.outside)
        scans = []
        scan = self.a.folder.sync.scanner.scan
        self.patch(self.a.folder.sync.scanner, "scan", lambda now: scans.append(now) or scan(now))
        _, _, pump = self.mesh.link(self.a, self.b)
        gets = record(pump.clientIO, wire.GET)
        later = self.mesh.reactor.seconds() + 60
        self.mesh.run(lambda: self.mesh.reactor.seconds() >= later, timeout=61)
        self.assertEqual(snapshot(self.outside), before)
        self.assertEqual(os.readlink(os.path.join(self.a.share_dir, "x.bin")), target)
        self.assertEqual(read_file(self.a.share_dir, "other.txt"), b"other\n")
        self.assertEqual([g.path for g in gets if g.path == "x.bin"], [])
        self.assertEqual(partials(self.a), set())
        self.assertLessEqual(len(scans), 3, "A rescans its share again and again")
        lines = [line for line in self.logs() if "x.bin" in line]
        self.assertTrue(lines, "A never says why x.bin is not synced")
        self.assertLessEqual(len(lines), 2, lines)


# ---------------------------------------------------------------------------
# Timing


class LateTests(SynchronousTestCase):
    def test_empty_file_sent_late(self):
        """
        An empty file whose (empty) DATA and END come well after the GET,
        past several stall checks though within the stall timeout: the
        download is not given up, nothing divides by the time taken, the
        file lands, and the connection stays.
        """
        logs = capture_logs(self)
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        write_file(b.share_dir, "empty.bin", b"", mtime_ns=past_ns(mesh))
        b.rescan()
        client, server, _ = mesh.link(a, b)
        mesh.run(lambda: server.scheduler is not None and server.scheduler.uploads)
        scheduler = server.scheduler
        [upload] = list(scheduler.uploads)
        scheduler.uploads.clear()  # accepted, but held back
        delay = a.limits.stall_timeout - 1
        self.assertGreater(delay, 2 * fetcher_module.STALL_CHECK)
        later = mesh.reactor.seconds() + delay
        mesh.run(lambda: mesh.reactor.seconds() >= later, timeout=delay + 1)
        self.assertFalse(os.path.exists(os.path.join(a.share_dir, "empty.bin")))
        scheduler.uploads.append(upload)
        scheduler.resumeProducing()
        mesh.run(lambda: os.path.exists(os.path.join(a.share_dir, "empty.bin"))
                 and a.folder.in_sync())
        self.assertEqual(read_file(a.share_dir, "empty.bin"), b"")
        self.assertEqual(a.connections[b.node_id], client)
        self.assertEqual([line for line in logs() if "empty.bin" in line], [])


class RescanTests(SynchronousTestCase):
    def test_rescan_requested_during_a_scan(self):
        """
        A rescan asked for while a scan runs (the watcher does this
        whenever the share changes during a scan) runs once more after
        it, and no more; the Deferred it returned fires once that scan,
        which saw the change, is recorded.
        """
        mesh = Mesh(self)
        held = Held()
        node = mesh.node("a", run_blocking=held)
        [first] = held.named("scan")  # the start-up scan
        f, args, d = first
        held.jobs.remove(first)
        report = f(*args)  # it ran (and missed what comes next) ...
        write_file(node.share_dir, "new.txt", b"new\n", mtime_ns=past_ns(mesh))
        results = []
        node.rescan().addBoth(
            lambda result: results.append((result, node.folder.store.get("new.txt"))))
        d.callback(report)  # ... and is over
        ran = held.run_all(limit=10)
        self.assertEqual(held.jobs, [], "scans keep being started")
        self.assertEqual(ran, 1)
        [(result, entry)] = results
        self.assertIsNotNone(entry, "the rescan's Deferred fired before it scanned")
        self.assertTrue(entry.live)
        self.assertEqual(node.folder.store.get("new.txt").hash, content_hash(b"new\n"))
        self.assertEqual(result, 1)

    def test_download_placed_during_a_scan_is_not_a_deletion(self):
        """
        A scan walks the share, a download is placed (and recorded) in a
        directory it already walked, then the scan ends: the new file is
        not taken for one the user deleted -- no tombstone, and the file
        stays on both nodes.  (Scans and placements run in two threads of
        the node's pool; here the test hooks the placement,
        L{DiskActions.place}, onto the end of the walk, L{Scanner._walk}.)
        """
        mesh = Mesh(self)
        a = mesh.node("a")
        held = Held(auto=True, hold=lambda f: getattr(f, "__name__", "") == "place")
        b = mesh.node("b", run_blocking=held)
        data = b"fetched while b scans\n"
        write_file(a.share_dir, "x.txt", data, mtime_ns=past_ns(mesh))
        a.rescan()
        mesh.link(b, a)
        mesh.run(lambda: held.named("place"))
        [place] = held.named("place")
        scanner = b.folder.sync.scanner
        walk = scanner._walk

        def walk_then_place(dir_fd, prefix, *rest):
            walk(dir_fd, prefix, *rest)
            if prefix == "" and place in held.jobs:
                held.run(place)  # placed and recorded as the walk ends

        self.patch(scanner, "_walk", walk_then_place)
        b.rescan()
        self.assertEqual(held.jobs, [])  # placed during the scan
        mesh.run(lambda: a.folder.in_sync() and b.folder.in_sync()
                 and not any(p.clientIO.stream or p.serverIO.stream for p in mesh.pumps))
        self.assertTrue(b.folder.store.get("x.txt").live, "b took its download for a deletion")
        self.assertEqual(read_file(b.share_dir, "x.txt"), data)
        self.assertEqual(read_file(a.share_dir, "x.txt"), data)


class FirstScanTests(SynchronousTestCase):
    """
    A peer that connects while our first scan still runs.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a = self.mesh.node("a")

    def check_early(self, b, held, files):
        """
        Link A to B while B's first scan is held: B says nothing of its
        index until that scan is done, then A gets all of it.
        """
        client, _, pump = self.mesh.link(self.a, b)
        from_b = record(pump.serverIO, INDEX_HELLO, INDEX)
        later = self.mesh.reactor.seconds() + 5
        self.mesh.run(lambda: self.mesh.reactor.seconds() >= later, timeout=6)
        self.assertIn(b.node_id, self.a.connections)  # connected, and waiting
        early = list(from_b)
        self.assertTrue(held.named("scan"))
        held.auto = True
        held.run_all()
        later = self.mesh.reactor.seconds() + 30
        self.mesh.run(lambda: self.mesh.reactor.seconds() >= later, timeout=31)
        for path, data in files:
            self.assertEqual(list(self.a.folder.store.remote_for(path)), [b.node_id],
                             f"A never got B's entry for {path}")
            self.assertEqual(read_file(self.a.share_dir, path), data)
        total = sum(len(data) for _, data in files)
        self.assertIn(f"{client.describe()} shares {len(files)} files ({total} bytes);"
                      " its index is up to date here", self.logs())
        self.assertEqual(early, [], "B spoke of its index before its first scan ended")
        self.assertEqual(type(from_b[0]).__name__, "IndexHello")

    def test_new_node(self):
        """
        B's first scan is still running when A connects: A gets B's
        INDEX_HELLO once the scan is done, and then the whole index.
        """
        held = Held()
        b = self.mesh.node("b", run_blocking=held)
        write_file(b.share_dir, "one.txt", b"one", mtime_ns=past_ns(self.mesh))
        self.check_early(b, held, [("one.txt", b"one")])

    def restarted_b(self, files):
        """
        B, with C{files} scanned into its index, ready to be restarted.
        """
        b = self.mesh.node("b")
        for path, data in files:
            write_file(b.share_dir, path, data, mtime_ns=past_ns(self.mesh))
        b.rescan()
        self.mesh.run(b.folder.in_sync)
        return b

    def test_restarted_node_sends_its_index_at_once(self):
        """
        B restarts with an index that a whole scan filled in its last run,
        and A, which has never met B, connects during B's first scan: B
        sends its INDEX_HELLO and its index at once, without waiting for
        the scan (a restart must not keep peers waiting for a scan of the
        whole share), and serves its files meanwhile.
        """
        files = [("one.txt", b"one"), ("dir/two.txt", b"two")]
        b = self.restarted_b(files)
        held = Held(auto=True, hold=lambda f: getattr(f, "__name__", "") == "scan")
        b = restart(self, self.mesh, b, run_blocking=held)
        client, _, pump = self.mesh.link(self.a, b)
        from_b = record(pump.serverIO, INDEX_HELLO, INDEX)
        self.mesh.run(lambda: all(os.path.exists(os.path.join(self.a.share_dir, path))
                                  for path, _ in files) and self.a.folder.in_sync(),
                      timeout=10)
        self.assertTrue(held.named("scan"), "B's first scan ended: the test proves nothing")
        self.assertEqual(type(from_b[0]).__name__, "IndexHello")
        for path, data in files:
            self.assertEqual(read_file(self.a.share_dir, path), data)
        self.assertIn(f"{client.describe()} shares 2 files (6 bytes);"
                      " its index is up to date here", self.logs())

    def test_interrupted_first_scan_is_not_sent_early(self):
        """
        B's index was never filled by a whole scan (its first scan was
        interrupted: the state directory says so), so after a restart it
        waits for this run's first scan, as a new node does: what it holds
        may be a fraction of its share.
        """
        files = [("one.txt", b"one"), ("dir/two.txt", b"two")]
        b = self.restarted_b(files)
        b.folder.store.set_meta(WHOLE_KEY, "0")
        held = Held()
        b = restart(self, self.mesh, b, run_blocking=held)
        self.check_early(b, held, files)

    def test_file_changed_while_off_is_not_served_stale(self):
        """
        B's file was edited while B was off.  B sends its stored index at
        once, which still names the old version; A asks for it, and B
        refuses (the disk no longer has it) rather than send the new bytes
        under the old version.  B's scan then announces the edit and A
        gets the new content; the old bytes reach A's share nowhere.
        """
        b = self.restarted_b([("one.txt", b"old bytes")])
        # (B scans only when asked: this edit is news to its next run.)
        write_file(b.share_dir, "one.txt", b"new content, longer",
                   mtime_ns=past_ns(self.mesh) + 10**9)
        held = Held(auto=True, hold=lambda f: getattr(f, "__name__", "") == "scan")
        b = restart(self, self.mesh, b, run_blocking=held)
        _, _, pump = self.mesh.link(self.a, b)
        from_a = record(pump.clientIO, wire.GET)
        self.mesh.run(lambda: from_a, timeout=10)
        later = self.mesh.reactor.seconds() + 5
        self.mesh.run(lambda: self.mesh.reactor.seconds() >= later, timeout=6)
        self.assertFalse(os.path.exists(os.path.join(self.a.share_dir, "one.txt")))
        self.assertTrue([line for line in self.logs() if line.startswith("fetching one.txt")
                         and "failed: the file changed since it was indexed" in line],
                        "B did not refuse the version its disk no longer has")
        held.hold = lambda f: False
        held.run_all()
        self.mesh.run(lambda: os.path.exists(os.path.join(self.a.share_dir, "one.txt"))
                      and self.a.folder.in_sync() and b.folder.in_sync(), timeout=120)
        self.assertEqual(read_file(self.a.share_dir, "one.txt"), b"new content, longer")
        for root, _, names in os.walk(self.a.share_dir):
            for name in names:
                with open(os.path.join(root, name), "rb") as f:
                    self.assertNotIn(b"old bytes", f.read())


# ---------------------------------------------------------------------------
# Scanning, end to end


class ScanningTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")

    def test_decomposed_name_is_not_announced(self):
        """
        A name stored decomposed on disk (as macOS writes it) is not synced:
        peers name files by their NFC form, which this disk would not find,
        so it could never be served.  The scan says so, once; a composed
        name beside it syncs.
        """
        logs = capture_logs(self)
        write_file(self.a.share_dir, "de\u0301ja\u0300/e\u0301.txt", b"accent",
                   mtime_ns=past_ns(self.mesh))
        write_file(self.a.share_dir, "ok.txt", b"fine", mtime_ns=past_ns(self.mesh))
        self.a.rescan()
        self.mesh.link(self.b, self.a)
        self.mesh.run(lambda: os.path.exists(os.path.join(self.b.share_dir, "ok.txt"))
                      and self.a.folder.in_sync() and self.b.folder.in_sync())
        self.assertEqual(live_paths(self.a), ["ok.txt"])
        self.assertEqual(all_names(self.b.share_dir), {"ok.txt"})
        notes = [line for line in logs() if "not in Unicode NFC form" in line]
        self.assertEqual(len(notes), 1, notes)
        self.assertEqual(read_file(self.a.share_dir, "de\u0301ja\u0300/e\u0301.txt"), b"accent")

    def test_reserved_names_anywhere_but_only_as_a_prefix(self):
        """
        Names starting with .p2pshare are ours at any depth (partial
        downloads, state) and never synced; a name merely ending in it is
        an ordinary file.
        """
        files = {"keep.txt": b"keep", ".p2pshare-part-0123": b"partial",
                 ".p2pshare-state/node-id": b"state", "sub/.p2pshare-part-x": b"partial",
                 "sub/.p2pshare/identity": b"key", "sub/x.p2pshare": b"suffix is fine"}
        for path, data in files.items():
            write_file(self.a.share_dir, path, data, mtime_ns=past_ns(self.mesh))
        self.a.rescan()
        self.mesh.link(self.b, self.a)
        self.mesh.run(lambda: os.path.exists(os.path.join(self.b.share_dir, "sub", "x.p2pshare"))
                      and os.path.exists(os.path.join(self.b.share_dir, "keep.txt"))
                      and self.a.folder.in_sync() and self.b.folder.in_sync())
        self.assertEqual(live_paths(self.a), ["keep.txt", "sub", "sub/x.p2pshare"])
        self.assertEqual(all_names(self.b.share_dir), {"keep.txt", "sub", "sub/x.p2pshare"})

    def test_files_are_not_hashed_again(self):
        """
        A file this node fetched, or found unchanged after a restart, is
        not read again by the next scan: its size and mtime are in the
        index as they are on disk.
        """
        hashed = []
        real = scanner_module.hash_file
        self.patch(scanner_module, "hash_file",
                   lambda fd, *args: hashed.append(os.fstat(fd).st_size) or real(fd, *args))
        data = content(14, 2 * MiB)
        write_file(self.a.share_dir, "big.bin", data, mtime_ns=past_ns(self.mesh))
        self.a.rescan()
        self.mesh.link(self.b, self.a)
        self.mesh.settle(self.a, self.b)
        self.assertEqual(hashed, [len(data)])  # A's scan, and no one else's
        self.b.rescan()
        self.mesh.run(self.b.folder.in_sync)
        self.assertEqual(hashed, [len(data)])
        self.mesh.cut(self.mesh.pumps[0])
        b = restart(self, self.mesh, self.b)
        self.mesh.run(lambda: b.folder.ready and b.folder.in_sync())
        self.assertEqual(hashed, [len(data)])
        self.assertTrue(b.folder.store.get("big.bin").live)

    def test_what_the_node_placed_is_current(self):
        """
        The watcher skips the rescan for a change the node made itself
        (L{p2ptwisted.folder.Folder.is_current}): a file or directory the
        node just placed is current; once the user touches it, changes its
        mode, or puts a link in its place, it is not; nor is a path the
        index does not hold.
        """
        write_file(self.a.share_dir, "sub/f.txt", b"data", mtime_ns=past_ns(self.mesh))
        self.a.rescan()
        self.mesh.link(self.b, self.a)
        self.mesh.settle(self.a, self.b)
        folder, share = self.b.folder, self.b.share_dir
        self.assertTrue(folder.is_current("sub/f.txt"))
        self.assertTrue(folder.is_current("sub"))
        self.assertFalse(folder.is_current("missing"))
        path = os.path.join(share, "sub", "f.txt")
        os.chmod(path, 0o600)
        self.assertFalse(folder.is_current("sub/f.txt"))
        os.chmod(path, 0o644)
        self.assertTrue(folder.is_current("sub/f.txt"))
        os.utime(path, ns=(1, 1))
        self.assertFalse(folder.is_current("sub/f.txt"))
        os.unlink(path)
        os.symlink(os.path.join(self.a.share_dir, "sub", "f.txt"), path)
        self.assertFalse(folder.is_current("sub/f.txt"))


class IndexHelloTests(SynchronousTestCase):
    """
    INDEX_HELLO makes a node forget what a peer told it, or start a new
    index every peer fetches again: a peer must not be able to repeat it.
    """

    def test_repeated_claims_cannot_make_peers_fetch_everything_again(self):
        logs = capture_logs(self)
        mesh = Mesh(self)
        a, b, h = mesh.node("a"), mesh.node("b"), mesh.node("h")
        mesh.link(b, a)
        mesh.link(h, a)
        for i in range(300):
            write_file(a.share_dir, f"dir/file{i:04}.txt", b"x%d" % i,
                       mtime_ns=past_ns(mesh))
        a.rescan()
        mesh.settle(a, b, h)
        sent_before = a.folder.exchange.entries_sent
        ids = {a.folder.index.index_id}
        for _ in range(5):
            proto = h.connections.get(a.node_id)
            if proto is None:
                mesh.link(h, a)
                mesh.settle(a, b, h)
                proto = h.connections[a.node_id]
            proto.send_frame(encode_index_hello(IndexHello(
                index_id=h.folder.index.index_id, have_index_id=a.folder.index.index_id,
                have_sequence=2**62, sequence=0)))
            mesh.run(lambda: a.folder.in_sync() and b.folder.in_sync())
            ids.add(a.folder.index.index_id)
        # The first claim on a connection that has already said hello is
        # refused; so is every later one: no new index at all.
        self.assertEqual(len(ids), 1)
        self.assertLess(a.folder.exchange.entries_sent - sent_before, 300)
        self.assertTrue(any("second INDEX_HELLO" in line or "again" in line
                            for line in logs() if line.startswith("dropping")))

    def test_a_went_back_claim_is_honoured_once(self):
        """
        A connection whose INDEX_HELLO claims more of our index than we
        hold (as after restoring a backup here) starts a new index, once;
        the same claim over another connection soon after is refused.
        """
        mesh = Mesh(self)
        a, h = mesh.node("a"), mesh.node("h")
        write_file(a.share_dir, "f.txt", b"f", mtime_ns=past_ns(mesh))
        a.rescan()
        mesh.run(lambda: a.folder.in_sync())
        ids = [a.folder.index.index_id]

        def claim(frame):
            if frame[0] == INDEX_HELLO:
                return encode_index_hello(IndexHello(
                    index_id=h.folder.index.index_id, have_index_id=a.folder.index.index_id,
                    have_sequence=2**62, sequence=0))
            return frame

        outcomes = []
        for _ in range(2):
            client, server, pump = mesh.link(h, a)
            tap(pump.clientIO, claim)
            mesh.run(lambda server=server: server.transport.disconnecting or (
                a.folder.exchange.up_to_date and h.node_id in a.connections))
            outcomes.append(server.transport.disconnecting)
            ids.append(a.folder.index.index_id)
            mesh.cut(pump)
        self.assertNotEqual(ids[1], ids[0])
        self.assertEqual(ids[2], ids[1])
        self.assertEqual(outcomes, [False, True])
