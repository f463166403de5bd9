# -*- test-case-name: tests.test_engine -*-
"""
The sync engine: the bookkeeping between the index, the peers' indexes
and the planner, for one folder.  Pure, like the rest of L{p2ptwisted.core}:
the shell (the node, or the simulator) feeds it events with the time, asks
it what to send and what to do, and tells it how the doing went.

  - Index exchange (what to send a peer, what a peer sent) is kept by
    L{p2ptwisted.core.peerindex.PeerIndexes}; the engine passes it on.
  - Planning (L{SyncEngine.next_actions}) runs the planner over the paths
    marked dirty (L{p2ptwisted.core.dirty}), at most one action per path
    in flight; a failed action is retried after a delay the shell chooses.
    Deletions wait until the rest is applied, and a fetch whose bytes a
    file of ours about to be deleted holds becomes a local move.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple


from p2ptwisted.core.dirty import DirtyPaths
from p2ptwisted.core.index import DIR, Entry, IndexStore, LocalIndex, Observed
from p2ptwisted.core.planner import (DELETE, FETCH, SEND_RECEIVE, Action, pair_renames, plan,
                                     target)
from p2ptwisted.core.peerindex import Hello, PeerIndexes, PeerState, Received

__all__ = ["Hello", "PeerState", "Received", "SyncEngine"]


#: Files of ours with a fetch's bytes looked at for a deletion to turn
#: into a local move.
MAX_PARTNERS = 4


class SyncEngine:
    """
    One folder's sync state on one node.

    @ivar dirty: paths to plan again.
    @ivar busy: actions handed to the shell and not yet reported, by path.
    @ivar waiting: paths whose last action failed, with the time from which
        they may be tried again.
    """

    def __init__(self, index: LocalIndex, store: IndexStore, *, mode: str = SEND_RECEIVE,
                 ignored: Callable[[str, bool], bool] = lambda path, is_dir: False):
        self.index = index
        self.store = store
        self.mode = mode
        self.ignored = ignored
        self.dirty = DirtyPaths()
        self.indexes = PeerIndexes(index, store, self.dirty, ignored)
        #: The connected peers' exchange state (see L{PeerIndexes}).
        self.peers: Dict[str, PeerState] = self.indexes.peers
        self.busy: Dict[str, Action] = {}
        self.waiting: Dict[str, float] = {}
        #: Deletions planned and held back (see L{_defer_deletes}): path
        #: to the hash of the file to delete ("" for a directory).
        self.deferred: Dict[str, str] = {}
        self._released: Set[str] = set()
        self.last_taken = 0

    def sweep(self) -> None:
        """
        Plan every path we know of (at start: what peers told us before we
        stopped may still be waiting to be applied).
        """
        self.dirty.update(self.store.paths())

    @property
    def me(self) -> str:
        return self.index.me

    # -- peers and index exchange (L{PeerIndexes}) ----------------------------------

    def peer_connected(self, peer: str) -> Hello:
        return self.indexes.peer_connected(peer)

    def hello_for(self, peer: str) -> Hello:
        return self.indexes.hello_for(peer)

    def hello_received(self, peer: str, hello: Hello) -> bool:
        return self.indexes.hello_received(peer, hello)

    def peer_lost(self, peer: str) -> None:
        self.indexes.peer_lost(peer)

    def outgoing(self, peer: str, limit: int = 1000) -> List[Entry]:
        return self.indexes.outgoing(peer, limit)

    def entries_received(self, peer: str, entries: Iterable[Entry], now: int,
                         through: Optional[int] = None) -> Received:
        return self.indexes.entries_received(peer, entries, now, through)

    # -- local changes -----------------------------------------------------------

    def local_changed(self, observed: Iterable[Observed], gone: Iterable[str],
                      now: int) -> List[Entry]:
        """
        The scanner found these paths changed on disk, and these gone.
        Returns the new entries (to announce).
        """
        made: List[Entry] = []
        with self.index.batch():
            for item in observed:
                if item.kind == DIR and self._peers_directory(item.path):
                    # A directory a peer has, or holds things in (we made
                    # it for them, perhaps before the peer's entry for the
                    # directory itself arrived; or the user made the
                    # same): not a change of ours -- planning takes the
                    # peer's version, permission bits and all.
                    self.dirty.add(item.path)
                    continue
                entry = self.index.local_change(item, now)
                if entry is not None:
                    made.append(entry)
            # Deepest first, so peers learn a directory's contents are gone
            # before the directory itself.
            for path in sorted(gone, reverse=True):
                entry = self.index.local_delete(path, now)
                if entry is not None:
                    made.append(entry)
        self.dirty.update(e.path for e in made)
        return made

    def _peers_directory(self, path: str) -> bool:
        """
        Whether C{path} is a live directory for some peer, or holds live
        entries of some peer's, and nothing live here.
        """
        local = self.index.get(path)
        if local is not None and local.live:
            return False
        return (any(e.live and e.kind == DIR for e in self.store.remote_for(path).values())
                or self.store.remote_live_under(path))

    # -- planning and applying -----------------------------------------------------

    def next_actions(self, now: float, limit: int = 256) -> List[Action]:
        """
        Plan the dirty paths (at most C{limit} actions): what the shell
        should do now.  Paths with an action in flight wait for it.
        """
        for path, when in list(self.waiting.items()):
            if when <= now:
                del self.waiting[path]
                self.dirty.add(path)
        self._release_deletes()
        actions: List[Action] = []
        # Urgent paths first, then in path order (parents before
        # children): see L{p2ptwisted.core.dirty}.
        taken = self.dirty.take(limit, self.busy)
        #: How many paths the last call planned (none: the rest are busy).
        self.last_taken = len(taken)
        for path in taken:
            local, remotes = self.index.get(path), self.store.remote_for(path)
            is_dir = any(e.kind == DIR for e in [local, *remotes.values()] if e is not None)
            if self.ignored(path, is_dir):
                continue  # ignored since a peer told us of it: never touched
            action = plan(path, local, remotes, me=self.me, now=int(now), mode=self.mode)
            if action is not None:
                actions.append(action)
        actions = self._defer_deletes(pair_renames(actions + self._partners(actions, now)))
        for action in actions:
            for path in action.paths:
                self.busy[path] = action
        return actions

    # Deletions wait until everything else is planned and applied: a
    # file deleted here may be the bytes of a file added elsewhere (a
    # renamed directory: its old paths sort before or after the new ones,
    # and are planned a batch at a time), and a fetch planned after the
    # deletion would ask the network for bytes we just threw away.  A
    # fetch whose bytes a waiting deletion holds becomes a local move.

    def _defer_deletes(self, actions: List[Action]) -> List[Action]:
        if not (self.dirty or self._work_in_flight()):
            return actions
        kept = []
        for action in actions:
            if action.kind == DELETE and action.path not in self._released:
                self.deferred[action.path] = action.local.hash if action.local else ""
            else:
                self._released.discard(action.path)
                kept.append(action)
        return kept

    def has_planning(self) -> bool:
        """
        Whether L{next_actions} may have paths to plan now: its last call
        planned some (so there may be more), and some are waiting.  Dirty
        paths with an action in flight wait for it to end.
        """
        return self.last_taken > 0 and (
            bool(self.dirty) or (bool(self.deferred) and not self._work_in_flight()))

    def hold(self, action: Action) -> None:
        """
        Release C{action}'s paths but plan them again only when L{retry}
        says (the shell rescans them first: the scan must see them as not
        in flight, and planning must not race it).
        """
        self.failed(action, float("inf"))

    def retry(self, action: Action, at: float) -> None:
        for path in action.paths:
            if path in self.waiting:
                self.waiting[path] = at

    def _work_in_flight(self) -> bool:
        return any(a.kind != DELETE for a in self.busy.values())

    def _release_deletes(self) -> None:
        if self.deferred and not self.dirty and not self._work_in_flight():
            paths, self.deferred = list(self.deferred), {}
            self._released = set(paths)  # their turn: not held back again
            self.dirty.update(paths)

    def _partners(self, actions: List[Action], now: float) -> List[Action]:
        """
        For each fetch, a file of ours with its bytes that is to be deleted
        (planned afresh, wherever it is in the queue): the pair becomes a
        local move (L{pair_renames}), in whichever order the two paths
        came up.
        """
        found: List[Action] = []
        taken = {a.path for a in actions}
        for action in actions:
            if action.kind != FETCH or action.conflict_copy is not None:
                continue
            for other in self.store.with_hash(action.entry.hash)[:MAX_PARTNERS]:
                path = other.path
                if path in taken or path in self.busy or not other.live:
                    continue
                partner = plan(path, other, self.store.remote_for(path), me=self.me,
                               now=int(now), mode=self.mode)
                if partner is not None and partner.kind == DELETE:
                    taken.add(path)
                    self.dirty.discard(path)
                    self.deferred.pop(path, None)
                    found.append(partner)
                    break
        return found

    def sources_for(self, action: Action) -> Tuple[str, ...]:
        """
        The connected peers that can send an action's bytes.
        """
        return tuple(p for p in action.sources if p in self.peers)

    def done(self, action: Action) -> List[Entry]:
        """
        The shell applied C{action} to the disk: adopt its versions.
        """
        self._release(action)
        for path in action.paths:
            self.waiting.pop(path, None)  # a retry planned for it is moot now
        adopted = [self.index.adopt(action.entry)]
        if action.source is not None:
            adopted.append(self.index.adopt(action.source.entry))
        return adopted

    def failed(self, action: Action, retry_at: Optional[float]) -> None:
        """
        The action could not be done (the disk changed under it, no source,
        an error): plan its path again from C{retry_at}, or at once if
        C{None} (say, once the shell has rescanned it).
        """
        self._release(action)
        for path in action.paths:
            if retry_at is None:
                self.dirty.add(path)
            else:
                self.waiting[path] = retry_at

    def needed_under(self, path: str, now: int, limit: int = 10_000) -> bool:
        """
        Whether anything we hold under directory C{path} is still wanted
        there (its version, all things known, is live): then the directory
        must not be deleted or replaced by a file.
        """
        for child in self.store.live_under(path, limit):
            candidates = [child] + list(self.store.remote_for(child.path).values())
            if target(candidates).entry.live:
                return True
        return False

    def revive(self, action: Action, now: int) -> Entry:
        """
        Keep the directory at C{action.path} instead of deleting or
        replacing it, because it holds files still needed: a new version of
        ours, concurrent with the one that would remove it, which wins the
        conflict (a directory beats a file, a live version beats a
        deletion), so every node keeps the directory and a file that lost
        is kept as a conflict copy.
        """
        self._release(action)
        entry = self.index.bump(action.path, now)
        self.dirty.add(action.path)
        return entry

    def expire_tombstones(self, now: int, lifetime: int, batch: int = 1000) -> int:
        """
        Forget deletions older than C{lifetime} seconds (their deleting
        node's counter, which a bump sets to at least the time of the
        change, tells when), once no peer we know of holds that path live.

        A node that was off longer than C{lifetime} and still has such a
        file brings it back: the documented price of a bounded index.
        """
        forgotten = 0
        after = ""
        while True:
            page = self.store.tombstones(after, batch)
            if not page:
                return forgotten
            after = page[-1].path
            old = []
            for entry in page:
                if entry.version.counter(entry.modified_by) + lifetime >= now:
                    continue
                if entry.path in self.busy or any(
                        e.live for e in self.store.remote_for(entry.path).values()):
                    continue
                old.append(entry.path)
            if old:
                self.store.forget(old)
                forgotten += len(old)

    def _release(self, action: Action) -> None:
        for path in action.paths:
            self.busy.pop(path, None)

    def in_sync(self) -> bool:
        return not (self.dirty or self.busy or self.waiting or self.deferred)
