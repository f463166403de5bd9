"""
Adversarial suite, family "Names a peer asks us to serve" (threats.md):
GETs whose path could leave the share (``..``, absolute and Windows forms,
NUL and control characters, over-long names, unicode tricks, reserved
names), links and special files planted in the share (before the scan or
swapped in after it), and valid paths the node must not serve (not in the
index, wrong hash, changed, too many in flight, offset past the end).

Protocol version 2 serves a GET (path, hash) if the node's index holds a
live file with that hash at that path or, failing that, at any path: a
version is its bytes.  Malformed paths are a protocol violation: the node
drops the connection with one line.  Valid but unservable ones get a
transfer-level ERROR naming the transfer, and the connection stays up.  In
every case not one byte of anything outside the share is sent.
"""

import json
import os
import posixpath
import socket
import stat
import unicodedata

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from p2ptwisted import wire
from p2ptwisted.hashing import new_hasher
from p2ptwisted.wire_index import IndexHello

from .adversary import SHARED_BYTES, SHARED_NAME, WAIT, Target, wait_line
from .helpers import indexed
from .test_adversarial_framing import Received, framed, message, pong

#: What lies just outside the share; it must never reach the attacker.
SECRET = b"TOP-SECRET: bytes that live outside the share\n" * 40

#: A file in the share that cases swap for something else after the scan.
VICTIM = "docs/victim.txt"
VICTIM_BYTES = b"an ordinary shared file, until something is swapped in\n" * 40


def blake3(data: bytes) -> str:
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def raw_get(transfer: int, path: str, hash: str, offset: int = 0) -> bytes:
    """
    A GET frame built by hand (type byte 0x30 and a JSON body), so any path
    can be sent, even one the encoder's side would never produce; JSON
    escapes carry NUL, control characters and lone surrogates.
    """
    body = json.dumps({"transfer": transfer, "path": path, "hash": hash, "offset": offset})
    return framed(bytes([wire.GET]) + body.encode("ascii"))


def freeze_index(target) -> None:
    """
    Stop the target's share watcher, so a file swapped after the scan stays
    indexed as it was: the window between a scan and a GET that a local
    attacker races for, made deterministic.
    """
    watcher = target.node._watcher
    if watcher is not None:
        watcher.stop()


class ServingTests(TestCase):
    """
    GETs for names the node must not serve, each after a valid HELLO from
    an attacker with its own certificate, on a TLS node.
    """

    timeout = 60

    async def connected(self, files=None, prepare=None):
        """
        A target with a secret file and directory next to its share, C{prepare}
        run on it (planting things in the share), and an attacker that has
        completed the handshake (the node sent its INDEX_HELLO).
        """
        target = await Target.start(self, files=files)
        self.outside = os.path.join(target.base, "outside")
        with open(self.outside, "wb") as f:
            f.write(SECRET)
        self.outside_dir = os.path.join(target.base, "outside_dir")
        os.mkdir(self.outside_dir)
        with open(os.path.join(self.outside_dir, "secret.txt"), "wb") as f:
            f.write(SECRET)
        if prepare is not None:
            await prepare(target)
        before = target.baseline()
        attacker = await target.attack()
        received = Received(attacker)
        attacker.hello()
        await received.wait(lambda ms: any(isinstance(m, IndexHello) for m in ms))
        return target, before, attacker, received

    def assertNothingServed(self, attacker, received):
        self.assertEqual(received.of(wire.Data), [])
        self.assertEqual(received.of(wire.End), [])
        self.assertNotIn(SECRET[:30], bytes(attacker.received))

    async def dropped(self, frame: bytes, pattern: str, prepare=None, escaped=None):
        """
        The GET in C{frame} is malformed: the node drops the connection with
        one line matching C{pattern} (showing C{escaped}, the escaped form
        of the path, if given), and sends nothing about it.
        """
        target, before, attacker, received = await self.connected(prepare=prepare)
        mark = target.mark()
        attacker.send(frame)
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertNothingServed(attacker, received)
        self.assertEqual([e for e in received.of(wire.Error) if e.transfer is not None], [])
        await target.check(self, before, attacker, lines=1, pattern=pattern)
        if escaped is not None:
            [line] = [line for line in target.lines_since(mark) if "dropping" in line]
            self.assertIn(escaped, line)
            self.assertFalse(wire.has_control_chars(line), repr(line))

    async def refused(self, frame: bytes, transfer: int, code: str, files=None, prepare=None):
        """
        The GET in C{frame} is valid but must not be served: the node
        answers ERROR C{code} naming C{transfer}, sends no DATA, logs one
        line, and the connection stays up (it still answers a PING).
        """
        target, before, attacker, received = await self.connected(files=files, prepare=prepare)
        attacker.send(frame)
        # Wait for the transfer's last frame, whatever it is: an END here
        # means the node served what it must not.
        await received.wait(lambda ms: any(isinstance(m, (wire.Error, wire.End))
                                           and m.transfer == transfer for m in ms))
        self.assertEqual(received.of(wire.End), [], "the node served it")
        [error] = [m for m in received.of(wire.Error) if m.transfer == transfer]
        self.assertEqual(error.code, code, error)
        attacker.send(message(wire.Ping(31337)))
        await received.wait(pong(31337))
        self.assertFalse(attacker.lost.called)
        self.assertNothingServed(attacker, received)
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=1, pattern=r"refused .*: ")
        return target, received

    # -- malformed paths: dropped ------------------------------------------------

    async def test_dotdot(self):
        """
        ``../outside`` (a real file next to the share, asked with its real
        hash): dropped as a malformed path.
        """
        await self.dropped(raw_get(1, "../outside", blake3(SECRET)),
                           r"dropping .*: path has an empty, \. or \.\. component")

    async def test_dotdot_deeper_in_the_path(self):
        """
        ``shared/../../outside``, where the first component is a real
        directory of the share: dropped.
        """
        await self.dropped(raw_get(1, "shared/../../outside", blake3(SECRET)),
                           r"path has an empty, \. or \.\. component")

    async def test_absolute_path(self):
        """
        ``/etc/passwd``: dropped (its first component is empty).
        """
        with open("/etc/passwd", "rb") as f:
            digest = blake3(f.read())
        await self.dropped(raw_get(1, "/etc/passwd", digest),
                           r"path has an empty, \. or \.\. component")

    async def test_windows_drive_with_backslash(self):
        """
        ``C:\\x``: dropped (backslash).
        """
        await self.dropped(raw_get(1, "C:\\x", blake3(SECRET)),
                           r"path has control characters or backslashes")

    async def test_windows_backslash_dotdot(self):
        """
        ``..\\outside``: dropped (backslash), never split on ``\\``.
        """
        await self.dropped(raw_get(1, "..\\outside", blake3(SECRET)),
                           r"path has control characters or backslashes")

    async def test_windows_drive_relative(self):
        """
        ``C:outside`` (drive-relative, no backslash): dropped as a drive.
        """
        await self.dropped(raw_get(1, "C:outside", blake3(SECRET)), r"path starts with a drive")

    async def test_nul_in_path(self):
        """
        ``shared/hello.txt<NUL>.jpg`` (a C-string truncation trick, the
        real file's hash): dropped, and the log line shows the NUL escaped.
        """
        digest = blake3(SHARED_BYTES)
        await self.dropped(raw_get(1, SHARED_NAME + "\x00.jpg", digest),
                           r"path has control characters", escaped="\\x00")

    async def test_terminal_escape_in_path(self):
        """
        A path carrying an ANSI escape and a newline (log injection):
        dropped, the line escaped and on one line.
        """
        await self.dropped(raw_get(1, "shared/\x1b[2Jhello.txt\nFAKE LOG LINE", blake3(b"")),
                           r"path has control characters", escaped="\\x1b[2J")

    async def test_component_over_255_bytes(self):
        """
        A 256-byte component (128 two-byte characters): dropped.
        """
        await self.dropped(raw_get(1, "shared/" + "\u00e9" * 128, blake3(b"")),
                           r"path component too long")

    async def test_path_over_4096_bytes(self):
        """
        A path of 4097 bytes made of short, valid components: dropped.
        """
        path = "/".join(["d" * 99] * 40) + "/" + "x" * 97
        self.assertEqual(len(path.encode()), 4097)
        await self.dropped(raw_get(1, path, blake3(b"")), r"path longer than 4096 bytes")

    async def test_non_nfc_path(self):
        """
        ``cafe\\u0301.txt`` (NFD) for a shared ``caf\\u00e9.txt`` (NFC), with
        its right hash: dropped, never normalised and served.
        """
        await self.dropped(raw_get(1, "docs/cafe\u0301.txt", blake3(b"coffee\n")),
                           r"path is not NFC-normalised", prepare=self.make_cafe)

    async def make_cafe(self, target):
        os.makedirs(os.path.join(target.share, "docs"), exist_ok=True)
        with open(os.path.join(target.share, "docs", "caf\u00e9.txt"), "wb") as f:
            f.write(b"coffee\n")
        await indexed(target.node, "docs/caf\u00e9.txt").addTimeout(WAIT, reactor)

    async def test_reserved_prefix(self):
        """
        ``.p2pshare/identity.key`` and the like belong to the node: a GET
        under ``.p2pshare`` is dropped.
        """
        await self.dropped(raw_get(1, ".p2pshare/identity.key", blake3(b"")),
                           r"path uses a reserved name")

    async def test_reserved_name_deeper_in_the_path(self):
        """
        A reserved name deeper in the path (``shared/.p2psharex``), a real
        file planted in the share with content: dropped as reserved, never
        served.
        """
        async def plant(target):
            with open(os.path.join(target.share, "shared", ".p2psharex"), "wb") as f:
                f.write(SECRET)

        await self.dropped(raw_get(1, "shared/.p2psharex", blake3(SECRET)),
                           r"path uses a reserved name", prepare=plant)

    async def test_lone_surrogate(self):
        """
        A path with a lone surrogate (``\\ud800`` in the JSON): not text,
        dropped.
        """
        await self.dropped(raw_get(1, "shared/\ud800.txt", blake3(b"")),
                           r"path is not valid Unicode")

    # -- links and special files -------------------------------------------------

    async def test_symlink_to_a_file_outside(self):
        """
        ``leak.txt``, a symlink in the share to a file outside it, asked
        with the outside file's real hash: never indexed, so ERROR
        not_found, and not a byte of the target.
        """
        async def plant(target):
            os.symlink(self.outside, os.path.join(target.share, "leak.txt"))
            await target.node.rescan()
            self.assertIsNone(target.node.folder.store.get("leak.txt"))

        await self.refused(raw_get(5, "leak.txt", blake3(SECRET)), 5, "not_found",
                           prepare=plant)

    async def test_symlink_to_a_directory_outside(self):
        """
        ``leakdir``, a symlinked directory pointing outside the share:
        ``leakdir/secret.txt`` with its real hash gets ERROR not_found.
        """
        async def plant(target):
            os.symlink(self.outside_dir, os.path.join(target.share, "leakdir"))
            await target.node.rescan()
            self.assertIsNone(target.node.folder.store.get("leakdir/secret.txt"))

        await self.refused(raw_get(6, "leakdir/secret.txt", blake3(SECRET)), 6, "not_found",
                           prepare=plant)

    def swap(self, replace):
        """
        A prepare step: freeze the index, then replace the indexed
        VICTIM with what C{replace(target, path)} puts there.
        """
        async def prepare(target):
            self.assertIsNotNone(target.node.folder.store.get(VICTIM))
            freeze_index(target)
            path = os.path.join(target.share, VICTIM)
            replace(target, path)
        return prepare

    def victim_get(self, transfer):
        return raw_get(transfer, VICTIM, blake3(VICTIM_BYTES))

    def outside_twin(self, target, st_victim):
        """
        An outside file with the victim's exact size and mtime: if the node
        followed a planted link, even its "changed" check would pass.
        """
        twin_dir = os.path.join(target.base, "twin", "docs")
        os.makedirs(twin_dir)
        twin = os.path.join(twin_dir, "victim.txt")
        data = (SECRET * 2)[: st_victim.st_size]
        with open(twin, "wb") as f:
            f.write(data)
        os.utime(twin, ns=(st_victim.st_atime_ns, st_victim.st_mtime_ns))
        return twin

    async def test_file_swapped_for_symlink_after_scan(self):
        """
        A indexed file replaced by a symlink to an outside file with the
        same size and mtime, before the node rescans: the GET (index path
        and hash) gets ERROR not_regular -- opened with O_NOFOLLOW, the link
        is never followed.
        """
        def replace(target, path):
            twin = self.outside_twin(target, os.stat(path))
            os.unlink(path)
            os.symlink(twin, path)

        await self.refused(self.victim_get(7), 7, "not_regular",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    async def test_directory_swapped_for_symlink_after_scan(self):
        """
        The directory holding an indexed file replaced by a symlink to an
        outside directory holding a same-size, same-mtime file of that
        name: ERROR not_regular, every component is opened with
        O_NOFOLLOW.
        """
        def replace(target, path):
            twin = self.outside_twin(target, os.stat(path))
            docs = os.path.dirname(path)
            os.rename(docs, os.path.join(target.base, "docs-moved-away"))
            os.symlink(os.path.dirname(twin), docs)

        await self.refused(self.victim_get(8), 8, "not_regular",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    async def test_fifo_in_share(self):
        """
        A FIFO in the share is never indexed: a GET for it gets ERROR
        not_found (and the reactor never blocks on it).
        """
        async def plant(target):
            os.mkfifo(os.path.join(target.share, "pipe"))
            await target.node.rescan()
            self.assertIsNone(target.node.folder.store.get("pipe"))

        await self.refused(raw_get(9, "pipe", blake3(b"")), 9, "not_found", prepare=plant)

    async def test_file_swapped_for_fifo_after_scan(self):
        """
        A indexed file replaced by a FIFO (no writer) before the rescan:
        ERROR not_regular at once -- opened with O_NONBLOCK, the FIFO cannot
        block the reactor (the PING right after is answered).
        """
        def replace(target, path):
            os.unlink(path)
            os.mkfifo(path)

        await self.refused(self.victim_get(10), 10, "not_regular",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    async def test_file_swapped_for_socket_after_scan(self):
        """
        A indexed file replaced by a unix socket: ERROR not_regular.
        """
        def replace(target, path):
            os.unlink(path)
            # The path is too long for a socket address: bind through the
            # directory's descriptor.
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.bind(f"/proc/self/fd/{dir_fd}/{os.path.basename(path)}")
            finally:
                s.close()
                os.close(dir_fd)
            self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))

        await self.refused(self.victim_get(11), 11, "not_regular",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    async def test_file_swapped_for_device_after_scan(self):
        """
        A indexed file replaced by a character device that reads zeros
        forever (like /dev/zero): ERROR not_regular, no endless DATA.
        """
        def replace(target, path):
            os.unlink(path)
            try:
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            except OSError as e:
                raise SkipTest(f"cannot make or open a device node here: {e}") from None

        await self.refused(self.victim_get(12), 12, "not_regular",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    # -- valid paths the node does not serve ---------------------------------------

    async def test_path_not_in_index(self):
        """
        A well-formed path the node does not list, asked with the hash of
        the secret bytes just outside the share: ERROR not_found -- content
        is served by hash only from files the index holds.
        """
        await self.refused(raw_get(13, "shared/nothere.txt", blake3(SECRET)), 13, "not_found")

    async def test_deleted_file_not_served(self):
        """
        A file the user deleted (its tombstone in the index), asked with its
        old path and hash: ERROR not_found.
        """
        gone = "docs/gone.txt"

        async def delete(target):
            store = target.node.folder.store
            self.assertTrue(store.get(gone).live)
            os.unlink(os.path.join(target.share, gone))
            await target.node.rescan()
            self.assertTrue(store.get(gone).deleted)

        await self.refused(raw_get(18, gone, blake3(b"soon gone\n")), 18, "not_found",
                           files={gone: b"soon gone\n"}, prepare=delete)

    async def test_wrong_hash(self):
        """
        The shared file's real path with another content's hash: ERROR
        not_found (serve only the indexed version).
        """
        await self.refused(raw_get(14, SHARED_NAME, blake3(SHARED_BYTES + b"x")), 14, "not_found")

    async def test_file_changed_after_scan(self):
        """
        A indexed file grown before the node rescans: ERROR changed,
        nothing of the new content sent.
        """
        def replace(target, path):
            with open(path, "ab") as f:
                f.write(SECRET)

        await self.refused(self.victim_get(16), 16, "changed",
                           files={VICTIM: VICTIM_BYTES}, prepare=self.swap(replace))

    async def test_offset_past_the_end(self):
        """
        A GET for the shared file from an offset past its end: ERROR
        bad_offset.
        """
        await self.refused(raw_get(17, SHARED_NAME, blake3(SHARED_BYTES),
                                   offset=len(SHARED_BYTES) + 1), 17, "bad_offset")

    async def test_too_many_in_flight(self):
        """
        65 GETs for a 1 MiB file in one go, then CANCELs for the first 64:
        the 65th gets ERROR busy, every upload's file is closed again, the
        connection stays up.
        """
        big = bytes(range(256)) * 4096
        target, before, attacker, received = await self.connected(files={"big.bin": big})
        digest = blake3(big)
        attacker.send(b"".join(raw_get(t, "big.bin", digest) for t in range(65))
                      + b"".join(message(wire.Cancel(transfer=t)) for t in range(64)))
        await received.wait(lambda ms: any(isinstance(m, wire.Error) and m.transfer == 64
                                           for m in ms))
        [error] = [m for m in received.of(wire.Error) if m.transfer == 64]
        self.assertEqual(error.code, "busy")
        attacker.send(message(wire.Ping(64)))
        await received.wait(pong(64))
        self.assertFalse(attacker.lost.called)
        self.assertEqual([m for m in received.of(wire.Data) if m.transfer == 64], [])
        self.assertEqual([m for m in received.of(wire.Error) if m.transfer != 64], [])
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=1,
                           pattern=r"refused big\.bin .*more than 64 transfers")

    async def test_transfer_id_reused_while_in_flight(self):
        """
        A second GET reusing the id of a transfer still in flight (the
        target is still sending a 1 MiB file to a peer that stopped
        reading) is a protocol violation: dropped with one line, the
        upload's file closed.
        """
        big = bytes(range(256)) * 4096
        target, before, attacker, received = await self.connected(files={"big.bin": big})
        attacker.transport.pauseProducing()  # stop reading: the upload stays in flight
        attacker.send(raw_get(3, "big.bin", blake3(big)) + raw_get(3, SHARED_NAME,
                                                                    blake3(SHARED_BYTES)))
        await wait_line(target, r"dropping .*GET reuses transfer id 3", before["mark"])
        attacker.transport.resumeProducing()  # and so see the connection end
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual(received.of(wire.End), [])
        await target.check(self, before, attacker, lines=1,
                           pattern=r"dropping .*GET reuses transfer id 3 still in flight")

    # -- positive controls: what must be served is served ----------------------------

    async def served(self, path, data, files=None):
        target, before, attacker, received = await self.connected(files=files)
        attacker.send(raw_get(21, path, blake3(data)))
        await received.wait(lambda ms: any(isinstance(m, (wire.End, wire.Error))
                                           and m.transfer == 21 for m in ms))
        [end] = received.of(wire.End)
        self.assertEqual((end.transfer, end.size, end.hash), (21, len(data), blake3(data)))
        self.assertEqual(b"".join(bytes(m.payload) for m in received.of(wire.Data)
                                  if m.transfer == 21), data)
        self.assertNotIn(SECRET[:30], bytes(attacker.received))
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0)

    async def test_valid_get_is_served(self):
        """
        Control: the shared file with its index hash is served in full
        (DATA then END), so the refusals above are not the node refusing
        everything.
        """
        await self.served(SHARED_NAME, SHARED_BYTES)

    async def test_content_served_under_any_path(self):
        """
        Version 2 serves a version by its bytes, wherever the index holds
        them: ``\ufb01le.txt`` (the "fi" ligature, NFC, but ``file.txt``
        under NFKC), which the node does not have, asked with the hash of
        its ``file.txt``, gets exactly file.txt's bytes -- found by hash,
        never by normalising the path.
        """
        self.assertEqual(unicodedata.normalize("NFKC", "\ufb01le.txt"), "file.txt")
        wire.check_path("\ufb01le.txt")
        await self.served("\ufb01le.txt", b"ligature\n", files={"file.txt": b"ligature\n"})

    async def test_component_of_exactly_255_bytes_is_served(self):
        """
        Boundary: a name whose component is exactly 255 bytes is valid,
        indexed and served.
        """
        name = "docs/" + "n" * 251 + ".txt"
        await self.served(name, b"long name\n", files={name: b"long name\n"})


# -- hypothesis: what check_path accepts stays under the root -----------------------

_TRICKS = ["..", ".", "", "a", "b.txt", "C:", "c:x", "1:x", "ab:c", ".p2pshare", ".p2psharex",
           ".P2PSHARE", "e\u0301", "\u00e9", "\ufb01", "\x00", "\n", "\x1b", "\x7f", "\x85",
           "\u202e", "\\", "a\\..", "..\\x", "/", "//", "~", "\ud800", "x" * 255, "x" * 256,
           "\u00e9" * 128, " ", "...", ". .", "con", "a:b"]

_component = st.one_of(st.sampled_from(_TRICKS), st.text(max_size=8),
                       st.text(alphabet="./\\:a\x00", max_size=6))
_paths = st.one_of(
    st.text(max_size=40),
    st.lists(_component, min_size=1, max_size=6).map("/".join),
    st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=20).map("/".join),
)

_CONTROL = set(range(0x20)) | set(range(0x7F, 0xA0))


class CheckPathProperties(SynchronousTestCase):
    """
    Hypothesis: any path wire.check_path accepts can only name something
    under the share.
    """

    @settings(max_examples=2000, deadline=None)
    @given(_paths)
    @example("a/b.txt")
    @example("ab:c/1:x/\u00e9")
    def test_accepted_paths_stay_under_the_root(self, path):
        """
        An accepted path has no empty, ``.`` or ``..`` component, is not
        absolute, has no backslash and no control character, no drive, no
        reserved component, is NFC and within the byte limits; joined under
        a root and normalised it stays under that root; anything else is a
        ProtocolError (never another exception).
        """
        try:
            accepted = wire.check_path(path)
        except wire.ProtocolError:
            return
        self.assertEqual(accepted, path)
        self.assertFalse(posixpath.isabs(path))
        self.assertNotIn("\\", path)
        self.assertFalse(any(ord(c) in _CONTROL for c in path), repr(path))
        self.assertEqual(unicodedata.normalize("NFC", path), path)
        self.assertLessEqual(len(path.encode("utf-8")), wire.MAX_PATH_BYTES)
        parts = path.split("/")
        self.assertIsNone(wire._DRIVE.match(parts[0]))
        for part in parts:
            self.assertNotIn(part, ("", ".", ".."))
            self.assertFalse(part.startswith(wire.RESERVED_PREFIX))
            self.assertLessEqual(len(part.encode("utf-8")), wire.MAX_COMPONENT_BYTES)
        root = "/srv/share"
        joined = posixpath.normpath(posixpath.join(root, path))
        self.assertTrue(joined.startswith(root + "/"), joined)
        self.assertEqual(posixpath.relpath(joined, root), path)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=6))
    def test_no_dot_components_ever(self, parts):
        """
        Any path holding a ``.`` or ``..`` component is refused, wherever
        it is.
        """
        assume("." in parts or ".." in parts)
        self.assertRaises(wire.ProtocolError, wire.check_path, "/".join(parts))
