# -*- test-case-name: tests.test_apply -*-
"""
File-system operations that never follow a link.

Every path a peer names is walked from an open directory fd, one
component at a time, with C{O_NOFOLLOW}: no symlink anywhere on a path is
followed, in the share or in the trash.  Renames never replace an
existing name, and a move across file systems removes its source only
once the copy is safely in place.

These live apart from both their users because both need them: the
trash can (L{p2ptwisted.trash}) stores and restores files with them, and
the applier (L{p2ptwisted.apply}) walks the share and publishes files
with them.  Neither module owns them, and this one imports neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

from p2ptwisted import wire
from p2ptwisted.core.index import FILE, PERM_MASK
from p2ptwisted.hashing import PARTIAL_PREFIX


#: For the share's root and the state directory: paths the operator chose,
#: so a link there is followed.
ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Metadata of a file we may not be able to open for reading (mode 0o000):
# an O_PATH fd pins the inode without following a link, and its /proc
# name lets chmod and utime reach exactly that inode (what glibc does for
# fchmodat(AT_SYMLINK_NOFOLLOW)).
_PROC_FD = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
META_FLAGS = ((os.O_PATH if _PROC_FD else os.O_RDONLY | os.O_NONBLOCK)
              | os.O_NOFOLLOW | os.O_CLOEXEC)


class ApplyError(Exception):
    """
    A path cannot be used as a sync decision asks.  The message is one
    line, safe to log: it names no path, except C{bad_path} messages, which
    carry the path escaped (L{wire.safe_text}).

    @ivar code: C{bad_path}, C{reserved}, C{not_dir}, C{not_regular},
        C{not_found}, C{changed}, C{exists} or C{bad_entry}.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def split_path(path: str) -> List[str]:
    """
    The components of C{path}, if a peer may name it (L{wire.check_path}:
    no C{..}, no C{.p2pshare*} names); trashed names pass the same check.

    @raise ApplyError: C{bad_path}.
    """
    try:
        wire.check_path(path)
    except wire.ProtocolError as e:
        raise ApplyError("bad_path", str(e)) from None
    return path.split("/")


# -- link-proof primitives ---------------------------------------------------------

def open_dirs(start_fd: int, parts: Sequence[str], create: bool = False,
              forbid: Optional[Tuple[int, int]] = None, mode: int = 0o755,
              created: Optional[List[int]] = None) -> int:
    """
    Open the directory C{start/parts...} without following any link.

    @param create: make missing directories on the way, with C{mode}.
    @param created: if given, the number of parts of each directory made
        is appended to it (C{parts[:n]} names it).
    @param forbid: C{(st_dev, st_ino)} of a directory that must not be
        entered (the state directory, when it sits inside the share).
    @raise ApplyError: C{not_found}, C{not_dir} (a link or file is in the
        way) or C{reserved}.
    """
    fd = os.dup(start_fd)
    try:
        for i, part in enumerate(parts):
            try:
                try:
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ApplyError("not_found", "no such directory") from None
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
                        if created is not None:
                            created.append(i + 1)
                    except FileExistsError:
                        pass
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ApplyError("not_dir",
                                     "a link or file is in the way of a directory") from None
                raise
            os.close(fd)
            fd = next_fd
            _refuse(os.fstat(fd), forbid)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def identity(st: os.stat_result) -> Tuple[int, int]:
    return st.st_dev, st.st_ino


def _refuse(st: os.stat_result, forbid: Optional[Tuple[int, int]]) -> None:
    if forbid is not None and identity(st) == forbid:
        raise ApplyError("reserved", "the path names this node's state directory")


def lstat_at(dir_fd: int, name: str,
             forbid: Optional[Tuple[int, int]] = None) -> Optional[os.stat_result]:
    """
    C{name} in C{dir_fd} as it is (a link is not followed), or C{None}.

    @param forbid: as for L{open_dirs}.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    _refuse(st, forbid)
    return st


def regular_at(dir_fd: int, name: str,
               forbid: Optional[Tuple[int, int]] = None) -> os.stat_result:
    """
    L{lstat_at}, for a name that must be a regular file.

    @raise ApplyError: C{not_found}, C{not_regular} or C{reserved}.
    """
    st = lstat_at(dir_fd, name, forbid)
    if st is None:
        raise ApplyError("not_found", "no such file")
    if not stat.S_ISREG(st.st_mode):
        raise ApplyError("not_regular", "not a regular file")
    return st


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - not glibc >= 2.28
        return None
    function.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
_RENAME_NOREPLACE = 1
_fallback_lock = threading.Lock()


def publish_new(dir_fd: int, partial: str, name: str, entry) -> bool:
    """
    Publish the verified file C{partial} as C{name} in the same directory,
    with C{entry}'s mtime and permission bits, flushed, never replacing
    anything (an operator's fetch, outside the sync's decisions).

    @return: C{False}, leaving C{partial} there, if C{name} is taken.
    """
    fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fchmod(fd, entry.perms)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        rename_noreplace(dir_fd, partial, dir_fd, name)
    except FileExistsError:
        return False
    return True


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """
    Rename, but never over an existing name: C{renameat2(RENAME_NOREPLACE)}
    where the kernel and file system have it, so even a file the user
    creates at C{dst} meanwhile is safe; elsewhere a check under a lock,
    which at least keeps our own threads from overwriting each other.

    @raise FileExistsError: if C{dst} exists.
    """
    if _renameat2 is not None:
        if _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), src, None, dst)
    with _fallback_lock:
        if lstat_at(dst_fd, dst) is not None:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def copy_fd(src: int, dst: int, limit: Optional[int] = None) -> int:
    """
    Copy from C{src}'s position to C{dst}'s, at most C{limit} bytes; return
    how many were copied.  C{copy_file_range} lets the kernel (or a
    reflinking file system) do it; plain reads and writes otherwise.
    """
    copied, in_kernel = 0, hasattr(os, "copy_file_range")
    while limit is None or copied < limit:
        want = 1 << 20 if limit is None else min(1 << 20, limit - copied)
        if in_kernel:
            try:
                n = os.copy_file_range(src, dst, want)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                    raise
                in_kernel = False
                continue
        else:
            view = memoryview(os.read(src, want))
            n = len(view)
            while view:
                view = view[os.write(dst, view):]
        if n == 0:
            break
        copied += n
    return copied


def temp_name() -> str:
    """
    A fresh name for a file being written beside its destination: reserved,
    so scans skip it and no peer can name it.
    """
    return f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"


def move(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """
    Move the regular file C{src} to C{dst}, never over an existing name.
    Across file systems (C{EXDEV}) it is copied to a temporary name beside
    C{dst} (mode and times kept), synced, renamed into place, and only then
    is C{src} removed, if it did not change meanwhile.

    @raise FileExistsError: if C{dst} exists.
    @raise ApplyError: C{changed} if C{src} changed while being copied; the
        copy stays at C{dst} and C{src} stays too, so nothing is lost.
    """
    try:
        return rename_noreplace(src_fd, src, dst_fd, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    with closing(os.open(src, READ_FLAGS, dir_fd=src_fd)) as fd:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ApplyError("not_regular", "not a regular file")
        tmp = temp_name()
        out = os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=dst_fd)
        try:
            try:
                copy_fd(fd, out)
                os.fchmod(out, st.st_mode & 0o777)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(out)
            finally:
                os.close(out)
            rename_noreplace(dst_fd, tmp, dst_fd, dst)
        except BaseException:
            unlink_quietly(dst_fd, tmp)
            raise
        now = lstat_at(src_fd, src)
        if now is None or (identity(now), now.st_size, now.st_mtime_ns) != (
                identity(st), st.st_size, st.st_mtime_ns):
            raise ApplyError("changed", "the file changed while it was being moved")
        os.unlink(src, dir_fd=src_fd)


def rename_into(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """
    L{rename_noreplace}, with a name that appeared at C{dst} meanwhile
    reported as C{changed}.
    """
    try:
        rename_noreplace(src_fd, src, dst_fd, dst)
    except FileExistsError:
        raise ApplyError("changed", "a file appeared at the destination meanwhile") from None


def set_meta_fd(fd: int, perms: int, mtime_ns: int) -> None:
    """
    Give the file or directory C{fd} (opened with C{META_FLAGS}, or as a
    directory) the permission bits C{perms} and mtime C{mtime_ns}.
    """
    target = f"/proc/self/fd/{fd}" if _PROC_FD else fd
    os.chmod(target, perms & PERM_MASK)
    os.utime(target, ns=(os.fstat(fd).st_atime_ns, mtime_ns))


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def require_live_file(entry) -> None:
    """
    @raise ApplyError: C{bad_entry} unless C{entry} is a live file's.
    """
    if entry.deleted or entry.kind != FILE:
        raise ApplyError("bad_entry", "not a live file entry")
