"""
Tests for L{p2ptwisted.control}: the operator's API behind the manhole,
driven on a fake clock with nodes joined in memory.

Bytes move step by step with TCP-like back-pressure (the L{Mesh} and
L{throttle} helpers of L{tests.test_files}), so a transfer can be looked at
while it runs: its state, its byte count, its rate and ETA, and the log
lines it writes.
"""

import attrs
import os
import re

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import files as files_module
from p2ptwisted import node as node_module
from p2ptwisted import wire
from p2ptwisted.control import Control, PeerInfo
from p2ptwisted.identity import format_id
from p2ptwisted.limits import PING_INTERVAL
from p2ptwisted.transfer import CHUNK_SIZE, partial_name

from .helpers import capture_logs
from .test_files import (
    MiB,
    Mesh,
    content,
    content_hash,
    names_in,
    partials,
    read_file,
    tap,
    write_file,
)

#: One progress line of a download (see FileExchange.data_received).
PROGRESS = re.compile(r"^(?P<path>\S+): (?P<percent>\d+)% \((?P<done>\d+) of (?P<size>\d+) bytes\)"
                      r" from (?P<peer>.*)$")

#: Safety bound on manual stepping loops.
MAX_LOOPS = 5000


# ---------------------------------------------------------------------------
# Helpers


def timed_logs(testcase, clock):
    """
    Collect log lines with the fake time each was written at.
    """
    lines = []

    def observer(event):
        lines.append((clock.seconds(), formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


def progress_lines(lines, path):
    """
    The progress lines for C{path} among C{(time, text)} pairs, as
    C{(time, percent, done, size)}.
    """
    found = []
    for when, text in lines:
        m = PROGRESS.match(text)
        if m and m.group("path") == path:
            found.append((when, int(m.group("percent")), int(m.group("done")),
                          int(m.group("size"))))
    return found


def record_frames(io):
    """
    Every control frame (not DATA) a fake transport carries, decoded, as a
    list that grows.
    """
    frames = []

    def edit(frame):
        if frame[0] != wire.DATA:
            frames.append(wire.decode_frame(frame))
        return frame

    tap(io, edit)
    return frames


def fixed_ids(testcase, *ids):
    """
    The next nodes made get these node ids, in order.
    """
    queue = list(ids)
    real = node_module.load_or_create_identity

    def fixed(state_dir):
        return attrs.evolve(real(state_dir), node_id=queue.pop(0))

    testcase.patch(node_module, "load_or_create_identity", fixed)


def knows_catalog(a, b):
    return lambda: b.node_id in a.files.remote


def dial_completes(testcase, dialer, listener, host, port, source=("192.168.7.7", 50123)):
    """
    Complete the dial C{dialer}'s reactor recorded for C{host:port}: build
    the protocol from the factory the endpoint gave to C{connectTCP} and
    join it in memory to a connection accepted by C{listener}.  Returns
    the iosim pump.
    """
    matching = [c for c in dialer.reactor.tcpClients if (c[0], c[1]) == (host, port)]
    testcase.assertEqual(len(matching), 1, dialer.reactor.tcpClients)
    _, _, factory, _, _ = matching[0]
    there = IPv4Address("TCP", host, port)
    here = IPv4Address("TCP", *source)
    client = factory.buildProtocol(there)
    server = listener.factory.buildProtocol(here)
    client_transport = iosim.FakeTransport(client, isServer=False,
                                           hostAddress=here, peerAddress=there)
    server_transport = iosim.FakeTransport(server, isServer=True,
                                           hostAddress=there, peerAddress=here)
    return iosim.connect(server, server_transport, client, client_transport, greet=False)


class ControlTestCase(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.reactor = self.mesh.reactor
        self.out = []

    def control(self, node):
        return Control(node, out=self.out.append)

    def settle(self, seconds=1.0):
        """
        Let C{seconds} of fake time pass, then move bytes until none are
        left in flight.
        """
        self.mesh.run_for(seconds)
        for _ in range(MAX_LOOPS):
            if not self.mesh.step():
                return
        self.fail("bytes never stopped moving")

    def step_until(self, condition, tick, each=None):
        """
        Let C{tick} fake seconds pass, then move bytes once on every
        connection; repeat until C{condition()} holds.
        """
        for _ in range(MAX_LOOPS):
            if condition():
                return
            self.reactor.advance(tick)
            self.mesh.step()
            if each is not None:
                each()
        self.fail("condition never met")


# ---------------------------------------------------------------------------
# peers(), connect(), drop()


class PeersTests(ControlTestCase):
    def test_peers_describes_each_connection(self):
        """
        After A dials B, A lists B as outbound and B lists A as inbound,
        with ids, names, addresses and since when (in UTC, from the clock).
        """
        self.reactor.advance(86400 + 3661)
        a, b = self.mesh.node("alpha"), self.mesh.node("beta")
        control_a, control_b = self.control(a), self.control(b)
        self.assertEqual(control_a.peers(), [])
        client, server, pump = self.mesh.link(a, b)
        self.mesh.run(lambda: a.connections and b.connections)
        [info] = control_a.peers()
        self.assertIsInstance(info, PeerInfo)
        self.assertEqual((info.id, info.name, info.direction), (b.node_id, "beta", "outbound"))
        self.assertEqual(info.address, f"127.0.0.1:{b.listen_ports[0]}")
        self.assertEqual(info.since, "1970-01-02 01:01:01 UTC")
        [back] = control_b.peers()
        self.assertEqual((back.id, back.name, back.direction), (a.node_id, "alpha", "inbound"))
        self.assertEqual(back.address,
                         f"127.0.0.1:{client.transport.getHost().port}")
        text = repr(info)
        self.assertIn("'beta'", text)
        self.assertIn(b.node_id[:12], text)
        self.assertIn("outbound", text)

    def test_byte_counters_follow_traffic(self):
        """
        bytes_in and bytes_out count what crossed the connection: each
        side's out is the other's in, and both grow when frames move (a
        catalog announcement, then PINGs on a quiet connection).
        """
        a, b = self.mesh.node("a"), self.mesh.node("b")
        control_a, control_b = self.control(a), self.control(b)
        self.mesh.link(a, b)
        self.settle()

        def counters():
            [mine] = control_a.peers()
            [theirs] = control_b.peers()
            self.assertEqual(mine.bytes_out, theirs.bytes_in)
            self.assertEqual(mine.bytes_in, theirs.bytes_out)
            return mine.bytes_in, mine.bytes_out

        first_in, first_out = counters()
        self.assertGreater(first_in, 0)  # HELLO, CATALOG, ...
        self.assertGreater(first_out, 0)  # HELLO, LIST, ...

        # B announces a new file: only A's bytes_in grows.
        write_file(b.share_dir, "news.txt", b"fresh\n")
        b.rescan()
        self.settle()
        self.assertIn("news.txt", a.files.remote[b.node_id])
        second_in, second_out = counters()
        self.assertGreater(second_in, first_in)

        # A quiet connection is pinged (and answered): both counters grow.
        self.settle(PING_INTERVAL + 1)
        third_in, third_out = counters()
        self.assertGreater(third_in, second_in)
        self.assertGreater(third_out, second_out)


class ConnectTests(ControlTestCase):
    def test_connect_dials_and_fires_with_the_peer(self):
        """
        connect("host:port") dials that address once (through the reactor)
        and fires with the peer once the connection is up and handshaken.
        """
        a = self.mesh.node("a")
        b = self.mesh.node("b", port=12345)
        control = self.control(a)
        results = []
        control.connect("10.0.0.5:12345").addBoth(results.append)
        [(host, port, factory, timeout, bind)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("10.0.0.5", 12345, node_module.CONNECT_TIMEOUT))
        entry = a.book.get("10.0.0.5:12345")
        self.assertTrue(entry.bootstrap)
        self.assertTrue(entry.dialing)
        # While the dial is pending nothing fires and it is not repeated.
        self.reactor.advance(5)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(results, [])

        pump = dial_completes(self, a, b, "10.0.0.5", 12345)
        self.mesh.pumps.append(pump)
        self.assertEqual(results, [])  # connected, but no HELLO yet
        self.mesh.run(lambda: results)
        [info] = results
        self.assertIsInstance(info, PeerInfo)
        self.assertEqual((info.id, info.name, info.address, info.direction),
                         (b.node_id, "b", "10.0.0.5:12345", "outbound"))
        self.assertEqual(entry.node_id, b.node_id)
        self.assertEqual(set(a.connections), {b.node_id})
        self.assertEqual([(p.id, p.direction) for p in self.control(b).peers()],
                         [(a.node_id, "inbound")])
        # It stays one connection, and the address is not dialled again.
        self.settle(10)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(set(a.connections), {b.node_id})

    def test_connect_to_a_peer_already_connected(self):
        """
        connect() fires with the peer once a connection to it exists, even
        when the new connection loses to an existing one in the duplicate
        rule (here B, with the smaller id, dialled A first, so the
        connection B dialled is the one both keep).
        """
        fixed_ids(self, "f" * 64, "0" * 64)
        a = self.mesh.node("a")
        b = self.mesh.node("b", port=12346)
        self.mesh.link(b, a)
        self.settle()
        self.assertEqual(set(a.connections), {b.node_id})
        inbound = a.connections[b.node_id]
        results = []
        self.control(a).connect("10.0.0.6:12346").addBoth(results.append)
        self.mesh.pumps.append(dial_completes(self, a, b, "10.0.0.6", 12346))
        self.settle(5)
        # The duplicate was closed; the first connection is the one kept.
        self.assertIs(a.connections[b.node_id], inbound)
        self.assertEqual(a.book.get("10.0.0.6:12346").node_id, b.node_id)
        self.assertEqual(len(results), 1, "connect() never fired although the peer is connected")
        self.assertEqual(results[0].id, b.node_id)


class DropTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        self.a, self.b = self.mesh.node("a"), self.mesh.node("bob")
        self.client, self.server, self.pump = self.mesh.link(self.a, self.b)
        self.sent = record_frames(self.pump.clientIO)
        self.settle()
        self.ctl = self.control(self.a)

    def check_dropped(self, info):
        self.assertIsInstance(info, PeerInfo)
        self.assertEqual(info.id, self.b.node_id)
        self.settle()
        self.assertEqual(self.a.connections, {})
        self.assertEqual(self.b.connections, {})
        self.assertEqual(self.ctl.peers(), [])
        errors = [m for m in self.sent if isinstance(m, wire.Error)]
        self.assertEqual([(e.code, e.transfer) for e in errors], [("dropped", None)])
        self.assertTrue(any("reports error dropped" in l for l in self.logs()), self.logs())

    def test_drop_by_name(self):
        self.check_dropped(self.ctl.drop("bob"))

    def test_drop_by_id_prefix(self):
        self.check_dropped(self.ctl.drop(self.b.node_id[:8]))

    def test_drop_by_full_id(self):
        self.check_dropped(self.ctl.drop(self.b.node_id))

    def test_unknown_peer(self):
        for name in ("carol", "bo", self.b.node_id[:3], self.a.node_id[:8], ""):
            self.assertRaises(LookupError, self.ctl.drop, name)
        self.settle()
        self.assertEqual(set(self.a.connections), {self.b.node_id})
        self.assertEqual([m for m in self.sent if isinstance(m, wire.Error)], [])


class AmbiguousPeerTests(ControlTestCase):
    def test_ambiguous_name_or_prefix(self):
        """
        Two peers with the same name, and with ids sharing a prefix: both
        the name and the prefix are refused, the full ids work.
        """
        b_id, c_id = "abcd" + "1" * 60, "abcd" + "2" * 60
        fixed_ids(self, "9" * 64, b_id, c_id)
        a, b, c = self.mesh.node("a"), self.mesh.node("twin"), self.mesh.node("twin")
        self.mesh.link(a, b)
        self.mesh.link(a, c)
        self.settle()
        control = self.control(a)
        self.assertEqual(sorted(p.id for p in control.peers()), [b_id, c_id])
        for name in ("twin", "abcd"):
            with self.assertRaises(LookupError) as caught:
                control.drop(name)
            self.assertIn("more than one", str(caught.exception))
        self.assertEqual(len(a.connections), 2)
        self.assertEqual(control.drop("abcd1").id, b_id)
        self.settle()
        self.assertEqual(set(a.connections), {c_id})
        self.assertEqual(control.drop("twin").id, c_id)


# ---------------------------------------------------------------------------
# catalog(), catalog_of(), rescan()


class CatalogTests(ControlTestCase):
    def test_catalog_is_sorted_after_rescan(self):
        a = self.mesh.node("a")
        control = self.control(a)
        self.assertEqual(control.catalog(), [])
        files = {"b.txt": b"bee\n", "a/z.txt": b"zed\n", "c.bin": content(1, 5000),
                 "a/b/deep.txt": b"deep\n"}
        for path, data in files.items():
            write_file(a.share_dir, path, data)
        results = []
        control.rescan().addBoth(results.append)
        self.assertEqual(len(results), 1)
        catalog = control.catalog()
        self.assertEqual([e.path for e in catalog], sorted(files))
        for entry in catalog:
            self.assertIsInstance(entry, wire.FileEntry)
            self.assertEqual(entry.size, len(files[entry.path]))
            self.assertEqual(entry.hash, content_hash(files[entry.path]))

    def test_rescan_fires_with_new_entries(self):
        a = self.mesh.node("a")
        control = self.control(a)
        data = b"new file\n"
        write_file(a.share_dir, "new.txt", data)
        results = []
        control.rescan().addBoth(results.append)
        [[entry]] = results
        self.assertEqual((entry.path, entry.size, entry.hash),
                         ("new.txt", len(data), content_hash(data)))
        # Nothing new: nothing reported.
        results = []
        control.rescan().addBoth(results.append)
        self.assertEqual(results, [[]])
        # A changed file is reported with its new content.
        changed = b"changed, and longer\n"
        write_file(a.share_dir, "new.txt", changed, mtime_ns=1_700_000_000 * 10**9)
        results = []
        control.rescan().addBoth(results.append)
        [[entry]] = results
        self.assertEqual((entry.path, entry.size, entry.hash),
                         ("new.txt", len(changed), content_hash(changed)))
        self.assertEqual(control.catalog(), [entry])

    def test_catalog_of_a_peer(self):
        a, b = self.mesh.node("a"), self.mesh.node("b")
        write_file(b.share_dir, "z.txt", b"z\n")
        write_file(b.share_dir, "dir/m.bin", content(2, 200_000))
        write_file(b.share_dir, "a.txt", b"a\n")
        b.rescan()
        self.mesh.link(a, b)
        self.mesh.run(knows_catalog(a, b))
        results = []
        self.control(a).catalog_of("b").addBoth(results.append)
        [entries] = results
        self.assertEqual([e.path for e in entries], ["a.txt", "dir/m.bin", "z.txt"])
        self.assertEqual(entries, self.control(b).catalog())
        # By id prefix too, and kept current by announcements.
        write_file(b.share_dir, "later.txt", b"later\n")
        b.rescan()
        self.settle()
        results = []
        self.control(a).catalog_of(b.node_id[:6]).addBoth(results.append)
        self.assertEqual([e.path for e in results[0]],
                         ["a.txt", "dir/m.bin", "later.txt", "z.txt"])
        self.assertRaises(LookupError, self.control(a).catalog_of, "nobody")


# ---------------------------------------------------------------------------
# fetch(), transfers(), status()


class FetchTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        # Not at 0.0: Transfer.rate takes a download started at time 0 for
        # one not started at all (a real clock is never 0).
        self.reactor.advance(1000)
        self.a = self.mesh.node("a", sync=False)
        self.b = self.mesh.node("b")

    def offer(self, path, data, limit=1):
        """
        Put C{path} in B's share, link A to B with a send window of
        C{limit} bytes (1: one DATA frame per step), and wait until A knows
        B's catalog.
        """
        write_file(self.b.share_dir, path, data)
        self.b.rescan()
        client, server, pump = self.mesh.link(self.a, self.b, limit=limit)
        self.sent = record_frames(pump.clientIO)
        self.mesh.run(knows_catalog(self.a, self.b))
        return client, server, pump

    def test_fetch_with_live_progress(self):
        """
        A large file fetched step by step: while it runs, the Transfer shows
        growing bytes, a percentage, a rate and an ETA consistent with the
        fake clock; a progress line is logged at every tenth; at the end the
        file is in the share, listed in transfers() and counted by status().
        """
        data = content(3, 8 * MiB + 12345)
        size = len(data)
        self.offer("big.bin", data)
        control = self.control(self.a)
        lines = timed_logs(self, self.reactor)

        transfer = control.fetch("big.bin", peer="b")
        self.assertEqual((transfer.path, transfer.size, transfer.dest),
                         ("big.bin", size, "big.bin"))
        self.assertEqual(transfer.state, "running")
        self.assertEqual((transfer.done_bytes, transfer.percent), (0, 0.0))
        self.assertEqual(transfer.rate, 0.0)
        self.assertIsNone(transfer.eta)
        self.assertIn(transfer, control.transfers())
        self.assertIn("b (", transfer.peer)
        results = []
        transfer.done.addBoth(results.append)

        samples = []
        status_seen = []

        def look():
            if transfer.finished is not None:
                return
            now = self.reactor.seconds()
            samples.append((now, transfer.state, transfer.done_bytes, transfer.percent,
                            transfer.rate, transfer.eta))
            if not status_seen and transfer.done_bytes > size // 2:
                control.status()
                status_seen.append(self.out[-1])

        self.step_until(lambda: results, tick=0.05, each=look)

        # While running.
        self.assertTrue(samples)
        self.assertEqual({s[1] for s in samples}, {"running"})
        done = [s[2] for s in samples]
        self.assertEqual(done, sorted(done))
        self.assertGreater(len(set(done)), size // CHUNK_SIZE // 2, "not step by step")
        for now, state, done_bytes, percent, rate, eta in samples:
            self.assertTrue(0 <= percent <= 100)
            self.assertAlmostEqual(percent, 100 * done_bytes / size)
            if done_bytes == 0:
                continue
            elapsed = now - transfer.started
            self.assertGreater(elapsed, 0)
            self.assertAlmostEqual(rate, done_bytes / elapsed)
            self.assertGreater(rate, 0)
            self.assertIsNotNone(eta)
            self.assertAlmostEqual(eta, (size - done_bytes) / rate)
        [mid] = status_seen
        self.assertIn("transfers: 1 in flight or waiting, 0 completed since start", mid)
        self.assertIn("<Transfer 'big.bin' running", mid)
        self.assertIn("ETA", mid)

        # Progress lines: one per tenth, in order, and their numbers agree.
        progress = progress_lines(lines, "big.bin")
        self.assertEqual([p[1] // 10 for p in progress], list(range(1, 11)))
        for when, percent, done_bytes, total in progress:
            self.assertEqual(total, size)
            self.assertEqual(percent, done_bytes * 100 // size)
        self.assertEqual(progress[-1][1:3], (100, size))

        # At the end.
        self.assertEqual(results, ["big.bin"])
        self.assertEqual(transfer.state, "done")
        self.assertEqual((transfer.done_bytes, transfer.percent), (size, 100.0))
        self.assertIsNone(transfer.eta)
        self.assertEqual(transfer.landed, "big.bin")
        self.assertIsNotNone(transfer.finished)
        self.assertEqual(read_file(self.a.share_dir, "big.bin"), data)
        self.assertEqual([e.path for e in control.catalog()], ["big.bin"])
        self.assertEqual(control.transfers(), [transfer])
        self.assertIn("done 100%", repr(transfer))
        self.assertIn("-> big.bin", repr(transfer))
        self.settle()
        # Announced to B.
        self.assertIn("big.bin", self.a.files.remote.get(self.b.node_id, {}))
        self.assertIn("big.bin", self.b.files.remote[self.a.node_id])
        del self.out[:]
        control.status()
        [summary] = self.out
        self.assertIn(f"node a ({self.a.node_id})", summary)
        # In memory the nodes run plaintext (tests.helpers.make_node).
        self.assertIn(f"id {format_id(self.a.node_id)}; plaintext (--no-tls)", summary)
        self.assertIn("sharing 1 files (8.0 MiB); sync off", summary)
        self.assertIn("peers: 1 connected", summary)
        self.assertIn("transfers: 0 in flight or waiting, 1 completed since start", summary)

    def test_fetch_into_another_directory(self):
        """
        fetch(path, dest=dir) puts the file in that directory, outside the
        share: it is not catalogued and not announced.
        """
        data = content(4, 700_000)
        self.offer("docs/report.bin", data, limit=64 * 1024)
        control = self.control(self.a)
        dest = os.path.abspath(self.mktemp())
        results = []
        transfer = control.fetch("docs/report.bin", dest=dest)
        transfer.done.addBoth(results.append)
        self.mesh.run(lambda: results)
        target = os.path.join(dest, "report.bin")
        self.assertEqual(results, [target])
        self.assertEqual((transfer.state, transfer.landed), ("done", target))
        self.assertEqual(sorted(os.listdir(dest)), ["report.bin"])
        with open(target, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(names_in(self.a.share_dir), set())
        self.assertEqual(control.catalog(), [])
        results = []
        control.rescan().addBoth(results.append)
        self.assertEqual(results, [[]])
        self.assertEqual(control.catalog(), [])
        self.settle(2)
        self.assertEqual([m for m in self.sent if isinstance(m, wire.Have)], [])
        self.assertEqual(self.b.files.remote.get(self.a.node_id, {}), {})
        self.assertEqual(control.transfers(), [transfer])

    def test_fetch_unknown_path(self):
        self.offer("known.txt", b"known\n")
        control = self.control(self.a)
        self.assertRaises(LookupError, control.fetch, "unknown.txt")
        self.assertRaises(LookupError, control.fetch, "known.txt", peer="nobody")
        self.assertEqual(control.transfers(), [])
        self.settle()
        self.assertEqual([m for m in self.sent if isinstance(m, wire.Get)], [])

    def test_progress_logged_by_time_on_a_slow_transfer(self):
        """
        A slow transfer (one DATA frame every 2 fake seconds, well under a
        tenth per PROGRESS_INTERVAL) still logs its progress at least every
        PROGRESS_INTERVAL seconds.
        """
        data = content(5, 8 * MiB)
        self.offer("slow.bin", data)
        control = self.control(self.a)
        lines = timed_logs(self, self.reactor)
        tick = 2.0
        self.assertLess(CHUNK_SIZE * files_module.PROGRESS_INTERVAL / tick, len(data) / 10)
        transfer = control.fetch("slow.bin")
        results = []
        transfer.done.addBoth(results.append)
        self.step_until(lambda: results, tick=tick)
        self.assertEqual(results, ["slow.bin"])
        progress = progress_lines(lines, "slow.bin")
        times = [transfer.started] + [p[0] for p in progress]
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        self.assertLessEqual(max(gaps), files_module.PROGRESS_INTERVAL + tick, gaps)
        self.assertGreaterEqual(transfer.finished - transfer.started, 100)
        # Lines by time, between the tenths: some say the same tenth.
        tenths = [p[1] // 10 for p in progress]
        self.assertGreater(len(progress), 10)
        self.assertLess(len(set(tenths)), len(tenths))
        self.assertEqual(sorted(tenths), tenths)


# ---------------------------------------------------------------------------
# cancel()


class CancelTests(ControlTestCase):
    def test_cancel_a_running_transfer(self):
        """
        A transfer cancelled while running: it says so, its Deferred fails
        with CancelledError, the peer is told, the partial file stays, and
        the file is not fetched again on its own -- only when asked, and
        then from where it stopped.
        """
        a, b = self.mesh.node("a"), self.mesh.node("b")  # a syncs
        data = content(6, 4 * MiB)
        write_file(b.share_dir, "movie.bin", data)
        b.rescan()
        client, server, pump = self.mesh.link(a, b, limit=1)
        sent = record_frames(pump.clientIO)
        control = self.control(a)

        def running():
            return [t for t in control.transfers() if t.state == "running"]

        self.mesh.run(lambda: any(t.done_bytes >= MiB for t in running()))
        [transfer] = running()
        self.assertEqual(transfer.path, "movie.bin")
        [get] = [m for m in sent if isinstance(m, wire.Get)]
        self.assertEqual((get.path, get.offset), ("movie.bin", 0))
        results = []
        transfer.done.addBoth(results.append)

        self.assertTrue(control.cancel(transfer))
        self.assertEqual(transfer.state, "cancelled")
        self.assertEqual(transfer.error, "cancelled")
        self.assertIsNotNone(transfer.finished)
        self.assertIsNone(transfer.eta)
        [failure] = results
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(CancelledError))
        self.assertIn(transfer, control.transfers())
        self.assertIn("cancelled", repr(transfer))
        self.assertFalse(control.cancel(transfer))

        self.settle()
        cancels = [m for m in sent if isinstance(m, wire.Cancel)]
        self.assertEqual(cancels, [wire.Cancel(transfer=get.transfer)])
        self.assertEqual(server.scheduler.by_id, {})
        self.assertEqual(client.downloads, {})
        # The partial file stays, holding what arrived.
        part = partial_name("movie.bin", content_hash(data))
        self.assertEqual(partials(a), {part})
        kept = os.path.getsize(os.path.join(a.share_dir, part))
        self.assertEqual(kept, transfer.done_bytes)
        self.assertTrue(MiB <= kept < len(data))
        self.assertEqual(read_file(a.share_dir, part), data[:kept])

        # Not fetched again by itself: not after the retry delay, nor when
        # news from B makes A rethink what it wants.
        self.settle(files_module.RETRY_DELAY * 4)
        write_file(b.share_dir, "other.txt", b"other\n")
        b.rescan()
        self.mesh.run(lambda: os.path.exists(os.path.join(a.share_dir, "other.txt")))
        a.rescan()
        self.settle(files_module.RETRY_DELAY * 4)
        self.assertEqual([(m.path, m.offset) for m in sent if isinstance(m, wire.Get)],
                         [("movie.bin", 0), ("other.txt", 0)])
        self.assertNotIn("movie.bin", a.share.files)
        self.assertEqual(partials(a), {part})
        self.assertEqual(len([t for t in control.transfers() if t.finished is None]), 0)

        # Asked for again: it resumes from the partial file.
        again = control.fetch("movie.bin")
        self.assertIsNot(again, transfer)
        self.assertEqual(again.state, "running")
        self.assertEqual(again.done_bytes, kept)
        results = []
        again.done.addBoth(results.append)
        self.mesh.run(lambda: results)
        self.assertEqual(results, ["movie.bin"])
        gets = [(m.path, m.offset) for m in sent if isinstance(m, wire.Get)]
        self.assertEqual(gets, [("movie.bin", 0), ("other.txt", 0), ("movie.bin", kept)])
        self.assertEqual(read_file(a.share_dir, "movie.bin"), data)
        self.assertEqual(partials(a), set())
        self.assertTrue(any(l.startswith("resuming movie.bin") and f"at byte {kept} of" in l
                            for l in self.logs()))
        self.assertEqual(transfer.state, "cancelled")  # the old one stays as it was


# ---------------------------------------------------------------------------
# Bad arguments


class RobustnessTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        self.a = self.mesh.node("a", sync=False)
        self.b = self.mesh.node("b")
        self.data = content(7, 300_000)
        write_file(self.b.share_dir, "x.bin", self.data)
        self.b.rescan()
        self.mesh.link(self.a, self.b)
        self.mesh.run(knows_catalog(self.a, self.b))
        self.ctl = self.control(self.a)

    def check_still_works(self):
        self.assertEqual(set(self.a.connections), {self.b.node_id})
        results = []
        transfer = self.ctl.fetch("x.bin", peer="b")
        transfer.done.addBoth(results.append)
        self.mesh.run(lambda: results)
        self.assertEqual(results, ["x.bin"])
        self.assertEqual(read_file(self.a.share_dir, "x.bin"), self.data)
        self.assertEqual(self.a.files.wants, {})

    def test_bad_arguments_raise_and_the_node_carries_on(self):
        c = self.ctl
        self.assertRaises(LookupError, c.fetch, "missing.bin")
        self.assertRaises(LookupError, c.fetch, None)
        self.assertRaises(LookupError, c.fetch, "x.bin", peer="nobody")
        self.assertRaises(TypeError, c.fetch, "x.bin", peer=42)
        self.assertRaises(TypeError, c.fetch, "x.bin", dest=42)
        self.assertRaises(LookupError, c.drop, "nobody")
        self.assertRaises(TypeError, c.drop, None)
        self.assertRaises(TypeError, c.drop, 42)
        self.assertRaises(LookupError, c.catalog_of, "nobody")
        self.assertRaises(TypeError, c.catalog_of, 3.5)
        self.assertRaises(TypeError, c.fetch)
        self.assertRaises(TypeError, c.drop)
        book = len(self.a.book)
        # Not TypeError, but an ordinary exception all the same.
        self.assertRaises((TypeError, AttributeError), c.connect, None)
        self.assertEqual(len(self.a.book), book)
        self.assertFalse(c.cancel("not a transfer"))
        self.assertFalse(c.cancel(object()))
        self.assertEqual(c.transfers(), [])
        self.assertEqual(self.a.files.wants, {})
        self.settle()
        self.check_still_works()

    def test_cancel_none_leaves_queued_files_alone(self):
        """
        cancel(None) (say, the result of an expression that found no
        transfer) must not touch the node's wants: wants that have not
        started yet have no Transfer, which is None too.
        """
        a, b = self.mesh.node("c"), self.mesh.node("d")  # c syncs
        many = files_module.MAX_PER_PEER + 4
        for i in range(many):
            write_file(b.share_dir, f"f{i:02}.bin", content(100 + i, 200_000))
        b.rescan()
        self.mesh.link(a, b, limit=1)
        self.mesh.run(lambda: any(w.transfer is None for w in a.files.wants.values()))
        before = dict(a.files.wants)
        control = self.control(a)
        try:
            result = control.cancel(None)
        except Exception as e:
            result = e
        self.assertEqual(sorted(a.files.wants), sorted(before),
                         f"cancel(None) (which gave {result!r}) dropped a queued want")
        self.assertEqual(a.files._cancelled, set())
        self.assertIn(result, (False,))
        self.mesh.run(lambda: len(a.share.files) == many, timeout=120)

    def test_connect_to_a_bad_address_says_so(self):
        """
        connect() with text that is neither host:port nor an endpoint
        description fails, instead of returning a Deferred that never fires.
        """
        results = []
        try:
            d = self.ctl.connect("no-such-endpoint-type:whatever")
        except ValueError:
            pass
        else:
            d.addBoth(results.append)
            self.settle(5)
            self.assertEqual(len(results), 1, "connect() neither raised nor fired")
            self.assertIsInstance(results[0], Failure)
        self.check_still_works()


# ---------------------------------------------------------------------------
# namespace()


class NamespaceTests(ControlTestCase):
    def test_namespace(self):
        a = self.mesh.node("a")
        control = self.control(a)
        names = control.namespace()
        helpers = {"status", "peers", "connect", "drop", "catalog", "catalog_of", "fetch",
                   "transfers", "cancel", "rescan", "doctor"}
        self.assertEqual(set(names), {"node", "control"} | helpers)
        self.assertIs(names["node"], a)
        self.assertIs(names["control"], control)
        for name in helpers:
            self.assertEqual(names[name], getattr(control, name), name)
            self.assertTrue(callable(names[name]))
        names["status"]()
        [summary] = self.out
        self.assertTrue(summary.startswith(f"node a ({a.node_id})"))
        self.assertIn("sharing 0 files (0 B); sync on", summary)
        self.assertIn("peers: 0 connected, 0 in the peer book", summary)
        self.assertIn("transfers: 0 in flight or waiting, 0 completed since start", summary)
        self.assertEqual(names["peers"](), [])
        self.assertEqual(names["catalog"](), [])
