"""
The scanner on a real directory: what it reports, what it hashes, what it
leaves alone.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

import p2ptwisted.scanner as scanner_module
from p2ptwisted import share
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

        def counting(fd, stopped=lambda: False):
            self.hashed.append(fd)
            return share.hash_fd(fd, stopped)
        self.patch(scanner_module, "hash_fd", counting)

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
