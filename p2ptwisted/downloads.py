# -*- test-case-name: tests.test_transfer -*-
"""
Receiving file bytes: one file arriving into a partial file beside its
destination, hashed as it comes, and handed over only once verified; and
the fetcher's record of one version to fetch (L{Want}).

The partial file's name depends only on the destination and the content
(L{partial_name}), so an interrupted download resumes from whichever peer
serves the same content next.  A verified download is not published here:
the sync shell places it (L{p2ptwisted.placing.place_files}), checking first
that the user has not changed the destination meanwhile.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Callable, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred

from p2ptwisted import wire
from p2ptwisted.core.index import Entry
from p2ptwisted.fsops import publish_new
from p2ptwisted.hashing import PARTIAL_PREFIX, new_hasher

#: Files up to this size are gathered in memory and written to disk in one
#: go, in a thread, when complete: the reactor then does no file-system work
#: for them at all (creating files stalls behind other files' fsyncs).
SMALL_FILE = 128 * 1024

_PARTIAL_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


#: Free space kept in reserve when deciding whether a download fits.
SPACE_MARGIN = 16 * 1024 * 1024

#: The faults of a source a failed download can show (L{TransferFailed}).
BAD_DATA = "data"    # bytes that are not the file its index entry describes
BAD_ENTRY = "entry"  # a file that is not the size its index entry says
BAD_END = "end"      # an END naming another version than was asked for


class TransferFailed(Exception):
    """
    A download did not complete.  C{code} says why, in ERROR-code terms
    (C{local} and C{space} for problems on our side); C{fault}, if the
    source sent a bad copy, which kind (L{BAD_DATA}, L{BAD_ENTRY},
    L{BAD_END}).
    """

    #: Set by the fetcher when it fails a fetch: whether it logged why
    #: (absent before; read with getattr).
    logged: bool

    def __init__(self, code: str, message: str, fault: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.fault = fault


def partial_name(path: str, content_hash: str, purpose: str = "") -> str:
    """
    The name of the partial file for C{content_hash} arriving at C{path}
    (for C{purpose}: an operator's fetch has its own, so it never shares a
    partial file with the sync's fetch of the same version).
    """
    hasher = new_hasher()
    key = f"{path}\0{content_hash}" + (f"\0{purpose}" if purpose else "")
    hasher.update(key.encode("utf-8"))
    return PARTIAL_PREFIX + hasher.hexdigest()[:32]


@attrs.define(eq=False)
class Download:
    """
    @ivar entry: the version being fetched (its path, size and hash).
    @ivar dir_fd: the destination's directory, opened link-proof.
    """

    entry: Entry
    dir_fd: int
    transfer: int = 0
    peer: Any = None  # the PeerProtocol it comes from
    fd: int = -1
    offset: int = 0
    received: int = 0
    last_activity: float = 0.0
    started_at: float = 0.0
    resumed_from: int = 0
    #: See L{partial_name}.
    purpose: str = ""
    _hasher: Any = None  # a new_hasher() (BLAKE3, which may ship no types)
    _memory: Optional[bytearray] = None

    @property
    def partial(self) -> str:
        return partial_name(self.entry.path, self.entry.hash, self.purpose)

    def open(self) -> int:
        """
        Open (or reopen) the partial file; return the offset to ask for.
        Blocking: bytes already there are hashed first, so the final check
        covers the whole file whoever sent which part.  A small file is
        gathered in memory instead and touches the disk only in L{seal}.
        """
        self._hasher = new_hasher()
        if self.entry.size <= SMALL_FILE:
            self._memory = bytearray()
            self.offset = self.resumed_from = 0
            return 0
        try:
            st = self._open_partial()
        except OSError as e:
            self.close()
            raise TransferFailed("local", f"cannot create partial file: {e}") from e
        have = 0
        if st.st_size > self.entry.size:
            os.ftruncate(self.fd, 0)
        else:
            while have < st.st_size:
                chunk = os.pread(self.fd, min(1 << 20, st.st_size - have), have)
                if not chunk:
                    break
                self._hasher.update(chunk)
                have += len(chunk)
        self.offset = self.resumed_from = have
        return have

    def _open_partial(self) -> os.stat_result:
        try:
            self.fd = os.open(self.partial, _PARTIAL_FLAGS, 0o600, dir_fd=self.dir_fd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            # A symlink planted at our partial name: remove it (never
            # follow it) and start a fresh file.
            os.unlink(self.partial, dir_fd=self.dir_fd)
            self.fd = os.open(self.partial, _PARTIAL_FLAGS | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            # Something planted there (a FIFO, a hard link to a file
            # elsewhere): never write into it; start a fresh file.
            self.close()
            os.unlink(self.partial, dir_fd=self.dir_fd)
            self.fd = os.open(self.partial, _PARTIAL_FLAGS | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
            st = os.fstat(self.fd)
        return st

    def write(self, payload) -> None:
        if self.offset + len(payload) > self.entry.size:
            raise TransferFailed("size", f"it sent more bytes than its index entry says the"
                                 f" file has ({self.entry.size}): its index entry is wrong",
                                 BAD_ENTRY)
        if self._memory is not None:
            self._memory += payload
            self.offset += len(payload)
            self.received += len(payload)
            self._hasher.update(payload)
            return
        view = memoryview(payload)
        while view:
            written = os.pwrite(self.fd, view, self.offset)
            self.offset += written
            self.received += written
            view = view[written:]
        self._hasher.update(payload)

    def verify(self, end: wire.End) -> None:
        """
        Check that what arrived is the file we asked for.

        @raise TransferFailed: it is not; the partial file is then removed,
            so the bad data is never used.
        """
        entry = self.entry
        if end.hash != entry.hash:
            self.discard()
            raise TransferFailed("mismatch", "END does not describe the file we asked for"
                                 f" (content {end.hash[:16]}, not {entry.hash[:16]})", BAD_END)
        if end.size != entry.size:
            # The version asked for, but not the size the peer's index
            # says: the bytes cannot be the file, and its index is wrong.
            self.discard()
            raise TransferFailed("size", f"its END says the file has {end.size} bytes, its"
                                 f" index entry {entry.size}: its index entry is wrong",
                                 BAD_ENTRY)
        if self.offset != entry.size:
            self.discard()
            raise TransferFailed("size", f"got {self.offset} of {entry.size} bytes", BAD_DATA)
        digest = self._hasher.hexdigest()
        if digest != entry.hash:
            self.discard()
            raise TransferFailed("mismatch", f"content hash {digest[:16]} is not {entry.hash[:16]}",
                                 BAD_DATA)

    def seal(self) -> str:
        """
        Blocking: write a small file's bytes out, close the partial file,
        and return its name (beside the destination) for the sync shell
        to place.  The placing syncs it.

        @raise TransferFailed: C{local}, if the bytes cannot be written.
        """
        try:
            return self._seal()
        except OSError as e:
            self.close()
            raise TransferFailed("local",
                                 f"cannot write the partial file: {e.strerror or e}") from e

    def _seal(self) -> str:
        if self._memory is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                self.fd = os.open(self.partial, flags, 0o600, dir_fd=self.dir_fd)
            except FileExistsError:
                # A stale partial, or something planted: replace it, never
                # write through it.
                os.unlink(self.partial, dir_fd=self.dir_fd)
                self.fd = os.open(self.partial, flags, 0o600, dir_fd=self.dir_fd)
            view = memoryview(self._memory)
            while view:
                view = view[os.write(self.fd, view):]
            del view
            # self._memory is dropped by release(), in the reactor thread:
            # memory freed by the thread that allocated it is reused.
        self.close()
        return self.partial

    def keep_as(self, name: str) -> str:
        """
        Blocking: publish the verified file as C{name} in its directory,
        with the version's mtime and permission bits, never replacing
        anything (an operator's fetch, outside the sync's decisions).

        @raise TransferFailed: C{exists} if C{name} is taken.
        """
        self.seal()
        if not publish_new(self.dir_fd, self.partial, name, self.entry):
            self.discard()
            raise TransferFailed("exists", f"{wire.safe_text(name)} already exists")
        return name

    def discard(self) -> None:
        """
        Throw away the partial file: its bytes are known to be bad.
        """
        self.close()
        self._memory = None
        try:
            os.unlink(self.partial, dir_fd=self.dir_fd)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        """
        Close everything; the partial file stays for a later resume, if it
        holds anything to resume from.
        """
        empty = self.fd >= 0 and self.offset == 0
        self.close()
        self._memory = None
        if empty:
            self.discard()  # a source that sent nothing leaves nothing behind
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


#: C{path -> (dir fd, directories made)}: opens (making it if need be) the
#: directory a fetched file goes to (see L{p2ptwisted.fetcher.Fetcher}).
OpenDir = Callable[[str], Tuple[int, List[str]]]


@attrs.define(eq=False)
class Want:
    """
    One version to fetch, the peers that hold it, and who is waiting.
    """

    entry: Entry
    sources: tuple
    done: Deferred
    #: Where the bytes go (the sync's destination directory by default).
    open_dir: Optional[OpenDir] = None
    #: An operator's fetch: the name to publish the file under itself.
    keep: Optional[str] = None
    #: Directories made for this fetch (removed if it fails).
    made: list = attrs.field(factory=list)
    tried: set = attrs.field(factory=set)
    download: Optional[Download] = None
    peer: str = ""
    state: str = "waiting"  # waiting, opening, running
    finished_at: Optional[float] = None
    #: When its connection was lost (it waits a while for a source).
    interrupted_at: Optional[float] = None
    #: When its last progress line was logged (L{p2ptwisted.stalls}).
    progress_at: Optional[float] = None
    #: Its block download (L{p2ptwisted.swarm.BlockDownload}), if it
    #: comes block by block rather than as one stream.
    swarm: Any = None

    @property
    def got(self) -> int:
        """
        Bytes of the file here so far.
        """
        if self.swarm is not None:
            return self.swarm.got
        return self.download.offset if self.download is not None else 0

    @property
    def path(self) -> str:
        return self.entry.path

    @property
    def version(self) -> tuple:
        """
        What a source is benched for (L{p2ptwisted.core.sources}).
        """
        return (self.entry.path, self.entry.hash)

    def remove_made(self, remove: Callable[[list], None]) -> None:
        """
        Remove the directories made for this fetch, which failed: a few
        rmdirs, at once (not in a thread), so that by the time anyone
        hears of the failure nothing of the fetch is left.

        @raise OSError: from C{remove}.
        """
        made, self.made = self.made, []
        if made:
            remove(made)

    def __repr__(self) -> str:
        got = self.got
        return (f"<fetch {wire.safe_text(self.path, 60)!r} {self.state},"
                f" {got} of {self.entry.size} bytes, from {self.peer[:12] or '?'}>")


def check_space(download: Download) -> None:
    """
    Blocking: refuse a download the file system has no room for (less
    what a partial file already holds, plus a margin), before a byte is
    written: a peer must not be able to fill our disk by announcing a
    huge file.

    @raise TransferFailed: C{space}.
    """
    try:
        have = os.stat(download.partial, dir_fd=download.dir_fd, follow_symlinks=False).st_size
    except OSError:
        have = 0
    need = download.entry.size - min(have, download.entry.size) + SPACE_MARGIN
    st = os.fstatvfs(download.dir_fd)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise TransferFailed("space", f"needs {need} bytes of free space, {free} free")


def in_flight(want: Optional[Want]) -> Want:
    """
    A want the fetcher knows is in flight: its transfer is on the connection.
    """
    assert want is not None  # Fetcher.active and the connections' downloads change together
    return want


def download_of(want: Want) -> Download:
    """
    The download of a want in flight (opening or running).
    """
    assert want.download is not None  # set by Fetcher._start until the download ends
    return want.download
