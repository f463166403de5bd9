"""
The planner's rules, one table case each, and the symmetry that makes two
nodes agree on every conflict.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.core.planner import (
    ADOPT, DELETE, FETCH, MKDIR, MOVE, SEND_ONLY, SET_META, Action, conflict_name, pair_renames,
    plan, target)
from p2ptwisted.core.versions import Order, Vector

NOW = 1_800_000_000
A, B, C = "a" * 16, "b" * 16, "c" * 16


def E(path="f.txt", version=None, *, kind=FILE, hash="h1", mtime=10, perms=0o644,
      deleted=False, by=A):
    return Entry(path=path, kind=kind, size=0 if kind == DIR or deleted else 5,
                 mtime_ns=mtime * 10**9, perms=perms, hash="" if kind == DIR or deleted else hash,
                 deleted=deleted, version=Vector(version or {by: 1}), modified_by=by)


class PlanTests(SynchronousTestCase):
    def plan(self, local, remotes, me=A, **kw):
        return plan("f.txt", local, remotes, me=me, now=NOW, **kw)

    def test_nothing_without_peers(self):
        self.assertIsNone(self.plan(E(), {}))

    def test_equal_version_nothing(self):
        self.assertIsNone(self.plan(E(), {"p": E()}))

    def test_we_dominate_nothing(self):
        self.assertIsNone(self.plan(E(version={A: 2}, hash="h2"), {"p": E(version={A: 1})}))

    def test_newer_file_fetched_from_holders_exact_first(self):
        new = E(version={A: 1, B: 1}, hash="h2", by=B)
        same_bytes_other_version = E(version={B: 1}, hash="h2", by=B)
        action = self.plan(E(), {"q": same_bytes_other_version, "p": new, "r": E()})
        self.assertEqual((action.kind, action.entry.hash, action.entry.version),
                         (FETCH, "h2", new.version))
        self.assertEqual(action.sources, ("p", "q"))
        self.assertIsNone(action.conflict_copy)
        self.assertEqual(action.local, E())

    def test_new_path_fetched(self):
        action = self.plan(None, {"p": E()})
        self.assertEqual((action.kind, action.local), (FETCH, None))

    def test_tombstone_for_unknown_path_adopted(self):
        gone = E(version={A: 2}, deleted=True)
        action = self.plan(None, {"p": gone})
        self.assertEqual((action.kind, action.entry), (ADOPT, gone))

    def test_newer_tombstone_deletes(self):
        action = self.plan(E(), {"p": E(version={A: 1, B: 1}, deleted=True, by=B)})
        self.assertEqual(action.kind, DELETE)

    def test_newer_directory_replaces_file_without_copy(self):
        action = self.plan(E(), {"p": E(version={A: 1, B: 1}, kind=DIR, by=B)})
        self.assertEqual((action.kind, action.conflict_copy), (MKDIR, None))

    def test_chmod_is_set_meta(self):
        action = self.plan(E(), {"p": E(version={A: 1, B: 1}, perms=0o755, by=B)})
        self.assertEqual((action.kind, action.entry.perms), (SET_META, 0o755))

    def test_same_everything_newer_version_adopt(self):
        action = self.plan(E(), {"p": E(version={A: 1, B: 1}, by=A)})
        self.assertEqual(action.kind, ADOPT)

    def test_send_only_applies_nothing(self):
        self.assertIsNone(self.plan(E(), {"p": E(version={A: 1, B: 1}, hash="h2")},
                                    mode=SEND_ONLY))


class ConflictTests(SynchronousTestCase):
    def test_newer_mtime_wins_loser_keeps_one_copy(self):
        mine = E(version={A: 2}, hash="mine", mtime=10, by=A)
        theirs = E(version={A: 1, B: 1}, hash="theirs", mtime=20, by=B)
        action = plan("f.txt", mine, {"p": theirs}, me=A, now=NOW)
        self.assertEqual((action.kind, action.entry.hash), (FETCH, "theirs"))
        self.assertEqual(action.conflict_copy, conflict_name("f.txt", mine))
        # The resolved version dominates both and is ours.
        self.assertIs(action.entry.version.compare(mine.version), Order.GREATER)
        self.assertIs(action.entry.version.compare(theirs.version), Order.GREATER)
        # The winner's side does nothing: the loser's side resolves it, and
        # its version then dominates ours (same bytes: adopted).
        self.assertIsNone(plan("f.txt", theirs, {"q": mine}, me=B, now=NOW))
        after = plan("f.txt", theirs, {"q": action.entry}, me=B, now=NOW)
        self.assertEqual((after.kind, after.entry.version), (ADOPT, action.entry.version))

    def test_a_third_node_takes_the_winner_at_its_own_version(self):
        """
        A node that never held the loser must not make a version that
        dominates it: the loser's holder would then replace its bytes
        without seeing a conflict (into the trash, not a conflict copy).
        """
        base = E(version={A: 1}, hash="base")
        mine = E(version={A: 2}, hash="mine", mtime=10, by=A)
        theirs = E(version={A: 1, B: 1}, hash="theirs", mtime=20, by=B)
        action = plan("f.txt", base, {"a": mine, "b": theirs}, me=C, now=NOW)
        self.assertEqual((action.kind, action.entry.version), (FETCH, theirs.version))
        again = plan("f.txt", mine, {"c": action.entry, "b": theirs}, me=A, now=NOW)
        self.assertEqual(again.conflict_copy, conflict_name("f.txt", mine))

    def test_equal_mtime_both_sides_pick_the_same_winner(self):
        x = E(version={A: 2}, hash="x", mtime=10, by=A)
        y = E(version={A: 1, B: 1}, hash="y", mtime=10, by=B)
        on_a = plan("f.txt", x, {"b": y}, me=A, now=NOW)
        on_b = plan("f.txt", y, {"a": x}, me=B, now=NOW)
        self.assertEqual(on_a.entry.hash, "y")  # B's id is larger
        self.assertEqual(on_a.kind, FETCH)
        self.assertIsNone(on_b)

    def test_edit_beats_concurrent_delete_even_if_older(self):
        edit = E(version={A: 2}, hash="edit", mtime=5, by=A)
        gone = E(version={A: 1, B: 1}, deleted=True, mtime=50, by=B)
        self.assertEqual(plan("f.txt", gone, {"a": edit}, me=B, now=NOW).kind, FETCH)
        self.assertIsNone(plan("f.txt", edit, {"b": gone}, me=A, now=NOW))

    def test_directory_beats_concurrent_file(self):
        f = E(version={A: 2}, hash="f", mtime=99, by=A)
        d = E(version={A: 1, B: 1}, kind=DIR, mtime=1, by=B)
        action = plan("f.txt", f, {"b": d}, me=A, now=NOW)
        self.assertEqual((action.kind, action.conflict_copy), (MKDIR, conflict_name("f.txt", f)))

    def test_concurrent_same_content_merges_without_conflict(self):
        x = E(version={A: 1}, hash="same", by=A)
        y = E(version={B: 1}, hash="same", by=B)
        action = plan("f.txt", x, {"b": y}, me=A, now=NOW)
        self.assertIn(action.kind, (ADOPT, SET_META))
        self.assertIsNone(action.conflict_copy)
        self.assertEqual(action.entry.version, Vector({A: 1, B: 1}))

    def test_equal_vectors_different_content_are_a_conflict(self):
        x = E(version={A: 1}, hash="x", mtime=1)
        y = E(version={A: 1}, hash="y", mtime=2)
        action = plan("f.txt", x, {"b": y}, me=B, now=NOW)
        self.assertEqual((action.kind, action.entry.hash), (FETCH, "y"))
        self.assertIs(action.entry.version.compare(x.version), Order.GREATER)

    def test_equal_vectors_different_permission_bits_agree_on_one(self):
        """
        Two nodes can reach the same merged vector with different winners'
        metadata; both must then settle on the same permission bits.
        """
        x = E(version={A: 1, B: 1}, hash="same", perms=0o600)
        y = E(version={A: 1, B: 1}, hash="same", perms=0o644)
        on_x = plan("f.txt", x, {"p": y}, me=A, now=NOW)
        on_y = plan("f.txt", y, {"p": x}, me=B, now=NOW)
        goals = [a.entry.perms for a in (on_x, on_y) if a is not None]
        self.assertEqual(len(goals), 1)  # exactly one side changes
        self.assertIn(goals[0], (0o600, 0o644))
        changed = on_x if on_x is not None else on_y
        self.assertEqual((changed.kind, changed.conflict_copy), (SET_META, None))

    def test_loser_dominated_by_a_losing_head_goes_to_trash_not_a_copy(self):
        base = E(version={A: 1}, hash="base")
        m = E(version={A: 2}, hash="m", mtime=10)
        w = E(version={A: 1, B: 1}, hash="w", mtime=20, by=B)
        action = plan("f.txt", base, {"a": m, "b": w}, me=C, now=NOW)
        self.assertEqual((action.kind, action.entry.hash, action.conflict_copy),
                         (FETCH, "w", None))

    @given(st.integers(0, 3), st.integers(0, 3), st.booleans(), st.booleans(),
           st.sampled_from(["h1", "h2"]))
    def test_every_node_computes_the_same_content(self, m1, m2, d1, d2, h):
        """
        Whatever the two heads, both holders (and a third node) agree on
        what the path must hold.
        """
        x = E(version={A: 2}, hash="h1", mtime=m1, deleted=d1, by=A)
        y = E(version={A: 1, B: 1}, hash=h, mtime=m2, deleted=d2, by=B)
        goals = [target([x, y]).entry for me in (A, B, C)]
        contents = {(g.deleted, g.kind, g.hash, g.mtime_ns) for g in goals}
        self.assertEqual(len(contents), 1)


class ConflictNameTests(SynchronousTestCase):
    def test_format(self):
        loser = E(mtime=1_767_225_600, by="0123456789abcdef")  # 2026-01-01 00:00:00 UTC
        self.assertEqual(conflict_name("docs/report.txt", loser),
                         "docs/report.sync-conflict-20260101-000000-0123456.txt")
        self.assertEqual(conflict_name("Makefile", loser),
                         "Makefile.sync-conflict-20260101-000000-0123456")
        self.assertEqual(conflict_name(".bashrc", loser),
                         ".bashrc.sync-conflict-20260101-000000-0123456")

    def test_long_names_stay_within_a_component(self):
        name = conflict_name("d/" + "x" * 250 + ".txt", E())
        self.assertLessEqual(len(name.split("/")[-1].encode()), 255)
        self.assertTrue(name.endswith(".txt"))


class RenameTests(SynchronousTestCase):
    def test_delete_and_fetch_of_same_bytes_become_a_move(self):
        old = E("old.txt", hash="h")
        gone = Action(DELETE, "old.txt", E("old.txt", {A: 1, B: 1}, deleted=True, by=B), old)
        fetch = Action(FETCH, "new.txt", E("new.txt", {B: 1}, hash="h", by=B), None, ("b",))
        other = Action(FETCH, "x.txt", E("x.txt", {B: 1}, hash="zz", by=B), None, ("b",))
        out = pair_renames([gone, fetch, other])
        self.assertEqual([a.kind for a in out], [MOVE, FETCH])
        self.assertEqual((out[0].path, out[0].source), ("new.txt", gone))

    def test_unpaired_stay(self):
        gone = Action(DELETE, "old.txt", E("old.txt", deleted=True), E("old.txt", hash="h"))
        fetch = Action(FETCH, "new.txt", E("new.txt", hash="other"), None)
        self.assertEqual(pair_renames([gone, fetch]), [gone, fetch])
