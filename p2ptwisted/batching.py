# -*- test-case-name: tests.test_batching -*-
"""
Blocking disk work, run in batches on a few threads.

Syncing 10,000 small files is some 40,000 short blocking calls (check the
destination, open the partial file, seal it, place it).  A thread hop for
each costs more than the work: every hop wakes a thread and passes the GIL
back and forth with the reactor (measured on the receiver of 10,000 files
of 4 KiB: 11 of its 18 CPU seconds in the kernel, mostly futex calls).  So
calls that arrive while every thread is busy wait, and the next thread to
come free runs them one after another, and their Deferreds fire in one
reactor turn.  On a quiet node a call still starts at once, on its own.

L{Batches} is the same for work that is cheaper done together than one by
one (placing files: one C{syncfs} for many files instead of an C{fsync}
each): it hands a list of queued items to one function.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, Callable, ContextManager, Deque, List, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: Calls one thread takes at a time at most: a long queue is shared among
#: the threads that come free instead of all going to the first.
MAX_BATCH = 64

#: What a batch gives back for each item: (True, result) or (False, Failure).
Outcome = Tuple[bool, Any]


class Batches:
    """
    Items queued for C{work}, a blocking function of a list of items that
    returns one L{Outcome} per item, in order; at most C{max_jobs} lists at
    once, each run with C{run_blocking}.

    @param run_blocking: C{(f, *args) -> Deferred}, running C{f} in a thread.
    @param around: a context manager factory wrapped around the callbacks of
        one batch (the index's C{batch}: one transaction for what they
        record).
    """

    def __init__(self, run_blocking: Callable[..., Deferred],
                 work: Callable[[List[Any]], Sequence[Outcome]],
                 max_jobs: int, max_batch: int = MAX_BATCH,
                 around: Callable[[], ContextManager] = contextlib.nullcontext):
        self._run = run_blocking
        self._around = around
        self._work = work
        self.max_jobs = max_jobs
        self.max_batch = max_batch
        self.running = 0
        self._firing = False
        self._queue: Deque[Tuple[Any, Deferred]] = deque()

    def add(self, item: Any) -> Deferred:
        """
        Queue C{item}; the Deferred fires with its result (or fails).
        """
        d: Deferred = Deferred()
        self._queue.append((item, d))
        self._start()
        return d

    def _start(self) -> None:
        while self._queue and self.running < self.max_jobs and not self._firing:
            count = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            self.running += 1
            items = [item for item, _ in batch]
            self._run(self._work, items).addBoth(self._finished, batch)

    def _finished(self, outcomes, batch: List[Tuple[Any, Deferred]]) -> None:
        self.running -= 1
        if not isinstance(outcomes, Failure) and len(outcomes) != len(batch):
            outcomes = Failure(RuntimeError(
                f"a batch of {len(batch)} gave {len(outcomes)} outcomes"))
        if isinstance(outcomes, Failure):  # the batch itself failed: each item did
            outcomes = [(False, outcomes)] * len(batch)
        # What the callbacks queue goes out together once they are done,
        # with whatever was waiting.
        self._firing = True
        try:
            with self._around():
                for (_, d), (ok, value) in zip(batch, outcomes):
                    if ok:
                        d.callback(value)
                    else:
                        d.errback(value)
        finally:
            self._firing = False
            self._start()


def call_each(calls: List[Tuple[Callable, tuple]]) -> List[Outcome]:
    """
    Run each C{(f, args)}; its result or its failure (blocking).
    """
    outcomes: List[Outcome] = []
    for f, args in calls:
        try:
            outcomes.append((True, f(*args)))
        except BaseException:
            outcomes.append((False, Failure()))
    return outcomes


class BatchedCalls:
    """
    C{run_blocking} for the node's disk work: C{self(f, *args)} runs
    C{f(*args)} in a thread, in a batch with the calls queued beside it
    (see the module docstring).
    """

    def __init__(self, run_blocking: Callable[..., Deferred], max_jobs: int,
                 max_batch: int = MAX_BATCH):
        self.batches = Batches(run_blocking, call_each, max_jobs, max_batch)

    def __call__(self, f: Callable, *args) -> Deferred:
        return self.batches.add((f, args))
