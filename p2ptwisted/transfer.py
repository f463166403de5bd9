# -*- test-case-name: tests.test_transfer -*-
"""
Moving file bytes: the upload scheduler that feeds a connection, and the
download that turns DATA frames into a verified file.

One connection carries any number of uploads and downloads in both
directions at once.  Its transport has exactly one registered producer, the
L{UploadScheduler}, which takes one chunk from each active upload in turn
while the transport wants data, and stops when the transport pauses it.
Control frames are written straight to the transport, so they wait behind
at most one buffer's worth of file data, never behind a whole file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from typing import TYPE_CHECKING, Deque, Dict, Optional, Tuple

import attrs
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from p2ptwisted import wire
from p2ptwisted.share import (
    PARTIAL_PREFIX,
    LocalFile,
    ShareError,
    conflict_name,
    hash_fd,
    new_hasher,
    open_regular,
)

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.protocol import PeerProtocol

#: Payload bytes per DATA frame.
CHUNK_SIZE = 128 * 1024

#: Files up to this size are gathered in memory and written to disk in one
#: go, in a thread, when complete: the reactor then does no file-system work
#: for them at all (creating files stalls behind other files' fsyncs).
SMALL_FILE = CHUNK_SIZE

#: Numbered conflict names tried when a download's own names are taken.
MAX_CONFLICT_NAMES = 10

#: Bytes the scheduler writes in one reactor turn before letting the
#: reactor read and write other connections.
TURN_BUDGET = 1024 * 1024

log = Logger()


class TransferFailed(Exception):
    """
    A download did not complete.  C{code} says why, in ERROR-code terms
    (C{local} and C{space} for problems on our side).
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Sending


@attrs.define
class RateLimit:
    """
    A token bucket for C{--max-rate}: shared by every connection of a node,
    so it caps the node's total upload rate.  Spending may run into debt
    (a chunk is sent whole); the debt is waited out before the next send.
    """

    rate: float
    clock: object
    burst: float = 0.0
    _tokens: float = 0.0
    _stamp: Optional[float] = None
    _queue: Deque["UploadScheduler"] = attrs.field(factory=deque)
    _timer: object = None

    def __attrs_post_init__(self) -> None:
        self.burst = self.burst or max(self.rate / 4, float(CHUNK_SIZE))

    def available(self) -> float:
        now = self.clock.seconds()
        if self._stamp is None:
            self._tokens = self.burst
        else:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def spend(self, n: int) -> None:
        self._tokens -= n

    def wait(self) -> float:
        """
        Seconds until there is something to spend again.
        """
        return max(0.0, -self._tokens) / self.rate + 0.001

    def wait_turn(self, scheduler: "UploadScheduler") -> None:
        """
        Queue a scheduler that has data to send but no tokens.  When tokens
        come back the queued schedulers run in turn, first come first
        served, so connections share the cap instead of one taking it all.
        """
        if scheduler not in self._queue:
            self._queue.append(scheduler)
        if self._timer is None:
            self._timer = self.clock.callLater(self.wait(), self._next)

    def _next(self) -> None:
        self._timer = None
        while self._queue and self.available() > 0:
            self._queue.popleft()._run()
        if self._queue and self._timer is None:
            self._timer = self.clock.callLater(self.wait(), self._next)

    def forget(self, scheduler: "UploadScheduler") -> None:
        if scheduler in self._queue:
            self._queue.remove(scheduler)
        if not self._queue and self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._timer = None


@attrs.define(eq=False)
class Upload:
    """
    One file being sent: an open descriptor and how far we have got.
    """

    transfer: int
    fd: int
    local: LocalFile
    position: int
    sent: int = 0

    @property
    def done(self) -> bool:
        return self.position >= self.local.entry.size

    def read_chunk(self, limit: int) -> bytes:
        size = min(limit, self.local.entry.size - self.position)
        chunk = os.pread(self.fd, size, self.position)
        if len(chunk) != size:
            raise ShareError("changed", "the file shrank while being sent")
        self.position += len(chunk)
        self.sent += len(chunk)
        return chunk

    def unchanged(self) -> bool:
        st = os.fstat(self.fd)
        entry = self.local.entry
        return (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@implementer(IPushProducer)
class UploadScheduler:
    """
    The one producer registered on a connection's transport.

    It is a push producer: after a C{resumeProducing} it writes until the
    transport pauses it or it runs out of work, a C{TURN_BUDGET} at a time,
    taking one chunk from each upload in turn so no transfer starves the
    others.  The transport calls C{pauseProducing} on every write while its
    buffer is over the limit, so the paused state is a boolean, not a count.
    """

    def __init__(self, proto: "PeerProtocol", clock, chunk_size: int = CHUNK_SIZE,
                 limit: Optional[RateLimit] = None):
        self.proto = proto
        self.clock = clock
        self.chunk_size = chunk_size
        self.limit = limit
        self.uploads: Deque[Upload] = deque()
        self.by_id: Dict[int, Upload] = {}
        self.paused = False
        self.bytes_sent = 0
        self._call = None
        self._running = False

    def add(self, upload: Upload) -> None:
        self.uploads.append(upload)
        self.by_id[upload.transfer] = upload
        self._kick()

    def cancel(self, transfer: int) -> bool:
        upload = self.by_id.pop(transfer, None)
        if upload is None:
            return False
        if upload in self.uploads:
            self.uploads.remove(upload)
        upload.close()
        return True

    def _kick(self) -> None:
        if self.uploads and not self.paused and self._call is None:
            if self.limit is not None and self.limit.available() <= 0:
                self.limit.wait_turn(self)
            else:
                self._call = self.clock.callLater(0, self._run)

    def _run(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._running = True
        try:
            self._run_turn()
        finally:
            self._running = False
        self._kick()

    def _run_turn(self) -> None:
        budget = TURN_BUDGET
        if self.limit is not None:
            budget = min(budget, self.limit.available())
        write = self.proto.transport.writeSequence
        while self.uploads and not self.paused and budget > 0:
            upload = self.uploads.popleft()
            try:
                chunk = upload.read_chunk(self.chunk_size)
            except ShareError as e:
                self._finish(upload, error=str(e))
                continue
            except OSError as e:
                self._finish(upload, error=e.strerror or str(e), code="unavailable")
                continue
            write([wire.data_header(upload.transfer, len(chunk)), chunk])
            self.proto.bytes_out += 9 + len(chunk)
            budget -= len(chunk)
            self.bytes_sent += len(chunk)
            if self.limit is not None:
                self.limit.spend(len(chunk))
            if upload.done:
                self._finish(upload)
            else:
                self.uploads.append(upload)

    def _finish(self, upload: Upload, error: Optional[str] = None, code: str = "changed") -> None:
        self.by_id.pop(upload.transfer, None)
        if upload in self.uploads:
            self.uploads.remove(upload)
        try:
            if error is None and not upload.unchanged():
                error = "the file changed while being sent"
        except OSError as e:
            error = str(e)
        upload.close()
        entry = upload.local.entry
        if error is None:
            self.proto.send(wire.End(transfer=upload.transfer, size=entry.size, hash=entry.hash))
        else:
            log.info("upload of {path} to {peer} failed: {why}",
                     path=wire.safe_text(entry.path), peer=self.proto.describe(), why=error)
            self.proto.send(wire.Error(code=code, message=error, transfer=upload.transfer))

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        # The transport calls this from its write loop once its buffer has
        # drained: refill it now rather than a reactor turn later.
        self.paused = False
        if self.uploads and self._call is None and not self._running and self.limit is None:
            self._run()
        else:
            self._kick()

    def stopProducing(self) -> None:
        if self.limit is not None:
            self.limit.forget(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for upload in self.uploads:
            upload.close()
        self.uploads.clear()
        self.by_id.clear()


# ---------------------------------------------------------------------------
# Receiving


def partial_name(path: str, content_hash: str) -> str:
    """
    The name of the partial file for C{content_hash} arriving at C{path}.

    It depends only on the destination and the content, so an interrupted
    download resumes whichever peer serves the same content next.
    """
    hasher = new_hasher()
    hasher.update(f"{path}\0{content_hash}".encode("utf-8"))
    return PARTIAL_PREFIX + hasher.hexdigest()[:32]


@attrs.define(eq=False)
class Download:
    """
    One file arriving: written to a partial file beside its destination,
    hashed as it comes, and published under C{dest} only once complete and
    verified.

    @ivar dest: where the file will appear (a path relative to the share).
    @ivar entry: what the sender's catalog says the file is.
    """

    entry: wire.FileEntry
    dest: str
    dir_fd: int
    transfer: int = 0
    source_path: str = ""
    peer: Optional["PeerProtocol"] = None
    fd: int = -1
    offset: int = 0
    received: int = 0
    last_activity: float = 0.0
    #: Going to a directory outside the share (an operator's fetch).
    outside: bool = False
    started_at: float = 0.0
    resumed_from: int = 0
    _hasher: object = None
    _memory: Optional[bytearray] = None

    @property
    def partial(self) -> str:
        return partial_name(self.dest, self.entry.hash)

    @property
    def name(self) -> str:
        return self.dest.rsplit("/", 1)[-1]

    def open(self) -> int:
        """
        Open (or reopen) the partial file; return the offset to ask for.

        Bytes already there are hashed first, so the final check covers
        the whole file whoever sent which part.  A small file is gathered
        in memory instead and touches the disk only in L{make_durable}.
        """
        self._hasher = new_hasher()
        if self.entry.size <= SMALL_FILE:
            self._memory = bytearray()
            self.offset = self.resumed_from = 0
            return 0
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            try:
                self.fd = os.open(self.partial, flags, 0o600, dir_fd=self.dir_fd)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                # A symlink planted at our partial name: remove it (never
                # follow it) and start a fresh file.
                os.unlink(self.partial, dir_fd=self.dir_fd)
                self.fd = os.open(self.partial, flags | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                # Something planted there (a FIFO, a hard link to a file
                # elsewhere): never write into it; start a fresh file.
                self.close()
                os.unlink(self.partial, dir_fd=self.dir_fd)
                self.fd = os.open(self.partial, flags | os.O_EXCL, 0o600, dir_fd=self.dir_fd)
                st = os.fstat(self.fd)
        except OSError as e:
            self.close()
            raise TransferFailed("local", f"cannot create partial file: {e}")
        if st.st_size > self.entry.size:
            os.ftruncate(self.fd, 0)
            have = 0
        else:
            have = 0
            while have < st.st_size:
                chunk = os.pread(self.fd, min(1 << 20, st.st_size - have), have)
                if not chunk:
                    break
                self._hasher.update(chunk)
                have += len(chunk)
        self.offset = self.resumed_from = have
        return have

    def write(self, payload) -> None:
        if self.offset + len(payload) > self.entry.size:
            raise TransferFailed("size", "peer sent more bytes than the file has")
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
        if end.size != entry.size or end.hash != entry.hash:
            self.discard()
            raise TransferFailed("mismatch", "END does not describe the file we asked for")
        if self.offset != entry.size:
            self.discard()
            raise TransferFailed("size", f"got {self.offset} of {entry.size} bytes")
        digest = self._hasher.hexdigest()
        if digest != entry.hash:
            self.discard()
            raise TransferFailed("mismatch", f"content hash {digest[:16]} is not {entry.hash[:16]}")

    def make_durable(self) -> Tuple[str, int]:
        """
        Flush the verified file to disk, give it the sender's mtime, and
        link it in at C{dest} -- or, if something appeared there meanwhile,
        at its conflict name -- never replacing anything.

        Blocking (fsync): the node runs it in a thread, where several
        downloads' fsyncs share one journal commit instead of queueing in
        the reactor.  Returns where the file landed and its inode.
        """
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
            # memory freed by the thread that allocated it is reused, where
            # memory freed by another thread swells the process.
        os.fsync(self.fd)
        os.utime(self.fd, ns=(self.entry.mtime_ns, self.entry.mtime_ns))
        os.fchmod(self.fd, 0o644)
        self.close()
        candidates = [self.dest] + [
            conflict_name(self.dest, self.entry.hash, n) for n in range(MAX_CONFLICT_NAMES)
        ]
        for dest in candidates:
            name = dest.rsplit("/", 1)[-1]
            try:
                os.link(self.partial, name, src_dir_fd=self.dir_fd,
                        dst_dir_fd=self.dir_fd, follow_symlinks=False)
                break
            except FileExistsError:
                if self._holds_same_content(name):
                    break  # already there (say, not yet catalogued): keep one copy
        else:
            raise TransferFailed("local", f"{MAX_CONFLICT_NAMES + 1} names for this file are taken")
        os.unlink(self.partial, dir_fd=self.dir_fd)
        st = os.stat(dest.rsplit("/", 1)[-1], dir_fd=self.dir_fd, follow_symlinks=False)
        return dest, st.st_ino

    def _holds_same_content(self, name: str) -> bool:
        try:
            fd, st = open_regular(self.dir_fd, name)
        except (OSError, ShareError):
            return False
        try:
            return st.st_size == self.entry.size and hash_fd(fd) == self.entry.hash
        finally:
            os.close(fd)

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
        Close everything; the partial file stays for a later resume.
        """
        self.close()
        self._memory = None
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
