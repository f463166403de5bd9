# -*- test-case-name: tests.test_placing -*-
"""
Placing fetched files, one or many at once.

A fetched file is published in four steps: its bytes are made durable,
the file it replaces goes to the trash can, it is renamed into place, and
the rename is made durable (L{place_one}).  One at a time that is two
C{fsync} calls per file, and a disk that commits its journal in a third of
a millisecond then caps a sync of small files at about 1,500 files a second
(measured on the project machine: 1,514 files/s; the same loop with one
directory sync per hundred files 2,744; with one C{syncfs} per hundred,
8,000 to 14,700).

So a batch is placed in four steps: every file is checked and given its
metadata; the data of all of them is flushed with one C{syncfs} per file
system (Linux; elsewhere, or if it fails, an C{fsync} per file); each is
renamed into place; each directory that gained a file is synced once.  No
file appears under its name before its bytes are durable, and none is
reported placed before its directory entry is -- the guarantees of the
one-at-a-time path.  (C{syncfs} flushes everything dirty on that file
system, other programs' writes too: more than needed, never less.)
"""

from __future__ import annotations

import ctypes
import os
import stat
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import attrs
from twisted.python.failure import Failure

from p2ptwisted import fsops, wire
from p2ptwisted.batching import Outcome
from p2ptwisted.core.index import PERM_MASK, Entry
from p2ptwisted.fsops import READ_FLAGS, ApplyError, rename_into



class Disk(Protocol):
    """
    What placing needs of L{p2ptwisted.apply.Disk} (which imports this
    module, through its local copies, so this does not import it).
    """

    def parent(self, path: str, create: bool = False) -> Tuple[int, str]:
        """The directory fd of C{path}'s parent, and C{path}'s last name."""

    def clear_way(self, dir_fd: int, name: str, path: str, now_ns: int) -> None:
        """Trash the regular file at C{name}; refuse anything else there."""


def _load_syncfs():
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


@attrs.define
class _Ready:
    """
    A verified temporary file, open, with its metadata set: waiting for
    its bytes to be durable and its rename.
    """

    index: int          # in the batch
    entry: Entry
    now_ns: int
    dir_fd: int         # (shared by the batch's files in that directory)
    tmp_name: str
    name: str
    fd: int
    device: int


def sync_data(fds: Sequence[Tuple[int, int]]) -> None:
    """
    Make the bytes of the files C{fds} (C{(fd, st_dev)}) durable: one
    C{syncfs} per file system when there are several files, else (or if
    it is missing or fails) an C{fsync} each.

    @raise OSError: from C{fsync}, for the first file it fails on.
    """
    if len(fds) > 1 and _syncfs is not None:
        one_per_device: Dict[int, int] = {}
        for fd, device in fds:
            one_per_device.setdefault(device, fd)
        if all(_syncfs(fd) == 0 for fd in one_per_device.values()):
            return
    for fd, _ in fds:
        os.fsync(fd)


def place_one(disk: Disk, tmp_name: str, entry: Entry, now_ns: int) -> None:
    """
    L{place_files} for one file, raising what stopped it: L{ApplyError}
    C{bad_path} (not one of our temporary files), C{not_found},
    C{changed}, C{not_regular} or C{bad_entry}, or an C{OSError}.
    """
    [(placed, why)] = place_files(disk, [(tmp_name, entry, now_ns)])
    if not placed:
        assert why is not None
        why.raiseException()


def place_files(disk: Disk, files: Sequence[Tuple[str, Entry, int]]) -> List[Outcome]:
    """
    Publish each C{(tmp_name, entry, now_ns)}: a complete, verified
    temporary file (ours, beside C{entry.path}) as C{entry} (blocking).

    @return: per file, in order, C{(True, None)} once it is in place, or
        C{(False, Failure)}: L{ApplyError} C{changed} if the temporary file
        is not C{entry.size} long or a file appeared at the destination,
        C{not_regular} if a directory, link or special file is in the way,
        or the C{OSError} that stopped it.  A file that failed is left
        where it was (the caller discards it).
    """
    outcomes: List[Optional[Outcome]] = [None] * len(files)
    ready: List[_Ready] = []
    dirs: Dict[str, int] = {}  # parent path -> its fd, opened once per batch
    try:
        for i, (tmp_name, entry, now_ns) in enumerate(files):
            try:
                ready.append(_open_ready(disk, dirs, i, tmp_name, entry, now_ns))
            except Exception:
                outcomes[i] = (False, Failure())
        try:
            sync_data([(r.fd, r.device) for r in ready])
        except OSError:
            failure = Failure()
            for r in ready:
                outcomes[r.index] = (False, failure)
            ready = []
        renamed: Dict[int, List[int]] = {}  # dir fd -> the files placed in it
        for r in ready:
            try:
                disk.clear_way(r.dir_fd, r.name, r.entry.path, r.now_ns)
                rename_into(r.dir_fd, r.tmp_name, r.dir_fd, r.name)
            except Exception:
                outcomes[r.index] = (False, Failure())
            else:
                renamed.setdefault(r.dir_fd, []).append(r.index)
        for dir_fd, placed in renamed.items():
            try:
                os.fsync(dir_fd)
                result: Outcome = (True, None)
            except OSError:
                result = (False, Failure())
            for i in placed:
                outcomes[i] = result
    finally:
        for fd in [r.fd for r in ready] + list(dirs.values()):
            _close_quietly(fd)
    return [o if o is not None else (False, Failure(RuntimeError("not placed")))
            for o in outcomes]


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _open_ready(disk: Disk, dirs: Dict[str, int], index: int, tmp_name: str, entry: Entry,
                now_ns: int) -> _Ready:
    fsops.require_live_file(entry)
    if "/" in tmp_name or not tmp_name.startswith(wire.RESERVED_PREFIX):
        raise ApplyError("bad_path", "a temporary file must be ours, beside its destination")
    parent, _, name = entry.path.rpartition("/")
    dir_fd = dirs.get(parent)
    if dir_fd is None:
        dir_fd, name = disk.parent(entry.path)
        dirs[parent] = dir_fd
    try:
        fd = os.open(tmp_name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ApplyError("not_found", "no such temporary file") from None
    try:
        st = _ready(fd, entry)
    except BaseException:
        os.close(fd)
        raise
    return _Ready(index=index, entry=entry, now_ns=now_ns, dir_fd=dir_fd, tmp_name=tmp_name,
                  name=name, fd=fd, device=st.st_dev)


def _ready(fd: int, entry: Entry) -> os.stat_result:
    """
    Give the open temporary file C{fd} C{entry}'s permission bits (exactly:
    C{fchmod} ignores the umask) and mtime, once it is checked to be
    C{entry.size} long; its stat.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        raise ApplyError("changed", "the temporary file is not the expected size")
    os.fchmod(fd, entry.perms & PERM_MASK)
    os.utime(fd, ns=(st.st_atime_ns, entry.mtime_ns))
    return st
