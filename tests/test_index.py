"""
Tests for L{p2ptwisted.core.index}: how entries compare, when a scan
result is already what the index says, and how L{LocalIndex} numbers,
versions and saves a node's own changes (including after a crash between
saving entries and saving the counter).

The store's own contract (L{MemoryStore} and L{p2ptwisted.store.SqliteStore}
alike) is in L{tests.test_store}; here a store is only the place a
L{LocalIndex} keeps things.

The classes at the end (C{...EdgeTests}) came out of mutation testing of
L{p2ptwisted.core}: each pins a behaviour of L{p2ptwisted.core.versions},
L{p2ptwisted.core.planner} or L{MemoryStore} that no other test checked.
Several use equal values that are not the same object (L{fresh}): kinds,
hashes and modes decoded from the wire or a config file are new string
objects, so the code must compare them with C{==}, never C{is}.
"""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.index import (
    DIR, FILE, PERM_MASK, Entry, LocalIndex, MemoryStore, Observed, new_index_id)
from p2ptwisted.core.planner import (
    ADOPT, DELETE, FETCH, MKDIR, MOVE, RECEIVE_ONLY, SEND_ONLY, SET_META, Action,
    conflict_name, heads, pair_renames, plan, rank, sources, target)
from p2ptwisted.core.versions import (
    MAX_AHEAD, MAX_COUNTER, MAX_COUNTERS, Order, Vector, VersionError, check_counters)

NOW = 1_800_000_000
ME = "a" * 16
PEER = "b" * 16


def entry(path="f.txt", *, kind=FILE, size=5, mtime_ns=10, perms=0o644, hash="h1",
          deleted=False, version=None, by=ME, sequence=0):
    return Entry(path=path, kind=kind, size=size, mtime_ns=mtime_ns, perms=perms, hash=hash,
                 deleted=deleted, version=Vector(version or {by: 1}), modified_by=by,
                 sequence=sequence)


def fresh(value):
    """
    A value equal to C{value} but not the same object (as one decoded from
    the wire would be).
    """
    copy = "".join(list(value)) if isinstance(value, str) else int(str(value))
    assert copy == value and copy is not value
    return copy


def seen(path="f.txt", *, kind=FILE, size=5, mtime_ns=10, perms=0o644, hash="h1"):
    return Observed(path=path, kind=kind, size=size, mtime_ns=mtime_ns, perms=perms, hash=hash)


class CountingStore(MemoryStore):
    """
    A L{MemoryStore} that records each call to C{put} (one call is one
    transaction on a real store).
    """

    def __init__(self):
        super().__init__()
        self.puts = []

    def put(self, entries, meta=None):
        entries = list(entries)
        self.puts.append(entries)
        super().put(entries, meta)


class SameContentTests(SynchronousTestCase):
    def test_both_deleted(self):
        a = entry(deleted=True, hash="", size=0)
        b = entry(deleted=True, hash="", size=0, kind=DIR, perms=0o700, mtime_ns=99)
        self.assertTrue(a.same_content(b))
        self.assertTrue(b.same_content(a))

    def test_one_deleted(self):
        live, gone = entry(), entry(deleted=True)
        self.assertFalse(live.same_content(gone))
        self.assertFalse(gone.same_content(live))

    def test_files_compare_by_hash_only(self):
        self.assertTrue(entry(hash="x", mtime_ns=1, perms=0o600, size=1).same_content(
            entry(hash="x", mtime_ns=2, perms=0o755, size=2)))
        self.assertFalse(entry(hash="x").same_content(entry(hash="y")))

    def test_directories_always_same(self):
        a = entry(kind=DIR, hash="", size=0, perms=0o700, mtime_ns=1)
        b = entry(kind=DIR, hash="", size=0, perms=0o755, mtime_ns=2)
        self.assertTrue(a.same_content(b))
        # Even a (malformed) hash on a directory is ignored.
        self.assertTrue(a.same_content(attrs.evolve(b, hash="junk")))

    def test_file_and_directory_differ(self):
        f = entry(hash="")
        d = entry(kind=DIR, hash="", size=0)
        self.assertFalse(f.same_content(d))
        self.assertFalse(d.same_content(f))

    def test_live(self):
        self.assertIs(entry().live, True)
        self.assertIs(entry(deleted=True).live, False)

    def test_equal_values_not_identity(self):
        self.assertTrue(entry(kind=fresh(FILE), hash=fresh("h1x")).same_content(
            entry(hash="h1x")))
        d = entry(kind=DIR, hash="", size=0)
        self.assertTrue(attrs.evolve(d, kind=fresh(DIR)).same_content(
            attrs.evolve(d, hash="junk")))


class SameMetaTests(SynchronousTestCase):
    def test_deleted_always_same(self):
        gone = entry(deleted=True, perms=0o600, mtime_ns=1)
        self.assertTrue(gone.same_meta(entry(perms=0o755, mtime_ns=2)))

    def test_file_perms_and_mtime(self):
        base = entry(perms=0o644, mtime_ns=10)
        self.assertTrue(base.same_meta(entry(perms=0o644, mtime_ns=10, hash="other", size=9)))
        self.assertFalse(base.same_meta(entry(perms=0o755, mtime_ns=10)))
        self.assertFalse(base.same_meta(entry(perms=0o644, mtime_ns=11)))

    def test_directory_perms_only(self):
        d = entry(kind=DIR, hash="", size=0, perms=0o755, mtime_ns=10)
        self.assertTrue(d.same_meta(attrs.evolve(d, mtime_ns=99)))
        self.assertFalse(d.same_meta(attrs.evolve(d, perms=0o700)))

    def test_either_side_larger(self):
        d = entry(kind=DIR, hash="", size=0, perms=0o700)
        self.assertFalse(d.same_meta(attrs.evolve(d, perms=0o755)))
        f = entry(perms=0o755, mtime_ns=11)
        self.assertFalse(f.same_meta(entry(perms=0o644, mtime_ns=11)))
        self.assertFalse(f.same_meta(entry(perms=0o755, mtime_ns=10)))

    def test_equal_values_not_identity(self):
        d = entry(kind=fresh(DIR), hash="", size=0, perms=0o755, mtime_ns=10)
        self.assertTrue(d.same_meta(attrs.evolve(d, kind=DIR, mtime_ns=99)))
        self.assertTrue(attrs.evolve(d, kind=DIR).same_meta(
            attrs.evolve(d, kind=DIR, perms=fresh(0o755))))
        f = entry(perms=0o755, mtime_ns=10**18)
        self.assertTrue(f.same_meta(entry(perms=fresh(0o755), mtime_ns=fresh(10**18))))


class ObservedMatchesTests(SynchronousTestCase):
    def test_nothing_indexed(self):
        self.assertFalse(seen().matches(None))

    def test_file_exact(self):
        self.assertTrue(seen().matches(entry()))

    def test_file_each_field_counts(self):
        base = entry()
        for field, value in [("size", 6), ("mtime_ns", 11), ("perms", 0o600), ("hash", "h2")]:
            self.assertFalse(seen(**{field: value}).matches(base), field)

    def test_version_and_sequence_ignored(self):
        self.assertTrue(seen().matches(entry(version={PEER: 7}, by=PEER, sequence=9)))

    def test_tombstone_never_matches(self):
        gone = entry(deleted=True)
        self.assertFalse(seen().matches(gone))
        self.assertFalse(seen(kind=DIR).matches(attrs.evolve(gone, kind=DIR)))

    def test_kind_differs(self):
        self.assertFalse(seen(kind=DIR, size=0, hash="").matches(
            entry(size=0, hash="")))
        self.assertFalse(seen(size=0, hash="").matches(entry(kind=DIR, size=0, hash="")))

    def test_directory_perms_only(self):
        d = entry(kind=DIR, size=0, hash="", perms=0o755, mtime_ns=10)
        self.assertTrue(seen(kind=DIR, size=4096, mtime_ns=99, perms=0o755, hash="x").matches(d))
        self.assertFalse(seen(kind=DIR, size=0, mtime_ns=10, perms=0o700, hash="").matches(d))
        self.assertFalse(seen(kind=DIR, size=0, mtime_ns=10, perms=0o777, hash="").matches(
            attrs.evolve(d, perms=0o700)))

    def test_equal_values_not_identity(self):
        self.assertTrue(seen(kind=fresh(FILE), hash=fresh("h1x")).matches(entry(hash="h1x")))
        d = entry(kind=DIR, size=0, hash="", perms=0o755)
        self.assertTrue(seen(kind=fresh(DIR), size=0, hash="", perms=0o755,
                             mtime_ns=99).matches(d))


class IndexIdTests(SynchronousTestCase):
    def test_new_index_takes_given_id(self):
        store = MemoryStore()
        index = LocalIndex(store, ME, index_id="feedfacefeedface")
        self.assertEqual(index.index_id, "feedfacefeedface")
        self.assertEqual(store.meta("index_id"), "feedfacefeedface")
        self.assertEqual(store.meta("sequence"), "0")
        self.assertEqual(index.sequence, 0)
        self.assertEqual(index.me, ME)

    def test_random_id(self):
        ids = {LocalIndex(MemoryStore(), ME).index_id for _ in range(3)} | {new_index_id()}
        self.assertEqual(len(ids), 4)
        for i in ids:
            self.assertEqual(len(i), 16)
            int(i, 16)

    def test_stored_id_wins(self):
        store = MemoryStore()
        first = LocalIndex(store, ME, index_id="1111111111111111")
        again = LocalIndex(store, ME, index_id="2222222222222222")
        self.assertEqual(again.index_id, first.index_id)
        self.assertEqual(store.meta("index_id"), "1111111111111111")


class LocalChangeTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.index = LocalIndex(self.store, ME, index_id="0" * 16)

    def test_new_file(self):
        made = self.index.local_change(seen(size=7, mtime_ns=123, hash="hh"), NOW)
        self.assertEqual(made, Entry(path="f.txt", kind=FILE, size=7, mtime_ns=123,
                                     perms=0o644, hash="hh", deleted=False,
                                     version=Vector({ME: NOW}), modified_by=ME, sequence=1))
        self.assertEqual(self.index.get("f.txt"), made)
        self.assertEqual(self.store.get("f.txt"), made)
        self.assertEqual(self.store.meta("sequence"), "1")
        self.assertEqual(self.index.sequence, 1)

    def test_unchanged_is_none(self):
        first = self.index.local_change(seen(), NOW)
        self.assertIsNone(self.index.local_change(seen(), NOW + 10))
        self.assertEqual(self.index.sequence, 1)
        self.assertEqual(self.store.get("f.txt"), first)
        self.assertEqual(self.store.meta("sequence"), "1")

    def test_change_bumps_own_counter_to_now(self):
        self.index.local_change(seen(), NOW)
        made = self.index.local_change(seen(hash="h2"), NOW + 50)
        self.assertEqual(made.version, Vector({ME: NOW + 50}))
        self.assertEqual(made.sequence, 2)

    def test_change_bumps_by_one_when_clock_is_behind(self):
        self.index.local_change(seen(), NOW)
        made = self.index.local_change(seen(hash="h2"), NOW - 100)
        self.assertEqual(made.version, Vector({ME: NOW + 1}))

    def test_change_keeps_other_counters(self):
        self.index.adopt(entry(version={PEER: 5}, by=PEER))
        made = self.index.local_change(seen(hash="mine"), NOW)
        self.assertEqual(made.version, Vector({PEER: 5, ME: NOW}))
        self.assertEqual(made.modified_by, ME)
        self.assertTrue(made.version.dominates(Vector({PEER: 5})))

    def test_each_field_is_a_change(self):
        self.index.local_change(seen(), NOW)
        for i, changed in enumerate([seen(size=6), seen(size=6, mtime_ns=11),
                                     seen(size=6, mtime_ns=11, perms=0o600),
                                     seen(size=6, mtime_ns=11, perms=0o600, hash="h2")]):
            made = self.index.local_change(changed, NOW)
            self.assertIsNotNone(made)
            self.assertEqual(made.sequence, i + 2)

    def test_sequence_one_per_change_across_paths(self):
        made = [self.index.local_change(seen(p), NOW) for p in ("a", "b", "c")]
        self.assertEqual([e.sequence for e in made], [1, 2, 3])
        self.assertEqual(self.store.meta("sequence"), "3")

    def test_perms_masked(self):
        made = self.index.local_change(seen(perms=0o104755), NOW)
        self.assertEqual(made.perms, 0o755)
        self.assertEqual(PERM_MASK, 0o777)
        setuid = self.index.local_change(seen("g", perms=0o4711), NOW)
        self.assertEqual(setuid.perms, 0o711)

    def test_directory_has_no_size_or_hash(self):
        made = self.index.local_change(seen("d", kind=DIR, size=4096, hash="junk",
                                            perms=0o2775, mtime_ns=5), NOW)
        self.assertEqual((made.kind, made.size, made.hash, made.perms, made.mtime_ns),
                         (DIR, 0, "", 0o775, 5))
        self.assertFalse(made.deleted)

    def test_directory_mtime_alone_is_no_change(self):
        self.index.local_change(seen("d", kind=DIR, size=0, hash=""), NOW)
        self.assertIsNone(self.index.local_change(
            seen("d", kind=DIR, size=4096, hash="", mtime_ns=999), NOW))

    def test_file_kind_from_elsewhere(self):
        """
        A scan result whose kind is an equal but new string is still a
        file: it keeps its size and hash.
        """
        made = self.index.local_change(seen(kind=fresh(FILE), size=7, hash="hh"), NOW)
        self.assertEqual((made.size, made.hash), (7, "hh"))


    def test_file_becomes_directory(self):
        self.index.local_change(seen("x"), NOW)
        made = self.index.local_change(seen("x", kind=DIR, size=0, hash=""), NOW + 1)
        self.assertEqual((made.kind, made.hash, made.sequence), (DIR, "", 2))
        self.assertEqual(made.version, Vector({ME: NOW + 1}))

    def test_file_back_after_delete(self):
        self.index.local_change(seen(), NOW)
        gone = self.index.local_delete("f.txt", NOW)
        back = self.index.local_change(seen(), NOW)
        self.assertFalse(back.deleted)
        self.assertTrue(back.version.dominates(gone.version))
        self.assertEqual(back.sequence, 3)

    def test_persists_across_a_new_index(self):
        for p in ("a", "b", "c"):
            self.index.local_change(seen(p), NOW)
        again = LocalIndex(self.store, ME)
        self.assertEqual(again.index_id, self.index.index_id)
        self.assertEqual(again.sequence, 3)
        self.assertIsNone(again.local_change(seen("a"), NOW))
        self.assertEqual(again.local_change(seen("d"), NOW).sequence, 4)
        self.assertEqual(self.store.meta("sequence"), "4")


class LocalDeleteTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.index = LocalIndex(self.store, ME, index_id="0" * 16)

    def test_tombstone(self):
        live = self.index.local_change(seen(size=7, mtime_ns=3, perms=0o600, hash="hh"), NOW)
        gone = self.index.local_delete("f.txt", NOW + 9)
        self.assertEqual(gone, Entry(path="f.txt", kind=FILE, size=0, mtime_ns=3, perms=0o600,
                                     hash="", deleted=True, version=Vector({ME: NOW + 9}),
                                     modified_by=ME, sequence=2))
        self.assertTrue(gone.version.dominates(live.version))
        self.assertEqual(self.store.get("f.txt"), gone)
        self.assertEqual(self.store.meta("sequence"), "2")

    def test_tombstone_of_a_peers_version(self):
        self.index.adopt(entry(version={PEER: NOW + 5}, by=PEER))
        gone = self.index.local_delete("f.txt", NOW)
        self.assertEqual(gone.version, Vector({PEER: NOW + 5, ME: NOW}))
        self.assertEqual(gone.modified_by, ME)

    def test_unknown_path(self):
        self.assertIsNone(self.index.local_delete("nothing", NOW))
        self.assertEqual(self.index.sequence, 0)
        self.assertIsNone(self.store.get("nothing"))

    def test_already_deleted(self):
        self.index.local_change(seen(), NOW)
        gone = self.index.local_delete("f.txt", NOW)
        self.assertIsNone(self.index.local_delete("f.txt", NOW + 5))
        self.assertEqual(self.index.sequence, 2)
        self.assertEqual(self.store.get("f.txt"), gone)


class AdoptAndBumpTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.index = LocalIndex(self.store, ME, index_id="0" * 16)

    def test_adopt_keeps_version_fresh_sequence(self):
        self.index.local_change(seen("first"), NOW)
        theirs = entry(version={PEER: 3}, by=PEER, sequence=42)
        adopted = self.index.adopt(theirs)
        self.assertEqual(adopted, attrs.evolve(theirs, sequence=2))
        self.assertEqual(self.store.get("f.txt"), adopted)
        self.assertEqual(self.store.meta("sequence"), "2")
        self.assertEqual(self.index.sequence, 2)

    def test_adopt_with_version(self):
        theirs = entry(version={PEER: 3}, by=PEER, sequence=42)
        adopted = self.index.adopt(theirs, Vector({PEER: 3, ME: 8}))
        self.assertEqual(adopted.version, Vector({PEER: 3, ME: 8}))
        self.assertEqual((adopted.modified_by, adopted.hash, adopted.sequence), (PEER, "h1", 1))

    def test_adopt_tombstone(self):
        gone = entry(deleted=True, hash="", size=0, version={PEER: 3}, by=PEER)
        self.assertEqual(self.index.adopt(gone).deleted, True)
        self.assertEqual(self.store.get("f.txt"), attrs.evolve(gone, sequence=1))

    def test_bump(self):
        theirs = self.index.adopt(entry(version={PEER: NOW + 10}, by=PEER, kind=DIR,
                                        hash="", size=0))
        bumped = self.index.bump("f.txt", NOW)
        self.assertEqual(bumped, attrs.evolve(theirs, version=Vector({PEER: NOW + 10, ME: NOW}),
                                              modified_by=ME, sequence=2))
        self.assertEqual(self.store.get("f.txt"), bumped)
        self.assertEqual(self.store.meta("sequence"), "2")
        again = self.index.bump("f.txt", NOW)
        self.assertEqual(again.version, Vector({PEER: NOW + 10, ME: NOW + 1}))


class BatchTests(SynchronousTestCase):
    def setUp(self):
        self.store = CountingStore()
        self.index = LocalIndex(self.store, ME, index_id="0" * 16)
        self.index.local_change(seen("old"), NOW)
        del self.store.puts[:]

    def test_one_write(self):
        with self.index.batch():
            a = self.index.local_change(seen("a"), NOW)
            b = self.index.local_change(seen("b"), NOW)
            gone = self.index.local_delete("old", NOW)
            kept = self.index.adopt(entry("c", version={PEER: 1}, by=PEER))
            self.assertEqual(self.store.puts, [])
            # Reads inside see the store as it was.
            self.assertIsNone(self.index.get("a"))
            self.assertEqual(self.store.meta("sequence"), "1")
        self.assertEqual(self.store.puts, [[a, b, gone, kept]])
        self.assertEqual([e.sequence for e in self.store.puts[0]], [2, 3, 4, 5])
        self.assertEqual(self.store.meta("sequence"), "5")
        self.assertEqual(self.index.get("a"), a)
        self.assertEqual(self.index.since(1), [a, b, gone, kept])

    def test_nested(self):
        with self.index.batch():
            a = self.index.local_change(seen("a"), NOW)
            with self.index.batch():
                b = self.index.local_change(seen("b"), NOW)
            self.assertEqual(self.store.puts, [])
            c = self.index.local_change(seen("c"), NOW)
        self.assertEqual(self.store.puts, [[a, b, c]])
        # Outside any batch again: one write per change.
        d = self.index.local_change(seen("d"), NOW)
        self.assertEqual(self.store.puts, [[a, b, c], [d]])
        self.assertEqual(self.store.meta("sequence"), "5")

    def test_empty_batch_writes_nothing(self):
        with self.index.batch():
            self.assertIsNone(self.index.local_change(seen("old"), NOW))
        self.assertEqual(self.store.puts, [])

    def test_error_inside_still_saves_what_was_numbered(self):
        """
        Sequences handed out inside a block that fails are saved, so they
        are never handed out again.
        """
        with self.assertRaises(ZeroDivisionError), self.index.batch():
            a = self.index.local_change(seen("a"), NOW)
            raise ZeroDivisionError()
        self.assertEqual(self.store.puts, [[a]])
        self.assertEqual(self.store.meta("sequence"), "2")
        self.assertEqual(self.index.local_change(seen("b"), NOW).sequence, 3)


class CrashRecoveryTests(SynchronousTestCase):
    def test_continues_above_highest_stored_sequence(self):
        store = MemoryStore()
        index = LocalIndex(store, ME, index_id="0" * 16)
        for p in ("a", "b", "c", "d", "e"):
            index.local_change(seen(p), NOW)
        # A crash after the entries were saved, before the counter was.
        store.set_meta("sequence", "2")
        again = LocalIndex(store, ME)
        self.assertEqual(again.sequence, 5)
        self.assertEqual(again.local_change(seen("f"), NOW).sequence, 6)
        self.assertEqual(store.meta("sequence"), "6")

    def test_many_entries_above_the_counter(self):
        """
        More entries past the counter than one read returns.
        """
        store = MemoryStore()
        store.set_meta("index_id", "0" * 16)
        store.set_meta("sequence", "0")
        store.put([entry(f"p{i}", sequence=i + 1) for i in range(2500)])
        self.assertEqual(LocalIndex(store, ME).sequence, 2500)

    def test_missing_counter(self):
        store = MemoryStore()
        store.set_meta("index_id", "0" * 16)
        store.put([entry("a", sequence=7)])
        index = LocalIndex(store, ME)
        self.assertEqual(index.sequence, 7)
        self.assertEqual(index.index_id, "0" * 16)

    def test_missing_counter_and_no_entries(self):
        store = MemoryStore()
        store.set_meta("index_id", "0" * 16)
        index = LocalIndex(store, ME)
        self.assertEqual(index.sequence, 0)
        self.assertEqual(index.local_change(seen(), NOW).sequence, 1)

    def test_reads_in_pages(self):
        """
        Recovery reads what lies past the counter a page at a time, not one
        entry per read.
        """
        reads = []

        class Counting(MemoryStore):
            def since(self, sequence, limit):
                reads.append(sequence)
                return super().since(sequence, limit)

        store = Counting()
        store.set_meta("index_id", "0" * 16)
        store.set_meta("sequence", "0")
        store.put([entry(f"p{i}", sequence=i + 1) for i in range(2500)])
        self.assertEqual(LocalIndex(store, ME).sequence, 2500)
        self.assertLessEqual(len(reads), 4)


class SinceTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.index = LocalIndex(self.store, ME, index_id="0" * 16)

    def test_order_and_strictly_after(self):
        a = self.index.local_change(seen("z"), NOW)
        b = self.index.local_change(seen("a"), NOW)
        c = self.index.local_change(seen("m"), NOW)
        self.assertEqual(self.index.since(0), [a, b, c])
        self.assertEqual(self.index.since(1), [b, c])
        self.assertEqual(self.index.since(3), [])

    def test_replaced_entry_moves_to_the_end(self):
        a = self.index.local_change(seen("a"), NOW)
        self.index.local_change(seen("b"), NOW)
        a2 = self.index.local_change(seen("a", hash="h2"), NOW)
        self.assertEqual([e.path for e in self.index.since(0)], ["b", "a"])
        self.assertEqual(self.index.since(2), [a2])
        self.assertNotEqual(a, a2)

    def test_limit(self):
        made = [self.index.local_change(seen(f"p{i:02}"), NOW) for i in range(5)]
        self.assertEqual(self.index.since(0, 2), made[:2])
        self.assertEqual(self.index.since(2, 2), made[2:4])

    def test_default_limit(self):
        with self.index.batch():
            for i in range(1001):
                self.index.adopt(entry(f"p{i}"))
        got = self.index.since(0)
        self.assertEqual(len(got), 1000)
        self.assertEqual(got[-1].sequence, 1000)


class MemoryStoreEdgeTests(SynchronousTestCase):
    """
    L{MemoryStore.with_hash} matches the hash exactly, by value.
    """

    def test_with_hash_exact(self):
        store = MemoryStore()
        store.put([entry("lo", hash="h1"), entry("mid", hash="h2"), entry("hi", hash="h3"),
                   entry("d", kind=DIR, hash="h2", size=0)])
        self.assertEqual([e.path for e in store.with_hash("h2")], ["mid"])
        self.assertEqual([e.path for e in store.with_hash(fresh("h2"))], ["mid"])
        store.put([entry("new", kind=fresh(FILE), hash=fresh("h2"))])
        self.assertEqual(sorted(e.path for e in store.with_hash("h2")), ["mid", "new"])


class VectorEdgeTests(SynchronousTestCase):
    """
    L{p2ptwisted.core.versions.Vector} cases the main tests leave open.
    """

    def test_str(self):
        v = Vector({"0123456789abcdef": 5, "fedcba9876543210": 7})
        self.assertEqual(str(v), "{0123456:5, fedcba9:7}")
        self.assertEqual(str(Vector()), "{}")

    def test_counter(self):
        v = Vector({"a1": 1, "c1": 3})
        self.assertEqual([v.counter(k) for k in ("a0", "a1", "b1", "c1", "d1")], [0, 1, 0, 3, 0])
        self.assertEqual(v.counter(fresh("c1")), 3)

    def test_highest(self):
        self.assertEqual(Vector().highest(), 0)
        self.assertEqual(Vector({"a": 3, "b": 9, "c": 2}).highest(), 9)

    def test_negative_counters_dropped(self):
        self.assertEqual(Vector({"a": -1, "b": 2}), Vector({"b": 2}))

    def test_first_bump_at_time_zero(self):
        self.assertEqual(Vector().bump("a", 0).as_dict(), {"a": 1})

    def test_merge_adds_counters_of_one(self):
        self.assertEqual(Vector({"a": 1}).merge(Vector({"b": 1})).as_dict(), {"a": 1, "b": 1})

    def test_compare_by_value(self):
        """
        Counters and node ids compare by value (ids decoded from the wire
        are equal strings, not the same objects).
        """
        x = Vector({"a": fresh(NOW), "b": fresh(NOW + 1)})
        y = Vector({"a": fresh(NOW), "b": fresh(NOW + 1)})
        self.assertIs(x.compare(y), Order.EQUAL)
        self.assertFalse(x.dominates(y))
        older = Vector({fresh("node-a"): 1, "node-b": 2})
        newer = Vector({"node-a": 1, "node-b": 3})
        self.assertIs(older.compare(newer), Order.LESSER)
        self.assertIs(newer.compare(older), Order.GREATER)

    def test_compare_long_vectors(self):
        """
        Vectors longer than any a peer may send still compare right (the
        bound is for what we accept, not what compare handles).
        """
        base = {f"{i:016x}": 5 for i in range(300)}
        v = Vector(base)
        more = Vector(dict(base, zzzz=1))
        bumped = Vector(dict(base, **{f"{299:016x}": 6}))
        self.assertIs(v.compare(more), Order.LESSER)
        self.assertIs(more.compare(v), Order.GREATER)
        self.assertIs(v.compare(bumped), Order.LESSER)
        self.assertIs(bumped.compare(v), Order.GREATER)
        self.assertIs(more.compare(bumped), Order.CONCURRENT)


class BoundsEdgeTests(SynchronousTestCase):
    """
    The bounds of L{check_counters}, as numbers.
    """

    def test_limits(self):
        self.assertEqual((MAX_COUNTERS, MAX_AHEAD, MAX_COUNTER), (256, 31_622_400, 2**53 - 1))

    def test_at_most_256_counters(self):
        check_counters(Vector({f"{i:016x}": 1 for i in range(256)}), NOW)
        with self.assertRaises(VersionError):
            check_counters(Vector({f"{i:016x}": 1 for i in range(257)}), NOW)

    def test_a_leap_year_ahead(self):
        check_counters(Vector({"a": NOW + 366 * 86400}), NOW)
        with self.assertRaises(VersionError):
            check_counters(Vector({"a": NOW + 366 * 86400 + 1}), NOW)

    def test_json_safe_whatever_the_clock(self):
        check_counters(Vector({"a": 2**53 - 1}), 2**60)
        with self.assertRaises(VersionError):
            check_counters(Vector({"a": 2**53}), 2**60)


def pentry(path="f.txt", version=None, *, kind=FILE, hash="h1", mtime=10, deleted=False, by=ME,
           perms=0o644):
    """
    An entry as the planner tests build them: mtime in whole seconds.
    """
    return entry(path, kind=kind, size=0 if kind == DIR or deleted else 5,
                 mtime_ns=mtime * 10**9, perms=perms,
                 hash="" if kind == DIR or deleted else hash, deleted=deleted,
                 version=version or {by: 1}, by=by)


class ConflictNameEdgeTests(SynchronousTestCase):
    """
    L{conflict_name} at the 255-byte limit of a name.
    """

    loser = pentry(mtime=1_767_225_600, by="0123456789abcdef")  # 2026-01-01 00:00:00 UTC
    suffix = ".sync-conflict-20260101-000000-0123456"

    def test_long_stem_cut_to_exactly_255(self):
        name = conflict_name("d/" + "x" * 300 + ".txt", self.loser)
        self.assertEqual(name, "d/" + "x" * (255 - len(self.suffix) - 4) + self.suffix + ".txt")
        self.assertEqual(len(name) - 2, 255)

    def test_one_byte_of_stem_left(self):
        ext = "e" * (255 - len(self.suffix) - 2)
        self.assertEqual(conflict_name("abc." + ext, self.loser), "a" + self.suffix + "." + ext)

    def test_no_room_for_the_stem_drops_the_extension(self):
        ext = "e" * (255 - len(self.suffix) - 1)
        self.assertEqual(conflict_name("abc." + ext, self.loser), "abc" + self.suffix)
        name = conflict_name("y" * 300 + "." + "e" * 300, self.loser)
        self.assertEqual(name, "y" * (255 - len(self.suffix)) + self.suffix)

    def test_whole_second_of_the_mtime(self):
        late = attrs.evolve(self.loser, mtime_ns=1_767_225_600 * 10**9 + 999_999_999)
        self.assertEqual(conflict_name("f", late), "f" + self.suffix)


class PlannerEdgeTests(SynchronousTestCase):
    """
    L{plan}, L{target} and L{heads} cases the planner tests leave open.
    """

    def test_me_and_now_are_keyword_only(self):
        with self.assertRaises(TypeError):
            plan("f.txt", None, {"p": pentry()}, ME, NOW)

    def test_receive_only_applies(self):
        newer = pentry(version={ME: 1, PEER: 1}, hash="h2", by=PEER)
        self.assertEqual(plan("f.txt", pentry(), {"p": newer}, me=ME, now=NOW,
                              mode=RECEIVE_ONLY).kind, FETCH)

    def test_send_only_from_a_config_string(self):
        newer = pentry(version={ME: 1, PEER: 1}, hash="h2", by=PEER)
        self.assertIsNone(plan("f.txt", pentry(), {"p": newer}, me=ME, now=NOW,
                               mode=fresh(SEND_ONLY)))

    def test_kinds_by_value(self):
        d = attrs.evolve(pentry(version={ME: 1, PEER: 1}, kind=DIR, mtime=1, by=PEER),
                         kind=fresh(DIR))
        self.assertEqual(plan("f.txt", None, {"p": d}, me=ME, now=NOW).kind, MKDIR)
        self.assertEqual(plan("f.txt", pentry(), {"p": d}, me=ME, now=NOW).kind, MKDIR)
        # A directory beats a concurrent file with a newer mtime.
        f = attrs.evolve(pentry(version={ME: 2}, hash="f", mtime=99), kind=fresh(FILE))
        action = plan("f.txt", f, {"p": d}, me=ME, now=NOW)
        self.assertEqual((action.kind, action.conflict_copy), (MKDIR, conflict_name("f.txt", f)))

    def test_no_copy_of_a_version_that_is_not_a_head(self):
        """
        Our version is dominated by a losing head with the same bytes (a
        peer changed only the permission bits): that head's holder keeps
        the copy, we keep none (only a losing version gets a copy).
        """
        ours = pentry(version={ME: 1}, hash="m", mtime=10)
        chmod = pentry(version={ME: 1, "c" * 16: 1}, hash="m", mtime=10, perms=0o600,
                       by="c" * 16)
        winner = pentry(version={ME: 1, PEER: 1}, hash="w", mtime=20, by=PEER)
        action = plan("f.txt", ours, {"c": chmod, "b": winner}, me=ME, now=NOW)
        self.assertEqual((action.kind, action.entry.hash, action.conflict_copy),
                         (FETCH, "w", None))
        on_c = plan("f.txt", chmod, {"a": ours, "b": winner}, me="c" * 16, now=NOW)
        self.assertEqual(on_c.conflict_copy, conflict_name("f.txt", chmod))

    def test_heads_one_per_version_and_content(self):
        x = attrs.evolve(pentry(version={ME: 2}), sequence=5)
        same = attrs.evolve(pentry(version={ME: 2}), sequence=9)
        self.assertEqual(heads([x, same]), [x])
        self.assertEqual(target([x, same]), target([x]))


class SourcesEdgeTests(SynchronousTestCase):
    def test_who_can_send_the_bytes(self):
        v = {ME: 1, PEER: 1}
        want = pentry(version=v, hash="m", by=PEER)
        remotes = {
            "z": pentry(version=v, hash="m", by=PEER),          # exact: first
            "y": pentry(version={PEER: 1}, hash="m", by=PEER),  # same bytes
            "a": pentry(version={PEER: 1}, hash="a", by=PEER),  # other bytes
            "b": pentry(version={PEER: 1}, hash="z", by=PEER),
            "e": pentry(version=v, hash="a", by=PEER),           # same version, other bytes
            "g": pentry(version=v, hash="q", by=PEER),
            "d": attrs.evolve(pentry(version=v, kind=DIR, by=PEER), hash="m"),
            "t": attrs.evolve(pentry(version=v, deleted=True, by=PEER), hash="m"),
        }
        self.assertEqual(sources(want, remotes), ("z", "y"))
        self.assertEqual(sources(attrs.evolve(want, version=Vector({ME: 1, PEER: 1})), remotes),
                         ("z", "y"))

    def test_by_value(self):
        """
        Kinds and hashes decoded from the wire are equal strings, not the
        same objects.
        """
        v = {ME: 1, PEER: 1}
        want = pentry(version=v, hash="hash-m", by=PEER)
        remotes = {
            "z": pentry(version=v, kind=fresh(FILE), hash=fresh("hash-m"), by=PEER),
            "y": pentry(version={PEER: 1}, kind=fresh(FILE), hash=fresh("hash-m"), by=PEER),
        }
        self.assertEqual(sources(want, remotes), ("z", "y"))


class PairRenamesEdgeTests(SynchronousTestCase):
    def delete(self, path, hash="h", kind=DELETE):
        local = pentry(path, hash=hash)
        return Action(kind, path, pentry(path, {ME: 1, PEER: 1}, deleted=True, by=PEER), local)

    def fetch(self, path, hash="h", local=None, kind=FETCH):
        return Action(kind, path, pentry(path, {PEER: 1}, hash=hash, by=PEER), local, ("p",))

    def test_first_delete_serves(self):
        one, two, new = self.delete("a.txt"), self.delete("b.txt"), self.fetch("n.txt")
        out = pair_renames([one, two, new])
        self.assertEqual([(a.kind, a.path) for a in out], [(DELETE, "b.txt"), (MOVE, "n.txt")])
        self.assertIs(out[1].source, one)

    def test_only_deleted_files_are_moved(self):
        live = pentry("k.txt", hash="h")
        actions = [
            Action(ADOPT, "k.txt", pentry("k.txt", {ME: 1, PEER: 1}, hash="h", by=PEER), live),
            Action(SET_META, "s.txt", pentry("s.txt", {ME: 1, PEER: 1}, hash="h", perms=0o600),
                   pentry("s.txt", hash="h")),
            self.fetch("r.txt", hash="h2", local=pentry("r.txt", hash="h")),
            # A directory whose entry (as a peer sent it) carries a hash.
            Action(DELETE, "d", pentry("d", {ME: 1, PEER: 1}, deleted=True, by=PEER),
                   attrs.evolve(pentry("d", kind=DIR), hash="h")),
            self.fetch("n.txt"),
        ]
        self.assertEqual(pair_renames(actions), actions)

    def test_only_fetches_into_nothing_become_moves(self):
        gone = self.delete("old.txt")
        replacing = self.fetch("r.txt", local=pentry("r.txt", hash="h0"))
        adopt = Action(ADOPT, "a.txt", pentry("a.txt", {PEER: 1}, hash="h", by=PEER), None)
        mkdir = Action(MKDIR, "m", attrs.evolve(pentry("m", {PEER: 1}, kind=DIR, by=PEER),
                                                hash="h"), None)
        actions = [gone, replacing, adopt, mkdir]
        self.assertEqual(pair_renames(actions), actions)

    def test_kinds_by_value(self):
        gone = self.delete("old.txt", kind=fresh(DELETE))
        gone = attrs.evolve(gone, local=attrs.evolve(gone.local, kind=fresh(FILE)))
        new = self.fetch("new.txt", kind=fresh(FETCH))
        out = pair_renames([gone, new])
        self.assertEqual([(a.kind, a.path) for a in out], [(MOVE, "new.txt")])


class ReviewFoundTests(SynchronousTestCase):
    """
    Behaviour the planner's rules promise that an early version of the code
    did not give (found by review).
    """

    def test_conflict_copy_when_a_peer_holds_the_same_losing_version(self):
        """
        Our version lost a conflict; a peer (C) had already adopted that same
        version, so its entry differs from ours only in its sequence number.
        We must still keep our bytes as the conflict copy, although L{heads}
        keeps C's entry and drops ours as a duplicate (the early code looked
        for our whole entry, sequence included, among the losers).
        """
        mine = attrs.evolve(pentry(version={ME: 2}, hash="from-a", mtime=10), sequence=5)
        same_on_c = attrs.evolve(mine, sequence=9, version=Vector({ME: 2}))  # equal, not same
        winner = pentry(version={ME: 1, PEER: 1}, hash="from-b", mtime=20, by=PEER)
        alone = plan("f.txt", mine, {"b": winner}, me=ME, now=NOW)
        self.assertEqual(alone.conflict_copy, conflict_name("f.txt", mine))
        action = plan("f.txt", mine, {"c": same_on_c, "b": winner}, me=ME, now=NOW)
        self.assertEqual((action.kind, action.conflict_copy),
                         (FETCH, conflict_name("f.txt", mine)))




class WinnerIsATotalOrderTests(SynchronousTestCase):
    """
    Every node must pick the same winner among concurrent versions,
    whatever order it learned them in: the rank may tie only for versions
    that are the same in every way the planner compares.  (Issue 15: with
    a tie-break missing, two nodes each picked the other's version.)
    """

    def base(self, **changes):
        fields = dict(version={ME: 5}, mtime=10, hash="h1", by=ME, perms=0o644)
        fields.update(changes)
        return pentry(**fields)

    def check_order_free(self, one, other):
        self.assertNotEqual(rank(one), rank(other), "two different versions tie")
        first = target([one, other]).entry
        second = target([other, one]).entry
        self.assertEqual((first.hash, first.perms, first.mtime_ns, first.modified_by),
                         (second.hash, second.perms, second.mtime_ns, second.modified_by))

    def test_same_author_same_mtime_different_content(self):
        """
        Versions alike but for their bytes, under the same vector (two
        nodes that merged overlapping sets of heads can make that, see
        L{heads}): the hash decides.
        """
        self.check_order_free(self.base(hash="h1"), self.base(hash="h2"))

    def test_equal_mtimes_different_authors(self):
        """
        Concurrent edits with the same mtime on two nodes: one winner.
        """
        self.check_order_free(self.base(by=ME, hash="h1"), self.base(by=PEER, hash="h2"))

    def test_only_the_permission_bits_differ(self):
        self.check_order_free(self.base(perms=0o644), self.base(perms=0o600))
