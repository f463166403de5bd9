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

import random
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import attrs
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.blockfile import BlockFile, publish_as
from p2ptwisted.blockframes import BlockFrames, log_done
from p2ptwisted.localblocks import local_plan, replaced, reuse, serve
from p2ptwisted.core.blocks import block_lengths, digest_at
from p2ptwisted.core.scheduler import RUNS, BlockScheduler
from p2ptwisted.downloads import TransferFailed, Want
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
#: slower than one stream).  The cost, seen in the swarm simulator: the
#: first node of a swarm sends some blocks twice (a block on its way is in
#: no HAVE yet), more so with many nodes and small files ...
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


class BlockDownload(BlockFrames):
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
        self._whole: set = set()  # sources known to hold the whole version
        #: Per peer, until when a refusal benched it: the refusals of the
        #: other requests in flight then are the same news, not new ones.
        self.refused_until: Dict[str, float] = {}
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
        plan = local_plan(self.ctx.store, self.entry)

        def open_blocking():
            assert want.open_dir is not None
            dir_fd, made = want.open_dir(self.entry.path)
            want.made.extend(made)
            self.file = BlockFile(self.entry, dir_fd, "operator" if want.keep else "")
            self.file.open()
            self.file.room()
            return reuse(self.file, plan, self.ctx.disk)

        self.ctx.run_blocking(open_blocking).addCallbacks(self._opened, self._fail_local)

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
                              depth_bytes=depth, endgame_wait=ENDGAME_WAIT, order=RUNS)

    # -- asking ----------------------------------------------------------------------

    def _add_sources(self) -> None:
        """
        Every connected peer with the version (from its index), or with
        some of its blocks (from its HAVEs), is a source.
        """
        scheduler = self.scheduler
        assert scheduler is not None
        known = scheduler.in_flight
        sources = self._sources()
        for peer, blocks in sources.items():
            if peer not in known or (blocks is None and peer not in self._whole):
                scheduler.add_source(peer, blocks)  # (a partial holder that finished: whole)
            if blocks is None:
                self._whole.add(peer)
        for peer in set(known) - set(sources):
            # Connected, but no longer has the version (it changed there):
            # not a source, and its requests will be refused.
            if peer in self.ctx.connections():
                for request in [r for r in self.requests.values()
                                if r.peer.remote_id == peer]:
                    request.peer.cancel_transfer(request.transfer)
                    self._forget(request)
                scheduler.remove_source(peer)
                self._whole.discard(peer)

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
        # Whose index holds the version now: those that came since we began
        # count, and a peer whose file changed no longer does.
        holders = {p for p, e in self.ctx.store.remote_for(self.entry.path).items()
                   if e.live and e.hash == self.entry.hash}
        found.update((p, None) for p in holders if p in usable)
        return found

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
        elif any(p in self.ctx.connections() for p in self.want.sources):
            # Its sources are connected but have another version now: fail,
            # so the sync plans the path again.  The partial file of a
            # version no one has is kept only for the blocks a newer one
            # may share (L{BlockFile.keep_leftover}).
            self._give_up(TransferFailed("changed", "no connected peer has this version now"),
                          discard=True)
            return
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

    def serve(self, digest: bytes, length: int) -> Optional[Tuple[int, int]]:
        """
        A verified block of ours with C{digest}, for a peer's block GET (see
        L{localblocks.serve}).
        """
        return None if self.over else serve(self.file, digest, length)

    def _advertise(self) -> None:
        file = self.file
        assert file is not None
        self.ctx.holders.progress(self.want.version, lambda: frozenset(file.have))

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
        log_done(self, LOG_EACH_MIN)

        def ended(result):
            file.close_dir()
            self.finished(want, result)
        d.addBoth(ended)

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

    def _give_up(self, why: TransferFailed, discard: bool = False) -> None:
        for request in list(self.requests.values()):
            request.peer.cancel_transfer(request.transfer)
            self._forget(request)
        if self.file is not None:
            if not discard:
                self.file.release()
            elif replaced(self.ctx.store, self.entry):
                self.file.keep_leftover()
            else:
                self.file.discard()
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
