"""
Tests for L{p2ptwisted.control}'s answers as a Python user at the manhole
expects them (issue 11, point 13): connect() to a dead address fails,
cancel() cancels or says why not, transfers() and catalog_of() print as
tables, watch() shows a fetch's progress.  In memory, on the fake clock of
L{tests.test_control}'s mesh.
"""

from __future__ import annotations

import os

from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from p2ptwisted.control import ConnectFailed
from p2ptwisted.downloads import TransferFailed
from p2ptwisted.tables import EntryTable, TransferTable

# The module, not its classes: trial would run their tests again here.
from . import test_control as base
from .test_exchange import content


class ConnectFailureTests(base.ControlTestCase):
    def test_connect_to_a_dead_address_fails(self):
        """
        connect() to an address where nobody answers fails its Deferred
        with ConnectFailed, naming the address and the error (instead of
        never firing); the node carries on.
        """
        a = self.mesh.node("a")
        results = self.fired(self.control(a).connect("10.0.0.9:4000"))
        [(host, port, factory, timeout, bind)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("10.0.0.9", 4000))
        self.assertEqual(results, [])
        factory.clientConnectionFailed(self.reactor.connectors[-1],
                                       Failure(ConnectionRefusedError("nobody home")))
        [failure] = results
        self.assertIsInstance(failure, Failure)
        failure.trap(ConnectFailed)
        self.assertIn("could not reach 10.0.0.9:4000: ", str(failure.value))
        self.assertIn("nobody home", str(failure.value))
        self.assertIn("redialled with backoff", str(failure.value))
        self.assertTrue(a.running)


class FetchOpsTestCase(base.ControlTestCase):
    def setUp(self):
        super().setUp()
        self.reactor.advance(1000)
        self.a = self.mesh.node("a", sync=False)
        self.b = self.mesh.node("b")
        self.data = content(5, 4 * 1024 * 1024)
        base.write_file(self.b.share_dir, "big.bin", self.data)
        base.write_file(self.b.share_dir, "small.txt", b"small\n")
        self.successResultOf(self.b.rescan())
        self.mesh.link(self.a, self.b, limit=1)
        self.mesh.run(self.knows_index(self.a, self.b))
        self.ctl = self.control(self.a)


class CancelTests(FetchOpsTestCase):
    def test_cancel_a_running_fetch(self):
        """
        cancel(path) stops a fetch() in flight: its Deferred fails with
        "cancelled", nothing lands in the share, and the file can be
        fetched again afterwards.
        """
        results = self.fired(self.ctl.fetch("big.bin"))
        want = self.ctl._transfer("big.bin")
        self.step_until(lambda: want.state == "running", tick=0.05)
        self.ctl.cancel("big.bin")
        self.assertEqual(self.out[-1], "cancelled the fetch of 'big.bin'")
        [failure] = results
        failure.trap(TransferFailed)
        self.assertEqual(failure.value.code, "cancelled")
        self.settle(5)
        self.assertFalse(os.path.exists(os.path.join(self.a.share_dir, "big.bin")))
        again = self.fired(self.ctl.fetch("big.bin"))
        self.mesh.run(lambda: again)
        self.assertEqual(again, [os.path.join(self.a.share_dir, "big.bin")])

    def test_cancel_a_waiting_fetch(self):
        """
        A fetch still waiting for its turn is cancelled too (by what
        fetch() returned).
        """
        self.a.folder.fetcher.stopped = True  # nothing starts: both wait
        d = self.ctl.fetch("small.txt")
        results = self.fired(d)
        self.assertEqual(self.ctl._transfer(d).state, "waiting")
        self.ctl.cancel(d)
        [failure] = results
        self.assertEqual(failure.value.code, "cancelled")
        self.assertEqual(list(self.a.folder.fetcher.queue), [])

    def test_cancel_says_why_not(self):
        """
        cancel() of nothing, or of a fetch that has ended, raises an error
        that says why, instead of quietly returning False.
        """
        e = self.assertRaises(LookupError, self.ctl.cancel, "nothing.bin")
        self.assertIn("no transfer of 'nothing.bin'", str(e))
        results = self.fired(self.ctl.fetch("small.txt"))
        self.mesh.run(lambda: results)
        e = self.assertRaises(ValueError, self.ctl.cancel, "small.txt")
        self.assertIn("has already ended (done)", str(e))
        self.assertRaises(TypeError, self.ctl.cancel, 42)


class TableTests(FetchOpsTestCase):
    def test_transfers_prints_a_table(self):
        """
        transfers() is a list of transfer objects that prints one line per
        transfer, and only the last ten that ended unless asked for more.
        """
        for _ in range(12):
            results = self.fired(self.ctl.fetch("small.txt", dest=self.mktemp()))
            self.mesh.run(lambda results=results: results)
        running = self.fired(self.ctl.fetch("big.bin"))
        table = self.ctl.transfers()
        self.assertIsInstance(table, TransferTable)
        self.assertEqual(len(table), 11)
        lines = repr(table).split("\n")
        self.assertEqual(len(lines), 12)
        self.assertEqual(lines[0].split(), ["path", "state", "bytes", "from", "finished"])
        self.assertTrue(lines[-1].startswith("big.bin "), lines[-1])
        for line in lines[1:-1]:
            self.assertRegex(line, r"^small\.txt +done +6 B of 6 B \(100%\) +[0-9a-f]{12} +\d+s"
                                   r" ago$")
        self.assertEqual(len(self.ctl.transfers(finished=100)), 13)
        self.assertEqual(running, [])

    def test_catalog_of_prints_a_table(self):
        entries = self.ctl.catalog_of("b")
        self.assertIsInstance(entries, EntryTable)
        self.assertEqual([e.path for e in entries], ["big.bin", "small.txt"])
        lines = repr(entries).split("\n")
        self.assertEqual(lines[0].split()[:3], ["path", "kind", "size"])
        self.assertEqual(lines[1].split()[:4], ["big.bin", "file", "4.0", "MiB"])
        self.assertEqual(lines[2].split()[:4], ["small.txt", "file", "6", "B"])


class DoneTests(FetchOpsTestCase):
    def test_a_transfers_done_fires_with_where_it_landed(self):
        """
        A callback added to a transfer's .done (from transfers()) gets the
        full path where the file landed, as fetch()'s Deferred does (not
        None, nor the name relative to its directory).
        """
        elsewhere = os.path.abspath(self.mktemp())
        d = self.ctl.fetch("small.txt", dest=elsewhere)
        [t] = self.ctl.transfers()
        results, done = self.fired(d), self.fired(t.done)
        self.mesh.run(lambda: results)
        self.assertEqual(results, [os.path.join(elsewhere, "small.txt")])
        self.assertEqual(done, results)
        d = self.ctl.fetch("small.txt")
        [t] = [t for t in self.ctl.transfers() if t.finished_at is None]
        results, done = self.fired(d), self.fired(t.done)
        self.mesh.run(lambda: results)
        self.assertEqual(done, [os.path.join(self.a.share_dir, "small.txt")])


class WatchTests(FetchOpsTestCase):
    def test_watch_without_a_session_prints_one_line(self):
        """
        watch() outside a manhole session (no console) prints the
        transfer's line once.
        """
        results = self.fired(self.ctl.fetch("small.txt"))
        self.mesh.run(lambda: results)
        self.ctl.watch("small.txt")
        self.assertEqual(self.out[-1], "small.txt: done, 6 B of 6 B (100%), from "
                                       + self.b.node_id[:12])
