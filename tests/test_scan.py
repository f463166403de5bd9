"""
What a scan does with each path: unchanged files are not hashed again,
files being written wait for their quiet period.
"""

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.core.scan import HASH, META, UNCHANGED, WAIT, Stat, classify, look_again_at
from p2ptwisted.core.versions import Vector

S = 10**9
NOW = 1_800_000_000 * S


def entry(kind=FILE, size=5, mtime=NOW - 60 * S, perms=0o644, deleted=False):
    return Entry(path="p", kind=kind, size=size, mtime_ns=mtime, perms=perms,
                 hash="h" if kind == FILE else "", deleted=deleted,
                 version=Vector({"a": 1}), modified_by="a")


class ClassifyTests(SynchronousTestCase):
    def test_unchanged_file_is_not_hashed(self):
        self.assertEqual(classify(Stat(FILE, 5, NOW - 60 * S, 0o100644), entry(), NOW), UNCHANGED)

    def test_chmod_only(self):
        self.assertEqual(classify(Stat(FILE, 5, NOW - 60 * S, 0o100755), entry(), NOW), META)

    def test_changed_size_or_mtime_is_hashed(self):
        self.assertEqual(classify(Stat(FILE, 6, NOW - 60 * S, 0o100644), entry(), NOW), HASH)
        self.assertEqual(classify(Stat(FILE, 5, NOW - 30 * S, 0o100644), entry(), NOW), HASH)

    def test_new_file_is_hashed_once_settled(self):
        self.assertEqual(classify(Stat(FILE, 5, NOW - S, 0o100644), None, NOW), HASH)

    def test_file_being_written_waits(self):
        stat = Stat(FILE, 5, NOW - S // 2, 0o100644)
        self.assertEqual(classify(stat, None, NOW), WAIT)
        self.assertEqual(classify(stat, entry(), NOW), WAIT)
        self.assertEqual(look_again_at(stat), NOW + S // 2)
        self.assertEqual(classify(stat, None, look_again_at(stat)), HASH)

    def test_future_mtime_is_not_waited_for(self):
        self.assertEqual(classify(Stat(FILE, 5, NOW + 3600 * S, 0o100644), None, NOW), HASH)

    def test_file_where_a_tombstone_or_directory_was(self):
        stat = Stat(FILE, 5, NOW - 60 * S, 0o100644)
        self.assertEqual(classify(stat, entry(deleted=True), NOW), HASH)
        self.assertEqual(classify(stat, entry(kind=DIR, size=0), NOW), HASH)

    def test_directories(self):
        d = entry(kind=DIR, size=0, perms=0o755)
        self.assertEqual(classify(Stat(DIR, 0, NOW, 0o40755), d, NOW), UNCHANGED)
        self.assertEqual(classify(Stat(DIR, 0, NOW, 0o40700), d, NOW), HASH)
        self.assertEqual(classify(Stat(DIR, 0, NOW, 0o40755), None, NOW), HASH)
        self.assertEqual(classify(Stat(DIR, 0, NOW, 0o40755), entry(), NOW), HASH)
