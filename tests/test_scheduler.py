"""
Tests for L{p2ptwisted.core.scheduler}: which block of a download to ask
from which source -- depth, speed, rarest first, swarm diversity, endgame,
bad blocks, lost sources, overdue requests -- driven by a tiny simulated
event loop, without sockets or a reactor.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from typing import Dict, List, Optional, Set, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.scheduler import RUNS, BlockScheduler

KIB = 1024


def make(n: int, size: int = 1000, seed: int = 0, last: Optional[int] = None,
         **kwargs) -> BlockScheduler:
    sizes = [size] * n
    if last is not None:
        sizes[-1] = last
    return BlockScheduler(sizes, rng=random.Random(seed), **kwargs)


class Sim:
    """
    Sources that serve their requests one at a time, in order, each block
    taking size/speed seconds: a tiny event loop around a scheduler.

    @ivar asked: every request made, as (time, source, block).
    @ivar cancelled: every cancel the scheduler returned.
    """

    def __init__(self, sched: BlockScheduler, speeds: Dict[str, float]):
        self.sched = sched
        self.speeds = speeds
        self.now = 0.0
        flying = sched.in_flight
        self.queues = {name: sorted(flying.get(name, ())) for name in speeds}
        self.serving: Dict[str, Tuple[int, int]] = {}  # source -> (block, event id)
        self.events: List[Tuple[float, int, str, int]] = []
        self.seq = 0
        self.asked: List[Tuple[float, str, int]] = []
        self.cancelled: List[Tuple[str, int]] = []
        self.max_copies = 0

    def ask(self) -> None:
        for source, block in self.sched.next_requests(self.now):
            self.asked.append((self.now, source, block))
            self.queues[source].append(block)
        copies = Counter(b for blocks in self.sched.in_flight.values() for b in blocks)
        self.max_copies = max([self.max_copies, *copies.values()])
        for source in self.queues:
            self.serve(source)

    def serve(self, source: str) -> None:
        queue = self.queues[source]
        if source in self.serving or not queue:
            return
        self.seq += 1
        block = queue[0]
        when = self.now + self.sched.sizes[block] / self.speeds[source]
        self.serving[source] = (block, self.seq)
        heapq.heappush(self.events, (when, self.seq, source, block))

    def cancel(self, source: str, block: int) -> None:
        self.cancelled.append((source, block))
        self.queues[source].remove(block)
        if self.serving.get(source, (None,))[0] == block:
            del self.serving[source]
            self.serve(source)

    def run(self, limit: float = 1e6, steps: int = 100_000) -> float:
        """Until done (or stuck, or C{limit}); returns the time it took."""
        self.ask()
        while not self.sched.done and self.now < limit:
            steps -= 1
            assert steps > 0, "the download goes round in circles"
            wakeup = self.sched.next_wakeup(self.now)
            if not self.events and wakeup is None:
                break
            if not self.events or (wakeup is not None and wakeup < self.events[0][0]):
                assert wakeup is not None
                self.now = max(self.now, wakeup)
                for source, block in self.sched.overdue(self.now):
                    self.cancel(source, block)
                self.ask()
                continue
            when, seq, source, block = heapq.heappop(self.events)
            if self.serving.get(source) != (block, seq):
                continue  # cancelled while served
            self.now = when
            del self.serving[source]
            self.queues[source].remove(block)
            for other, same in self.sched.received(source, block, self.now):
                self.cancel(other, same)
            self.serve(source)
            self.ask()
        return self.now


class DepthTests(SynchronousTestCase):
    def test_one_full_source(self):
        """
        A full source is asked every block not already had, once, never
        more than its depth at a time; the download is done after the last.
        """
        sched = BlockScheduler([1000] * 9 + [10], have=[2, 5], rng=random.Random(1),
                               min_depth=2, depth_bytes=3000)
        self.assertEqual(sched.missing, 8)
        sched.add_source("a")
        asked: List[int] = []
        now = 0.0
        for _ in range(20):
            if sched.done:
                break
            new = sched.next_requests(now)
            self.assertTrue(new or sched.in_flight["a"])
            self.assertLessEqual({s for s, _ in new}, {"a"})
            asked += [b for _, b in new]
            self.assertLessEqual(len(sched.in_flight["a"]), 3)
            now += 1.0
            self.assertEqual(sched.received("a", min(sched.in_flight["a"]), now), [])
        self.assertEqual(sorted(asked), [0, 1, 3, 4, 6, 7, 8, 9])
        self.assertEqual(sched.missing, 0)
        self.assertEqual(sched.sources_used(), {"a": 8})
        self.assertEqual(sched.next_requests(now), [])
        self.assertIsNone(sched.waiting_reason(now))

    def test_depth_at_least_min_depth_and_scaled_by_speed(self):
        """
        Depth is depth_bytes worth of blocks for the fastest source, less
        for slower ones in proportion, never under min_depth.
        """
        sched = make(100, size=1000, min_depth=2, depth_bytes=8000)
        sched.add_source("fast")
        sched.add_source("slow")
        self.assertEqual(sched.depth("fast"), 8)  # unmeasured: as the fastest
        sched.next_requests(0.0)
        fast, slow = sorted(sched.in_flight["fast"]), sorted(sched.in_flight["slow"])
        sched.received("fast", fast[0], 0.1)     # 10,000 B/s
        sched.received("slow", slow[0], 0.4)     # 2,500 B/s
        self.assertAlmostEqual(sched.speed("fast"), 10000.0)
        self.assertAlmostEqual(sched.speed("slow"), 2500.0)
        self.assertEqual(sched.depth("fast"), 8)
        self.assertEqual(sched.depth("slow"), 2)
        sched.received("slow", slow[1], 2.0)     # slower still: 625 B/s on this block
        self.assertEqual(sched.depth("slow"), 2)  # never under min_depth

    def test_speed_of_a_pipelined_source(self):
        """
        Blocks queued behind others do not make a source look slow: its
        speed is bytes over the time it spent on them.
        """
        sched = make(20, size=1000, min_depth=5, depth_bytes=0)
        sched.add_source("a")
        self.assertEqual(Sim(sched, {"a": 500.0}).run(), 40.0)
        self.assertAlmostEqual(sched.speed("a"), 500.0)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            make(4, min_depth=0)
        with self.assertRaises(ValueError):
            BlockScheduler([10], have=[1], rng=random.Random(0))
        sched = make(4)
        with self.assertRaises(ValueError):
            sched.add_source("a", [4])
        self.assertEqual(sched.in_flight, {})


class SpeedTests(SynchronousTestCase):
    def test_three_sources_share_by_speed(self):
        """
        Three full sources of speeds 1, 2 and 4: the file takes about the
        time of its bytes at the sum of their speeds, each sent in
        proportion to its speed, and no block was asked twice before every
        block had been asked once.
        """
        speeds = {"a": 1300.0, "b": 2900.0, "c": 4100.0}
        sched = make(703, size=1000, seed=3, last=300, min_depth=2, depth_bytes=8000)
        for name in speeds:
            sched.add_source(name)
        sim = Sim(sched, speeds)
        took = sim.run()
        bound = (702 * 1000 + 300) / sum(speeds.values())
        self.assertTrue(sched.done)
        self.assertGreaterEqual(took, bound)
        self.assertLess(took, bound * 1.02)
        used = sched.sources_used()
        self.assertEqual(sum(used.values()), 703)
        for name, speed in speeds.items():
            self.assertLess(abs(used[name] / 703 - speed / sum(speeds.values())), 0.01)
        blocks = [b for _, _, b in sim.asked]
        first_repeat = next((i for i, b in enumerate(blocks) if b in blocks[:i]), len(blocks))
        self.assertEqual(sorted(blocks[:first_repeat]), list(range(703)))

    def test_faster_sources_served_first(self):
        """With one block left to ask, the fastest source gets it."""
        sched = make(5, size=1000, min_depth=1, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b")
        first = dict(sched.next_requests(0.0))
        sched.received("a", first["a"], 1.0)   # 1000 B/s
        sched.received("b", first["b"], 0.5)   # 2000 B/s
        self.assertEqual([s for s, _ in sched.next_requests(1.0)], ["b", "a"])


class RarityTests(SynchronousTestCase):
    def test_partial_holder_asked_only_for_its_blocks(self):
        sched = make(6, min_depth=10)
        sched.add_source("p", [0, 1])
        self.assertEqual(sorted(b for _, b in sched.next_requests(0.0)), [0, 1])
        self.assertEqual(sched.next_requests(0.0), [])
        sched.update_source("p", [1, 4])
        self.assertEqual(sched.next_requests(0.0), [("p", 4)])
        sched.add_source("p", None)  # its download finished
        self.assertEqual(sorted(b for _, b in sched.next_requests(0.0)), [2, 3, 5])

    def test_rarest_first(self):
        """
        Whatever the random order, a block one source has is asked before
        blocks every source has.
        """
        for seed in range(20):
            sched = make(10, seed=seed, min_depth=1, depth_bytes=0)
            sched.add_source("a", range(10))
            sched.add_source("b", [b for b in range(10) if b != 7])
            self.assertEqual(sched.next_requests(0.0)[0], ("a", 7))

    def test_rarest_first_with_a_full_holder(self):
        for seed in range(20):
            sched = make(10, seed=seed, min_depth=1, depth_bytes=0)
            sched.add_source("full")
            sched.add_source("p", [b for b in range(10) if b != 3])
            self.assertIn(("full", 3), sched.next_requests(0.0))

    def test_swarm_diversity(self):
        """
        Downloaders of the same file with different seeds start on
        different blocks; the same seed gives the same order.
        """
        def first(seed: int) -> List[int]:
            sched = make(200, seed=seed, min_depth=4, depth_bytes=0)
            sched.add_source("s")
            return [b for _, b in sched.next_requests(0.0)]

        self.assertEqual(first(1), first(1))
        self.assertNotEqual(first(1)[0], first(2)[0])
        self.assertGreater(len({first(seed)[0] for seed in range(10)}), 5)


class EndgameTests(SynchronousTestCase):
    def run_fast_and_slow(self, copies: int, partial: bool = False) -> Tuple[float, Sim]:
        sched = make(20, size=1000, min_depth=2, depth_bytes=2000, endgame_copies=copies)
        sched.add_source("fast", range(19) if partial else None)
        sched.add_source("slow", range(19) if partial else None)
        if partial:  # a third one is lost with requests in flight: pending again
            sched.add_source("lost", range(19))
            sched.next_requests(0.0)
            self.assertEqual(len(sched.remove_source("lost")), 2)
        sim = Sim(sched, {"fast": 10000.0, "slow": 100.0})  # 0.1 s and 10 s a block
        return sim.run(), sim

    def test_endgame_duplicates_the_slow_sources_blocks(self):
        """
        A very slow source holding the last blocks in flight does not hold
        the file back: the fast source is asked them too, the slow copies
        are cancelled, and the file finishes at the fast source's pace.
        """
        took, sim = self.run_fast_and_slow(copies=2)
        self.assertTrue(sim.sched.done)
        self.assertLess(took, 2.5)
        self.assertEqual(sim.sched.sources_used(), {"fast": 20})
        slow = {b for _, s, b in sim.asked if s == "slow"}
        self.assertEqual(len(slow), 2)
        self.assertEqual(set(sim.cancelled), {("slow", b) for b in slow})
        self.assertEqual(sim.max_copies, 2)
        self.assertEqual(sim.sched.in_flight, {"fast": frozenset(), "slow": frozenset()})

    def test_endgame_with_partial_holders(self):
        """
        The same with partial holders, one of them lost, and a block none
        has: the endgame comes when every block some source has is asked.
        """
        took, sim = self.run_fast_and_slow(copies=2, partial=True)
        self.assertEqual(sim.sched.missing, 1)
        self.assertLess(took, 12.5)
        self.assertEqual(sim.sched.sources_used(), {"fast": 19})
        self.assertEqual(sim.sched.waiting_reason(took), "no source has block 19")

    def test_without_endgame_the_slow_source_holds_the_file(self):
        took, sim = self.run_fast_and_slow(copies=1)
        self.assertTrue(sim.sched.done)
        self.assertGreaterEqual(took, 10.0)
        self.assertEqual(sim.max_copies, 1)

    def test_no_copies_before_the_endgame(self):
        """
        A partial holder whose blocks are all in flight elsewhere waits
        while other blocks are still to be asked: no copies yet.
        """
        sched = make(10, min_depth=1, depth_bytes=0)
        sched.add_source("full")
        [(_, block)] = sched.next_requests(0.0)
        sched.add_source("partial", [block])
        self.assertEqual(sched.next_requests(0.0), [])
        self.assertEqual(sched.in_flight["partial"], frozenset())

    def test_never_more_than_endgame_copies(self):
        sched = make(3, min_depth=5, endgame_copies=2)
        for name in "abcd":
            sched.add_source(name)
        sched.next_requests(0.0)
        copies = Counter(b for blocks in sched.in_flight.values() for b in blocks)
        self.assertEqual(copies, {0: 2, 1: 2, 2: 2})

    def test_late_copy_ignored(self):
        """A copy whose cancel crossed it is ignored."""
        sched = make(1, min_depth=1, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b")
        self.assertEqual(len(sched.next_requests(0.0)), 2)
        self.assertEqual(sched.received("a", 0, 1.0), [("b", 0)])
        self.assertEqual(sched.received("b", 0, 2.0), [])
        self.assertEqual(sched.sources_used(), {"a": 1})

    def test_no_duplicate_where_it_cannot_help(self):
        """
        A measured source slower than the one a block waits on is not asked
        it too.
        """
        sched = make(4, size=1000, min_depth=1, depth_bytes=0)
        sched.add_source("fast")
        sched.add_source("slow")
        first = dict(sched.next_requests(0.0))
        sched.received("fast", first["fast"], 0.1)
        sched.received("slow", first["slow"], 10.0)
        now = 10.0
        new = dict(sched.next_requests(now))          # both asked a last block
        self.assertEqual(len(new), 2)
        sched.received("slow", new["slow"], 20.0)     # slow is free, fast's block due soon
        self.assertEqual(sched.next_requests(10.05), [])


class FailureTests(SynchronousTestCase):
    def test_bad_block_benches_and_goes_elsewhere(self):
        sched = make(30, min_depth=1, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b")
        first = dict(sched.next_requests(0.0))
        bad = first["a"]
        sched.failed("a", bad, 1.0, bench_until=11.0)
        self.assertEqual(sched.next_wakeup(1.0), 11.0)
        sched.received("b", first["b"], 1.0)
        self.assertEqual(sched.next_requests(1.0), [("b", bad)])
        asked_a = []
        now = 1.0
        for _ in range(60):
            if sched.done:
                break
            now += 1.0
            for source, block in sched.next_requests(now):
                if source == "a":
                    self.assertGreaterEqual(now, 11.0)
                    asked_a.append(block)
            for source, blocks in sched.in_flight.items():
                for block in blocks:
                    sched.received(source, block, now)
        self.assertTrue(asked_a)
        self.assertNotIn(bad, asked_a)

    def test_bad_source_not_asked_that_block_again_while_another_has_it(self):
        sched = make(2, min_depth=1, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b", [1])
        self.assertIn(("a", 0), sched.next_requests(0.0))
        sched.failed("a", 0, 1.0, bench_until=5.0)
        self.assertEqual(sched.next_requests(2.0), [])  # a benched, b lacks 0
        sched.update_source("b", [0])
        sched.received("b", 1, 6.0)
        self.assertEqual(sched.next_requests(6.0), [("b", 0)])  # a not asked again
        sched.failed("b", 0, 8.0)
        # both failed it: either may be asked again
        self.assertIn(("a", 0), sched.next_requests(8.0))

    def test_only_holder_asked_again_after_its_bench(self):
        sched = make(3, min_depth=1, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b")
        first = dict(sched.next_requests(0.0))
        sched.failed("a", first["a"], 1.0, bench_until=10.0)
        sched.remove_source("b")
        self.assertEqual(sched.next_requests(5.0), [])
        self.assertIn("benched", sched.waiting_reason(5.0))
        self.assertEqual(len(sched.next_requests(10.0)), 1)

    def test_remove_source_returns_its_blocks_to_pending(self):
        sched = make(12, min_depth=3, depth_bytes=0)
        sched.add_source("a")
        sched.add_source("b")
        sched.next_requests(0.0)
        lost = set(sched.in_flight["a"])
        self.assertEqual(set(sched.remove_source("a")), lost)
        self.assertEqual(sched.remove_source("a"), [])
        self.assertNotIn("a", sched.in_flight)
        sim = Sim(sched, {"b": 1000.0})
        sim.run()
        asked_b = {b for _, _, b in sim.asked}
        self.assertTrue(lost <= asked_b)
        self.assertTrue(sched.done)

    def test_unknown_source_is_harmless(self):
        sched = make(2)
        sched.failed("nobody", 0, 0.0)
        self.assertEqual(sched.remove_source("nobody"), [])
        self.assertEqual(sched.received("nobody", 1, 0.0), [])  # verified all the same
        self.assertEqual(sched.missing, 1)


class TimeTests(SynchronousTestCase):
    def test_stalled_source_overdue(self):
        """
        A source that sends nothing for request_timeout: all its requests
        are overdue, pending again, and not asked of it while another
        source has them.
        """
        sched = make(6, min_depth=3, depth_bytes=0, request_timeout=30.0)
        sched.add_source("a")
        asked = sched.next_requests(0.0)
        self.assertEqual(len(asked), 3)
        self.assertIsNone(sched.waiting_reason(1.0))
        self.assertEqual(sched.next_wakeup(0.0), 30.0)
        self.assertEqual(sched.overdue(29.9), [])
        self.assertEqual(sorted(sched.overdue(30.0)), sorted(asked))
        self.assertEqual(sched.in_flight["a"], frozenset())
        self.assertIsNone(sched.next_wakeup(30.0))
        sched.add_source("b")
        self.assertEqual({s for s, _ in sched.next_requests(30.0)}, {"a", "b"})
        self.assertEqual(sched.in_flight["b"], {b for _, b in asked})

    def test_only_the_skipped_request_overdue(self):
        """
        A source that keeps sending but skipped its oldest request: only
        that one is overdue, timed from when it became the oldest.
        """
        sched = make(6, min_depth=3, depth_bytes=0, request_timeout=30.0)
        sched.add_source("a")
        asked = [b for _, b in sched.next_requests(0.0)]
        sched.received("a", asked[1], 10.0)
        self.assertEqual(len(sched.next_requests(10.0)), 1)
        sched.received("a", asked[2], 20.0)
        self.assertEqual(len(sched.next_requests(20.0)), 1)
        self.assertEqual(sched.next_wakeup(20.0), 30.0)
        self.assertEqual(sched.overdue(30.0), [("a", asked[0])])
        self.assertEqual(len(sched.in_flight["a"]), 2)
        self.assertEqual(sched.next_wakeup(30.0), 60.0)

    def test_queue_is_not_a_timeout(self):
        """
        A slow source whose requests wait their turn is not overdue while
        it sends one block per request_timeout.
        """
        sched = make(10, min_depth=5, depth_bytes=0, request_timeout=30.0)
        sched.add_source("a")
        order = [b for _, b in sched.next_requests(0.0)]
        for now in (20.0, 40.0, 60.0, 80.0):
            self.assertEqual(sched.overdue(now), [])
            sched.received("a", order.pop(0), now)
            order += [b for _, b in sched.next_requests(now)]
        self.assertEqual(sched.next_wakeup(80.0), 110.0)

    def test_waiting_reasons(self):
        sched = make(8, min_depth=8)
        self.assertEqual(sched.waiting_reason(0.0), "no source for this file")
        sched.add_source("a", [0, 1, 2, 4, 5, 6])
        sched.next_requests(0.0)
        self.assertEqual(sched.waiting_reason(0.0), "no source has blocks 3, 7")
        sched.failed("a", 0, 0.0, bench_until=12.0)
        self.assertEqual(sched.waiting_reason(0.0),
                         "every source benched, the first back in 12 s")
        sched.add_source("b", [3])
        self.assertEqual(sched.waiting_reason(0.0),
                         "no source has block 7; block 0 only at benched sources (back in 12 s)")
        sched.next_requests(0.0)
        sched.update_source("b", [7])
        sched.next_requests(0.0)
        for block in (1, 2, 3, 4, 5, 6):
            sched.received("b" if block == 3 else "a", block, 1.0)
        self.assertEqual(sched.waiting_reason(12.0), None)
        sched.next_requests(12.0)
        self.assertEqual(sched.waiting_reason(12.0),
                         "waiting for blocks 7, 0 in flight from a, b")


@st.composite
def downloads(draw):
    n = draw(st.integers(1, 40))
    size = draw(st.integers(1, 4)) * 100
    last = draw(st.integers(1, size))
    have = draw(st.sets(st.integers(0, n - 1)))
    sources = draw(st.lists(
        st.one_of(st.none(), st.sets(st.integers(0, n - 1))), min_size=1, max_size=4))
    actions = draw(st.lists(st.tuples(
        st.sampled_from(["ok", "ok", "ok", "bad", "refuse", "remove", "update", "tick"]),
        st.integers(0, 10**6)), max_size=120))
    return n, size, last, have, sources, actions, draw(st.integers(0, 2**32))


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(downloads(), st.integers(1, 3), st.integers(1, 3))
    def test_invariants(self, download, min_depth, copies):
        """
        Whatever happens, the scheduler never asks a verified block, a
        block of a source that lacks it, more than a source's depth or
        more than endgame_copies copies; and the download finishes when
        every block is held by a live source.
        """
        n, size, last, have, sources, actions, seed = download
        sizes = [size] * (n - 1) + [last]
        sched = BlockScheduler(sizes, have, rng=random.Random(seed), min_depth=min_depth,
                               depth_bytes=size * 2, endgame_copies=copies,
                               request_timeout=30.0)
        rng = random.Random(seed)
        held: Dict[str, Optional[Set[int]]] = {}
        for i, blocks in enumerate(sources):
            held[f"s{i}"] = blocks
            sched.add_source(f"s{i}", blocks)
        verified = set(have)
        now = 0.0

        def ask():
            for source, block in sched.next_requests(now):
                self.assertNotIn(block, verified)
                blocks = held[source]
                self.assertTrue(blocks is None or block in blocks)
                self.assertLessEqual(len(sched.in_flight[source]), sched.depth(source))
            copied = Counter(b for bs in sched.in_flight.values() for b in bs)
            self.assertLessEqual(max(copied.values(), default=0), copies)

        ask()
        for action, pick in actions:
            now += 1.0
            flying = sorted((s, b) for s, bs in sched.in_flight.items() for b in bs)
            if action == "tick":
                now += pick % 60
                sched.overdue(now)
            elif action == "remove" and len(held) > 1:
                gone = sorted(held)[pick % len(held)]
                del held[gone]
                sched.remove_source(gone)
            elif action == "update":
                name = sorted(held)[pick % len(held)]
                if held[name] is not None:
                    held[name].add(pick % n)
                    sched.update_source(name, [pick % n])
            elif flying:
                source, block = flying[pick % len(flying)]
                if action == "ok":
                    sched.received(source, block, now)
                    verified.add(block)
                else:
                    bench = now + pick % 20 if action == "bad" else None
                    sched.failed(source, block, now, bench_until=bench)
            ask()
            self.assertEqual(sched.missing, n - len(verified))
        # then every source answers everything, in a random order
        for _ in range(10 * n + 100):
            if sched.done:
                break
            flying = sorted((s, b) for s, bs in sched.in_flight.items() for b in bs)
            if flying:
                source, block = rng.choice(flying)
                sched.received(source, block, now)
                verified.add(block)
            else:
                wakeup = sched.next_wakeup(now)
                if wakeup is None:
                    break
                now = max(now, wakeup)
            ask()
        reachable = all(any(b is None or i in b for b in held.values())
                        for i in range(n) if i not in verified)
        self.assertEqual(sched.done, reachable)
        if not reachable:
            self.assertIn("no source has", sched.waiting_reason(now))


class PerformanceTests(SynchronousTestCase):
    def test_large_file_many_sources(self):
        """
        4,096 blocks from 8 sources (full and partial, different speeds),
        next_requests after every block: well under a second.
        """
        n = 4096
        sched = BlockScheduler([128 * KIB] * n, rng=random.Random(0))
        rng = random.Random(1)
        speeds = {}
        for i in range(8):
            name = f"s{i}"
            speeds[name] = (i + 1) * 10 * 2**20
            sched.add_source(name, None if i < 4 else rng.sample(range(n), n // 2))
        started = time.perf_counter()
        Sim(sched, speeds).run()
        took = time.perf_counter() - started
        self.assertTrue(sched.done)
        self.assertLess(took, 1.0)


class EndgameWaitTests(SynchronousTestCase):
    def test_no_copy_of_a_block_just_asked(self):
        """
        With endgame_wait, a block in flight is copied to another source
        only once it has been on its way that long.
        """
        sched = BlockScheduler([10] * 2, rng=random.Random(1), min_depth=2,
                               endgame_wait=1.0)
        sched.add_source("slow")
        self.assertEqual(len(sched.next_requests(0.0)), 2)
        sched.add_source("fast")
        self.assertEqual(sched.next_requests(0.5), [])
        copies = sched.next_requests(1.0)
        self.assertEqual(sorted(b for s, b in copies), [0, 1])
        self.assertEqual({s for s, b in copies}, {"fast"})


class RunsOrderTests(SynchronousTestCase):
    def test_runs_in_file_order_in_a_random_order(self):
        """
        With order=RUNS, one source is asked for runs of 16 MiB of blocks,
        each in file order, the runs in an order that depends on the seed
        (disks write runs faster than scattered blocks; downloaders still
        start apart).
        """
        mib = 2**20
        firsts = set()
        for seed in range(6):
            sched = BlockScheduler([mib] * 64, rng=random.Random(seed), min_depth=64,
                                   order=RUNS)
            sched.add_source("a")
            asked = [b for _, b in sched.next_requests(0.0)]
            runs = [asked[i:i + 16] for i in range(0, 64, 16)]
            for run in runs:
                self.assertEqual(run, list(range(run[0], run[0] + 16)))
                self.assertEqual(run[0] % 16, 0)
            self.assertEqual(sorted(asked), list(range(64)))
            firsts.add(asked[0])
        self.assertGreater(len(firsts), 1)
        self.assertRaises(ValueError, BlockScheduler, [1], rng=random.Random(1), order="x")
