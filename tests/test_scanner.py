"""
The scanner on a real directory: what it reports, what it hashes, what it
leaves alone.
"""

import os

from blake3 import blake3

from twisted.trial.unittest import SynchronousTestCase

import p2ptwisted.scanner as scanner_module
from p2ptwisted import hashing as share, wire
from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.ignore import IgnoreRules
from p2ptwisted.core.index import DIR, FILE, LocalIndex, MemoryStore
from p2ptwisted.scanner import Scanner

S = 10**9
NOW = 1_800_000_000 * S
OLD = NOW - 3600 * S


class ScannerTests(SynchronousTestCase):
    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.state = os.path.join(self.root, ".p2pshare")
        os.makedirs(self.state)
        self.store = MemoryStore()
        self.engine = SyncEngine(LocalIndex(self.store, "a" * 16), self.store)
        self.rules = IgnoreRules.parse("")
        self.scanner = Scanner(self.root, self.state, self.store,
                               ignored=lambda p, d: self.rules.ignored(p, d))
        self.hashed = []

        def counting(fd, size, stopped=lambda: False):
            self.hashed.append(fd)
            return share.hash_file(fd, size, stopped)
        self.patch(scanner_module, "hash_file", counting)

    def write(self, path, data=b"x", mtime=OLD, mode=0o644):
        full = os.path.join(self.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, mode)
        os.utime(full, ns=(mtime, mtime))

    def scan(self, now=NOW):
        report = self.scanner.scan(now)
        self.engine.local_changed(report.changed, report.gone, now // S)
        return report

    def test_new_files_and_directories(self):
        self.write("a.txt", b"hello")
        self.write("sub/b.bin", b"\0" * 10, mode=0o600)
        os.makedirs(os.path.join(self.root, "empty"))
        report = self.scan()
        found = {o.path: (o.kind, o.size, o.perms) for o in report.changed}
        self.assertEqual(found, {"a.txt": (FILE, 5, 0o644), "sub": (DIR, 0, 0o755),
                                 "sub/b.bin": (FILE, 10, 0o600), "empty": (DIR, 0, 0o755)})
        with open(os.path.join(self.root, "a.txt"), "rb") as f:
            expected = share.hash_fd(f.fileno())
        self.assertEqual([o.hash for o in report.changed if o.path == "a.txt"], [expected])
        self.assertEqual(report.hashed, 2)

    def test_block_lists_recorded(self):
        """
        A file of more than one block gets its block list in the index,
        kept through a change of permission bits and dropped with the file.
        """
        data = bytes(range(256)) * 1200  # 300 KiB: three blocks of 128 KiB
        self.write("big.bin", data)
        self.write("small.txt", b"one block")
        self.scan()
        big = self.store.get("big.bin")
        self.assertEqual(big.blocks, b"".join(
            blake3(data[i:i + 128 * 1024]).digest() for i in range(0, len(data), 128 * 1024)))
        self.assertEqual(self.store.get("small.txt").blocks, b"")
        os.chmod(os.path.join(self.root, "big.bin"), 0o600)
        self.scan()
        self.assertEqual(self.store.get("big.bin").perms, 0o600)
        self.assertEqual(self.store.get("big.bin").blocks, big.blocks)
        os.unlink(os.path.join(self.root, "big.bin"))
        self.scan()
        self.assertEqual(self.store.get("big.bin").blocks, b"")
        self.assertEqual(self.store.with_block(big.blocks[:32]), [])

    def test_unchanged_share_hashes_nothing(self):
        self.write("a.txt")
        self.write("b.txt")
        self.scan()
        self.hashed.clear()
        report = self.scan()
        self.assertEqual((report.changed, report.gone, self.hashed), ([], [], []))

    def test_chmod_needs_no_hash(self):
        self.write("run.sh")
        self.scan()
        self.hashed.clear()
        os.chmod(os.path.join(self.root, "run.sh"), 0o755)
        report = self.scan()
        self.assertEqual([(o.path, o.perms) for o in report.changed], [("run.sh", 0o755)])
        self.assertEqual(self.hashed, [])

    def test_edit_is_hashed_again(self):
        self.write("a.txt", b"one")
        self.scan()
        self.write("a.txt", b"two", mtime=OLD + S)
        report = self.scan()
        self.assertEqual([o.path for o in report.changed], ["a.txt"])
        self.assertEqual(report.hashed, 1)

    def test_deleted_file_and_directory_are_gone(self):
        self.write("d/a.txt")
        self.scan()
        os.unlink(os.path.join(self.root, "d/a.txt"))
        os.rmdir(os.path.join(self.root, "d"))
        self.assertEqual(sorted(self.scan().gone), ["d", "d/a.txt"])

    def test_file_being_written_waits(self):
        self.write("big.iso", b"partial", mtime=NOW - S // 10)
        report = self.scan()
        self.assertEqual(report.changed, [])
        self.assertEqual(report.recheck_at, NOW - S // 10 + S)
        self.assertEqual(self.hashed, [])
        report = self.scan(now=report.recheck_at)
        self.assertEqual([o.path for o in report.changed], ["big.iso"])

    def test_file_known_whole_is_hashed_at_once(self):
        """
        A file inotify saw closed after writing (or moved in) is hashed
        however new its mtime; the others still wait.
        """
        self.write("saved.txt", b"all of it", mtime=NOW - S // 10)
        self.write("d/writing.log", b"part", mtime=NOW - S // 10)
        report = self.scanner.scan(NOW, frozenset(["saved.txt"]))
        self.assertEqual([o.path for o in report.changed if o.kind == "file"], ["saved.txt"])
        self.assertEqual(report.recheck_at, NOW - S // 10 + S)

    def test_edit_in_progress_is_not_a_delete(self):
        self.write("a.txt")
        self.scan()
        self.write("a.txt", b"being written", mtime=NOW)
        report = self.scan()
        self.assertEqual((report.changed, report.gone), ([], []))

    def test_links_specials_state_and_reserved_names_skipped(self):
        self.write("real.txt")
        os.symlink("/etc/passwd", os.path.join(self.root, "link"))
        os.mkfifo(os.path.join(self.root, "fifo"))
        self.write(".p2pshare-part-x")
        self.write(".p2pshare/index.sqlite3")
        report = self.scan()
        self.assertEqual([o.path for o in report.changed], ["real.txt"])

    def test_state_directory_elsewhere_in_the_share_skipped(self):
        state = os.path.join(self.root, "mystate")
        os.makedirs(state)
        self.write("mystate/node.key")
        self.scanner.state_dir = state
        self.assertEqual(self.scan().changed, [])

    def test_ignored_paths_neither_reported_nor_gone(self):
        self.write("keep.txt")
        self.write("build/out.o")
        self.write("x.tmp")
        self.rules = IgnoreRules.parse("build/\n*.tmp\n")
        self.assertEqual([o.path for o in self.scan().changed], ["keep.txt"])
        # A path known before it became ignored is not reported deleted.
        self.rules = IgnoreRules.parse("")
        self.scan()
        self.rules = IgnoreRules.parse("*.tmp\n")
        os.unlink(os.path.join(self.root, "x.tmp"))
        self.assertEqual(self.scan().gone, [])

    def test_unreadable_directory_hides_nothing(self):
        """
        A directory we cannot list (permissions; the suite runs as root, so
        listing is made to fail) does not make its files look deleted.
        """
        self.write("locked/a.txt")
        self.write("ok.txt")
        self.scan()
        real = os.listdir

        def listdir(fd):
            names = real(fd)
            if names == ["a.txt"]:
                raise PermissionError(13, "Permission denied")
            return names
        self.patch(os, "listdir", listdir)
        report = self.scan()
        self.assertEqual((report.gone, report.changed), ([], []))
        self.assertEqual(report.skipped, ["locked/: Permission denied"])


class NameTests(ScannerTests):
    """
    Names on disk that the wire cannot carry as they are.
    """

    def paths(self, report):
        return sorted(o.path for o in report.changed)

    def test_non_nfc_name(self):
        """
        A decomposed name on disk is not synced (peers name files by their
        NFC form, which the disk would not find), and the scan says so.
        """
        self.write("de\u0301j\u00e0/e\u0301.txt", b"accent")
        self.write("d\u00e9j\u00e0/ok.txt", b"composed")
        report = self.scan()
        self.assertEqual(self.paths(report), ["d\u00e9j\u00e0", "d\u00e9j\u00e0/ok.txt"])
        [note] = report.skipped
        self.assertIn("not in Unicode NFC form", note)

    def test_names_equal_once_normalised(self):
        """
        Two files whose names differ only in normalisation give one entry
        and one skip note, never two entries for one path.
        """
        self.write("\u00e9.txt", b"composed")
        self.write("e\u0301.txt", b"decomposed")
        report = self.scan()
        self.assertEqual(self.paths(report), ["\u00e9.txt"])
        self.assertEqual(len(report.skipped), 1, report.skipped)

    def test_names_that_cannot_travel(self):
        """
        Names with a backslash or a control character, and names that are
        not valid UTF-8, are skipped and reported (escaped) in C{skipped}.
        """
        self.write("ok.txt", b"ok")
        self.write("back\\slash.txt", b"1")
        self.write("ctl\x01.txt", b"2")
        self.write("new\nline.txt", b"3")
        self.write("dir\\x/inside.txt", b"4")
        with open(os.path.join(os.fsencode(self.root), b"bad\xff.txt"), "wb") as f:
            f.write(b"5")
        report = self.scan()
        self.assertEqual(self.paths(report), ["ok.txt"])
        self.assertEqual(len(report.skipped), 5, report.skipped)
        for note in report.skipped:
            self.assertFalse(wire.has_control_chars(note), note)
            note.encode("utf-8")  # no lone surrogates: safe for any log
        joined = " ".join(report.skipped)
        for fragment in ("slash.txt", "ctl", "line.txt", "dir", "bad"):
            self.assertIn(fragment, joined)

    def test_over_long_path_skipped(self):
        """
        A file whose path would exceed the wire's byte limit (built with
        directory-relative calls, past PATH_MAX) is skipped and reported.
        """
        self.write("ok.txt", b"ok")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        depth = 0
        try:
            while depth * 201 <= wire.MAX_PATH_BYTES:
                os.mkdir("d" * 200, dir_fd=fd)
                next_fd = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = next_fd
                depth += 1
            out = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, b"deep")
            os.close(out)
        finally:
            os.close(fd)
        report = self.scan()
        self.assertNotIn("f.txt", " ".join(self.paths(report)))
        self.assertIn("ok.txt", self.paths(report))
        self.assertTrue(report.skipped, report.skipped)

    def test_scan_gives_up_when_stopping(self):
        """
        A node that stops does not wait for a big share to be hashed: the
        scan running in its thread gives up at the next file or megabyte.
        """
        for name in ("a", "b"):
            self.write(name, b"x" * 3_000_000)
        calls = []
        original = os.read

        def reading(fd, n):
            calls.append(n)
            if len(calls) == 2:
                self.scanner.stopped = lambda: True
            return original(fd, n)

        self.patch(share.os, "read", reading)
        self.assertRaises(share.ScanStopped, self.scanner.scan, NOW)
        self.assertEqual(len(calls), 2)
