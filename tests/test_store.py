"""
Tests for L{p2ptwisted.store}: L{SqliteStore} behaves as
L{p2ptwisted.core.index.MemoryStore} does, and keeps what it holds across a
restart.

The behaviour tests are a mixin run against both stores, so the two are
shown to agree on the same cases; a property test then runs random
sequences of writes against both and compares every read.
"""

import os
import sqlite3

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import store as store_module
from p2ptwisted.core.index import DIR, FILE, Entry, MemoryStore
from p2ptwisted.core.versions import Vector
from p2ptwisted.store import INDEX_FILE, SqliteStore, StoreError

A = "a1a1a1a1a1a1a1a1"
B = "b2b2b2b2b2b2b2b2"


def entry(path, sequence=1, kind=FILE, content_hash="h1", deleted=False, **kw):
    fields = dict(path=path, kind=kind, size=3 if kind == FILE else 0,
                  mtime_ns=1_700_000_000_123_456_789, perms=0o644,
                  hash=content_hash if kind == FILE else "", deleted=deleted,
                  version=Vector({A: 1_700_000_000}), modified_by=A, sequence=sequence)
    fields.update(kw)
    return Entry(**fields)


def by_path(entries):
    return sorted(entries, key=lambda e: e.path)


class StoreBehaviour:
    """
    What every L{IndexStore} does; mixed into one test case per store.
    """

    def make_store(self):
        raise NotImplementedError

    def setUp(self):
        self.store = self.make_store()

    def test_get_missing(self):
        self.assertIsNone(self.store.get("nothing"))

    def test_round_trip(self):
        """
        Every field comes back as it went in, at the edges of its range.
        """
        odd = Entry(path="d/\u00e9t\u00e9 \U0001f600.txt", kind=FILE, size=2**63 - 1,
                    mtime_ns=-(2**63), perms=0o7777, hash="f" * 64, deleted=False,
                    version=Vector({A: 2**53 - 1, B: 1, 'x:"y",z': 7}),
                    modified_by=B, sequence=2**62)
        tomb = entry("gone", 3, deleted=True, content_hash="", size=0, mtime_ns=2**63 - 1)
        folder = entry("d", 4, kind=DIR, perms=0o755)
        self.store.put([odd, tomb, folder])
        self.assertEqual(self.store.get(odd.path), odd)
        self.assertEqual(self.store.get("gone"), tomb)
        self.assertIs(self.store.get("gone").deleted, True)
        self.assertEqual(self.store.get("d"), folder)

    def test_put_replaces_by_path(self):
        first = entry("a", 1, content_hash="h1")
        second = entry("a", 2, content_hash="h2", version=Vector({A: 1, B: 5}))
        self.store.put([first])
        self.store.put([second])
        self.assertEqual(self.store.get("a"), second)
        self.assertEqual(self.store.since(0, 10), [second])

    def test_put_last_in_batch_wins(self):
        self.store.put([entry("a", 1), entry("a", 2, content_hash="h2")])
        self.assertEqual(self.store.get("a").hash, "h2")

    def test_block_lists_and_where_blocks_are(self):
        """
        A file's block list round-trips; C{with_block} finds every live
        file and block index holding a digest, and forgets replaced and
        deleted versions.
        """
        one, two, three = (bytes([n]) * 32 for n in (1, 2, 3))
        big = entry("big", 1, size=3 * 128 * 1024 + 1, blocks=one + two + three + one)
        other = entry("other", 2, size=2 * 128 * 1024, blocks=three + two)
        self.store.put([big, other])
        self.assertEqual(self.store.get("big").blocks, big.blocks)
        self.assertEqual(sorted((e.path, i) for e, i in self.store.with_block(one)),
                         [("big", 0), ("big", 3)])
        self.assertEqual(sorted((e.path, i) for e, i in self.store.with_block(two)),
                         [("big", 1), ("other", 1)])
        self.assertEqual(self.store.with_block(b"\x09" * 32), [])
        self.store.put([entry("big", 3, size=2 * 128 * 1024 + 1, blocks=two + two + two)])
        self.assertEqual(self.store.with_block(one), [])
        self.store.put([entry("other", 4, deleted=True, content_hash="", size=0)])
        self.assertEqual(sorted((e.path, i) for e, i in self.store.with_block(three)), [])
        self.assertEqual(len(self.store.with_block(two, limit=2)), 2)
        self.store.remote_put(B, [big])
        self.assertEqual(self.store.remote_for("big")[B].blocks, big.blocks)

    def test_since_orders_by_sequence(self):
        e5, e1, e3 = entry("x", 5), entry("y", 1), entry("z", 3)
        self.store.put([e5, e1, e3])
        self.assertEqual(self.store.since(0, 10), [e1, e3, e5])
        self.assertEqual(self.store.since(1, 10), [e3, e5])
        self.assertEqual(self.store.since(2, 10), [e3, e5])
        self.assertEqual(self.store.since(5, 10), [])

    def test_since_limit(self):
        entries = [entry(f"p{i}", i) for i in range(1, 8)]
        self.store.put(reversed(entries))
        self.assertEqual(self.store.since(0, 3), entries[:3])
        self.assertEqual(self.store.since(3, 3), entries[3:6])
        self.assertEqual(self.store.since(6, 3), entries[6:])
        self.assertEqual(self.store.since(0, 0), [])

    def test_since_forgets_replaced_sequence(self):
        self.store.put([entry("a", 1), entry("b", 2)])
        newer = entry("a", 3, content_hash="h2")
        self.store.put([newer])
        self.assertEqual([e.sequence for e in self.store.since(0, 10)], [2, 3])
        self.assertEqual(self.store.since(2, 10), [newer])

    def test_with_hash_live_files_only(self):
        keep = [entry("one", 1, content_hash="H"), entry("two", 2, content_hash="H")]
        self.store.put(keep + [
            entry("tomb", 3, content_hash="H", deleted=True),
            entry("dir", 4, kind=DIR, hash="H"),
            entry("other", 5, content_hash="G"),
        ])
        self.assertEqual(by_path(self.store.with_hash("H")), by_path(keep))
        self.assertEqual(self.store.with_hash("nope"), [])
        # A file that becomes a tombstone leaves.
        self.store.put([attrs.evolve(keep[0], deleted=True, sequence=6)])
        self.assertEqual(self.store.with_hash("H"), [keep[1]])

    def test_live_under_boundaries(self):
        self.store.put([entry("a", 1, kind=DIR), entry("ab/c", 2), entry("a0", 3),
                        entry("a.txt", 4), entry("a\U0001f600/x", 5), entry("a-/y", 6)])
        self.assertFalse(bool(self.store.live_under("a", 1)))
        self.store.put([entry("a/b", 7, deleted=True)])
        self.assertFalse(bool(self.store.live_under("a", 1)))
        self.store.put([entry("a/b/c", 8)])
        self.assertTrue(bool(self.store.live_under("a", 1)))
        self.assertTrue(bool(self.store.live_under("a/b", 1)))
        self.assertFalse(bool(self.store.live_under("a/b/c", 1)))
        self.assertFalse(bool(self.store.live_under("b", 1)))
        self.assertFalse(bool(self.store.live_under("ab/c", 1)))

    def test_live_under_lists_live_entries_in_order_up_to_limit(self):
        self.store.put([entry("a", 1, kind=DIR), entry("a/z", 2), entry("a/b/c", 3),
                        entry("a/gone", 4, deleted=True), entry("ab", 5), entry("a0", 6)])
        self.assertEqual([e.path for e in self.store.live_under("a", 10)], ["a/b/c", "a/z"])
        self.assertEqual([e.path for e in self.store.live_under("a", 1)], ["a/b/c"])
        self.assertEqual(self.store.live_under("a/z", 10), [])

    def test_live_under_non_ascii(self):
        """
        Names beyond ASCII (several UTF-8 bytes) are still under their
        directory, and a directory with such a name has its own children.
        """
        self.store.put([entry("a/\U0001f600", 1)])
        self.assertTrue(bool(self.store.live_under("a", 1)))
        self.store.put([entry("\u00e9/x", 2)])
        self.assertTrue(bool(self.store.live_under("\u00e9", 1)))
        self.assertFalse(bool(self.store.live_under("e", 1)))

    def test_put_writes_meta_with_the_entries(self):
        self.store.put([entry("a", 5)], {"sequence": "5"})
        self.assertEqual((self.store.get("a"), self.store.meta("sequence")), (entry("a", 5), "5"))

    def test_meta(self):
        self.assertIsNone(self.store.meta("index_id"))
        self.store.set_meta("index_id", "abc")
        self.store.set_meta("sequence", "1")
        self.store.set_meta("index_id", "def")
        self.assertEqual(self.store.meta("index_id"), "def")
        self.assertEqual(self.store.meta("sequence"), "1")

    def test_remote_paths(self):
        self.store.remote_put("P1", [entry("b", 1), entry("a", 2)])
        self.store.remote_put("P2", [entry("c", 3)])
        self.assertEqual(self.store.remote_paths("P1"), ["a", "b"])
        self.assertEqual(self.store.remote_paths("P3"), [])

    def test_remote(self):
        a1, b1, a2 = entry("a", 10), entry("b", 11), entry("a", 3, content_hash="h2")
        self.assertEqual(self.store.remote_for("a"), {})
        self.store.remote_put("P1", [a1, b1])
        self.store.remote_put("P2", [a2])
        self.assertEqual(self.store.remote_for("a"), {"P1": a1, "P2": a2})
        self.assertEqual(self.store.remote_for("b"), {"P1": b1})
        newer = entry("a", 12, deleted=True, content_hash="")
        self.store.remote_put("P1", [newer])
        self.assertEqual(self.store.remote_for("a"), {"P1": newer, "P2": a2})
        self.store.remote_drop("P1")
        self.assertEqual(self.store.remote_for("a"), {"P2": a2})
        self.assertEqual(self.store.remote_for("b"), {})
        self.store.remote_drop("never-seen")

    def test_remote_apart_from_local(self):
        self.store.remote_put("P1", [entry("a", 10)])
        self.assertIsNone(self.store.get("a"))
        self.assertEqual(self.store.since(0, 10), [])
        self.assertEqual(self.store.with_hash("h1"), [])
        self.assertFalse(bool(self.store.live_under("", 1)))

    def test_paths_union_sorted(self):
        self.store.put([entry("d", 1), entry("b", 2, deleted=True)])
        self.store.remote_put("P1", [entry("a", 1), entry("d", 2)])
        self.store.remote_put("P2", [entry("e", 1), entry("c", 2), entry("d", 3)])
        self.assertEqual(list(self.store.paths()), ["a", "b", "c", "d", "e"])
        self.assertEqual(list(self.store.local_paths()), ["b", "d"])
        self.store.remote_drop("P2")
        self.assertEqual(list(self.store.paths()), ["a", "b", "d"])

    def test_paths_across_chunks(self):
        """
        Paths read in chunks come out once each, in order, whatever the
        chunk boundaries.
        """
        self.patch(store_module, "CHUNK", 2)
        local = [f"l{i}" for i in range(7)] + ["m", "n", "o"]
        remote = ["a", "m", "n", "o", "z", "l3", "l4"]
        self.store.put([entry(p, i + 1) for i, p in enumerate(local)])
        self.store.remote_put("P1", [entry(p, 1) for p in remote])
        self.assertEqual(list(self.store.paths()), sorted(set(local) | set(remote)))
        self.assertEqual(list(self.store.local_paths()), sorted(local))

    def test_empty(self):
        self.assertEqual(list(self.store.paths()), [])
        self.assertEqual(list(self.store.local_paths()), [])
        self.assertEqual(self.store.since(0, 10), [])


class MemoryStoreTests(StoreBehaviour, SynchronousTestCase):
    def make_store(self):
        return MemoryStore()


class SqliteStoreTests(StoreBehaviour, SynchronousTestCase):
    def make_store(self):
        self.path = self.mktemp()
        store = SqliteStore(self.path)
        self.addCleanup(store.close)
        return store

    def reopen(self):
        self.store.close()
        self.store = SqliteStore(self.path)
        self.addCleanup(self.store.close)
        return self.store

    def test_needed(self):
        """
        What fetching paths will bring: files a peer holds with content we
        do not have there (at the largest peer's size), not those we hold
        the same, nor deletions or directories, nor paths no peer has.
        """
        self.store.put([entry("same", 1, content_hash="h1"), entry("old", 2, content_hash="h1"),
                        entry("gone", 3, content_hash="h1", deleted=True)])
        self.store.remote_put(B, [entry("same", 1, content_hash="h1", size=10),
                                  entry("old", 2, content_hash="h2", size=20),
                                  entry("gone", 3, content_hash="h3", size=30),
                                  entry("new", 4, content_hash="h4", size=40),
                                  entry("dead", 5, content_hash="h5", deleted=True),
                                  entry("dir", 6, kind=DIR)])
        self.store.remote_put("c3c3", [entry("new", 1, content_hash="h6", size=45)])
        paths = ["same", "old", "gone", "new", "dead", "dir", "nobody"]
        self.assertEqual(self.store.needed(paths), (3, 20 + 30 + 45))
        self.patch(store_module, "NEED_CHUNK", 2)  # the same, a few paths per query
        self.assertEqual(self.store.needed(paths), (3, 20 + 30 + 45))
        self.assertEqual(self.store.needed([]), (0, 0))

    def test_settings(self):
        db = self.store._db
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA synchronous").fetchone()[0], 1)
        self.assertEqual(db.execute("PRAGMA cache_size").fetchone()[0],
                         -store_module.CACHE_KIB)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0],
                         store_module.SCHEMA_VERSION)

    def test_no_scans(self):
        """
        Every read searches an index, never scans a table or a whole index,
        so its cost does not grow with the index.
        """
        self.store.put([entry("a/b", 1)])
        self.store.remote_put("P1", [entry("a/b", 1)])
        statements = []
        db = self.store._db
        db.set_trace_callback(statements.append)
        self.store.get("a/b")
        self.store.since(0, 10)
        self.store.with_hash("h1")
        self.store.live_under("a", 1)
        self.store.meta("index_id")
        self.store.remote_for("a/b")
        list(self.store.paths())
        list(self.store.local_paths())
        self.store.remote_drop("P1")
        db.set_trace_callback(None)
        reads = [s for s in statements if s.startswith(("SELECT", "DELETE"))]
        self.assertEqual(len(reads), 9)
        for sql in reads:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            self.assertFalse([step for step in plan if step.startswith("SCAN")],
                             f"{sql}: {plan}")

    def test_survives_reopen(self):
        local = [entry("a", 1), entry("b/c", 2, version=Vector({A: 3, B: 4}))]
        self.store.put(local)
        self.store.remote_put("P1", [entry("z", 9)])
        self.store.set_meta("index_id", "0123456789abcdef")
        store = self.reopen()
        self.assertEqual(store.since(0, 10), local)
        self.assertEqual(store.remote_for("z"), {"P1": entry("z", 9)})
        self.assertEqual(store.meta("index_id"), "0123456789abcdef")
        self.assertEqual(list(store.paths()), ["a", "b/c", "z"])

    def test_open_state_dir(self):
        state = self.mktemp()
        os.mkdir(state)
        store = SqliteStore.open(state)
        store.put([entry("a", 1)])
        store.close()
        self.assertTrue(os.path.isfile(os.path.join(state, INDEX_FILE)))
        store = SqliteStore.open(state)
        self.addCleanup(store.close)
        self.assertEqual(store.get("a"), entry("a", 1))

    def test_in_memory(self):
        store = SqliteStore(":memory:")
        self.addCleanup(store.close)
        store.put([entry("a", 1)])
        self.assertEqual(store.since(0, 1), [entry("a", 1)])

    def assertStoreError(self, path, *words):
        error = self.assertRaises(StoreError, SqliteStore, path)
        message = str(error)
        self.assertNotIn("\n", message)
        for word in (path,) + words:
            self.assertIn(word, message)
        return message

    def test_corrupt_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not an index\x00\xff" * 500)
        self.assertStoreError(path, "not a database")

    def test_other_database(self):
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE photos (name TEXT)")
        db.commit()
        db.close()
        self.assertStoreError(path, "not a node index")

    def test_schema_1_is_migrated(self):
        """
        An index written before block lists opens: its entries keep no
        list, and new ones keep theirs.
        """
        old = entry("old", 1)
        self.store.put([old])
        self.store.close()
        db = sqlite3.connect(self.path)
        db.execute("DROP TABLE blockmap")
        db.execute("ALTER TABLE local DROP COLUMN blocks")
        db.execute("ALTER TABLE remote DROP COLUMN blocks")
        db.execute("PRAGMA user_version = 1")
        db.commit()
        db.close()
        store = self.reopen()
        self.assertEqual(store.get("old"), old)
        self.assertEqual(store.get("old").blocks, b"")
        new = entry("new", 2, size=2 * 128 * 1024, blocks=b"\x05" * 64)
        store.put([new])
        self.assertEqual(self.reopen().get("new").blocks, new.blocks)
        self.assertEqual([e.path for e, _ in self.store.with_block(b"\x05" * 32)],
                         ["new", "new"])

    def test_unknown_schema_version(self):
        self.store.close()
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA user_version = 99")
        db.close()
        self.assertStoreError(self.path, "schema version 99")

    def test_cannot_create(self):
        self.assertStoreError(os.path.join(self.mktemp(), "missing", "index"),
                              "cannot open index")

    def test_put_is_one_transaction(self):
        """
        A batch that fails part way stores none of it, and the store goes on
        working.
        """
        def batch():
            yield entry("a", 1)
            raise ValueError("scanner failed")

        self.assertRaises(ValueError, self.store.put, batch())
        self.assertIsNone(self.store.get("a"))
        self.assertRaises(ValueError, self.store.remote_put, "P1", batch())
        self.assertEqual(self.store.remote_for("a"), {})
        self.store.put([entry("b", 2)])
        self.assertEqual(self.reopen().since(0, 10), [entry("b", 2)])

    def test_write_error_is_store_error(self):
        """
        A value SQLite cannot hold is a L{StoreError}, and rolls the batch
        back.
        """
        error = self.assertRaises(StoreError, self.store.put,
                                  [entry("a", 1), entry("b", 2, size=2**64)], {"sequence": "2"})
        self.assertIn(self.path, str(error))
        self.assertIsNone(self.store.get("a"))
        self.assertIsNone(self.store.meta("sequence"))  # the counter went back with them
        self.store.put([entry("c", 3)])
        self.assertEqual(self.store.since(0, 10), [entry("c", 3)])


PATHS = ["a", "a/b", "a/b/c", "ab/c", "a0", "a.txt", "a/\U0001f600", "b", "\u00e9/x"]
HASHES = ["", "h1", "h2"]
PEERS = ["P1", "P2", "P3"]

entries = st.builds(
    Entry,
    path=st.sampled_from(PATHS),
    kind=st.sampled_from([FILE, DIR]),
    size=st.integers(0, 2**63 - 1),
    mtime_ns=st.integers(-(2**63), 2**63 - 1),
    perms=st.integers(0, 0o777),
    hash=st.sampled_from(HASHES),
    deleted=st.booleans(),
    version=st.builds(Vector, st.dictionaries(
        st.one_of(st.sampled_from([A, B]), st.text(max_size=8)),
        st.integers(1, 2**53 - 1), max_size=3)),
    modified_by=st.sampled_from([A, B]),
    sequence=st.integers(0, 2**40),
)

operations = st.lists(
    st.tuples(st.sampled_from(["put", "remote_put", "remote_drop"]),
              st.sampled_from(PEERS), st.lists(entries, max_size=6)),
    max_size=10)


class AgreementTests(SynchronousTestCase):
    """
    Random writes leave L{SqliteStore} answering every read as
    L{MemoryStore} does.
    """

    def assertAgree(self, memory, sqlite, top):
        for path in PATHS + ["missing"]:
            self.assertEqual(sqlite.get(path), memory.get(path))
            self.assertEqual(sqlite.remote_for(path), memory.remote_for(path))
            self.assertEqual(bool(sqlite.live_under(path, 1)), bool(memory.live_under(path, 1)))
        for sequence in range(top + 1):
            for limit in (1, 2, 100):
                self.assertEqual(sqlite.since(sequence, limit), memory.since(sequence, limit))
        for content_hash in HASHES:
            self.assertEqual(by_path(sqlite.with_hash(content_hash)),
                             by_path(memory.with_hash(content_hash)))
        self.assertEqual(list(sqlite.paths()), list(memory.paths()))
        self.assertEqual(list(sqlite.local_paths()), list(memory.local_paths()))

    @settings(max_examples=300, deadline=None)
    @given(operations)
    def test_agree(self, ops):
        memory, sqlite = MemoryStore(), SqliteStore(":memory:")
        self.addCleanup(sqlite.close)
        sequence = 0
        for name, peer, batch in ops:
            if name == "put":
                # Sequences only grow, as L{LocalIndex} gives them.
                numbered = []
                for e in batch:
                    sequence += 1
                    numbered.append(attrs.evolve(e, sequence=sequence))
                memory.put(numbered)
                sqlite.put(iter(numbered))
            elif name == "remote_put":
                memory.remote_put(peer, batch)
                sqlite.remote_put(peer, iter(batch))
            else:
                memory.remote_drop(peer)
                sqlite.remote_drop(peer)
            self.assertAgree(memory, sqlite, sequence)


class ReaderTests(SynchronousTestCase):
    """
    The scanner reads the index from a thread through a second connection.
    """

    def test_reader_in_another_thread_sees_commits_and_cannot_write(self):
        import threading

        store = SqliteStore(os.path.join(self.mktemp() + "-index.sqlite3"))
        self.addCleanup(store.close)
        store.put([entry("a", 1)])
        reader = store.reader()
        self.addCleanup(reader.close)
        seen = []

        def read():
            seen.append(reader.get("a"))
            seen.append(list(reader.local_paths()))
            try:
                reader.put([entry("b", 2)])
            except Exception as e:
                seen.append(type(e).__name__)
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
        self.assertEqual(seen[:2], [entry("a", 1), ["a"]])
        self.assertIn(seen[2], ("StoreError", "OperationalError"))
        store.put([entry("c", 3)])
        self.assertEqual(list(reader.local_paths()), ["a", "c"])

    def test_memory_store_reads_itself(self):
        store = SqliteStore(":memory:")
        self.assertIs(store.reader(), store)
