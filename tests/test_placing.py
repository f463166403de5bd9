"""
Tests for L{p2ptwisted.placing}: many fetched files placed at once, on a
real directory, each as safely as L{place_one} places one.
"""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import placing
from p2ptwisted.apply import ApplyError
from p2ptwisted.hashing import PARTIAL_PREFIX
from tests.test_apply import NOW, STAMP, DiskCase, file_entry, read, write


class PlaceFilesTests(DiskCase):

    def tmp(self, directory, tag, data):
        name = PARTIAL_PREFIX + tag
        write(self.path(directory, name), data, mode=0o666)
        return name

    def calls(self):
        """
        Record the syncfs and fsync calls placing makes (still making them).
        """
        made = []
        real_syncfs, real_fsync = placing._syncfs, os.fsync

        def syncfs(fd):
            made.append(("syncfs", fd))
            return real_syncfs(fd) if real_syncfs is not None else 0

        def fsync(fd):
            made.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
            return real_fsync(fd)

        self.patch(placing, "_syncfs", syncfs)
        self.patch(placing.os, "fsync", fsync)
        return made

    def test_places_each_file(self):
        """
        Files in two directories are placed with their bytes, permission
        bits and mtimes; a replaced file goes to the trash can; no partial
        file is left.
        """
        write(self.path("a", "old.txt"), b"old")
        files = [
            (self.tmp("a", "1", b"one"), file_entry("a/one.txt", b"one", perms=0o600), NOW),
            (self.tmp("a", "2", b"newer"), file_entry("a/old.txt", b"newer"), NOW),
            (self.tmp("b", "3", b"three"),
             file_entry("b/three.txt", b"three", mtime_ns=123_456_789_012, perms=0o755), NOW),
        ]
        outcomes = placing.place_files(self.disk, files)
        self.assertEqual(outcomes, [(True, None)] * 3)
        self.assertEqual(read(self.path("a", "one.txt")), b"one")
        self.assertEqual(read(self.path("a", "old.txt")), b"newer")
        self.assertEqual(read(self.trashed("a", f"old~{STAMP}.txt")), b"old")
        st = os.stat(self.path("b", "three.txt"))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_mtime_ns), (0o755, 123_456_789_012))
        self.assertEqual(stat.S_IMODE(os.stat(self.path("a", "one.txt")).st_mode), 0o600)
        self.assertEqual([n for n in os.listdir(self.path("a")) + os.listdir(self.path("b"))
                          if n.startswith(PARTIAL_PREFIX)], [])

    def test_one_flush_then_one_sync_per_directory(self):
        """
        The data of a batch is flushed with one syncfs before any rename,
        and each directory is synced once after its renames.
        """
        files = [(self.tmp("a", str(i), b"x%d" % i), file_entry(f"a/{i}.txt", b"x%d" % i), NOW)
                 for i in range(5)]
        files.append((self.tmp("b", "b", b"b"), file_entry("b/b.txt", b"b"), NOW))
        made = self.calls()
        renamed_before_flush = []
        real_rename = placing.rename_into

        def rename_into(*args):
            renamed_before_flush.append(not any(c[0] == "syncfs" for c in made))
            return real_rename(*args)

        self.patch(placing, "rename_into", rename_into)
        self.assertEqual(placing.place_files(self.disk, files), [(True, None)] * 6)
        self.assertEqual(sum(c[0] == "syncfs" for c in made), 1)
        self.assertEqual(sorted(c[1] for c in made if c[0] == "fsync"), ["a", "b"])
        self.assertEqual(renamed_before_flush, [False] * 6)

    def test_fsync_each_when_syncfs_fails(self):
        """
        Where syncfs fails (or is missing), each file is fsynced instead.
        """
        files = [(self.tmp("a", str(i), b"x"), file_entry(f"a/{i}.txt", b"x"), NOW)
                 for i in range(3)]
        made = self.calls()
        self.patch(placing, "_syncfs", lambda fd: made.append(("syncfs", fd)) or -1)
        self.assertEqual(placing.place_files(self.disk, files), [(True, None)] * 3)
        synced = [c[1] for c in made if c[0] == "fsync"]
        partials = [PARTIAL_PREFIX + str(i) for i in range(3)]
        self.assertEqual(sorted(synced), sorted(partials + ["a"]))

    def test_single_file_is_fsynced(self):
        """
        A batch of one is fsynced like L{Disk.place} (no syncfs of the whole
        file system for one file).
        """
        made = self.calls()
        files = [(self.tmp("a", "1", b"one"), file_entry("a/one.txt", b"one"), NOW)]
        self.assertEqual(placing.place_files(self.disk, files), [(True, None)])
        self.assertEqual([c for c in made if c[0] == "syncfs"], [])
        self.assertEqual([c[1] for c in made], [PARTIAL_PREFIX + "1", "a"])

    def test_a_bad_file_fails_alone(self):
        """
        A temporary file of the wrong size, one with a directory in the way
        and one that is missing fail, each with its reason, and stay where
        they were; the others in the batch are placed.
        """
        os.makedirs(self.path("a", "dir.txt"))
        files = [
            (self.tmp("a", "1", b"one"), file_entry("a/one.txt", b"one"), NOW),
            (self.tmp("a", "2", b"short"), file_entry("a/two.txt", b"longer than that"), NOW),
            (self.tmp("a", "3", b"three"), file_entry("a/dir.txt", b"three"), NOW),
            (PARTIAL_PREFIX + "missing", file_entry("a/gone.txt", b"gone"), NOW),
            (self.tmp("a", "5", b"five"), file_entry("a/five.txt", b"five"), NOW),
        ]
        outcomes = placing.place_files(self.disk, files)
        self.assertEqual([ok for ok, _ in outcomes], [True, False, False, False, True])
        self.assertEqual([o[1].value.code for o in outcomes if not o[0]],
                         ["changed", "not_regular", "not_found"])
        for _, failure in outcomes[1:4]:
            self.assertIsInstance(failure.value, ApplyError)
        self.assertEqual(read(self.path("a", "one.txt")), b"one")
        self.assertEqual(read(self.path("a", "five.txt")), b"five")
        self.assertEqual(read(self.path("a", PARTIAL_PREFIX + "2")), b"short")
        self.assertEqual(read(self.path("a", PARTIAL_PREFIX + "3")), b"three")
        self.assertTrue(os.path.isdir(self.path("a", "dir.txt")))

    def test_no_descriptor_leaks(self):
        """
        Every file and directory opened for a batch is closed, placed or not.
        """
        # (the disk keeps the share's root open once it has used it)
        placing.place_files(self.disk, [(self.tmp("a", "w", b"w"), file_entry("a/w", b"w"), NOW)])
        before = len(os.listdir("/proc/self/fd"))
        files = [(self.tmp(d, str(i), b"x"), file_entry(f"{d}/{i}.txt", b"x"), NOW)
                 for d in ("a", "b") for i in range(3)]
        files.append((self.tmp("a", "bad", b"x"), file_entry("a/bad.txt", b"xx"), NOW))
        placing.place_files(self.disk, files)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)


class SyncDataTests(SynchronousTestCase):

    def test_one_syncfs_per_file_system(self):
        """
        Files on two file systems (two st_dev values): one syncfs each.
        """
        made = []
        self.patch(placing, "_syncfs", lambda fd: made.append(fd) or 0)
        placing.sync_data([(10, 1), (11, 1), (12, 2), (13, 1)])
        self.assertEqual(sorted(made), [10, 12])
