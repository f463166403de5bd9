# -*- test-case-name: tests.test_sim_swarm -*-
"""
A deterministic swarm simulator: one file, block by block, through a mesh.

Node 0 holds a file; every other node wants it.  Each downloader runs the
real L{BlockScheduler} with the real node's parameters (L{DEPTH_BYTES},
L{ENDGAME_WAIT}, a tick every L{TICK}), advertises its verified blocks with
a HAVE at most every L{HAVE_EVERY} seconds to the nodes that lack the file,
serves the blocks it has verified, and says it holds the whole file when
done: what L{p2ptwisted.swarm} and L{p2ptwisted.holders} do on a real node,
without sockets or disks, on a L{SimClock}.  So swarm behaviour (how much
node 0 uploads, how long until all have the file, what a bad or departing
node costs) is measured deterministically: a seed replays exactly.

The network is a fluid model (L{Network}): each node has an upload and a
download rate in bytes per second; a connection serves its block requests
one at a time, in order (as the scheduler assumes); the blocks moving at
once share the rates max-min fairly (each node's upload among its
connections, each node's download among its sources), as TCP flows
roughly do.  A block, a request, a cancel, a HAVE take the link's one-way
latency to cross it; small messages use no bandwidth.

Faults: a node that corrupts every block it sends (its receivers bench it
with the real L{Sources} penalties and drop it after L{DROP_AFTER} bad
blocks), and a node that leaves at a given time (its connections are lost).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Deque, Dict, FrozenSet, List, Optional, Set, Tuple

import attrs

from p2ptwisted.core.blocks import block_lengths
from p2ptwisted.core.scheduler import BlockScheduler
from p2ptwisted.core.sources import DROP_AFTER, Sources
from p2ptwisted.holders import HAVE_EVERY
from p2ptwisted.sim.mesh import SimClock
from p2ptwisted.swarm import DEPTH_BYTES, ENDGAME_WAIT, TICK

__all__ = ["DROP_AFTER", "Network", "SwarmNode", "SwarmReport", "SwarmSim", "mbit"]

#: Bytes left under which a block counts as sent (float rounding).
EPSILON = 1e-3

VERSION = ("file", "hash")


def mbit(rate: float) -> float:
    """Megabits per second in bytes per second."""
    return rate * 1e6 / 8


@attrs.define(eq=False)
class Flow:
    """One block on its way from C{sender} to C{receiver}."""

    sender: str
    receiver: str
    block: int
    size: int
    good: bool
    left: float
    rate: float = 0.0


class Network:
    """
    Links with latency, and block transfers sharing the nodes' rates.

    @ivar uploaded: per node, bytes it sent (every byte that left it).
    @ivar aborted: bytes of blocks cut short (cancelled or link lost).
    """

    def __init__(self, clock: SimClock, up: Dict[str, float], down: Dict[str, float],
                 latency: Dict[FrozenSet[str], float]):
        self.clock = clock
        self.up, self.down, self.latency = up, down, latency
        self.links: Set[FrozenSet[str]] = set(latency)
        self.queues: Dict[Tuple[str, str], Deque[Tuple[int, int, bool]]] = {}
        self.flows: Dict[Tuple[str, str], Flow] = {}
        self.uploaded: Dict[str, float] = {name: 0.0 for name in up}
        self.aborted = 0.0
        self.deliver: Callable[[Flow], None] = lambda flow: None
        self._epoch: Dict[FrozenSet[str], int] = {}
        self._at = clock.seconds()
        self._timer = None

    def connected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.links

    def message(self, sender: str, to: str, call: Callable, *args) -> None:
        """C{call(*args)} after the link's latency, unless the link is cut meanwhile."""
        link = frozenset((sender, to))
        if link not in self.links:
            return
        epoch = self._epoch.get(link, 0)

        def arrive():
            if link in self.links and self._epoch.get(link, 0) == epoch:
                call(*args)
        self.clock.callLater(self.latency[link], arrive)

    def send_block(self, sender: str, to: str, block: int, size: int, good: bool) -> None:
        """Queue C{block} on the connection; it is sent after those before it."""
        self.queues.setdefault((sender, to), deque()).append((block, size, good))
        if (sender, to) not in self.flows:
            self._advance()
            self._start(sender, to)
            self._reschedule()

    def cancel_block(self, sender: str, to: str, block: int) -> None:
        """The receiver's cancel arrived: drop the block if not yet sent."""
        queue = self.queues.get((sender, to), deque())
        for item in list(queue):
            if item[0] == block:
                queue.remove(item)
        flow = self.flows.get((sender, to))
        if flow is not None and flow.block == block:
            self._advance()
            self.aborted += flow.size - flow.left
            del self.flows[(sender, to)]
            self._start(sender, to)
            self._reschedule()

    def cut(self, a: str, b: str) -> None:
        """The connection is lost: what is on its way is lost too."""
        link = frozenset((a, b))
        self.links.discard(link)
        self._epoch[link] = self._epoch.get(link, 0) + 1
        self._advance()
        for pair in ((a, b), (b, a)):
            self.queues.pop(pair, None)
            flow = self.flows.pop(pair, None)
            if flow is not None:
                self.aborted += flow.size - flow.left
        self._reschedule()

    # -- the fluid model ---------------------------------------------------------------

    def _start(self, sender: str, to: str) -> None:
        queue = self.queues.get((sender, to))
        if queue:
            block, size, good = queue.popleft()
            self.flows[(sender, to)] = Flow(sender, to, block, size, good, float(size))

    def _advance(self) -> None:
        """Move every flow on to now at its current rate."""
        now = self.clock.seconds()
        spent = now - self._at
        self._at = now
        if spent <= 0:
            return
        for flow in self.flows.values():
            moved = min(flow.left, flow.rate * spent)
            flow.left -= moved
            self.uploaded[flow.sender] += moved

    def _reschedule(self) -> None:
        """Share the rates out again and time the next block to finish."""
        self._allocate()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waits = [f.left / f.rate for f in self.flows.values() if f.rate > 0]
        if waits:
            self._timer = self.clock.callLater(max(0.0, min(waits)), self._finish)

    def _finish(self) -> None:
        self._timer = None
        self._advance()
        for pair, flow in sorted(self.flows.items()):
            if flow.left <= EPSILON:
                self.uploaded[flow.sender] += flow.left
                del self.flows[pair]
                self.message(flow.sender, flow.receiver, self.deliver, flow)
                self._start(*pair)
        self._reschedule()

    def _allocate(self) -> None:
        """Max-min fair rates (progressive filling) under upload and download caps."""
        left = {("up", n): r for n, r in self.up.items()}
        left.update({("down", n): r for n, r in self.down.items()})
        users: Dict[Tuple[str, str], List[Flow]] = {}
        for flow in self.flows.values():
            users.setdefault(("up", flow.sender), []).append(flow)
            users.setdefault(("down", flow.receiver), []).append(flow)
        todo = set(self.flows.values())
        while todo:
            share, tight = min((left[res] / len(live), res) for res, flows in users.items()
                               if (live := [f for f in flows if f in todo]))
            for flow in users[tight]:
                if flow in todo:
                    todo.discard(flow)
                    flow.rate = max(share, 0.0)
                    left[("up", flow.sender)] -= flow.rate
                    left[("down", flow.receiver)] -= flow.rate


class SwarmNode:
    """
    One node: the file's holder, or a downloader driving a real
    L{BlockScheduler} as L{p2ptwisted.swarm.BlockDownload} does.

    @ivar used: per source, blocks received from it (the scheduler's count).
    """

    def __init__(self, sim: "SwarmSim", name: str, full: bool, bad: bool = False):
        self.sim, self.name, self.bad = sim, name, bad
        self.net: Network = sim.net
        self.sizes = sim.sizes
        self.have: Set[int] = set(range(len(self.sizes))) if full else set()
        self.full_holders: Set[str] = set()  # peers that said they hold it whole
        self.haves: Dict[str, FrozenSet[int]] = {}  # peers' HAVEs
        self.penalties = Sources()
        self.scheduler: Optional[BlockScheduler] = None
        self.done_at: Optional[float] = 0.0 if full else None
        self.gone = False
        self.duplicates = 0  # bytes
        self.bad_bytes = 0
        self.dropped: List[str] = []
        self._tick_call = None
        self._have_call = None
        self._have_sent = -HAVE_EVERY

    @property
    def used(self) -> Dict[str, int]:
        return {} if self.scheduler is None else self.scheduler.sources_used()

    def peers(self) -> List[str]:
        return [p for p in self.sim.names if p != self.name and self.net.connected(self.name, p)]

    def start(self) -> None:
        if self.done_at is not None:
            for peer in self.peers():
                self.net.message(self.name, peer, self.sim.nodes[peer].full_received, self.name)
            return
        self.scheduler = BlockScheduler(
            self.sizes, self.have, rng=random.Random(f"{self.sim.seed}:{self.name}"),
            **self.sim.options)  # type: ignore[arg-type]
        self._tick()

    # -- downloading (as BlockDownload) -------------------------------------------------

    def _tick(self) -> None:
        self._tick_call = None
        sched = self.scheduler
        if sched is None or self.done_at is not None or self.gone:
            return
        now = self.sim.clock.seconds()
        known = sched.in_flight
        for peer in self.peers():
            if peer in self.full_holders and peer not in known:
                sched.add_source(peer)
            elif peer in self.haves and peer not in known:
                sched.add_source(peer, self.haves[peer])
        for peer, block in sched.overdue(now):
            self._cancel(peer, block)
        self._ask()
        self._tick_call = self.sim.clock.callLater(TICK, self._tick)

    def _ask(self) -> None:
        sched = self.scheduler
        assert sched is not None
        for peer, block in sched.next_requests(self.sim.clock.seconds()):
            if not self.net.connected(self.name, peer):
                sched.remove_source(peer)
                continue
            self.net.message(self.name, peer, self.sim.nodes[peer].request_received,
                             self.name, block)

    def _cancel(self, peer: str, block: int) -> None:
        self.net.message(self.name, peer, self.net.cancel_block, peer, self.name, block)

    def block_received(self, flow: Flow) -> None:
        sched, now = self.scheduler, self.sim.clock.seconds()
        if sched is None or self.gone or flow.block in self.have:
            self.duplicates += flow.size  # an endgame copy that lost the race
            return
        if not flow.good:
            self.bad_bytes += flow.size
            penalty = self.penalties.failed(flow.sender, VERSION, now, offence=True)
            sched.failed(flow.sender, flow.block, now, bench_until=penalty.until)
            if penalty.drop:
                self.dropped.append(flow.sender)
                self.sim.disconnect(self.name, flow.sender)
            self._continue()
            return
        self.have.add(flow.block)
        self._advertise()
        for peer, block in sched.received(flow.sender, flow.block, now):
            self._cancel(peer, block)
        self._continue()

    def refused(self, peer: str, block: int) -> None:
        if self.scheduler is not None and self.done_at is None:
            self.scheduler.failed(peer, block, self.sim.clock.seconds())
            self._continue()

    def _continue(self) -> None:
        sched = self.scheduler
        assert sched is not None
        if not sched.done:
            self._ask()
            return
        self.done_at = self.sim.clock.seconds()
        for call in (self._tick_call, self._have_call):
            if call is not None and call.active():
                call.cancel()
        self._tick_call = self._have_call = None
        self.start()  # tell the others it holds the whole file

    def lost(self, peer: str) -> None:
        self.haves.pop(peer, None)
        self.full_holders.discard(peer)
        if self.scheduler is not None and self.done_at is None:
            self.scheduler.remove_source(peer)
            self._continue()

    # -- what peers say (as Holders) ---------------------------------------------------

    def have_received(self, peer: str, blocks: FrozenSet[int]) -> None:
        self.haves[peer] = blocks
        sched = self.scheduler
        if sched is None or self.done_at is not None or peer in self.full_holders:
            return
        if peer in sched.in_flight:
            sched.update_source(peer, blocks)
        else:
            sched.add_source(peer, blocks)
        self._continue()

    def full_received(self, peer: str) -> None:
        self.full_holders.add(peer)
        if self.scheduler is not None and self.done_at is None:
            self.scheduler.add_source(peer)
            self._continue()

    def _advertise(self) -> None:
        if not self.sim.have_messages or self._have_call is not None:
            return
        wait = max(0.0, self._have_sent + HAVE_EVERY - self.sim.clock.seconds())
        self._have_call = self.sim.clock.callLater(wait, self._send_have)

    def _send_have(self) -> None:
        self._have_call = None
        self._have_sent = self.sim.clock.seconds()
        blocks = frozenset(self.have)
        for peer in self.peers():
            if peer not in self.full_holders:
                self.net.message(self.name, peer, self.sim.nodes[peer].have_received,
                                 self.name, blocks)

    # -- serving -----------------------------------------------------------------------

    def request_received(self, peer: str, block: int) -> None:
        if self.gone:
            return
        if block not in self.have:
            self.net.message(self.name, peer, self.sim.nodes[peer].refused, self.name, block)
            return
        self.net.send_block(self.name, peer, block, self.sizes[block], not self.bad)

    def leave(self) -> None:
        """The node goes away: every connection of its is lost."""
        for call in (self._tick_call, self._have_call):
            if call is not None and call.active():
                call.cancel()
        self.gone = True
        for peer in self.peers():
            self.sim.disconnect(self.name, peer)


@attrs.frozen
class SwarmReport:
    """
    The figures of one run.

    @ivar all_done: seconds until every node still there had the file
        (C{None} if some did not within the limit).
    @ivar one_copy: seconds for one copy over one link (node 0 to node 1,
        alone): the unit the swarm is measured in.
    @ivar done: per node, seconds until it had the file (C{None}: never).
    @ivar uploads: per node, bytes uploaded in copies of the file.
    @ivar used: per downloader, blocks received per source.
    @ivar wasted: bytes sent that gave no new verified block: duplicates,
        bad blocks, blocks cut short; C{breakdown} has each.
    @ivar dropped: (node, the peer it dropped for bad blocks).
    """

    all_done: Optional[float]
    one_copy: float
    done: Dict[str, Optional[float]]
    uploads: Dict[str, float]
    used: Dict[str, Dict[str, int]]
    wasted: float
    breakdown: Dict[str, float]
    dropped: List[Tuple[str, str]]

    def summary(self) -> str:
        took = "not done" if self.all_done is None else f"{self.all_done:.2f} s"
        ratio = "" if self.all_done is None else f" ({self.all_done / self.one_copy:.2f}x)"
        ups = ", ".join(f"{n} {c:.2f}" for n, c in self.uploads.items())
        return (f"all done in {took}{ratio}; one copy {self.one_copy:.2f} s;"
                f" uploads in copies: {ups}; wasted {self.wasted / 2**20:.1f} MiB"
                f" {self.breakdown}; dropped {self.dropped}")


class SwarmSim:
    """
    @param up, down: per node rates in bytes per second (one value: all).
    @param latency: one-way seconds per link, each link's drawn from the
        seed between half and one and a half of it.
    @param have_messages: whether downloaders send HAVEs (if not, only
        full holders are sources).
    @param bad: a node whose every uploaded block is corrupt.
    @param leave: (node, when): that node goes away then.
    @param full: how many nodes hold the file at the start (n0, n1, ...).
    @param options: L{BlockScheduler} arguments instead of the real node's
        (to see what a policy is worth by turning it off).
    """

    def __init__(self, nodes: int, size: int, seed: int = 0, *,
                 up: object = mbit(100), down: object = mbit(100),
                 latency: float = 0.0005, have_messages: bool = True,
                 bad: Optional[str] = None, leave: Optional[Tuple[str, float]] = None,
                 full: int = 1, options: Optional[Dict[str, object]] = None):
        self.seed = seed
        self.options: Dict[str, object] = {"depth_bytes": DEPTH_BYTES,
                                           "endgame_wait": ENDGAME_WAIT, **(options or {})}
        self.size = size
        self.sizes = block_lengths(size)
        self.have_messages = have_messages
        self.clock = SimClock()
        self.names = [f"n{i}" for i in range(nodes)]
        rng = random.Random(seed)
        links = {frozenset((a, b)): latency * rng.uniform(0.5, 1.5)
                 for i, a in enumerate(self.names) for b in self.names[i + 1:]}
        self.net = Network(self.clock, _rates(up, self.names), _rates(down, self.names), links)
        self.net.deliver = lambda flow: self.nodes[flow.receiver].block_received(flow)
        self.nodes = {name: SwarmNode(self, name, i < full, bad=name == bad)
                      for i, name in enumerate(self.names)}
        self.leave = leave

    def disconnect(self, a: str, b: str) -> None:
        if self.net.connected(a, b):
            self.net.cut(a, b)
            self.nodes[a].lost(b)
            self.nodes[b].lost(a)

    def run(self, limit: float = 3600.0) -> SwarmReport:
        """Until every node still there has the file (or C{limit} seconds)."""
        for node in self.nodes.values():
            node.start()
        if self.leave is not None:
            self.clock.callLater(self.leave[1], self.nodes[self.leave[0]].leave)
        waiting = [n for n in self.nodes.values()]
        while self.clock.calls and self.clock.seconds() <= limit:
            waiting = [n for n in waiting if n.done_at is None and not n.gone]
            if not waiting:
                break
            self.clock.advance(max(0.0, self.clock.calls[0].getTime() - self.clock.seconds()))
        return self.report()

    def report(self) -> SwarmReport:
        nodes = self.nodes.values()
        done = {n.name: n.done_at for n in nodes}
        there = [n.done_at for n in nodes if not n.gone]
        useful = sum(sum(self.sizes[b] for b in n.have) for n in nodes) - self.size
        sent = sum(self.net.uploaded.values())
        breakdown = {"duplicates": float(sum(n.duplicates for n in nodes)),
                     "bad": float(sum(n.bad_bytes for n in nodes)),
                     "cut short": self.net.aborted}
        first = self.names[0]
        second = next((n.name for n in nodes if n.scheduler is not None), self.names[-1])
        one_copy = (self.size / min(self.net.up[first], self.net.down[second])
                    + self.net.latency[frozenset((first, second))])
        return SwarmReport(
            all_done=None if None in there else max(t for t in there if t is not None),
            one_copy=one_copy, done=done,
            uploads={name: sent_ / self.size for name, sent_ in self.net.uploaded.items()},
            used={n.name: n.used for n in nodes if n.scheduler is not None},
            wasted=max(0.0, sent - useful), breakdown=breakdown,
            dropped=[(n.name, peer) for n in nodes for peer in n.dropped])


def _rates(rate: object, names: List[str]) -> Dict[str, float]:
    if isinstance(rate, dict):
        return {name: float(rate[name]) for name in names}
    assert isinstance(rate, (int, float))
    return {name: float(rate) for name in names}
