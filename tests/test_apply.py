"""
Tests for L{p2ptwisted.apply} and L{p2ptwisted.trash}: applying sync
decisions to a real directory, the trash can's layout, and refusing links
and reserved names on every path.
"""

import errno
from functools import partial
import os
import stat

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import fsops
from p2ptwisted import trash as trash_module
from p2ptwisted.apply import ApplyError, Disk
from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.core.versions import Vector
from p2ptwisted.hashing import PARTIAL_PREFIX
from p2ptwisted.placing import place_one
from p2ptwisted.trash import TrashedVersion, parse_trash_name, trash_name

#: 2026-12-03 14:15:02.123456789 UTC.
NOW = 1796307302_123456789
STAMP = "20261203-141502"
DAY = 86400 * 10**9


def digest(data: bytes) -> str:
    return blake3(data).hexdigest()


def write(path, data: bytes, mtime_ns=None, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def file_entry(path, data=b"", mtime_ns=1_500_000_000_000_000_000, perms=0o644, deleted=False):
    return Entry(path=path, kind=FILE, size=len(data), mtime_ns=mtime_ns, perms=perms,
                 hash="" if deleted else digest(data), deleted=deleted, version=Vector(),
                 modified_by="")


def dir_entry(path, perms=0o755, deleted=False):
    return Entry(path=path, kind=DIR, size=0, mtime_ns=0, perms=perms, hash="",
                 deleted=deleted, version=Vector(), modified_by="")


def entry_for(path, relative):
    """
    The entry describing the file at C{path} as it is.
    """
    st_ = os.lstat(path)
    return file_entry(relative, read(path), st_.st_mtime_ns, st_.st_mode & 0o777)


def snapshot(top):
    """
    Everything under C{top}, without following links: to show nothing
    changed there.
    """
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            content = read(path) if stat.S_ISREG(st_.st_mode) else None
            found[os.path.relpath(path, top)] = (st_.st_mode, st_.st_mtime_ns, content)
    return found


class DiskCase(SynchronousTestCase):
    """
    A share, a state directory beside it, and a L{Disk} on them.
    """

    keep_days = 30

    def setUp(self):
        self.base = self.mktemp()
        self.root = os.path.join(self.base, "share")
        self.state = os.path.join(self.base, "state")
        os.makedirs(self.root)
        self.disk = Disk(self.root, self.state, keep_days=self.keep_days)
        self.addCleanup(self.disk.close)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def trashed(self, *parts):
        return os.path.join(self.state, "trash", *parts)

    def set_umask(self, mask):
        old = os.umask(mask)
        self.addCleanup(os.umask, old)

    def assertRaisesCode(self, code, f, *args):
        error = self.assertRaises(ApplyError, f, *args)
        self.assertEqual(error.code, code)
        self.assertNotIn("\n", str(error))
        return error


class LayoutTests(SynchronousTestCase):
    """
    Trash names: the documented layout, and read back unambiguously.
    """

    def test_names(self):
        self.assertEqual(trash_name("docs/report.txt", NOW), f"docs/report~{STAMP}.txt")
        self.assertEqual(trash_name("docs/report.txt", NOW, 2), f"docs/report~{STAMP}-2.txt")
        self.assertEqual(trash_name("a.tar.gz", NOW), f"a.tar~{STAMP}.gz")
        self.assertEqual(trash_name("Makefile", NOW), f"Makefile~{STAMP}")
        self.assertEqual(trash_name("d/.bashrc", NOW), f"d/.bashrc~{STAMP}")
        self.assertEqual(trash_name("x.a~b", NOW), f"x.a~b~{STAMP}")

    def test_stamp_is_utc_seconds(self):
        self.assertEqual(trash_name("a", 0), "a~19700101-000000")
        self.assertEqual(trash_name("a", 86399_999_999_999), "a~19700101-235959")

    def test_parse(self):
        self.assertEqual(parse_trash_name(f"docs/report~{STAMP}-3.txt"),
                         ("docs/report.txt", STAMP, 3))
        self.assertEqual(parse_trash_name(f"x~20200101-000000~{STAMP}.txt"),
                         ("x~20200101-000000.txt", STAMP, 0))
        self.assertIsNone(parse_trash_name("docs/report.txt"))
        self.assertIsNone(parse_trash_name("a~20261399-000000"))
        self.assertIsNone(parse_trash_name("a~20261203-141502-0"))

    def test_long_name(self):
        """
        A name already at the length limit keeps its tag and extension and
        loses the end of its stem.
        """
        name = "é" * 123 + "xy.txt"
        self.assertEqual(len(name.encode("utf-8")), 252)
        trashed = trash_name("d/" + name, NOW, 12)
        self.assertEqual(trashed, "d/" + "é" * 116 + f"~{STAMP}-12.txt")
        self.assertLessEqual(len(trashed[2:].encode("utf-8")), 255)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                            min_size=1, max_size=30),
                    min_size=1, max_size=3),
           st.integers(0, 4 * 10**18), st.integers(0, 999))
    def test_round_trip(self, parts, now_ns, n):
        path = "/".join(parts)
        self.assertEqual(parse_trash_name(trash_name(path, now_ns, n)),
                         (path, trash_module.stamp_of(now_ns), n))


class TrashTests(DiskCase):

    def test_trash_keeps_bytes_and_layout_name(self):
        write(self.path("docs", "report.txt"), b"hello", mtime_ns=10**18, mode=0o640)
        self.assertEqual(self.disk.trash("docs/report.txt", NOW), f"docs/report~{STAMP}.txt")
        self.assertFalse(os.path.lexists(self.path("docs", "report.txt")))
        kept = self.trashed("docs", f"report~{STAMP}.txt")
        self.assertEqual(read(kept), b"hello")
        self.assertEqual((stat.S_IMODE(os.stat(kept).st_mode), os.stat(kept).st_mtime_ns),
                         (0o640, 10**18))
        self.assertEqual(stat.S_IMODE(os.stat(self.trashed()).st_mode), 0o700)

    def test_collisions_numbered(self):
        names = []
        for data in (b"one", b"two", b"three"):
            write(self.path("d", "n.txt"), data)
            names.append(self.disk.trash("d/n.txt", NOW))
        self.assertEqual(names, [f"d/n~{STAMP}.txt", f"d/n~{STAMP}-1.txt", f"d/n~{STAMP}-2.txt"])
        self.assertEqual([read(self.trashed(n)) for n in names], [b"one", b"two", b"three"])

    def test_missing_and_not_regular(self):
        self.assertRaisesCode("not_found", self.disk.trash, "nothing", NOW)
        os.mkdir(self.path("dir"))
        self.assertRaisesCode("not_regular", self.disk.trash, "dir", NOW)
        os.symlink("dir", self.path("link"))
        self.assertRaisesCode("not_regular", self.disk.trash, "link", NOW)
        self.assertTrue(os.path.isdir(self.path("dir")))
        self.assertTrue(os.path.islink(self.path("link")))
        self.assertEqual(os.listdir(self.trashed()), [])

    def test_across_file_systems(self):
        """
        Where rename fails with EXDEV the file is copied (mode and mtime
        kept) and only then removed.
        """
        real = fsops.rename_noreplace
        calls = []

        def no_cross(src_fd, src, dst_fd, dst):
            calls.append(src)
            if not src.startswith(PARTIAL_PREFIX):
                raise OSError(errno.EXDEV, "cross-device link")
            return real(src_fd, src, dst_fd, dst)

        self.patch(fsops, "rename_noreplace", no_cross)
        write(self.path("big.bin"), b"x" * 3_000_000, mtime_ns=123_456_789, mode=0o604)
        self.assertEqual(self.disk.trash("big.bin", NOW), f"big~{STAMP}.bin")
        kept = self.trashed(f"big~{STAMP}.bin")
        self.assertEqual(read(kept), b"x" * 3_000_000)
        self.assertEqual((stat.S_IMODE(os.stat(kept).st_mode), os.stat(kept).st_mtime_ns),
                         (0o604, 123_456_789))
        self.assertFalse(os.path.lexists(self.path("big.bin")))
        self.assertEqual(calls[0], "big.bin")
        self.assertEqual(os.listdir(self.trashed()), [f"big~{STAMP}.bin"])

    def test_changed_while_copied_across(self):
        """
        A file written to while it is copied across file systems is not
        removed: the copy made so far stays in the trash, the new bytes in
        the share, and the caller hears C{changed}.
        """
        real_rename, real_copy = fsops.rename_noreplace, fsops.copy_fd

        def no_cross(src_fd, src, dst_fd, dst):
            if not src.startswith(PARTIAL_PREFIX):
                raise OSError(errno.EXDEV, "cross-device link")
            return real_rename(src_fd, src, dst_fd, dst)

        def copy_then_edit(src, dst, limit=None):
            copied = real_copy(src, dst, limit)
            write(self.path("f.txt"), b"edited meanwhile")
            return copied

        self.patch(fsops, "rename_noreplace", no_cross)
        self.patch(fsops, "copy_fd", copy_then_edit)
        write(self.path("f.txt"), b"first")
        self.assertRaisesCode("changed", self.disk.trash, "f.txt", NOW)
        self.assertEqual(read(self.path("f.txt")), b"edited meanwhile")
        self.assertEqual(read(self.trashed(f"f~{STAMP}.txt")), b"first")

    def test_without_renameat2(self):
        """
        Without C{renameat2} an existing trash name is still not
        overwritten.
        """
        self.patch(fsops, "_renameat2", None)
        write(self.path("a.txt"), b"1")
        self.disk.trash("a.txt", NOW)
        write(self.path("a.txt"), b"2")
        self.assertEqual(self.disk.trash("a.txt", NOW), f"a~{STAMP}-1.txt")
        self.assertEqual(read(self.trashed(f"a~{STAMP}.txt")), b"1")
        self.assertEqual(read(self.trashed(f"a~{STAMP}-1.txt")), b"2")


class TrashOffTests(DiskCase):
    keep_days = 0

    def test_trash_deletes(self):
        write(self.path("a.txt"), b"gone")
        self.assertIsNone(self.disk.trash("a.txt", NOW))
        self.assertFalse(os.path.lexists(self.path("a.txt")))
        self.assertEqual(os.listdir(self.trashed()), [])


class RestoreTests(DiskCase):

    def test_round_trip(self):
        write(self.path("docs", "report.txt"), b"v1", mtime_ns=10**18)
        trashed = self.disk.trash("docs/report.txt", NOW)
        os.rmdir(self.path("docs"))
        self.assertEqual(self.disk.restore(trashed), "docs/report.txt")
        self.assertEqual(read(self.path("docs", "report.txt")), b"v1")
        self.assertEqual(os.stat(self.path("docs", "report.txt")).st_mtime_ns, 10**18)
        self.assertEqual(os.listdir(self.trashed("docs")), [])

    def test_beside_existing(self):
        write(self.path("d", "r.txt"), b"old")
        trashed = self.disk.trash("d/r.txt", NOW)
        write(self.path("d", "r.txt"), b"new")
        write(self.path("d", "r.restored-1.txt"), b"taken")
        self.assertEqual(self.disk.restore(trashed), "d/r.restored-2.txt")
        self.assertEqual(read(self.path("d", "r.txt")), b"new")
        self.assertEqual(read(self.path("d", "r.restored-1.txt")), b"taken")
        self.assertEqual(read(self.path("d", "r.restored-2.txt")), b"old")

    def test_refused(self):
        self.assertRaisesCode("bad_path", self.disk.restore, "../state/x~20261203-141502")
        self.assertRaisesCode("bad_path", self.disk.restore, f".p2pshare~{STAMP}")
        self.assertRaisesCode("bad_path", self.disk.restore, "d/r.txt")
        self.assertRaisesCode("not_found", self.disk.restore, f"d/r~{STAMP}.txt")
        os.makedirs(self.trashed("d"))
        self.assertRaisesCode("not_found", self.disk.restore, f"d/r~{STAMP}.txt")

    def test_not_through_a_link(self):
        """
        A version whose directory became a link to elsewhere stays in the
        trash, and elsewhere is untouched.
        """
        elsewhere = os.path.join(self.base, "elsewhere")
        write(os.path.join(elsewhere, "keep"), b"k")
        write(self.path("a", "x.txt"), b"x")
        trashed = self.disk.trash("a/x.txt", NOW)
        os.rmdir(self.path("a"))
        os.symlink(elsewhere, self.path("a"))
        before = snapshot(elsewhere)
        self.assertRaisesCode("not_dir", self.disk.restore, trashed)
        self.assertEqual(snapshot(elsewhere), before)
        self.assertEqual(read(self.trashed(trashed)), b"x")


class TrashListTests(DiskCase):

    def test_list(self):
        write(self.path("b.txt"), b"bb")
        write(self.path("a", "c"), b"c")
        self.disk.trash("b.txt", NOW)
        self.disk.trash("a/c", NOW - DAY)
        write(self.trashed("notes.txt"), b"mine")  # not a version
        self.assertEqual(self.disk.trash_list(), [
            TrashedVersion("a/c", "20261202-141502", "a/c~20261202-141502", 1),
            TrashedVersion("b.txt", STAMP, f"b~{STAMP}.txt", 2),
        ])
        self.assertEqual(self.disk.trash_list(limit=1), [
            TrashedVersion("a/c", "20261202-141502", "a/c~20261202-141502", 1)])


class CleanTrashTests(DiskCase):

    def test_by_name_stamp(self):
        """
        Age is read from the name: an old version with a new mtime goes, a
        new version with an old mtime stays.
        """
        write(self.path("old", "o.txt"), b"o")
        write(self.path("new.txt"), b"n", mtime_ns=1)
        write(self.path("edge.txt"), b"e")
        self.disk.trash("old/o.txt", NOW - 31 * DAY)
        self.disk.trash("new.txt", NOW - 29 * DAY)
        self.disk.trash("edge.txt", NOW - 30 * DAY)
        os.utime(self.trashed("old", "o~20261102-141502.txt"), ns=(NOW, NOW))
        write(self.trashed("notes.txt"), b"mine", mtime_ns=1)
        self.assertEqual(self.disk.clean_trash(NOW), 2)
        self.assertEqual(sorted(os.listdir(self.trashed())),
                         ["new~20261104-141502.txt", "notes.txt"])

    def test_zero_removes_all(self):
        write(self.path("a", "x"), b"x")
        self.disk.trash("a/x", NOW)
        self.assertEqual(self.disk.clean_trash(NOW, keep_days=0), 1)
        self.assertEqual(os.listdir(self.trashed()), [])
        self.assertRaises(ValueError, self.disk.clean_trash, NOW, -1)


class CheckTests(DiskCase):

    def setUp(self):
        super().setUp()
        write(self.path("d", "f.txt"), b"abc", mtime_ns=10**18, mode=0o644)
        self.entry = entry_for(self.path("d", "f.txt"), "d/f.txt")

    def test_matches(self):
        self.assertTrue(self.disk.check(self.entry))
        self.assertTrue(self.disk.check(dir_entry("d")))
        self.assertTrue(self.disk.check(file_entry("d/gone", deleted=True)))
        self.assertTrue(self.disk.check(file_entry("nodir/gone", deleted=True)))

    def test_edit_size(self):
        write(self.path("d", "f.txt"), b"abcd", mtime_ns=10**18)
        self.assertFalse(self.disk.check(self.entry))

    def test_edit_mtime(self):
        write(self.path("d", "f.txt"), b"xyz", mtime_ns=10**18 + 1)
        self.assertFalse(self.disk.check(self.entry))

    def test_chmod(self):
        os.chmod(self.path("d", "f.txt"), 0o600)
        self.assertFalse(self.disk.check(self.entry))

    def test_replaced_by_dir(self):
        os.unlink(self.path("d", "f.txt"))
        os.mkdir(self.path("d", "f.txt"))
        self.assertFalse(self.disk.check(self.entry))
        self.assertTrue(self.disk.check(dir_entry("d/f.txt")))

    def test_presence(self):
        self.assertFalse(self.disk.check(file_entry("d/f.txt", deleted=True)))
        self.assertFalse(self.disk.check(dir_entry("d/f.txt")))
        self.assertFalse(self.disk.check(file_entry("d/other")))
        self.assertFalse(self.disk.check(dir_entry("nodir")))
        os.symlink("f.txt", self.path("d", "link"))
        self.assertFalse(self.disk.check(file_entry("d/link", deleted=True)))


class PlaceTests(DiskCase):

    def tmp(self, data, mode=0o666):
        name = PARTIAL_PREFIX + "test"
        write(self.path("d", name), data, mode=mode)
        return name

    def test_exact_perms_and_mtime(self):
        for mask in (0o077, 0o000):
            self.set_umask(mask)
            name = self.tmp(b"secret", mode=0o644)
            secret = file_entry("d/s.txt", b"secret", mtime_ns=123_456_789_012, perms=0o600)
            place_one(self.disk, name, secret, NOW)
            st_ = os.stat(self.path("d", "s.txt"))
            self.assertEqual((stat.S_IMODE(st_.st_mode), st_.st_mtime_ns), (0o600, 123_456_789_012))
            self.assertEqual(read(self.path("d", "s.txt")), b"secret")
            place_one(self.disk, self.tmp(b"exe"), file_entry("d/s.txt", b"exe", perms=0o755), NOW)
            self.assertEqual(stat.S_IMODE(os.stat(self.path("d", "s.txt")).st_mode), 0o755)
        self.assertNotIn(PARTIAL_PREFIX + "test", os.listdir(self.path("d")))

    def test_replaced_file_is_trashed(self):
        write(self.path("d", "r.txt"), b"old")
        place_one(self.disk, self.tmp(b"newer"), file_entry("d/r.txt", b"newer"), NOW)
        self.assertEqual(read(self.path("d", "r.txt")), b"newer")
        self.assertEqual(read(self.trashed("d", f"r~{STAMP}.txt")), b"old")

    def test_in_the_way(self):
        os.makedirs(self.path("d", "r.txt"))
        name = self.tmp(b"x")
        self.assertRaisesCode("not_regular", partial(place_one, self.disk), name,
                              file_entry("d/r.txt", b"x"), NOW)
        self.assertTrue(os.path.isdir(self.path("d", "r.txt")))
        self.assertEqual(read(self.path("d", name)), b"x")

    def test_refused(self):
        write(self.path("d", "user.txt"), b"u")
        self.assertRaisesCode("bad_path", partial(place_one, self.disk), "user.txt",
                              file_entry("d/r.txt", b"u"), NOW)
        self.assertRaisesCode("changed", partial(place_one, self.disk), self.tmp(b"short"),
                              file_entry("d/r.txt", b"longer"), NOW)
        self.assertRaisesCode("not_found", partial(place_one, self.disk), PARTIAL_PREFIX + "none",
                              file_entry("d/r.txt", b"u"), NOW)
        self.assertRaisesCode("bad_entry", partial(place_one, self.disk), self.tmp(b""),
                              dir_entry("d/r.txt"), NOW)
        self.assertFalse(os.path.lexists(self.path("d", "r.txt")))


class CopyLocalTests(DiskCase):

    def test_copy(self):
        write(self.path("a.txt"), b"content", mtime_ns=5)
        target = file_entry("b/c/a.txt", b"content", mtime_ns=777, perms=0o640)
        write(self.path("b", "c", "a.txt"), b"before")
        self.assertTrue(self.disk.copy_local("a.txt", target, NOW))
        self.assertEqual(read(self.path("b", "c", "a.txt")), b"content")
        st_ = os.stat(self.path("b", "c", "a.txt"))
        self.assertEqual((stat.S_IMODE(st_.st_mode), st_.st_mtime_ns), (0o640, 777))
        self.assertEqual((read(self.path("a.txt")), os.stat(self.path("a.txt")).st_mtime_ns),
                         (b"content", 5))
        self.assertEqual(read(self.trashed("b", "c", f"a~{STAMP}.txt")), b"before")
        self.assertEqual(sorted(os.listdir(self.path("b", "c"))), ["a.txt"])

    def test_source_changed(self):
        write(self.path("a.txt"), b"CONTENT")
        self.assertFalse(self.disk.copy_local("a.txt", file_entry("b.txt", b"content"), NOW))
        write(self.path("a.txt"), b"content and more")
        self.assertFalse(self.disk.copy_local("a.txt", file_entry("b.txt", b"content"), NOW))
        self.assertFalse(self.disk.copy_local("gone.txt", file_entry("b.txt", b"content"), NOW))
        self.assertFalse(self.disk.copy_local("no/gone.txt", file_entry("b.txt", b"content"), NOW))
        os.symlink("a.txt", self.path("link"))
        self.assertFalse(self.disk.copy_local("link", file_entry("b.txt", b"content and more"),
                                              NOW))
        self.assertEqual(sorted(os.listdir(self.root)), ["a.txt", "link"])

    def test_grown_source_not_copied_whole(self):
        """
        A source larger than the entry costs one byte more than the entry's
        size to notice, not the whole file.
        """
        write(self.path("a.txt"), b"content" + b"x" * 100_000)
        copied = []
        real = fsops.copy_fd

        def counting(src, dst, limit=None):
            copied.append(real(src, dst, limit))
            return copied[-1]

        self.patch(fsops, "copy_fd", counting)
        self.assertFalse(self.disk.copy_local("a.txt", file_entry("b.txt", b"content"), NOW))
        self.assertEqual(copied, [])  # refused on the size alone
        write(self.path("a.txt"), b"cONTENT")
        self.assertFalse(self.disk.copy_local("a.txt", file_entry("b.txt", b"content"), NOW))
        self.assertEqual(copied, [7])


class MoveLocalTests(DiskCase):

    def test_move(self):
        write(self.path("old.txt"), b"data", mtime_ns=42, mode=0o644)
        src = entry_for(self.path("old.txt"), "old.txt")
        write(self.path("n", "new.txt"), b"previous")
        dst = file_entry("n/new.txt", b"data", mtime_ns=99, perms=0o600)
        self.assertTrue(self.disk.move_local(src, dst, NOW))
        self.assertFalse(os.path.lexists(self.path("old.txt")))
        st_ = os.stat(self.path("n", "new.txt"))
        self.assertEqual(
            (read(self.path("n", "new.txt")), stat.S_IMODE(st_.st_mode), st_.st_mtime_ns),
            (b"data", 0o600, 99))
        self.assertEqual(read(self.trashed("n", f"new~{STAMP}.txt")), b"previous")

    def test_source_changed(self):
        write(self.path("old.txt"), b"data", mtime_ns=42)
        src = entry_for(self.path("old.txt"), "old.txt")
        os.utime(self.path("old.txt"), ns=(43, 43))
        self.assertFalse(self.disk.move_local(src, file_entry("new.txt", b"data"), NOW))
        self.assertFalse(self.disk.move_local(src, file_entry("new.txt", b"other"), NOW))
        self.assertEqual(os.listdir(self.root), ["old.txt"])


class SetMetaTests(DiskCase):

    def test_file(self):
        self.set_umask(0o077)
        write(self.path("f"), b"same", mtime_ns=1, mode=0o600)
        self.disk.set_meta(file_entry("f", b"ignored", mtime_ns=2_000_000_007, perms=0o754))
        st_ = os.stat(self.path("f"))
        self.assertEqual((stat.S_IMODE(st_.st_mode), st_.st_mtime_ns, read(self.path("f"))),
                         (0o754, 2_000_000_007, b"same"))

    def test_dir(self):
        os.makedirs(self.path("d"))
        self.disk.set_meta(dir_entry("d", perms=0o711))
        self.assertEqual(stat.S_IMODE(os.stat(self.path("d")).st_mode), 0o711)

    def test_refused(self):
        self.assertRaisesCode("not_found", self.disk.set_meta, file_entry("nothing"))
        os.makedirs(self.path("d"))
        self.assertRaisesCode("not_regular", self.disk.set_meta, file_entry("d"))
        self.assertRaisesCode("bad_entry", self.disk.set_meta, file_entry("d", deleted=True))


class MkdirTests(DiskCase):

    def test_parents_and_perms(self):
        self.set_umask(0o022)
        self.disk.mkdir(dir_entry("a/b/c", perms=0o777), NOW)
        self.assertEqual(stat.S_IMODE(os.stat(self.path("a", "b", "c")).st_mode), 0o777)
        self.disk.mkdir(dir_entry("a/b/c", perms=0o700), NOW)
        self.assertEqual(stat.S_IMODE(os.stat(self.path("a", "b", "c")).st_mode), 0o700)

    def test_file_in_the_way_is_trashed(self):
        write(self.path("a", "b"), b"was a file")
        self.disk.mkdir(dir_entry("a/b"), NOW)
        self.assertTrue(os.path.isdir(self.path("a", "b")))
        self.assertEqual(read(self.trashed("a", f"b~{STAMP}")), b"was a file")

    def test_file_in_the_way_of_a_parent(self):
        write(self.path("a"), b"file")
        self.assertRaisesCode("not_dir", self.disk.mkdir, dir_entry("a/b"), NOW)
        self.assertEqual(read(self.path("a")), b"file")


class RmdirTests(DiskCase):

    def test_rmdir(self):
        os.makedirs(self.path("a", "b"))
        self.assertFalse(self.disk.rmdir("a"))
        self.assertTrue(self.disk.rmdir("a/b"))
        self.assertFalse(self.disk.rmdir("a/b"))
        self.assertFalse(self.disk.rmdir("x/y"))
        self.assertEqual(os.listdir(self.path("a")), [])
        write(self.path("f"), b"")
        self.assertRaisesCode("not_dir", self.disk.rmdir, "f")


class ConflictCopyTests(DiskCase):

    def test_conflict_copy(self):
        write(self.path("d", "n.txt"), b"mine")
        self.assertTrue(self.disk.conflict_copy("d/n.txt", "d/n.conflict-1.txt"))
        self.assertEqual(read(self.path("d", "n.conflict-1.txt")), b"mine")
        self.assertFalse(os.path.lexists(self.path("d", "n.txt")))

    def test_refuses_to_overwrite(self):
        write(self.path("n.txt"), b"mine")
        write(self.path("n.c.txt"), b"theirs")
        self.assertFalse(self.disk.conflict_copy("n.txt", "n.c.txt"))
        self.assertEqual((read(self.path("n.txt")), read(self.path("n.c.txt"))),
                         (b"mine", b"theirs"))
        self.assertRaisesCode("bad_path", self.disk.conflict_copy, "n.txt", "d/n.c.txt")
        self.assertRaisesCode("not_found", self.disk.conflict_copy, "none.txt", "none.c.txt")


class FreeBytesTests(DiskCase):

    def test_free_bytes(self):
        st_ = os.statvfs(self.root)
        self.assertLess(abs(self.disk.free_bytes() - st_.f_bavail * st_.f_frsize), 64 << 20)
        self.assertGreater(self.disk.free_bytes(), 0)


class LinkTests(DiskCase):
    """
    A link planted as a directory component (C{share/a -> elsewhere}) is
    refused by every operation, and nothing in elsewhere changes.
    """

    def setUp(self):
        super().setUp()
        self.elsewhere = os.path.join(self.base, "elsewhere")
        write(os.path.join(self.elsewhere, "x.txt"), b"outside", mtime_ns=5, mode=0o644)
        os.makedirs(os.path.join(self.elsewhere, "sub"))
        os.symlink(self.elsewhere, self.path("a"))
        write(self.path("real", "x.txt"), b"outside", mtime_ns=5, mode=0o644)
        write(self.path("real", PARTIAL_PREFIX + "t"), b"outside")
        self.before = snapshot(self.elsewhere)

    def tearDown(self):
        self.assertEqual(snapshot(self.elsewhere), self.before)

    def test_every_operation(self):
        x = file_entry("a/x.txt", b"outside", mtime_ns=5)
        ops = [
            (self.disk.check, x),
            (self.disk.check, file_entry("a/x.txt", deleted=True)),
            (self.disk.check, dir_entry("a/sub")),
            (self.disk.trash, "a/x.txt", NOW),
            (self.disk.rmdir, "a/sub"),
            (partial(place_one, self.disk), PARTIAL_PREFIX + "t",
             file_entry("a/x.txt", b"outside"), NOW),
            (self.disk.copy_local, "real/x.txt", file_entry("a/new.txt", b"outside"), NOW),
            (self.disk.copy_local, "a/x.txt", file_entry("real/new.txt", b"outside"), NOW),
            (self.disk.move_local, entry_for(self.path("real", "x.txt"), "real/x.txt"),
             file_entry("a/x.txt", b"outside", mtime_ns=6), NOW),
            (self.disk.move_local, x, file_entry("real/y.txt", b"outside"), NOW),
            (self.disk.set_meta, file_entry("a/x.txt", perms=0o777)),
            (self.disk.set_meta, dir_entry("a/sub", perms=0o777)),
            (self.disk.mkdir, dir_entry("a/sub/new"), NOW),
            (self.disk.conflict_copy, "a/x.txt", "a/x.c.txt"),
        ]
        for f, *args in ops:
            self.assertRaisesCode("not_dir", f, *args)
        self.assertEqual(sorted(os.listdir(self.path("real"))), [PARTIAL_PREFIX + "t", "x.txt"])

    def test_link_as_the_last_component(self):
        """
        A link at the name itself is not followed either: its target's
        metadata and content stay as they are.
        """
        os.symlink(os.path.join(self.elsewhere, "x.txt"), self.path("l.txt"))
        os.symlink(os.path.join(self.elsewhere, "sub"), self.path("ld"))
        self.assertFalse(self.disk.check(file_entry("l.txt", b"outside", mtime_ns=5)))
        self.assertRaisesCode("not_regular", self.disk.set_meta, file_entry("l.txt", perms=0o777))
        self.assertRaisesCode("not_dir", self.disk.set_meta, dir_entry("ld", perms=0o777))
        self.assertRaisesCode("not_regular", self.disk.trash, "l.txt", NOW)
        os.symlink(os.path.join(self.elsewhere, "x.txt"), self.path("real", "l.txt"))
        self.assertRaisesCode("not_regular", partial(place_one, self.disk), PARTIAL_PREFIX + "t",
                              file_entry("real/l.txt", b"outside"), NOW)
        self.assertRaisesCode("not_dir", self.disk.mkdir, dir_entry("l.txt"), NOW)
        self.assertRaisesCode("not_dir", self.disk.rmdir, "ld")
        self.assertRaisesCode("not_regular", self.disk.conflict_copy, "l.txt", "l.c.txt")
        self.assertTrue(os.path.islink(self.path("l.txt")))


class ReservedTests(DiskCase):
    """
    Our own names cannot be reached through a peer's path: C{.p2pshare*}
    anywhere, and the state directory even under another name.
    """

    def setUp(self):
        super().setUp()
        self.state = self.path("state")
        self.disk = Disk(self.root, self.state)
        self.addCleanup(self.disk.close)
        write(os.path.join(self.state, "lock"), b"ours", mode=0o600)
        write(self.path(".p2pshare", "identity"), b"key", mode=0o600)
        self.disk.trash_list()  # creates state/trash
        self.before = snapshot(self.root)

    def test_reserved_prefix(self):
        paths = (".p2pshare/identity", ".p2pshare", PARTIAL_PREFIX + "x", "a/.p2pshare-x/y", "../x")
        for path in paths:
            for f, *args in [
                (self.disk.check, file_entry(path)),
                (self.disk.trash, path, NOW),
                (self.disk.rmdir, path),
                (partial(place_one, self.disk), PARTIAL_PREFIX + "t", file_entry(path), NOW),
                (self.disk.copy_local, path, file_entry("b"), NOW),
                (self.disk.copy_local, "b", file_entry(path), NOW),
                (self.disk.set_meta, dir_entry(path, perms=0o777)),
                (self.disk.mkdir, dir_entry(path), NOW),
                (self.disk.conflict_copy, path, path + "c"),
            ]:
                self.assertRaisesCode("bad_path", f, *args)
        self.assertEqual(snapshot(self.root), self.before)

    def test_state_dir_by_identity(self):
        lock = file_entry("state/lock", b"ours")
        for f, *args in [
            (self.disk.check, lock),
            (self.disk.check, dir_entry("state")),
            (self.disk.trash, "state/lock", NOW),
            (self.disk.trash, f"state/trash/x~{STAMP}", NOW),
            (self.disk.rmdir, "state/trash"),
            (self.disk.rmdir, "state"),
            (self.disk.set_meta, dir_entry("state", perms=0o777)),
            (self.disk.set_meta, file_entry("state/lock", perms=0o666)),
            (self.disk.mkdir, dir_entry("state"), NOW),
            (self.disk.mkdir, dir_entry("state/new"), NOW),
            (self.disk.copy_local, "state/lock", file_entry("b", b"ours"), NOW),
        ]:
            self.assertRaisesCode("reserved", f, *args)
        self.assertEqual(snapshot(self.root), self.before)


class DiscardTests(DiskCase):
    def test_removes_our_temporary_file_only(self):
        write(self.path("d", ".p2pshare-tmp-1"), b"late bytes")
        write(self.path("d", "keep"), b"user")
        self.disk.discard("d/file", ".p2pshare-tmp-1")
        self.assertEqual(os.listdir(self.path("d")), ["keep"])
        self.disk.discard("d/file", ".p2pshare-tmp-1")  # already gone: fine
        self.disk.discard("missing/file", ".p2pshare-tmp-1")  # no directory: fine
        self.assertRaisesCode("bad_path", self.disk.discard, "d/file", "keep")
        self.assertRaisesCode("bad_path", self.disk.discard, "d/file", "../.p2pshare-x")
        self.assertEqual(read(self.path("d", "keep")), b"user")
