"""
Tests for L{p2ptwisted.share}: what a scan lists (and refuses to list), the
hash cache, applying scans against this node's own changes, and the only
ways files in the share are opened.
"""

import os
import threading

from blake3 import blake3
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import share as share_module
from p2ptwisted import wire
from p2ptwisted.share import (
    CACHE_FILE,
    PARTIAL_PREFIX,
    Share,
    ShareError,
    conflict_name,
)
from p2ptwisted.wire import FileEntry


def digest(data: bytes) -> str:
    return blake3(data).hexdigest()


def write(path, data: bytes, mtime_ns=None):
    """
    Write C{data} to C{path} (making its directory), optionally setting
    its mtime; return the path.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def call_with_timeout(testcase, f, *args, timeout=10.0):
    """
    Call C{f} in a daemon thread and fail (rather than hang the run) if it
    does not return within C{timeout} seconds: for code that must not
    block on a FIFO.
    """
    box = {}

    def run():
        try:
            box["result"] = f(*args)
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        testcase.fail(f"{f.__name__} blocked for more than {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


class ShareTestCase(SynchronousTestCase):
    """
    A share and a state directory beside it, plus an "outside" directory
    that nothing may ever reach or change through the share.
    """

    def setUp(self):
        base = self.mktemp()
        self.root = os.path.join(base, "share")
        self.state = os.path.join(base, "state")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        self.share = self.make_share()

    def make_share(self, state=None):
        share = Share(root=self.root, state_dir=state or self.state)
        self.addCleanup(share.close)
        return share

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def scan_and_apply(self, share=None):
        share = share or self.share
        result = share.scan()
        share.apply(result)
        return result

    def open_ok(self, path, content_hash):
        fd, local = self.share.open_for_reading(path, content_hash)
        self.addCleanup(os.close, fd)
        return fd, local

    def read_all(self, fd):
        chunks = []
        offset = 0
        while True:
            chunk = os.pread(fd, 1 << 16, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def assertRefused(self, codes, path, content_hash):
        """
        C{open_for_reading} refuses with one of C{codes} (never returning
        an fd, whose content we would then have leaked).
        """
        if isinstance(codes, str):
            codes = (codes,)
        try:
            fd, local = self.share.open_for_reading(path, content_hash)
        except ShareError as e:
            self.assertIn(e.code, codes)
            return e
        data = self.read_all(fd)
        os.close(fd)
        self.fail(f"open_for_reading({path!r}) succeeded and read {data[:40]!r}")


class ScanTests(ShareTestCase):
    def test_lists_regular_files_recursively(self):
        """
        Every regular file is listed under its "/"-separated path, with its
        size, mtime and BLAKE3 hash; empty files and empty directories do
        not confuse the walk.
        """
        contents = {
            "top.txt": b"top level\n",
            "empty": b"",
            "a/one.bin": os.urandom(1000),
            "a/b/c/deep.txt": b"deep " * 1000,
            "a/b/sibling": b"x",
            "big.bin": os.urandom(3 * share_module.HASH_READ + 17),
        }
        for i, (rel, data) in enumerate(sorted(contents.items())):
            write(self.path(*rel.split("/")), data, mtime_ns=1_600_000_000_123_456_789 + i)
        os.makedirs(self.path("emptydir", "nested"))

        result = self.share.scan()
        self.assertEqual(sorted(result.files), sorted(contents))
        self.assertEqual(result.skipped, [])
        for rel, data in contents.items():
            local = result.files[rel]
            st = os.stat(self.path(*rel.split("/")))
            self.assertEqual(
                local.entry,
                FileEntry(path=rel, size=len(data), mtime_ns=st.st_mtime_ns, hash=digest(data)),
            )
            self.assertEqual(local.disk_path, rel)
            self.assertEqual(local.inode, st.st_ino)
            wire.check_path(local.entry.path)

    def test_skips_symlinks(self):
        """
        Links are never followed or listed: not to a file in the share, not
        to a directory in the share, not to anything outside it, not
        dangling.
        """
        write(self.path("real.txt"), b"real")
        write(self.path("dir", "inner.txt"), b"inner")
        write(os.path.join(self.outside, "secret.txt"), b"secret")
        write(os.path.join(self.outside, "sub", "more.txt"), b"more secret")
        os.symlink("real.txt", self.path("link-to-file"))
        os.symlink("dir", self.path("link-to-dir"))
        os.symlink(os.path.join(self.outside, "secret.txt"), self.path("out-file"))
        os.symlink(self.outside, self.path("out-dir"))
        os.symlink(os.path.join(self.outside, "nothing"), self.path("dangling"))
        os.symlink(os.path.join(self.outside, "sub"), self.path("dir", "nested-out"))

        result = self.share.scan()
        self.assertEqual(sorted(result.files), ["dir/inner.txt", "real.txt"])
        hashes = {f.entry.hash for f in result.files.values()}
        self.assertNotIn(digest(b"secret"), hashes)
        self.assertNotIn(digest(b"more secret"), hashes)

    def test_skips_fifo_without_blocking(self):
        """
        A FIFO is neither listed nor opened (opening one for reading would
        block until a writer appears).
        """
        write(self.path("file.txt"), b"data")
        os.mkfifo(self.path("pipe"))
        os.mkdir(self.path("d"))
        os.mkfifo(self.path("d", "pipe2"))
        result = call_with_timeout(self, self.share.scan)
        self.assertEqual(sorted(result.files), ["file.txt"])

    def test_skips_reserved_names(self):
        """
        Files and directories whose names start with ".p2pshare" (partial
        downloads, state) are neither listed nor walked into; names that
        merely contain it are fine.
        """
        write(self.path("keep.txt"), b"keep")
        write(self.path(PARTIAL_PREFIX + "0123"), b"partial")
        write(self.path(".p2pshare"), b"exact prefix")
        write(self.path(".p2pshare-state", "node-id"), b"state")
        write(self.path("sub", ".p2pshare-part-x"), b"partial")
        write(self.path("sub", "x.p2pshare"), b"suffix is fine")
        result = self.share.scan()
        self.assertEqual(sorted(result.files), ["keep.txt", "sub/x.p2pshare"])

    def test_skips_state_dir_inside_share(self):
        """
        A state directory inside the share under an ordinary name is not
        listed, neither before nor after the scan has written its hash
        cache into it.
        """
        state = self.path("node-state")
        write(os.path.join(state, "node-id"), b"abc")
        write(self.path("file.txt"), b"data")
        share = self.make_share(state=state)
        for _ in range(2):
            result = self.scan_and_apply(share)
            self.assertEqual(sorted(result.files), ["file.txt"])
        self.assertTrue(os.path.exists(os.path.join(state, CACHE_FILE)))

    def test_skips_state_dir_created_by_first_scan(self):
        """
        Even a state directory that does not exist yet (the first scan
        creates it for its cache) is not listed by later scans.
        """
        state = self.path("later-state")
        write(self.path("file.txt"), b"data")
        share = self.make_share(state=state)
        share.scan()
        self.assertTrue(os.path.exists(os.path.join(state, CACHE_FILE)))
        self.assertEqual(sorted(share.scan().files), ["file.txt"])

    def test_non_nfc_name(self):
        """
        A decomposed name on disk is listed under its NFC form, and can be
        opened by that NFC path.
        """
        disk_name = "e\u0301.txt"
        write(self.path("de\u0301j\u00e0", disk_name), b"accent")
        self.scan_and_apply()
        nfc = "d\u00e9j\u00e0/\u00e9.txt"
        self.assertEqual(list(self.share.files), [nfc])
        local = self.share.files[nfc]
        self.assertEqual(local.entry.path, nfc)
        self.assertEqual(local.disk_path, "de\u0301j\u00e0/" + disk_name)
        fd, opened = self.open_ok(nfc, digest(b"accent"))
        self.assertEqual(self.read_all(fd), b"accent")
        self.assertEqual(opened, local)

    def test_names_equal_once_normalised(self):
        """
        Two files whose names differ only in normalisation give one entry
        and one skip note, never two entries for one path.
        """
        write(self.path("\u00e9.txt"), b"composed")
        write(self.path("e\u0301.txt"), b"decomposed")
        result = self.share.scan()
        self.assertEqual(list(result.files), ["\u00e9.txt"])
        self.assertEqual(len(result.skipped), 1)
        self.assertIn("same name", result.skipped[0])

    def test_names_that_cannot_travel(self):
        """
        Names with a backslash or a control character, and names that are
        not valid UTF-8, are skipped and reported (escaped) in C{skipped}.
        """
        write(self.path("ok.txt"), b"ok")
        write(self.path("back\\slash.txt"), b"1")
        write(self.path("ctl\x01.txt"), b"2")
        write(self.path("new\nline.txt"), b"3")
        write(self.path("dir\\x", "inside.txt"), b"4")
        with open(os.path.join(os.fsencode(self.root), b"bad\xff.txt"), "wb") as f:
            f.write(b"5")

        result = self.share.scan()
        self.assertEqual(list(result.files), ["ok.txt"])
        self.assertEqual(len(result.skipped), 5, result.skipped)
        for note in result.skipped:
            self.assertFalse(wire.has_control_chars(note), note)
            note.encode("utf-8")  # no lone surrogates: safe for any log
        joined = " ".join(result.skipped)
        for fragment in ("slash.txt", "ctl", "line.txt", "inside.txt", "bad"):
            self.assertIn(fragment, joined)

    def test_over_long_path_skipped(self):
        """
        A file whose path would exceed the wire's byte limit (built with
        directory-relative calls, past PATH_MAX) is skipped and reported.
        """
        write(self.path("ok.txt"), b"ok")
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
        result = self.share.scan()
        self.assertEqual(list(result.files), ["ok.txt"])
        self.assertEqual(len(result.skipped), 1, result.skipped)


class HashCacheTests(ShareTestCase):
    def setUp(self):
        super().setUp()
        self.hashed = []
        original = share_module.hash_fd

        def counting(fd, *args):
            self.hashed.append(os.fstat(fd).st_ino)
            return original(fd, *args)

        self.patch(share_module, "hash_fd", counting)
        write(self.path("a.txt"), b"alpha", mtime_ns=1_000_000_000_000_000_000)
        write(self.path("d", "b.txt"), b"beta", mtime_ns=1_000_000_000_000_000_000)

    def test_unchanged_share_not_reread(self):
        first = self.share.scan()
        self.assertEqual(len(self.hashed), 2)
        del self.hashed[:]
        second = self.share.scan()
        self.assertEqual(self.hashed, [])
        self.assertEqual(first.files, second.files)

    def test_modified_file_rehashed(self):
        """
        New content with a new mtime is hashed again, and only that file.
        """
        self.share.scan()
        del self.hashed[:]
        write(self.path("a.txt"), b"ALPHA", mtime_ns=1_000_000_000_000_000_001)
        result = self.share.scan()
        self.assertEqual(self.hashed, [os.stat(self.path("a.txt")).st_ino])
        self.assertEqual(result.files["a.txt"].entry.hash, digest(b"ALPHA"))
        self.assertEqual(result.files["d/b.txt"].entry.hash, digest(b"beta"))

    def test_replaced_file_rehashed(self):
        """
        A file replaced by another inode with the same size and mtime is
        hashed again: the inode is part of the key.
        """
        self.share.scan()
        del self.hashed[:]
        tmp = write(self.path("d", "new"), b"BETA", mtime_ns=1_000_000_000_000_000_000)
        os.rename(tmp, self.path("d", "b.txt"))
        result = self.share.scan()
        self.assertEqual(len(self.hashed), 1)
        self.assertEqual(result.files["d/b.txt"].entry.hash, digest(b"BETA"))

    def test_new_share_object_reuses_cache_file(self):
        self.share.scan()
        self.assertTrue(os.path.exists(os.path.join(self.state, CACHE_FILE)))
        del self.hashed[:]
        again = self.make_share()
        result = again.scan()
        self.assertEqual(self.hashed, [])
        self.assertEqual(result.files["a.txt"].entry.hash, digest(b"alpha"))
        self.assertEqual(result.files["d/b.txt"].entry.hash, digest(b"beta"))

    def test_corrupt_cache_file(self):
        """
        A cache file that is not what we wrote is ignored: files are hashed
        again, correctly.
        """
        os.makedirs(self.state, exist_ok=True)
        for junk in (b"{not json", b"[1, 2]", b'{"a.txt": "nope", "d/b.txt": [4, 1, 2, 3]}',
                     b"\xff\xfe"):
            with open(os.path.join(self.state, CACHE_FILE), "wb") as f:
                f.write(junk)
            del self.hashed[:]
            result = self.make_share().scan()
            self.assertEqual(len(self.hashed), 2, junk)
            self.assertEqual(result.files["a.txt"].entry.hash, digest(b"alpha"))

    def test_recorded_file_not_rehashed(self):
        """
        A file this node recorded itself (a finished download) is not hashed
        again by the next scan.
        """
        self.scan_and_apply()
        data = b"downloaded"
        write(self.path("got.txt"), data, mtime_ns=1_500_000_000_000_000_000)
        st = os.stat(self.path("got.txt"))
        entry = FileEntry("got.txt", len(data), st.st_mtime_ns, digest(data))
        self.share.record(entry, disk_path="got.txt", inode=st.st_ino)
        del self.hashed[:]
        result = self.share.scan()
        self.assertEqual(self.hashed, [])
        self.assertEqual(result.files["got.txt"].entry, entry)


class ApplyTests(ShareTestCase):
    def test_reports_changes(self):
        write(self.path("same.txt"), b"same")
        write(self.path("edit.txt"), b"before", mtime_ns=10**18)
        write(self.path("gone.txt"), b"gone")
        changed, gone = self.share.apply(self.share.scan())
        self.assertEqual(sorted(e.path for e in changed), ["edit.txt", "gone.txt", "same.txt"])
        self.assertEqual(gone, [])

        write(self.path("edit.txt"), b"after!", mtime_ns=10**18 + 1)
        os.unlink(self.path("gone.txt"))
        write(self.path("new", "file.txt"), b"new")
        changed, gone = self.share.apply(self.share.scan())
        self.assertEqual(sorted(e.path for e in changed), ["edit.txt", "new/file.txt"])
        by_path = {e.path: e for e in changed}
        self.assertEqual(by_path["edit.txt"].hash, digest(b"after!"))
        self.assertEqual(gone, ["gone.txt"])
        self.assertEqual(sorted(self.share.files), ["edit.txt", "new/file.txt", "same.txt"])

        self.assertEqual(self.share.apply(self.share.scan()), ([], []))

    def test_recorded_after_scan_started_is_kept(self):
        """
        A scan that started before this node published a download does not
        drop that file when applied; a later scan then sees it on disk.
        """
        write(self.path("old.txt"), b"old")
        self.scan_and_apply()
        stale = self.share.scan()

        data = b"fresh download"
        write(self.path("got.txt"), data)
        st = os.stat(self.path("got.txt"))
        entry = FileEntry("got.txt", len(data), st.st_mtime_ns, digest(data))
        self.share.record(entry, disk_path="got.txt", inode=st.st_ino)

        changed, gone = self.share.apply(stale)
        self.assertEqual(gone, [])
        self.assertEqual(changed, [])
        self.assertEqual(self.share.files["got.txt"].entry, entry)

        fresh = self.share.scan()
        changed, gone = self.share.apply(fresh)
        self.assertEqual((changed, gone), ([], []))
        self.assertEqual(self.share.files["got.txt"].entry, entry)

        # Once a scan from after the record is applied, the disk rules again.
        os.unlink(self.path("got.txt"))
        changed, gone = self.share.apply(self.share.scan())
        self.assertEqual(gone, ["got.txt"])

    def test_recorded_over_older_version(self):
        """
        A file replaced by a download after a scan started keeps the new
        entry, not the one the stale scan hashed.
        """
        write(self.path("f.txt"), b"version 1", mtime_ns=10**18)
        self.scan_and_apply()
        stale = self.share.scan()
        write(self.path("f.txt"), b"version 2", mtime_ns=10**18 + 5)
        st = os.stat(self.path("f.txt"))
        entry = FileEntry("f.txt", st.st_size, st.st_mtime_ns, digest(b"version 2"))
        self.share.record(entry, disk_path="f.txt", inode=st.st_ino)
        self.share.apply(stale)
        self.assertEqual(self.share.files["f.txt"].entry, entry)

    def test_forgotten_after_scan_started_stays_gone(self):
        """
        A file this node moved away after a scan started is not brought
        back by that scan.
        """
        write(self.path("moved.txt"), b"moved")
        self.scan_and_apply()
        stale = self.share.scan()
        self.assertIn("moved.txt", stale.files)
        self.share.forget("moved.txt")
        changed, gone = self.share.apply(stale)
        self.assertNotIn("moved.txt", self.share.files)
        self.assertEqual(changed, [])


class OpenForReadingTests(ShareTestCase):
    def setUp(self):
        super().setUp()
        self.data = b"catalogued content\n" * 100
        self.hash = digest(self.data)
        write(self.path("dir", "file.txt"), self.data, mtime_ns=10**18)
        write(self.path("top.txt"), self.data, mtime_ns=10**18)
        self.scan_and_apply()

    def test_opens_catalogued_file(self):
        fd, local = self.open_ok("dir/file.txt", self.hash)
        self.assertEqual(self.read_all(fd), self.data)
        self.assertEqual(local.entry.path, "dir/file.txt")

    def test_not_in_catalog(self):
        write(self.path("uncatalogued.txt"), b"new")
        for path in ("uncatalogued.txt", "nope", "dir", "../share/top.txt", "dir/../top.txt",
                     "/etc/passwd", "top.txt/", ".p2pshare"):
            self.assertRefused("not_found", path, self.hash)
            self.assertRefused("not_found", path, digest(b"new"))

    def test_other_hash(self):
        self.assertRefused("not_found", "top.txt", digest(b"something else"))
        self.assertRefused("not_found", "top.txt", "0" * 64)

    def test_size_changed(self):
        write(self.path("top.txt"), self.data + b"more", mtime_ns=10**18)
        self.assertRefused("changed", "top.txt", self.hash)

    def test_mtime_changed(self):
        os.utime(self.path("top.txt"), ns=(10**18 + 1, 10**18 + 1))
        self.assertRefused("changed", "top.txt", self.hash)

    def test_deleted(self):
        os.unlink(self.path("dir", "file.txt"))
        self.assertRefused("not_found", "dir/file.txt", self.hash)
        os.rmdir(self.path("dir"))
        self.assertRefused("not_found", "dir/file.txt", self.hash)

    def test_file_replaced_by_symlink(self):
        """
        A link planted in place of a catalogued file is refused, even when
        its target outside looks exactly like the catalogued file.
        """
        secret = write(os.path.join(self.outside, "secret"), self.data, mtime_ns=10**18)
        os.unlink(self.path("top.txt"))
        os.symlink(secret, self.path("top.txt"))
        self.assertRefused("not_regular", "top.txt", self.hash)
        os.unlink(self.path("dir", "file.txt"))
        os.symlink("../top.txt", self.path("dir", "file.txt"))
        self.assertRefused("not_regular", "dir/file.txt", self.hash)

    def test_directory_replaced_by_symlink(self):
        """
        A link planted in place of a directory on the path is never
        followed, even to an identical copy outside.
        """
        write(os.path.join(self.outside, "file.txt"), self.data, mtime_ns=10**18)
        os.rename(self.path("dir"), self.path("moved"))
        os.symlink(self.outside, self.path("dir"))
        self.assertRefused(("not_regular", "not_found"), "dir/file.txt", self.hash)

    def test_directory_replaced_by_file(self):
        os.rename(self.path("dir"), self.path("moved"))
        write(self.path("dir"), b"a file now")
        self.assertRefused(("not_regular", "not_found"), "dir/file.txt", self.hash)

    def test_file_replaced_by_fifo(self):
        """
        A FIFO planted in place of a catalogued file is refused at once,
        without blocking.
        """
        os.unlink(self.path("top.txt"))
        os.mkfifo(self.path("top.txt"))
        with self.assertRaises(ShareError) as cm:
            call_with_timeout(self, self.share.open_for_reading, "top.txt", self.hash)
        self.assertEqual(cm.exception.code, "not_regular")

    def test_file_replaced_by_directory(self):
        os.unlink(self.path("top.txt"))
        os.mkdir(self.path("top.txt"))
        self.assertRefused("not_regular", "top.txt", self.hash)


class ConflictNameTests(SynchronousTestCase):
    HASH = "1a2b3c4d" + "e" * 56

    def test_examples(self):
        examples = {
            "notes.txt": "notes.conflict-1a2b3c4d.txt",
            "dir/archive.tar.gz": "dir/archive.tar.conflict-1a2b3c4d.gz",
            ".bashrc": ".bashrc.conflict-1a2b3c4d",
            "noext": "noext.conflict-1a2b3c4d",
            "a.d/noext": "a.d/noext.conflict-1a2b3c4d",
            "a/b/.hidden.txt": "a/b/.hidden.conflict-1a2b3c4d.txt",
        }
        for path, expected in examples.items():
            self.assertEqual(conflict_name(path, self.HASH), expected)

    def test_depends_only_on_hash_prefix(self):
        self.assertEqual(
            conflict_name("x.txt", "deadbeef" + "0" * 56),
            conflict_name("x.txt", "deadbeef" + "f" * 56),
        )
        self.assertNotEqual(conflict_name("x.txt", "deadbeef" + "0" * 56),
                            conflict_name("x.txt", "deadbeee" + "0" * 56))

    def test_valid_paths_stay_valid(self):
        """
        The conflict name of a valid path is a valid path too, in the same
        directory.
        """
        for path in ("notes.txt", "dir/archive.tar.gz", ".bashrc", "noext", "a/b/c.d.e",
                     "x" * 200 + ".txt"):
            name = conflict_name(path, self.HASH)
            self.assertEqual(wire.check_path(name), name)
            self.assertEqual(name.rpartition("/")[0], path.rpartition("/")[0])

    def test_longest_component_stays_valid(self):
        """
        Even a component at the 255-byte limit gets a conflict name that is
        a valid path and that a file system can hold.
        """
        path = "dir/" + "n" * (wire.MAX_COMPONENT_BYTES - 4) + ".txt"
        wire.check_path(path)
        name = conflict_name(path, self.HASH)
        self.assertEqual(wire.check_path(name), name)



class OpenParentTests(ShareTestCase):
    def test_creates_missing_directories(self):
        fd = self.share.open_parent("a/b/c/file.txt")
        self.addCleanup(os.close, fd)
        self.assertTrue(os.path.isdir(self.path("a", "b", "c")))
        self.assertFalse(os.path.exists(self.path("a", "b", "c", "file.txt")))
        self.assertEqual(os.fstat(fd).st_ino, os.stat(self.path("a", "b", "c")).st_ino)
        # existing directories are simply opened
        fd2 = self.share.open_parent("a/b/other.txt")
        self.addCleanup(os.close, fd2)
        self.assertEqual(os.fstat(fd2).st_ino, os.stat(self.path("a", "b")).st_ino)
        # a top-level file's parent is the root
        fd3 = self.share.open_parent("top.txt")
        self.addCleanup(os.close, fd3)
        self.assertEqual(os.fstat(fd3).st_ino, os.stat(self.root).st_ino)
        self.assertTrue(self.share.is_current("a/b"))

    def test_refuses_symlinked_directory(self):
        os.symlink(self.outside, self.path("sub"))
        for path in ("sub/x", "sub/deeper/x", "sub/a/b/c/x"):
            with self.assertRaises(ShareError):
                fd = self.share.open_parent(path)
                os.close(fd)  # pragma: no cover - only if the test fails
        self.assertEqual(os.listdir(self.outside), [])

    def test_refuses_symlink_deeper_down(self):
        os.makedirs(self.path("a", "b"))
        os.symlink(self.outside, self.path("a", "b", "link"))
        with self.assertRaises(ShareError):
            os.close(self.share.open_parent("a/b/link/new/x"))
        os.symlink(os.path.join(self.outside, "missing"), self.path("dangling"))
        with self.assertRaises(ShareError):
            os.close(self.share.open_parent("dangling/x"))
        self.assertEqual(os.listdir(self.outside), [])

    def test_refuses_file_component(self):
        write(self.path("afile"), b"x")
        with self.assertRaises(ShareError):
            os.close(self.share.open_parent("afile/x"))
        with open(self.path("afile"), "rb") as f:
            self.assertEqual(f.read(), b"x")

    def test_is_current(self):
        write(self.path("f.txt"), b"data")
        self.assertFalse(self.share.is_current("f.txt"))
        self.scan_and_apply()
        self.assertTrue(self.share.is_current("f.txt"))
        os.utime(self.path("f.txt"), ns=(1, 1))
        self.assertFalse(self.share.is_current("f.txt"))
        self.assertFalse(self.share.is_current("missing"))


class StopScanningTests(SynchronousTestCase):
    def test_scan_gives_up_when_stopping(self):
        """
        A node that stops does not wait for a big share to be hashed: the
        scan running in its thread gives up at the next file or megabyte.
        """
        root = self.mktemp()
        os.makedirs(root)
        for name in ("a", "b"):
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"x" * 3_000_000)
        share = Share(root=root, state_dir=os.path.join(root, ".p2pshare"))
        calls = []
        original = os.read

        def reading(fd, n):
            calls.append(n)
            if len(calls) == 2:
                share.stop_scanning()
            return original(fd, n)

        self.patch(share_module.os, "read", reading)
        self.assertRaises(share_module.ScanStopped, share.scan)
        self.assertEqual(len(calls), 2)
