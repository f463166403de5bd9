"""
FolderSync on real directories: two folders joined in memory (entries
handed across, bytes copied by a stand-in for the network), so the core,
the scanner and the disk work together as on a node.
"""

import os

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.apply import Disk
from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.index import LocalIndex, MemoryStore
from p2ptwisted.core.planner import RECEIVE_ONLY, SEND_ONLY, SEND_RECEIVE
from p2ptwisted.scanner import Scanner
from p2ptwisted.hashing import hash_fd
from p2ptwisted.sync import FolderSync
from p2ptwisted.core import trouble
from p2ptwisted.core.trouble import Trouble

from .helpers import capture_logs

S = 10**9
START = 1_800_000_000


class Folder:
    def __init__(self, testcase, name, clock, me, mode=SEND_RECEIVE):
        self.root = os.path.abspath(testcase.mktemp())
        self.state = os.path.join(self.root, ".p2pshare")
        os.makedirs(self.state)
        self.store = MemoryStore()
        scanner = Scanner(self.root, self.state, self.store)
        self.engine = SyncEngine(LocalIndex(self.store, me), self.store,
                                 ignored=scanner.ignored)
        self.disk = Disk(self.root, self.state)
        testcase.addCleanup(self.disk.close)
        self.fetches = []
        self.sync = FolderSync(self.engine, scanner, self.disk, clock, fetch=self._fetch,
                               mode=mode)
        self.name = name
        self.other = None

    def _fetch(self, action, sources):
        """
        The network's part, by hand: find the bytes in the other folder,
        copy them beside the destination, verify them.
        """
        self.fetches.append(action.path)
        src = self.other.find(action.entry.hash)
        directory = os.path.join(self.root, os.path.dirname(action.path))
        os.makedirs(directory, exist_ok=True)
        tmp = ".p2pshare-tmp-" + str(len(self.fetches))
        with open(src, "rb") as f, open(os.path.join(directory, tmp), "wb") as out:
            out.write(f.read())
        with open(os.path.join(directory, tmp), "rb") as f:
            assert hash_fd(f.fileno()) == action.entry.hash
        return succeed(tmp)

    def find(self, content_hash):
        for entry in self.store.with_hash(content_hash):
            return os.path.join(self.root, entry.path)
        raise LookupError(content_hash)

    def path(self, relative):
        return os.path.join(self.root, relative)

    def write(self, relative, data, mode=0o644, mtime=None):
        full = self.path(relative)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, mode)
        if mtime is not None:
            os.utime(full, ns=(mtime, mtime))

    def read(self, relative):
        with open(self.path(relative), "rb") as f:
            return f.read()

    def files(self):
        found = {}
        for top, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".p2pshare")]
            for n in names:
                rel = os.path.relpath(os.path.join(top, n), self.root)
                found[rel] = self.read(rel)
        return found


class TwoFolders(SynchronousTestCase):
    """
    Folders a and b, joined; b runs in C{mode_b}.
    """

    mode_b = SEND_RECEIVE

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.a = Folder(self, "a", self.clock, "a" * 16)
        self.b = Folder(self, "b", self.clock, "b" * 16, mode=self.mode_b)
        self.a.other, self.b.other = self.b, self.a
        self.a.sync.announce = lambda: self.flow(self.a, self.b)
        self.b.sync.announce = lambda: self.flow(self.b, self.a)
        hello_a = self.a.engine.peer_connected("b")
        hello_b = self.b.engine.peer_connected("a")
        self.a.engine.hello_received("b", hello_b)
        self.b.engine.hello_received("a", hello_a)

    def flow(self, sender, receiver):
        while True:
            entries = sender.engine.outgoing(receiver.name, limit=100)
            if not entries:
                return
            receiver.engine.entries_received(sender.name, entries, int(self.clock.seconds()))
            receiver.sync.kick()

    def settle(self):
        """
        Let files age past the quiet period, scan both sides, run until
        nothing is scheduled.
        """
        for _ in range(20):
            self.clock.advance(2)
            self.a.sync.rescan()
            self.b.sync.rescan()
            while self.clock.getDelayedCalls():
                self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls())
                                   - self.clock.seconds())
            if self.a.engine.in_sync() and self.b.engine.in_sync():
                return
        self.fail("did not settle")



class FolderSyncTests(TwoFolders):
    def test_a_file_known_whole_is_recorded_at_once(self):
        """
        A file written this instant waits for its mtime to age, unless the
        scan is told it is whole (closed after writing, or moved in).
        """
        now = int(self.clock.seconds() * S)
        self.a.write("new.txt", b"fresh", mtime=now)
        self.a.sync.rescan()
        self.assertIsNone(self.a.store.get("new.txt"))
        self.a.sync.rescan(frozenset(["new.txt"]))
        self.assertEqual(self.a.store.get("new.txt").size, 5)

    def test_new_file_arrives_with_mode_and_mtime(self):
        self.a.write("docs/secret.txt", b"hush", mode=0o600, mtime=(START - 60) * S)
        self.settle()
        self.assertEqual(self.b.read("docs/secret.txt"), b"hush")
        st = os.stat(self.b.path("docs/secret.txt"))
        self.assertEqual((st.st_mode & 0o777, st.st_mtime_ns), (0o600, (START - 60) * S))

    def test_edit_replaces_and_trashes_the_old_version(self):
        self.a.write("f.txt", b"one")
        self.settle()
        self.a.write("f.txt", b"two", mtime=(START + 100) * S)
        self.settle()
        self.assertEqual(self.b.files(), {"f.txt": b"two"})
        trashed = self.b.disk.trash_list()
        self.assertEqual([v.original for v in trashed], ["f.txt"])

    def test_delete_propagates_to_the_trash(self):
        self.a.write("f.txt", b"one")
        self.settle()
        os.unlink(self.a.path("f.txt"))
        self.settle()
        self.assertEqual(self.b.files(), {})
        self.assertEqual([v.original for v in self.b.disk.trash_list()], ["f.txt"])

    def test_rename_moves_without_fetching(self):
        self.a.write("old.bin", b"x" * 1000)
        self.settle()
        fetched = list(self.b.fetches)
        os.rename(self.a.path("old.bin"), self.a.path("new.bin"))
        self.settle()
        self.assertEqual(self.b.files(), {"new.bin": b"x" * 1000})
        self.assertEqual(self.b.fetches, fetched)

    def test_empty_directory_and_executable_bit(self):
        os.makedirs(self.a.path("empty"))
        self.a.write("run.sh", b"#!/bin/sh\n", mode=0o755)
        self.settle()
        self.assertTrue(os.path.isdir(self.b.path("empty")))
        self.assertEqual(os.stat(self.b.path("run.sh")).st_mode & 0o777, 0o755)

    def test_concurrent_edit_leaves_one_conflict_copy_on_both(self):
        self.a.write("f.txt", b"base")
        self.settle()
        self.a.write("f.txt", b"from a", mtime=(START + 200) * S)
        self.b.write("f.txt", b"from b", mtime=(START + 300) * S)
        self.settle()
        for side in (self.a, self.b):
            files = side.files()
            self.assertEqual(files["f.txt"], b"from b")
            copies = [p for p in files if ".sync-conflict-" in p]
            self.assertEqual([files[p] for p in copies], [b"from a"])

    def test_user_edit_during_sync_is_not_overwritten(self):
        self.a.write("f.txt", b"one")
        self.settle()
        # A's new version arrives while B's user is editing (not yet scanned).
        self.a.write("f.txt", b"two", mtime=(START + 100) * S)
        self.b.write("f.txt", b"user's work", mtime=(START + 50) * S)
        self.settle()
        kept = set(self.b.files().values()) | {
            open(os.path.join(self.b.state, "trash", v.trashed), "rb").read()
            for v in self.b.disk.trash_list()}
        self.assertIn(b"user's work", kept)
        self.assertEqual(self.a.files(), self.b.files())

    def test_file_replaced_by_directory(self):
        self.a.write("x", b"file")
        self.settle()
        os.unlink(self.a.path("x"))
        self.a.write("x/inner", b"in")
        self.settle()
        self.assertEqual(self.b.files(), {"x/inner": b"in"})

    def test_directory_replaced_by_file(self):
        self.a.write("x/inner", b"in")
        self.settle()
        os.unlink(self.a.path("x/inner"))
        os.rmdir(self.a.path("x"))
        self.a.write("x", b"now a file")
        self.settle()
        self.assertEqual(self.b.files(), {"x": b"now a file"})
        self.assertEqual([v.original for v in self.b.disk.trash_list()], ["x/inner"])

    def test_tidy_forgets_old_deletions_and_old_trash(self):
        self.a.write("f.txt", b"one")
        self.settle()
        os.unlink(self.a.path("f.txt"))
        self.settle()
        self.assertEqual(len(self.b.disk.trash_list()), 1)
        self.clock.advance(31 * 24 * 3600)
        results = []
        self.b.sync.tidy(lifetime=30 * 24 * 3600).addCallback(results.append)
        self.assertEqual(results, [(1, 1)])
        self.assertIsNone(self.b.store.get("f.txt"))
        self.assertEqual(self.b.disk.trash_list(), [])

    def test_ignored_paths_stay_local_both_ways(self):
        self.a.write(".p2pignore", b"*.log\nbuild/\n")
        self.b.write(".p2pignore", b"*.log\n")
        self.a.write("app.log", b"a's log")
        self.a.write("build/out.o", b"obj")
        self.a.write("src.c", b"int main;")
        self.b.write("app.log", b"b's own log")
        self.settle()
        self.assertEqual(self.b.files(), {".p2pignore": b"*.log\n", "app.log": b"b's own log",
                                          "src.c": b"int main;"})
        self.assertEqual(self.a.read("app.log"), b"a's log")
        self.assertEqual(self.a.read(".p2pignore"), b"*.log\nbuild/\n")

    def test_bad_ignore_file_keeps_the_rules_in_force(self):
        self.a.write(".p2pignore", b"*.log\n")
        self.a.write("x.log", b"private")
        self.settle()
        self.a.write(".p2pignore", b"*.log\n!\n")
        self.settle()
        self.assertNotIn("x.log", self.b.files())
        self.assertTrue(self.a.sync.scans.ignore_error.startswith(".p2pignore line 2: "))


class SendOnlyTests(TwoFolders):
    mode_b = SEND_ONLY

    def test_remote_changes_not_applied_local_ones_sent(self):
        self.a.write("from-a", b"a")
        self.b.write("from-b", b"b")
        self.settle()
        self.assertEqual(self.b.files(), {"from-b": b"b"})
        self.assertEqual(self.a.files(), {"from-a": b"a", "from-b": b"b"})


class ReceiveOnlyTests(TwoFolders):
    mode_b = RECEIVE_ONLY

    def test_local_changes_not_sent_and_replaced_by_newer_versions(self):
        self.a.write("f.txt", b"one")
        self.settle()
        self.b.write("f.txt", b"local edit", mtime=(START + 10) * S)
        self.b.write("mine.txt", b"only here")
        self.settle()
        self.assertEqual(self.a.files(), {"f.txt": b"one"})
        self.assertEqual(self.b.sync.local_changes, {"f.txt", "mine.txt"})
        self.a.write("f.txt", b"two", mtime=(START + 100) * S)
        self.settle()
        self.assertEqual(self.b.read("f.txt"), b"two")
        self.assertEqual(self.b.read("mine.txt"), b"only here")
        trashed = [open(os.path.join(self.b.state, "trash", v.trashed), "rb").read()
                   for v in self.b.disk.trash_list()]
        self.assertEqual(trashed, [b"local edit"])


class LoopTests(TwoFolders):
    """
    Things that must not make a folder loop or retry without bound.
    """

    def test_no_spin_while_a_busy_path_is_dirty_again(self):
        """
        A newer version arrives for a path whose fetch is still in flight:
        the path waits for the fetch to end; planning does not run again
        and again in the meantime (a core at 100% for the whole fetch).
        """
        from twisted.internet.defer import Deferred

        held = []
        self.b.sync.fetch = lambda action, sources: held.append(action) or Deferred()
        self.a.write("big.bin", b"v1" * 1000, mtime=(START - 60) * S)
        self.clock.advance(2)
        self.a.sync.rescan()
        self.clock.advance(0)
        self.assertEqual([a.path for a in held], ["big.bin"])
        self.a.write("big.bin", b"v2" * 1000, mtime=(START - 30) * S)
        self.a.sync.rescan()
        calls = []
        real = self.b.sync.pump

        def counting():
            calls.append(None)
            if len(calls) > 1000:
                raise AssertionError("pump spins")
            real()

        self.b.sync.pump = counting
        self.b.sync.kick()
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertLess(len(calls), 5)
        self.assertIn("big.bin", self.b.engine.dirty)

    def test_directory_kept_by_an_ignored_file_backs_off(self):
        """
        A directory a peer deleted still holds a file ignored here: it
        stays (nothing of ours is deleted), the log says why once, and
        the removal is tried again less and less often, not every few
        seconds forever.
        """
        logs = capture_logs(self)
        self.a.write(".p2pignore", b"*.log\n")
        self.b.write(".p2pignore", b"*.log\n")
        self.a.write("d/f.txt", b"shared")
        self.settle()
        self.b.write("d/local.log", b"b's own log, ignored")
        os.unlink(self.a.path("d/f.txt"))
        os.rmdir(self.a.path("d"))
        tries = []
        real = self.b.disk.rmdir

        def counting(path):
            tries.append(self.clock.seconds())
            return real(path)

        self.b.disk.rmdir = counting
        self.clock.advance(2)
        self.a.sync.rescan()
        end = self.clock.seconds() + 3600
        while self.clock.getDelayedCalls() and self.clock.seconds() < end:
            self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls())
                               - self.clock.seconds())
        self.assertEqual(self.b.read("d/local.log"), b"b's own log, ignored")
        self.assertLess(len(tries), 25, tries)
        warned = [line for line in logs() if line.startswith("cannot remove directory d:")]
        self.assertEqual(len(warned), 1, warned)


class TroubleTests(SynchronousTestCase):
    """
    L{Trouble} on its own: the wait doubles with each failure in a row up
    to the ceiling, only the first failure of a run is to be logged, a
    success starts afresh, and at most MAX_PATHS paths are remembered.
    """

    def test_wait_doubles_up_to_the_ceiling(self):
        t = Trouble(5.0, 30.0)
        got = [t.failed("p") for _ in range(6)]
        self.assertEqual(got, [(5.0, True), (10.0, False), (20.0, False), (30.0, False),
                               (30.0, False), (30.0, False)])
        self.assertEqual(t.in_a_row("p"), 6)

    def test_paths_counted_apart_and_cleared(self):
        t = Trouble(1.0, 100.0)
        self.assertEqual(t.in_a_row("p"), 0)
        t.failed("p")
        t.failed("p")
        self.assertEqual(t.failed("q"), (1.0, True))
        self.assertEqual((t.in_a_row("p"), t.in_a_row("q")), (2, 1))
        t.cleared("p")
        t.cleared("never-failed")  # no error
        self.assertEqual((t.in_a_row("p"), t.in_a_row("q")), (0, 1))
        self.assertEqual(t.failed("p"), (1.0, True))

    def test_oldest_path_forgotten_past_the_limit(self):
        self.patch(trouble, "MAX_PATHS", 3)
        t = Trouble(1.0, 100.0)
        for p in "abc":
            t.failed(p)
        t.failed("a")  # a is now the most recent: b is the oldest
        t.failed("d")
        self.assertEqual(len(t.counts), 3)
        self.assertEqual([t.in_a_row(p) for p in "abcd"], [2, 0, 1, 1])

    def test_ten_thousand_paths_remembered(self):
        t = Trouble(1.0, 100.0)
        for i in range(10_001):
            t.failed(f"p{i}")
        self.assertEqual(len(t.counts), 10_000)
        self.assertEqual((t.in_a_row("p0"), t.in_a_row("p1"), t.in_a_row("p10000")), (0, 1, 1))
