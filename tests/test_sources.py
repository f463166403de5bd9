"""
Tests for L{p2ptwisted.core.sources}: benching a source for a version,
with a growing penalty; choosing another; dropping a repeat offender.
"""

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core import sources as sources_module
from p2ptwisted.core.sources import FAIL, FIRST_PENALTY, MAX_PENALTY, START, WAIT, Sources

V1 = ("a.bin", "11" * 32)
V2 = ("b.bin", "22" * 32)


class PenaltyTests(SynchronousTestCase):
    def test_penalty_doubles_up_to_a_ceiling(self):
        """
        Each failure of the same pair doubles the time the peer is left
        alone for that version, up to the ceiling.
        """
        sources = Sources()
        seconds = [sources.failed("p", V1, 0.0).seconds for _ in range(20)]
        self.assertEqual(seconds[:3], [FIRST_PENALTY, 2 * FIRST_PENALTY, 4 * FIRST_PENALTY])
        self.assertEqual(seconds[-1], MAX_PENALTY)
        self.assertEqual(sorted(seconds), seconds)

    def test_benched_for_that_version_only_until_the_penalty_ends(self):
        sources = Sources()
        penalty = sources.failed("p", V1, 100.0)
        self.assertEqual(penalty.until, 100.0 + FIRST_PENALTY)
        self.assertTrue(sources.benched("p", V1, 100.0))
        self.assertTrue(sources.benched("p", V1, penalty.until - 0.001))
        self.assertFalse(sources.benched("p", V1, penalty.until))
        self.assertFalse(sources.benched("p", V2, 100.0))
        self.assertFalse(sources.benched("q", V1, 100.0))

    def test_success_forgives_the_pair(self):
        sources = Sources()
        sources.failed("p", V1, 0.0)
        sources.failed("p", V1, 0.0)
        sources.succeeded("p", V1)
        self.assertFalse(sources.benched("p", V1, 0.0))
        self.assertEqual(sources.failed("p", V1, 0.0).seconds, FIRST_PENALTY)
        # ... but not the offences
        self.assertEqual(sources.offences["p"], 3)

    def test_repeat_offender_dropped_every_few_offences(self):
        """
        Bad copies of any version count against the peer: every
        DROP_AFTER-th says drop it; failures that are no offence (a stall,
        a refusal) never do.
        """
        sources = Sources(drop_after=3)
        drops = [sources.failed("p", ("f", str(i)), 0.0).drop for i in range(7)]
        self.assertEqual(drops, [False, False, True, False, False, True, False])
        stalls = [sources.failed("q", ("f", str(i)), 0.0, offence=False).drop
                  for i in range(10)]
        self.assertEqual(stalls, [False] * 10)
        self.assertEqual(sources.offences.get("q"), 0)

    def test_connection_lost_forgets_failures_that_were_no_offence(self):
        """
        A stall or a refusal benches a peer for the version only for the
        connection it happened on; a bad copy stays benched.
        """
        sources = Sources()
        sources.failed("p", V1, 0.0, offence=False)
        sources.failed("p", V2, 0.0)
        sources.failed("q", V1, 0.0, offence=False)
        sources.connection_lost("p")
        self.assertFalse(sources.benched("p", V1, 0.0))
        self.assertTrue(sources.benched("p", V2, 0.0))
        self.assertTrue(sources.benched("q", V1, 0.0))

    def test_bounded(self):
        self.patch(sources_module, "MAX_REMEMBERED", 10)
        sources = Sources()
        for i in range(50):
            sources.failed(f"p{i}", ("f", str(i)), 0.0)
        self.assertEqual(len(sources._pairs), 10)
        self.assertEqual(len(sources.offences), 10)
        self.assertTrue(sources.benched("p49", ("f", "49"), 0.0))
        self.assertFalse(sources.benched("p0", ("f", "0"), 0.0))


class ChooseTests(SynchronousTestCase):
    def test_benched_sources_are_not_chosen(self):
        sources = Sources()
        sources.failed("p", V1, 0.0)
        self.assertEqual(sources.choose([("p", 0), ("q", 5)], V1, set(), 1.0), "q")
        self.assertIsNone(sources.choose([("p", 0)], V1, set(), 1.0))
        self.assertEqual(sources.choose([("p", 0)], V1, set(), FIRST_PENALTY), "p")

    def test_untried_first_then_least_busy(self):
        sources = Sources()
        self.assertEqual(sources.choose([("p", 0), ("q", 3)], V1, {"p"}, 0.0), "q")
        self.assertEqual(sources.choose([("p", 4), ("q", 3)], V1, set(), 0.0), "q")
        self.assertIsNone(sources.choose([], V1, set(), 0.0))


class NextStepTests(SynchronousTestCase):
    def step(self, sources, connected, now=0.0, lost_at=None, tried=()):
        return sources.next_step(connected, 2, V1, set(tried), now, lost_at, 10.0)

    def test_start_with_a_usable_source_that_has_room(self):
        sources = Sources()
        sources.failed("p", V1, 0.0)
        self.assertEqual(self.step(sources, [("p", 0), ("q", 1), ("r", 2)]), (START, "q"))

    def test_wait_while_every_usable_source_is_busy(self):
        self.assertEqual(self.step(Sources(), [("q", 2)]), (WAIT, ""))

    def test_fail_when_every_connected_source_is_benched(self):
        sources = Sources()
        sources.failed("p", V1, 0.0)
        step, why = self.step(sources, [("p", 0)], lost_at=0.0)
        self.assertEqual(step, FAIL)
        self.assertIn("failed to send it lately", why)

    def test_wait_for_a_lost_source_to_come_back_for_a_while(self):
        sources = Sources()
        self.assertEqual(self.step(sources, [], now=9.9, lost_at=0.0), (WAIT, ""))
        self.assertEqual(self.step(sources, [], now=10.0, lost_at=0.0),
                         (FAIL, "no connected peer has this version"))
        self.assertEqual(self.step(sources, [], now=0.0),
                         (FAIL, "no connected peer has this version"))


class MutationFoundTests(SynchronousTestCase):
    """
    Cases a mutation run (cosmic-ray over core/sources.py) showed no test
    pinned down.
    """

    def test_bench_ends_for_good(self):
        """
        Past its end, a bench stays over (not only at its last instant).
        """
        sources = Sources()
        penalty = sources.failed("p", V1, 100.0)
        for later in (penalty.until, penalty.until + 1, penalty.until + 10**6):
            self.assertFalse(sources.benched("p", V1, later))
        self.assertEqual(sources.usable(["p", "q"], V1, penalty.until + 1), ["p", "q"])
        self.assertEqual(sources.usable(["p", "q"], V1, 100.0), ["q"])

    def test_connection_lost_is_about_that_peer_only(self):
        """
        Only the peer whose connection closed is forgiven its stalls, and
        it is found by value: ids come from frames, never the same string
        object twice.
        """
        sources = Sources()
        sources.failed("a" * 16, V1, 0.0, offence=False)  # sorts before the lost one
        sources.failed("z" * 16, V1, 0.0, offence=False)
        sources.failed("m" * 16, V1, 0.0, offence=False)
        sources.connection_lost("".join(["m"] * 16))
        self.assertTrue(sources.benched("a" * 16, V1, 0.0))
        self.assertTrue(sources.benched("z" * 16, V1, 0.0))
        self.assertFalse(sources.benched("m" * 16, V1, 0.0))

    def test_a_source_over_its_limit_is_not_started(self):
        """
        A peer with more transfers in flight than the limit (the limit was
        lowered meanwhile) gets no more: the fetch waits.
        """
        sources = Sources()
        self.assertEqual(sources.next_step([("p", 3)], 2, V1, set(), 0.0, None, 10.0),
                         (WAIT, ""))

    def test_a_lost_source_is_not_waited_for_after_the_wait(self):
        sources = Sources()
        for now in (10.0, 11.0, 10**6):
            step, _ = sources.next_step([], 2, V1, set(), now, 0.0, 10.0)
            self.assertEqual(step, FAIL)
