"""
The sync engine: delta index exchange, what a peer's entries may do to us,
and the life of an action.
"""

import attrs
from twisted.trial.unittest import SynchronousTestCase

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
