# -*- test-case-name: tests.test_apply -*-
"""
The trash can, and the link-proof directory operations it shares with
L{p2ptwisted.apply}.

Once peers can change and delete our files, every byte a sync decision
removes or replaces is moved here first, so a bad or hostile peer can cost
us disk space but never data.  The layout is meant to be restored from by
hand, with nothing but a file manager::

    STATE/trash/<directories of the original path>/<stem>~YYYYMMDD-HHMMSS<ext>

The stamp is the UTC time the version was trashed (passed in, never read
from a clock here); the extension is kept after it so the file still opens
with the right program (C{docs/report.txt} trashed at 14:15:02 on
3 December 2026 is C{docs/report~20261203-141502.txt}), as Syncthing's
simple and staggered versioning name their versions (its trash can keeps
one untagged version per name; we keep them all).  A second version
with the same name and second is C{report~20261203-141502-1.txt}, then
C{-2} and so on.  The extension is what follows the last dot, unless the
name starts with that dot (C{.bashrc} has none) or it holds a C{~}; so the
last C{~} of a trashed name is always the one added here, and the
original name can be read back unambiguously.  A name too long for the
file system keeps its tag and loses the end of its stem.

Everything below walks directories from an open fd with C{O_NOFOLLOW}:
no symlink anywhere on a path is followed, in the share or in the trash.
"""

from __future__ import annotations

import calendar
import contextlib
import ctypes
import errno
import os
import re
import secrets
import stat
import threading
import time
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from p2ptwisted import wire
from p2ptwisted.share import PARTIAL_PREFIX

#: The trash can's directory, inside the state directory.
TRASH_DIR = "trash"

#: How a version's time is written in its name (UTC).
STAMP_FORMAT = "%Y%m%d-%H%M%S"

#: Versions of one name within one second before we give up numbering.
MAX_NUMBER = 1000

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_VERSION = re.compile(
    r"(?P<stem>.+)~(?P<stamp>\d{8}-\d{6})(?:-(?P<n>[1-9]\d*))?(?P<ext>(?:\.[^.~]*)?)", re.S)


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


class TrashedVersion(NamedTuple):
    """
    One version in the trash can.

    @ivar original: the path it was trashed from.
    @ivar stamp: when, as C{YYYYMMDD-HHMMSS} in UTC.
    @ivar trashed: where it is, relative to the trash can.
    """

    original: str
    stamp: str
    trashed: str
    size: int


# -- the layout ----------------------------------------------------------------

def split_ext(name: str) -> Tuple[str, str]:
    """
    Split a file name into stem and extension as the trash layout does.
    """
    dot = name.rfind(".")
    if dot > 0 and "~" not in name[dot:]:
        return name[:dot], name[dot:]
    return name, ""


def stamp_of(now_ns: int) -> str:
    return time.strftime(STAMP_FORMAT, time.gmtime(now_ns // 1_000_000_000))


def trash_name(path: str, now_ns: int, n: int = 0) -> str:
    """
    Where version C{n} (0 for the first) of C{path} trashed at C{now_ns}
    goes, relative to the trash can.
    """
    head, sep, name = path.rpartition("/")
    stem, ext = split_ext(name)
    tag = "~" + stamp_of(now_ns) + (f"-{n}" if n else "")
    room = wire.MAX_COMPONENT_BYTES - len((tag + ext).encode("utf-8"))
    if room < 1:
        ext, room = "", wire.MAX_COMPONENT_BYTES - len(tag)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore") or "_"
    return f"{head}{sep}{stem}{tag}{ext}"


def parse_trash_name(trashed: str) -> Optional[Tuple[str, str, int]]:
    """
    Read a trashed relative path back: C{(original path, stamp, number)},
    or C{None} if the name is not one L{trash_name} makes.
    """
    head, sep, name = trashed.rpartition("/")
    match = _VERSION.fullmatch(name)
    if match is None or stamp_seconds(match["stamp"]) is None:
        return None
    return head + sep + match["stem"] + match["ext"], match["stamp"], int(match["n"] or 0)


def stamp_seconds(stamp: str) -> Optional[int]:
    try:
        return calendar.timegm(time.strptime(stamp, STAMP_FORMAT))
    except ValueError:
        return None


# -- link-proof primitives ---------------------------------------------------------

def open_dirs(start_fd: int, parts: Sequence[str], create: bool = False,
              forbid: Optional[Tuple[int, int]] = None, mode: int = 0o755) -> int:
    """
    Open the directory C{start/parts...} without following any link.

    @param create: make missing directories on the way, with C{mode}.
    @param forbid: C{(st_dev, st_ino)} of a directory that must not be
        entered (the state directory, when it sits inside the share).
    @raise ApplyError: C{not_found}, C{not_dir} (a link or file is in the
        way) or C{reserved}.
    """
    fd = os.dup(start_fd)
    try:
        for part in parts:
            try:
                try:
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ApplyError("not_found", "no such directory") from None
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
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
            if forbid is not None and identity(os.fstat(fd)) == forbid:
                raise ApplyError("reserved", "the path names this node's state directory")
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


def lstat_at(dir_fd: int, name: str) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


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


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


# -- the trash can itself --------------------------------------------------------

def store(trash_fd: int, dir_fd: int, name: str, path: str, now_ns: int) -> str:
    """
    Move the regular file C{name} in C{dir_fd}, known to peers as C{path},
    into the trash can; return where it went, relative to the trash can.
    """
    parts = path.split("/")[:-1]
    with closing(open_dirs(trash_fd, parts, create=True, mode=0o700)) as target_fd:
        for n in range(MAX_NUMBER):
            trashed = trash_name(path, now_ns, n)
            try:
                move(dir_fd, name, target_fd, trashed.rpartition("/")[2])
            except FileExistsError:
                continue
            os.fsync(target_fd)
            return trashed
        raise ApplyError("exists", "too many trashed versions of this name in one second")


def _files(dir_fd: int, prefix: str) -> Iterator[Tuple[str, os.stat_result]]:
    """
    The regular files under C{dir_fd}, depth first in name order, never
    through a link.
    """
    with os.scandir(dir_fd) as it:
        items = sorted(it, key=lambda item: item.name)
    for item in items:
        if item.is_dir(follow_symlinks=False):
            try:
                sub = os.open(item.name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            with closing(sub):
                yield from _files(sub, prefix + item.name + "/")
        elif item.is_file(follow_symlinks=False):
            yield prefix + item.name, item.stat(follow_symlinks=False)


def versions(trash_fd: int, limit: int) -> List[TrashedVersion]:
    """
    The first C{limit} versions in the trash can, in path order; files that
    are not versions (put there by hand) are left out.
    """
    found: List[TrashedVersion] = []
    walk = _files(trash_fd, "")
    try:
        for trashed, st in walk:
            if len(found) >= limit:
                break
            parsed = parse_trash_name(trashed)
            if parsed is not None:
                found.append(TrashedVersion(parsed[0], parsed[1], trashed, st.st_size))
    finally:
        walk.close()
    return found


def clean(dir_fd: int, cutoff: Optional[int]) -> int:
    """
    Remove the versions under C{dir_fd} stamped at or before C{cutoff}
    (seconds; C{None}: all of them), then the directories left empty.
    Return how many versions were removed.
    """
    removed = 0
    with os.scandir(dir_fd) as it:
        items = list(it)
    for item in items:
        if item.is_dir(follow_symlinks=False):
            try:
                sub = os.open(item.name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            with closing(sub):
                removed += clean(sub, cutoff)
            try:
                os.rmdir(item.name, dir_fd=dir_fd)
            except OSError:
                pass  # not empty
        elif item.is_file(follow_symlinks=False):
            parsed = parse_trash_name(item.name)
            if parsed is not None and (cutoff is None or stamp_seconds(parsed[1]) <= cutoff):
                unlink_quietly(dir_fd, item.name)
                removed += 1
    return removed
