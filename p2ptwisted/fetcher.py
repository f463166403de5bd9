# -*- test-case-name: tests.test_exchange -*-
"""
Fetching file versions from peers: the network's half of a FETCH action.

The sync shell (L{p2ptwisted.sync.FolderSync}) asks for a version and the
peers that hold it; the fetcher picks a connected one, asks it with GET
(path, hash, the offset a partial file already holds), writes the DATA
frames into the partial file beside the destination, verifies the whole
file against the hash at END, and fires with the partial file's name.
Placing the file, and everything about versions, is the shell's.

Limits: at most L{MAX_PER_PEER} downloads from one peer and L{MAX_TOTAL}
in all; the rest wait in order.  A download whose peer goes away is asked
of another source that holds the version, keeping the partial file (so it
resumes), or of the same one once it is connected again; it fails if none
is for L{RECONNECT_WAIT} (the shell retries later).  A source whose copy
failed -- bad bytes, a wrong END, no DATA for the stall timeout on a live
connection (L{StallWatch}) -- is not asked for that version for a while and
another is asked at once (L{Sources}); one that sends bad copies again and
again is dropped.

A connection is used only through what this needs of it (C{send},
C{remote_id}, C{downloads}, C{next_transfer_id}, C{cancel_transfer},
C{describe}, C{log_limited}, C{drop}), so this module does not import the
protocol.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.core.index import Entry
from p2ptwisted.core.sources import START, WAIT, Sources
from p2ptwisted.downloads import (
    BAD_DATA, OpenDir, TransferFailed, Want, download_of,
    in_flight)
from p2ptwisted.fetchblocks import FetcherBlocks
from p2ptwisted.streamframes import StreamFrames
from p2ptwisted.holders import Holders
from p2ptwisted.swarm import BlockDownload, BlockRequest
from p2ptwisted.stalls import STALL_CHECK, StallWatch  # noqa: F401 (STALL_CHECK for tests)

#: Downloads in flight from one peer, and in total.
MAX_PER_PEER = 64
MAX_TOTAL = 128

#: Seconds a download whose connection closed waits for a source to be
#: connected (again) before it fails and is left to the sync's retries.
RECONNECT_WAIT = 10.0

#: Finished downloads remembered for operators.
RECENT = 100


#: How a failed download is logged: another failure, a bad copy.
_FAILED = ("fetching {path} from {peer} failed: {why}{after}",
           "{peer} sent a bad copy of {path}: {why}; bad data discarded{after}")


def _only_waits(want: Want, connected: Dict[str, Any], room: int) -> bool:
    """
    Whether C{want} can only wait, every connected peer being at its limit
    (C{room} is how many are not): a whole-file download with a connected
    source.  Said without asking L{Sources}: a long queue is looked at on
    every pump.
    """
    return not room and not want.entry.blocks and any(s in connected for s in want.sources)


class Fetcher(FetcherBlocks, StreamFrames):
    """
    @param open_dir: C{path -> (dir fd, directories made)} (blocking):
        the destination's directory, made if missing, opened link-proof
        (L{p2ptwisted.apply.Disk.parent_made}).
    @param remove_made: C{directories -> None} (blocking): removes the
        directories made for a fetch that failed, if still empty.
    @param connections: the handshaken connections by peer id.
    """

    log = Logger()

    def __init__(self, clock, run_blocking, open_dir: OpenDir,
                 connections: Callable[[], Dict[str, object]], stall_timeout: float,
                 remove_made: Callable[[list], None] = lambda paths: None,
                 store=None, disk=None, me: str = ""):
        #: (for block downloads: local reuse, and their random order)
        self.store, self.disk, self.me = store, disk, me
        self.bytes_reused = 0
        self.holders = Holders(clock, connections, self._holds)
        self.clock = clock
        self.run_blocking = run_blocking
        self.open_dir = open_dir
        self.connections = connections
        self.remove_made = remove_made
        self.queue: Deque[Want] = deque()
        self.active: List[Want] = []
        self.recent: Deque[Want] = deque(maxlen=RECENT)
        self.completed = 0
        self.bytes_received = 0
        self.stopped = False
        self.sources = Sources()
        self._pump_call = None
        self._stalls = StallWatch(clock, stall_timeout, lambda: self.active, self._stalled,
                                  self._pump_soon)  # (_pump_soon: for downloads that wait)

    # -- what the sync shell asks ------------------------------------------------

    def fetch(self, entry: Entry, sources: tuple, open_dir=None,
              keep: Optional[str] = None) -> Deferred:
        """
        Fetch C{entry}'s bytes from one of C{sources} (peer ids).

        @param open_dir: C{path -> dir fd}, for bytes going elsewhere than
            the destination's directory in the share.
        @param keep: publish the file under this name (in that directory)
            instead of handing the partial file over.
        @return: a Deferred firing with the name of the verified partial
            file in the destination's directory (or C{keep}), or failing
            with L{TransferFailed}.
        """
        want = Want(entry=entry, sources=tuple(sources), done=Deferred(),
                    open_dir=open_dir or self.open_dir, keep=keep)
        self.queue.append(want)
        self._pump_soon()  # once for all the fetches asked for in this turn
        return want.done

    def pump(self) -> None:
        self._pump_call = None
        if self.stopped:
            return
        waiting: Deque[Want] = deque()
        connected: Dict[str, Any] = self.connections()
        room = sum(len(p.downloads) < MAX_PER_PEER for p in connected.values())
        while self.queue and len(self.active) < MAX_TOTAL:
            want = self.queue.popleft()
            if _only_waits(want, connected, room):
                waiting.append(want)
                continue
            connections = self._sources_of(want)
            if self._blockwise(want, connections):
                self.active.append(want)
                want.swarm = BlockDownload(want, self, self._swarm_finished)
                want.swarm.start()
                continue
            step, what = self.sources.next_step(
                [(s, len(p.downloads)) for s, p in connections.items()], MAX_PER_PEER,
                want.version, want.tried, self.clock.seconds(), want.interrupted_at,
                RECONNECT_WAIT)
            if step == START:
                self._start(want, connections[what])
                room -= len(connections[what].downloads) == MAX_PER_PEER
            elif step == WAIT:
                waiting.append(want)  # its sources are busy, or may come back
            else:
                self._fail(want, TransferFailed("unavailable", what))
        waiting.extend(self.queue)
        self.queue = waiting

    def _sources_of(self, want: Want) -> dict:
        connections = self.connections()
        return {s: connections[s] for s in want.sources if s in connections}

    # -- frames from peers -----------------------------------------------------------

    def data_received(self, proto, data: wire.Data) -> None:
        download = proto.downloads.get(data.transfer)
        if isinstance(download, BlockRequest):
            download.owner.data_received(download, data.payload)
        else:
            self._stream_data(proto, data, download)

    def end_received(self, proto, end: wire.End) -> None:
        block = proto.downloads.get(end.transfer)
        if isinstance(block, BlockRequest):
            block.owner.end_received(block, end)
        else:
            self._stream_end(proto, end)

    def error_received(self, proto, error: wire.Error) -> None:
        assert error.transfer is not None  # the protocol hands over transfer errors only
        block = proto.downloads.get(error.transfer)
        if isinstance(block, BlockRequest):
            block.owner.error_received(block, error)
        else:
            self._stream_error(proto, error)

    def peer_lost(self, proto) -> None:
        """
        The connection closed: its downloads keep their partial files and
        are asked of another source, if one is connected, or wait for one
        (*: not an operator's fetch, which is answered at once).
        """
        if proto.remote_id not in self.connections():
            # (not a replaced duplicate: the peer is gone, its benches too)
            self.sources.connection_lost(proto.remote_id)
            self.holders.peer_lost(proto.remote_id)
        owners = {r.owner for r in proto.downloads.values() if isinstance(r, BlockRequest)}
        for owner in owners:
            owner.peer_lost(proto)
        for transfer in list(proto.downloads):
            want = self._want_of(proto, transfer)
            if want is None:
                continue
            self._finish(want, proto, record=False)
            if want.state != "opening":
                self.log.info("fetching {path} from {peer} interrupted; {kept} bytes kept for"
                              " resuming", path=wire.safe_text(want.path),
                              peer=proto.describe(), kept=download_of(want).offset)
                download_of(want).release()
            want.download, want.state = None, "waiting"
            want.interrupted_at = self.clock.seconds() if want.keep is None else None  # (*)
            self.queue.appendleft(want)
        proto.downloads.clear()
        self._pump_soon()

    # -- bookkeeping -------------------------------------------------------------------

    def _give_up(self, proto, transfer: int, why: TransferFailed, cancel: bool = False,
                 bench: bool = True) -> None:
        """
        The transfer failed: bad bytes are discarded; unless C{bench} is false the source
        is benched for the version (L{Sources}) and another asked at once, if connected.
        """
        want = in_flight(self._want_of(proto, transfer))
        if why.fault is not None:
            download_of(want).discard()
        penalty = self.sources.failed(proto.remote_id, want.version, self.clock.seconds(),
                                      offence=why.fault is not None) if bench else None
        after = f"; not asking it for this version for {penalty.seconds:.0f}s" if penalty else ""
        proto.log_limited(self.log.warn, _FAILED[why.fault == BAD_DATA], why=str(why),
                          path=wire.safe_text(want.path), after=after)
        if cancel:
            proto.cancel_transfer(transfer)
        another = bench and bool(self.sources.usable(self._sources_of(want), want.version,
                                                     self.clock.seconds()))
        self._finish(want, proto, record=not another)
        download_of(want).release()
        want.download = None
        if another:
            want.state = "waiting"
            self.queue.appendleft(want)  # asked of another source at once
            self._pump_soon()
        else:
            self._fail(want, why)
        if penalty is not None and penalty.drop:
            proto.drop(f"{penalty.offences} bad copies of files from it")

    def cancel(self, want: Want, why: TransferFailed) -> bool:
        """
        The operator's cancel: stop C{want}, benching nobody and logging
        nothing (the operator knows); C{False} if it is not queued or running.
        """
        download = want.download
        if want in self.queue:
            self.queue.remove(want)
        elif want.swarm is not None and want in self.active:
            want.swarm.finished = lambda want, why: None
            want.swarm.cancel(why)
            self.active.remove(want)
        elif want.state == "running" and download is not None:
            assert download.peer is not None  # Fetcher._start gives every download one
            download.peer.cancel_transfer(download.transfer)
            self._finish(want, download.peer)
            download.release()
        else:
            return False
        self._fail(want, why, logged=False)
        return True

    def _finish(self, want: Want, proto, record: bool = True) -> None:
        if want in self.active:
            self.active.remove(want)
        download = want.download
        if download is not None:
            proto.downloads.pop(download.transfer, None)
        if record:
            want.finished_at = self.clock.seconds()
            self.recent.append(want)
        self._pump_soon()

    def _pump_soon(self) -> None:
        """
        Start waiting downloads in a later turn (not from inside the frame
        handler that freed a slot), once per turn.
        """
        if self.queue and not self.stopped and (
                self._pump_call is None or not self._pump_call.active()):
            self._pump_call = self.clock.callLater(0, self.pump)

    def _fail(self, want: Want, why: TransferFailed, logged: bool = True) -> None:
        why.logged = logged  # the shell need not log it again
        want.state = f"failed: {why.code}"
        try:
            want.remove_made(self.remove_made)
        except OSError as e:
            self.log.warn("cannot remove directories made for {path}: {why}",
                          path=wire.safe_text(want.path), why=str(e))
        want.download = None
        if not want.done.called:
            want.done.errback(why)

    def _stalled(self, want: Want, idle: float) -> None:
        download = download_of(want)
        self._give_up(download.peer, download.transfer,
                      TransferFailed("stalled", f"no data for {idle:.0f} seconds"), cancel=True)

    def transfers(self) -> List[Want]:
        return list(self.recent) + self.active + list(self.queue)

    def stop(self) -> None:
        self.stopped = True
        self._stalls.stop()
        self.holders.stop()
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        for want in self.active + list(self.queue):
            if want.swarm is not None:
                want.swarm.finished = lambda want, why: None
                want.swarm.cancel(TransferFailed("cancelled", "the node is stopping"))
            if want.download is not None and want.state == "running":
                want.download.release()
            want.download = None
        self.active.clear()
        self.queue.clear()


