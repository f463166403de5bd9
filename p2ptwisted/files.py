# -*- test-case-name: tests.test_files -*-
"""
Files over the mesh: serving our catalog and our files, fetching others',
and the policy that keeps shares in step.

The policy, in one paragraph: every version of a path that any peer lists
is wanted.  The newest version (largest mtime, then largest hash, so every
node picks the same one) belongs at the path itself; every other version is
kept beside it under a conflict name derived from its hash
(L{p2ptwisted.share.conflict_name}), so nothing is ever silently
overwritten and all nodes converge on the same files under the same names.
Each wanted version is fetched once, from one peer that has it, within
per-peer and total limits.  Deletions do not propagate.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Deque, Dict, Iterable, List, Optional, Set, Tuple

import attrs
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.share import Share, ShareError, conflict_name
from p2ptwisted.transfer import Download, TransferFailed, Upload

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.node import Node
    from p2ptwisted.protocol import PeerProtocol

#: Downloads in flight from one peer, and in total.
MAX_PER_PEER = 16
MAX_TOTAL = 32

#: Files one peer's catalog may hold for us to remember it.
MAX_CATALOG_ENTRIES = 200_000

#: Seconds before asking again for a file that failed.
RETRY_DELAY = 5.0

#: Free space kept in reserve when deciding whether a download fits.
SPACE_MARGIN = 16 * 1024 * 1024

#: Catalog entries per CATALOG/HAVE frame are packed up to this body size.
PACK_LIMIT = wire.MAX_CONTROL_BODY - 1024

#: Seconds HAVE announcements are gathered before they are sent.
HAVE_DELAY = 0.1

#: Queued wants pump() examines per call, and how many in a row it may
#: fail to start before it stops looking.
PUMP_LOOK = 256
PUMP_MISSES = 32

#: ERROR codes meaning "I do not have that version (any more)".
GONE_CODES = ("not_found", "changed", "not_regular")

#: Seconds between two LISTs from one peer that we answer.
LIST_SPACING = 5.0

#: How often downloads are checked for a stall (Limits.stall_timeout
#: without DATA gives one up, to be resumed later, from another peer if one
#: has the file).
STALL_CHECK = 10.0

#: Finished transfers remembered for operators.
RECENT_TRANSFERS = 100

#: A download in progress logs at least this often (seconds), and at every
#: tenth of a file of PROGRESS_MIN_SIZE or more.
PROGRESS_INTERVAL = 10.0

#: Files of at least this size get a log line each when they arrive.
LOG_EACH_MIN = 1024 * 1024

#: Files of at least this size log their progress every tenth.
PROGRESS_MIN_SIZE = 8 * 1024 * 1024


@attrs.define(eq=False)
class Transfer:
    """
    A fetch as an operator sees it: what, from whom, how far, how fast.

    Live: C{done_bytes}, C{rate} and C{eta} read the download in progress.
    C{done} fires with the path the file landed at, or fails.
    """

    path: str
    size: int
    dest: str
    clock: object = attrs.field(repr=False)
    peer: str = ""
    state: str = "queued"
    error: str = ""
    started: float = 0.0
    finished: Optional[float] = None
    landed: Optional[str] = None
    done: Deferred = attrs.field(factory=Deferred, repr=False)
    download: Optional[Download] = attrs.field(default=None, repr=False)
    _last_log: float = attrs.field(default=0.0, repr=False)
    _done_bytes: int = attrs.field(default=0, repr=False)

    @property
    def done_bytes(self) -> int:
        if self.download is not None:
            return self.download.offset
        return self._done_bytes

    @property
    def percent(self) -> float:
        return 100.0 * self.done_bytes / self.size if self.size else 100.0

    @property
    def rate(self) -> float:
        """
        Bytes per second received so far in this transfer's current attempt.
        """
        download = self.download
        if download is None:
            return 0.0
        elapsed = self.clock.seconds() - download.started_at
        return download.received / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> Optional[float]:
        rate = self.rate
        if self.state != "running" or rate <= 0:
            return None
        return (self.size - self.done_bytes) / rate

    def __repr__(self) -> str:
        eta = self.eta
        return (
            f"<Transfer {self.path!r} {self.state} {self.percent:.0f}%"
            f" ({self.done_bytes} of {self.size} bytes)"
            + (f" from {self.peer}" if self.peer else "")
            + (f", {self.rate / 1e6:.1f} MB/s" if self.state == "running" else "")
            + (f", ETA {eta:.0f}s" if eta is not None else "")
            + (f", {self.error}" if self.error else "")
            + (f" -> {self.landed}" if self.landed else "")
            + ">"
        )

    def _finish(self, state: str, result=None, error: str = "") -> None:
        if self.finished is not None:
            return
        self._done_bytes = self.done_bytes if state != "done" else self.size
        self.download = None
        self.state, self.error = state, error
        self.finished = self.clock.seconds()
        if state == "done":
            self.landed = result
            self.done.callback(result)
        else:
            self.done.errback(result)
        self.done.addErrback(lambda f: None)  # nobody may be listening


@attrs.define(eq=False)
class Want:
    """
    One version of one file that should be in our share.

    @ivar dest: where it goes (the path itself, or a conflict name).
    @ivar sources: peers that have it, and under which path.
    @ivar bad_until: peers that recently failed us for this file.
    """

    dest: str
    entry: wire.FileEntry
    sources: Dict[str, str] = attrs.field(factory=dict)
    bad_until: Dict[str, float] = attrs.field(factory=dict)
    not_before: float = 0.0
    download: Optional[Download] = None
    manual: bool = False
    warned: bool = False
    transfer: Optional[Transfer] = None
    #: For a fetch to a directory outside the share: that directory.
    outside: Optional[str] = None


def pack_entries(entries: List[wire.FileEntry]) -> List[List[wire.FileEntry]]:
    """
    Split catalog entries into groups that each fit one CATALOG/HAVE frame.
    """
    groups: List[List[wire.FileEntry]] = [[]]
    size = 0
    for entry in entries:
        cost = len(wire._dump(wire.entry_to_json(entry))) + 1
        if groups[-1] and size + cost > PACK_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += cost
    return groups


class FileExchange:
    """
    The node's file business, for all connections at once.

    @ivar remote: each peer's catalog as last heard, by node id and path.
    @ivar wants: what we intend to fetch, by (destination, hash).
    """

    log = Logger()

    def __init__(self, node: "Node", share: Share, clock, sync: bool = True,
                 run_blocking=maybeDeferred):
        self.node = node
        self._run_blocking = run_blocking
        self.share = share
        self.clock = clock
        self.sync = sync
        self.remote: Dict[str, Dict[str, wire.FileEntry]] = {}
        self._incoming: Dict[str, Dict[str, wire.FileEntry]] = {}
        self.wants: Dict[Tuple[str, str], Want] = {}
        #: Finished transfers, newest last, for operators to look at.
        self.recent: Deque[Transfer] = deque(maxlen=RECENT_TRANSFERS)
        self._cancelled: Set[Tuple[str, str]] = set()
        # Wants that may need starting, in order; pump() looks at a bounded
        # number of them each time, so it costs the same however many
        # thousands of files are wanted.
        self._queue: Deque[Tuple[str, str]] = deque()
        self._pending_have: List[wire.FileEntry] = []
        self._have_call = None
        self._pump_call = None
        self._rebuild_call = None
        self._stall_call = None
        self.completed = 0
        #: False until the first scan of our own share is done: until then
        #: we cannot tell what we lack, and would fetch what we already have.
        self.ready = False
        self._lists_waiting: List["PeerProtocol"] = []
        self._batch_files = 0
        self._batch_bytes = 0
        self._batch_started = 0.0

    # -- serving -----------------------------------------------------------

    def list_received(self, proto: "PeerProtocol", message: wire.List) -> None:
        if not self.ready:
            # Our first scan is still running: an answer now would be an
            # empty or partial catalog.  Answer once it is done.
            if proto not in self._lists_waiting:
                self._lists_waiting.append(proto)
            return
        now = self.clock.seconds()
        if proto.list_answered_at is not None and now - proto.list_answered_at < LIST_SPACING:
            # Each answer is the whole catalog: a peer asking again and
            # again (and perhaps not reading) must not fill our memory.
            proto.send(wire.Error(code="busy", message="LIST again too soon"))
            return
        if proto.scheduler.paused:
            # Our output to this peer is backed up (it is not reading): do
            # not pile a whole catalog on top.
            proto.send(wire.Error(code="busy", message="not reading what we send"))
            return
        proto.list_answered_at = now
        groups = pack_entries(self.share.entries())
        for i, group in enumerate(groups):
            proto.send(wire.Catalog(files=tuple(group), more=i < len(groups) - 1))

    def get_received(self, proto: "PeerProtocol", get: wire.Get) -> None:
        proto.gets_received += 1
        def refuse(code: str, message: str) -> None:
            proto.log_limited(self.log.info, "refused {path} to {peer}: {why}",
                              path=wire.safe_text(get.path), why=message)
            proto.send(wire.Error(code=code, message=message, transfer=get.transfer))

        scheduler = proto.scheduler
        if get.transfer in scheduler.by_id:
            proto.drop(f"GET reuses transfer id {get.transfer} still in flight")
            return
        limit = self.node.limits.uploads_per_peer
        if len(scheduler.by_id) >= limit:
            refuse("busy", f"more than {limit} transfers in flight")
            return
        try:
            fd, local = self.share.open_for_reading(get.path, get.hash)
        except ShareError as e:
            refuse(e.code, str(e))
            return
        except OSError as e:
            refuse("unavailable", e.strerror or "cannot open the file")
            return
        if get.offset > local.entry.size:
            os.close(fd)
            refuse("bad_offset", f"offset {get.offset} is past the end ({local.entry.size})")
            return
        scheduler.add(Upload(transfer=get.transfer, fd=fd, local=local, position=get.offset))

    def cancel_received(self, proto: "PeerProtocol", cancel: wire.Cancel) -> None:
        proto.scheduler.cancel(cancel.transfer)

    # -- hearing about files ---------------------------------------------------

    def catalog_received(self, proto: "PeerProtocol", message: wire.Catalog) -> None:
        peer = proto.remote_id
        incoming = self._incoming.setdefault(peer, {})
        self._note_rejected(proto, message.rejected, "CATALOG")
        for entry in message.files:
            incoming[entry.path] = entry
        if len(incoming) > MAX_CATALOG_ENTRIES:
            self._incoming.pop(peer, None)
            proto.drop(f"catalog longer than {MAX_CATALOG_ENTRIES} files")
            return
        if not message.more:
            self.remote[peer] = self._incoming.pop(peer)
            self.log.info("{peer} shares {n} files", peer=proto.describe(), n=len(self.remote[peer]))
            self._schedule_rebuild()

    def have_received(self, proto: "PeerProtocol", message: wire.Have) -> None:
        catalog = self.remote.setdefault(proto.remote_id, {})
        incoming = self._incoming.get(proto.remote_id)
        self._note_rejected(proto, message.rejected, "HAVE")
        for entry in message.files:
            catalog[entry.path] = entry
            if incoming is not None:
                # A catalog still arriving replaces `catalog` when it ends;
                # it must not lose what this HAVE said.
                incoming[entry.path] = entry
        if len(catalog) > MAX_CATALOG_ENTRIES:
            self.remote.pop(proto.remote_id, None)
            proto.drop(f"catalog longer than {MAX_CATALOG_ENTRIES} files")
            return
        self._schedule_rebuild()

    def _note_rejected(self, proto, count: int, what: str) -> None:
        if count:
            self.log.warn(
                "ignored {n} invalid file entries in {what} from {peer}",
                n=count, what=what, peer=proto.describe(),
            )

    def peer_connected(self, proto: "PeerProtocol") -> None:
        proto.send(wire.List())

    def peer_lost(self, proto: "PeerProtocol") -> None:
        """
        A connection closed: its downloads stop (keeping their partial
        files, to resume), and if it was that node's connection, we forget
        its catalog.
        """
        for download in list(proto.downloads.values()):
            self._interrupted(download, "connection closed")
        proto.downloads.clear()
        peer = proto.remote_id
        if peer is not None and self.node.connections.get(peer) is None:
            self._incoming.pop(peer, None)
            if self.remote.pop(peer, None) is not None:
                self._schedule_rebuild()

    def local_changed(self, changed: List[wire.FileEntry], gone: List[str]) -> None:
        """
        Our own share changed (a rescan found new, modified or vanished
        files).
        """
        if changed or gone or not self.ready:
            if not self.ready:
                self.ready = True
                waiting, self._lists_waiting = self._lists_waiting, []
                for proto in waiting:
                    if self.node.connections.get(proto.remote_id) is proto:
                        self.list_received(proto, wire.List())
            self.announce(changed)
            self._schedule_rebuild()

    def announce(self, entries: Iterable[wire.FileEntry]) -> None:
        """
        Tell every peer about new or changed files, gathered briefly so a
        burst of them goes out in few frames.
        """
        self._pending_have.extend(entries)
        if self._pending_have and self._have_call is None:
            self._have_call = self.clock.callLater(HAVE_DELAY, self._send_have)

    def _send_have(self) -> None:
        self._have_call = None
        pending, self._pending_have = self._pending_have, []
        for group in pack_entries(pending):
            message = wire.Have(files=tuple(group))
            for proto in list(self.node.connections.values()):
                proto.send(message)

    # -- deciding what to fetch --------------------------------------------------

    def _schedule_rebuild(self) -> None:
        if self._rebuild_call is None:
            self._rebuild_call = self.clock.callLater(0, self.rebuild)

    def rebuild(self) -> None:
        """
        Work out every version we should have, from all peers' catalogs and
        our own share, keeping the state of wants already in progress.
        """
        if self._rebuild_call is not None and self._rebuild_call.active():
            self._rebuild_call.cancel()
        self._rebuild_call = None
        old = self.wants
        new: Dict[Tuple[str, str], Want] = {}
        if self.sync and self.ready:
            versions: Dict[str, Dict[str, Tuple[wire.FileEntry, Dict[str, str]]]] = {}
            for peer, catalog in self.remote.items():
                for path, entry in catalog.items():
                    slot = versions.setdefault(path, {})
                    if entry.hash not in slot:
                        slot[entry.hash] = (entry, {})
                    slot[entry.hash][1][peer] = path
            local_files = self.share.files
            for path, slot in versions.items():
                local = local_files.get(path)
                candidates = [entry for entry, _ in slot.values()]
                if local is not None:
                    candidates.append(local.entry)
                winner = max(candidates, key=lambda e: (e.mtime_ns, e.hash))
                for content_hash, (entry, sources) in slot.items():
                    if local is not None and local.entry.hash == content_hash:
                        continue
                    kept = local_files.get(conflict_name(path, content_hash))
                    if kept is not None and kept.entry.hash == content_hash:
                        continue  # we keep this version beside the path already
                    dest = path if content_hash == winner.hash else conflict_name(path, content_hash)
                    if dest != path and dest in local_files:
                        continue  # something else sits at the conflict name
                    key = (dest, content_hash)
                    if key in self._cancelled:
                        continue
                    want = old.get(key) or Want(dest=dest, entry=entry)
                    want.sources = dict(sources)
                    new[key] = want
        for key, want in old.items():
            if key not in new and (want.download is not None or want.manual):
                new[key] = want
        self.wants = new
        self._queue = deque(key for key, want in new.items() if want.download is None)
        self.pump()

    def fetch(self, path: str, peer: Optional[str] = None, dest: Optional[str] = None,
              content_hash: Optional[str] = None) -> Transfer:
        """
        Fetch C{path} now, sync or no sync, from C{peer} (a node id) or from
        whichever connected peer lists it.

        @param dest: a directory outside the share to put the file in
            (created if missing); by default it goes into the share.
        @return: a L{Transfer}; its C{done} fires with where the file landed.
        @raise LookupError: if no connected peer lists C{path}.
        """
        sources = {}
        entry = None
        for node_id, catalog in self.remote.items():
            if peer is not None and node_id != peer:
                continue
            candidate = catalog.get(path)
            if candidate and (content_hash is None or candidate.hash == content_hash):
                entry = entry or candidate
                if candidate.hash == entry.hash:
                    sources[node_id] = path
        if entry is None:
            raise LookupError(f"no connected peer lists {path!r}")
        if dest is not None:
            outside = os.path.abspath(os.path.expanduser(dest))
            target = os.path.join(outside, path.rsplit("/", 1)[-1])
        else:
            outside = None
            local = self.share.lookup(path)
            if local is not None and local.entry.hash == entry.hash:
                transfer = Transfer(path=path, size=entry.size, dest=path, clock=self.clock)
                transfer._finish("done", path)
                return transfer
            target = path if local is None else conflict_name(path, entry.hash)
        key = (target, entry.hash)
        self._cancelled.discard(key)
        want = self.wants.get(key) or Want(dest=target, entry=entry, outside=outside)
        want.sources.update(sources)
        want.manual = True
        self.wants[key] = want
        self._queue.append(key)
        transfer = self._transfer_of(want)
        self.pump()
        return transfer

    def _transfer_of(self, want: Want) -> Transfer:
        if want.transfer is None or want.transfer.finished is not None:
            want.transfer = Transfer(path=want.entry.path, size=want.entry.size,
                                     dest=want.dest, clock=self.clock)
        return want.transfer

    def transfers(self) -> List[Transfer]:
        """
        Transfers in flight or waiting, then recent ones, newest last.
        """
        active = [w.transfer for w in self.wants.values()
                  if w.transfer is not None and w.transfer.finished is None]
        return list(self.recent) + active

    def cancel(self, transfer: Transfer) -> bool:
        """
        Stop a transfer (its partial file stays, for a later fetch to
        resume) and do not fetch that version again by itself.
        """
        if not isinstance(transfer, Transfer):
            return False  # only a Transfer names a fetch (wants not started have none)
        key = next((k for k, w in self.wants.items() if w.transfer is transfer), None)
        if key is None:
            return False
        want = self.wants.pop(key)
        self._cancelled.add(key)
        download = want.download
        if download is not None and download.peer is not None:
            proto = download.peer
            if proto.downloads.pop(download.transfer, None) is download:
                proto.cancel_transfer(download.transfer)
                download.release()
        transfer._finish("cancelled", Failure(CancelledError(f"cancelled {transfer.path}")),
                         error="cancelled")
        self.recent.append(transfer)
        self.log.info("cancelled fetching {path}", path=wire.safe_text(transfer.path))
        self.pump()
        return True

    def pump(self) -> None:
        """
        Start the downloads that may start now.
        """
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        now = self.clock.seconds()
        peers = self.node.connections.values()
        total = sum(len(p.downloads) for p in peers)
        if all(len(p.downloads) >= MAX_PER_PEER for p in peers):
            return  # every peer is busy: a finishing download pumps again
        soonest = None
        later = []
        misses = 0
        for _ in range(min(len(self._queue), PUMP_LOOK)):
            if total >= MAX_TOTAL or misses >= PUMP_MISSES:
                break
            key = self._queue.popleft()
            want = self.wants.get(key)
            if want is None or want.download is not None:
                continue
            if want.not_before > now:
                soonest = want.not_before if soonest is None else min(soonest, want.not_before)
                later.append(key)
                continue
            proto = self._pick_source(want, now)
            if proto is not None and self._start(want, proto):
                total += 1
                misses = 0
            else:
                later.append(key)
                misses += 1
        self._queue.extend(later)
        if soonest is not None:
            self._pump_call = self.clock.callLater(max(0.0, soonest - now), self.pump)

    def _pick_source(self, want: Want, now: float) -> Optional["PeerProtocol"]:
        best = None
        for peer in want.sources:
            proto = self.node.connections.get(peer)
            if proto is None or want.bad_until.get(peer, 0.0) > now:
                continue
            if len(proto.downloads) >= MAX_PER_PEER:
                continue
            if best is None or len(proto.downloads) < len(best.downloads):
                best = proto
        return best

    def _start(self, want: Want, proto: "PeerProtocol") -> bool:
        entry = want.entry
        if entry.size + SPACE_MARGIN > self.share.free_bytes():
            # Checked before creating anything: a catalog listing absurd
            # sizes must not leave directories and empty partials behind.
            self._give_up_for_now(want, "not enough free space", proto)
            return False
        try:
            if want.outside is not None:
                os.makedirs(want.outside, exist_ok=True)
                dir_fd = os.open(want.outside, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                dir_fd = self.share.open_parent(want.dest)
        except (OSError, ShareError) as e:
            self._give_up_for_now(want, f"cannot create its directory: {e}", proto)
            return False
        download = Download(entry=entry, dest=want.dest, dir_fd=dir_fd)
        try:
            offset = download.open()
            if entry.size - offset + SPACE_MARGIN > self.share.free_bytes():
                raise TransferFailed("space", "not enough free space")
        except (OSError, TransferFailed) as e:
            download.release()
            self._give_up_for_now(want, str(e), proto)
            return False
        download.outside = want.outside is not None
        download.transfer = proto.next_transfer_id()
        download.source_path = want.sources[proto.remote_id]
        download.peer = proto
        download.started_at = download.last_activity = self.clock.seconds()
        want.download = download
        self._watch_stalls()
        transfer = self._transfer_of(want)
        transfer.download = download
        transfer.state = "running"
        transfer.peer = proto.describe()
        transfer.started = transfer.started or download.started_at
        transfer._last_log = download.started_at
        proto.downloads[download.transfer] = download
        proto.send(wire.Get(transfer=download.transfer, path=download.source_path,
                            hash=entry.hash, offset=offset))
        if offset:
            self.log.info("resuming {path} from {peer} at byte {offset} of {size}",
                          path=wire.safe_text(want.dest), peer=proto.describe(),
                          offset=offset, size=entry.size)
        else:
            self.log.debug("fetching {path} ({size} bytes) from {peer}",
                           path=wire.safe_text(want.dest), size=entry.size,
                           peer=proto.describe())
        return True

    def _give_up_for_now(self, want: Want, why: str, proto: "PeerProtocol") -> None:
        if not want.warned:  # once per file, not once per retry
            want.warned = True
            proto.log_limited(self.log.warn,
                              "cannot fetch {path} now (will retry every minute): {why}"
                              " (offered by {peer})",
                              path=wire.safe_text(want.dest), why=why)
        want.not_before = self.clock.seconds() + RETRY_DELAY * 12

    # -- downloads in progress ---------------------------------------------------

    def _want_of(self, download: Download) -> Optional[Want]:
        want = self.wants.get((download.dest, download.entry.hash))
        return want if want is not None and want.download is download else None

    def data_received(self, proto: "PeerProtocol", data: wire.Data) -> None:
        download = proto.downloads.get(data.transfer)
        if download is None:
            return  # late data for a transfer we cancelled
        before = download.offset
        if len(data.payload):  # empty DATA frames do not keep a download alive
            download.last_activity = self.clock.seconds()
        try:
            download.write(data.payload)
        except TransferFailed as e:
            proto.cancel_transfer(data.transfer)
            self._failed(proto, download, e, discard=True)
            return
        except OSError as e:
            proto.cancel_transfer(data.transfer)
            self._failed(proto, download, TransferFailed("local", str(e)), discard=False)
            return
        size = download.entry.size
        tenth = size >= PROGRESS_MIN_SIZE and before * 10 // size != download.offset * 10 // size
        want = self._want_of(download)
        now = self.clock.seconds()
        transfer = want.transfer if want is not None else None
        late = transfer is not None and now - transfer._last_log >= PROGRESS_INTERVAL
        if size and (tenth or late):
            if transfer is not None:
                transfer._last_log = now
            self.log.info(
                "{path}: {percent}% ({done} of {size} bytes) from {peer}",
                path=wire.safe_text(download.dest), percent=download.offset * 100 // size,
                done=download.offset, size=size, peer=proto.describe(),
            )

    def end_received(self, proto: "PeerProtocol", end: wire.End) -> None:
        download = proto.downloads.pop(end.transfer, None)
        if download is None:
            if end.transfer in proto.cancelled:
                return  # we cancelled it; the END crossed our CANCEL
            proto.drop(f"END for unknown transfer {end.transfer}")
            return
        try:
            download.verify(end)
        except TransferFailed as e:
            self._failed(proto, download, e, discard=True, popped=True)
            return
        try:
            self._make_room(download)
        except OSError as e:
            self._failed(proto, download, TransferFailed("local", str(e)), discard=False,
                         popped=True)
            return
        d = self._run_blocking(download.make_durable)
        d.addCallbacks(
            lambda placed: self._landed(proto, download, *placed),
            lambda f: self._failed(proto, download, TransferFailed("local", f.getErrorMessage()),
                                   discard=False, popped=True),
        )
        # Let the next download from this peer start while this one syncs.
        self.pump()

    def _landed(self, proto, download: Download, landed: str, inode: int) -> None:
        if landed != download.dest:
            self.log.warn("{path} appeared while it was being fetched: keeping both, as {other}",
                          path=wire.safe_text(download.dest), other=wire.safe_text(landed))
        want = self._want_of(download)
        if not download.outside:
            entry = attrs.evolve(download.entry, path=landed)
            self.share.record(entry, disk_path=landed, inode=inode)
            self.announce([entry])
        download.release()
        self.completed += 1
        if want is not None:
            del self.wants[(download.dest, download.entry.hash)]
            if want.transfer is not None:
                want.transfer._finish("done", landed)
                self.recent.append(want.transfer)
        now = self.clock.seconds()
        seconds = max(now - download.started_at, 1e-6)
        # One line per large file; small ones are summed up (below), since a
        # line each would cost more than fetching them.
        emit = self.log.info if download.entry.size >= LOG_EACH_MIN else self.log.debug
        emit(
            "got {path} ({size} bytes) from {peer}{resumed}, verified"
            " ({seconds:.2f}s, {rate:.1f} MB/s)",
            path=wire.safe_text(landed), size=download.entry.size, peer=proto.describe(),
            resumed=f", resumed at byte {download.resumed_from}" if download.resumed_from else "",
            seconds=seconds, rate=download.received / seconds / 1e6,
        )
        if self._batch_files == 0:
            self._batch_started = download.started_at
        self._batch_files += 1
        self._batch_bytes += download.entry.size
        self.pump()
        if not self.wants:
            self.log.info(
                "in step with peers: got {n} files ({size} bytes) in {seconds:.1f}s",
                n=self._batch_files, size=self._batch_bytes,
                seconds=now - self._batch_started,
            )
            self._batch_files = self._batch_bytes = 0

    def error_received(self, proto: "PeerProtocol", error: wire.Error) -> None:
        download = proto.downloads.get(error.transfer)
        if download is None:
            return
        if error.code in GONE_CODES:
            # The peer no longer has that version: forget that it had it,
            # until its HAVE or catalog says otherwise.
            catalog = self.remote.get(proto.remote_id, {})
            listed = catalog.get(download.source_path)
            if listed is not None and listed.hash == download.entry.hash:
                del catalog[download.source_path]
            want = self._want_of(download)
            if want is not None:
                want.sources.pop(proto.remote_id, None)
        self._failed(proto, download,
                     TransferFailed(error.code, f"peer refused: {wire.safe_text(error.message)}"),
                     discard=False)

    def _failed(self, proto, download: Download, error: TransferFailed, discard: bool,
                popped: bool = False) -> None:
        if not popped:
            proto.downloads.pop(download.transfer, None)
        if discard:
            download.discard()
        download.release()
        want = self._want_of(download)
        if want is not None and want.transfer is not None:
            want.transfer.state = "retrying"
            want.transfer.error = str(error)
        proto.log_limited(
            self.log.warn, "fetching {path} from {peer} failed: {why}{what}",
            path=wire.safe_text(download.dest), why=str(error),
            what="; bad data discarded, fetching again" if discard else "",
        )
        if want is None:
            return
        want.download = None
        now = self.clock.seconds()
        want.bad_until[proto.remote_id] = now + RETRY_DELAY
        usable = [p for p in want.sources
                  if p in self.node.connections and want.bad_until.get(p, 0.0) <= now]
        want.not_before = now if usable else now + RETRY_DELAY
        if error.code == "local" or error.code == "space":
            want.not_before = now + RETRY_DELAY * 12
        self._queue.append((download.dest, download.entry.hash))
        self.pump()

    def _interrupted(self, download: Download, why: str) -> None:
        download.release()
        want = self._want_of(download)
        self.log.info("fetching {path} interrupted ({why}); {kept} bytes kept for resuming",
                      path=wire.safe_text(download.dest), why=why, kept=download.offset)
        if want is not None:
            want.download = None
            if want.transfer is not None:
                want.transfer.state = "interrupted"
            want.not_before = self.clock.seconds()
            self._queue.append((download.dest, download.entry.hash))
            if self._pump_call is None:
                self._pump_call = self.clock.callLater(0, self.pump)

    # -- publishing ---------------------------------------------------------------

    def _make_room(self, download: Download) -> None:
        """
        If the destination holds the version this download supersedes, move
        that version to its conflict name first: nothing is overwritten.
        """
        local = self.share.lookup(download.dest)
        if local is not None and local.entry.hash != download.entry.hash:
            kept = self._move_aside(download.dir_fd, local)
            self.log.warn(
                "{path} differs from the newer version on the mesh: kept ours as {kept}",
                path=wire.safe_text(download.dest), kept=wire.safe_text(kept),
            )

    def _move_aside(self, dir_fd: int, local) -> str:
        base = conflict_name(local.entry.path, local.entry.hash)
        target, n = base, 0
        name = local.disk_path.rsplit("/", 1)[-1]
        while True:
            try:
                os.link(name, target.rsplit("/", 1)[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
                break
            except FileExistsError:
                n += 1
                target = f"{base}-{n}"
        os.unlink(name, dir_fd=dir_fd)
        self.share.forget(local.entry.path)
        st = os.stat(target.rsplit("/", 1)[-1], dir_fd=dir_fd, follow_symlinks=False)
        entry = attrs.evolve(local.entry, path=target)
        self.share.record(entry, disk_path=target, inode=st.st_ino)
        self.announce([entry])
        return target

    def _watch_stalls(self) -> None:
        if self._stall_call is None:
            self._stall_call = self.clock.callLater(STALL_CHECK, self._check_stalls)

    def _check_stalls(self) -> None:
        """
        Give up on downloads whose peer has sent nothing for them in
        Limits.stall_timeout seconds, although the connection lives (it answers
        PING): their partial files stay, and another peer -- or the same one
        later -- resumes them.
        """
        self._stall_call = None
        now = self.clock.seconds()
        active = False
        for proto in list(self.node.connections.values()):
            for download in list(proto.downloads.values()):
                if now - download.last_activity >= self.node.limits.stall_timeout:
                    proto.cancel_transfer(download.transfer)
                    self._failed(proto, download, TransferFailed(
                        "stalled", f"no data for {now - download.last_activity:.0f} seconds"),
                        discard=False)
                else:
                    active = True
        if active:
            self._watch_stalls()

    def stop(self) -> None:
        for call in (self._have_call, self._pump_call, self._rebuild_call, self._stall_call):
            if call is not None and call.active():
                call.cancel()
        self._have_call = self._pump_call = self._rebuild_call = self._stall_call = None
