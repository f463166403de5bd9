# -*- test-case-name: tests.test_engine -*-
"""
The paths waiting to be planned, and the order they are planned in.

Paths are taken in path order (parents before children), a bounded number
at a time, from a heap: taking the next few of 100,000 waiting paths costs
a few heap pops, not a sort of all of them -- planning must not slow down
as the folder grows.

Small batches jump the queue.  A path marked in a batch of at most
L{URGENT_BATCH} paths (an edit the user just made, one INDEX frame with a
peer's live change) is planned before the paths of a bulk batch (a first
sync, a big copy), so a file saved during a long sync arrives within
seconds instead of behind the batch.
"""

from __future__ import annotations

import heapq
from typing import Collection, Iterable, List, Set

#: A batch of at most this many paths is urgent.
URGENT_BATCH = 32


class DirtyPaths(set):
    """
    A set of paths (so membership, len and iteration are a set's) that
    also keeps them in the order they are to be planned.
    """

    def __init__(self, paths: Iterable[str] = ()):
        super().__init__(paths)
        self._heap: List[str] = list(self)
        heapq.heapify(self._heap)
        self.urgent: Set[str] = set()

    def add(self, path: str) -> None:
        if path not in self:
            super().add(path)
            heapq.heappush(self._heap, path)

    def update(self, *batches: Iterable[str]) -> None:
        for batch in batches:
            batch = list(batch)
            for path in batch:
                self.add(path)
            if len(batch) <= URGENT_BATCH:
                self.urgent.update(batch)

    def take(self, limit: int, busy: Collection[str]) -> List[str]:
        """
        Remove and return up to C{limit} paths to plan now, urgent ones
        first, skipping (and keeping) the C{busy} ones.
        """
        taken: List[str] = []
        if self.urgent:
            for path in sorted(self.urgent):
                if len(taken) >= limit:
                    break
                if path in self and path not in busy:
                    taken.append(path)
            self.urgent = {p for p in self.urgent if p in self} - set(taken)
        chosen = set(taken)
        put_back = []
        heap = self._heap
        while heap and len(taken) < limit:
            path = heapq.heappop(heap)
            if path not in self or path in chosen:
                continue  # taken already, or pushed twice
            if path in busy:
                put_back.append(path)
                continue
            taken.append(path)
            chosen.add(path)
        for path in put_back:
            heapq.heappush(heap, path)
        for path in taken:
            self.discard(path)
        return taken

    def discard(self, path: object) -> None:
        super().discard(path)
        self.urgent.discard(path)

    def clear(self) -> None:
        super().clear()
        self._heap.clear()
        self.urgent.clear()
