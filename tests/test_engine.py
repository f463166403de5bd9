"""
The sync engine: delta index exchange, what a peer's entries may do to us,
and the life of an action.
"""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.dirty import URGENT_BATCH, DirtyPaths
from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.index import DIR, FILE, LocalIndex, MemoryStore, Observed
from p2ptwisted.core.planner import ADOPT, DELETE, FETCH, MKDIR, MOVE
from p2ptwisted.core.versions import MAX_AHEAD, Vector
from p2ptwisted.store import SqliteStore

NOW = 1_800_000_000
A, B = "a" * 16, "b" * 16


#: The store every engine in a test uses; the Sqlite* classes below run
#: the same tests on the node's real storage.
STORE = [MemoryStore]


def engine(me, store=None, **kw):
    store = store if store is not None else STORE[0]()
    return SyncEngine(LocalIndex(store, me), store, **kw)


def add(e, path, content="x", now=NOW, perms=0o644):
    return e.local_changed([Observed(path, FILE, len(content), now * 10**9, perms, content)],
                           [], now)


def connect(x, xname, y, yname):
    """
    Both hellos, as a connection's first frames.
    """
    hx, hy = x.peer_connected(yname), y.peer_connected(xname)
    y.hello_received(xname, hx)
    x.hello_received(yname, hy)


def pump(sender, sname, receiver, rname):
    """
    Send everything C{sender} has for C{receiver}; the number of entries.
    """
    n = 0
    while True:
        entries = sender.outgoing(rname, limit=100)
        if not entries:
            return n
        n += len(entries)
        receiver.entries_received(sname, entries, NOW)


class ExchangeTests(SynchronousTestCase):
    def setUp(self):
        self.a, self.b = engine(A), engine(B)
        for i in range(250):
            add(self.a, f"f{i:03}", f"c{i}")

    def test_first_exchange_sends_everything_in_order(self):
        connect(self.a, "A", self.b, "B")
        first = self.a.outgoing("B", limit=100)
        self.assertEqual([e.sequence for e in first], list(range(1, 101)))
        self.assertEqual(pump(self.a, "A", self.b, "B") + 100, 250)
        self.assertEqual(sum(1 for p in self.b.store.paths() if self.b.store.remote_for(p)), 150)

    def test_nothing_before_the_hello(self):
        self.a.peer_connected("B")
        self.assertEqual(self.a.outgoing("B"), [])

    def test_reconnect_without_changes_sends_nothing(self):
        connect(self.a, "A", self.b, "B")
        self.assertEqual(pump(self.a, "A", self.b, "B"), 250)
        self.a.peer_lost("B")
        self.b.peer_lost("A")
        connect(self.a, "A", self.b, "B")
        self.assertEqual(pump(self.a, "A", self.b, "B"), 0)
        self.assertEqual(self.a.outgoing("B"), [])

    def test_reconnect_sends_only_what_changed(self):
        connect(self.a, "A", self.b, "B")
        pump(self.a, "A", self.b, "B")
        self.a.peer_lost("B")
        self.b.peer_lost("A")
        add(self.a, "f007", "changed", now=NOW + 5)
        add(self.a, "new", "n")
        connect(self.a, "A", self.b, "B")
        sent = self.a.outgoing("B")
        self.assertEqual(sorted(e.path for e in sent), ["f007", "new"])

    def test_restart_keeps_the_exchange_state(self):
        store_b = STORE[0]()
        self.b = engine(B, store_b)
        connect(self.a, "A", self.b, "B")
        pump(self.a, "A", self.b, "B")
        self.a.peer_lost("B")
        restarted = engine(B, store_b)
        connect(self.a, "A", restarted, "B")
        self.assertEqual(pump(self.a, "A", restarted, "B"), 0)

    def test_peer_that_lost_its_state_gets_everything_again(self):
        connect(self.a, "A", self.b, "B")
        pump(self.a, "A", self.b, "B")
        self.a.peer_lost("B")
        self.b = engine(B)  # a wiped state directory: a new index id too
        connect(self.a, "A", self.b, "B")
        self.assertEqual(pump(self.a, "A", self.b, "B"), 250)

    def test_new_index_id_forgets_the_old_entries_and_replans(self):
        connect(self.a, "A", self.b, "B")
        pump(self.a, "A", self.b, "B")
        self.b.dirty.clear()
        self.b.peer_lost("A")
        fresh = engine(A)  # A wiped: same node, new index
        hello = fresh.peer_connected("B")
        self.b.peer_connected("A")
        self.b.hello_received("A", hello)
        self.assertEqual([p for p in self.b.store.paths() if self.b.store.remote_for(p)], [])
        self.assertEqual(len(self.b.dirty), 250)


class ReceivingTests(SynchronousTestCase):
    def setUp(self):
        self.a = engine(A)
        self.b = engine(B, ignored=lambda path, is_dir: path.startswith("private"))
        connect(self.a, "A", self.b, "B")

    def test_counter_far_ahead_refused_and_not_stored(self):
        entry = add(self.a, "f", "x")[0]
        evil = attrs.evolve(entry, version=Vector({A: NOW + MAX_AHEAD + 10}))
        got = self.b.entries_received("A", [evil], NOW)
        self.assertEqual((got.stored, len(got.rejected)), (0, 1))
        self.assertIn("too far ahead", got.rejected[0])
        self.assertEqual(self.b.store.remote_for("f"), {})
        self.assertEqual(self.b.dirty, set())

    def test_older_entry_from_the_same_peer_ignored(self):
        old = add(self.a, "f", "v1")[0]
        new = add(self.a, "f", "v2", now=NOW + 1)[0]
        self.b.entries_received("A", [new], NOW)
        got = self.b.entries_received("A", [old], NOW)
        self.assertEqual((got.stored, got.stale), (0, 1))
        self.assertEqual(self.b.store.remote_for("f")["A"].hash, "v2")

    def test_ignored_paths_not_stored(self):
        entry = add(self.a, "private/key", "k")[0]
        self.assertEqual(self.b.entries_received("A", [entry], NOW).stored, 0)
        self.assertEqual(self.b.store.remote_for("private/key"), {})


class ActionTests(SynchronousTestCase):
    def setUp(self):
        self.a, self.b = engine(A), engine(B)
        connect(self.a, "A", self.b, "B")

    def test_fetch_then_done_adopts_and_is_in_sync(self):
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        [action] = self.b.next_actions(NOW)
        self.assertEqual((action.kind, action.sources), (FETCH, ("A",)))
        self.assertEqual(self.b.sources_for(action), ("A",))
        self.assertEqual(self.b.next_actions(NOW), [])  # busy: not planned twice
        [adopted] = self.b.done(action)
        self.assertEqual(adopted.version, self.a.index.get("f").version)
        self.assertEqual(adopted.sequence, self.b.index.sequence)
        self.assertTrue(self.b.in_sync())
        # B now carries the version, for nodes beyond it.
        self.assertEqual([e.path for e in self.b.outgoing("A")], ["f"])

    def test_disconnected_peer_is_no_source(self):
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        self.b.peer_lost("A")
        [action] = self.b.next_actions(NOW)
        self.assertEqual(self.b.sources_for(action), ())

    def test_failed_action_waits_until_its_time(self):
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        [action] = self.b.next_actions(NOW)
        self.b.failed(action, NOW + 10)
        self.assertEqual(self.b.next_actions(NOW + 9), [])
        self.assertFalse(self.b.in_sync())
        self.assertEqual([a.path for a in self.b.next_actions(NOW + 10)], ["f"])

    def test_rename_becomes_a_move(self):
        add(self.a, "old", "bytes")
        pump(self.a, "A", self.b, "B")
        self.b.done(self.b.next_actions(NOW)[0])
        self.a.local_changed([Observed("new", FILE, 5, NOW * 10**9, 0o644, "bytes")], ["old"],
                             NOW + 1)
        pump(self.a, "A", self.b, "B")
        [move] = self.b.next_actions(NOW + 1)
        self.assertEqual((move.kind, move.path, move.source.path), (MOVE, "new", "old"))
        self.assertEqual(set(self.b.busy), {"new", "old"})
        adopted = self.b.done(move)
        self.assertEqual([e.path for e in adopted], ["new", "old"])
        self.assertTrue(self.b.index.get("old").deleted)
        self.assertTrue(self.b.in_sync())

    def test_directory_with_needed_files_is_revived(self):
        self.a.local_changed([Observed("d", DIR, 0, 0, 0o755)], [], NOW)
        add(self.a, "d/f", "x")
        pump(self.a, "A", self.b, "B")
        for action in self.b.next_actions(NOW):
            self.b.done(action)
        # B adds a file in d; A, not knowing, deletes d.
        add(self.b, "d/mine", "keep")
        self.a.local_changed([], ["d", "d/f"], NOW + 1)
        pump(self.a, "A", self.b, "B")
        actions = {a.path: a for a in self.b.next_actions(NOW + 1)}
        self.assertEqual(actions["d"].kind, DELETE)
        self.assertTrue(self.b.needed_under("d", NOW + 1))
        revived = self.b.revive(actions["d"], NOW + 1)
        self.assertFalse(revived.deleted)
        # The revived directory wins on A too: live beats a deletion.
        pump(self.b, "B", self.a, "A")
        plans = {a.path: a.kind for a in self.a.next_actions(NOW + 2)}
        self.assertEqual(plans.get("d"), MKDIR)

    def test_nothing_needed_under_a_directory_whose_files_are_deleted(self):
        add(self.b, "d/f", "x")
        self.assertTrue(self.b.needed_under("d", NOW))
        self.b.local_changed([], ["d/f"], NOW + 1)
        self.assertFalse(self.b.needed_under("d", NOW + 1))

    def test_tombstone_for_unknown_path_is_carried(self):
        add(self.a, "f", "x")
        self.a.local_changed([], ["f"], NOW + 1)
        pump(self.a, "A", self.b, "B")
        [action] = self.b.next_actions(NOW)
        self.assertEqual(action.kind, ADOPT)
        self.b.done(action)
        self.assertTrue(self.b.index.get("f").deleted)


def _sqlite():
    return SqliteStore(":memory:")


class SqliteMixin:
    def setUp(self):
        STORE[0] = _sqlite
        self.addCleanup(STORE.__setitem__, 0, MemoryStore)
        super().setUp()


class SqliteExchangeTests(SqliteMixin, ExchangeTests):
    pass


class SqliteReceivingTests(SqliteMixin, ReceivingTests):
    pass


class SqliteActionTests(SqliteMixin, ActionTests):
    pass


class IndexWentBackTests(SynchronousTestCase):
    """
    A node whose index lost its end (a crash with synchronous=NORMAL, a
    restored backup) must not hand out the same sequence numbers again.
    """

    def test_peer_ahead_of_us_makes_a_new_index(self):
        store_a = MemoryStore()
        a, b = engine(A, store_a), engine(B)
        for i in range(3):
            add(a, f"f{i}", f"c{i}")
        connect(a, "A", b, "B")
        pump(a, "A", b, "B")
        a.peer_lost("B")
        b.peer_lost("A")
        # A comes back with only its first entry.
        lost = MemoryStore()
        lost.set_meta("index_id", store_a.meta("index_id"))
        lost.set_meta("sequence", "1")
        lost.put([store_a.get("f0")])
        back = engine(A, lost)
        old_id = back.index.index_id
        add(back, "new", "made after the loss")  # sequence 2 again
        hb = b.peer_connected("A")
        back.peer_connected("B")
        self.assertTrue(back.hello_received("B", hb))
        self.assertNotEqual(back.index.index_id, old_id)
        b.hello_received("A", back.hello_for("B"))
        self.assertEqual(pump(back, "A", b, "B"), 2)
        self.assertEqual(b.store.remote_for("new")["A"].hash, "made after the loss")
        self.assertEqual(b.store.remote_for("f1"), {})  # forgotten with the old index

    def test_peer_behind_us_is_ordinary(self):
        a, b = engine(A), engine(B)
        add(a, "f", "x")
        hb = b.peer_connected("A")
        a.peer_connected("B")
        self.assertFalse(a.hello_received("B", hb))


class EntryCheckTests(SynchronousTestCase):
    def setUp(self):
        self.a, self.b = engine(A), engine(B)
        connect(self.a, "A", self.b, "B")
        self.good = add(self.a, "f", "x")[0]

    def test_malformed_entries_refused_and_not_asked_for_again(self):
        bad = [attrs.evolve(self.good, path="k", kind="symlink"),
               attrs.evolve(self.good, path="d", kind=DIR),  # a directory with a hash
               attrs.evolve(self.good, path="p", perms=0o4755),
               attrs.evolve(self.good, path="v", version=Vector(), sequence=7)]
        got = self.b.entries_received("A", bad, NOW)
        self.assertEqual(got.stored, 0)
        self.assertEqual([r.split(":")[0] for r in got.rejected], ["k", "d", "p", "v"])
        self.assertEqual(self.b.store.meta("peer-sequence:A"), "7")


class TombstoneLifetimeTests(SynchronousTestCase):
    DAY = 24 * 3600

    def setUp(self):
        self.a, self.b = engine(A), engine(B)
        connect(self.a, "A", self.b, "B")
        add(self.a, "old", "x")
        add(self.a, "recent", "y")
        add(self.a, "kept-by-peer", "z")
        self.a.local_changed([], ["old"], NOW)
        self.a.local_changed([], ["recent"], NOW + 100 * self.DAY)
        self.a.local_changed([], ["kept-by-peer"], NOW)
        # The peer still has "kept-by-peer" live (it has not heard yet).
        live = attrs.evolve(add(self.b, "kept-by-peer", "z")[0])
        self.a.entries_received("B", [live], NOW)

    def test_old_deletions_forgotten_recent_and_contested_kept(self):
        n = self.a.expire_tombstones(NOW + 181 * self.DAY, 180 * self.DAY, batch=1)
        self.assertEqual(n, 1)
        self.assertIsNone(self.a.index.get("old"))
        self.assertTrue(self.a.index.get("recent").deleted)
        self.assertTrue(self.a.index.get("kept-by-peer").deleted)

    def test_a_forgotten_path_is_not_adopted_again_from_peers_tombstones(self):
        gone = self.a.index.get("old")
        self.b.entries_received("A", [gone], NOW)
        self.b.expire_tombstones(NOW + 181 * self.DAY, 180 * self.DAY)
        self.a.entries_received("B", [attrs.evolve(gone, sequence=99)], NOW)
        self.a.expire_tombstones(NOW + 181 * self.DAY, 180 * self.DAY)
        self.assertEqual(self.a.store.remote_for("old"), {})
        self.assertEqual([a.path for a in self.a.next_actions(NOW + 181 * self.DAY)
                          if a.path == "old"], [])


class SqliteTombstoneLifetimeTests(SqliteMixin, TombstoneLifetimeTests):
    pass


class DirtyPathsTests(SynchronousTestCase):
    """
    L{DirtyPaths} on its own: path order a limit at a time, small batches
    first, busy paths kept for later.
    """

    def test_taken_in_path_order_a_limit_at_a_time(self):
        d = DirtyPaths(["c", "a", "e", "b", "d"])
        self.assertEqual(d.urgent, set())
        self.assertEqual(d.take(2, ()), ["a", "b"])
        self.assertEqual(d, {"c", "d", "e"})
        self.assertEqual(d.take(2, ()), ["c", "d"])
        self.assertEqual(d.take(10, ()), ["e"])
        self.assertEqual(d.take(10, ()), [])
        self.assertEqual(len(d), 0)

    def test_adding_twice_takes_once(self):
        d = DirtyPaths(["b"])
        d.add("a")
        d.add("a")
        d.add("b")
        self.assertEqual(sorted(d._heap), ["a", "b"])
        d.discard("a")
        d.add("a")  # pushed again: the heap holds it twice
        self.assertEqual(d.take(5, ()), ["a", "b"])
        self.assertEqual(d.take(5, ()), [])

    def test_small_batch_jumps_the_queue(self):
        d = DirtyPaths()
        bulk = [f"bulk{i:02}" for i in range(URGENT_BATCH + 1)]
        d.update(bulk)
        self.assertEqual(d.urgent, set())
        d.update(iter(["z2", "z1"]))  # any iterable, not only a list
        self.assertEqual(d.urgent, {"z1", "z2"})
        self.assertEqual(d.take(3, ()), ["z1", "z2", "bulk00"])
        self.assertEqual(d.urgent, set())
        self.assertEqual(len(d), URGENT_BATCH)

    def test_a_batch_of_exactly_urgent_batch_is_urgent(self):
        d = DirtyPaths(["a"])
        batch = [f"z{i:02}" for i in range(URGENT_BATCH)]
        d.update(batch)
        self.assertEqual(d.urgent, set(batch))
        self.assertEqual(d.take(1, ()), ["z00"])

    def test_each_batch_judged_on_its_own(self):
        d = DirtyPaths()
        d.update([f"bulk{i:02}" for i in range(URGENT_BATCH + 1)], ["small"])
        self.assertEqual(d.urgent, {"small"})

    def test_urgent_paths_limited_too(self):
        d = DirtyPaths(["a"])
        d.update(["u3", "u1", "u2"])
        self.assertEqual(d.take(2, ()), ["u1", "u2"])
        self.assertEqual(d.urgent, {"u3"})
        self.assertEqual(d.take(1, ()), ["u3"])
        self.assertEqual(d.take(1, ()), ["a"])

    def test_busy_paths_skipped_and_kept(self):
        d = DirtyPaths(["a", "b", "c"])
        self.assertEqual(d.take(2, {"a"}), ["b", "c"])
        self.assertEqual(d, {"a"})
        self.assertEqual(d.take(2, {"a"}), [])
        self.assertEqual(d.take(2, ()), ["a"])

    def test_busy_urgent_path_stays_urgent(self):
        d = DirtyPaths(["a", "b"])
        d.update(["z"])
        self.assertEqual(d.take(1, {"z"}), ["a"])
        self.assertEqual(d.urgent, {"z"})
        self.assertEqual(d.take(1, ()), ["z"])
        self.assertEqual(d.take(1, ()), ["b"])

    def test_urgent_path_discarded_or_taken_is_no_longer_urgent(self):
        d = DirtyPaths()
        d.update(["x", "y"])
        d.discard("x")
        self.assertEqual(d.urgent, {"y"})
        self.assertNotIn("x", d)
        d.update(["w"])
        d.urgent.add("gone")  # urgent, but no longer dirty
        self.assertEqual(d.take(1, ()), ["w"])
        self.assertEqual(d.urgent, {"y"})
        self.assertEqual(d.take(5, ()), ["y"])

    def test_clear(self):
        d = DirtyPaths(["a", "b"])
        d.update(["u"])
        d.clear()
        self.assertEqual((set(d), d._heap, d.urgent), (set(), [], set()))
        d.add("c")
        self.assertEqual(d.take(5, ()), ["c"])

    def test_limits_past_the_small_int_cache(self):
        """
        Limits above 256 (ints CPython does not share): the count is
        compared by value.
        """
        d = DirtyPaths(f"p{i:03}" for i in range(400))
        self.assertEqual(len(d.take(300, ())), 300)
        self.assertEqual(len(d), 100)
        u = DirtyPaths()
        for b in range(10):
            u.update([f"u{b}{i:02}" for i in range(30)])
        self.assertEqual(len(u.urgent), 300)
        self.assertEqual(len(u.take(257, ())), 257)
        self.assertEqual(len(u.urgent), 43)

    def test_urgent_batch_is_thirty_two(self):
        self.assertEqual(URGENT_BATCH, 32)
        d = DirtyPaths()
        d.update([f"a{i:02}" for i in range(32)])
        d.update([f"b{i:02}" for i in range(33)])
        self.assertEqual(len(d.urgent), 32)


class EngineEdgeTests(SynchronousTestCase):
    """
    Edges of L{SyncEngine} that the scenario tests above pass over.
    """

    def setUp(self):
        self.a, self.b = engine(A), engine(B)

    def test_options_are_keyword_only(self):
        store = MemoryStore()
        self.assertRaises(TypeError, SyncEngine, LocalIndex(store, A), store, "send-receive")
        SyncEngine(index=LocalIndex(store, A), store=store)

    def test_first_hello_claims_nothing(self):
        self.assertEqual(self.a.peer_connected("B").have_index_id, "")
        self.assertEqual(self.a.peer_connected("B").have_sequence, 0)

    def test_hello_about_another_index_sends_from_the_start(self):
        add(self.a, "f", "x")
        self.a.peer_connected("B")
        hello = self.b.peer_connected("A")
        self.a.hello_received("B", attrs.evolve(hello, have_index_id="other", have_sequence=5))
        self.assertEqual(self.a.peers["B"].sent, 0)
        self.assertEqual([e.path for e in self.a.outgoing("B")], ["f"])

    def test_no_planning_before_the_first_plan(self):
        add(self.a, "f", "x")
        self.assertTrue(self.a.dirty)
        self.assertFalse(self.a.has_planning())

    def test_nothing_to_plan_once_done(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        self.assertFalse(self.b.in_sync())  # dirty, nothing busy yet
        [action] = self.b.next_actions(NOW)
        self.b.done(action)
        self.assertEqual((set(self.b.dirty), self.b.deferred, self.b.busy), (set(), {}, {}))
        self.assertFalse(self.b.has_planning())

    def test_ignore_rule_told_whether_a_path_is_a_directory(self):
        b = engine(B, ignored=lambda path, is_dir: path.endswith(".log") and not is_dir)
        connect(self.a, "A", b, "B")
        add(self.a, "a.log", "x")
        self.a.local_changed([Observed("d.log", DIR, 0, 0, 0o755)], [], NOW)
        pump(self.a, "A", b, "B")
        self.assertEqual(b.store.remote_for("a.log"), {})
        self.assertIn("A", b.store.remote_for("d.log"))

    def test_directory_where_a_peer_has_a_file_is_our_change(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "x", "file")
        pump(self.a, "A", self.b, "B")
        made = self.b.local_changed([Observed("x", DIR, 0, 0, 0o755)], [], NOW)
        self.assertEqual([(e.path, e.kind) for e in made], [("x", DIR)])

    def test_directory_holding_a_peers_files_is_not_our_change(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "d/f", "x")  # the peer's entry for d itself not (yet) here
        pump(self.a, "A", self.b, "B")
        self.assertEqual(self.b.store.remote_for("d"), {})
        self.b.dirty.clear()
        self.assertEqual(self.b.local_changed([Observed("d", DIR, 0, 0, 0o755)], [], NOW), [])
        self.assertIn("d", self.b.dirty)

    def test_held_action_planned_again_when_retry_says(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        [action] = self.b.next_actions(NOW)
        self.b.hold(action)
        self.assertEqual(self.b.next_actions(NOW + 1000), [])  # held: no time set
        self.b.retry(action, NOW + 5)
        self.assertEqual(self.b.next_actions(NOW + 4), [])
        self.assertEqual([a.path for a in self.b.next_actions(NOW + 5)], ["f"])

    def test_held_move_released_on_both_paths(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "old", "bytes")
        pump(self.a, "A", self.b, "B")
        self.b.done(self.b.next_actions(NOW)[0])
        self.a.local_changed([Observed("new", FILE, 5, NOW * 10**9, 0o644, "bytes")], ["old"],
                             NOW + 1)
        pump(self.a, "A", self.b, "B")
        [move] = self.b.next_actions(NOW + 1)
        self.assertEqual(move.kind, MOVE)
        self.b.hold(move)
        self.b.retry(move, NOW + 2)
        self.assertEqual(self.b.waiting, {"new": NOW + 2, "old": NOW + 2})

    def test_retry_leaves_paths_not_held_alone(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "f", "x")
        pump(self.a, "A", self.b, "B")
        [action] = self.b.next_actions(NOW)
        self.b.retry(action, NOW + 5)
        self.assertEqual(self.b.waiting, {})

    def test_tombstone_pages_not_read_twice(self):
        calls = []

        class Counting(MemoryStore):
            def tombstones(self, after, limit):
                calls.append(after)
                return super().tombstones(after, limit)

        a = engine(A, Counting())
        for p in ("t1", "t2", "t3"):
            add(a, p, "x")
        a.local_changed([], ["t1", "t2", "t3"], NOW)
        self.assertEqual(a.expire_tombstones(NOW + 10, 1000, batch=2), 0)
        self.assertEqual(calls, ["", "t2", "t3"])

    def test_me_is_the_index_owner(self):
        self.assertEqual(self.a.me, A)

    def test_outgoing_sends_a_thousand_at_a_time(self):
        for i in range(1001):
            add(self.a, f"f{i:04}", f"c{i}")
        connect(self.a, "A", self.b, "B")
        self.assertEqual(len(self.a.outgoing("B")), 1000)
        self.assertEqual(len(self.a.outgoing("B")), 1)

    def test_sequence_of_a_peer_never_helloed_starts_at_zero(self):
        self.b.entries_received("X", [], NOW)
        self.assertEqual(self.b.store.meta("peer-sequence:X"), "0")

    def test_next_actions_plans_256_at_a_time(self):
        for i in range(257):
            add(self.a, f"f{i:03}", f"c{i}")
        connect(self.a, "A", self.b, "B")
        pump(self.a, "A", self.b, "B")
        self.assertEqual(len(self.b.next_actions(NOW)), 256)

    def test_ignore_rule_at_planning_told_whether_a_path_is_a_directory(self):
        rules = set()
        b = engine(B, ignored=lambda path, is_dir: (path, is_dir) in rules)
        connect(self.a, "A", b, "B")
        add(self.a, "a.log", "x")
        self.a.local_changed([Observed("d.log", DIR, 0, 0, 0o755)], [], NOW)
        pump(self.a, "A", b, "B")
        rules.add(("a.log", False))  # a rule added since the peer told us
        self.assertEqual([(a.path, a.kind) for a in b.next_actions(NOW)], [("d.log", MKDIR)])

    def test_planning_goes_on_after_a_call_that_planned_one_path(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "f", "x")
        add(self.a, "g", "y")
        pump(self.a, "A", self.b, "B")
        self.assertEqual(len(self.b.next_actions(NOW, limit=1)), 1)
        self.assertTrue(self.b.has_planning())

    def test_deletion_waits_for_a_fetch_in_flight(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "z-old", "old bytes")
        pump(self.a, "A", self.b, "B")
        self.b.done(self.b.next_actions(NOW)[0])
        add(self.a, "a-new", "new bytes", now=NOW + 1)
        self.a.local_changed([], ["z-old"], NOW + 1)
        pump(self.a, "A", self.b, "B")
        [fetch] = self.b.next_actions(NOW + 1, limit=1)
        self.assertEqual((fetch.kind, fetch.path), (FETCH, "a-new"))
        self.assertEqual(self.b.next_actions(NOW + 1, limit=1), [])
        self.assertIn("z-old", self.b.deferred)
        self.b.done(fetch)
        self.assertEqual([(a.kind, a.path) for a in self.b.next_actions(NOW + 1)],
                         [(DELETE, "z-old")])

    def test_tombstone_exactly_lifetime_old_is_kept(self):
        add(self.a, "t", "x")
        [gone] = self.a.local_changed([], ["t"], NOW)
        at = gone.version.counter(gone.modified_by) + 100
        self.assertEqual(self.a.expire_tombstones(at, 100), 0)
        self.assertEqual(self.a.expire_tombstones(at + 1, 100), 1)

    def test_recent_tombstone_does_not_stop_the_page(self):
        add(self.a, "a-recent", "x")
        add(self.a, "b-old", "y")
        self.a.local_changed([], ["b-old"], NOW)
        self.a.local_changed([], ["a-recent"], NOW + 1000)
        self.assertEqual(self.a.expire_tombstones(NOW + 500, 100), 1)
        self.assertIsNone(self.a.index.get("b-old"))
        self.assertTrue(self.a.index.get("a-recent").deleted)

    def test_one_deleted_file_is_the_source_of_one_move(self):
        connect(self.a, "A", self.b, "B")
        add(self.a, "y", "bytes")
        pump(self.a, "A", self.b, "B")
        self.b.done(self.b.next_actions(NOW)[0])
        self.a.local_changed([Observed("x1", FILE, 5, NOW * 10**9, 0o644, "bytes"),
                              Observed("x2", FILE, 5, NOW * 10**9, 0o644, "bytes")], ["y"],
                             NOW + 1)
        pump(self.a, "A", self.b, "B")
        got = sorted((a.kind, a.path, a.source.path if a.source else None)
                     for a in self.b.next_actions(NOW + 1))
        self.assertEqual([k for k, _, _ in got].count(MOVE), 1, got)
