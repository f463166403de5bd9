# -*- test-case-name: tests.test_swarm -*-
"""
The frames of a block download: DATA, END and ERROR for its block GETs, and
a lost connection.  A part of L{p2ptwisted.swarm.BlockDownload}, in a module
of its own so that class stays readable; it uses the download's C{file},
C{scheduler}, C{ctx}, C{want}, C{entry} and the helpers named below.
"""

from __future__ import annotations

from typing import Any, FrozenSet

from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.core.blocks import digest_at


class BlockFrames:
    # (set by BlockDownload, the class this is a part of)
    file: Any
    scheduler: Any
    ctx: Any
    want: Any
    entry: Any
    received: int
    over: bool
    requests: dict
    refused_until: dict
    log: Logger

    _timer: Any

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # (and these, of BlockDownload)
    @property
    def got(self) -> int:
        raise NotImplementedError

    def _forget(self, request) -> None:
        raise NotImplementedError

    def _cancel(self, peer: str, block: int) -> None:
        raise NotImplementedError

    def _advertise(self) -> None:
        raise NotImplementedError

    def _continue(self) -> None:
        raise NotImplementedError

    def _add_sources(self) -> None:
        raise NotImplementedError

    def _sources(self) -> dict:
        raise NotImplementedError

    def data_received(self, request, payload) -> None:
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

    def end_received(self, request, end: wire.End) -> None:
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

    def error_received(self, request, error: wire.Error) -> None:
        assert self.scheduler is not None
        self._forget(request)
        now = self.ctx.clock.seconds()
        peer = request.peer.remote_id
        until = None
        if error.code != "busy" and now >= self.refused_until.get(peer, 0.0):
            penalty = self.ctx.sources.failed(peer, self.want.version, now, offence=False)
            until = self.refused_until[peer] = penalty.until
            request.peer.log_limited(
                self.log.info, "block {block} of {path} from {peer} refused: {code}: {why}",
                block=request.index, path=wire.safe_text(self.entry.path), code=error.code,
                why=wire.safe_text(error.message, 200))
        self.scheduler.failed(peer, request.index, now, bench_until=until)
        if error.code in ("not_found", "changed"):
            self._add_sources()  # (its version may be gone: see BlockDownload)
        self._continue()

    def _bad(self, request, why: str) -> None:
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


def log_done(download, log_each_min: int) -> None:
    """
    One line for a big file (or one partly taken from local files):
    which peers sent how many of its blocks.
    """
    assert download.scheduler is not None
    if download.entry.size < log_each_min and not download.reused:
        return
    used = sorted(download.scheduler.sources_used().items(), key=lambda kv: -kv[1])
    if used:
        download.want.peer = used[0][0]  # (the "from" of the transfer tables)
    connections = download.ctx.connections()
    names = ", ".join(f"{connections[p].describe() if p in connections else p[:12]}"
                      f" ({n} blocks)" for p, n in used) or "no peer"
    seconds = max(download.ctx.clock.seconds() - download.started_at, 1e-6)
    reused = f"; {download.reused} bytes taken from local files" if download.reused else ""
    download.log.info("fetched {path} ({size} bytes) from {names} at {rate:.1f} MiB/s{reused}",
                      path=wire.safe_text(download.entry.path), size=download.entry.size,
                      names=names, rate=download.received / seconds / 2**20, reused=reused)
