# -*- test-case-name: tests.test_index -*-
"""
Index entries, and a node's own index: what it holds, at which version,
in which order it changed.

Each node keeps one entry per path it has ever held (tombstones included)
and numbers every change to its own index with a sequence number that only
grows.  Peers remember the highest sequence they have from us (with our
random index id), so after a reconnect only entries with a higher sequence
are sent: the delta index exchange.  An entry adopted from a peer gets a
fresh sequence here too, which is how a change made on A reaches C through
B.

Storage sits behind L{IndexStore}: L{MemoryStore} here (tests, the
simulator), L{p2ptwisted.store.SqliteStore} on a real node.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Dict, Iterable, Iterator, List, Optional, Protocol, Tuple

import attrs

from p2ptwisted.core.blocks import digests
from p2ptwisted.core.versions import Vector

FILE = "file"
DIR = "dir"
KINDS = (FILE, DIR)

#: Permission bits that travel: read, write and execute for user, group and
#: other.  (setuid, setgid and sticky never do.)
PERM_MASK = 0o777


@attrs.frozen
class Entry:
    """
    One path at one version, as a node's index holds it and as it travels.

    @ivar hash: the BLAKE3 hex digest of a file's content; empty for
        directories and tombstones.
    @ivar modified_by: short id of the node that made this version.
    @ivar sequence: where this entry sits in the sending node's own index.
    @ivar blocks: the file's block list (L{p2ptwisted.core.blocks}): its
        block digests concatenated, or C{b""} for a file of one block (or
        too many), a directory, a tombstone, and a version whose list we
        were not told.  Not part of equality: it follows from the content,
        which C{hash} already names.
    """

    path: str
    kind: str
    size: int
    mtime_ns: int
    perms: int
    hash: str
    deleted: bool
    version: Vector
    modified_by: str
    sequence: int = 0
    blocks: bytes = attrs.field(default=b"", eq=False, repr=False)

    @property
    def live(self) -> bool:
        return not self.deleted

    def same_content(self, other: "Entry") -> bool:
        """
        Whether the two hold the same thing at the path (ignoring mtime and
        permission bits): both deleted, both directories, or both files
        with the same bytes.
        """
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        return self.kind == other.kind and (self.kind == DIR or self.hash == other.hash)

    def same_meta(self, other: "Entry") -> bool:
        if self.deleted:
            return True
        if self.kind == DIR:
            return self.perms == other.perms
        return self.perms == other.perms and self.mtime_ns == other.mtime_ns


def entry_problem(entry: Entry) -> Optional[str]:
    """
    What makes a peer's entry unusable, or C{None}.  (Paths and hashes are
    checked at the wire's edge; these are the rules between the fields.)
    """
    if entry.kind not in KINDS:
        return f"unknown kind {entry.kind!r}"
    if not 0 <= entry.perms <= PERM_MASK:
        return f"permission bits {entry.perms:o} out of range"
    if entry.size < 0 or entry.sequence < 1:
        return "negative size or sequence"
    if (entry.deleted or entry.kind == DIR) and (entry.hash or entry.size):
        return "a directory or a deletion with content"
    if entry.kind == FILE and not entry.deleted and not entry.hash:
        return "a file without a hash"
    if not entry.version.counters:
        return "no version"
    return None


@attrs.frozen
class Observed:
    """
    What the scanner found at a path on disk, before it becomes a version.
    """

    path: str
    kind: str
    size: int
    mtime_ns: int
    perms: int
    hash: str = ""
    #: The file's block list (see L{Entry.blocks}).
    blocks: bytes = attrs.field(default=b"", eq=False, repr=False)

    def matches(self, entry: Optional[Entry]) -> bool:
        """
        Whether the index already says exactly this about the path.
        """
        if entry is None or entry.deleted or entry.kind != self.kind:
            return False
        if self.kind == DIR:
            return entry.perms == self.perms
        return (entry.size, entry.mtime_ns, entry.perms, entry.hash) == (
            self.size, self.mtime_ns, self.perms, self.hash)


class IndexStore(Protocol):
    """
    Where a node keeps its own index and what it has heard from peers.
    """

    def get(self, path: str) -> Optional[Entry]: ...
    def put(self, entries: Iterable[Entry],
            meta: Optional[Dict[str, str]] = None) -> None: ...
    def since(self, sequence: int, limit: int) -> List[Entry]: ...
    def with_hash(self, content_hash: str) -> List[Entry]: ...
    def with_block(self, digest: bytes, limit: int = 8) -> List[Tuple[Entry, int]]: ...
    def live_under(self, path: str, limit: int) -> List[Entry]: ...
    def meta(self, key: str) -> Optional[str]: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def remote_put(self, peer: str, entries: Iterable[Entry]) -> None: ...
    def remote_for(self, path: str) -> Dict[str, Entry]: ...
    def remote_live_under(self, path: str) -> bool: ...
    def remote_count(self, peer: str) -> int: ...
    def remote_drop(self, peer: str) -> None: ...
    def remote_paths(self, peer: str) -> List[str]: ...
    def tombstones(self, after: str, limit: int) -> List[Entry]: ...
    def forget(self, paths: Iterable[str]) -> None: ...
    def paths(self) -> Iterator[str]: ...
    def local_paths(self) -> Iterator[str]: ...


@attrs.define
class MemoryStore:
    """
    An L{IndexStore} in dictionaries: for tests and the simulator.
    """

    local: Dict[str, Entry] = attrs.field(factory=dict)
    remote: Dict[str, Dict[str, Entry]] = attrs.field(factory=dict)
    _meta: Dict[str, str] = attrs.field(factory=dict)

    def get(self, path: str) -> Optional[Entry]:
        return self.local.get(path)

    def put(self, entries: Iterable[Entry], meta: Optional[Dict[str, str]] = None) -> None:
        """
        Store entries, and with them (in the same write) any C{meta}
        values: the index's sequence counter travels with its entries.
        """
        for entry in entries:
            self.local[entry.path] = entry
        self._meta.update(meta or {})

    def since(self, sequence: int, limit: int) -> List[Entry]:
        found = sorted((e for e in self.local.values() if e.sequence > sequence),
                       key=lambda e: e.sequence)
        return found[:limit]

    def with_hash(self, content_hash: str) -> List[Entry]:
        return [e for e in self.local.values()
                if e.live and e.kind == FILE and e.hash == content_hash]

    def with_block(self, digest: bytes, limit: int = 8) -> List[Tuple[Entry, int]]:
        found: List[Tuple[Entry, int]] = []
        for entry in sorted(self.local.values(), key=lambda e: e.path):
            if entry.live and entry.blocks:
                found.extend((entry, i) for i, d in enumerate(digests(entry.blocks))
                             if d == digest)
        return found[:limit]

    def live_under(self, path: str, limit: int) -> List[Entry]:
        prefix = path + "/"
        found = sorted((e for p, e in self.local.items() if e.live and p.startswith(prefix)),
                       key=lambda e: e.path)
        return found[:limit]

    def meta(self, key: str) -> Optional[str]:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def remote_put(self, peer: str, entries: Iterable[Entry]) -> None:
        known = self.remote.setdefault(peer, {})
        for entry in entries:
            known[entry.path] = entry

    def remote_for(self, path: str) -> Dict[str, Entry]:
        return {peer: known[path] for peer, known in self.remote.items() if path in known}

    def remote_count(self, peer: str) -> int:
        return len(self.remote.get(peer, {}))

    def remote_live_under(self, path: str) -> bool:
        prefix = path + "/"
        return any(e.live for known in self.remote.values() for p, e in known.items()
                   if p.startswith(prefix))

    def remote_drop(self, peer: str) -> None:
        self.remote.pop(peer, None)

    def remote_paths(self, peer: str) -> List[str]:
        return sorted(self.remote.get(peer, {}))

    def tombstones(self, after: str, limit: int) -> List[Entry]:
        found = sorted((e for p, e in self.local.items() if e.deleted and p > after),
                       key=lambda e: e.path)
        return found[:limit]

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.local.pop(path, None)
            for known in self.remote.values():
                if path in known and known[path].deleted:
                    del known[path]

    def paths(self) -> Iterator[str]:
        seen = set(self.local)
        for known in self.remote.values():
            seen.update(known)
        return iter(sorted(seen))

    def local_paths(self) -> Iterator[str]:
        return iter(sorted(self.local))


def new_index_id() -> str:
    """
    A random 64-bit index id, in hex: a new one means "my sequence numbers
    start over, forget what you have from me".
    """
    return secrets.token_hex(8)


class LocalIndex:
    """
    A node's own index: turns local changes and adopted remote versions
    into entries with growing sequence numbers.

    @ivar me: this node's short id (L{p2ptwisted.core.versions.short_id}).
    """

    def __init__(self, store: IndexStore, me: str, index_id: Optional[str] = None):
        self.store = store
        self.me = me
        stored = store.meta("index_id")
        if stored is None:
            stored = index_id or new_index_id()
            store.set_meta("index_id", stored)
            store.set_meta("sequence", "0")
        self.index_id = stored
        self.sequence = int(store.meta("sequence") or 0)
        # Entries and the counter are written together; still, a counter
        # behind the entries (an index from before that, a store that
        # cannot write both at once) must not hand out a sequence already
        # used: peers holding it would skip the new entry.
        while True:
            later = store.since(self.sequence, 1000)
            if not later:
                break
            self.sequence = later[-1].sequence
        self._batch: Optional[List[Entry]] = None

    def get(self, path: str) -> Optional[Entry]:
        return self.store.get(path)

    def new_index_id(self) -> str:
        """
        Start a new index: peers forget what they had from us and take all
        of it again.  Needed when our index went back in time (the end of
        the database lost in a crash, a backup restored): its sequence
        numbers would otherwise be handed out twice.
        """
        self.index_id = new_index_id()
        self.store.set_meta("index_id", self.index_id)
        return self.index_id

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def _save(self, entries: List[Entry]) -> None:
        if self._batch is not None:
            self._batch.extend(entries)
            return
        self.store.put(entries, {"sequence": str(self.sequence)})

    @contextlib.contextmanager
    def batch(self):
        """
        Save the changes made inside the block in one write (a scan that
        finds thousands of changes costs one transaction, not thousands).
        Reads inside the block see the store as it was before it.
        """
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            pending, self._batch = self._batch, None
            if pending:
                self._save(pending)

    def local_change(self, observed: Observed, now: int) -> Optional[Entry]:
        """
        Record what the scanner found at a path as a new version, if it
        differs from what the index says.

        @param now: whole seconds since the epoch, for the version counter.
        @return: the new entry, or C{None} if nothing changed.
        """
        old = self.store.get(observed.path)
        if observed.matches(old):
            return None
        version = (old.version if old is not None else Vector()).bump(self.me, now)
        entry = Entry(
            path=observed.path, kind=observed.kind,
            size=observed.size if observed.kind == "file" else 0,
            mtime_ns=observed.mtime_ns, perms=observed.perms & PERM_MASK,
            hash=observed.hash if observed.kind == "file" else "",
            deleted=False, version=version, modified_by=self.me, sequence=self._next(),
            blocks=observed.blocks if observed.kind == "file" else b"",
        )
        self._save([entry])
        return entry

    def local_delete(self, path: str, now: int) -> Optional[Entry]:
        """
        Record that a path the index holds is gone from disk: a tombstone.
        """
        old = self.store.get(path)
        if old is None or old.deleted:
            return None
        entry = attrs.evolve(old, deleted=True, size=0, hash="", blocks=b"",
                             version=old.version.bump(self.me, now),
                             modified_by=self.me, sequence=self._next())
        self._save([entry])
        return entry

    def bump(self, path: str, now: int) -> Entry:
        """
        Make what we hold at C{path} a new version of ours, unchanged on
        disk: used to keep a directory that a peer would replace while it
        still holds files someone needs (see L{SyncEngine.revive}).
        """
        old = self.store.get(path)
        if old is None:
            raise KeyError(f"nothing at {path!r} to bump")
        entry = attrs.evolve(old, version=old.version.bump(self.me, now), modified_by=self.me,
                             sequence=self._next())
        self._save([entry])
        return entry

    def adopt(self, entry: Entry, version: Optional[Vector] = None) -> Entry:
        """
        Record a version that is now on our disk because we applied it
        (or already had its content): same entry, our own sequence.
        """
        adopted = attrs.evolve(entry, sequence=self._next(),
                               version=entry.version if version is None else version)
        self._save([adopted])
        return adopted

    def since(self, sequence: int, limit: int = 1000) -> List[Entry]:
        return self.store.since(sequence, limit)

