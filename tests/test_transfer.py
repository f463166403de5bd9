"""
Tests for receiving and sending file bytes: L{p2ptwisted.downloads} (a
download is verified before anything uses it, and never writes outside its
partial file), L{p2ptwisted.uploads} (the scheduler that interleaves
uploads and obeys its transport, and the node-wide rate limit), and, since
every downloaded name passes through it, L{wire.check_path}.

A verified download is handed over two ways, and both are tested here: the
sync shell's L{Disk.place} publishes the sealed partial file; an
operator's fetch publishes it with L{Download.keep_as}, never replacing
anything.
"""

import errno
import os
import stat
import struct
import unicodedata

import attrs
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import wire
from p2ptwisted.apply import Disk
from p2ptwisted.core.index import Entry
from p2ptwisted.core.versions import Vector
from p2ptwisted.downloads import SMALL_FILE, Download, TransferFailed, partial_name
from p2ptwisted.hashing import PARTIAL_PREFIX
from p2ptwisted.placing import place_one
from p2ptwisted.uploads import SERVED_QUIET, TURN_BUDGET, RateLimit, Upload, UploadScheduler
from p2ptwisted.wire import ProtocolError

from .helpers import capture_logs

MTIME = 1_234_567_890_123_456_789
NOW = 1_700_000_000 * 10**9
AUTHOR = "0123456789abcdef"


def digest(data: bytes) -> str:
    return blake3(data).hexdigest()


def file_entry(path: str, size: int, content_hash: str, mtime_ns: int = MTIME,
               perms: int = 0o644) -> Entry:
    return Entry(path=path, kind="file", size=size, mtime_ns=mtime_ns, perms=perms,
                 hash=content_hash, deleted=False, version=Vector({AUTHOR: 1}),
                 modified_by=AUTHOR, sequence=1)


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


def open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


# ---------------------------------------------------------------------------
# Downloads


class DownloadTests(SynchronousTestCase):
    """
    One download into the share, as the fetcher drives it: open (resume
    offset), write each DATA payload, verify at END, seal, and the sync
    shell's L{Disk.place} publishes it.
    """

    LARGE = SMALL_FILE * 3 + 12345

    def setUp(self):
        base = self.mktemp()
        self.root = os.path.join(base, "share")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        self.disk = Disk(self.root, os.path.join(base, "state"))
        self.addCleanup(self.disk.close)
        self.victim = write(os.path.join(self.outside, "victim"), b"precious")

    def path(self, rel):
        return os.path.join(self.root, *rel.split("/"))

    def download(self, data, path="file.bin", content_hash=None, perms=0o644):
        entry = file_entry(path, len(data), content_hash or digest(data), perms=perms)
        dir_fd, _ = self.disk.parent(path, create=True)
        dl = Download(entry=entry, dir_fd=dir_fd, transfer=7)
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
        return os.path.join(os.path.dirname(self.path(dl.entry.path)), dl.partial)

    def listing(self, rel=""):
        return sorted(os.listdir(self.path(rel) if rel else self.root))

    def assertOutsideUntouched(self):
        self.assertEqual(os.listdir(self.outside), ["victim"])
        self.assertEqual(read(self.victim), b"precious")

    def assertPlaced(self, dl, data):
        """
        Seal the verified download and let the sync shell place it: only
        the file remains, with the sender's content, mtime and permission
        bits.  Sealing alone publishes nothing.
        """
        dest = self.path(dl.entry.path)
        name = dl.seal()
        self.assertEqual(name, dl.partial)
        self.assertEqual(read(self.partial_path(dl)), data)
        self.assertFalse(os.path.lexists(dest))
        place_one(self.disk, name, dl.entry, NOW)
        st = os.lstat(dest)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(read(dest), data)
        self.assertEqual(st.st_mtime_ns, dl.entry.mtime_ns)
        self.assertEqual(st.st_mode & 0o777, dl.entry.perms)
        self.assertFalse(os.path.lexists(self.partial_path(dl)))

    def test_partial_name(self):
        """
        The partial name is reserved (never scanned, never synced), depends
        on destination and content only, and differs when either does.
        """
        h1, h2 = digest(b"1"), digest(b"2")
        name = partial_name("a/b.txt", h1)
        self.assertTrue(name.startswith(PARTIAL_PREFIX))
        self.assertTrue(name.startswith(wire.RESERVED_PREFIX))
        self.assertEqual(name, partial_name("a/b.txt", h1))
        self.assertNotEqual(name, partial_name("a/b.txt", h2))
        self.assertNotEqual(name, partial_name("a/c.txt", h1))
        self.assertNotIn("/", name)
        self.assertRaises(ProtocolError, wire.check_path, "a/" + name)

    def test_small_download(self):
        """
        A small file is gathered in memory: nothing is on disk until it is
        sealed, nothing at its name until it is placed, and it lands with
        the right content, mtime and permission bits.
        """
        data = os.urandom(1000)
        dl = self.download(data, path="sub/dir/small.txt", perms=0o640)
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data, chunk=100)
        self.assertEqual(self.listing("sub/dir"), [])
        dl.verify(self.end(dl))
        self.assertEqual(self.listing("sub/dir"), [])
        self.assertPlaced(dl, data)
        self.assertEqual(self.listing("sub/dir"), ["small.txt"])

    def test_small_boundaries(self):
        for data in (b"", b"x", os.urandom(SMALL_FILE)):
            dl = self.download(data, path=f"s{len(data)}/f")
            self.assertEqual(dl.open(), 0)
            self.feed(dl, data)
            self.assertEqual(self.listing(f"s{len(data)}"), [])
            dl.verify(self.end(dl))
            self.assertPlaced(dl, data)

    def test_large_download(self):
        """
        A large file goes through a partial file beside its destination and
        appears under its name only when placed, after verification.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data, path="d/large.bin", perms=0o755)
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data[: len(data) // 2])
        self.assertEqual(self.listing("d"), [dl.partial])
        self.feed(dl, data[len(data) // 2 :])
        self.assertEqual(self.listing("d"), [dl.partial])
        dl.verify(self.end(dl))
        self.assertEqual(self.listing("d"), [dl.partial])
        self.assertPlaced(dl, data)
        self.assertEqual(self.listing("d"), ["large.bin"])

    def test_just_over_small(self):
        data = os.urandom(SMALL_FILE + 1)
        dl = self.download(data)
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data)
        self.assertEqual(self.listing(), [dl.partial])
        dl.verify(self.end(dl))
        self.assertPlaced(dl, data)

    def assertDiscarded(self, dl, code, call, *args):
        """
        C{call} fails with C{code} and the bad bytes are gone: nothing is
        left in the directory, and the next attempt starts from byte 0.
        """
        e = self.assertRaises(TransferFailed, call, *args)
        self.assertEqual(e.code, code)
        self.assertEqual(self.listing(), [])
        dl.release()
        again = self.download(b"\0" * dl.entry.size, path=dl.entry.path,
                              content_hash=dl.entry.hash)
        self.assertEqual(again.open(), 0)
        again.discard()

    def check_wrong_content(self, size):
        data = os.urandom(size)
        dl = self.download(data, content_hash=digest(b"what we asked for"))
        dl.open()
        self.feed(dl, data)
        self.assertDiscarded(dl, "mismatch", dl.verify, self.end(dl))

    def test_wrong_hash_small(self):
        self.check_wrong_content(500)

    def test_wrong_hash_large(self):
        self.check_wrong_content(self.LARGE)

    def test_end_describes_another_file(self):
        """
        An END whose hash or size is not the version we asked for fails
        the download, even when the bytes were right.
        """
        for size in (10, self.LARGE):
            for code, other in (("mismatch", {"content_hash": digest(b"other")}),
                                ("size", {"size": size + 1}), ("size", {"size": size - 1})):
                data = os.urandom(size)
                dl = self.download(data, path=f"f{size}")
                dl.open()
                self.feed(dl, data)
                self.assertDiscarded(dl, code, dl.verify, self.end(dl, **other))

    def test_fewer_bytes(self):
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dl = self.download(data, path=f"f{size}")
            dl.open()
            self.feed(dl, data[:-1])
            self.assertDiscarded(dl, "size", dl.verify, self.end(dl))

    def test_more_bytes_than_size(self):
        """
        Bytes past the announced size are refused before they are written.
        """
        for size in (10, self.LARGE):
            data = os.urandom(size)
            dl = self.download(data, path=f"f{size}")
            dl.open()
            e = self.assertRaises(TransferFailed, dl.write, data + b"!")
            self.assertEqual(e.code, "size")
            self.assertEqual(dl.offset, 0)
            self.feed(dl, data[:-3])
            e = self.assertRaises(TransferFailed, dl.write, b"1234")
            self.assertEqual(e.code, "size")
            self.assertEqual(dl.offset, size - 3)
            if size > SMALL_FILE:
                self.assertEqual(os.path.getsize(self.partial_path(dl)), size - 3)
            dl.discard()
            self.assertEqual(self.listing(), [])

    def test_resume(self):
        """
        A partial file from an earlier attempt is resumed from its end, and
        its bytes count in the final hash.
        """
        data = os.urandom(self.LARGE)
        half = len(data) // 2
        dl = self.download(data, path="r/resumed.bin")
        write(self.partial_path(dl), data[:half])
        self.assertEqual(dl.open(), half)
        self.assertEqual(dl.resumed_from, half)
        self.feed(dl, data[half:])
        dl.verify(self.end(dl))
        self.assertPlaced(dl, data)

    def test_resume_with_bad_prefix(self):
        """
        If the bytes already there are wrong, the final check catches it
        (it covers the whole file, not just what this attempt received)
        and the partial file is removed, so the next attempt starts afresh.
        """
        data = os.urandom(self.LARGE)
        half = len(data) // 2
        dl = self.download(data)
        write(self.partial_path(dl), b"\0" * half)
        self.assertEqual(dl.open(), half)
        self.feed(dl, data[half:])
        self.assertDiscarded(dl, "mismatch", dl.verify, self.end(dl))

    def test_resume_longer_partial(self):
        """
        A partial file longer than the file cannot be a prefix of it: the
        download starts again from byte 0.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        write(self.partial_path(dl), data + b"extra")
        self.assertEqual(dl.open(), 0)
        self.feed(dl, data)
        dl.verify(self.end(dl))
        self.assertPlaced(dl, data)

    def test_release_keeps_partial(self):
        """
        A download given up (connection lost) keeps its bytes, closes its
        directory, and the next attempt resumes where it stopped.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        dl.open()
        self.feed(dl, data[:1000])
        dir_fd = dl.dir_fd
        dl.release()
        self.assertFalse(is_open(dir_fd))
        self.assertEqual(read(self.partial_path(dl)), data[:1000])
        dl.release()  # idempotent

        again = self.download(data)
        self.assertEqual(again.open(), 1000)
        self.feed(again, data[1000:])
        again.verify(self.end(again))
        self.assertPlaced(again, data)

    def test_release_of_nothing_leaves_nothing(self):
        """
        A download given up before any byte arrived (refused, stalled,
        cancelled) leaves no empty partial file behind (issue 11, point 10).
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data)
        self.assertEqual(dl.open(), 0)
        self.assertEqual(len(self.listing()), 1)  # created on open
        dl.release()
        self.assertEqual(self.listing(), [])

    # -- things planted at the partial name ---------------------------------

    def plant(self, kind, where):
        """
        Put a C{kind} of thing at C{where}: a symlink to a file outside,
        a dangling symlink to a name outside, a hard link to a file
        outside, a FIFO, or a directory.
        """
        if kind == "symlink":
            os.symlink(self.victim, where)
        elif kind == "dangling":
            os.symlink(os.path.join(self.outside, "created"), where)
        elif kind == "hardlink":
            os.link(self.victim, where)
        elif kind == "fifo":
            os.mkfifo(where)
        elif kind == "dir":
            os.mkdir(where)
            write(os.path.join(where, "inside"), b"kept")

    def assertFreshPartial(self, dl):
        st = os.lstat(self.partial_path(dl))
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(st.st_nlink, 1)
        self.assertNotEqual(st.st_ino, os.stat(self.victim).st_ino)

    def test_planted_at_partial_large(self):
        """
        A link or FIFO planted where a large file's partial file goes is
        removed, never followed or written through: open() starts a fresh
        partial file, the download lands intact, and nothing outside is
        created or changed.
        """
        for kind in ("symlink", "dangling", "hardlink", "fifo"):
            data = os.urandom(self.LARGE)
            dl = self.download(data, path=f"{kind}.bin")
            self.plant(kind, self.partial_path(dl))
            self.assertEqual(dl.open(), 0, kind)
            self.assertFreshPartial(dl)
            self.feed(dl, data)
            self.assertOutsideUntouched()
            dl.verify(self.end(dl))
            self.assertPlaced(dl, data)
            self.assertOutsideUntouched()

    def test_planted_at_partial_small(self):
        """
        A small file's partial file is only created when sealing: a link
        or FIFO planted there by then is removed, never followed, and the
        download lands intact.
        """
        for kind in ("symlink", "dangling", "hardlink", "fifo"):
            data = os.urandom(100)
            dl = self.download(data, path=f"{kind}.txt")
            dl.open()
            self.feed(dl, data)
            dl.verify(self.end(dl))
            self.plant(kind, self.partial_path(dl))
            self.assertPlaced(dl, data)
            self.assertOutsideUntouched()

    def test_directory_at_partial(self):
        """
        A directory where the partial file goes makes the download fail;
        the directory and what it holds stay.
        """
        data = os.urandom(self.LARGE)
        dl = self.download(data, path="big.bin")
        self.plant("dir", self.partial_path(dl))
        e = self.assertRaises(TransferFailed, dl.open)
        self.assertEqual(e.code, "local")
        self.assertEqual(read(os.path.join(self.partial_path(dl), "inside")), b"kept")

        data = os.urandom(100)
        dl = self.download(data, path="small.txt")
        dl.open()
        self.feed(dl, data)
        dl.verify(self.end(dl))
        self.plant("dir", self.partial_path(dl))
        self.assertRaises((OSError, TransferFailed), dl.seal)
        self.assertEqual(read(os.path.join(self.partial_path(dl), "inside")), b"kept")
        self.assertFalse(os.path.lexists(self.path("small.txt")))


class KeepAsTests(SynchronousTestCase):
    """
    An operator's fetch (control's C{fetch(path, dest=...)}): the verified
    download is published under a name of the operator's directory with the
    version's mtime and permission bits, and never replaces anything there.
    """

    def setUp(self):
        base = self.mktemp()
        self.dest = os.path.join(base, "dest")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.dest)
        os.makedirs(self.outside)
        self.victim = write(os.path.join(self.outside, "victim"), b"precious")

    def verified(self, data, path="docs/report.pdf", perms=0o640):
        """
        A download of C{data} into the destination directory, verified.
        """
        entry = file_entry(path, len(data), digest(data), perms=perms)
        dl = Download(entry=entry, dir_fd=open_dir(self.dest), transfer=3)
        self.addCleanup(dl.release)
        self.assertEqual(dl.open(), 0)
        for i in range(0, len(data), 50_000):
            dl.write(data[i : i + 50_000])
        dl.verify(wire.End(transfer=3, size=len(data), hash=entry.hash))
        return dl

    def test_keep_as(self):
        """
        The file lands under the chosen name, with the version's mtime and
        permission bits (exactly: not the umask's), and no partial file is
        left in the operator's directory.
        """
        for size, name, perms in ((100, "small.pdf", 0o640), (SMALL_FILE * 2, "big.pdf", 0o755)):
            data = os.urandom(size)
            dl = self.verified(data, perms=perms)
            self.assertEqual(dl.keep_as(name), name)
            where = os.path.join(self.dest, name)
            st = os.lstat(where)
            self.assertTrue(stat.S_ISREG(st.st_mode))
            self.assertEqual(st.st_nlink, 1)
            self.assertEqual(read(where), data)
            self.assertEqual(st.st_mtime_ns, MTIME)
            self.assertEqual(st.st_mode & 0o777, perms)
            self.assertNotIn(dl.partial, os.listdir(self.dest))
        self.assertEqual(sorted(os.listdir(self.dest)), ["big.pdf", "small.pdf"])

    def test_never_replaces(self):
        """
        A file, a directory or a link (live or dangling) already at the
        name is kept as it is, never followed; the fetch fails with
        C{exists} and leaves no partial file behind.
        """
        planted = {
            "file": lambda p: write(p, b"mine"),
            "dir": os.mkdir,
            "symlink": lambda p: os.symlink(self.victim, p),
            "dangling": lambda p: os.symlink(os.path.join(self.outside, "created"), p),
        }
        for size in (100, SMALL_FILE * 2):
            for kind, plant in planted.items():
                name = f"{kind}-{size}.pdf"
                where = os.path.join(self.dest, name)
                plant(where)
                before = os.lstat(where)
                dl = self.verified(os.urandom(size))
                e = self.assertRaises(TransferFailed, dl.keep_as, name)
                self.assertEqual(e.code, "exists", (kind, size))
                self.assertFalse(wire.has_control_chars(str(e)))
                after = os.lstat(where)
                self.assertEqual((after.st_ino, after.st_mode, after.st_size),
                                 (before.st_ino, before.st_mode, before.st_size))
                self.assertNotIn(dl.partial, os.listdir(self.dest))
        self.assertEqual(read(os.path.join(self.dest, "file-100.pdf")), b"mine")
        self.assertEqual(os.listdir(self.outside), ["victim"])
        self.assertEqual(read(self.victim), b"precious")


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

    def output_drained(self):
        self.drained = getattr(self, "drained", 0) + 1


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
        entry = file_entry(f"file{transfer}", len(data), digest(data),
                           mtime_ns=os.fstat(fd).st_mtime_ns)
        up = Upload(transfer=transfer, fd=fd, entry=entry, position=position)
        self.addCleanup(up.close)
        return up, path

    def test_an_upload_keeps_no_block_list(self):
        """
        An upload checks a file's size, mtime and hash, never its block
        list, and does not hold one (hundreds of block GETs in flight each
        held a copy of up to 128 KiB).
        """
        data = b"x" * 100
        up, _ = self.upload(1, data)
        listed = attrs.evolve(up.entry, blocks=b"\x01" * 64)
        block = Upload(transfer=2, fd=os.dup(up.fd), entry=listed, position=0, end=50,
                       block="ab" * 32)
        self.addCleanup(block.close)
        self.assertEqual(block.entry.blocks, b"")
        self.assertEqual((block.entry.path, block.entry.size, block.entry.mtime_ns,
                          block.entry.hash), (up.entry.path, 100, up.entry.mtime_ns,
                                              up.entry.hash))
        self.assertTrue(block.unchanged())

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
        entry = up.entry
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
        # Nothing left to do but sum up what was served, once it is quiet.
        logs = capture_logs(self)
        self.assertEqual([c.func.__name__ for c in self.clock.getDelayedCalls()],
                         ["log_served"])
        self.clock.advance(SERVED_QUIET)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(logs(), ["served 2 files (80 bytes) to fake peer in 0.0s, 0.1 MiB/s"])

    def test_served_summed_up_once_quiet(self):
        """
        One line for what a peer took while it kept asking, not a line per
        file: each finished upload pushes the summary back.
        """
        logs = capture_logs(self)
        s = self.scheduler()
        for n in range(3):
            up, _ = self.upload(n + 1, b"x" * 10)
            s.add(up)
            self.clock.advance(1.0)
        self.assertEqual(logs(), [])
        self.clock.advance(SERVED_QUIET)
        self.assertEqual(logs(), ["served 3 files (30 bytes) to fake peer in 3.0s, 0.0 MiB/s"])
        self.clock.advance(60)
        self.assertEqual(len(logs()), 1)

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

    def test_read_error(self):
        """
        A file that cannot be read (here: the descriptor is a directory's)
        gives ERROR C{unavailable} for its transfer alone; the others go
        on.
        """
        s = self.scheduler()
        fd = open_dir(self.dir)
        broken = Upload(transfer=1, fd=fd, entry=file_entry("gone", 50, digest(b"x")),
                        position=0)
        self.addCleanup(broken.close)
        data = os.urandom(30)
        up, _ = self.upload(2, data)
        s.add(broken)
        s.add(up)
        self.clock.advance(0)
        [error, end] = self.messages()
        self.assertIsInstance(error, wire.Error)
        self.assertEqual((error.code, error.transfer), ("unavailable", 1))
        self.assertFalse(wire.has_control_chars(error.message))
        self.assertEqual(broken.fd, -1)
        self.assertFalse(is_open(fd))
        self.assertEqual(self.payload(1), b"")
        self.assertEqual(self.payload(2), data)
        self.assertEndAfterLastChunk(up)

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
        entry = file_entry("big", st.st_size, "0" * 64, mtime_ns=st.st_mtime_ns)
        up = Upload(transfer=transfer, fd=fd, entry=entry, position=0)
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
