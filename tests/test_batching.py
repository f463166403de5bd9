"""
Tests for L{p2ptwisted.batching}: blocking work queued while every thread
is busy goes out together, and each item gets its own outcome.
"""

import contextlib

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.batching import Batches, BatchedCalls, call_each


class Threads:
    """
    A C{run_blocking} that holds each job until the test runs it.
    """

    def __init__(self):
        self.jobs = []

    def __call__(self, f, *args):
        d = Deferred()
        self.jobs.append((f, args, d))
        return d

    def run(self, i=0):
        f, args, d = self.jobs.pop(i)
        try:
            result = f(*args)
        except BaseException:
            d.errback(Failure())
        else:
            d.callback(result)


def doubled(items):
    return [(True, 2 * item) for item in items]


class BatchesTests(SynchronousTestCase):

    def setUp(self):
        self.threads = Threads()
        self.results = []

    def add(self, batches, item):
        d = batches.add(item)
        d.addCallbacks(self.results.append, lambda f: self.results.append(f.value))
        return d

    def test_quiet_starts_at_once(self):
        """
        With a thread free, an item is run at once, on its own.
        """
        batches = Batches(self.threads, doubled, max_jobs=2)
        self.add(batches, 1)
        self.assertEqual([args for _, args, _ in self.threads.jobs], [([1],)])
        self.threads.run()
        self.assertEqual(self.results, [2])
        self.assertEqual(batches.running, 0)

    def test_waiting_items_go_together(self):
        """
        Items added while every thread is busy wait, and the next free
        thread takes them all in one batch (at most C{max_batch}).
        """
        batches = Batches(self.threads, doubled, max_jobs=1, max_batch=3)
        for item in range(5):
            self.add(batches, item)
        self.assertEqual([args for _, args, _ in self.threads.jobs], [([0],)])
        self.threads.run()
        self.assertEqual([args for _, args, _ in self.threads.jobs], [([1, 2, 3],)])
        self.threads.run()
        self.assertEqual([args for _, args, _ in self.threads.jobs], [([4],)])
        self.threads.run()
        self.assertEqual(self.results, [0, 2, 4, 6, 8])

    def test_each_item_its_outcome(self):
        """
        One item's failure fails only its own Deferred.
        """
        def work(items):
            return [(True, i) if i != "bad" else (False, Failure(ValueError(i))) for i in items]

        batches = Batches(self.threads, work, max_jobs=1)
        self.add(batches, "first")
        for item in ("a", "bad", "c"):
            self.add(batches, item)
        self.threads.run()
        self.threads.run()
        self.assertEqual(self.results[:2], ["first", "a"])
        self.assertIsInstance(self.results[2], ValueError)
        self.assertEqual(self.results[3], "c")

    def test_a_failed_batch_fails_each(self):
        """
        Work that raises, or gives the wrong number of outcomes, fails every
        item of its batch -- and the next batch still runs.
        """
        def work(items):
            if "boom" in items:
                raise OSError("boom")
            return [(True, items[0])]  # one outcome, whatever the count

        batches = Batches(self.threads, work, max_jobs=1)
        self.add(batches, "boom")
        self.add(batches, "x")
        self.add(batches, "y")
        self.threads.run()
        self.threads.run()
        self.assertIsInstance(self.results[0], OSError)
        self.assertEqual([type(r) for r in self.results[1:]], [RuntimeError, RuntimeError])
        self.assertIn("a batch of 2 gave 1 outcomes", str(self.results[1]))
        self.assertEqual(batches.running, 0)

    def test_callbacks_queue_one_batch(self):
        """
        What the callbacks of a batch queue goes out as one batch after
        they are done (not one thread hop each), inside C{around}.
        """
        entered = []

        @contextlib.contextmanager
        def around():
            entered.append("in")
            yield
            entered.append("out")

        batches = Batches(self.threads, doubled, max_jobs=2, around=around)
        first = self.add(batches, 1)
        self.add(batches, 2)
        self.add(batches, 3)  # both threads busy: waits
        first.addCallback(lambda _: [self.add(batches, n) for n in (10, 20)])
        self.threads.run(0)
        self.assertEqual(entered, ["in", "out"])
        self.assertEqual([args for _, args, _ in self.threads.jobs], [([2],), ([3, 10, 20],)])
        self.threads.run()
        self.threads.run()
        self.assertEqual(self.results, [2, 4, 6, 20, 40])


class BatchedCallsTests(SynchronousTestCase):

    def test_calls(self):
        """
        C{BatchedCalls} runs functions with their arguments; an exception
        fails that call alone.
        """
        threads = Threads()
        calls = BatchedCalls(threads, max_jobs=1)
        got = []
        calls(lambda: "first").addCallback(got.append)
        calls(pow, 2, 10).addCallback(got.append)
        calls(int, "nope").addErrback(lambda f: got.append(f.check(ValueError)))
        threads.run()
        threads.run()
        self.assertEqual(got, ["first", 1024, ValueError])

    def test_call_each(self):
        outcomes = call_each([(len, ("abc",)), (int, ("x",))])
        self.assertEqual(outcomes[0], (True, 3))
        self.assertFalse(outcomes[1][0])
        self.assertTrue(outcomes[1][1].check(ValueError))
