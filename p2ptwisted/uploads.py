# -*- test-case-name: tests.test_transfer -*-
"""
Sending file bytes: the upload scheduler that feeds a connection.

One connection carries any number of uploads and downloads in both
directions at once.  Its transport has exactly one registered producer, the
L{UploadScheduler}, which takes one chunk from each active upload in turn
while the transport wants data, and stops when the transport pauses it.
Control frames are written straight to the transport, so they wait behind
at most one buffer's worth of file data, never behind a whole file.

The scheduler knows a connection only by what it uses of it (its
C{transport}, C{send}, C{describe}, C{bytes_out} and C{output_drained}),
so this module does not import the protocol that uses it.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Deque, Dict, Optional

import attrs
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from p2ptwisted import wire
from p2ptwisted.core.index import Entry
from p2ptwisted.hashing import ShareError

#: Payload bytes per DATA frame.
CHUNK_SIZE = 128 * 1024

#: Bytes the scheduler writes in one reactor turn before letting the
#: reactor read and write other connections.
TURN_BUDGET = 1024 * 1024

log = Logger()


@attrs.define
class RateLimit:
    """
    A token bucket for C{--max-rate}: shared by every connection of a node,
    so it caps the node's total upload rate.  Spending may run into debt
    (a chunk is sent whole); the debt is waited out before the next send.
    """

    rate: float
    clock: IReactorTime
    burst: float = 0.0
    _tokens: float = 0.0
    _stamp: Optional[float] = None
    _queue: Deque["UploadScheduler"] = attrs.field(factory=deque)
    _timer: Optional[IDelayedCall] = None

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
    One file, or one block of one, being sent: an open descriptor and how
    far we have got.

    @ivar entry: the file's index entry; C{None} for a block read from a
        partial download (whose blocks were verified as they came).
    @ivar end: where to stop (the file's size, or a block's end).
    @ivar block: for a block request, the block's digest, which END names.
    """

    transfer: int
    fd: int
    entry: Optional[Entry]
    position: int
    sent: int = 0
    end: int = -1
    block: str = ""
    start: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.end < 0:
            assert self.entry is not None
            self.end = self.entry.size
        self.start = self.position
        if self.entry is not None and self.entry.blocks:
            # An upload checks the file's size, time and hash, never its
            # block list (up to 128 KiB): hundreds of block GETs in flight
            # to a few peers each held a copy of it, 17 MiB in the swarm
            # benchmark.
            self.entry = attrs.evolve(self.entry, blocks=b"")

    @property
    def done(self) -> bool:
        return self.position >= self.end

    @property
    def path(self) -> str:
        return self.entry.path if self.entry is not None else "(a partial download)"

    def read_chunk(self, limit: int) -> bytes:
        size = min(limit, self.end - self.position)
        chunk = os.pread(self.fd, size, self.position)
        if len(chunk) != size:
            raise ShareError("changed", "the file shrank while being sent")
        self.position += len(chunk)
        self.sent += len(chunk)
        return chunk

    def unchanged(self) -> bool:
        entry = self.entry
        if entry is None:
            return True
        st = os.fstat(self.fd)
        return (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns)

    def end_frame(self) -> "wire.End":
        if self.block:
            return wire.End(transfer=self.transfer, size=self.end - self.start, hash=self.block)
        assert self.entry is not None
        return wire.End(transfer=self.transfer, size=self.entry.size, hash=self.entry.hash)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: Seconds without a new upload finishing after which what was served to a
#: peer is summed up in one log line.
SERVED_QUIET = 2.0


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

    def __init__(self, proto, clock, chunk_size: int = CHUNK_SIZE,
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
        # What was served since the last summary line:
        # (files, bytes, first GET, last END).
        self._served = (0, 0, 0.0, 0.0)
        self._served_call = None

    def add(self, upload: Upload) -> None:
        if self._served[0] == 0 and self._served_call is None:
            now = self.clock.seconds()
            self._served = (0, 0, now, now)
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
        budget: float = TURN_BUDGET
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
        if error is None:
            self.proto.send(upload.end_frame())
            files, size, since, _ = self._served
            self._served = (files + 1, size + upload.sent, since, self.clock.seconds())
            if self._served_call is not None and self._served_call.active():
                self._served_call.reset(SERVED_QUIET)
            else:
                self._served_call = self.clock.callLater(SERVED_QUIET, self.log_served)
        else:
            log.info("upload of {path} to {peer} failed: {why}",
                     path=wire.safe_text(upload.path), peer=self.proto.describe(), why=error)
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
        # The transport's buffer is empty: the one signal that a
        # connection that stopped reading for its output may read again
        # (see p2ptwisted.backlog).
        self.proto.output_drained()

    def log_served(self) -> None:
        """
        One line for what a peer took from us since the last one: the
        sending side's view of a sync, instead of a line per file.
        """
        if self._served_call is not None and self._served_call.active():
            self._served_call.cancel()
        self._served_call = None
        files, size, since, last = self._served
        now = self.clock.seconds()
        self._served = (0, 0, now, now)
        if files:
            seconds = max(last - since, 1e-3)
            log.info("served {files} files ({size} bytes) to {peer} in {seconds:.1f}s,"
                     " {rate:.1f} MiB/s", files=files, size=size, peer=self.proto.describe(),
                     seconds=seconds, rate=size / seconds / 2**20)

    def stopProducing(self) -> None:
        self.log_served()
        if self.limit is not None:
            self.limit.forget(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for upload in self.uploads:
            upload.close()
        self.uploads.clear()
        self.by_id.clear()
