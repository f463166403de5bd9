"""
Version vectors: bump, merge, compare, and the bounds a peer's vector must
keep.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.versions import (
    MAX_AHEAD, MAX_COUNTERS, Order, Vector, VersionError, check_counters, short_id)

NOW = 1_800_000_000

vectors = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                          st.integers(min_value=1, max_value=20)).map(Vector)


class VectorTests(SynchronousTestCase):
    def test_bump_new_node_takes_now(self):
        self.assertEqual(Vector().bump("a", NOW).as_dict(), {"a": NOW})

    def test_bump_at_least_one_more(self):
        v = Vector({"a": NOW + 5})
        self.assertEqual(v.bump("a", NOW).counter("a"), NOW + 6)
        self.assertEqual(v.bump("b", NOW).as_dict(), {"a": NOW + 5, "b": NOW})

    def test_zero_counters_dropped_and_sorted(self):
        self.assertEqual(Vector({"b": 2, "a": 1, "c": 0}).counters, (("a", 1), ("b", 2)))
        self.assertEqual(Vector({"a": 0}), Vector())

    def test_compare_cases(self):
        a1, a2 = Vector({"a": 1}), Vector({"a": 2})
        self.assertIs(a1.compare(a1), Order.EQUAL)
        self.assertIs(a2.compare(a1), Order.GREATER)
        self.assertIs(a1.compare(a2), Order.LESSER)
        self.assertIs(Vector({"a": 2, "b": 1}).compare(Vector({"a": 3})), Order.CONCURRENT)
        self.assertIs(Vector().compare(a1), Order.LESSER)
        self.assertTrue(a2.dominates(a1))
        self.assertFalse(a1.dominates(a1))

    def test_merge(self):
        self.assertEqual(Vector({"a": 3, "b": 1}).merge(Vector({"b": 4, "c": 2})).as_dict(),
                         {"a": 3, "b": 4, "c": 2})

    @given(vectors, vectors)
    def test_merge_dominates_or_equals_both(self, x, y):
        m = x.merge(y)
        self.assertIn(m.compare(x), (Order.GREATER, Order.EQUAL))
        self.assertIn(m.compare(y), (Order.GREATER, Order.EQUAL))
        self.assertEqual(m, y.merge(x))

    @given(vectors, vectors)
    def test_compare_is_antisymmetric(self, x, y):
        opposite = {Order.EQUAL: Order.EQUAL, Order.GREATER: Order.LESSER,
                    Order.LESSER: Order.GREATER, Order.CONCURRENT: Order.CONCURRENT}
        self.assertIs(y.compare(x), opposite[x.compare(y)])

    @given(vectors, st.sampled_from(["a", "b", "e"]))
    def test_bump_dominates(self, x, who):
        self.assertIs(x.bump(who, 0).compare(x), Order.GREATER)

    def test_short_id(self):
        self.assertEqual(short_id("0123456789abcdef" * 4), "0123456789abcdef")


class BoundsTests(SynchronousTestCase):
    def test_counter_far_ahead_refused(self):
        check_counters(Vector({"a": NOW + MAX_AHEAD}), NOW)
        with self.assertRaises(VersionError) as e:
            check_counters(Vector({"a": NOW + MAX_AHEAD + 1}), NOW)
        self.assertIn("too far ahead", str(e.exception))

    def test_huge_counter_refused(self):
        with self.assertRaises(VersionError):
            check_counters(Vector({"a": 2**63 - 1}), NOW)

    def test_too_many_counters_refused(self):
        check_counters(Vector({f"{i:016x}": 1 for i in range(MAX_COUNTERS)}), NOW)
        with self.assertRaises(VersionError) as e:
            check_counters(Vector({f"{i:016x}": 1 for i in range(10_000)}), NOW)
        self.assertIn("10000 counters", str(e.exception))
