# -*- test-case-name: tests.test_scheduler -*-
"""
The bookkeeping behind L{p2ptwisted.core.scheduler.BlockScheduler}: the
candidate blocks of a download in rarest-first order (L{Candidates}), and
one source's pipe of requests and measured speed (L{Pipe}).

Pure: no I/O, times passed in.
"""

from __future__ import annotations

import heapq
import math
import random
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import attrs

#: Weight kept by a source's byte and second counts at each block it sends
#: (a window of about five blocks).
DECAY = 0.8

_Entry = Tuple[int, int, int]  # (partial holders, random rank, block)


@attrs.define(eq=False)
class Pipe:
    """
    One source's requests, oldest first, and its speed.

    @ivar in_flight: block -> time asked, oldest first (served in order).
    @ivar head_since: when the oldest request became the oldest.
    @ivar last_arrival: when a block last came from this source.
    """

    name: str
    in_flight: Dict[int, float] = attrs.Factory(dict)
    head_since: float = 0.0
    last_arrival: Optional[float] = None
    bench_until: float = -math.inf
    bytes: float = 0.0
    seconds: float = 0.0

    @property
    def speed(self) -> Optional[float]:
        """Bytes per second, or C{None} before the first timed block."""
        return self.bytes / self.seconds if self.seconds > 0 else None

    def ask(self, block: int, now: float) -> None:
        if not self.in_flight:
            self.head_since = now
        self.in_flight[block] = now

    def drop(self, block: int, now: Optional[float]) -> None:
        """
        The request is over; if it was the oldest, the next one's clock
        starts C{now} (the source should be on it now).
        """
        if block in self.in_flight:
            head = next(iter(self.in_flight)) == block
            del self.in_flight[block]
            if head and now is not None:
                self.head_since = now

    def measure(self, size: int, asked: float, now: float) -> None:
        """
        A block of C{size} asked at C{asked} arrived at C{now}: it was
        worked on since the later of its request and the previous arrival
        (so a queue of requests does not make a source look slow).
        """
        start = asked if self.last_arrival is None else max(asked, self.last_arrival)
        self.bytes = self.bytes * DECAY + size
        self.seconds = self.seconds * DECAY + max(0.0, now - start)

    def etas(self, block_size: int, now: float) -> Iterator[Tuple[int, float]]:
        """
        When each block in flight is expected; infinity where no speed is
        known or the forecast has already failed.
        """
        speed = self.speed
        for k, block in enumerate(self.in_flight):
            eta = math.inf if speed is None else self.head_since + (k + 1) * block_size / speed
            yield block, (math.inf if eta < now else eta)

    def eta_new(self, block_size: int, now: float, extra: int = 0) -> float:
        """When a block asked now after C{extra} others would be expected."""
        speed = self.speed
        if speed is None:
            return now
        start = self.head_since if self.in_flight else now
        return max(now, start + (len(self.in_flight) + extra + 1) * block_size / speed)


class Candidates:
    """
    The pending blocks of a download (neither verified nor in flight),
    who has them, and which each source should be asked next.

    Kept in heaps of (partial holders, rank, block): one shared by full
    holders, one per partial holder for its blocks.  An entry is pushed
    whenever a block becomes pending or its rarity changes; stale ones are
    dropped when they surface; a heap grown stale is rebuilt.  So a pick
    costs about the blocks it picks, not blocks times sources.
    """

    def __init__(self, n: int, pending: Set[int], rng: random.Random, run: int = 1):
        # Runs of C{run} blocks in file order, the runs in a random order:
        # a disk writes a run much faster than scattered blocks, and
        # downloaders of the same file still start on different runs (and
        # seldom ask a source for a block another one is being sent).
        runs = [list(range(i, min(i + run, n))) for i in range(0, n, max(1, run))]
        rng.shuffle(runs)
        order = [block for r in runs for block in r]
        self.rank = [0] * n
        for rank, block in enumerate(order):
            self.rank[block] = rank
        self.pending = set(pending)
        self._count = [0] * n  # partial holders per block
        self._holders: Dict[int, Set[str]] = {}  # block -> partial holders
        self._full: Set[str] = set()
        self._partial: Dict[str, Set[int]] = {}
        self._held_pending = 0  # pending blocks with a partial holder
        self._failed: Dict[int, Set[str]] = {}  # block -> live holders that failed it
        self._heap: List[_Entry] = [(0, self.rank[b], b) for b in self.pending]
        heapq.heapify(self._heap)
        self._heaps: Dict[str, List[_Entry]] = {}

    def has(self, source: str, block: int) -> bool:
        return source in self._full or block in self._partial.get(source, ())

    def add(self, source: str, blocks: Optional[Iterable[int]]) -> None:
        """C{source} has C{blocks} (C{None}: all of them, now or from now on)."""
        if source in self._full:
            return
        if blocks is None:
            self.remove(source, forget_failures=False)
            self._full.add(source)
            return
        mine = self._partial.setdefault(source, set())
        self._heaps.setdefault(source, [])
        for block in blocks:
            if block not in mine:
                mine.add(block)
                self._holders.setdefault(block, set()).add(source)
                self._recount(block, 1)

    def remove(self, source: str, forget_failures: bool = True) -> None:
        """C{source}'s blocks no longer count."""
        self._full.discard(source)
        for block in self._partial.pop(source, ()):
            self._holders[block].discard(source)
            self._recount(block, -1)
        self._heaps.pop(source, None)
        if forget_failures:
            for failed in self._failed.values():
                failed.discard(source)

    def add_pending(self, block: int) -> None:
        """C{block} is wanted again (a request for it failed or was lost)."""
        if block not in self.pending:
            self.pending.add(block)
            self._held_pending += self._count[block] > 0
        self._push(block)

    def take(self, block: int) -> None:
        """C{block} is no longer pending: in flight, or verified."""
        if block in self.pending:
            self.pending.discard(block)
            self._held_pending -= self._count[block] > 0

    def failed(self, source: str, block: int) -> None:
        if self.has(source, block):
            self._failed.setdefault(block, set()).add(source)

    def verified(self, block: int) -> None:
        self.take(block)
        self._failed.pop(block, None)

    def excluded(self, source: str, block: int) -> bool:
        """Whether C{source} failed C{block} while another holder did not."""
        failed = self._failed.get(block, ())
        return source in failed and len(self._full) + self._count[block] > len(failed)

    def exhausted(self) -> bool:
        """Whether no pending block is held by any source (the endgame)."""
        return not self.pending or (not self._full and self._held_pending == 0)

    def pick(self, source: str, want: int) -> List[int]:
        """Up to C{want} pending blocks for C{source}, rarest first, taken."""
        heap = self._heap if source in self._full else self._heaps.get(source, [])
        picked: List[int] = []
        aside: List[_Entry] = []
        while heap and len(picked) < want:
            entry = heapq.heappop(heap)
            count, _, block = entry
            if block not in self.pending or count != self._count[block]:
                continue  # stale
            if self.excluded(source, block):
                aside.append(entry)
                continue
            self.take(block)
            picked.append(block)
        for entry in aside:
            heapq.heappush(heap, entry)
        return picked

    def _recount(self, block: int, delta: int) -> None:
        was = self._count[block] > 0
        self._count[block] += delta
        if block in self.pending:
            self._held_pending += (self._count[block] > 0) - was
            self._push(block)

    def _push(self, block: int) -> None:
        entry = (self._count[block], self.rank[block], block)
        self._push_to(self._heap, entry, None)
        for name in self._holders.get(block, ()):
            self._push_to(self._heaps[name], entry, self._partial[name])

    def _push_to(self, heap: List[_Entry], entry: _Entry, blocks: Optional[Set[int]]) -> None:
        """Push, or rebuild a heap grown stale (amortised: it took that many pushes)."""
        if len(heap) <= 2 * len(self.pending) + 64:
            heapq.heappush(heap, entry)
            return
        live = self.pending if blocks is None else blocks & self.pending
        heap[:] = [(self._count[b], self.rank[b], b) for b in live]
        heapq.heapify(heap)
