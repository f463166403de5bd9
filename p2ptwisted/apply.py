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

The work is split three ways, by what each part owns:

  - L{Disk} owns the share's root fd and the state directory's identity:
    it turns a peer's path into a directory fd (the one place that does),
    and does what an index entry asks at one path (L{Disk.check},
    L{Disk.mkdir}, L{Disk.rmdir}, L{Disk.set_meta}; placing a fetched
    file is L{p2ptwisted.placing}, built from L{Disk.parent} and
    L{Disk.clear_way}).
  - L{p2ptwisted.reuse.LocalCopies} makes a file from another one the
    share already holds (a copy, a rename, a conflict copy): two paths per
    operation instead of one path and a peer's bytes.  It owns nothing and
    is built only from the disk's public steps (walking, publishing a
    checked file, trashing what is in the way); L{Disk} keeps its methods
    as one-line delegates.
  - L{TrashCan} owns the state directory's trash fd and the
    keep-days policy; L{Disk} holds one as C{trash_can}.

The link-proof steps themselves (walking, renaming without replacing,
moving across file systems) are in L{p2ptwisted.fsops}, shared with the
trash can.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import List, Optional, Sequence, Tuple

from p2ptwisted import fsops, wire
from p2ptwisted.core.index import DIR, FILE, PERM_MASK, Entry
from p2ptwisted.fsops import (
    META_FLAGS, ROOT_FLAGS, ApplyError, closing, lstat_at, open_dirs,
    regular_at, set_meta_fd, split_path, unlink_quietly,
)
from p2ptwisted.hashing import PARTIAL_PREFIX
from p2ptwisted.reuse import LocalCopies
from p2ptwisted.trash import DEFAULT_KEEP_DAYS, TrashCan, TrashedVersion

__all__ = ["ApplyError", "Disk", "TrashCan", "TrashedVersion",
           "DEFAULT_KEEP_DAYS"]

class Disk:
    """
    The share's root and the node's state directory, as sync decisions
    change them.

    @ivar trash_can: where replaced and deleted files go (in C{state_dir}).
    """

    def __init__(self, root: str, state_dir: str, keep_days: int = DEFAULT_KEEP_DAYS):
        self.root = root
        self.trash_can = TrashCan(state_dir, keep_days)
        self._root_fd: Optional[int] = None
        self._state_id: Optional[Tuple[int, int]] = None
        self._lock = threading.Lock()
        self._local = LocalCopies(self)

    @property
    def state_dir(self) -> str:
        return self.trash_can.state_dir

    @property
    def keep_days(self) -> int:
        """
        How long the trash can keeps versions; 0 turns it off, and then
        L{trash} deletes.
        """
        return self.trash_can.keep_days

    @keep_days.setter
    def keep_days(self, days: int) -> None:
        self.trash_can.keep_days = days

    def _open(self) -> int:
        """
        The root fd, opened on first use (with the trash can, which tells
        the state directory's identity).  The root path was chosen by the
        operator, so links there are followed.
        """
        with self._lock:
            if self._root_fd is None:
                self._state_id = self.trash_can.open()
                try:
                    self._root_fd = os.open(self.root, ROOT_FLAGS)
                except BaseException:
                    self.trash_can.close()
                    raise
            return self._root_fd

    def close(self) -> None:
        with self._lock:
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
            self.trash_can.close()

    # -- walking ---------------------------------------------------------------

    def dirs(self, parts: Sequence[str], create: bool = False) -> int:
        return open_dirs(self._open(), parts, create=create, forbid=self._state_id)

    def parent(self, path: str, create: bool = False) -> Tuple[int, str]:
        parts = split_path(path)
        return self.dirs(parts[:-1], create), parts[-1]

    def parent_made(self, path: str) -> Tuple[int, List[str]]:
        """
        The directory of C{path}, made if missing, and the directories
        made for it (shallowest first): a fetch that fails removes them
        again (L{remove_made}), so a peer's failed file leaves no
        directories behind to be published as ours.
        """
        parts = split_path(path)[:-1]
        made: List[int] = []
        fd = open_dirs(self._open(), parts, create=True, forbid=self._state_id, created=made)
        return fd, ["/".join(parts[:n]) for n in made]

    def remove_made(self, paths: Sequence[str]) -> None:
        """
        Remove the directories L{parent_made} made, deepest first, where
        they are still empty.
        """
        for path in reversed(paths):
            try:
                if not self.rmdir(path):
                    return
            except ApplyError:
                return

    def parent_or_none(self, path: str) -> Tuple[Optional[int], str]:
        """
        L{_parent}, with C{None} for the fd if a directory is missing.
        """
        parts = split_path(path)
        try:
            return self.dirs(parts[:-1]), parts[-1]
        except ApplyError as e:
            if e.code == "not_found":
                return None, parts[-1]
            raise

    def lstat(self, dir_fd: int, name: str) -> Optional[os.stat_result]:
        return lstat_at(dir_fd, name, self._state_id)

    def regular(self, dir_fd: int, name: str) -> os.stat_result:
        return regular_at(dir_fd, name, self._state_id)

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
        dir_fd, name = self.parent_or_none(entry.path)
        if dir_fd is None:
            return entry.deleted
        with closing(dir_fd):
            st = self.lstat(dir_fd, name)
        if entry.deleted or st is None:
            return entry.deleted and st is None
        if entry.kind == DIR:
            return stat.S_ISDIR(st.st_mode)
        return stat.S_ISREG(st.st_mode) and (
            st.st_size, st.st_mtime_ns, st.st_mode & PERM_MASK) == (
            entry.size, entry.mtime_ns, entry.perms & PERM_MASK)

    def free_bytes(self) -> int:
        st = os.fstatvfs(self._open())
        return st.f_bavail * st.f_frsize

    # -- removing ---------------------------------------------------------------

    def trash(self, path: str, now_ns: int) -> Optional[str]:
        """
        Move the regular file at C{path} into the trash can and return where
        it went, relative to the trash can (what L{restore} takes).  With
        C{keep_days} 0 the file is deleted instead and C{None} returned.
        """
        dir_fd, name = self.parent(path)
        with closing(dir_fd):
            self.regular(dir_fd, name)
            return self.trash_can.store(dir_fd, name, path, now_ns)

    def clear_way(self, dir_fd: int, name: str, path: str, now_ns: int) -> None:
        """
        Trash the regular file C{name} (C{path}) about to be replaced, if
        there is one.

        @raise ApplyError: C{not_regular} if something else is in the way.
        """
        old = self.lstat(dir_fd, name)
        if old is not None:
            if not stat.S_ISREG(old.st_mode):
                raise ApplyError("not_regular", "a directory, link or special file is in the way")
            self.trash_can.store(dir_fd, name, path, now_ns)

    def rmdir(self, path: str) -> bool:
        """
        Remove the directory at C{path} if it is empty.  Directories never
        go to the trash: the files in one already did, one by one.

        @return: whether it was removed (C{False}: not empty, or gone).
        """
        dir_fd, name = self.parent_or_none(path)
        if dir_fd is None:
            return False
        with closing(dir_fd):
            st = self.lstat(dir_fd, name)
            if st is None:
                return False
            if not stat.S_ISDIR(st.st_mode):
                raise ApplyError("not_dir", "not a directory")
            try:
                os.rmdir(name, dir_fd=dir_fd)  # never follows a link
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and self._only_partials(dir_fd, name):
                    return self.rmdir(path)
                if e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            return True

    def _only_partials(self, dir_fd: int, name: str) -> bool:
        """
        Remove our partial downloads from directory C{name} if they are
        all it holds (downloads given up for a version since replaced):
        they must not keep a deleted directory alive.  Whether any went.
        """
        try:
            fd = os.open(name, fsops.DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            return False
        with closing(fd):
            names = os.listdir(fd)
            if not names or not all(n.startswith(PARTIAL_PREFIX) for n in names):
                return False
            for n in names:
                unlink_quietly(fd, n)
        return True

    # -- writing -----------------------------------------------------------------

    def discard(self, path: str, tmp_name: str) -> None:
        """
        Remove our temporary file C{tmp_name} beside C{path}: bytes that
        arrived but could not be placed (the path changed meanwhile).
        """
        if "/" in tmp_name or not tmp_name.startswith(wire.RESERVED_PREFIX):
            raise ApplyError("bad_path", "not one of our temporary files")
        dir_fd, _ = self.parent_or_none(path)
        if dir_fd is not None:
            with closing(dir_fd):
                unlink_quietly(dir_fd, tmp_name)

    def set_meta(self, entry: Entry) -> None:
        """
        Give the file or directory at C{entry.path} the entry's permission
        bits and mtime, without touching its content.
        """
        if entry.deleted:
            raise ApplyError("bad_entry", "a tombstone has no metadata")
        parts = split_path(entry.path)
        if entry.kind == DIR:
            fd = self.dirs(parts)
        else:
            with closing(self.dirs(parts[:-1])) as dir_fd:
                try:
                    fd = os.open(parts[-1], META_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    raise ApplyError("not_found", "no such file") from None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENXIO):
                        raise ApplyError("not_regular", "not a regular file") from None
                    raise
        with closing(fd):
            if entry.kind == FILE and not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ApplyError("not_regular", "not a regular file")
            set_meta_fd(fd, entry.perms, entry.mtime_ns)

    def mkdir(self, entry: Entry, now_ns: int) -> None:
        """
        Make the directory C{entry.path}, and its missing parents (mode
        0o755 less the umask, until their own entries are applied), then
        give it the entry's permission bits.  A regular file in its place
        is trashed first, so a file replaced by a directory converges.
        """
        if entry.deleted or entry.kind != DIR:
            raise ApplyError("bad_entry", "not a live directory entry")
        parts = split_path(entry.path)
        with closing(self.dirs(parts[:-1], create=True)) as dir_fd:
            st = self.lstat(dir_fd, parts[-1])
            if st is not None and stat.S_ISREG(st.st_mode):
                self.trash_can.store(dir_fd, parts[-1], entry.path, now_ns)
            elif st is not None and not stat.S_ISDIR(st.st_mode):
                raise ApplyError("not_dir", "a link or special file is in the way of a directory")
            fd = open_dirs(dir_fd, parts[-1:], create=True, forbid=self._state_id, mode=0o700)
        with closing(fd):
            os.fchmod(fd, entry.perms & PERM_MASK)

    # -- delegates ---------------------------------------------------------------

    def copy_local(self, src_path: str, entry: Entry, now_ns: int) -> bool:
        """L{LocalCopies.copy_local}."""
        return self._local.copy_local(src_path, entry, now_ns)

    def move_local(self, src: Entry, dst: Entry, now_ns: int) -> bool:
        """L{LocalCopies.move_local}."""
        return self._local.move_local(src, dst, now_ns)

    def conflict_copy(self, path: str, conflict_path: str) -> bool:
        """L{LocalCopies.conflict_copy}."""
        return self._local.conflict_copy(path, conflict_path)

    def trash_list(self, limit: int = 1000) -> List[TrashedVersion]:
        """L{TrashCan.versions}: up to C{limit} versions, in path order."""
        return self.trash_can.versions(limit)

    def clean_trash(self, now_ns: int, keep_days: Optional[int] = None) -> int:
        """L{TrashCan.clean}: remove versions at least C{keep_days} old."""
        return self.trash_can.clean(now_ns, keep_days)

    def restore(self, trashed: str) -> str:
        """
        L{TrashCan.restore} into the share: the version C{trashed} goes
        back to its original path, making missing directories, or beside
        it as C{name.restored-N.ext}; return the path it landed at.
        """
        return self.trash_can.restore(trashed, lambda parts: self.dirs(parts, create=True))
