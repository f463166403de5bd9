# -*- test-case-name: tests.test_scheduler -*-
"""
Which block of one download to ask from which source, and when.

One L{BlockScheduler} per download of one file version split into blocks.
Sans I/O: the shell tells it what happened (a source came or went, a block
arrived verified, a request failed) and asks it what to do now; times are
floats passed in and randomness comes from an injected C{random.Random},
so every decision is reproducible in a test.

Policies, and why:

 - I{Rarest first}, ties broken by an order fixed at construction,
   random, or (C{order=RUNS}) runs of 16 MiB in file order, the runs in a
   random order:
   blocks few sources have are fetched while those sources are still
   there, and two downloaders of the same file start on different blocks,
   so they have something to give each other (what makes a swarm).
 - I{Depth by speed}: each source keeps up to C{depth_bytes} of requests
   outstanding, scaled by its measured speed over the fastest one's (an
   unmeasured source counts as the fastest: it has to be tried to be
   measured), and never fewer than C{min_depth}.  Faster sources are
   served first.
 - I{Speed}: bytes over service time, both decayed at each block (a
   window of about five blocks).  A block's service time is from when the
   source could start on it -- its request, or the previous arrival from
   that source if later -- to its arrival, so a pipelined queue does not
   make a source look slow.
 - I{Endgame}: once every block a live source has is verified or in
   flight, a source with spare depth duplicates blocks in flight
   elsewhere for at least C{endgame_wait} seconds (a block simply on its
   way is not asked twice: a copy costs the sender's bandwidth), those
   expected last first (a slow or late source's, or the ones in flight
   longest), at most C{endgame_copies} requests per block,
   and only where its own copy is expected sooner.  The first copy in wins;
   L{BlockScheduler.received} returns the others for the shell to cancel.
 - I{Failures}: a source that failed a block (bad hash, refusal, overdue) is
   not asked that block again while a source that has not failed it has
   it; the shell may also bench a source until a time (its penalty).
 - I{Overdue}: requests are served in order, so only a source's oldest
   request is timed, from when it became the oldest: after
   C{request_timeout} without its arrival, it is overdue; if nothing at all
   came from that source meanwhile, the source is stalled and all its
   requests are.  A slow source is not timed out by its queue length; its
   speed is not used to shorten the limit, as a source's speed to us swings
   with its other uploads (the endgame covers slow sources).
"""

from __future__ import annotations

import math
import random
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

from p2ptwisted.core.blockpick import Candidates, Pipe

#: Blocks named at most in a L{BlockScheduler.waiting_reason}.
NAMED_BLOCKS = 8

#: How blocks equally rare are ordered: in a random order, or in runs of
#: L{RUN_BYTES} in file order, the runs in a random order (see
#: L{Candidates}).
RANDOM, RUNS = "random", "runs"
RUN_BYTES = 16 * 1024 * 1024


class BlockScheduler:
    """
    The blocks of one download: which to ask from which source.

    The candidates (pending blocks, rarity, failures) are a L{Candidates};
    each source's requests and speed a L{Pipe}.
    """

    def __init__(self, sizes: Sequence[int], have: Iterable[int] = (), *, rng: random.Random,
                 min_depth: int = 2, depth_bytes: int = 4 * 2**20, endgame_copies: int = 2,
                 request_timeout: float = 30.0, endgame_wait: float = 0.0,
                 order: str = RANDOM):
        if order not in (RANDOM, RUNS):
            raise ValueError(f"order is {RANDOM!r} or {RUNS!r}")
        if min_depth < 1 or endgame_copies < 1 or any(size < 0 for size in sizes):
            raise ValueError("min_depth and endgame_copies must be at least 1, sizes >= 0")
        self.sizes = list(sizes)
        self.min_depth = min_depth
        self.depth_bytes = depth_bytes
        self.endgame_copies = endgame_copies
        self.endgame_wait = endgame_wait
        self.request_timeout = request_timeout
        self._block_size = max(self.sizes, default=1) or 1
        self._have: Set[int] = {self._check(block) for block in have}
        self._blocks = Candidates(len(self.sizes), set(range(len(self.sizes))) - self._have, rng,
                                  run=max(1, RUN_BYTES // self._block_size) if order == RUNS else 1)
        self._requests: Dict[int, Dict[str, float]] = {}  # block -> source -> asked
        self._sources: Dict[str, Pipe] = {}
        self._used: Dict[str, int] = {}

    # -- state -------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every block verified: the file can be checked whole and renamed."""
        return len(self._have) == len(self.sizes)

    @property
    def missing(self) -> int:
        """Blocks not verified yet, for progress."""
        return len(self.sizes) - len(self._have)

    @property
    def in_flight(self) -> Dict[str, FrozenSet[int]]:
        """Per source, the blocks asked of it and not answered (a copy)."""
        return {name: frozenset(s.in_flight) for name, s in self._sources.items()}

    def sources_used(self) -> Dict[str, int]:
        """Per source, blocks received from it (gone sources too): for the log."""
        return dict(self._used)

    def speed(self, source: str) -> Optional[float]:
        """A source's measured bytes per second, or C{None}: for status and tests."""
        return self._sources[source].speed

    def depth(self, source: str) -> int:
        """How many requests C{source} may have outstanding now (see module doc)."""
        return self._depth(self._sources[source], self._fastest())

    # -- sources -------------------------------------------------------------

    def add_source(self, source: str, blocks: Optional[Iterable[int]] = None) -> None:
        """
        A peer that can serve blocks: C{blocks=None} for a full holder, else
        the blocks it has verified.  Adding a known source adds its blocks
        (and makes it a full holder with C{None}: its download finished).
        """
        checked = None if blocks is None else [self._check(block) for block in blocks]
        self._sources.setdefault(source, Pipe(source))
        self._blocks.add(source, None if checked is None else
                         [block for block in checked if block not in self._have])

    def update_source(self, source: str, blocks: Iterable[int]) -> None:
        """
        C{source} advertises more verified blocks (a partial holder's
        progress); an unknown source is added as a partial holder.
        """
        self.add_source(source, blocks)

    def remove_source(self, source: str) -> List[int]:
        """
        The connection to C{source} is gone: its requests will not be
        answered, so their blocks are pending again.  Returns them.
        """
        src = self._sources.pop(source, None)
        if src is None:
            return []
        self._blocks.remove(source)
        blocks = list(src.in_flight)
        for block in blocks:
            self._unrequest(block, source)
            self._make_pending(block)
        return blocks

    def bench(self, source: str, until: float) -> None:
        """Do not ask C{source} anything before C{until} (a penalty)."""
        src = self._sources.get(source)
        if src is not None:
            src.bench_until = max(src.bench_until, until)

    # -- events --------------------------------------------------------------

    def next_requests(self, now: float) -> List[Tuple[str, int]]:
        """
        The (source, block) requests to send now, already counted in
        flight: every usable source's pipe filled up to its depth, the
        fastest first, rarest blocks first, then endgame duplicates.
        """
        sent: List[Tuple[str, int]] = []
        etas: Optional[Dict[int, float]] = None
        fastest = self._fastest()
        usable = [s for s in self._sources.values() if s.bench_until <= now]
        usable.sort(key=lambda s: (-(s.speed or fastest), s.name))
        for src in usable:
            spare = self._depth(src, fastest) - len(src.in_flight)
            if spare <= 0:
                continue
            picked = self._blocks.pick(src.name, spare)
            if len(picked) < spare and self._blocks.exhausted():
                if etas is None:
                    etas = self._etas(now)
                picked += self._duplicates(src, spare - len(picked), etas, now)
            for block in picked:
                src.ask(block, now)
                self._requests.setdefault(block, {})[src.name] = now
                sent.append((src.name, block))
        return sent

    def received(self, source: str, block: int, now: float) -> List[Tuple[str, int]]:
        """
        C{block} arrived from C{source} and was verified.  Returns the other
        requests for it still in flight (endgame copies) for the shell to
        cancel; they are no longer counted.  A block already verified
        (a copy whose cancel crossed it) is ignored.
        """
        if self._check(block) in self._have:
            return []
        src = self._sources.get(source)
        asked = None if src is None else src.in_flight.get(block)
        if src is not None and asked is not None:
            src.measure(self.sizes[block], asked, now)
        if src is not None:
            src.last_arrival = now
        self._used[source] = self._used.get(source, 0) + 1
        self._have.add(block)
        self._blocks.verified(block)
        others = [name for name in self._requests.get(block, {}) if name != source]
        for name in [*others, source]:
            self._unrequest(block, name, now)
        return [(name, block) for name in others]

    def failed(self, source: str, block: int, now: float,
               bench_until: Optional[float] = None) -> None:
        """
        The request of C{block} from C{source} failed (bad hash, refused,
        cancelled): the block is pending again, and C{source} is not asked
        it again while a source that has not failed it has it.  With
        C{bench_until}, C{source} is not asked anything before then.
        """
        src = self._sources.get(source)
        if src is None or self._check(block) in self._have:
            return
        self._blocks.failed(source, block)
        if bench_until is not None:
            self.bench(source, bench_until)
        self._unrequest(block, source, now)
        self._make_pending(block)

    def overdue(self, now: float) -> List[Tuple[str, int]]:
        """
        Requests to give up on (see module doc): each source's oldest
        request unanswered for C{request_timeout} since it became the
        oldest, or all of a stalled source's.  The shell cancels them; they
        count as failed, without bench.
        """
        late: List[Tuple[str, int]] = []
        for src in list(self._sources.values()):
            if src.in_flight and now - src.head_since >= self.request_timeout:
                stalled = src.last_arrival is None or src.last_arrival <= src.head_since
                blocks = list(src.in_flight) if stalled else [next(iter(src.in_flight))]
                for block in blocks:
                    self.failed(src.name, block, now)
                    late.append((src.name, block))
        return late

    def next_wakeup(self, now: float) -> Optional[float]:
        """
        The earliest time after C{now} something changes by itself (a bench
        ends, a request becomes overdue), for the shell's timer; C{None} if
        nothing will.
        """
        times = [s.bench_until for s in self._sources.values() if s.bench_until > now]
        times += [s.head_since + self.request_timeout
                  for s in self._sources.values() if s.in_flight]
        return min(times, default=None)

    def waiting_reason(self, now: float) -> Optional[str]:
        """
        Why the download is not moving, for a "stuck at 99 %" message:
        blocks no source has, blocks only benched sources can give, or
        (nothing else left) blocks waiting in flight.  C{None} when done or
        when every pending block can be asked.
        """
        if self.done:
            return None
        if not self._sources:
            return "no source for this file"
        benched = [s for s in self._sources.values() if s.bench_until > now]
        if len(benched) == len(self._sources):
            back = min(s.bench_until for s in benched) - now
            return f"every source benched, the first back in {back:.0f} s"
        orphans: List[int] = []
        waiting: List[int] = []
        back = math.inf
        for block in sorted(self._blocks.pending):
            holders = [s for s in self._sources.values() if self._blocks.has(s.name, block)
                       and not self._blocks.excluded(s.name, block)]
            if not holders:
                orphans.append(block)
            elif all(s.bench_until > now for s in holders):
                waiting.append(block)
                back = min(back, *(s.bench_until - now for s in holders))
        parts = []
        if orphans:
            parts.append(f"no source has {_blocks(orphans)}")
        if waiting:
            parts.append(f"{_blocks(waiting)} only at benched sources (back in {back:.0f} s)")
        if not parts and not self._blocks.pending:
            late = sorted(self._requests, key=lambda b: min(self._requests[b].values()))
            names = sorted({n for b in late for n in self._requests[b]})
            parts.append(f"waiting for {_blocks(late)} in flight from {', '.join(names)}")
        return "; ".join(parts) or None

    # -- internals -------------------------------------------------------------

    def _check(self, block: int) -> int:
        if not 0 <= block < len(self.sizes):
            raise ValueError(f"block {block} out of range (0..{len(self.sizes) - 1})")
        return block

    def _fastest(self) -> float:
        return max((s.speed or 0.0 for s in self._sources.values()), default=0.0)

    def _depth(self, src: Pipe, fastest: float) -> int:
        speed = src.speed
        ratio = speed / fastest if speed and fastest else 1.0
        return max(self.min_depth, int(self.depth_bytes * ratio // self._block_size))

    def _make_pending(self, block: int) -> None:
        """C{block} is neither verified nor in flight: a candidate again."""
        if block not in self._have and block not in self._requests:
            self._blocks.add_pending(block)

    def _unrequest(self, block: int, source: str, now: Optional[float] = None) -> None:
        """The request of C{block} from C{source} is over, one way or another."""
        src = self._sources.get(source)
        if src is not None:
            src.drop(block, now)
        copies = self._requests.get(block)
        if copies is not None:
            copies.pop(source, None)
            if not copies:
                del self._requests[block]

    def _etas(self, now: float) -> Dict[int, float]:
        """Per block in flight, when its first copy is expected."""
        etas: Dict[int, float] = {}
        for src in self._sources.values():
            for block, eta in src.etas(self._block_size, now):
                etas[block] = min(eta, etas.get(block, math.inf))
        return etas

    def _duplicates(self, src: Pipe, want: int, etas: Dict[int, float],
                    now: float) -> List[int]:
        """Endgame: up to C{want} blocks in flight elsewhere to ask C{src} too."""
        rank, has, excluded = self._blocks.rank, self._blocks.has, self._blocks.excluded
        candidates = sorted(
            (-etas.get(block, math.inf), min(copies.values()), rank[block], block)
            for block, copies in self._requests.items()
            if len(copies) < self.endgame_copies and src.name not in copies
            and now - min(copies.values()) >= self.endgame_wait
            and has(src.name, block) and not excluded(src.name, block))
        picked: List[int] = []
        for minus_eta, _, _, block in candidates[:want]:
            mine = src.eta_new(self._block_size, now, len(picked))
            if mine >= -minus_eta:
                break
            picked.append(block)
            etas[block] = mine
        return picked


def _blocks(blocks: List[int]) -> str:
    """C{blocks 3, 7} or C{blocks 1, 2, ... and 5 more}, for a message."""
    named = ", ".join(str(b) for b in blocks[:NAMED_BLOCKS])
    more = len(blocks) - NAMED_BLOCKS
    word = "block" if len(blocks) == 1 else "blocks"
    return f"{word} {named}" + (f" and {more} more" if more > 0 else "")
