"""
Versioned sync between whole nodes (L{p2ptwisted.folder} and its network
shells: index exchange, serving, fetching), joined by in-memory
connections on one fake clock, over real share directories.

Each test is a change a user makes, and what the other nodes must do
about it: the folder's version, not "every file ever seen".
"""

import json
import os
import random
import stat
import struct
import time

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import fetcher as fetcher_module
from p2ptwisted import wire
from p2ptwisted.downloads import partial_name
from p2ptwisted.hashing import PARTIAL_PREFIX, new_hasher
from p2ptwisted.sync import RETRY_DELAY
from p2ptwisted.wire_index import INDEX, INDEX_HELLO, decode_any_frame

from .helpers import capture_logs, link, make_node

MiB = 1024 * 1024

#: Bytes an in-memory transport buffers before it pauses its producer.
WINDOW = 256 * 1024

#: Upper bound on pump steps in one L{Mesh.run}.
MAX_STEPS = 20000


def content(seed, size):
    return random.Random(seed).randbytes(size)


def content_hash(data):
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def write_file(root, path, data, mode=0o644, mtime_ns=None):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    os.chmod(full, mode)
    if mtime_ns is not None:
        os.utime(full, ns=(mtime_ns, mtime_ns))
    return full


def read_file(root, path):
    with open(os.path.join(root, *path.split("/")), "rb") as f:
        return f.read()


def tree(root):
    """
    Everything under C{root} but the state directory: path -> ("dir",) or
    (content, permission bits).
    """
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(wire.RESERVED_PREFIX)]
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = ("dir",)
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, root)] = (f.read(),
                                                       stat.S_IMODE(os.lstat(full).st_mode))
    return found


def all_names(root):
    """
    Every name under C{root} outside the state directory, partial
    downloads included.
    """
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".p2pshare"]
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def partials(node):
    return {n for n in all_names(node.share_dir) if os.path.basename(n).startswith(PARTIAL_PREFIX)}


def trashed(node):
    """
    The contents of every version in the node's trash can.
    """
    found = []
    for dirpath, _, filenames in os.walk(os.path.join(node.state_dir, "trash")):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                found.append(f.read())
    return found


def conflicts(node):
    return sorted(n for n in all_names(node.share_dir) if ".sync-conflict-" in n)


def throttle(pump, limit=WINDOW):
    """
    Give both fake transports TCP-like back-pressure: a registered
    streaming producer is paused once more than C{limit} bytes wait to be
    delivered, and resumed when the pump takes them.
    """
    for io in (pump.clientIO, pump.serverIO):
        write, get = io.write, io.getOutBuffer
        state = {"buffered": 0, "paused": False}

        def throttled_write(data, io=io, write=write, state=state):
            write(data)
            if io.disconnecting:
                return
            state["buffered"] += len(data)
            if io.producer is not None and io.streamingProducer and state["buffered"] > limit:
                state["paused"] = True
                io.producer.pauseProducing()

        def throttled_get(io=io, get=get, state=state):
            data = get()
            state["buffered"] = 0
            if state["paused"] and io.producer is not None:
                state["paused"] = False
                io.producer.resumeProducing()
            return data

        io.write, io.getOutBuffer = throttled_write, throttled_get


def tap(io, edit):
    """
    See (and optionally change) every frame a fake transport carries:
    C{edit(frame)} returns the frame to deliver instead.
    """
    get = io.getOutBuffer
    held = bytearray()

    def tapped():
        data = get()
        if data:
            held.extend(data)
        out = []
        while len(held) >= 4:
            (length,) = struct.unpack("!I", held[:4])
            if len(held) < 4 + length:
                break
            frame = edit(bytes(held[4: 4 + length]))
            out.append(struct.pack("!I", len(frame)) + frame)
            del held[: 4 + length]
        return b"".join(out) or None

    io.getOutBuffer = tapped


def record(io, *types):
    """
    The frames of the given types a fake transport carries, decoded, as
    a list that grows.
    """
    seen = []

    def edit(frame):
        if frame[0] in types:
            seen.append(decode_any_frame(frame))
        return frame

    tap(io, edit)
    return seen


def sever(pump, why="connection reset by the test"):
    """
    The network between the two ends fails: bytes in flight are lost and
    both ends see the connection lost.
    """
    for io in (pump.clientIO, pump.serverIO):
        io.stream.clear()
        io.disconnectReason = ConnectionLost(why)
        io.disconnecting = True
        io.disconnected = True
    pump.clientIO.reportDisconnect()
    pump.serverIO.reportDisconnect()


class Mesh:
    """
    Nodes on one fake clock (set to the real time, so the files the test
    writes are not in the future), joined by throttled in-memory
    connections.
    """

    def __init__(self, testcase):
        self.test = testcase
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())
        self.pumps = []

    def node(self, name, **kwargs):
        return make_node(self.test, name, reactor=self.reactor, **kwargs)

    def link(self, dialer, listener):
        client, server, pump = link(dialer, listener)
        throttle(pump)
        self.pumps.append(pump)
        return client, server, pump

    def cut(self, pump):
        sever(pump)
        self.pumps.remove(pump)

    def step(self, each=None):
        self.reactor.advance(0)
        moved = False
        for pump in self.pumps:
            if pump.pump(advanceClock=False):
                moved = True
            if each is not None:
                each()
        return moved

    def run(self, until, timeout=60.0, tick=0.25, each=None):
        """
        Step until C{until()} holds, letting fake time pass only while no
        bytes move; fail after C{timeout} fake seconds.
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

    def settle(self, *nodes, timeout=60.0):
        """
        Run until every node is in step, nothing moves on any connection,
        and the nodes' trees (state aside) are the same.
        """
        def settled():
            return (all(n.folder.in_sync() for n in nodes)
                    and not any(p.clientIO.stream or p.serverIO.stream for p in self.pumps)
                    and all(tree(n.share_dir) == tree(nodes[0].share_dir) for n in nodes))

        self.run(settled, timeout=timeout)

    def change(self, node, path, data=None, mode=0o644, mtime_ns=None):
        """
        The user writes C{path} on C{node} (or deletes it, for C{None}),
        and the node rescans.  The mtime is in the past unless given, so
        the scanner need not wait for the file to settle.
        """
        full = os.path.join(node.share_dir, *path.split("/"))
        if data is None:
            os.unlink(full)
        else:
            if mtime_ns is None:
                mtime_ns = int((self.reactor.seconds() - 10) * 1e9) + random.randrange(10**9)
            write_file(node.share_dir, path, data, mode, mtime_ns)
        node.rescan()


class ChangesTests(SynchronousTestCase):
    """
    Two nodes, one connection: each change on A, and what B does.
    """

    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.client, self.server, self.pump = self.mesh.link(self.b, self.a)
        self.gets = record(self.pump.clientIO, wire.GET)

    def test_add_edit_delete(self):
        """
        A new file arrives; an edit replaces it with no conflict copy
        anywhere; a delete removes it on B too, keeping the last version in
        B's trash can.
        """
        mesh, a, b = self.mesh, self.a, self.b
        mesh.change(a, "docs/notes.txt", b"first")
        mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "docs/notes.txt"), b"first")
        mesh.change(a, "docs/notes.txt", b"second, longer")
        mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "docs/notes.txt"), b"second, longer")
        self.assertEqual(conflicts(a) + conflicts(b), [])
        self.assertEqual(trashed(b), [b"first"])
        mesh.change(a, "docs/notes.txt", None)
        mesh.settle(a, b)
        self.assertFalse(os.path.exists(os.path.join(b.share_dir, "docs", "notes.txt")))
        self.assertEqual(sorted(trashed(b)), [b"first", b"second, longer"])
        self.assertEqual(conflicts(a) + conflicts(b), [])

    def test_rename_sends_no_bytes(self):
        """
        A rename on A is a local rename on B: no GET crosses the network.
        """
        mesh, a, b = self.mesh, self.a, self.b
        data = content(1, 3 * MiB)
        mesh.change(a, "big.bin", data)
        mesh.settle(a, b)
        self.assertEqual({g.path for g in self.gets}, {"big.bin"})
        before = len(self.gets)
        os.rename(os.path.join(a.share_dir, "big.bin"), os.path.join(a.share_dir, "moved.bin"))
        a.rescan()
        mesh.settle(a, b)
        self.assertEqual(tree(b.share_dir), {"moved.bin": (data, 0o644)})
        self.assertEqual(len(self.gets), before)

    def test_renamed_directory_sends_no_bytes(self):
        """
        A directory of 300 files renamed, to a name sorting after the old
        one and then to one sorting before it: planned a batch at a time,
        every file is still moved locally on B -- deletions wait until the
        files they hold are placed -- and no GET crosses the network.
        """
        mesh, a, b = self.mesh, self.a, self.b
        past = int((time.time() - 60) * 1e9)
        for i in range(300):
            write_file(a.share_dir, f"album/track{i:03}.bin", b"track %d" % i, mtime_ns=past)
        a.rescan()
        mesh.settle(a, b)
        before = len(self.gets)
        self.assertEqual(before, 300)
        for old, new in (("album", "zz-album"), ("zz-album", "a-album")):
            os.rename(os.path.join(a.share_dir, old), os.path.join(a.share_dir, new))
            a.rescan()
            mesh.settle(a, b)
            self.assertEqual(len(tree(b.share_dir)), 301)
            self.assertEqual(read_file(b.share_dir, f"{new}/track123.bin"), b"track 123")
        self.assertEqual(len(self.gets), before)
        self.assertEqual(trashed(b), [])

    def test_metadata_and_empty_directories_travel(self):
        """
        Permission bits (a private file stays private, the executable bit
        travels), the mtime to the nanosecond, and empty directories.
        """
        mesh, a, b = self.mesh, self.a, self.b
        mtime = 1_700_000_000_123_456_789
        mesh.change(a, "run.sh", b"#!/bin/sh\n", mode=0o755, mtime_ns=mtime)
        mesh.change(a, "secret.txt", b"s", mode=0o600)
        os.makedirs(os.path.join(a.share_dir, "empty", "deeper"))
        a.rescan()
        mesh.settle(a, b)
        self.assertEqual(tree(b.share_dir)["run.sh"], (b"#!/bin/sh\n", 0o755))
        self.assertEqual(tree(b.share_dir)["secret.txt"], (b"s", 0o600))
        self.assertEqual(os.stat(os.path.join(b.share_dir, "run.sh")).st_mtime_ns, mtime)
        self.assertTrue(os.path.isdir(os.path.join(b.share_dir, "empty", "deeper")))
        os.chmod(os.path.join(a.share_dir, "run.sh"), 0o700)
        a.rescan()
        mesh.settle(a, b)
        self.assertEqual(tree(b.share_dir)["run.sh"], (b"#!/bin/sh\n", 0o700))
        self.assertEqual(len(self.gets), 2)  # a chmod moves no bytes
        os.rmdir(os.path.join(a.share_dir, "empty", "deeper"))
        a.rescan()
        mesh.settle(a, b)
        self.assertFalse(os.path.exists(os.path.join(b.share_dir, "empty", "deeper")))

    def test_both_directions_over_one_connection(self):
        """
        Both nodes fetch from each other at once over their one connection,
        whoever dialled.
        """
        mesh, a, b = self.mesh, self.a, self.b
        data_a, data_b = content(2, 2 * MiB), content(3, 2 * MiB)
        write_file(a.share_dir, "from-a.bin", data_a, mtime_ns=int((time.time() - 60) * 1e9))
        write_file(b.share_dir, "from-b.bin", data_b, mtime_ns=int((time.time() - 60) * 1e9))
        served = record(self.pump.serverIO, wire.GET)
        a.rescan()
        b.rescan()
        both = []

        def both_running():
            if self.client.downloads and self.server.downloads:
                both.append(True)

        mesh.run(lambda: tree(a.share_dir) == tree(b.share_dir) and a.folder.in_sync()
                 and b.folder.in_sync(), each=both_running)
        self.assertTrue(both, "the two downloads never ran at the same time")
        self.assertEqual(len(a.connections), 1)
        self.assertEqual({g.path for g in self.gets}, {"from-a.bin"})
        self.assertEqual({g.path for g in served}, {"from-b.bin"})

    def test_ignored_paths_stay_local(self):
        """
        Paths matched by A's .p2pignore are not announced; .p2pignore
        itself is not synced.
        """
        mesh, a, b = self.mesh, self.a, self.b
        mesh.change(a, ".p2pignore", b"*.tmp\nbuild/\n")
        mesh.change(a, "scratch.tmp", b"x")
        mesh.change(a, "build/out.o", b"y")
        mesh.change(a, "kept.txt", b"z")
        mesh.run(lambda: os.path.exists(os.path.join(b.share_dir, "kept.txt"))
                 and a.folder.in_sync() and b.folder.in_sync())
        self.assertEqual(set(tree(b.share_dir)), {"kept.txt"})

    def test_a_file_replaced_by_a_directory_converges(self):
        """
        A file replaced by a directory of the same name (and back) is
        applied like any other change.
        """
        mesh, a, b = self.mesh, self.a, self.b
        mesh.change(a, "thing", b"a file")
        mesh.settle(a, b)
        os.unlink(os.path.join(a.share_dir, "thing"))
        mesh.change(a, "thing/inside.txt", b"now a directory")
        mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "thing/inside.txt"), b"now a directory")
        self.assertIn(b"a file", trashed(b))


class MeshTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)

    def test_change_crosses_a_chain(self):
        """
        A-B-C in a chain: a change made on A reaches C through B, which
        carries A's version in its own index once it has applied it.
        """
        mesh = self.mesh
        a, b, c = mesh.node("a"), mesh.node("b"), mesh.node("c")
        mesh.link(b, a)
        mesh.link(c, b)
        mesh.change(a, "x.txt", b"one")
        mesh.settle(a, b, c)
        mesh.change(a, "x.txt", b"two")
        mesh.settle(a, b, c)
        self.assertEqual(read_file(c.share_dir, "x.txt"), b"two")
        self.assertEqual(conflicts(a) + conflicts(b) + conflicts(c), [])
        self.assertEqual(a.folder.store.get("x.txt").version, c.folder.store.get("x.txt").version)

    def test_offline_node_catches_up(self):
        """
        B is away while A edits, adds and deletes; reconnected, it catches
        up on all three.
        """
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        _, _, pump = mesh.link(b, a)
        mesh.change(a, "edit.txt", b"old")
        mesh.change(a, "gone.txt", b"bye")
        mesh.settle(a, b)
        mesh.cut(pump)
        mesh.change(a, "edit.txt", b"new")
        mesh.change(a, "added.txt", b"hello")
        mesh.change(a, "gone.txt", None)
        mesh.run(lambda: a.folder.in_sync())
        mesh.link(b, a)
        mesh.settle(a, b)
        self.assertEqual(tree(b.share_dir), {"edit.txt": (b"new", 0o644),
                                             "added.txt": (b"hello", 0o644)})

    def test_reconnect_without_changes_costs_a_few_frames(self):
        """
        After a reconnect with nothing changed, neither side sends an index
        entry: each says which sequence it holds of the other's index.
        """
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        for i in range(300):
            write_file(a.share_dir, f"d{i % 10}/f{i}.txt", b"%d" % i,
                       mtime_ns=int((time.time() - 60) * 1e9))
        a.rescan()
        _, _, pump = mesh.link(b, a)
        mesh.settle(a, b)
        mesh.cut(pump)
        _, _, pump = mesh.link(b, a)
        frames = record(pump.serverIO, INDEX, INDEX_HELLO)
        back = record(pump.clientIO, INDEX, INDEX_HELLO)
        mesh.settle(a, b)
        self.assertEqual(sorted(type(m).__name__ for m in frames + back),
                         ["IndexHello", "IndexHello"])
        self.assertEqual(len(tree(b.share_dir)), 310)

    def test_caught_up_past_forgotten_deletions(self):
        """
        A's newest entries are deletions it has since forgotten: B, which
        never saw them, still learns that it holds A's index up to date
        (the batch says how far it goes), logs so once, and the next
        reconnect sends no entries.
        """
        logs = capture_logs(self)
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        mesh.change(a, "kept.txt", b"kept")
        mesh.change(a, "gone.txt", b"short-lived")
        mesh.run(lambda: a.folder.in_sync())
        mesh.change(a, "gone.txt", None)
        mesh.run(lambda: a.folder.in_sync())
        later = int(mesh.reactor.seconds()) + 10
        self.assertEqual(a.folder.engine.expire_tombstones(later, lifetime=1), 1)
        self.assertEqual(a.folder.store.get("gone.txt"), None)
        _, _, pump = mesh.link(b, a)
        mesh.settle(a, b)
        self.assertIn(a.node_id, b.folder.exchange.up_to_date)
        up = [line for line in logs() if line.startswith("a (") and "up to date here" in line]
        self.assertEqual(len(up), 1, up)
        mesh.cut(pump)
        _, _, pump = mesh.link(b, a)
        entries = record(pump.serverIO, INDEX)
        mesh.settle(a, b)
        self.assertEqual([e for m in entries for e in m.entries], [])
        self.assertIn(a.node_id, b.folder.exchange.up_to_date)

    def test_concurrent_edits_leave_one_conflict_copy(self):
        """
        A and B edit the same file while apart: after they meet, both
        versions are on both nodes, as the file and one conflict copy,
        the same on both, and the conflict does not come back.
        """
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        _, _, pump = mesh.link(b, a)
        mesh.change(a, "report.txt", b"base")
        mesh.settle(a, b)
        mesh.cut(pump)
        mesh.change(a, "report.txt", b"A's edit")
        mesh.change(b, "report.txt", b"B's edit")
        mesh.run(lambda: a.folder.in_sync() and b.folder.in_sync())
        mesh.link(b, a)
        mesh.settle(a, b)
        [copy] = conflicts(a)
        self.assertEqual(conflicts(b), [copy])
        contents = {read_file(a.share_dir, "report.txt"), read_file(a.share_dir, copy)}
        self.assertEqual(contents, {b"A's edit", b"B's edit"})
        later = mesh.reactor.seconds() + 60
        mesh.run(lambda: mesh.reactor.seconds() >= later, timeout=90)
        self.assertEqual(conflicts(a), [copy])
        self.assertEqual(conflicts(b), [copy])

    def test_edit_beats_a_concurrent_delete(self):
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        _, _, pump = mesh.link(b, a)
        mesh.change(a, "keep.txt", b"v1")
        mesh.settle(a, b)
        mesh.cut(pump)
        mesh.change(a, "keep.txt", None)
        mesh.change(b, "keep.txt", b"v2 by b")
        mesh.run(lambda: a.folder.in_sync() and b.folder.in_sync())
        mesh.link(b, a)
        mesh.settle(a, b)
        self.assertEqual(read_file(a.share_dir, "keep.txt"), b"v2 by b")
        self.assertEqual(conflicts(a) + conflicts(b), [])

    def test_send_only_node_takes_nothing(self):
        """
        A send-only node (--no-sync) publishes its changes and serves its
        files, and applies none of its peers' changes.
        """
        mesh = self.mesh
        a, b = mesh.node("a", sync=False), mesh.node("b")
        mesh.link(b, a)
        mesh.change(a, "published.txt", b"from a")
        mesh.change(b, "kept-on-b.txt", b"from b")
        mesh.run(lambda: os.path.exists(os.path.join(b.share_dir, "published.txt"))
                 and a.folder.in_sync() and b.folder.in_sync())
        self.assertEqual(set(tree(a.share_dir)), {"published.txt"})

    def test_receive_only_node_keeps_its_changes_to_itself(self):
        """
        A receive-only node applies its peers' changes, publishes none of
        its own, and its status says what differs; a newer version from a
        peer replaces its local change (kept in the trash can).
        """
        from p2ptwisted.control import Control

        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b", mode="receive-only")
        mesh.link(b, a)
        mesh.change(a, "shared.txt", b"from a")
        mesh.settle(a, b)
        mesh.change(b, "shared.txt", b"b's own edit")
        mesh.change(b, "only-b.txt", b"b's own file")
        mesh.run(lambda: b.folder.in_sync() and b.folder.sync.local_changes)
        self.assertEqual(set(tree(a.share_dir)), {"shared.txt"})
        self.assertEqual(read_file(a.share_dir, "shared.txt"), b"from a")
        out = []
        Control(b, out=out.append).status()
        self.assertIn("receive-only: 2 local changes not sent", out[0])
        mesh.change(a, "shared.txt", b"a's newer edit")
        mesh.run(lambda: read_file(b.share_dir, "shared.txt") == b"a's newer edit"
                 and b.folder.in_sync())
        self.assertIn(b"b's own edit", trashed(b))

    def test_source_lost_mid_transfer_another_takes_over(self):
        """
        B fetches from A; A goes away mid-file; C, which has the same
        version, serves the rest (the partial file is kept and resumed).
        """
        stream_only(self)
        mesh = self.mesh
        a, b, c = mesh.node("a"), mesh.node("b"), mesh.node("c")
        data = content(4, 4 * MiB)
        mesh.change(a, "big.bin", data)
        _, _, ac = mesh.link(c, a)
        mesh.settle(a, c)
        ab_client, _, ab = mesh.link(b, a)
        mesh.run(lambda: any(d.offset >= MiB for d in ab_client.downloads.values()))
        _, _, bc = mesh.link(b, c)
        from_c = record(bc.clientIO, wire.GET)
        mesh.cut(ab)
        mesh.run(lambda: os.path.exists(os.path.join(b.share_dir, "big.bin")))
        self.assertEqual(read_file(b.share_dir, "big.bin"), data)
        [get] = from_c
        self.assertGreaterEqual(get.offset, MiB)
        self.assertEqual(partials(b), set())


class IndexLimitTests(SynchronousTestCase):
    def test_a_peer_index_past_the_limit_is_refused(self):
        """
        A peer whose index would pass MAX_PEER_ENTRIES (made up paths to
        fill our disk) is dropped with one line; what it sent before
        stays, within the limit.
        """
        from p2ptwisted import exchange

        self.patch(exchange, "MAX_PEER_ENTRIES", 250)
        logs = capture_logs(self)
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        past = int((time.time() - 60) * 1e9)
        for i in range(400):
            write_file(b.share_dir, f"many/f{i}.txt", b"%d" % i, mtime_ns=past)
        b.rescan()
        mesh.link(a, b)
        mesh.run(lambda: not a.connections)
        # At most one frame past the limit is stored, never the rest.
        self.assertLess(a.folder.store.remote_count(b.node_id), 401)
        self.assertGreaterEqual(a.folder.store.remote_count(b.node_id), 250)
        dropped = [line for line in logs()
                   if line.startswith("dropping") and "larger than 250" in line]
        self.assertEqual(len(dropped), 1, dropped)


def stream_only(case) -> None:
    """
    Make every node of C{case} speak protocol version 2 only: files then
    move as one stream (GET, DATA, END), the path these tests are about;
    block transfer has its own (tests.test_swarm).
    """
    case.patch(wire, "SUPPORTED_VERSIONS", (2,))


class FaultTests(SynchronousTestCase):
    def setUp(self):
        stream_only(self)
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.data = content(5, 2 * MiB + 12345)
        self.mesh.change(self.b, "big.bin", self.data)
        self.dest = os.path.join(self.a.share_dir, "big.bin")

    def never_wrong(self):
        if os.path.exists(self.dest):
            with open(self.dest, "rb") as f:
                self.assertTrue(f.read() == self.data, "big.bin appeared with wrong content")

    def test_flipped_bit_is_caught_and_fetched_again(self):
        """
        One bit flipped in a DATA frame: the file never appears with the
        wrong content, the failure is logged, the partial file is removed,
        and after the retry delay the file is fetched again, intact.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, server, pump = mesh.link(a, b)
        flipped = []

        def flip(frame):
            if frame[0] == wire.DATA and not flipped:
                frame = bytearray(frame)
                frame[5 + 1000] ^= 0x08
                flipped.append(True)
                return bytes(frame)
            return frame

        tap(pump.serverIO, flip)
        gets = record(pump.clientIO, wire.GET)

        def failures():
            return [line for line in self.logs() if "sent a bad copy of big.bin" in line]

        mesh.run(failures, each=self.never_wrong)
        failed_at = mesh.reactor.seconds()
        [line] = failures()
        self.assertIn("content hash", line)
        self.assertIn("bad data discarded", line)
        self.assertFalse(os.path.exists(self.dest))
        self.assertEqual(partials(a), set())
        mesh.run(lambda: os.path.exists(self.dest) and a.folder.in_sync(), each=self.never_wrong)
        self.assertGreaterEqual(mesh.reactor.seconds() - failed_at, RETRY_DELAY)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertEqual([g.offset for g in gets], [0, 0])
        self.assertEqual(all_names(a.share_dir), {"big.bin"})

    def test_interrupted_download_resumes(self):
        """
        The connection drops mid-transfer: the partial file keeps what
        arrived; over a new connection the GET asks for the rest only, and
        the file ends up intact.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, server, pump = mesh.link(a, b)
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()),
                 each=self.never_wrong)
        mesh.cut(pump)
        self.assertEqual(a.connections, {})
        [part] = partials(a)
        self.assertEqual(part, partial_name("big.bin", content_hash(self.data)))
        kept = os.path.getsize(os.path.join(a.share_dir, part))
        self.assertGreater(kept, 0)
        self.assertLess(kept, len(self.data))
        self.assertEqual(read_file(a.share_dir, part), self.data[:kept])
        self.assertTrue(any("interrupted" in line and f"{kept} bytes kept" in line
                            for line in self.logs()))
        client, server, pump = mesh.link(a, b)
        gets = record(pump.clientIO, wire.GET)
        mesh.run(lambda: os.path.exists(self.dest), each=self.never_wrong)
        self.assertEqual([(g.path, g.offset) for g in gets], [("big.bin", kept)])
        self.assertTrue(any(line.startswith("resuming big.bin") and f"at byte {kept} of" in line
                            for line in self.logs()))
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertEqual(all_names(a.share_dir), {"big.bin"})

    def test_stalled_download_is_given_up_and_resumed(self):
        """
        A peer that stops sending mid-file: after the stall timeout the
        download is cancelled (partial kept), and a later try resumes it.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, server, pump = mesh.link(a, b)
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()))
        # From now on B's DATA and END are lost on the way (the link keeps
        # PONGs flowing instead, so the connection stays up).
        tap(pump.serverIO, lambda f: wire.encode_frame(wire.Pong(1))
            if f[0] in (wire.DATA, wire.END) else f)
        mesh.run(lambda: any("no data for" in line for line in self.logs()),
                 timeout=a.limits.stall_timeout + 2 * fetcher_module.STALL_CHECK)
        [part] = partials(a)
        kept = os.path.getsize(os.path.join(a.share_dir, part))
        self.assertGreater(kept, 0)
        mesh.cut(pump)
        client, server, pump = mesh.link(a, b)
        gets = record(pump.clientIO, wire.GET)
        mesh.run(lambda: os.path.exists(self.dest), each=self.never_wrong)
        self.assertEqual([g.offset for g in gets], [kept])
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)


class ServingTests(SynchronousTestCase):
    """
    GET from a raw peer: served from the index, refused otherwise.
    """

    def setUp(self):
        self.mesh = Mesh(self)
        self.a = self.mesh.node("a")
        self.data = b"served bytes"
        self.mesh.change(self.a, "dir/file.txt", self.data)
        self.mesh.run(lambda: self.a.folder.in_sync())
        self.b = self.mesh.node("b")
        self.client, self.server, self.pump = self.mesh.link(self.b, self.a)
        self.mesh.settle(self.a, self.b)
        self.answers = record(self.pump.serverIO, wire.DATA, wire.END, wire.ERROR)

    def ask(self, path, content, offset=0, transfer=900):
        self.client.send(wire.Get(transfer=transfer, path=path, hash=content, offset=offset))
        self.mesh.run(lambda: any(getattr(m, "transfer", None) == transfer
                                  and not isinstance(m, wire.Data) for m in self.answers))
        return [m for m in self.answers if getattr(m, "transfer", None) == transfer]

    def test_by_path_and_hash(self):
        *data, end = self.ask("dir/file.txt", content_hash(self.data), offset=3)
        self.assertEqual(b"".join(bytes(d.payload) for d in data), self.data[3:])
        self.assertEqual((end.size, end.hash), (len(self.data), content_hash(self.data)))

    def test_same_content_elsewhere_is_served(self):
        """
        A version is its bytes: asked at a path that now holds something
        else (or nothing), the same content at another path is served.
        """
        *data, end = self.ask("renamed/elsewhere.txt", content_hash(self.data))
        self.assertEqual(b"".join(bytes(d.payload) for d in data), self.data)

    def test_refusals(self):
        [error] = self.ask("dir/file.txt", "ab" * 32, transfer=901)
        self.assertEqual(error.code, "not_found")
        [error] = self.ask("dir/file.txt", content_hash(self.data), offset=999, transfer=902)
        self.assertEqual(error.code, "bad_offset")
        os.utime(os.path.join(self.a.share_dir, "dir", "file.txt"), ns=(1, 1))
        [error] = self.ask("dir/file.txt", content_hash(self.data), transfer=903)
        self.assertEqual(error.code, "changed")
        self.assertEqual(len(self.a.connections), 1)


class IndexFrameTests(SynchronousTestCase):
    """
    What a peer's INDEX can and cannot make a node do.
    """

    def test_hostile_entries_are_dropped_and_counted(self):
        """
        Entries naming paths outside the share or our own state, with bad
        vectors, are dropped and logged in one line; good entries in the
        same frame are used; the connection stays.
        """
        logs = capture_logs(self)
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        client, server, pump = mesh.link(b, a)
        mesh.settle(a, b)
        data = b"good"
        good = {"path": "ok.txt", "kind": "file", "size": 4, "mtime": 10**18, "perms": 0o644,
                "hash": content_hash(data), "deleted": False,
                "version": [["0123456789abcdef", 5]], "by": "0123456789abcdef", "seq": 1}
        bad = [dict(good, path="../escape.txt"), dict(good, path="/etc/passwd"),
               dict(good, path=".p2pshare/identity"), dict(good, hash="zz"),
               dict(good, version=[["0123456789abcdef", 2**60]], path="future.txt"),
               dict(good, kind="dir", path="d")]
        frame = bytes((INDEX,)) + json.dumps({"entries": bad + [good]}).encode()
        client.send_frame(frame)
        mesh.run(lambda: a.folder.store.remote_for("ok.txt"))
        self.assertEqual(list(a.folder.store.remote_for("ok.txt")), [b.node_id])
        for path in ("../escape.txt", "future.txt", "d"):
            self.assertEqual(a.folder.store.remote_for(path), {})
        self.assertEqual(len(a.connections), 1)
        warned = [line for line in logs() if "invalid index entries" in line
                  or "ignored" in line and "index entries" in line]
        self.assertTrue(warned, logs())
