# -*- test-case-name: tests.test_engine -*-
"""
Index exchange, as the sync engine sees it (pure, like the rest of
L{p2ptwisted.core}):

  - On connect each side says which of the other's index it already has
    (L{PeerIndexes.hello_for}: the other's index id and the highest
    sequence received).  The other then sends only entries above that
    sequence (L{PeerIndexes.outgoing}); a different index id means
    "start over".
  - Entries from a peer (L{PeerIndexes.entries_received}) are checked
    (paths we never sync, vectors out of bounds, older than what that peer
    already told us) and stored; each path they touch is marked for
    planning.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import attrs

from p2ptwisted.core.dirty import DirtyPaths
from p2ptwisted.core.index import DIR, Entry, IndexStore, LocalIndex, entry_problem
from p2ptwisted.core.versions import VersionError, check_counters


@attrs.define
class PeerState:
    """
    How far the index exchange with one connected peer has got.

    @ivar sent: our highest sequence this peer has from us.
    @ivar ready: whether its hello arrived (until then we do not know what
        it has, so we send nothing).
    """

    peer: str
    sent: int = 0
    ready: bool = False


@attrs.frozen
class Hello:
    """
    What we tell a peer on connecting: our index id, and the highest
    sequence we hold of its index (under the index id it had then).
    """

    index_id: str
    have_index_id: str
    have_sequence: int


@attrs.frozen
class Received:
    """
    The outcome of a batch of a peer's entries.
    """

    stored: int
    rejected: Tuple[str, ...] = ()
    stale: int = 0


class PeerIndexes:
    """
    What we hold of each peer's index, and how far each connected peer
    holds ours.

    @param dirty: the engine's paths to plan: entries received mark theirs.
    """

    def __init__(self, index: LocalIndex, store: IndexStore, dirty: DirtyPaths,
                 ignored: Callable[[str, bool], bool]):
        self.index = index
        self.store = store
        self.dirty = dirty
        self.ignored = ignored
        self.peers: Dict[str, PeerState] = {}

    def peer_connected(self, peer: str) -> Hello:
        self.peers[peer] = PeerState(peer)
        return self.hello_for(peer)

    def hello_for(self, peer: str) -> Hello:
        their_id = self.store.meta(f"peer-index:{peer}") or ""
        their_seq = int(self.store.meta(f"peer-sequence:{peer}") or 0)
        return Hello(index_id=self.index.index_id, have_index_id=their_id,
                     have_sequence=their_seq if their_id else 0)

    def hello_received(self, peer: str, hello: Hello) -> bool:
        """
        The peer said what it has of our index, and what its own index is.

        @return: C{True} if the peer holds more of our index than we do:
            our index went back (a crash lost its end, or a backup was
            restored), so we start a new index id, and the shell must send
            every connected peer a fresh L{hello_for}.
        """
        state = self.peers.setdefault(peer, PeerState(peer))
        known = self.store.meta(f"peer-index:{peer}")
        if known != hello.index_id:
            # Its sequences start over: forget what it told us before.
            if known is not None:
                self.dirty.update(self.store.remote_paths(peer))
            self.store.remote_drop(peer)
            self.store.set_meta(f"peer-index:{peer}", hello.index_id)
            self.store.set_meta(f"peer-sequence:{peer}", "0")
        ok = hello.have_index_id == self.index.index_id
        if ok and hello.have_sequence > self.index.sequence:
            self.index.new_index_id()
            for other in self.peers.values():
                other.sent = 0
            state.ready = True
            return True
        state.sent = hello.have_sequence if ok else 0
        state.ready = True
        return False

    def peer_lost(self, peer: str) -> None:
        """
        The peer went away.  What it told us stays (its versions still
        count, and a reconnect picks up where it left off); it is no longer
        a source.
        """
        self.peers.pop(peer, None)

    def outgoing(self, peer: str, limit: int = 1000) -> List[Entry]:
        """
        The next entries this peer has not had from us, in sequence order;
        calling it again gives the ones after.
        """
        state = self.peers.get(peer)
        if state is None or not state.ready or state.sent >= self.index.sequence:
            return []
        entries = self.index.since(state.sent, limit)
        if entries:
            state.sent = entries[-1].sequence
        else:
            state.sent = self.index.sequence
        return entries

    def entries_received(self, peer: str, entries: Iterable[Entry], now: int,
                         through: Optional[int] = None) -> Received:
        """
        Store a peer's entries, refusing any that could harm us, and mark
        their paths for planning.
        """
        rejected: List[str] = []
        good: List[Entry] = []
        stale = 0
        top = int(self.store.meta(f"peer-sequence:{peer}") or 0)
        for entry in entries:
            # Whatever we make of it, the peer need not send it again.
            top = max(top, entry.sequence)
            if self.ignored(entry.path, entry.kind == DIR):
                continue
            problem = entry_problem(entry)
            if problem is None:
                try:
                    check_counters(entry.version, now)
                except VersionError as e:
                    problem = str(e)
            if problem is not None:
                rejected.append(f"{entry.path}: {problem}")
                continue
            old = self.store.remote_for(entry.path).get(peer)
            if old is not None and (old.version.dominates(entry.version)
                                    or old.version == entry.version):
                stale += 1
                continue
            good.append(entry)
        if good:
            self.store.remote_put(peer, good)
            self.dirty.update(e.path for e in good)
        if through is not None:
            top = max(top, through)
        self.store.set_meta(f"peer-sequence:{peer}", str(top))
        return Received(stored=len(good), rejected=tuple(rejected), stale=stale)
