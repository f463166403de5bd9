# -*- test-case-name: tests.test_planner -*-
"""
The planner: given what we hold at a path and what our peers hold there,
decide what to do.  Pure: no disk, no network, no clock (C{now} is passed
in).

The rules, which every node applies the same way, so all converge:

  - Of all versions of a path we know (ours and each peer's), the ones no
    other version dominates are the I{heads}.  One head: it is the path's
    version.  Several heads with the same content (both deleted, both
    directories, or files with the same bytes): no conflict, their merged
    vector is the version.  Several heads with different content: a
    conflict.
  - The winner of a conflict (L{rank}): a live version beats a deletion
    (an edit concurrent with a delete keeps the edit), a directory beats a
    file (nothing under it is lost), then the newer mtime, then the larger
    node id of the last modifier, then the larger hash.
  - A node holding a losing head resolves the conflict for it: it takes
    the winner at a version merged from both and bumped by itself, which
    dominates the two, so that conflict cannot come back.  Every other
    node takes the winner at the winner's own version: a version that
    dominated a loser it never held would let that loser's holder replace
    its bytes without seeing the conflict (into the trash, not a copy).
  - A node whose own version is a losing head with a live file keeps those
    bytes as a conflict copy named after that version
    (L{conflict_name}: the loser's mtime and last modifier, so every node
    holding the same loser picks the same name and the copies merge as one
    file).  Nothing else makes a copy: exactly one conflict copy per losing
    version.
  - A version we hold that merely lost to a newer one goes to the trash can
    when replaced (the applier's business, not the planner's).
"""

from __future__ import annotations

import datetime
import functools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.core.versions import Vector

SEND_RECEIVE = "send-receive"
SEND_ONLY = "send-only"
RECEIVE_ONLY = "receive-only"
MODES = (SEND_RECEIVE, SEND_ONLY, RECEIVE_ONLY)

#: What an action asks the shell to do.  Every action ends, when the disk
#: work succeeded, by adopting C{action.entry} into our index.
ADOPT = "adopt"          # the disk already holds it: record the version
SET_META = "set-meta"    # same content: set permission bits and mtime
FETCH = "fetch"          # get the file's bytes (locally if any file has them)
MOVE = "move"            # a rename: move C{source} (being deleted) here
DELETE = "delete"        # trash the file, or remove the empty directory
MKDIR = "mkdir"          # make the directory (trash a file in the way)


@attrs.frozen
class Action:
    """
    One decision about one path.

    @ivar entry: what the path should hold afterwards, at the version to
        adopt.
    @ivar local: what our index says is there now: the applier checks that
        the disk still matches it before touching anything.
    @ivar sources: peers that hold C{entry}'s content, best first.
    @ivar conflict_copy: if set, first move our local file to this name
        (it lost a conflict).
    @ivar source: for L{MOVE}, the L{DELETE} of the path whose file is
        moved here; both are adopted once the move is done.
    """

    kind: str
    path: str
    entry: Entry
    local: Optional[Entry] = None
    sources: Tuple[str, ...] = ()
    conflict_copy: Optional[str] = None
    source: Optional["Action"] = None

    @property
    def paths(self) -> Tuple[str, ...]:
        """
        The paths the action touches: its own, and for a L{MOVE} the path
        whose file it takes.
        """
        if self.source is not None:
            return (self.path, self.source.path)
        return (self.path,)


def rank(entry: Entry) -> tuple:
    """
    The conflict order: the largest rank wins.
    """
    return (entry.live, entry.kind == DIR, entry.mtime_ns, entry.modified_by, entry.hash,
            entry.version.counters, entry.perms)


def conflict_name(path: str, loser: Entry) -> str:
    """
    Where a losing version of C{path} is kept, Syncthing style:
    C{NAME.sync-conflict-YYYYMMDD-HHMMSS-NODEID.EXT}, with the losing
    version's mtime (UTC) and the first 7 digits of the node that made it.
    Deterministic, so two nodes holding the same loser name its copy the
    same.
    """
    head, sep, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dot file such as ".bashrc"
        stem, dot, ext = name, "", ""
    when = datetime.datetime.fromtimestamp(loser.mtime_ns // 10**9, datetime.timezone.utc)
    suffix = f".sync-conflict-{when:%Y%m%d-%H%M%S}-{loser.modified_by[:7]}"
    tail = suffix + dot + ext
    room = 255 - len(tail.encode("utf-8"))
    if room < 1:  # an absurdly long extension: drop it
        tail, room = suffix, 255 - len(suffix)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{head}{sep}{stem}{tail}"


def heads(candidates: Sequence[Entry]) -> List[Entry]:
    """
    The versions no other candidate dominates, one per distinct
    (version, content, metadata).  Equal vectors with different content or
    metadata are kept apart, so they are resolved like concurrent ones:
    merging the heads of two overlapping sets of versions can give the
    same vector on two nodes that picked different winners.
    """
    # Usually most peers hold the same version: compare distinct ones only.
    distinct: List[Entry] = []
    for c in candidates:
        if not any(d.version == c.version and d.same_content(c) and d.same_meta(c)
                   for d in distinct):
            distinct.append(c)
    return [c for c in distinct if not any(o.version.dominates(c.version) for o in distinct)]


@attrs.frozen
class Target:
    """
    What a path should hold, everywhere: the winning entry at its final
    version, and the losing heads (with content different from the winner).
    """

    entry: Entry
    losers: Tuple[Entry, ...]


def target(candidates: Sequence[Entry]) -> Target:
    """
    What the path must hold once every known version is taken into
    account: the winning head, at the merge of every head with the same
    content (which dominates none of the losers: the nodes holding a loser
    must still see the conflict, to keep their bytes).
    """
    tops = heads(candidates)
    winner = max(tops, key=rank)
    if len(tops) == 1:
        return Target(entry=winner, losers=())
    same = [t for t in tops if t.same_content(winner)]
    merged = functools.reduce(Vector.merge, (t.version for t in same))
    losers = tuple(t for t in tops if not t.same_content(winner))
    return Target(entry=attrs.evolve(winner, version=merged), losers=losers)


def plan(path: str, local: Optional[Entry], remotes: Mapping[str, Entry], *, me: str,
         now: int, mode: str = SEND_RECEIVE) -> Optional[Action]:
    """
    Decide what to do about C{path}.

    @param local: our index entry for the path, if any.
    @param remotes: each connected peer's entry for the path, by node id.
    @param me: our short id (it bumps the version of a resolved conflict).
    @param now: whole seconds since the epoch.
    @return: an L{Action}, or C{None} if we hold the path's version already
        (or, in send-only mode, whatever the peers hold).
    """
    if mode == SEND_ONLY or not remotes:
        return None
    candidates = list(remotes.values()) + ([local] if local is not None else [])
    goal = target(candidates)
    want = goal.entry
    lost = local is not None and any(
        l.version == local.version and l.same_content(local) for l in goal.losers)
    if lost and local is not None:
        # We hold a losing head: we resolve the conflict for our version,
        # with one that has seen both it and the winner, so it cannot come
        # back (and nobody else's loser is overruled by it).
        want = attrs.evolve(want, version=want.version.merge(local.version).bump(me, now))
    if (local is not None and local.version == want.version and local.same_content(want)
            and local.same_meta(want)):
        return None
    want = attrs.evolve(want, sequence=0)
    if local is None or local.deleted:
        if want.deleted:
            return Action(ADOPT, path, want, local)
        if want.kind == DIR:
            return Action(MKDIR, path, want, local)
        return Action(FETCH, path, want, local, sources=sources(want, remotes))
    # We hold something live.
    copy = None
    if lost and local.kind == FILE and local.live:
        # Losers with the same bytes (say, one also chmodded elsewhere) are
        # kept as one copy, named after the highest ranked of them.
        alike = [l for l in goal.losers if l.same_content(local)]
        copy = conflict_name(path, max(alike, key=rank))
    if want.deleted:
        return Action(DELETE, path, want, local)
    if local.same_content(want):
        if local.same_meta(want):
            return Action(ADOPT, path, want, local)
        return Action(SET_META, path, want, local)
    if want.kind == DIR:
        return Action(MKDIR, path, want, local, conflict_copy=copy)
    return Action(FETCH, path, want, local, sources=sources(want, remotes), conflict_copy=copy)


def sources(want: Entry, remotes: Mapping[str, Entry]) -> Tuple[str, ...]:
    """
    Peers that hold the bytes of C{want}: those at exactly its version
    first, then any other peer whose file there has the same hash.
    """
    exact = sorted(p for p, e in remotes.items() if e.version == want.version and e.live
                   and e.kind == FILE and e.hash == want.hash)
    other = sorted(p for p, e in remotes.items() if p not in exact and e.live
                   and e.kind == FILE and e.hash == want.hash)
    return tuple(exact + other)


def pair_renames(actions: Sequence[Action]) -> List[Action]:
    """
    Turn a delete and a fetch of the same bytes, planned together, into a
    local move: a rename elsewhere costs no network bytes here.

    Only files deleted without a conflict copy pair up; each deleted file
    serves one fetch (other fetches of the same bytes copy it locally).
    """
    deletes: Dict[str, List[Action]] = {}
    for a in actions:
        if a.kind == DELETE and a.local is not None and a.local.kind == FILE and a.local.live:
            deletes.setdefault(a.local.hash, []).append(a)
    if not deletes:
        return list(actions)
    used = set()
    out: List[Action] = []
    for a in actions:
        if a.kind == FETCH and a.conflict_copy is None and (a.local is None or a.local.deleted):
            pool = deletes.get(a.entry.hash)
            if pool:
                gone = pool.pop(0)
                used.add(gone.path)
                out.append(attrs.evolve(a, kind=MOVE, source=gone))
                continue
        out.append(a)
    return [a for a in out if not (a.kind == DELETE and a.path in used)]
