# -*- test-case-name: tests.test_apply -*-
"""
Making a file from bytes the share already holds: a conflict copy by
rename, a copy of another file with the same content, a rename of a file
being deleted.  Apart from L{p2ptwisted.apply.Disk} because it is a
different question (where do the bytes come from?), built only from the
disk's public, link-proof steps.
"""

from __future__ import annotations

import errno
import os
import stat

from p2ptwisted import fsops
from p2ptwisted.core.index import Entry
from p2ptwisted.fsops import (
    META_FLAGS, READ_FLAGS, TEMP_FLAGS, ApplyError, closing, rename_into, rename_noreplace,
    set_meta_fd, split_path, unlink_quietly,
)
from p2ptwisted.hashing import hash_fd
from p2ptwisted.placing import place_one


class LocalCopies:
    """
    The disk operations that take their content from a file the share
    already holds instead of from a peer: a copy, a rename (seen as a
    delete and an add), and moving a losing local version aside.
    """

    def __init__(self, disk):
        self._disk = disk

    def conflict_copy(self, path: str, conflict_path: str) -> bool:
        """
        Rename the local file at C{path} to C{conflict_path}, in the same
        directory, so the winning version can take its place.

        @return: C{False} if C{conflict_path} exists (it is left alone).
        """
        disk = self._disk
        parts, conflict = split_path(path), split_path(conflict_path)
        if parts[:-1] != conflict[:-1]:
            raise ApplyError("bad_path", "a conflict copy stays in its file's directory")
        with closing(disk.dirs(parts[:-1])) as dir_fd:
            disk.regular(dir_fd, parts[-1])
            try:
                rename_noreplace(dir_fd, parts[-1], dir_fd, conflict[-1])
            except FileExistsError:
                return False
            os.fsync(dir_fd)
            return True

    def copy_local(self, src_path: str, entry: Entry, now_ns: int) -> bool:
        """
        Make C{entry} from a file we already hold with the same content (a
        copy or a rename seen as delete and add): copy C{src_path} beside
        the destination, check the copy's hash, then place it as a fetched
        file is placed (L{p2ptwisted.placing.place_one}).

        @return: C{False}, leaving nothing behind, if C{src_path} no
            longer holds C{entry.hash}: fetch it instead.
        """
        disk = self._disk
        fsops.require_live_file(entry)
        split_path(entry.path)
        src_dir, src_name = disk.parent_or_none(src_path)
        if src_dir is None:
            return False
        with closing(src_dir):
            try:
                src = os.open(src_name, READ_FLAGS, dir_fd=src_dir)
            except OSError:
                return False  # gone, a link, or not openable: not our content
        with closing(src):
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            dir_fd, _ = disk.parent(entry.path, create=True)
            with closing(dir_fd):
                return self._copy_into(src, dir_fd, entry, now_ns)

    def _copy_into(self, src, dir_fd, entry, now_ns) -> bool:
        tmp = fsops.temp_name()
        out = os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=dir_fd)
        placed = False
        try:
            # One byte more than expected tells a grown file without
            # copying all of it.
            copied = fsops.copy_fd(src, out, entry.size + 1)
            os.lseek(out, 0, os.SEEK_SET)
            if copied == entry.size and hash_fd(out) == entry.hash:
                place_one(self._disk, tmp, entry, now_ns)
                placed = True
            return placed
        finally:
            os.close(out)
            if not placed:
                unlink_quietly(dir_fd, tmp)

    def move_local(self, src: Entry, dst: Entry, now_ns: int) -> bool:
        """
        Rename the file C{src} (which is being deleted) to C{dst}, with
        C{dst}'s mtime and permission bits, trashing a regular file at
        C{dst}.

        @return: C{False}, changing nothing, if C{src} no longer matches
            its entry (see L{Disk.check}), does not hold C{dst}'s content,
            or is on another file system: fetch or copy instead.
        @raise ApplyError: C{changed} if the file changed as it moved; it
            is then at C{dst} as it is, and a rescan will see it.
        """
        disk = self._disk
        fsops.require_live_file(src)
        fsops.require_live_file(dst)
        if src.hash != dst.hash or src.path == dst.path or not disk.check(src):
            return False
        src_dir, src_name = disk.parent(src.path)
        with closing(src_dir):
            dir_fd, name = disk.parent(dst.path, create=True)
            with closing(dir_fd):
                disk.clear_way(dir_fd, name, dst.path, now_ns)
                try:
                    rename_into(src_dir, src_name, dir_fd, name)
                except OSError as e:
                    if e.errno == errno.EXDEV:
                        return False
                    raise
                with closing(os.open(name, META_FLAGS, dir_fd=dir_fd)) as fd:
                    st = os.fstat(fd)
                    if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
                        raise ApplyError("changed", "the file changed while it was being moved")
                    set_meta_fd(fd, dst.perms, dst.mtime_ns)
                os.fsync(dir_fd)
                os.fsync(src_dir)
                return True
