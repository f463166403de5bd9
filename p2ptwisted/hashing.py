"""
Content hashes and the one safe way to open a share's file for reading.

Shared by the scanner (hashing what it finds), the uploads (serving a
file) and the downloads (checking what arrived), so none of them needs
the others.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, Tuple

from p2ptwisted import wire

from blake3 import blake3 as _blake3

#: Name prefix of partial downloads, beside their destination.
PARTIAL_PREFIX = wire.RESERVED_PREFIX + "-part-"

#: Bytes read at a time while hashing a file.
HASH_READ = 1 << 20

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def new_hasher():
    """
    A fresh content hasher: BLAKE3, which runs about 2.5 times as fast as
    SHA-256 here (see docs/protocol.md, "Content hashes").
    """
    return _blake3()


class ShareError(Exception):
    """
    A file in the share cannot be used as asked.

    C{code} is the ERROR code a peer is answered with.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class ScanStopped(Exception):
    """
    The node is stopping: a scan in progress gives up.
    """


def open_regular(dir_fd: int, name: str) -> Tuple[int, os.stat_result]:
    """
    Open C{name} in C{dir_fd} for reading, only if it is a regular file.

    C{O_NONBLOCK} makes opening a FIFO return at once instead of blocking
    the reactor; the C{fstat} check then refuses it.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ShareError("not_found", "no such file") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
            raise ShareError("not_regular", "not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ShareError("not_regular", "not a regular file")
    return fd, st


def hash_fd(fd: int, stopped: Callable[[], bool] = lambda: False) -> str:
    hasher = new_hasher()
    while True:
        if stopped():
            raise ScanStopped()
        chunk = os.read(fd, HASH_READ)
        if not chunk:
            return hasher.hexdigest()
        hasher.update(chunk)
