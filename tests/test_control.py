"""
Tests for L{p2ptwisted.control}: the operator's API behind the manhole,
driven on a fake clock with nodes joined in memory.

Bytes move step by step with TCP-like back-pressure (L{throttle}), so a
fetch can be looked at while it runs: its state and byte count in
C{transfers()} and C{status()}, and the log line it ends with.
"""

import os
import re

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import node as node_module
from p2ptwisted import wire
from p2ptwisted.control import Control, PeerInfo
from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.downloads import TransferFailed, partial_name
from p2ptwisted.hashing import PARTIAL_PREFIX
from p2ptwisted.identity import format_id
from p2ptwisted.limits import PING_INTERVAL
from p2ptwisted.uploads import CHUNK_SIZE
from p2ptwisted.wire_index import decode_any_frame

from .helpers import capture_logs, link, make_node
from .test_exchange import content, content_hash, stream_only, tap, throttle

MiB = 1024 * 1024

#: Bytes an in-memory transport buffers before it pauses its producer.
WINDOW = 256 * 1024

#: Upper bound on pump steps in one L{Mesh.run}, so a livelock fails
#: instead of hanging.
MAX_STEPS = 20000

#: Safety bound on manual stepping loops.
MAX_LOOPS = 5000

#: The line a fetch of a file of 1 MiB or more ends with (fetcher.py).
FETCHED = re.compile(r"^fetched (?P<path>\S+) \((?P<size>\d+) bytes\) from (?P<peer>.+)"
                     r" at (?P<rate>[\d.]+) MiB/s$")


# ---------------------------------------------------------------------------
# Helpers


def write_file(root, path, data, mtime_ns=None):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(full, ns=(mtime_ns, mtime_ns))
    return full


def read_file(root, path):
    with open(os.path.join(root, *path.split("/")), "rb") as f:
        return f.read()


def names_in(root):
    """
    Every file under C{root} but the node's state directory, as relative
    paths.
    """
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != "state" and not d.startswith(".p2pshare")]
        for name in filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return found


def partials(node):
    return {n for n in names_in(node.share_dir)
            if n.rsplit("/", 1)[-1].startswith(PARTIAL_PREFIX)}


def record_frames(io):
    """
    Every frame but DATA a fake transport carries, decoded, as a list that
    grows.
    """
    frames = []

    def edit(frame):
        if frame[0] != wire.DATA:
            frames.append(decode_any_frame(frame))
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


class Mesh:
    """
    Nodes on one fake clock, joined by throttled in-memory connections.
    """

    def __init__(self, testcase):
        self.test = testcase
        self.reactor = MemoryReactorClock()
        self.pumps = []

    def node(self, name, **kwargs):
        return make_node(self.test, name, reactor=self.reactor, **kwargs)

    def link(self, dialer, listener, limit=WINDOW):
        client, server, pump = link(dialer, listener)
        throttle(pump, limit)
        self.pumps.append(pump)
        return client, server, pump

    def step(self, each=None):
        """
        Run what is due now, then move bytes once on every connection.
        Returns whether any bytes moved.
        """
        self.reactor.advance(0)
        if each is not None:
            each()
        moved = False
        for pump in self.pumps:
            if pump.pump(advanceClock=False):
                moved = True
            if each is not None:
                each()
        return moved

    def run(self, until, timeout=60.0, tick=0.1, each=None):
        """
        Step until C{until()} holds, letting fake time pass (C{tick} at a
        time) only while no bytes are moving; fail after C{timeout} fake
        seconds.
        """
        deadline = self.reactor.seconds() + timeout
        for _ in range(MAX_STEPS):
            moved = self.step(each)
            if until():
                return
            if not moved:
                if self.reactor.seconds() >= deadline:
                    self.test.fail(f"condition not met within {timeout} fake seconds")
                self.reactor.advance(tick)
        self.test.fail(f"condition not met within {MAX_STEPS} steps")

    def run_for(self, seconds, each=None):
        end = self.reactor.seconds() + seconds
        self.run(lambda: self.reactor.seconds() >= end, timeout=seconds + 1, each=each)


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

    def knows_index(self, a, b):
        """
        A condition: C{a} has logged that it holds C{b}'s index up to what
        B announced (the "shares N files" line).
        """
        head = f"{b.display_name} ({b.node_id[:12]}) at "

        def known():
            return any(line.startswith(head) and line.endswith("its index is up to date here")
                       for line in self.logs())

        return known

    def remote_paths(self, holder, peer):
        """
        The live paths C{holder} knows C{peer}'s index to hold.
        """
        store = holder.folder.store
        return {path for path in store.remote_paths(peer.node_id)
                if store.remote_for(path)[peer.node_id].live}

    def fired(self, d):
        """
        What C{d} fired with so far, as a list (empty if not yet).
        """
        results = []
        d.addBoth(results.append)
        return results


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
        side's out is the other's in, and both grow when frames move (an
        index update, then PINGs on a quiet connection).
        """
        a, b = self.mesh.node("a", sync=False), self.mesh.node("b")
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
        self.assertGreater(first_in, 0)  # HELLO, INDEX_HELLO, ...
        self.assertGreater(first_out, 0)

        # B's index gains a file: only A's bytes_in grows (A, send-only,
        # does not fetch it).
        write_file(b.share_dir, "news.txt", b"fresh\n")
        self.successResultOf(b.rescan())
        self.settle()
        self.assertIn("news.txt", self.remote_paths(a, b))
        second_in, second_out = counters()
        self.assertGreater(second_in, first_in)
        self.assertEqual(second_out, first_out)

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
        results = self.fired(control.connect("10.0.0.5:12345"))
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
        results = self.fired(self.control(a).connect("10.0.0.6:12346"))
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
        self.assertTrue(any("reports error dropped" in text for text in self.logs()), self.logs())

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
        """
        catalog() lists the live files and directories of the node's index,
        sorted by path, with each file's size and content hash.
        """
        a = self.mesh.node("a")
        control = self.control(a)
        self.assertEqual(control.catalog(), [])
        files = {"b.txt": b"bee\n", "a/z.txt": b"zed\n", "c.bin": content(1, 5000),
                 "a/b/deep.txt": b"deep\n"}
        for path, data in files.items():
            write_file(a.share_dir, path, data)
        self.assertEqual(self.successResultOf(control.rescan()), len(files) + 2)
        catalog = control.catalog()
        self.assertEqual([e.path for e in catalog], sorted(list(files) + ["a", "a/b"]))
        for entry in catalog:
            self.assertIsInstance(entry, Entry)
            self.assertTrue(entry.live)
            if entry.path in ("a", "a/b"):
                self.assertEqual(entry.kind, DIR)
                continue
            self.assertEqual(entry.kind, FILE)
            self.assertEqual(entry.size, len(files[entry.path]))
            self.assertEqual(entry.hash, content_hash(files[entry.path]))

    def test_rescan_fires_with_the_number_of_changes(self):
        """
        rescan() fires with how many changes it recorded: a new file, none
        when nothing changed, a changed file, a deleted one (which leaves
        the catalog).
        """
        a = self.mesh.node("a")
        control = self.control(a)
        data = b"new file\n"
        write_file(a.share_dir, "new.txt", data)
        self.assertEqual(self.successResultOf(control.rescan()), 1)
        [entry] = control.catalog()
        self.assertEqual((entry.path, entry.size, entry.hash),
                         ("new.txt", len(data), content_hash(data)))
        # Nothing new: nothing reported.
        self.assertEqual(self.successResultOf(control.rescan()), 0)
        # A changed file is recorded with its new content.
        changed = b"changed, and longer\n"
        write_file(a.share_dir, "new.txt", changed, mtime_ns=1_700_000_000 * 10**9)
        self.assertEqual(self.successResultOf(control.rescan()), 1)
        [entry] = control.catalog()
        self.assertEqual((entry.path, entry.size, entry.hash),
                         ("new.txt", len(changed), content_hash(changed)))
        os.remove(os.path.join(a.share_dir, "new.txt"))
        self.assertEqual(self.successResultOf(control.rescan()), 1)
        self.assertEqual(control.catalog(), [])

    def test_catalog_of_a_peer(self):
        """
        catalog_of(peer) lists the peer's live entries as its index told
        us, by name or id prefix, kept current as it changes.
        """
        a, b = self.mesh.node("a", sync=False), self.mesh.node("b")
        write_file(b.share_dir, "z.txt", b"z\n")
        write_file(b.share_dir, "dir/m.bin", content(2, 200_000))
        write_file(b.share_dir, "a.txt", b"a\n")
        self.successResultOf(b.rescan())
        self.mesh.link(a, b)
        self.mesh.run(self.knows_index(a, b))
        entries = self.control(a).catalog_of("b")
        self.assertEqual([e.path for e in entries], ["a.txt", "dir", "dir/m.bin", "z.txt"])
        self.assertEqual(entries, self.control(b).catalog())
        # By id prefix too, and kept current by the index updates.
        write_file(b.share_dir, "later.txt", b"later\n")
        os.remove(os.path.join(b.share_dir, "z.txt"))
        self.successResultOf(b.rescan())
        self.settle()
        entries = self.control(a).catalog_of(b.node_id[:6])
        self.assertEqual([e.path for e in entries], ["a.txt", "dir", "dir/m.bin", "later.txt"])
        self.assertRaises(LookupError, self.control(a).catalog_of, "nobody")


# ---------------------------------------------------------------------------
# fetch(), transfers(), status()


class FetchTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        # Not at 0.0: a real clock is never 0, and rates divide by time.
        self.reactor.advance(1000)
        self.a = self.mesh.node("a", sync=False)
        self.b = self.mesh.node("b")

    def offer(self, path, data, limit=1):
        """
        Put C{path} in B's share, link A to B with a send window of
        C{limit} bytes (1: one DATA frame per step), and wait until A holds
        B's index.
        """
        write_file(self.b.share_dir, path, data)
        self.successResultOf(self.b.rescan())
        client, server, pump = self.mesh.link(self.a, self.b, limit=limit)
        self.sent = record_frames(pump.clientIO)
        self.mesh.run(self.knows_index(self.a, self.b))
        return client, server, pump

    def gets(self):
        return [(m.path, m.offset) for m in self.sent if isinstance(m, wire.Get)]

    def test_fetch_with_live_progress(self):
        """
        A large file fetched step by step into the share: while it runs,
        transfers() and status() show it with growing bytes; at the end the
        file is in the share, in the catalog, announced to B (which makes
        no conflict copy of its own file), counted by status(), and a
        "fetched" line gives its size, peer and rate.
        """
        stream_only(self)  # (progress byte by byte; tests.test_swarm for blocks)
        data = content(3, 8 * MiB + 12345)
        size = len(data)
        self.offer("big.bin", data)
        control = self.control(self.a)
        self.assertEqual(control.transfers(), [])

        d = control.fetch("big.bin", peer="b")
        results = self.fired(d)
        [want] = control.transfers()
        self.assertEqual((want.path, want.entry.size, want.entry.hash),
                         ("big.bin", size, content_hash(data)))
        self.assertIsNone(want.finished_at)

        samples = []
        status_seen = []

        def look():
            if want.finished_at is not None:
                return
            got = want.download.offset if want.download is not None else 0
            samples.append((want.state, got, repr(want)))
            if not status_seen and got > size // 2:
                control.status()
                status_seen.append(self.out[-1])

        self.step_until(lambda: results, tick=0.05, each=look)

        # While running.
        running = [s for s in samples if s[0] == "running"]
        self.assertTrue(running)
        self.assertTrue({s[0] for s in samples} <= {"opening", "running"}, samples[:3])
        done = [s[1] for s in running]
        self.assertEqual(done, sorted(done))
        self.assertGreater(len(set(done)), size // CHUNK_SIZE // 2, "not step by step")
        for _, got, text in running:
            self.assertEqual(text, f"<fetch 'big.bin' running, {got} of {size} bytes,"
                                   f" from {self.b.node_id[:12]}>")
        [mid] = status_seen
        self.assertIn("transfers: 1 in flight or waiting, 0 completed since start", mid)
        self.assertRegex(mid, r"\n    big\.bin  running  \d")

        # At the end.
        landed = os.path.join(self.a.share_dir, "big.bin")
        self.assertEqual(results, [landed])
        self.assertEqual(read_file(self.a.share_dir, "big.bin"), data)
        self.assertEqual(partials(self.a), set())
        self.assertEqual([(e.path, e.hash) for e in control.catalog()],
                         [("big.bin", content_hash(data))])
        self.assertEqual(control.transfers(), [want])
        self.assertIsNotNone(want.finished_at)
        self.assertNotIn("running", repr(want), "a finished fetch is shown as running")
        [line] = [m for m in map(FETCHED.match, self.logs()) if m]
        self.assertEqual((line.group("path"), int(line.group("size"))), ("big.bin", size))
        self.assertTrue(line.group("peer").startswith(f"b ({self.b.node_id[:12]}) at "))
        self.assertGreater(float(line.group("rate")), 0)
        self.settle()
        # Announced to B, which holds the same bytes: no conflict there.
        self.assertIn("big.bin", self.remote_paths(self.b, self.a))
        self.assertEqual(names_in(self.b.share_dir), {"big.bin"})
        self.assertEqual(read_file(self.b.share_dir, "big.bin"), data)
        del self.out[:]
        control.status()
        [summary] = self.out
        self.assertIn(f"node a ({self.a.node_id})", summary)
        # In memory the nodes run plaintext (tests.helpers.make_node).
        self.assertIn(f"id {format_id(self.a.node_id)}; plaintext (--no-tls)", summary)
        self.assertIn("sharing 1 files (8.0 MiB); mode send-only, in step", summary)
        self.assertIn("peers: 1 connected", summary)
        self.assertIn("transfers: 0 in flight or waiting, 1 completed since start", summary)

    def test_fetch_into_another_directory(self):
        """
        fetch(path, dest=dir) puts the file in that directory (made if
        missing), outside the share: it is not catalogued and not
        announced, and the share stays empty.
        """
        data = content(4, 700_000)
        self.offer("docs/report.bin", data, limit=64 * 1024)
        control = self.control(self.a)
        dest = os.path.join(os.path.abspath(self.mktemp()), "fetched")
        results = self.fired(control.fetch("docs/report.bin", dest=dest))
        self.mesh.run(lambda: results)
        target = os.path.join(dest, "report.bin")
        self.assertEqual(results, [target])
        self.assertEqual(sorted(os.listdir(dest)), ["report.bin"])
        with open(target, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(names_in(self.a.share_dir), set())
        self.assertEqual(control.catalog(), [])
        self.assertEqual(self.successResultOf(control.rescan()), 0)
        self.assertEqual(control.catalog(), [])
        self.settle(2)
        self.assertEqual(self.remote_paths(self.b, self.a), set())
        [want] = control.transfers()
        self.assertEqual(want.path, "docs/report.bin")
        self.assertIsNotNone(want.finished_at)
        # Under 1 MiB: no "fetched" line of its own.
        self.assertEqual([text for text in self.logs() if FETCHED.match(text)], [])

    def test_fetch_never_replaces_a_file(self):
        """
        fetch(path) into the share when a file is already there fails
        (TransferFailed "exists") and leaves that file as it was; so does
        a fetch into a directory outside the share that holds the name.
        """
        data = content(8, 300_000)
        self.offer("x.bin", data, limit=64 * 1024)
        write_file(self.a.share_dir, "x.bin", b"mine\n")
        control = self.control(self.a)
        results = self.fired(control.fetch("x.bin"))
        self.mesh.run(lambda: results)
        [failure] = results
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(TransferFailed))
        self.assertEqual(failure.value.code, "exists")
        self.assertEqual(read_file(self.a.share_dir, "x.bin"), b"mine\n")
        self.assertEqual(partials(self.a), set())
        [want] = control.transfers()
        self.assertIsNotNone(want.finished_at)
        self.assertEqual(want.state, "failed: exists")

        dest = os.path.abspath(self.mktemp())
        write_file(dest, "x.bin", b"kept\n")
        results = self.fired(control.fetch("x.bin", dest=dest))
        self.mesh.run(lambda: results)
        self.assertTrue(results[0].check(TransferFailed))
        self.assertEqual(os.listdir(dest), ["x.bin"])
        self.assertEqual(read_file(dest, "x.bin"), b"kept\n")

    def test_fetch_unknown_path(self):
        """
        A path no connected peer has, or a peer that is not connected: a
        LookupError at once, and nothing is asked of anyone.
        """
        self.offer("known.txt", b"known\n")
        control = self.control(self.a)
        self.assertRaises(LookupError, control.fetch, "unknown.txt")
        self.assertRaises(LookupError, control.fetch, "known.txt", peer="nobody")
        self.assertEqual(control.transfers(), [])
        self.settle()
        self.assertEqual(self.gets(), [])

    def test_deleted_file_cannot_be_fetched(self):
        """
        A file B has deleted is no longer offered: fetch() says no
        connected peer has it.
        """
        self.offer("gone.txt", b"soon gone\n")
        os.remove(os.path.join(self.b.share_dir, "gone.txt"))
        self.successResultOf(self.b.rescan())
        self.settle()
        self.assertRaises(LookupError, self.control(self.a).fetch, "gone.txt")

    def test_interrupted_fetch_resumes(self):
        """
        A fetch cut off by drop() fails, keeping its partial file; asked
        again once B is back, it resumes from where it stopped (a GET at
        that offset), and the partial file is gone at the end.
        """
        stream_only(self)  # (tests.test_swarm resumes block downloads)
        data = content(6, 4 * MiB)
        self.offer("movie.bin", data)
        control = self.control(self.a)
        results = self.fired(control.fetch("movie.bin"))
        [want] = control.transfers()
        self.mesh.run(lambda: want.download is not None and want.download.offset >= MiB)
        self.assertEqual(self.gets(), [("movie.bin", 0)])

        control.drop("b")
        self.settle()
        self.assertEqual(self.a.connections, {})
        [failure] = results
        self.assertTrue(failure.check(TransferFailed))
        part = partial_name("movie.bin", content_hash(data), "operator")
        self.assertEqual(partials(self.a), {part})
        kept = os.path.getsize(os.path.join(self.a.share_dir, part))
        self.assertTrue(MiB <= kept < len(data), kept)
        self.assertEqual(read_file(self.a.share_dir, part), data[:kept])
        self.assertNotIn("movie.bin", names_in(self.a.share_dir))

        self.mesh.pumps.clear()
        client, server, pump = self.mesh.link(self.a, self.b)
        self.sent = record_frames(pump.clientIO)
        self.mesh.run(lambda: self.b.node_id in self.a.connections)
        results = self.fired(control.fetch("movie.bin"))
        self.mesh.run(lambda: results)
        self.assertEqual(results, [os.path.join(self.a.share_dir, "movie.bin")])
        self.assertEqual(self.gets(), [("movie.bin", kept)])
        self.assertEqual(read_file(self.a.share_dir, "movie.bin"), data)
        self.assertEqual(partials(self.a), set())


# ---------------------------------------------------------------------------
# Bad arguments


class RobustnessTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        self.a = self.mesh.node("a", sync=False)
        self.b = self.mesh.node("b")
        self.data = content(7, 300_000)
        write_file(self.b.share_dir, "x.bin", self.data)
        self.successResultOf(self.b.rescan())
        self.mesh.link(self.a, self.b)
        self.mesh.run(self.knows_index(self.a, self.b))
        self.ctl = self.control(self.a)

    def check_still_works(self):
        self.assertEqual(set(self.a.connections), {self.b.node_id})
        results = self.fired(self.ctl.fetch("x.bin", peer="b"))
        self.mesh.run(lambda: results)
        self.assertEqual(results, [os.path.join(self.a.share_dir, "x.bin")])
        self.assertEqual(read_file(self.a.share_dir, "x.bin"), self.data)

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
        self.assertRaises(TypeError, c.connect, None)
        self.assertEqual(len(self.a.book), book)
        self.assertEqual(c.transfers(), [])
        self.settle()
        self.assertEqual(names_in(self.a.share_dir), set())
        self.check_still_works()

    def test_connect_to_a_bad_address_says_so(self):
        """
        connect() with text that is neither host:port nor an endpoint
        description fails, instead of returning a Deferred that never fires.
        """
        try:
            d = self.ctl.connect("no-such-endpoint-type:whatever")
        except ValueError:
            pass
        else:
            results = self.fired(d)
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
                   "transfers", "cancel", "watch", "rescan", "doctor"}
        self.assertEqual(set(names), {"node", "control"} | helpers)
        self.assertIs(names["node"], a)
        self.assertIs(names["control"], control)
        for name in helpers:
            self.assertEqual(names[name], getattr(control, name), name)
            self.assertTrue(callable(names[name]))
        names["status"]()
        [summary] = self.out
        self.assertTrue(summary.startswith(f"node a ({a.node_id})"))
        self.assertIn("sharing 0 files (0 B); mode send-receive, in step", summary)
        self.assertIn("peers: 0 connected, 0 in the peer book", summary)
        self.assertIn("transfers: 0 in flight or waiting, 0 completed since start", summary)
        self.assertEqual(names["peers"](), [])
        self.assertEqual(names["catalog"](), [])
        names["doctor"]()
        self.assertIn("no peers yet", self.out[-1])
