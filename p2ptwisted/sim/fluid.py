# -*- test-case-name: tests.test_sim_swarm -*-
"""
The network of the swarm simulator (L{p2ptwisted.sim.swarm}): links with a
one-way latency, and block transfers sharing the nodes' rates.

A fluid model: each node has an upload and a download rate in bytes per
second; a connection sends the blocks asked of it one at a time, in order
(as L{p2ptwisted.core.scheduler} assumes a source serves them); the blocks
moving at once share the rates max-min fairly -- each node's upload among
its connections, each node's download among its sources -- as TCP flows
roughly do.  Rates are shared out again whenever a block starts or ends,
and one timer waits for the next block to end.  Small messages (requests,
cancels, HAVEs) take the latency and no bandwidth.

(The real uploader, L{p2ptwisted.uploads}, takes one 128 KiB chunk from
each upload of a connection in turn: for blocks of one chunk, the in-order
service modelled here.)
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, FrozenSet, List, Set, Tuple, Union

import attrs

from p2ptwisted.sim.mesh import SimClock

#: Bytes left under which a block counts as sent (float rounding).
EPSILON = 1e-3


#: A rate in bytes per second for every node, or one per node.
Rates = Union[float, Dict[str, float]]


def mbit(rate: float) -> float:
    """Megabits per second in bytes per second."""
    return rate * 1e6 / 8


#: The default rate: 100 Mbit/s (the issue's LAN benchmark).
LAN = mbit(100)


def rates(rate: Rates, names: List[str]) -> Dict[str, float]:
    """Per node rates from one for all, or one per node."""
    if isinstance(rate, dict):
        return {name: float(rate[name]) for name in names}
    return {name: float(rate) for name in names}


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
            self.advance()
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
            self.advance()
            self.aborted += flow.size - flow.left
            del self.flows[(sender, to)]
            self._start(sender, to)
            self._reschedule()

    def cut(self, a: str, b: str) -> None:
        """The connection is lost: what is on its way is lost too."""
        link = frozenset((a, b))
        self.links.discard(link)
        self._epoch[link] = self._epoch.get(link, 0) + 1
        self.advance()
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

    def advance(self) -> None:
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
        self.advance()
        for pair, flow in sorted(self.flows.items()):
            if flow.left <= EPSILON:
                self.uploaded[flow.sender] += flow.left
                del self.flows[pair]
                self.message(flow.sender, flow.receiver, self.deliver, flow)
                self._start(*pair)
        self._reschedule()

    def _allocate(self) -> None:
        """
        Max-min fair rates by progressive filling: the resource (a node's
        upload or download) with the smallest fair share fixes the rates of
        its flows at that share, and leaves the rest to the others.
        """
        left = {("up", n): r for n, r in self.up.items()}
        left.update({("down", n): r for n, r in self.down.items()})
        users: Dict[Tuple[str, str], List[Flow]] = {}
        for flow in self.flows.values():
            users.setdefault(("up", flow.sender), []).append(flow)
            users.setdefault(("down", flow.receiver), []).append(flow)
        count = {res: len(flows) for res, flows in users.items()}
        fixed: Set[int] = set()
        while count:
            share, tight = min((left[res] / n, res) for res, n in count.items())
            for flow in users[tight]:
                if id(flow) in fixed:
                    continue
                fixed.add(id(flow))
                flow.rate = max(share, 0.0)
                for res in (("up", flow.sender), ("down", flow.receiver)):
                    left[res] -= flow.rate
                    count[res] -= 1
                    if not count[res]:
                        del count[res]
