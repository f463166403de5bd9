# -*- test-case-name: tests.test_apply -*-
"""
The disk half of applying sync decisions: blocking, so the node runs it in
a thread, and safe against whatever the peers and the local user do.

A peer now decides what our share holds, so every path it names reaches
the disk here, and only through open directory fds: each component is
opened with C{O_NOFOLLOW} from the share's root, so a link planted
anywhere on a path is refused, never followed.  Paths must pass
L{wire.check_path} (no C{..}, no C{.p2pshare*} names), and the state
directory is refused by identity even where it sits inside the share
under another name.

Nothing is destroyed: a file replaced or deleted goes to the trash can
first (L{p2ptwisted.trash}, whose docstring gives the layout), unless the
operator turned the trash off (C{keep_days} 0).  Renames onto a name
never overwrite: something that appears at a destination while we work
(the user saving a file) makes the operation fail with C{changed}, and
the caller rescans.  Likewise L{Disk.check} is meant to be called before
replacing: it says whether the disk still holds what the index says.

Paths are the NFC paths of the index; they name disk entries exactly.
Time is always passed in (C{now_ns}): nothing here reads a clock.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import List, Optional, Sequence, Tuple

import attrs

from p2ptwisted import trash, wire
from p2ptwisted.core.index import DIR, FILE, PERM_MASK, Entry
from p2ptwisted.share import hash_fd
from p2ptwisted.trash import (
    READ_FLAGS, TEMP_FLAGS, ApplyError, TrashedVersion, closing, lstat_at, open_dirs,
    rename_noreplace, unlink_quietly,
)

__all__ = ["ApplyError", "Disk", "TrashedVersion", "DEFAULT_KEEP_DAYS"]

#: Days a trashed version is kept by default (Syncthing's trash can keeps
#: versions forever unless told; a month bounds the disk a flood of deletes
#: can take while leaving time to notice it).
DEFAULT_KEEP_DAYS = 30

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

# Metadata of a file we may not be able to open for reading (mode 0o000):
# an O_PATH fd pins the inode without following a link, and its /proc
# name lets chmod and utime reach exactly that inode (what glibc does for
# fchmodat(AT_SYMLINK_NOFOLLOW)).
_PROC_FD = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
_META_FLAGS = ((os.O_PATH if _PROC_FD else os.O_RDONLY | os.O_NONBLOCK)
               | os.O_NOFOLLOW | os.O_CLOEXEC)


def _set_meta_fd(fd: int, perms: int, mtime_ns: int) -> None:
    target = f"/proc/self/fd/{fd}" if _PROC_FD else fd
    os.chmod(target, perms & PERM_MASK)
    os.utime(target, ns=(os.fstat(fd).st_atime_ns, mtime_ns))


def _file_entry(entry: Entry) -> None:
    if entry.deleted or entry.kind != FILE:
        raise ApplyError("bad_entry", "not a live file entry")


@attrs.define
class Disk:
    """
    The share's root and the node's state directory, as sync decisions
    change them.

    @ivar keep_days: how long the trash can keeps versions; 0 turns it off,
        and then L{trash} deletes.
    """

    root: str
    state_dir: str
    keep_days: int = DEFAULT_KEEP_DAYS
    _root_fd: Optional[int] = None
    _trash_fd: Optional[int] = None
    _state_id: Optional[Tuple[int, int]] = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def _open(self) -> Tuple[int, int]:
        """
        The root and trash fds, opened on first use.  The root and state
        paths were chosen by the operator, so links there are followed.
        """
        with self._lock:
            if self._root_fd is None:
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
                state_fd = os.open(self.state_dir, _ROOT_FLAGS)
                try:
                    self._state_id = trash.identity(os.fstat(state_fd))
                    trash_fd = open_dirs(state_fd, [trash.TRASH_DIR], create=True, mode=0o700)
                finally:
                    os.close(state_fd)
                try:
                    self._root_fd = os.open(self.root, _ROOT_FLAGS)
                except BaseException:
                    os.close(trash_fd)
                    raise
                self._trash_fd = trash_fd
            return self._root_fd, self._trash_fd

    def close(self) -> None:
        with self._lock:
            for fd in (self._root_fd, self._trash_fd):
                if fd is not None:
                    os.close(fd)
            self._root_fd = self._trash_fd = None

    # -- walking ---------------------------------------------------------------

    def _parts(self, path: str) -> List[str]:
        try:
            wire.check_path(path)
        except wire.ProtocolError as e:
            raise ApplyError("bad_path", str(e)) from None
        return path.split("/")

    def _dirs(self, parts: Sequence[str], create: bool = False) -> int:
        return open_dirs(self._open()[0], parts, create=create, forbid=self._state_id)

    def _dirs_or_none(self, parts: Sequence[str]) -> Optional[int]:
        try:
            return self._dirs(parts)
        except ApplyError as e:
            if e.code == "not_found":
                return None
            raise

    def _parent(self, path: str, create: bool = False) -> Tuple[int, str]:
        parts = self._parts(path)
        return self._dirs(parts[:-1], create), parts[-1]

    def _lstat(self, dir_fd: int, name: str) -> Optional[os.stat_result]:
        st = lstat_at(dir_fd, name)
        if st is not None and trash.identity(st) == self._state_id:
            raise ApplyError("reserved", "the path names this node's state directory")
        return st

    def _regular(self, dir_fd: int, name: str) -> os.stat_result:
        st = self._lstat(dir_fd, name)
        if st is None:
            raise ApplyError("not_found", "no such file")
        if not stat.S_ISREG(st.st_mode):
            raise ApplyError("not_regular", "not a regular file")
        return st

    # -- looking -----------------------------------------------------------------

    def check(self, entry: Entry) -> bool:
        """
        Whether the disk still holds what C{entry} says: a regular file of
        the same size, mtime and permission bits; a directory; or, for a
        tombstone, nothing.  Call it right before replacing or deleting,
        and rescan instead when it says no: the user changed the path.

        @raise ApplyError: if a link or file is in the way of a directory
            on the path, or the path is not one a peer may name.
        """
        parts = self._parts(entry.path)
        dir_fd = self._dirs_or_none(parts[:-1])
        if dir_fd is None:
            return entry.deleted
        with closing(dir_fd):
            st = self._lstat(dir_fd, parts[-1])
        if entry.deleted or st is None:
            return entry.deleted and st is None
        if entry.kind == DIR:
            return stat.S_ISDIR(st.st_mode)
        return stat.S_ISREG(st.st_mode) and (
            st.st_size, st.st_mtime_ns, st.st_mode & PERM_MASK) == (
            entry.size, entry.mtime_ns, entry.perms & PERM_MASK)

    def free_bytes(self) -> int:
        st = os.fstatvfs(self._open()[0])
        return st.f_bavail * st.f_frsize

    # -- removing ---------------------------------------------------------------

    def trash(self, path: str, now_ns: int) -> Optional[str]:
        """
        Move the regular file at C{path} into the trash can and return where
        it went, relative to the trash can (what L{restore} takes).  With
        C{keep_days} 0 the file is deleted instead and C{None} returned.
        """
        dir_fd, name = self._parent(path)
        with closing(dir_fd):
            self._regular(dir_fd, name)
            return self._trash_at(dir_fd, name, path, now_ns)

    def _trash_at(self, dir_fd: int, name: str, path: str, now_ns: int) -> Optional[str]:
        if self.keep_days == 0:
            os.unlink(name, dir_fd=dir_fd)
            trashed = None
        else:
            trashed = trash.store(self._open()[1], dir_fd, name, path, now_ns)
        os.fsync(dir_fd)
        return trashed

    def rmdir(self, path: str) -> bool:
        """
        Remove the directory at C{path} if it is empty.  Directories never
        go to the trash: the files in one already did, one by one.

        @return: whether it was removed (C{False}: not empty, or gone).
        """
        parts = self._parts(path)
        dir_fd = self._dirs_or_none(parts[:-1])
        if dir_fd is None:
            return False
        with closing(dir_fd):
            st = self._lstat(dir_fd, parts[-1])
            if st is None:
                return False
            if not stat.S_ISDIR(st.st_mode):
                raise ApplyError("not_dir", "not a directory")
            try:
                os.rmdir(parts[-1], dir_fd=dir_fd)  # never follows a link
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            return True

    def conflict_copy(self, path: str, conflict_path: str) -> bool:
        """
        Rename the local file at C{path} to C{conflict_path}, in the same
        directory, so the winning version can take its place.

        @return: C{False} if C{conflict_path} exists (it is left alone).
        """
        parts, conflict = self._parts(path), self._parts(conflict_path)
        if parts[:-1] != conflict[:-1]:
            raise ApplyError("bad_path", "a conflict copy stays in its file's directory")
        with closing(self._dirs(parts[:-1])) as dir_fd:
            self._regular(dir_fd, parts[-1])
            try:
                rename_noreplace(dir_fd, parts[-1], dir_fd, conflict[-1])
            except FileExistsError:
                return False
            os.fsync(dir_fd)
            return True

    # -- writing -----------------------------------------------------------------

    def place(self, tmp_name: str, entry: Entry, now_ns: int) -> None:
        """
        Publish the complete, verified file C{tmp_name} (one of ours, in
        the directory of C{entry.path}) as C{entry}: set its permission
        bits (exactly: C{fchmod} ignores the umask) and mtime, sync it,
        trash the regular file it replaces, rename it into place and sync
        the directory.

        @raise ApplyError: C{not_regular} if a directory, link or special
            file is in the way; C{changed} if the temporary file is not
            C{entry.size} long or a file appeared at the destination.
        """
        _file_entry(entry)
        if "/" in tmp_name or not tmp_name.startswith(wire.RESERVED_PREFIX):
            raise ApplyError("bad_path", "a temporary file must be ours, beside its destination")
        dir_fd, name = self._parent(entry.path)
        with closing(dir_fd):
            try:
                fd = os.open(tmp_name, READ_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ApplyError("not_found", "no such temporary file") from None
            with closing(fd):
                self._finish(dir_fd, tmp_name, fd, name, entry, now_ns)

    def _finish(self, dir_fd, tmp_name, fd, name, entry, now_ns) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            raise ApplyError("changed", "the temporary file is not the expected size")
        os.fchmod(fd, entry.perms & PERM_MASK)
        os.utime(fd, ns=(st.st_atime_ns, entry.mtime_ns))
        os.fsync(fd)
        old = self._lstat(dir_fd, name)
        if old is not None:
            if not stat.S_ISREG(old.st_mode):
                raise ApplyError("not_regular", "a directory, link or special file is in the way")
            self._trash_at(dir_fd, name, entry.path, now_ns)
        try:
            rename_noreplace(dir_fd, tmp_name, dir_fd, name)
        except FileExistsError:
            raise ApplyError("changed", "a file appeared at the destination meanwhile") from None
        os.fsync(dir_fd)

    def copy_local(self, src_path: str, entry: Entry, now_ns: int) -> bool:
        """
        Make C{entry} from a file we already hold with the same content (a
        copy or a rename seen as delete and add): copy C{src_path} beside
        the destination, check the copy's hash, then L{place} it.

        @return: C{False}, leaving nothing behind, if C{src_path} no
            longer holds C{entry.hash}: fetch it instead.
        """
        _file_entry(entry)
        self._parts(entry.path)
        parts = self._parts(src_path)
        src_dir = self._dirs_or_none(parts[:-1])
        if src_dir is None:
            return False
        with closing(src_dir):
            try:
                src = os.open(parts[-1], READ_FLAGS, dir_fd=src_dir)
            except OSError:
                return False  # gone, a link, or not openable: not our content
        with closing(src):
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            dir_fd, name = self._parent(entry.path, create=True)
            with closing(dir_fd):
                return self._copy_into(src, dir_fd, name, entry, now_ns)

    def _copy_into(self, src, dir_fd, name, entry, now_ns) -> bool:
        tmp = trash.temp_name()
        out = os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=dir_fd)
        placed = False
        try:
            # One byte more than expected tells a grown file without
            # copying all of it.
            copied = trash.copy_fd(src, out, entry.size + 1)
            os.lseek(out, 0, os.SEEK_SET)
            if copied == entry.size and hash_fd(out) == entry.hash:
                self._finish(dir_fd, tmp, out, name, entry, now_ns)
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
            its entry (see L{check}), does not hold C{dst}'s content, or
            is on another file system: fetch or copy instead.
        @raise ApplyError: C{changed} if the file changed as it moved; it
            is then at C{dst} as it is, and a rescan will see it.
        """
        _file_entry(src)
        _file_entry(dst)
        if src.hash != dst.hash or src.path == dst.path or not self.check(src):
            return False
        src_dir, src_name = self._parent(src.path)
        with closing(src_dir):
            dir_fd, name = self._parent(dst.path, create=True)
            with closing(dir_fd):
                old = self._lstat(dir_fd, name)
                if old is not None:
                    if not stat.S_ISREG(old.st_mode):
                        raise ApplyError("not_regular",
                                         "a directory, link or special file is in the way")
                    self._trash_at(dir_fd, name, dst.path, now_ns)
                try:
                    rename_noreplace(src_dir, src_name, dir_fd, name)
                except FileExistsError:
                    raise ApplyError("changed",
                                     "a file appeared at the destination meanwhile") from None
                except OSError as e:
                    if e.errno == errno.EXDEV:
                        return False
                    raise
                with closing(os.open(name, _META_FLAGS, dir_fd=dir_fd)) as fd:
                    st = os.fstat(fd)
                    if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
                        raise ApplyError("changed", "the file changed while it was being moved")
                    _set_meta_fd(fd, dst.perms, dst.mtime_ns)
                os.fsync(dir_fd)
                os.fsync(src_dir)
                return True

    def set_meta(self, entry: Entry) -> None:
        """
        Give the file or directory at C{entry.path} the entry's permission
        bits and mtime, without touching its content.
        """
        if entry.deleted:
            raise ApplyError("bad_entry", "a tombstone has no metadata")
        parts = self._parts(entry.path)
        if entry.kind == DIR:
            fd = self._dirs(parts)
        else:
            with closing(self._dirs(parts[:-1])) as dir_fd:
                try:
                    fd = os.open(parts[-1], _META_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    raise ApplyError("not_found", "no such file") from None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENXIO):
                        raise ApplyError("not_regular", "not a regular file") from None
                    raise
        with closing(fd):
            if entry.kind == FILE and not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ApplyError("not_regular", "not a regular file")
            _set_meta_fd(fd, entry.perms, entry.mtime_ns)

    def mkdir(self, entry: Entry, now_ns: int) -> None:
        """
        Make the directory C{entry.path}, and its missing parents (mode
        0o755 less the umask, until their own entries are applied), then
        give it the entry's permission bits.  A regular file in its place
        is trashed first, so a file replaced by a directory converges.
        """
        if entry.deleted or entry.kind != DIR:
            raise ApplyError("bad_entry", "not a live directory entry")
        parts = self._parts(entry.path)
        with closing(self._dirs(parts[:-1], create=True)) as dir_fd:
            st = self._lstat(dir_fd, parts[-1])
            if st is not None and stat.S_ISREG(st.st_mode):
                self._trash_at(dir_fd, parts[-1], entry.path, now_ns)
            elif st is not None and not stat.S_ISDIR(st.st_mode):
                raise ApplyError("not_dir", "a link or special file is in the way of a directory")
            fd = open_dirs(dir_fd, parts[-1:], create=True, forbid=self._state_id, mode=0o700)
        with closing(fd):
            os.fchmod(fd, entry.perms & PERM_MASK)

    # -- the trash can -----------------------------------------------------------

    def trash_list(self, limit: int = 1000) -> List[TrashedVersion]:
        """
        Up to C{limit} versions in the trash can, in path order.
        """
        return trash.versions(self._open()[1], limit)

    def clean_trash(self, now_ns: int, keep_days: Optional[int] = None) -> int:
        """
        Remove the versions at least C{keep_days} (default: L{keep_days})
        old, judged by the stamp in their names, not their mtime (which is
        the file's own); 0 removes them all.  Directories left empty go too.

        @return: how many versions were removed.
        """
        days = self.keep_days if keep_days is None else keep_days
        if days < 0:
            raise ValueError("keep_days must not be negative")
        cutoff = None if days == 0 else now_ns // 1_000_000_000 - days * 86400
        return trash.clean(self._open()[1], cutoff)

    def restore(self, trashed: str) -> str:
        """
        Move the version C{trashed} (as L{trash} and L{trash_list} name it)
        back to its original path, making missing directories; if a file
        is there now, beside it as C{name.restored-N.ext}.

        @return: the path it landed at.
        """
        try:
            wire.check_path(trashed)
        except wire.ProtocolError as e:
            raise ApplyError("bad_path", str(e)) from None
        parsed = trash.parse_trash_name(trashed)
        if parsed is None:
            raise ApplyError("bad_path", "not a trashed version's name")
        head, sep, name = parsed[0].rpartition("/")
        parts = self._parts(parsed[0])
        trash_parts = trashed.split("/")
        with closing(open_dirs(self._open()[1], trash_parts[:-1])) as src_dir:
            self._regular(src_dir, trash_parts[-1])
            with closing(self._dirs(parts[:-1], create=True)) as dir_fd:
                stem, ext = trash.split_ext(name)
                for n in range(trash.MAX_NUMBER):
                    target = f"{stem}.restored-{n}{ext}" if n else name
                    try:
                        trash.move(src_dir, trash_parts[-1], dir_fd, target)
                    except FileExistsError:
                        continue
                    os.fsync(dir_fd)
                    return head + sep + target
                raise ApplyError("exists", "too many restored copies of this name")
