# -*- test-case-name: tests.test_swarm -*-
"""
One file version arriving block by block, from every peer that has it.

The Twisted shell around L{BlockScheduler}: it asks blocks with block GETs
(protocol version 3) on as many connections as have the version, writes
each into the partial file as it comes (L{BlockFile}), checks its digest at
END, and tells the scheduler, which decides what to ask next and of whom.
Before asking the network it takes every block our own files already hold
(the old version of the same file, a copy elsewhere), so an edit in the
middle of a big file moves about the edited bytes.

A block from a source that fails its digest is asked of another source; the
source is benched for the version (L{Sources}, node-wide) and dropped after
repeated bad copies, as for whole files.

The fetcher owns the queue and the slots (L{p2ptwisted.fetcher}); this
module is what it hands a L{Want} with a block list to.  A connection's
C{downloads} maps each block GET's transfer id to its L{BlockRequest}.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import attrs
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.blockfile import BlockFile, open_source, publish_as
from p2ptwisted.core.blocks import block_lengths, block_span, digest_at, digests
from p2ptwisted.core.scheduler import BlockScheduler
from p2ptwisted.downloads import TransferFailed, Want
from p2ptwisted.fsops import closing
from p2ptwisted.hashing import new_hasher

#: Seconds a download whose sources all went away waits for one to be
#: connected (again) before it fails and is left to the sync's retries.
RECONNECT_WAIT = 10.0

#: Blocks after which a running download looks for new sources again,
#: between its ticks.
LOOK_EVERY = 8

#: Files of at least this size get a log line each when they arrive.
LOG_EACH_MIN = 1024 * 1024

#: Bytes of block requests outstanding per source (at least two blocks):
#: enough to keep a fast link busy while requests cross it and the
#: sender reads the next block (2 MiB left a loopback transfer a third
#: slower than one stream) ...
DEPTH_BYTES = 8 * 1024 * 1024

#: ... but never more than this fraction of the file, so that the first
#: source to answer does not take all of a small file's blocks before the
#: others are asked.
DEPTH_SHARE = 4

#: Seconds a block must have been on its way before the endgame asks
#: another source for it too.
ENDGAME_WAIT = 1.0

#: How often a running block download looks for overdue requests and new
#: sources, in seconds.
TICK = 1.0


@attrs.define(eq=False)
class BlockRequest:
    """
    One block GET in flight.  Only one request per block writes into the
    partial file (C{primary}); an endgame copy gathers its bytes in memory
    and writes them only if it is the first to arrive whole and right.
    """

    owner: "BlockDownload"
    index: int
    transfer: int
    peer: Any  # the connection
    primary: bool
    received: int = 0
    hasher: Any = attrs.field(factory=new_hasher)
    buffer: Optional[bytearray] = None


class BlockDownload:
    """
    @param ctx: the fetcher: C{clock}, C{run_blocking}, C{connections()},
        C{sources} (L{Sources}), C{store}, C{disk}, C{log_failure} and the
        counters C{bytes_received}, C{bytes_reused}.
    @param finished: C{(want, name or Failure) -> None}, once.
    """

    log = Logger()

    def __init__(self, want: Want, ctx, finished: Callable[[Want, Any], None]):
        self.want = want
        self.ctx = ctx
        self.finished = finished
        self.entry = want.entry
        self.file: Optional[BlockFile] = None
        self.scheduler: Optional[BlockScheduler] = None
        self.requests: Dict[int, BlockRequest] = {}  # by transfer id
        self.writer: Dict[int, BlockRequest] = {}  # block -> its primary request
        self.started_at = ctx.clock.seconds()
        self.received = 0
        self.reused = 0
        self._timer = None
        self.over = False
        self._since_look = 0  # blocks since sources were last looked for
        #: When the last source went away (it waits L{RECONNECT_WAIT}).
        self.lost_at: Optional[float] = None

    @property
    def got(self) -> int:
        """Bytes verified so far (for progress)."""
        if self.file is None:
            return 0
        return sum(self.file.span(i)[1] for i in self.file.have)

    # -- start: open, reuse what we have, then ask ---------------------------------

    def start(self) -> None:
        want = self.want
        want.state = "opening"
        plan = self._local_plan()

        def open_blocking():
            assert want.open_dir is not None
            dir_fd, made = want.open_dir(self.entry.path)
            want.made.extend(made)
            self.file = BlockFile(self.entry, dir_fd, "operator" if want.keep else "")
            self.file.open()
            self.file.room()
            return self._reuse(plan)

        self.ctx.run_blocking(open_blocking).addCallbacks(self._opened, self._fail_local)

    def _local_plan(self) -> Dict[int, list]:
        """
        For each block, where our own files hold its digest: (entry, block
        index in it, or -1 for a whole one-block file).  Each file's entry
        is kept once, however many blocks it gives (an entry carries its
        whole block list: one per block would cost the list times the
        blocks in memory).
        """
        store, plan = self.ctx.store, {}
        entries: Dict[str, Any] = {}
        lengths = block_lengths(self.entry.size)
        for i, digest in enumerate(digests(self.entry.blocks)):
            found = [(entries.setdefault(e.path, e), j)
                     for e, j in store.with_block(digest, limit=2)]
            found += [(entries.setdefault(e.path, e), -1)
                      for e in store.with_hash(digest.hex())[:1] if e.size == lengths[i]]
            if found:
                plan[i] = found
        return plan

    def _reuse(self, plan: Dict[int, list]) -> int:
        """
        Blocking: copy the planned blocks from our files; the bytes copied.
        """
        file = self.file
        assert file is not None
        opened: Dict[str, Optional[int]] = {}
        copied = 0
        try:
            for i, places in plan.items():
                for entry, j in places:
                    if i in file.have:
                        break
                    if entry.path not in opened:
                        opened[entry.path] = self._open_own(entry)
                    fd = opened[entry.path]
                    offset = 0 if j < 0 else block_span(entry.size, j)[0]
                    if fd is not None and file.copy_in(i, fd, offset):
                        copied += file.span(i)[1]
        finally:
            for fd in opened.values():
                if fd is not None:
                    os.close(fd)
        return copied

    def _open_own(self, entry) -> Optional[int]:
        try:
            dir_fd, name = self.ctx.disk.parent(entry.path)
        except Exception:
            return None
        with closing(dir_fd):
            return open_source(dir_fd, name, entry)

    def _opened(self, reused: int) -> None:
        file = self.file
        assert file is not None
        if self.over:
            file.release()
            return
        self.reused = reused
        self.ctx.bytes_reused += reused
        seed = random.Random(f"{self.ctx.me}\0{self.entry.path}\0{self.entry.hash}")
        self.scheduler = self._scheduler(file.have, seed)
        self.want.state = "running"
        self.ctx.holders.listeners[self.want.version] = self.have_received
        if file.have:
            self._advertise()
            self.log.info("resuming {path}: {got} of {size} bytes already here ({n} of {total}"
                          " blocks, {reused} bytes of them taken from local files)",
                          path=wire.safe_text(self.entry.path), got=self.got,
                          size=self.entry.size, n=len(file.have), total=file.count,
                          reused=reused)
        self._tick()

    def _scheduler(self, have, rng: random.Random) -> BlockScheduler:
        depth = min(DEPTH_BYTES, self.entry.size // DEPTH_SHARE)
        return BlockScheduler(block_lengths(self.entry.size), have, rng=rng,
                              depth_bytes=depth, endgame_wait=ENDGAME_WAIT)

    # -- asking ----------------------------------------------------------------------

    def _add_sources(self) -> None:
        """
        Every connected peer with the version (from its index), or with
        some of its blocks (from its HAVEs), is a source.
        """
        scheduler = self.scheduler
        assert scheduler is not None
        known = scheduler.in_flight
        for peer, blocks in self._sources().items():
            if peer not in known:
                scheduler.add_source(peer, blocks)

    def _sources(self) -> Dict[str, Optional[FrozenSet[int]]]:
        """
        Connected version 3 peers that can send blocks: C{None} for a
        whole copy, else the blocks they said they have.
        """
        connections = self.ctx.connections()
        usable = {p for p, proto in connections.items() if (proto.version or 0) >= 3}
        found: Dict[str, Optional[FrozenSet[int]]] = {
            p: blocks for p, blocks in self.ctx.holders.of(self.want.version).items()
            if p in usable and blocks}
        holders = set(self.want.sources) | {
            p for p, e in self.ctx.store.remote_for(self.entry.path).items()
            if e.live and e.hash == self.entry.hash}  # (indexes that came since we began)
        found.update((p, None) for p in holders if p in usable)
        return found

    def have_received(self, peer: str, blocks: FrozenSet[int]) -> None:
        """
        A peer's HAVE for this version: it is a source of those blocks.
        """
        if self.scheduler is None or self.over or not blocks:
            return
        connections = self.ctx.connections()
        if peer not in connections or self._sources().get(peer, ()) is None:
            return  # (a whole copy: it is a source of every block already)
        if peer in self.scheduler.in_flight:
            self.scheduler.update_source(peer, blocks)
        else:
            self.scheduler.add_source(peer, blocks)
        self._continue()

    def _tick(self) -> None:
        self._timer = None
        if self.over:
            return
        scheduler = self.scheduler
        assert scheduler is not None
        if scheduler.done:
            self._verify()
            return
        now = self.ctx.clock.seconds()
        self._add_sources()
        for peer, block in scheduler.overdue(now):
            self._cancel(peer, block)
        if self._sources() or any(scheduler.in_flight.values()):
            self.lost_at = None
        elif self.lost_at is None and self.want.keep is None:
            self.lost_at = now  # wait a while for a source to be (re)connected
        elif self.lost_at is None or now - self.lost_at >= RECONNECT_WAIT:
            self._give_up(TransferFailed("unavailable", "no connected peer has this version"))
            return
        self._ask()
        self._timer = self.ctx.clock.callLater(TICK, self._tick)

    def _ask(self) -> None:
        scheduler = self.scheduler
        assert scheduler is not None and self.file is not None
        connections = self.ctx.connections()
        for peer, index in scheduler.next_requests(self.ctx.clock.seconds()):
            self.want.peer = self.want.peer or peer
            proto = connections.get(peer)
            if proto is None:
                scheduler.remove_source(peer)
                continue
            transfer = proto.next_transfer_id()
            primary = index not in self.writer
            request = BlockRequest(self, index, transfer, proto, primary,
                                   buffer=None if primary else bytearray())
            if primary:
                self.writer[index] = request
            self.requests[transfer] = request
            proto.downloads[transfer] = request
            offset, length = self.file.span(index)
            proto.send(wire.Get(transfer=transfer, path=self.entry.path, hash=self.entry.hash,
                                offset=offset, length=length,
                                block=digest_at(self.entry.blocks, index).hex()))

    def _forget(self, request: BlockRequest) -> None:
        self.requests.pop(request.transfer, None)
        request.peer.downloads.pop(request.transfer, None)
        if self.writer.get(request.index) is request:
            del self.writer[request.index]

    def _cancel(self, peer: str, block: int) -> None:
        for request in list(self.requests.values()):
            if request.peer.remote_id == peer and request.index == block:
                request.peer.cancel_transfer(request.transfer)
                self._forget(request)

    # -- frames ------------------------------------------------------------------------

    def data_received(self, request: BlockRequest, payload) -> None:
        file = self.file
        assert file is not None and self.scheduler is not None
        offset, length = file.span(request.index)
        if request.received + len(payload) > length:
            self._bad(request, f"it sent more than the block's {length} bytes")
            request.peer.cancel_transfer(request.transfer)
            return
        if request.index in file.have:
            request.received += len(payload)  # a copy that lost the race: not written
        elif request.primary:
            file.write(offset + request.received, payload)
        else:
            assert request.buffer is not None
            request.buffer += payload
        request.hasher.update(payload)
        request.received += len(payload)
        self.received += len(payload)
        self.ctx.bytes_received += len(payload)

    def end_received(self, request: BlockRequest, end: wire.End) -> None:
        file, scheduler = self.file, self.scheduler
        assert file is not None and scheduler is not None
        self._forget(request)
        digest = digest_at(self.entry.blocks, request.index)
        length = file.span(request.index)[1]
        if request.index in file.have:
            return
        got = request.hasher.digest()
        if (end.size, end.hash) != (length, digest.hex()) or request.received != length:
            self._bad(request, f"got {request.received} of {length} bytes")
            return
        if got != digest:
            self._bad(request, f"digest {got.hex()[:16]} is not {digest.hex()[:16]}")
            return
        if request.buffer is not None:
            file.write(file.span(request.index)[0], request.buffer)
        file.mark(request.index)
        self._advertise()
        now = self.ctx.clock.seconds()
        for peer, block in scheduler.received(request.peer.remote_id, request.index, now):
            self._cancel(peer, block)
        self._continue()

    def _advertise(self) -> None:
        file = self.file
        assert file is not None
        self.ctx.holders.progress(self.want.version, lambda: frozenset(file.have))

    def serve(self, digest: bytes, length: int) -> Optional[Tuple[int, int]]:
        """
        A verified block of ours with C{digest}, for a peer's block GET:
        (a descriptor of our partial file, the block's offset).
        """
        file = self.file
        if file is None or file.fd < 0 or self.over:
            return None
        start = 0
        blocks = self.entry.blocks
        while True:
            at = blocks.find(digest, start)
            if at < 0:
                return None
            if at % 32 == 0 and at // 32 in file.have and file.span(at // 32)[1] == length:
                return os.dup(file.fd), file.span(at // 32)[0]
            start = at + 1

    def error_received(self, request: BlockRequest, error: wire.Error) -> None:
        assert self.scheduler is not None
        self._forget(request)
        now = self.ctx.clock.seconds()
        peer = request.peer.remote_id
        until = None
        if error.code != "busy":
            penalty = self.ctx.sources.failed(peer, self.want.version, now, offence=False)
            until = penalty.until
            request.peer.log_limited(
                self.log.info, "block {block} of {path} from {peer} refused: {code}: {why}",
                block=request.index, path=wire.safe_text(self.entry.path), code=error.code,
                why=wire.safe_text(error.message, 200))
        self.scheduler.failed(peer, request.index, now, bench_until=until)
        self._continue()

    def _bad(self, request: BlockRequest, why: str) -> None:
        """
        A bad block: asked of another source; its source benched, and
        dropped after repeated bad copies.
        """
        assert self.scheduler is not None
        self._forget(request)
        proto, now = request.peer, self.ctx.clock.seconds()
        penalty = self.ctx.sources.failed(proto.remote_id, self.want.version, now, offence=True)
        self.scheduler.failed(proto.remote_id, request.index, now, bench_until=penalty.until)
        proto.log_limited(self.log.warn, "{peer} sent a bad copy of block {block} of {path}:"
                          " {why}; bad data discarded, asking another source; not asking it"
                          " for this version for {seconds:.0f}s", block=request.index,
                          path=wire.safe_text(self.entry.path), why=why,
                          seconds=penalty.seconds)
        if penalty.drop:
            proto.drop(f"{penalty.offences} bad copies of files from it")
        self._continue()

    def peer_lost(self, proto) -> None:
        assert self.scheduler is not None
        cut = [r for r in self.requests.values() if r.peer is proto]
        for request in cut:
            self._forget(request)
        if cut:
            self.log.info("fetching {path} from {peer} interrupted; {kept} bytes kept for"
                          " resuming", path=wire.safe_text(self.entry.path),
                          peer=proto.describe(), kept=self.got)
        self.scheduler.remove_source(proto.remote_id)
        self._continue()

    def _continue(self) -> None:
        if self.over or self.scheduler is None:
            return
        if self.scheduler.done:
            self._verify()
        elif self._timer is None or not self._timer.active():
            self._tick()
        else:
            # Between ticks, look for new sources every few blocks (an index
            # that has just come makes its peer one): on a fast link a
            # whole file may cross within a tick.
            self._since_look += 1
            if self._since_look >= LOOK_EVERY:
                self._since_look = 0
                self._add_sources()
            self._ask()

    # -- the end ---------------------------------------------------------------------

    def _verify(self) -> None:
        if self.want.state == "verifying":
            return
        self.want.state = "verifying"
        self._stop_timer()
        file = self.file
        assert file is not None
        self.ctx.run_blocking(file.check).addCallbacks(self._checked, self._fail_check)

    def _checked(self, bad) -> None:
        file = self.file
        assert file is not None and self.scheduler is not None
        if self.over:
            return
        if bad:
            # Blocks that were not what they were verified as (a machine crash
            # lost writes): fetch them again.
            self.log.warn("{path}: {n} blocks on disk are not what was verified; fetching"
                          " them again", path=wire.safe_text(self.entry.path), n=len(bad))
            self.scheduler = self._scheduler(file.have, random.Random(len(bad)))
            self.want.state = "running"
            self._tick()
            return
        self.over = True
        self.ctx.holders.forget(self.want.version)
        want = self.want
        if want.keep is not None:
            d = self.ctx.run_blocking(publish_as, file, want.keep.rsplit("/", 1)[-1])
        else:
            d = self.ctx.run_blocking(file.finish)
        self._log_done()

        def ended(result):
            file.close_dir()
            self.finished(want, result)
        d.addBoth(ended)

    def _log_done(self) -> None:
        """
        One line for a big file (or one partly taken from local files):
        which peers sent how many of its blocks.
        """
        assert self.scheduler is not None
        if self.entry.size < LOG_EACH_MIN and not self.reused:
            return
        used = sorted(self.scheduler.sources_used().items(), key=lambda kv: -kv[1])
        if used:
            self.want.peer = used[0][0]  # (the "from" of the transfer tables)
        connections = self.ctx.connections()
        names = ", ".join(f"{connections[p].describe() if p in connections else p[:12]}"
                          f" ({n} blocks)" for p, n in used) or "no peer"
        seconds = max(self.ctx.clock.seconds() - self.started_at, 1e-6)
        reused = f"; {self.reused} bytes taken from local files" if self.reused else ""
        self.log.info("fetched {path} ({size} bytes) from {names} at {rate:.1f} MiB/s{reused}",
                      path=wire.safe_text(self.entry.path), size=self.entry.size, names=names,
                      rate=self.received / seconds / 2**20, reused=reused)

    def _fail_check(self, failure) -> None:
        why = failure.value
        if not isinstance(why, TransferFailed):
            why = TransferFailed("local", str(why))
        if self.file is not None:
            self.file.discard()
        self._end(why)

    def _fail_local(self, failure) -> None:
        why = failure.value
        if not isinstance(why, TransferFailed):
            why = TransferFailed("local", str(why))
        self._give_up(why)

    def _give_up(self, why: TransferFailed) -> None:
        for request in list(self.requests.values()):
            request.peer.cancel_transfer(request.transfer)
            self._forget(request)
        if self.file is not None:
            self.file.release()
        self._end(why)

    def cancel(self, why: TransferFailed) -> None:
        self._give_up(why)

    def _end(self, why: TransferFailed) -> None:
        self._stop_timer()
        if self.over:
            return
        self.over = True
        self.ctx.holders.forget(self.want.version)
        if self.file is not None:
            self.file.close_dir()
        self.finished(self.want, why)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

