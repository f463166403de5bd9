# -*- test-case-name: tests.test_blockfile -*-
"""
The disk side of a block download: the partial file, the record of which
of its blocks are verified, local reuse, and the final check.

A block's bytes go from the connection straight into the partial file at
the block's offset (no copy, no buffering: memory stays flat however big
the file), and are hashed on the way.  They count -- are recorded as
verified, served to other peers, published -- only once their digest is
the one the block list names; a bad block's bytes are overwritten by the
next copy.  Nothing reaches the file's final name before every block is
verified and the whole file has its content hash (L{BlockFile.check}).

Which blocks are verified is kept beside the partial file, one byte per
block, in a file named after it (L{HAVE_SUFFIX}; both names start with the
reserved prefix, so neither is ever indexed or served as a file).  After a
crash or kill -9 only the blocks not recorded are fetched again.  If that
record is missing (a partial file from a stream download, or a record
lost), the blocks the partial file holds are hashed once to find it again.

All methods but L{BlockFile.write} and L{BlockFile.mark} block: the shell
runs them in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterable, Optional, Set, Tuple

from p2ptwisted.core.blocks import block_count, block_size, digest_at, digests
from p2ptwisted.core.index import Entry
from p2ptwisted import wire
from p2ptwisted.downloads import SPACE_MARGIN, TransferFailed, partial_name
from p2ptwisted.fsops import publish_new
from p2ptwisted.hashing import READ_FLAGS, hash_file, new_hasher

#: Appended to the partial file's name for its record of verified blocks.
HAVE_SUFFIX = "-have"

#: The purpose (see L{partial_name}) of a path's leftover: the partial file
#: of a version that was replaced while on its way (L{BlockFile.keep_leftover}).
LEFTOVER = "leftover"

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BlockFile:
    """
    @ivar have: the blocks verified so far.
    """

    def __init__(self, entry: Entry, dir_fd: int, purpose: str = ""):
        self.entry = entry
        self.dir_fd = dir_fd
        self.partial = partial_name(entry.path, entry.hash, purpose)
        self.purpose = purpose
        self.have_name = self.partial + HAVE_SUFFIX
        self.bsize = block_size(entry.size)
        self.count = block_count(entry.size)
        self.fd = -1
        self.have_fd = -1
        self.have: Set[int] = set()

    # -- opening -------------------------------------------------------------------

    def open(self) -> Set[int]:
        """
        Open (or create) the partial file and its record; return the blocks
        already verified.
        """
        if self.purpose == "":
            self._adopt_leftover()
        self.fd, st = self._open_plain(self.partial)
        length = st.st_size
        self.have_fd, have_st = self._open_plain(self.have_name)
        record = os.pread(self.have_fd, self.count + 1, 0) if have_st.st_size else b""
        if length > self.entry.size:
            # A leftover of a longer version, or a partial file grown
            # behind our back: cut, and its blocks found by hashing.
            os.ftruncate(self.fd, self.entry.size)
            length = self.entry.size
            record = b""
        if len(record) == self.count:
            # (a block past the partial file's end is not there, whatever
            # the record says: the partial file was removed or cut)
            self.have = {i for i, b in enumerate(record)
                         if b == 1 and sum(self.span(i)) <= length}
        else:
            os.ftruncate(self.have_fd, 0)
            os.pwrite(self.have_fd, bytes(self.count), 0)
            self.have = set()
            for i in self._recover(length):
                self.mark(i)
        return set(self.have)

    def _adopt_leftover(self) -> None:
        """
        With no partial file of our own, take over the path's leftover, if
        an older version's download left one: the blocks the two versions
        share are found by hashing it (L{_recover}: it comes without a
        record), so a file edited while it was on its way costs about the
        edit, not a second start from nothing.
        """
        leftover = partial_name(self.entry.path, "", LEFTOVER)
        try:
            os.stat(self.partial, dir_fd=self.dir_fd, follow_symlinks=False)
            return
        except FileNotFoundError:
            pass
        try:
            os.rename(leftover, self.partial, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except FileNotFoundError:
            return
        try:
            os.unlink(self.have_name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass

    def _open_plain(self, name: str) -> Tuple[int, os.stat_result]:
        """
        Open C{name} read-write, never through a link or into something
        planted there (a FIFO, a hard link to a file elsewhere): such a
        thing is removed and a fresh file made.
        """
        try:
            fd = os.open(name, _FLAGS, 0o600, dir_fd=self.dir_fd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            os.unlink(name, dir_fd=self.dir_fd)
            fd = os.open(name, _FLAGS | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            os.unlink(name, dir_fd=self.dir_fd)
            fd = os.open(name, _FLAGS | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
            st = os.fstat(fd)
        return fd, st

    def _recover(self, length: int) -> Iterable[int]:
        """
        The whole blocks within the first C{length} bytes that already hold
        what the list says.
        """
        for i in range(min(self.count, length // self.bsize + 1)):
            offset = i * self.bsize
            size = min(self.bsize, self.entry.size - offset)
            if offset + size > length:
                break
            data = os.pread(self.fd, size, offset)
            if new_hasher().update(data).digest() == digest_at(self.entry.blocks, i):
                yield i

    def room(self) -> None:
        """
        Refuse a download the file system has no room for: the blocks still
        missing, plus a margin.

        @raise TransferFailed: C{space}.
        """
        missing = self.entry.size - sum(self.span(i)[1] for i in self.have)
        need = missing + SPACE_MARGIN
        st = os.fstatvfs(self.dir_fd)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise TransferFailed("space", f"needs {need} bytes of free space, {free} free")

    def span(self, index: int) -> Tuple[int, int]:
        offset = index * self.bsize
        return offset, min(self.bsize, self.entry.size - offset)

    # -- blocks arriving (reactor thread) -----------------------------------------

    def write(self, offset: int, payload) -> None:
        view = memoryview(payload)
        while view:
            written = os.pwrite(self.fd, view, offset)
            offset += written
            view = view[written:]

    def mark(self, index: int) -> None:
        """
        Record block C{index} as verified: one byte, no fsync (a crash of
        the machine may lose the record, never make a bad block count:
        L{check} reads every block again before the file is used).
        """
        self.have.add(index)
        os.pwrite(self.have_fd, b"\x01", index)

    def unmark(self, blocks: Iterable[int]) -> None:
        for index in blocks:
            self.have.discard(index)
            os.pwrite(self.have_fd, b"\x00", index)

    # -- local reuse ---------------------------------------------------------------

    def copy_in(self, index: int, src_fd: int, src_offset: int) -> bool:
        """
        Copy block C{index} from another file, if the bytes there have the
        block's digest.  Blocking.
        """
        offset, size = self.span(index)
        data = os.pread(src_fd, size, src_offset)
        if len(data) != size or new_hasher().update(data).digest() != digest_at(
                self.entry.blocks, index):
            return False
        self.write(offset, data)
        self.mark(index)
        return True

    # -- the end -------------------------------------------------------------------

    def check(self) -> Set[int]:
        """
        Read the whole partial file once and check its content hash: the
        blocks that are not what the list says (empty when the file is
        whole and right).  Blocking.

        The blocks were verified as they came, so a file that has its
        content hash is done after one hash of it; only one that does not
        is read again to find which blocks are wrong (a write lost in a
        crash).

        @raise TransferFailed: if every block matches the list but the file
            is not the content hash: the list itself is wrong.
        """
        st = os.fstat(self.fd)
        if st.st_size != self.entry.size:
            os.ftruncate(self.fd, self.entry.size)
        os.lseek(self.fd, 0, os.SEEK_SET)
        if st.st_size == self.entry.size and hash_file(self.fd, -1)[0] == self.entry.hash:
            return set()
        os.lseek(self.fd, 0, os.SEEK_SET)
        _, found = hash_file(self.fd, self.entry.size)
        bad = {i for i, (a, b) in enumerate(zip(digests(found), digests(self.entry.blocks)))
               if a != b}
        bad |= {i for i in range(self.count) if sum(self.span(i)) > st.st_size}
        if bad:
            self.unmark(bad)
            return bad
        raise TransferFailed("mismatch", "every block matches the list but the file is not its"
                             f" content hash {self.entry.hash[:16]}: the block list is wrong",
                             "entry")

    def close(self) -> None:
        for name in ("fd", "have_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def close_dir(self) -> None:
        self.close()
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def finish(self) -> str:
        """
        The file is verified: drop the record, close, and return the
        partial file's name for the sync to place.
        """
        self.close()
        try:
            os.unlink(self.have_name, dir_fd=self.dir_fd)
        except OSError:
            pass
        return self.partial

    def discard(self) -> None:
        """
        Throw away the partial file and its record: they are no use.
        """
        self.close()
        for name in (self.partial, self.have_name):
            try:
                os.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass

    def keep_leftover(self) -> None:
        """
        This version is gone from its sources, which have a newer one: keep
        the partial file as the path's leftover (replacing an older one),
        for the download of the newer version to take its blocks from
        (L{_adopt_leftover}).  Blocking.
        """
        if not self.have or self.fd < 0 or self.purpose:
            self.discard()
            return
        self.close()
        leftover = partial_name(self.entry.path, "", LEFTOVER)
        try:
            os.rename(self.partial, leftover, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError:
            pass
        self.discard()

    def release(self) -> None:
        """
        Close; the partial file and record stay for a later resume, unless
        no block was verified.
        """
        if not self.have and self.fd >= 0:
            self.discard()
        else:
            self.close()


def publish_as(file: BlockFile, name: str) -> str:
    """
    Blocking: publish a verified block download as C{name} in its
    directory, with the version's mtime and permission bits, never
    replacing anything (an operator's fetch, outside the sync's decisions).

    @raise TransferFailed: C{exists} if C{name} is taken.
    """
    if not publish_new(file.dir_fd, file.finish(), name, file.entry):
        file.discard()
        raise TransferFailed("exists", f"{wire.safe_text(name)} already exists")
    return name


def open_source(dir_fd: int, name: str, entry: Entry) -> Optional[int]:
    """
    One of our own files, opened for reading blocks from it if it still has
    the size and mtime its index entry records (else C{None}).  Blocking.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (entry.size,
                                                                         entry.mtime_ns):
        os.close(fd)
        return None
    return fd
