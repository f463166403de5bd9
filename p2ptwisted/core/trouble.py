# -*- test-case-name: tests.test_sync -*-
"""
Paths whose actions keep failing: how long to wait before the next try,
and whether to tell the user.

A failure that repeats (a link planted where a file must go, a directory
that cannot be written) must neither be retried every few seconds forever
nor logged every time: the wait doubles with each failure in a row, up to
a ceiling, and only the first failure of a run is worth a warning.  A
success clears the path.
"""

from __future__ import annotations

from typing import Dict, Tuple

#: Paths remembered at most (the oldest are forgotten first).
MAX_PATHS = 10_000


class Trouble:
    def __init__(self, first_delay: float, max_delay: float):
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.counts: Dict[str, int] = {}

    def failed(self, path: str) -> Tuple[float, bool]:
        """
        The action at C{path} failed again.

        @return: (seconds to wait before trying again, whether this is the
            first failure in a row: the one to log).
        """
        n = self.counts.pop(path, 0) + 1
        self.counts[path] = n  # most recent last
        while len(self.counts) > MAX_PATHS:
            del self.counts[next(iter(self.counts))]
        return min(self.max_delay, self.first_delay * 2 ** (n - 1)), n == 1

    def in_a_row(self, path: str) -> int:
        return self.counts.get(path, 0)

    def cleared(self, path: str) -> None:
        self.counts.pop(path, None)
