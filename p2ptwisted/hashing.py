"""
Content hashes and the one safe way to open a share's file for reading.

Shared by the scanner (hashing what it finds), the uploads (serving a
file) and the downloads (checking what arrived), so none of them needs
the others.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Tuple

from p2ptwisted import wire
from p2ptwisted.core.blocks import block_size, has_list

from blake3 import blake3 as _blake3

#: Name prefix of partial downloads, beside their destination.
PARTIAL_PREFIX = wire.RESERVED_PREFIX + "-part-"

#: Bytes read at a time while hashing a file.
HASH_READ = 2 << 20

#: Files at least this big have their content hash computed on a second
#: thread while this one reads ahead and computes the block list (BLAKE3
#: releases the GIL): a 1 GiB file in page cache took 0.42 s, now 0.30 s
#: on the 2-core project machine, before its first byte can move.
PARALLEL_MIN = 8 << 20

#: (its thread starts with the first big file)
_whole_worker = ThreadPoolExecutor(1, thread_name_prefix="p2ptwisted-hash")

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
    return hash_file(fd, -1, stopped)[0]


class BlockHasher:
    """
    The content hash of a file and, if it has one, its block list
    (L{p2ptwisted.core.blocks}), from its bytes fed in order.  One pass
    serves both, so a file is read once however it is hashed.

    @param size: the file's size, which fixes the block size; a negative
        size means "no block list" (just the content hash).
    """

    def __init__(self, size: int):
        self.whole = new_hasher()
        self.listing = size >= 0 and has_list(size)
        self.bsize = block_size(size) if self.listing else 0
        self._block = new_hasher()
        self._in_block = 0
        self._digests: List[bytes] = []

    def update(self, data) -> None:
        self.whole.update(data)
        self.update_blocks(data)

    def update_blocks(self, data) -> None:
        """Feed the block list only (the content hash is fed apart)."""
        if not self.listing:
            return
        view = memoryview(data)
        while view:
            take = min(len(view), self.bsize - self._in_block)
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == self.bsize:
                self._digests.append(self._block.digest())
                self._block, self._in_block = new_hasher(), 0

    def result(self) -> Tuple[str, bytes]:
        """
        (content hash in hex, block list: C{b""} if the file has none).
        """
        if not self.listing:
            return self.whole.hexdigest(), b""
        tail = [self._block.digest()] if self._in_block else []
        return self.whole.hexdigest(), b"".join(self._digests + tail)


def hash_file(fd: int, size: int,
              stopped: Callable[[], bool] = lambda: False) -> Tuple[str, bytes]:
    """
    Read C{fd} from where it stands to its end: its content hash and block
    list (see L{BlockHasher}; C{size} is what the caller expects the file
    to be, for the block size).

    @raise ScanStopped: if C{stopped()} became true.
    """
    hasher = BlockHasher(size)
    if os.fstat(fd).st_size < PARALLEL_MIN:
        while True:
            if stopped():
                raise ScanStopped()
            chunk = os.read(fd, HASH_READ)
            if not chunk:
                return hasher.result()
            hasher.update(chunk)
    # Two buffers: one is read into while the other's bytes are hashed
    # whole on the worker (and into the block list here).
    buffers = [bytearray(HASH_READ), bytearray(HASH_READ)]
    pending = None
    try:
        for turn in itertools.count():
            if stopped():
                raise ScanStopped()
            buffer = buffers[turn % 2]
            n = os.readv(fd, [buffer])
            if not n:
                break
            view = memoryview(buffer)[:n]
            if pending is not None:
                pending.result()
            pending = _whole_worker.submit(hasher.whole.update, view)
            hasher.update_blocks(view)
    finally:
        if pending is not None:
            pending.result()
    return hasher.result()
