# -*- test-case-name: tests.test_sim -*-
"""
The simulated mesh: nodes, links with delays, random user operations, and
the convergence check.

Everything random comes from one C{random.Random(seed)}, and time from one
L{task.Clock}, so a seed replays exactly.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from typing import Callable, Dict, List, Set, Tuple

import attrs
from twisted.internet import base, task

from p2ptwisted.core.index import DIR, FILE, IndexStore, MemoryStore
from p2ptwisted.core.planner import plan
from p2ptwisted.sim.fs import Item
from p2ptwisted.sim.node import SimNode

#: Seconds of simulated time at the start (counters are wall-clock based).
EPOCH = 1_800_000_000


class SimClock(task.Clock):
    """
    A L{task.Clock} that keeps its calls sorted by inserting each in place
    instead of sorting the whole list on every call: same order (ties run
    in the order they were scheduled), but thousands of pending calls no
    longer cost a sort each.  The simulator never resets or delays a call,
    the one case this would need a sort for.
    """

    def callLater(self, delay, callable, *args, **kw):
        call = base.DelayedCall(self.seconds() + delay, callable, args, kw,
                                self.calls.remove, lambda c: None, self.seconds)
        bisect.insort_right(self.calls, call)  # DelayedCall orders by time
        return call

    def _sortCalls(self) -> None:
        pass  # always sorted


class Simulation:
    """
    @ivar published: every file content any node's index ever held.
    @ivar excused: contents a user destroyed while no other node held them
        (lost by the user's own hand, not by sync).
    """

    def __init__(self, nodes: int, seed: int, *, max_delay: float = 0.05,
                 store_factory: Callable[[], IndexStore] = MemoryStore):
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = SimClock()
        self.clock.advance(EPOCH)
        self.started = EPOCH
        self.max_delay = max_delay
        #: Each node's index storage: in memory, or the node's real sqlite
        #: store (C{--sqlite}), which then runs under the same property.
        self.store_factory = store_factory
        self.nodes: Dict[str, SimNode] = {}
        self.queues: Dict[Tuple[str, str], deque] = {}
        self.published: Set[str] = set()
        self.excused: Set[str] = set()
        self._ids = 0
        self._names = 0
        self.ops_done: Dict[str, int] = {}
        for i in range(nodes):
            name = f"n{i}"
            self.nodes[name] = SimNode(self, name, self.random_hex(64))
        for node in self.nodes.values():
            node.start()

    # -- plumbing ----------------------------------------------------------------

    def random_hex(self, digits: int) -> str:
        return "".join(self.random.choice("0123456789abcdef") for _ in range(digits))

    def now(self) -> int:
        return int(self.clock.seconds())

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def connect(self, a: str, b: str) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if a == b or b in na.links or not (na.running and nb.running):
            return
        self.queues[(a, b)] = deque()
        self.queues[(b, a)] = deque()
        na.connected(b)
        nb.connected(a)

    def disconnect(self, a: str, b: str) -> None:
        if b not in self.nodes[a].links:
            return
        self.queues.pop((a, b), None)
        self.queues.pop((b, a), None)
        self.nodes[a].lost(b)
        self.nodes[b].lost(a)

    def send(self, sender: str, to: str, message: tuple) -> None:
        """
        Queue C{message} on the link; it arrives after a random delay, in
        order.  One timer per link (not per message) keeps the clock fast.
        """
        queue = self.queues.get((sender, to))
        if queue is None:
            return
        self.nodes[sender].sent += 1
        at = self.clock.seconds() + self.random.uniform(0, self.max_delay)
        if queue:
            at = max(at, queue[-1][0])
        queue.append((at, message))
        if len(queue) == 1:
            self.clock.callLater(at - self.clock.seconds(), self._deliver, sender, to, queue)

    def _deliver(self, sender: str, to: str, queue: deque) -> None:
        if self.queues.get((sender, to)) is not queue or not queue:
            return  # the link was cut: what was in flight is lost
        _, message = queue.popleft()
        if queue:
            self.clock.callLater(max(0.0, queue[0][0] - self.clock.seconds()),
                                 self._deliver, sender, to, queue)
        self.nodes[to].received(sender, message)

    def run_until_quiet(self, limit: float = 3600.0) -> bool:
        """
        Advance time until nothing is scheduled; False if still busy after
        C{limit} simulated seconds.
        """
        end = self.clock.seconds() + limit
        while self.clock.getDelayedCalls():
            if self.clock.seconds() > end:
                return False
            soonest = self.clock.calls[0].getTime()  # the clock keeps them sorted
            self.clock.advance(max(0.0, soonest - self.clock.seconds()))
        return True

    # -- user operations -----------------------------------------------------------

    def _new_name(self) -> str:
        self._names += 1
        return f"f{self._names}" + self.random.choice(["", ".txt", ".tar.gz"])

    def _destroy(self, node: SimNode, path: str) -> None:
        item = node.fs.items.get(path)
        if item is None or item.kind != FILE:
            return
        held = any(item.content in other.holds_content()
                   for other in self.nodes.values() if other is not node)
        if not held and item.content not in [i.content for p, i in node.fs.items.items()
                                             if p != path]:
            self.excused.add(item.content)

    def random_op(self) -> str:
        node = self.random.choice(list(self.nodes.values()))
        fs = node.fs
        files = sorted(p for p, i in fs.items.items() if i.kind == FILE)
        dirs = sorted(p for p, i in fs.items.items() if i.kind == DIR)
        mtime = int(self.clock.seconds()) * 10**9  # whole seconds: ties happen
        op = self.random.choice(
            ["create", "create", "edit", "edit", "delete", "rename", "mkdir", "rmdir",
             "chmod", "replace_by_dir", "link", "link", "restart", "wait"])
        if op == "restart" and self.random.random() < 0.5:
            op = "wait"
        if not node.running:
            running = [n for n in self.nodes.values() if n.running]
            if not running:
                op = "wait"
            else:
                node = self.random.choice(running)
                fs = node.fs
                files = sorted(p for p, i in fs.items.items() if i.kind == FILE)
                dirs = sorted(p for p, i in fs.items.items() if i.kind == DIR)
        if op == "create":
            where = self.random.choice([""] + dirs)
            path = (where + "/" if where else "") + self._new_name()
            if path in fs.items:
                return "wait"
            fs.items[path] = Item(FILE, f"c{self.next_id()}", mtime, 0o644)
        elif op == "edit" and files:
            path = self.random.choice(files)
            self._destroy(node, path)
            fs.items[path] = attrs.evolve(fs.items[path], content=f"c{self.next_id()}",
                                          mtime_ns=mtime)
        elif op == "delete" and files:
            path = self.random.choice(files)
            self._destroy(node, path)
            del fs.items[path]
        elif op == "rename" and files:
            path = self.random.choice(files)
            where = self.random.choice([""] + dirs)
            new = (where + "/" if where else "") + self._new_name()
            if new in fs.items:
                return "wait"
            fs.items[new] = fs.items.pop(path)
        elif op == "mkdir":
            where = self.random.choice([""] + dirs)
            path = (where + "/" if where else "") + f"d{self.next_id()}"
            fs.items[path] = Item(DIR, perms=0o755)
        elif op == "rmdir" and dirs:
            path = self.random.choice(dirs)
            if fs.children(path):
                return "wait"
            del fs.items[path]
        elif op == "chmod" and files:
            path = self.random.choice(files)
            fs.items[path] = attrs.evolve(fs.items[path],
                                          perms=self.random.choice([0o600, 0o644, 0o755]))
        elif op == "replace_by_dir" and files:
            path = self.random.choice(files)
            self._destroy(node, path)
            fs.items[path] = Item(DIR, perms=0o755)
        elif op == "link":
            other = self.random.choice(list(self.nodes))
            if other in node.links:
                self.disconnect(node.name, other)
            else:
                self.connect(node.name, other)
        elif op == "restart":
            peers = list(node.links)
            node.stop()
            self.clock.callLater(self.random.uniform(1, 10), self._restart, node, peers)
        else:
            op = "wait"
        if op not in ("link", "restart", "wait"):
            node.changed_on_disk(self.random.uniform(0.1, 2.0))
        self.ops_done[op] = self.ops_done.get(op, 0) + 1
        self.clock.advance(self.random.uniform(0, 0.5))
        return op

    def _restart(self, node: SimNode, peers: List[str]) -> None:
        if not node.running:
            node.start()
            for peer in peers:
                self.connect(node.name, peer)

    def heal(self) -> None:
        """
        Every node running, every pair connected.
        """
        for node in self.nodes.values():
            if not node.running:
                node.start()
        names = sorted(self.nodes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                self.connect(a, b)

    def run(self, ops: int) -> bool:
        for name in sorted(self.nodes)[1:]:
            self.connect("n0", name)
        for _ in range(ops):
            self.random_op()
        self.heal()
        if not self.run_until_quiet():
            return False
        for node in self.nodes.values():  # anything the watchers may have missed
            node.scan()
        return self.run_until_quiet()


@attrs.define
class Report:
    problems: List[str]
    paths: int
    conflict_copies: int
    trashed: int


def check_converged(sim: Simulation) -> Report:
    """
    The property: every node holds the same tree, at the newest version of
    every path, with no action left to take, and every published content
    that a user did not destroy exists somewhere.
    """
    problems: List[str] = []
    nodes = list(sim.nodes.values())
    first = nodes[0]
    reference = first.fs.tree()
    for node in nodes[1:]:
        tree = node.fs.tree()
        if tree != reference:
            diff = sorted(set(tree.items()) ^ set(reference.items()))[:5]
            problems.append(f"{node.name} differs from {first.name}: {diff}")
    every: Set[str] = set()
    for node in nodes:
        every.update(node.store.local_paths())
    for node in nodes:
        if not node.live_engine.in_sync():
            problems.append(f"{node.name} not idle: dirty={sorted(node.live_engine.dirty)[:5]}"
                            f" busy={sorted(node.live_engine.busy)[:5]}"
                            f" waiting={sorted(node.live_engine.waiting)[:5]}")
        for path in sorted(every):
            local = node.store.get(path)
            remotes = {o.name: o.store.get(path) for o in nodes
                       if o is not node and o.store.get(path) is not None}
            action = plan(path, local, remotes, me=node.live_engine.me, now=sim.now())
            if action is not None:
                problems.append(f"{node.name} would still {action.kind} {path}")
                break
    held: Set[str] = set()
    for node in nodes:
        held.update(node.holds_content())
    lost = sorted(sim.published - sim.excused - held)
    if lost:
        problems.append(f"lost contents: {lost[:10]}")
    # Conflict copies are counted, not checked: two nodes that each saw only
    # one of two concurrent versions with the same bytes (the same chmod
    # made on two nodes) name their copies after different nodes.  The
    # scenarios check "exactly one copy" where the versions differ.
    copies = [p for p, v in reference.items()
              if ".sync-conflict-" in p.rsplit("/", 1)[-1] and v[0] == FILE]
    trashed = sum(len(n.fs.trash) for n in nodes)
    return Report(problems=problems, paths=len(reference), conflict_copies=len(copies),
                  trashed=trashed)
