"""
Tests for L{p2ptwisted.transfer}: downloads that publish only verified
files and never write outside their place, the upload scheduler that
interleaves uploads and obeys its transport, the node-wide rate limit, and
(since every downloaded name passes through it) L{wire.check_path}.
"""

import errno
import os
import struct
import unicodedata

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import wire
from p2ptwisted.share import LocalFile, Share, conflict_name
from p2ptwisted.transfer import (
    SMALL_FILE,
    TURN_BUDGET,
    Download,
    RateLimit,
    TransferFailed,
    Upload,
    UploadScheduler,
    partial_name,
)
from p2ptwisted.wire import FileEntry, ProtocolError

MTIME = 1_234_567_890_123_456_789


def digest(data: bytes) -> str:
    return blake3(data).hexdigest()


def write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return path


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        if e.errno == errno.EBADF:
            return False
        raise
    return True


# ---------------------------------------------------------------------------
# Downloads


class DownloadTests(SynchronousTestCase):
    LARGE = SMALL_FILE * 3 + 12345

    def setUp(self):
        base = self.mktemp()
        self.root = os.path.join(base, "share")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        self.share = Share(root=self.root, state_dir=os.path.join(base, "state"))
        self.addCleanup(self.share.close)

    def path(self, rel):
        return os.path.join(self.root, *rel.split("/"))

    def download(self, data, dest="file.bin", content_hash=None, mtime_ns=MTIME):
        entry = FileEntry(path=dest, size=len(data), mtime_ns=mtime_ns,
                          hash=content_hash or digest(data))
        dl = Download(entry=entry, dest=dest, dir_fd=self.share.open_parent(dest))
        self.addCleanup(dl.release)
        return dl

    def feed(self, dl, data, chunk=50_000):
        for i in range(0, len(data), chunk):
            dl.write(memoryview(data[i : i + chunk]))

    def end(self, dl, size=None, content_hash=None):
        return wire.End(transfer=dl.transfer,
                        size=dl.entry.size if size is None else size,
                        hash=content_hash or dl.entry.hash)

    def partial_path(self, dl):
        return self.path(dl.dest.rpartition("/")[0] + "/" + dl.partial
                         if "/" in dl.dest else dl.partial)

    def listing(self, rel=""):
        return sorted(os.listdir(self.path(rel) if rel else self.root))

    def assertPublished(self, dl, data, where=None):
        """
        A whole download, published: only the file remains, with the
        sender's content and mtime.
        """
        landed, inode = dl.make_durable()
        where = where or dl.dest
        self.assertEqual(landed, where)
        st = os.lstat(self.path(where))
        self.assertEqual(read(self.path(where)), data)
        self.assertEqual(st.st_mtime_ns, dl.entry.mtime_ns)
        self.assertEqual(st.st_ino, inode)
        self.assertEqual(st.st_mode & 0o777, 0o644)
        self.assertFalse(os.path.lexists(self.partial_path(dl)))
        return landed

    def test_partial_name(self):
        """
        The partial name is reserved, depends on destination and content
        only, and differs when either does.
        """
        h1, h2 = digest(b"1"), digest(b"2")
        name = partial_name("a/b.txt", h1)
        self.assertTrue(name.startswith(wire.RESERVED_PREFIX))
        self.assertEqual(name, partial_name("a/b.txt", h1))
        self.assertNotEqual(name, partial_name("a/b.txt", h2))
        self.assertNotEqual(name, partial_name("a/c.txt", h1))
        self.assertNotIn("/", name)

    def test_small_download(self):
        """
        A small file is gathered in memory (nothing on disk until it is
        published) and lands with the right content and mtime.
        """
        data = os.urandom(1000)
        dl = self.download(data, dest="sub/dir/small.txt")
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data, chunk=100)
        self.assertEqual(self.listing("sub/dir"), [])
        dl.verify(self.end(dl))
        self.assertEqual(self.listing("sub/dir"), [])
        self.assertPublished(dl, data)
        self.assertEqual(self.listing("sub/dir"), ["small.txt"])

    def test_small_boundaries(self):
        for data in (b"", b"x", os.urandom(SMALL_FILE)):
            dl = self.download(data, dest=f"f{len(data)}")
            self.assertEqual(dl.open(), 0)
            self.feed(dl, data)
            dl.verify(self.end(dl))
            self.assertPublished(dl, data)

    def test_large_download(self):
        """
        A large file goes through a partial file beside its destination and
        appears under its name only when published.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data, dest="d/large.bin")
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data[: len(data) // 2])
        self.assertEqual(self.listing("d"), [dl.partial])
        self.feed(dl, data[len(data) // 2 :])
        self.assertFalse(os.path.exists(self.path("d/large.bin")))
        dl.verify(self.end(dl))
        self.assertPublished(dl, data)
        self.assertEqual(self.listing("d"), ["large.bin"])

    def test_just_over_small(self):
        data = os.urandom(SMALL_FILE + 1)
        dl = self.download(data)
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data)
        self.assertEqual(self.listing(), [dl.partial])
        dl.verify(self.end(dl))
        self.assertPublished(dl, data)

    def check_wrong_content(self, size):
        data = os.urandom(size)
        dl = self.download(data, content_hash=digest(b"what we asked for"))
        dl.open()
        self.feed(dl, data)
        e = self.assertRaises(TransferFailed, dl.verify, self.end(dl))
        self.assertEqual(e.code, "mismatch")
        self.assertEqual(self.listing(), [])

    def test_wrong_hash_small(self):
        self.check_wrong_content(500)

    def test_wrong_hash_large(self):
        self.check_wrong_content(self.LARGE)

    def test_end_describes_another_file(self):
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dl = self.download(data, dest=f"f{size}")
            dl.open()
            self.feed(dl, data)
            e = self.assertRaises(TransferFailed, dl.verify,
                                  self.end(dl, content_hash=digest(b"other")))
            self.assertEqual(e.code, "mismatch")
            self.assertEqual(self.listing(), [])

    def test_fewer_bytes(self):
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dl = self.download(data, dest=f"f{size}")
            dl.open()
            self.feed(dl, data[:-1])
            e = self.assertRaises(TransferFailed, dl.verify, self.end(dl))
            self.assertEqual(e.code, "size")
            self.assertEqual(self.listing(), [])

    def test_more_bytes_than_size(self):
        """
        Bytes past the announced size are refused before they are written.
        """
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dl = self.download(data, dest=f"f{size}")
            dl.open()
            e = self.assertRaises(TransferFailed, dl.write, data + b"!")
            self.assertEqual(e.code, "size")
            self.feed(dl, data[:-3])
            e = self.assertRaises(TransferFailed, dl.write, b"1234")
            self.assertEqual(e.code, "size")
            self.assertEqual(dl.offset, size - 3)
            if size > SMALL_FILE:
                self.assertLessEqual(os.path.getsize(self.partial_path(dl)), size)
            dl.discard()
            self.assertEqual(self.listing(), [])

    def test_resume(self):
        """
        A partial file from an earlier attempt is resumed from its end, and
        its bytes count in the final hash.
        """
        data = os.urandom(self.LARGE)
        half = len(data) // 2
        dl = self.download(data, dest="r/resumed.bin")
        write(self.partial_path(dl), data[:half])
        self.assertEqual(dl.open(), half)
        self.assertEqual(dl.resumed_from, half)
        self.feed(dl, data[half:])
        dl.verify(self.end(dl))
        self.assertPublished(dl, data)

    def test_resume_with_bad_prefix(self):
        """
        If the bytes already there are wrong, the final check catches it
        and the partial file is removed, so the next attempt starts afresh.
        """
        data = os.urandom(self.LARGE)
        half = len(data) // 2
        dl = self.download(data)
        write(self.partial_path(dl), b"\0" * half)
        self.assertEqual(dl.open(), half)
        self.feed(dl, data[half:])
        e = self.assertRaises(TransferFailed, dl.verify, self.end(dl))
        self.assertEqual(e.code, "mismatch")
        self.assertEqual(self.listing(), [])

    def test_resume_longer_partial(self):
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        write(self.partial_path(dl), data + b"extra")
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data)
        dl.verify(self.end(dl))
        self.assertPublished(dl, data)

    def test_never_replaces_existing_dest(self):
        """
        A file that appeared at the destination meanwhile is kept; the
        download lands under its conflict name.
        """
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dest = f"dir/f{size}.txt"
            dl = self.download(data, dest=dest)
            write(self.path(dest), b"local version")
            dl.open()
            self.feed(dl, data)
            dl.verify(self.end(dl))
            other = conflict_name(dest, dl.entry.hash)
            self.assertPublished(dl, data, where=other)
            self.assertEqual(read(self.path(dest)), b"local version")

    def test_link_planted_at_dest(self):
        """
        A link planted at the destination is neither followed nor
        replaced.
        """
        target = write(os.path.join(self.outside, "target"), b"outside")
        data = os.urandom(100)
        dl = self.download(data, dest="x.txt")
        os.symlink(target, self.path("x.txt"))
        dl.open()
        self.feed(dl, data)
        dl.verify(self.end(dl))
        self.assertPublished(dl, data, where=conflict_name("x.txt", dl.entry.hash))
        self.assertEqual(os.readlink(self.path("x.txt")), target)
        self.assertEqual(sorted(os.listdir(self.outside)), ["target"])
        self.assertEqual(read(target), b"outside")

    def test_dest_and_conflict_name_taken(self):
        """
        When both the destination and its conflict name are taken, neither
        existing file is replaced, and C{make_durable} does not report the
        download as landed at a file that holds other content (the node
        would then catalogue and announce that file with the download's
        hash).
        """
        data = os.urandom(100)
        dl = self.download(data, dest="n.txt")
        other = conflict_name("n.txt", dl.entry.hash)
        write(self.path("n.txt"), b"mine")
        write(self.path(other), b"also mine")
        dl.open()
        self.feed(dl, data)
        dl.verify(self.end(dl))
        try:
            landed, inode = dl.make_durable()
        except (OSError, TransferFailed):
            landed = None
        self.assertEqual(read(self.path("n.txt")), b"mine")
        self.assertEqual(read(self.path(other)), b"also mine")
        if landed is not None:
            self.assertEqual(read(self.path(landed)), data)


    def test_conflict_with_longest_name(self):
        """
        A download whose destination name is near the 255-byte limit can
        still be kept when its destination is taken.
        """
        dest = "n" * 250 + ".txt"
        wire.check_path(dest)
        data = os.urandom(100)
        dl = self.download(data, dest=dest)
        write(self.path(dest), b"mine")
        dl.open()
        self.feed(dl, data)
        dl.verify(self.end(dl))
        try:
            landed, inode = dl.make_durable()
        finally:
            self.assertEqual(read(self.path(dest)), b"mine")
        self.assertEqual(read(self.path(landed)), data)


    def test_symlink_at_partial_large(self):
        """
        A link planted where the partial file goes is removed, never
        followed: open() starts a fresh partial file, and nothing outside is
        created or changed.  A hard link planted there (to a file outside)
        is replaced the same way, never written through.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        target = write(os.path.join(self.outside, "victim"), b"precious")
        os.symlink(target, self.partial_path(dl))
        self.assertEqual(dl.open(), 0)
        self.assertFalse(os.path.islink(self.partial_path(dl)))
        self.feed(dl, data)
        dl.verify(self.end(dl))
        landed, inode = dl.make_durable()
        self.assertEqual(read(self.path(landed)), data)
        self.assertEqual(read(target), b"precious")

        dl2 = self.download(data, dest="other.bin")
        os.symlink(os.path.join(self.outside, "created"), self.partial_path(dl2))
        self.assertEqual(dl2.open(), 0)
        dl2.release()
        self.assertEqual(sorted(os.listdir(self.outside)), ["victim"])

        dl3 = self.download(data, dest="third.bin")
        os.link(target, self.partial_path(dl3))
        self.assertEqual(dl3.open(), 0)
        self.feed(dl3, data[:100])
        dl3.release()
        self.assertEqual(read(target), b"precious")

    def test_symlink_at_partial_small(self):
        """
        For a small file the partial file is only created when publishing:
        a link planted there by then is removed, never followed; nothing
        outside is written, and the download lands intact.
        """
        data = os.urandom(100)
        dl = self.download(data)
        target = write(os.path.join(self.outside, "victim"), b"precious")
        dl.open()
        self.feed(dl, data)
        dl.verify(self.end(dl))
        os.symlink(target, self.partial_path(dl))
        os.symlink(os.path.join(self.outside, "created"), self.path(dl.dest))
        landed, inode = dl.make_durable()
        self.assertEqual(read(self.path(landed)), data)
        self.assertNotEqual(landed, dl.dest)  # dest itself is the planted link
        self.assertEqual(read(target), b"precious")
        self.assertEqual(sorted(os.listdir(self.outside)), ["victim"])

    def test_partial_is_a_directory(self):
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        os.mkdir(self.partial_path(dl))
        self.assertRaises(TransferFailed, dl.open)

    def test_release_keeps_partial(self):
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        dl.open()
        self.feed(dl, data[:1000])
        dir_fd = dl.dir_fd
        dl.release()
        self.assertFalse(is_open(dir_fd))
        self.assertEqual(read(self.partial_path(dl)), data[:1000])
        dl.release()  # idempotent


# ---------------------------------------------------------------------------
# Uploads


class PausingTransport(StringTransport):
    """
    A transport that, like a real one, pauses its producer from inside a
    write once its buffer is "full" (after C{pause_after} writes).
    """

    pause_after = None
    writes = 0

    def writeSequence(self, data):
        super().writeSequence(data)
        self.writes += 1
        if self.pause_after is not None and self.writes >= self.pause_after:
            self.pause_after = None
            self.producer.pauseProducing()


class FakeProto:
    """
    What the scheduler needs of a connection: a transport for DATA frames
    and send() for control messages, recorded with the byte offset in the
    transport at which they were sent.
    """

    def __init__(self):
        self.transport = PausingTransport()
        self.sent = []
        self.bytes_out = 0

    def send(self, message):
        self.sent.append((len(self.transport.value()), message))

    def describe(self):
        return "fake peer"


def parse_data(buf: bytes):
    """
    Split the transport's bytes into (transfer, payload, end offset) for
    each DATA frame; anything else there is a test failure.
    """
    frames = []
    i = 0
    while i < len(buf):
        length, kind, transfer = struct.unpack("!IBI", buf[i : i + 9])
        assert kind == wire.DATA, kind
        payload = buf[i + 9 : i + 4 + length]
        assert len(payload) == length - 5
        i += 4 + length
        frames.append((transfer, payload, i))
    return frames


class UploadSchedulerTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.clock = Clock()
        self.proto = FakeProto()

    def scheduler(self, chunk_size=10, limit=None):
        s = UploadScheduler(self.proto, self.clock, chunk_size=chunk_size, limit=limit)
        self.proto.transport.registerProducer(s, True)
        self.addCleanup(s.stopProducing)
        return s

    def upload(self, transfer, data, position=0):
        path = write(os.path.join(self.dir, f"file{transfer}"), data)
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        local = LocalFile(entry=FileEntry(f"file{transfer}", len(data), st.st_mtime_ns,
                                          digest(data)),
                          disk_path=f"file{transfer}", inode=st.st_ino)
        up = Upload(transfer=transfer, fd=fd, local=local, position=position)
        self.addCleanup(up.close)
        return up, path

    def frames(self):
        return parse_data(self.proto.transport.value())

    def payload(self, transfer):
        return b"".join(p for t, p, _ in self.frames() if t == transfer)

    def messages(self):
        return [m for _, m in self.proto.sent]

    def assertEndAfterLastChunk(self, up):
        """
        The END for C{up} was sent right after its last DATA frame, and
        describes the file.
        """
        entry = up.local.entry
        ends = [(at, m) for at, m in self.proto.sent
                if isinstance(m, wire.End) and m.transfer == up.transfer]
        self.assertEqual([m for _, m in ends],
                         [wire.End(transfer=up.transfer, size=entry.size, hash=entry.hash)])
        last = [end for t, _, end in self.frames() if t == up.transfer][-1]
        self.assertEqual(ends[0][0], last)

    def test_interleaves_chunk_by_chunk(self):
        s = self.scheduler()
        a = os.urandom(50)
        b = os.urandom(30)
        up1, _ = self.upload(1, a)
        up2, _ = self.upload(2, b)
        s.add(up1)
        s.add(up2)
        self.assertEqual(self.proto.transport.value(), b"")  # sent from the reactor
        self.clock.advance(0)
        self.assertEqual([t for t, _, _ in self.frames()], [1, 2, 1, 2, 1, 2, 1, 1])
        self.assertTrue(all(len(p) == 10 for _, p, _ in self.frames()))
        self.assertEqual(self.payload(1), a)
        self.assertEqual(self.payload(2), b)
        self.assertEndAfterLastChunk(up1)
        self.assertEndAfterLastChunk(up2)
        self.assertEqual([m.transfer for m in self.messages()], [2, 1])
        self.assertEqual((up1.fd, up2.fd), (-1, -1))
        self.assertEqual(s.bytes_sent, 80)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_uneven_last_chunk_and_offset(self):
        """
        An upload starts at the requested offset and its last chunk is
        short; an empty remainder sends END only.
        """
        s = self.scheduler(chunk_size=16)
        data = os.urandom(100)
        up, _ = self.upload(7, data, position=30)
        empty, _ = self.upload(8, data, position=100)
        s.add(up)
        s.add(empty)
        self.clock.advance(0)
        self.assertEqual(self.payload(7), data[30:])
        self.assertEqual([len(p) for t, p, _ in self.frames() if t == 7], [16] * 4 + [6])
        self.assertEndAfterLastChunk(up)
        self.assertIn(wire.End(8, 100, digest(data)), self.messages())

    def test_one_turn_is_bounded(self):
        """
        One reactor turn writes at most TURN_BUDGET bytes, then schedules
        the next turn.
        """
        s = self.scheduler(chunk_size=64 * 1024)
        data = os.urandom(TURN_BUDGET * 2 + 5)
        up, _ = self.upload(1, data)
        s.add(up)
        # Run just the pending turn, as Clock.advance would, but not the
        # turn it schedules.
        [call] = self.clock.getDelayedCalls()
        self.clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)
        self.assertEqual(len(self.payload(1)), TURN_BUDGET)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.payload(1), data)

    def test_pause_before_first_turn(self):
        s = self.scheduler()
        up, _ = self.upload(1, os.urandom(50))
        s.add(up)
        s.pauseProducing()
        self.clock.advance(10)
        self.assertEqual(self.proto.transport.value(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        s.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(len(self.frames()), 5)
        self.assertEndAfterLastChunk(up)

    def test_pause_stops_output_at_once(self):
        """
        A pause from inside a write stops the scheduler before its next
        chunk, and nothing more is written however long we wait; resuming
        restarts output straight away.
        """
        s = self.scheduler()
        up1, _ = self.upload(1, os.urandom(100))
        up2, _ = self.upload(2, os.urandom(100))
        s.add(up1)
        s.add(up2)
        self.proto.transport.pause_after = 3
        self.clock.advance(0)
        self.assertEqual(len(self.frames()), 3)
        self.assertTrue(s.paused)
        self.clock.advance(60)
        self.assertEqual(len(self.frames()), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.messages(), [])

        self.proto.transport.pause_after = self.proto.transport.writes + 4
        s.resumeProducing()
        self.assertEqual(len(self.frames()), 7)  # synchronously, within resume
        self.clock.advance(60)
        self.assertEqual(len(self.frames()), 7)
        s.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(len(self.frames()), 20)
        self.assertEndAfterLastChunk(up1)
        self.assertEndAfterLastChunk(up2)

    def test_pause_is_boolean(self):
        s = self.scheduler()
        up, _ = self.upload(1, os.urandom(50))
        s.add(up)
        self.proto.transport.pause_after = 1
        self.clock.advance(0)
        for _ in range(5):
            s.pauseProducing()
        s.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(len(self.frames()), 5)
        self.assertEndAfterLastChunk(up)

    def test_resume_without_work(self):
        s = self.scheduler()
        s.resumeProducing()
        s.pauseProducing()
        s.resumeProducing()
        self.clock.advance(1)
        self.assertEqual(self.proto.transport.value(), b"")
        up, _ = self.upload(1, b"late")
        s.add(up)
        self.clock.advance(0)
        self.assertEqual(self.payload(1), b"late")

    def check_changed(self, change, sent_bytes):
        s = self.scheduler()
        data = os.urandom(50)
        up, path = self.upload(1, data)
        fd = up.fd
        s.add(up)
        self.proto.transport.pause_after = 1
        self.clock.advance(0)
        change(path)
        s.resumeProducing()
        self.clock.advance(0)
        messages = self.messages()
        self.assertEqual(len(messages), 1, messages)
        [error] = messages
        self.assertIsInstance(error, wire.Error)
        self.assertEqual((error.code, error.transfer), ("changed", 1))
        self.assertFalse(wire.has_control_chars(error.message))
        self.assertEqual(len(self.payload(1)), sent_bytes)
        self.assertEqual(up.fd, -1)
        self.assertFalse(is_open(fd))
        self.assertNotIn(1, s.by_id)

    def test_file_touched_during_upload(self):
        self.check_changed(lambda path: os.utime(path, ns=(1, 1)), 50)

    def test_file_grown_during_upload(self):
        def grow(path):
            with open(path, "ab") as f:
                f.write(b"more")
        self.check_changed(grow, 50)

    def test_file_shrunk_during_upload(self):
        self.check_changed(lambda path: os.truncate(path, 25), 20)

    def test_cancel(self):
        s = self.scheduler()
        up1, _ = self.upload(1, os.urandom(50))
        up2, _ = self.upload(2, os.urandom(50))
        fd1 = up1.fd
        s.add(up1)
        s.add(up2)
        self.proto.transport.pause_after = 2
        self.clock.advance(0)
        self.assertTrue(s.cancel(1))
        self.assertEqual(up1.fd, -1)
        self.assertFalse(is_open(fd1))
        self.assertFalse(s.cancel(1))
        self.assertFalse(s.cancel(99))
        s.resumeProducing()
        self.clock.advance(0)
        self.assertEqual([t for t, _, _ in self.frames()], [1, 2, 2, 2, 2, 2])
        self.assertEqual([m.transfer for m in self.messages()], [2])
        self.assertEndAfterLastChunk(up2)

    def test_cancel_before_first_turn(self):
        s = self.scheduler()
        up, _ = self.upload(1, os.urandom(50))
        s.add(up)
        self.assertTrue(s.cancel(1))
        self.clock.advance(0)
        self.assertEqual(self.proto.transport.value(), b"")
        self.assertEqual(self.messages(), [])

    def test_stop_producing_closes_all(self):
        s = self.scheduler()
        ups = [self.upload(i, os.urandom(50))[0] for i in (1, 2, 3)]
        fds = [u.fd for u in ups]
        for u in ups:
            s.add(u)
        self.proto.transport.pause_after = 2
        self.clock.advance(0)
        s.stopProducing()
        self.assertEqual([u.fd for u in ups], [-1, -1, -1])
        self.assertEqual([is_open(fd) for fd in fds], [False] * 3)
        written = self.proto.transport.value()
        s.resumeProducing()
        self.clock.advance(60)
        self.assertEqual(self.proto.transport.value(), written)
        self.assertEqual(self.messages(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(s.by_id, {})

    def test_stop_before_first_turn(self):
        s = self.scheduler()
        up, _ = self.upload(1, os.urandom(50))
        s.add(up)
        s.stopProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1)
        self.assertEqual(self.proto.transport.value(), b"")
        self.assertEqual(up.fd, -1)


# ---------------------------------------------------------------------------
# The rate limit


class RateLimitTests(SynchronousTestCase):
    RATE = 100_000

    def test_bucket(self):
        """
        Spending only what the bucket offers, a sender gets at most
        rate * T + burst over T seconds, and not much less.
        """
        clock = Clock()
        limit = RateLimit(rate=self.RATE, clock=clock)
        spent = 0
        for _ in range(10_000):  # 10 s in 1 ms steps
            n = min(limit.available(), 1500)
            if n > 0:
                limit.spend(n)
                spent += n
            clock.advance(0.001)
        self.assertLessEqual(spent, self.RATE * 10 + limit.burst)
        self.assertGreaterEqual(spent, self.RATE * 9.5)

    def test_wait_covers_debt(self):
        clock = Clock()
        limit = RateLimit(rate=self.RATE, clock=clock, burst=1000)
        self.assertEqual(limit.available(), 1000)
        limit.spend(51_000)
        wait = limit.wait()
        self.assertTrue(0.5 <= wait <= 0.51, wait)
        clock.advance(wait)
        self.assertGreater(limit.available(), 0)

    def send_for(self, schedulers, seconds):
        for _ in range(int(seconds * 100)):
            self.clock.advance(0.01)
        return sum(s.bytes_sent for s in schedulers)

    def make_scheduler(self, limit, chunk_size, transfer=1):
        proto = FakeProto()
        s = UploadScheduler(proto, self.clock, chunk_size=chunk_size, limit=limit)
        proto.transport.registerProducer(s, True)
        self.addCleanup(s.stopProducing)
        path = write(os.path.join(self.dir, f"big{transfer}"), b"\0" * (self.RATE * 20))
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        local = LocalFile(FileEntry("big", st.st_size, st.st_mtime_ns, "0" * 64), "big",
                          st.st_ino)
        up = Upload(transfer=transfer, fd=fd, local=local, position=0)
        self.addCleanup(up.close)
        s.add(up)
        return s

    def setUp(self):
        self.clock = Clock()
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_scheduler_obeys_limit(self):
        """
        Over 10 simulated seconds an upload sends at most rate * 10 + burst,
        plus less than one chunk: the documented debt of sending a chunk
        whole.
        """
        for chunk in (16 * 1024, 100_000):
            self.clock = Clock()
            limit = RateLimit(rate=self.RATE, clock=self.clock)
            s = self.make_scheduler(limit, chunk)
            sent = self.send_for([s], 10)
            self.assertLess(sent, self.RATE * 10 + limit.burst + chunk)
            self.assertGreaterEqual(sent, self.RATE * 9.5)

    def test_limit_is_shared(self):
        """
        Two connections sharing one limit send no more together than one
        (plus one chunk of debt each).
        """
        limit = RateLimit(rate=self.RATE, clock=self.clock)
        chunk = 16 * 1024
        a = self.make_scheduler(limit, chunk, transfer=1)
        b = self.make_scheduler(limit, chunk, transfer=2)
        sent = self.send_for([a, b], 10)
        self.assertLess(sent, self.RATE * 10 + limit.burst + 2 * chunk)
        self.assertGreaterEqual(sent, self.RATE * 9.5)

    def test_shared_limit_is_fair(self):
        """
        Two connections sharing one limit both make progress: neither gets
        less than a quarter of what was sent over 10 seconds.
        """
        limit = RateLimit(rate=self.RATE, clock=self.clock)
        chunk = 16 * 1024
        a = self.make_scheduler(limit, chunk, transfer=1)
        b = self.make_scheduler(limit, chunk, transfer=2)
        sent = self.send_for([a, b], 10)
        self.assertGreaterEqual(min(a.bytes_sent, b.bytes_sent), sent / 4,
                                (a.bytes_sent, b.bytes_sent))



# ---------------------------------------------------------------------------
# Names: wire.check_path


DANGEROUS = [
    "..", ".", "", "/", "\\", "C:", "c:", "C:\\", "\x00", "\x01", "\n", "\x7f", "\x85",
    "\u202e", "e\u0301", "\u00e9", "\ufb01", "\u2126", ".p2pshare", ".p2pshare-part-x",
    ".p2psharex", "x.p2pshare", "a", "b.txt", "..\\..", "a" * 255, "a" * 256,
    "\u00e9" * 127, "\u00e9" * 128, "\U0001f600" * 64, "x" * 4000, "\ud800", "~", "$HOME",
]


def assert_safe(path):
    """
    What any path check_path accepts must satisfy.
    """
    joined = os.path.normpath(os.path.join("/share", path))
    assert joined.startswith("/share/"), (path, joined)
    assert joined == "/share/" + path, (path, joined)
    parts = path.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts, path
    assert unicodedata.is_normalized("NFC", path), path
    assert not any(p.startswith(wire.RESERVED_PREFIX) for p in parts), path
    assert len(path.encode("utf-8")) <= wire.MAX_PATH_BYTES, path
    assert all(len(p.encode("utf-8")) <= wire.MAX_COMPONENT_BYTES for p in parts), path
    assert "\\" not in path and not wire.has_control_chars(path), path


def check(text):
    try:
        result = wire.check_path(text)
    except ProtocolError as e:
        assert not wire.has_control_chars(str(e))
        return None
    assert result == text
    assert_safe(result)
    return result


class CheckPathTests(SynchronousTestCase):
    @settings(max_examples=1500, deadline=None)
    @given(st.text(alphabet=st.characters(exclude_categories=()), max_size=300))
    def test_arbitrary_text(self, text):
        check(text)

    @settings(max_examples=1500, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(DANGEROUS), st.text(max_size=4)),
                    min_size=1, max_size=12))
    def test_dangerous_pieces(self, pieces):
        check("/".join(pieces))
        check("".join(pieces))
        check("\\".join(pieces))

    def test_examples(self):
        refused = [
            "", "..", ".", "/", "/etc/passwd", "a/../../b", "a/./b", "a//b", "a/", "../x",
            "a\\..\\..\\b", "C:", "C:/x", "c:x", "a\x00b", "a\x01", "a\nb", "a\x85",
            "e\u0301", ".p2pshare", ".p2pshare-part-x", "d/.p2pshare-state/x",
            "a" * 256, "\u00e9" * 128, "/".join(["a" * 200] * 21), "\ud800", None, 1, b"a",
        ]
        for path in refused:
            self.assertIsNone(check(path), repr(path))
        accepted = [
            "a", "a/b/c.txt", "\u00e9", "x.p2pshare", ".p2psharx", "...", "..a", "a..",
            "\u202e.txt", "\ufb01", "a" * 255, "\u00e9" * 127,
            "/".join(["a" * 200] * 20), " ", "~", "$HOME",
        ]
        for path in accepted:
            self.assertEqual(check(path), path)
