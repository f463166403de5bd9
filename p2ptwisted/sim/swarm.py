# -*- test-case-name: tests.test_sim_swarm -*-
"""
A deterministic swarm simulator: one file, block by block, through a mesh.

Node 0 holds a file; every other node wants it.  Each downloader runs the
real L{BlockScheduler} with the real node's parameters (L{DEPTH_BYTES} up
to a L{DEPTH_SHARE} of the file, L{ENDGAME_WAIT}, a tick every L{TICK}, new
sources looked for at each tick and every L{LOOK_EVERY} events),
advertises its verified blocks with a HAVE at most every L{HAVE_EVERY}
seconds to the nodes that lack the file, serves the blocks it has
verified, and, when done, its index says it holds the whole file: what
L{p2ptwisted.swarm} and L{p2ptwisted.holders} do on a real node, without
sockets or disks, on a L{SimClock}.  So swarm behaviour (how much node 0
uploads, how long until all have the file, what a bad or departing node
costs) is measured deterministically: a seed replays exactly.

The network is a fluid model (L{p2ptwisted.sim.fluid.Network}): upload
and download rates per node shared max-min fairly by the blocks moving at
once, each connection sending its blocks in order, a one-way latency per
link for blocks and small messages alike.

Faults: a node that corrupts every block it sends (its receivers bench it
with the real L{Sources} penalties and drop it after L{DROP_AFTER} bad
blocks), and a node that leaves at a given time (its connections are lost).

From the command line: C{python -m p2ptwisted.sim swarm --nodes 6
--size-mib 200 --seed 1} (C{--help} for the faults and rates).
"""

from __future__ import annotations

import random
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple

import attrs

from p2ptwisted.core.blocks import block_lengths
from p2ptwisted.core.scheduler import RUNS, BlockScheduler
from p2ptwisted.core.sources import DROP_AFTER, Sources
from p2ptwisted.holders import HAVE_EVERY
from p2ptwisted.sim.fluid import LAN, Flow, Network, Rates, mbit, rates
from p2ptwisted.sim.mesh import SimClock
from p2ptwisted.swarm import DEPTH_BYTES, DEPTH_SHARE, ENDGAME_WAIT, LOOK_EVERY, TICK

__all__ = ["DROP_AFTER", "Network", "SwarmNode", "SwarmReport", "SwarmSim", "mbit"]

#: The version all the downloads are of (for the L{Sources} penalties).
VERSION = ("file", "hash")


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
        #: block -> whether the bytes written were the right ones
        self.written: Dict[int, bool] = {block: True for block in self.have}
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
        self._since_look = 0  # events since sources were last looked for

    @property
    def used(self) -> Dict[str, int]:
        return {} if self.scheduler is None else self.scheduler.sources_used()

    def peers(self) -> List[str]:
        return [p for p in self.sim.names if p != self.name and self.net.connected(self.name, p)]

    def start(self) -> None:
        """A holder tells its peers; a downloader begins when it hears of the file."""
        if self.done_at is not None:
            self._announce()

    def _begin(self) -> None:
        """
        Our copy of a peer's index shows the file (the real fetcher makes a
        download then, with that peer as a source): start fetching it.
        """
        options = {"depth_bytes": min(DEPTH_BYTES, self.sim.size // DEPTH_SHARE),
                   "endgame_wait": ENDGAME_WAIT, "order": RUNS, **self.sim.options}
        self.scheduler = BlockScheduler(
            self.sizes, self.have, rng=random.Random(f"{self.sim.seed}:{self.name}"),
            **options)
        self._tick()

    def _announce(self) -> None:
        """Tell every peer we hold the whole file (a real node's index does)."""
        for peer in self.peers():
            self.net.message(self.name, peer, self.sim.nodes[peer].full_received, self.name)

    # -- downloading (as BlockDownload) -------------------------------------------------

    def _tick(self) -> None:
        self._tick_call = None
        sched = self.scheduler
        if sched is None or self.done_at is not None or self.gone:
            return
        now = self.sim.clock.seconds()
        self._add_sources()
        for peer, block in sched.overdue(now):
            self._cancel(peer, block)
        self._ask()
        self._tick_call = self.sim.clock.callLater(TICK, self._tick)

    def _sources(self) -> Dict[str, Optional[FrozenSet[int]]]:
        """Connected peers with the file: C{None} for a whole copy, else their HAVE."""
        found: Dict[str, Optional[FrozenSet[int]]] = {}
        for peer in self.peers():
            if peer in self.full_holders:
                found[peer] = None
            elif peer in self.haves:
                found[peer] = self.haves[peer]
        return found

    def _add_sources(self) -> None:
        """
        New sources, at each tick and every L{LOOK_EVERY} events between:
        as the shell, a source already known is left as it is -- unless
        C{upgrade_full}, where one that now holds the whole file becomes a
        full source (which the shell does not do: see L{SwarmSim}).
        """
        sched = self.scheduler
        assert sched is not None
        known = sched.in_flight
        for peer, blocks in self._sources().items():
            if peer not in known or (blocks is None and self.sim.upgrade_full):
                sched.add_source(peer, blocks)

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
        self.written[flow.block] = flow.good
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
            self._since_look += 1
            if self._since_look >= LOOK_EVERY:
                self._since_look = 0
                self._add_sources()
            self._ask()
            return
        self.done_at = self.sim.clock.seconds()
        for call in (self._tick_call, self._have_call):
            if call is not None and call.active():
                call.cancel()
        self._tick_call = self._have_call = None
        self._announce()

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
            return  # (a whole copy: it is a source of every block already)
        if peer in sched.in_flight:
            sched.update_source(peer, blocks)
        else:
            sched.add_source(peer, blocks)
        self._continue()

    def full_received(self, peer: str) -> None:
        """
        The peer's index says it has the file: the download begins if it
        has not; else the peer is a source from the next look.
        """
        self.full_holders.add(peer)
        if self.scheduler is None and self.done_at is None and not self.gone:
            self._begin()

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
        bad blocks, blocks cut short (cancelled, or their link lost), and
        blocks still on their way when the run ended; C{breakdown} has each.
    @ivar dropped: (node, the peer it dropped for bad blocks).
    @ivar corrupt: blocks written with wrong bytes, on all nodes (must be 0).
    """

    all_done: Optional[float]
    one_copy: float
    done: Dict[str, Optional[float]]
    uploads: Dict[str, float]
    used: Dict[str, Dict[str, int]]
    wasted: float
    breakdown: Dict[str, float]
    dropped: List[Tuple[str, str]]
    corrupt: int

    def summary(self) -> str:
        took = "not done" if self.all_done is None else f"{self.all_done:.2f} s"
        ratio = "" if self.all_done is None else f" ({self.all_done / self.one_copy:.2f}x)"
        ups = ", ".join(f"{n} {c:.2f}" for n, c in self.uploads.items())
        waste = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in self.breakdown.items())
        dropped = ", ".join(f"{a} dropped {b}" for a, b in self.dropped) or "none dropped"
        return (f"all done in {took}{ratio}; one copy {self.one_copy:.2f} s;"
                f" uploads in copies: {ups}; wasted {self.wasted / 2**20:.2f} MiB"
                f" ({waste}); {dropped}")


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
    @param upgrade_full: a peer that was a partial source and then holds
        the whole file becomes a full source (C{add_source(peer, None)}).
        The real shell does not do this (L{BlockDownload._add_sources}
        adds only unknown peers, and a HAVE from a whole copy is ignored):
        such a peer stays a source of the blocks of its last HAVE.
    """

    def __init__(self, nodes: int, size: int, seed: int = 0, *,
                 up: Rates = LAN, down: Rates = LAN,
                 latency: float = 0.0005, have_messages: bool = True,
                 bad: Optional[str] = None, leave: Optional[Tuple[str, float]] = None,
                 full: int = 1, options: Optional[Dict[str, Any]] = None,
                 upgrade_full: bool = False):
        self.seed = seed
        self.options: Dict[str, Any] = options or {}
        self.upgrade_full = upgrade_full
        self.size = size
        self.sizes = block_lengths(size)
        self.have_messages = have_messages
        self.clock = SimClock()
        self.names = [f"n{i}" for i in range(nodes)]
        rng = random.Random(seed)
        links = {frozenset((a, b)): latency * rng.uniform(0.5, 1.5)
                 for i, a in enumerate(self.names) for b in self.names[i + 1:]}
        self.net = Network(self.clock, rates(up, self.names), rates(down, self.names), links)
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
        waiting = list(self.nodes.values())
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
        self.net.advance()  # count the bytes of the blocks still on their way
        useful = sum(self.sizes[b] for n in nodes if n.scheduler is not None for b in n.have)
        sent = sum(self.net.uploaded.values())
        breakdown = {"duplicates": float(sum(n.duplicates for n in nodes)),
                     "bad": float(sum(n.bad_bytes for n in nodes)),
                     "cut short": self.net.aborted}
        breakdown["on the way at the end"] = max(0.0, sent - useful - sum(breakdown.values()))
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
            dropped=[(n.name, peer) for n in nodes for peer in n.dropped],
            corrupt=sum(not good for n in nodes for good in n.written.values()))
