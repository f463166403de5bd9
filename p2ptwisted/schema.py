"""
The SQL schema of a node's index (L{p2ptwisted.store.SqliteStore}): the
tables, and the migration from each older schema version.
"""

from p2ptwisted.core.index import FILE

#: The schema this code writes and reads, kept in C{PRAGMA user_version}.
#: A later release that changes the schema bumps it and migrates older
#: files; a file with a higher number was written by a newer release.
SCHEMA_VERSION = 2

#: Hex digits of a content hash that L{SqliteStore.with_hash} looks up by.
#: Hashes are random, so every batch of puts lands all over the hash index;
#: indexing a short prefix (a match is then checked on the whole hash)
#: keeps that index a fifth of the size, so a batch dirties fewer pages.
HASH_KEY = 8

#: Where each block of our own live files is: (path, block index) by the
#: first 8 bytes of the block's digest, as a signed 64-bit key (a match is
#: checked against the entry's whole list).  A block any file holds is
#: reused and served from there (L{SqliteStore.with_block}).
BLOCKMAP = """
CREATE TABLE blockmap (
    path TEXT NOT NULL, idx INTEGER NOT NULL, key INTEGER NOT NULL,
    PRIMARY KEY (path, idx)
) WITHOUT ROWID;
CREATE INDEX blockmap_key ON blockmap (key);
"""

SCHEMA = f"""
CREATE TABLE local (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, perms INTEGER NOT NULL, hash TEXT NOT NULL,
    deleted INTEGER NOT NULL, version TEXT NOT NULL, modified_by TEXT NOT NULL,
    sequence INTEGER NOT NULL, blocks BLOB NOT NULL DEFAULT x''
);
CREATE INDEX local_sequence ON local (sequence);
CREATE INDEX local_hash ON local (substr(hash, 1, {HASH_KEY}))
    WHERE deleted = 0 AND kind = '{FILE}';
CREATE TABLE remote (
    peer TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, perms INTEGER NOT NULL,
    hash TEXT NOT NULL, deleted INTEGER NOT NULL, version TEXT NOT NULL,
    modified_by TEXT NOT NULL, sequence INTEGER NOT NULL, blocks BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (peer, path)
) WITHOUT ROWID;
CREATE INDEX remote_path ON remote (path);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
{BLOCKMAP}
PRAGMA user_version = {SCHEMA_VERSION};
"""

#: From schema 1 (before block lists): the new columns and the block map.
#: Entries written before keep no list (their files travel as one stream
#: until they change).
MIGRATE_1 = """
ALTER TABLE local ADD COLUMN blocks BLOB NOT NULL DEFAULT x'';
ALTER TABLE remote ADD COLUMN blocks BLOB NOT NULL DEFAULT x'';
""" + BLOCKMAP + f"PRAGMA user_version = {SCHEMA_VERSION};"
