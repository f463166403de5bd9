# -*- test-case-name: tests.test_store -*-
"""
A node's index on disk: L{SqliteStore}, the L{IndexStore} a real node uses.

The index must outlive the process (version vectors and sequence numbers
are what let peers send only what changed since they last heard from us),
and a share of a million files must not cost a million objects in memory.
So the index lives in one SQLite file in the node's state directory, read
and written through the standard library's C{sqlite3}, with SQLite's page
cache bounded (L{CACHE_KIB}) and every listing paged through a cursor.

Each call that writes is one transaction, so a crash leaves either all of a
batch or none of it.  The journal is a write-ahead log with
C{synchronous=NORMAL}: a power cut may lose the last transactions, never
reorder them or corrupt the file.

The store is used from the reactor thread only, through one connection.
A file that cannot be opened as an index (not a database, another schema
version) and a write that fails (read-only or full disk) raise
L{StoreError}, whose message is one line a node can print as it is.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from typing import Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple

from p2ptwisted.core.blocks import digest_at, digests
from p2ptwisted.core.index import FILE, Entry
from p2ptwisted.schema import MIGRATE_1, SCHEMA, HASH_KEY, SCHEMA_VERSION
from p2ptwisted.core.versions import Vector

#: File name of the index in a node's state directory.
INDEX_FILE = "index.sqlite3"

#: SQLite page cache per connection, in KiB: the bound on what the index
#: costs in memory, whatever its size.
CACHE_KIB = 8192

#: Rows fetched per query when a listing is streamed.
CHUNK = 1000

#: Paths per query in L{SqliteStore.needed} (SQLite allows 32,766 parameters).
NEED_CHUNK = 500

_FIELDS = ("path, kind, size, mtime_ns, perms, hash, deleted, version, modified_by, sequence,"
           " blocks")
_MARKS = ", ".join("?" * 11)

class StoreError(Exception):
    """
    The index file cannot be used; the message is one line saying why.
    """


def encode_version(version: Vector) -> str:
    """
    A vector as compact JSON (C{{"shortid":counter,...}}): short ids are
    whatever a peer sent, so no separator character is safe to assume.
    """
    return json.dumps(dict(version.counters), separators=(",", ":"))


def decode_version(text: str) -> Vector:
    return Vector(json.loads(text))


def _row(entry: Entry) -> tuple:
    return (entry.path, entry.kind, entry.size, entry.mtime_ns, entry.perms, entry.hash,
            int(entry.deleted), encode_version(entry.version), entry.modified_by,
            entry.sequence, entry.blocks)


def _entry(row) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]),
                 decode_version(row[7]), row[8], row[9], bytes(row[10]))


def block_key(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)


def _block_rows(entries: Iterable[Entry]) -> Iterator[tuple]:
    for entry in entries:
        if entry.live and entry.blocks:
            for i, digest in enumerate(digests(entry.blocks)):
                yield entry.path, i, block_key(digest)


class _Write:
    """
    One write transaction; SQLite errors leave it as L{StoreError}.
    """

    def __init__(self, store: "SqliteStore"):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot write index {self.store.path}: {e}") from None
        return self.store._db

    def __exit__(self, kind, value, tb) -> Literal[False]:
        db = self.store._db
        if kind is None:
            try:
                db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                kind, value = type(e), e
        if db.in_transaction:
            db.execute("ROLLBACK")
        if issubclass(kind, (sqlite3.Error, OverflowError)):
            raise StoreError(f"cannot write index {self.store.path}: {value}") from None
        return False


class SqliteStore:
    """
    An L{IndexStore} in one SQLite file, with the semantics of
    L{p2ptwisted.core.index.MemoryStore}.

    One difference: L{paths} and L{local_paths} read the store in chunks as
    they are iterated, rather than copying it first, so a path added past
    the current position while iterating shows up in the listing.

    @ivar path: the file, or C{":memory:"}.
    """

    def __init__(self, path: str):
        """
        Open the index at C{path}, creating it if it does not exist.

        @raise StoreError: if the file is not an index this code can use.
        """
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open index {path}: {e}") from None
        try:
            self._setup()
        except StoreError:
            self._db.close()
            raise
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"cannot open index {path}: {e}") from None

    @classmethod
    def open(cls, state_dir: str) -> "SqliteStore":
        """
        The index in a node's state directory (L{INDEX_FILE}).
        """
        return cls(os.path.join(state_dir, INDEX_FILE))

    def _setup(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} is an SQLite database but not a node index;"
                                 " move it away or use another --state")
        elif version == 1:
            with _Write(self):
                for statement in MIGRATE_1.split(";"):
                    if statement.strip():
                        db.execute(statement)
        elif version != SCHEMA_VERSION:
            raise StoreError(f"index {self.path} has schema version {version}, this release"
                             f" reads only {SCHEMA_VERSION}: it was written by another release")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA journal_size_limit = 67108864")
        if version == 0:
            with _Write(self):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)

    def reader(self) -> "SqliteStore":
        """
        A second, read-only connection, for reading from another thread
        (the scanner's, while the reactor thread writes): WAL lets it read
        a consistent snapshot meanwhile.  Close it when done.  For an
        in-memory database (tests), which no other connection can see,
        this store itself.
        """
        if self.path == ":memory:":
            return self
        other = SqliteStore.__new__(SqliteStore)
        other.path = self.path
        try:
            other._db = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True,
                                        isolation_level=None, check_same_thread=False)
            other._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open index {self.path} for reading: {e}") from None
        return other

    def close(self) -> None:
        self._db.close()

    def get(self, path: str) -> Optional[Entry]:
        row = self._db.execute(f"SELECT {_FIELDS} FROM local WHERE path = ?",
                               (path,)).fetchone()
        return None if row is None else _entry(row)

    def put(self, entries: Iterable[Entry], meta: Optional[Dict[str, str]] = None) -> None:
        entries = list(entries)
        with _Write(self) as db:
            db.executemany(f"INSERT OR REPLACE INTO local ({_FIELDS}) VALUES ({_MARKS})",
                           map(_row, entries))
            db.executemany("DELETE FROM blockmap WHERE path = ?", ((e.path,) for e in entries))
            db.executemany("INSERT INTO blockmap (path, idx, key) VALUES (?, ?, ?)",
                           _block_rows(entries))
            if meta:
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               meta.items())

    def since(self, sequence: int, limit: int) -> List[Entry]:
        rows = self._db.execute(f"SELECT {_FIELDS} FROM local WHERE sequence > ?"
                                " ORDER BY sequence LIMIT ?", (sequence, limit))
        return [_entry(row) for row in rows]

    def with_hash(self, content_hash: str) -> List[Entry]:
        # The conditions spell the index's expression and repeat its WHERE,
        # so SQLite can use it; "+hash" stops it choosing a scan instead.
        rows = self._db.execute(
            f"SELECT {_FIELDS} FROM local WHERE substr(hash, 1, {HASH_KEY}) = ?"
            f" AND +hash = ? AND deleted = 0 AND kind = '{FILE}' ORDER BY path",
            (content_hash[:HASH_KEY], content_hash))
        return [_entry(row) for row in rows]

    def with_block(self, digest: bytes, limit: int = 8) -> List[Tuple[Entry, int]]:
        """
        Up to C{limit} (entry, block index) of our live files whose block
        list has a block with C{digest}.
        """
        rows = self._db.execute("SELECT path, idx FROM blockmap WHERE key = ? LIMIT ?",
                                (block_key(digest), limit * 4)).fetchall()
        found = []
        for path, index in rows:
            entry = self.get(path)
            if entry is not None and entry.live and digest_at(entry.blocks, index) == digest:
                found.append((entry, index))
        return found[:limit]

    def live_under(self, path: str, limit: int) -> List[Entry]:
        # Every string that starts with "p/" sorts in ["p/", "p0"): "0"
        # follows "/", and UTF-8 byte order is code point order.
        rows = self._db.execute(f"SELECT {_FIELDS} FROM local WHERE path >= ? AND path < ?"
                                " AND deleted = 0 ORDER BY path LIMIT ?",
                                (path + "/", path + "0", limit))
        return [_entry(row) for row in rows]

    def remote_count(self, peer: str) -> int:
        return self._db.execute("SELECT count(*) FROM remote WHERE peer = ?",
                                (peer,)).fetchone()[0]

    def remote_live_under(self, path: str) -> bool:
        """
        Whether any peer has something live under directory C{path}.
        """
        return self._db.execute("SELECT 1 FROM remote WHERE path >= ? AND path < ?"
                                " AND deleted = 0 LIMIT 1", (path + "/", path + "0")
                                ).fetchone() is not None

    def meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with _Write(self) as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def remote_put(self, peer: str, entries: Iterable[Entry]) -> None:
        with _Write(self) as db:
            db.executemany(f"INSERT OR REPLACE INTO remote (peer, {_FIELDS})"
                           f" VALUES (?, {_MARKS})",
                           ((peer,) + _row(entry) for entry in entries))

    def tombstones(self, after: str, limit: int) -> List[Entry]:
        rows = self._db.execute(f"SELECT {_FIELDS} FROM local WHERE path > ? AND deleted = 1"
                                " ORDER BY path LIMIT ?", (after, limit))
        return [_entry(row) for row in rows]

    def forget(self, paths: Iterable[str]) -> None:
        rows = [(p,) for p in paths]
        with _Write(self) as db:
            db.executemany("DELETE FROM local WHERE path = ?", rows)
            db.executemany("DELETE FROM blockmap WHERE path = ?", rows)
            db.executemany("DELETE FROM remote WHERE path = ? AND deleted = 1", rows)

    def remote_paths(self, peer: str) -> List[str]:
        rows = self._db.execute("SELECT path FROM remote WHERE peer = ? ORDER BY path", (peer,))
        return [row[0] for row in rows]

    def remote_for(self, path: str) -> Dict[str, Entry]:
        rows = self._db.execute(f"SELECT peer, {_FIELDS} FROM remote WHERE path = ?",
                                (path,))
        return {row[0]: _entry(row[1:]) for row in rows}

    def remote_drop(self, peer: str) -> None:
        with _Write(self) as db:
            db.execute("DELETE FROM remote WHERE peer = ?", (peer,))

    def _pages(self, query: str, parameters: int) -> Iterator[str]:
        """
        Paths from C{query}, one chunk per query: no read transaction stays
        open between chunks, so writes and WAL checkpoints go on meanwhile.

        @param query: selects paths ordered by path; each of its first
            C{parameters} placeholders is compared with the last path seen
            (by the operator put in for C{after}), the last is the limit.
        """
        after, last = ">=", ""
        while True:
            rows = self._db.execute(query.format(after=after),
                                    (last,) * parameters + (CHUNK,)).fetchall()
            for (path,) in rows:
                yield path
            if len(rows) < CHUNK:
                return
            after, last = ">", rows[-1][0]

    def paths(self) -> Iterator[str]:
        """
        Every path in the local index or heard from a peer, sorted, once.
        """
        # UNION with ORDER BY merges the two path indexes as it goes.
        return self._pages("SELECT path FROM local WHERE path {after} ? UNION SELECT path"
                           " FROM remote WHERE path {after} ? ORDER BY 1 LIMIT ?", 2)

    def local_paths(self) -> Iterator[str]:
        return self._pages("SELECT path FROM local WHERE path {after} ? ORDER BY path LIMIT ?",
                           1)

    def held_by(self, peer: str) -> int:
        """
        Bytes of our live files that C{peer} told us it holds with the same
        content (the web page's "how complete is it").
        """
        row = self._db.execute(
            "SELECT total(l.size) FROM local l JOIN remote r ON r.peer = ? AND r.path = l.path"
            f" WHERE l.deleted = 0 AND l.kind = '{FILE}' AND r.deleted = 0 AND r.hash = l.hash",
            (peer,)).fetchone()
        return int(row[0])

    def needed(self, paths: Sequence[str]) -> Tuple[int, int]:
        """
        Of C{paths}, the files some peer holds with content our index does
        not have there, and their bytes (a peer's largest version of each):
        roughly what fetching them will bring, before they are planned.
        """
        files, size = 0, 0
        for i in range(0, len(paths), NEED_CHUNK):
            chunk = paths[i:i + NEED_CHUNK]
            row = self._db.execute(
                "SELECT count(*), total(size) FROM (SELECT max(r.size) AS size FROM remote r"
                " LEFT JOIN local l ON l.path = r.path"
                f" WHERE r.path IN ({','.join('?' * len(chunk))}) AND r.deleted = 0"
                f" AND r.kind = '{FILE}' AND (l.path IS NULL OR l.deleted = 1 OR l.hash != r.hash)"
                " GROUP BY r.path)", chunk).fetchone()
            files, size = files + row[0], size + int(row[1])
        return files, size

    def totals(self, peer: Optional[str] = None) -> Tuple[int, int]:
        """
        Live files and their bytes: in our index, or in what C{peer} told
        us of its own.
        """
        if peer is None:
            row = self._db.execute("SELECT count(*), total(size) FROM local WHERE deleted = 0"
                                   f" AND kind = '{FILE}'").fetchone()
        else:
            row = self._db.execute("SELECT count(*), total(size) FROM remote WHERE peer = ?"
                                   f" AND deleted = 0 AND kind = '{FILE}'", (peer,)).fetchone()
        return int(row[0]), int(row[1])
