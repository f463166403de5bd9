# -*- test-case-name: tests.test_apply -*-
"""
The trash can (L{TrashCan}).  The link-proof directory operations it
shares with L{p2ptwisted.apply} are in L{p2ptwisted.fsops}.

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

Everything below walks directories from an open fd with C{O_NOFOLLOW}
(L{p2ptwisted.fsops}): no symlink anywhere on a path is followed, in the
share or in the trash.

Why the trash can is a class of its own, apart from L{apply.Disk}: it
owns different things (the state directory and the trash fd in it, and
the keep-days policy) and needs nothing of the share but one directory
fd to take a file from or put one back into.  So everything that reads
or changes the trash can's contents (storing, listing, cleaning,
restoring) is here, and the disk only walks the share to the directory
concerned; the trash can can be listed and cleaned without opening the
share at all.
"""

from __future__ import annotations

import calendar
import os
import re
import threading
import time
from typing import Callable, Generator, List, NamedTuple, Optional, Tuple

import attrs

from p2ptwisted import wire
from p2ptwisted.fsops import (
    DIR_FLAGS, ROOT_FLAGS, ApplyError, closing, identity, move, open_dirs, regular_at,
    split_path, unlink_quietly,
)

#: The trash can's directory, inside the state directory.
TRASH_DIR = "trash"

#: How a version's time is written in its name (UTC).
STAMP_FORMAT = "%Y%m%d-%H%M%S"

#: Versions of one name within one second before we give up numbering.
MAX_NUMBER = 1000

#: Days a trashed version is kept by default (Syncthing's trash can keeps
#: versions forever unless told; a month bounds the disk a flood of deletes
#: can take while leaving time to notice it).
DEFAULT_KEEP_DAYS = 30

_VERSION = re.compile(
    r"(?P<stem>.+)~(?P<stamp>\d{8}-\d{6})(?:-(?P<n>[1-9]\d*))?(?P<ext>(?:\.[^.~]*)?)", re.S)


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


def _move_numbered(src_fd: int, src: str, dst_fd: int,
                   name: Callable[[int], str], what: str) -> str:
    """
    L{move} C{src} to the first free name of C{name(0)}, C{name(1)}, ...,
    sync the destination directory, and return the name used.
    """
    for n in range(MAX_NUMBER):
        try:
            move(src_fd, src, dst_fd, name(n))
        except FileExistsError:
            continue
        os.fsync(dst_fd)
        return name(n)
    raise ApplyError("exists", f"too many {what}")


def _walk(dir_fd: int, prefix: str = "",
          prune: bool = False) -> Generator[Tuple[int, os.DirEntry, str], None, None]:
    """
    The regular files under C{dir_fd}, depth first in name order, never
    through a link: each as the fd of its directory (open until the next
    one is asked for), its entry there, and its path below C{dir_fd}.

    @param prune: remove each directory that is empty once walked.
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
                yield from _walk(sub, prefix + item.name + "/", prune)
            if prune:
                try:
                    os.rmdir(item.name, dir_fd=dir_fd)
                except OSError:
                    pass  # not empty
        elif item.is_file(follow_symlinks=False):
            yield dir_fd, item, prefix + item.name


# -- the trash can itself --------------------------------------------------------

@attrs.define
class TrashCan:
    """
    The trash can in a node's state directory, opened (and made, with the
    state directory, mode 0o700) on first use.

    @ivar keep_days: how long versions are kept; 0 turns the trash can
        off, and then L{store} deletes.
    """

    state_dir: str
    keep_days: int = DEFAULT_KEEP_DAYS
    _fd: Optional[int] = None
    _state_id: Optional[Tuple[int, int]] = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def open(self) -> Tuple[int, int]:
        """
        Open the trash can if it is not yet, and return the state
        directory's C{(st_dev, st_ino)}, for a share that holds the state
        directory to refuse it.
        """
        self._open()
        assert self._state_id is not None  # (set by _open)
        return self._state_id

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
                with closing(os.open(self.state_dir, ROOT_FLAGS)) as state_fd:
                    self._state_id = identity(os.fstat(state_fd))
                    self._fd = open_dirs(state_fd, [TRASH_DIR], create=True, mode=0o700)
            return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def store(self, dir_fd: int, name: str, path: str, now_ns: int) -> Optional[str]:
        """
        Move the regular file C{name} in C{dir_fd}, known to peers as
        C{path}, into the trash can and return where it went, relative to
        the trash can (what L{restore} takes); with C{keep_days} 0 delete
        it instead and return C{None}.  Either way C{dir_fd} is synced.
        """
        if self.keep_days == 0:
            os.unlink(name, dir_fd=dir_fd)
            trashed = None
        else:
            parts = path.split("/")
            with closing(open_dirs(self._open(), parts[:-1], create=True, mode=0o700)) as into:
                trashed = "/".join(parts[:-1] + [_move_numbered(
                    dir_fd, name, into, lambda n: trash_name(parts[-1], now_ns, n),
                    "trashed versions of this name in one second")])
        os.fsync(dir_fd)
        return trashed

    def versions(self, limit: int = 1000) -> List[TrashedVersion]:
        """
        The first C{limit} versions in the trash can, in path order; files
        that are not versions (put there by hand) are left out.
        """
        found: List[TrashedVersion] = []
        walk = _walk(self._open())
        try:
            for _, item, trashed in walk:
                if len(found) >= limit:
                    break
                parsed = parse_trash_name(trashed)
                if parsed is not None:
                    size = item.stat(follow_symlinks=False).st_size
                    found.append(TrashedVersion(parsed[0], parsed[1], trashed, size))
        finally:
            walk.close()
        return found

    def clean(self, now_ns: int, keep_days: Optional[int] = None) -> int:
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
        removed = 0
        for dir_fd, item, _ in _walk(self._open(), prune=True):
            parsed = parse_trash_name(item.name)
            # (a name parse_trash_name accepts has a valid stamp)
            if parsed is not None and (cutoff is None or (stamp_seconds(parsed[1]) or 0) <= cutoff):
                unlink_quietly(dir_fd, item.name)
                removed += 1
        return removed

    def restore(self, trashed: str, open_dir: Callable[[List[str]], int]) -> str:
        """
        Move the version C{trashed} (as L{store} and L{versions} name it)
        back to its original path; if a file is there now, beside it as
        C{name.restored-N.ext}.

        @param open_dir: opens a directory of the share, given its path
            components, making missing ones, never through a link.
        @return: the path it landed at.
        """
        parts = split_path(trashed)
        parsed = parse_trash_name(trashed)
        if parsed is None:
            raise ApplyError("bad_path", "not a trashed version's name")
        original = split_path(parsed[0])
        stem, ext = split_ext(original[-1])
        with closing(open_dirs(self._open(), parts[:-1])) as src_dir:
            regular_at(src_dir, parts[-1])
            with closing(open_dir(original[:-1])) as dir_fd:
                landed = _move_numbered(
                    src_dir, parts[-1], dir_fd,
                    lambda n: f"{stem}.restored-{n}{ext}" if n else original[-1],
                    "restored copies of this name")
        return "/".join(original[:-1] + [landed])
