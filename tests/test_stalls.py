"""
A stalled download recovers within 30 seconds (issue 11, point 9): a
connection whose downloads went quiet is asked (PING) whether it still
works; if it does not answer it is dropped, and its downloads go to
another source or, once the node has dialled again, to a new connection.
A connection that answers but does not send the file has the download
moved to another source at the stall timeout.

In memory, on one fake clock (L{tests.test_exchange.Mesh}), with the
network between two nodes made to lose every byte without closing: the
dead path that only a probe notices.
"""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import stalls as stalls_module
from p2ptwisted import wire

from .helpers import capture_logs, link
from .test_exchange import (
    MiB, Mesh, content, partials, read_file, record, stream_only, tap, throttle)

#: What the issue asks: recovery within this many seconds of the stall.
RECOVERY = 30.0


class DeadPath:
    """
    Stands in for a pump in the mesh once the network between its two
    ends has died: every byte is lost, both ways, and neither end is told
    -- but an end that closes its side hears of it, as a kernel tells a
    socket's owner it is closed.
    """

    def __init__(self, pump):
        self.pump_ = pump
        self.clientIO = pump.clientIO
        self.serverIO = pump.serverIO

    def pump(self, advanceClock=False):
        moved = False
        for io in (self.clientIO, self.serverIO):
            io.stream.clear()
            if io.disconnecting and not io.disconnected:
                io.disconnected = True
                io.reportDisconnect()
                moved = True
        return moved


def kill_path(mesh, pump) -> None:
    mesh.pumps[mesh.pumps.index(pump)] = DeadPath(pump)


def answer_dials(mesh, nodes, answered: list) -> None:
    """
    Complete each new in-memory dial to one of C{nodes} (an C{each} hook
    for L{Mesh.run}), as the network would.
    """
    by_port = {node.listen_ports[0]: node for node in nodes}
    for index, (host, port, factory, *_rest) in enumerate(mesh.reactor.tcpClients):
        if index in answered or port not in by_port:
            continue
        answered.append(index)
        client = factory.buildProtocol(IPv4Address("TCP", host, port))
        server = by_port[port].factory.buildProtocol(None)
        source = 40000 + index
        ct = iosim.FakeTransport(client, isServer=False,
                                 hostAddress=IPv4Address("TCP", "127.0.0.1", source),
                                 peerAddress=IPv4Address("TCP", host, port))
        st = iosim.FakeTransport(server, isServer=True,
                                 hostAddress=IPv4Address("TCP", host, port),
                                 peerAddress=IPv4Address("TCP", "127.0.0.1", source))
        pump = iosim.connect(server, st, client, ct, greet=False)
        throttle(pump)
        mesh.pumps.append(pump)


class StallTests(SynchronousTestCase):
    def setUp(self):
        stream_only(self)
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)
        self.a, self.b = self.mesh.node("a"), self.mesh.node("b")
        self.data = content(6, 4 * MiB)
        self.mesh.change(self.b, "big.bin", self.data)
        self.dest = os.path.join(self.a.share_dir, "big.bin")

    def landed(self):
        return os.path.exists(self.dest)

    def stall_mid_file(self, pump, client):
        """
        Run until A has part of the file from B, then kill the path.

        @return: the time the last byte arrived.
        """
        mesh = self.mesh
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()))
        kill_path(mesh, pump)
        return mesh.reactor.seconds()

    def test_dead_connection_dropped_and_dialled_again(self):
        """
        The only source's path dies mid-file: within 30 seconds A has
        probed the connection, dropped it (one line saying why), the two
        nodes have connected again, and A has resumed the file from where
        it stopped over the new connection -- not after the 90-second idle
        timeout.
        """
        a, b, mesh = self.a, self.b, self.mesh
        # Dialled as a --peer is, so A can dial B again.
        entry = a.add_bootstrap(f"127.0.0.1:{b.listen_ports[0]}")
        client, _, pump = link(a, b, entry)
        throttle(pump)
        mesh.pumps.append(pump)
        stalled_at = self.stall_mid_file(pump, client)
        kept = max(d.offset for d in client.downloads.values())
        answered = list(range(len(mesh.reactor.tcpClients)))
        mesh.run(self.landed, timeout=RECOVERY,
                 each=lambda: answer_dials(mesh, (a, b), answered))
        self.assertLess(mesh.reactor.seconds() - stalled_at, RECOVERY)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertEqual(partials(a), set())
        dropped = [line for line in self.logs() if line.startswith("dropping b ")]
        self.assertEqual(len(dropped), 1, self.logs())
        self.assertIn(f"no answer to a PING within {stalls_module.PROBE_TIMEOUT:g} seconds"
                      " while its downloads had stalled", dropped[0])
        self.assertIn(a.node_id, b.connections)  # B replaced its stale connection
        resumed = [line for line in self.logs() if line.startswith("resuming big.bin")]
        self.assertEqual(len(resumed), 1)
        self.assertIn(f"at byte {kept} of", resumed[0])

    def test_dead_connection_of_a_path_that_failed_before(self):
        """
        The same, for a file whose fetches have failed before (the sync
        would wait 40 seconds before its next try): the download waits for
        its source to come back instead, and still resumes within 30
        seconds.
        """
        a, b, mesh = self.a, self.b, self.mesh
        entry = a.add_bootstrap(f"127.0.0.1:{b.listen_ports[0]}")
        client, _, pump = link(a, b, entry)
        throttle(pump)
        mesh.pumps.append(pump)
        for _ in range(3):
            a.folder.sync.trouble.failed("big.bin")
        stalled_at = self.stall_mid_file(pump, client)
        answered = list(range(len(mesh.reactor.tcpClients)))
        mesh.run(self.landed, timeout=RECOVERY,
                 each=lambda: answer_dials(mesh, (a, b), answered))
        self.assertLess(mesh.reactor.seconds() - stalled_at, RECOVERY)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)

    def test_dead_connection_another_source_takes_over(self):
        """
        Two sources; the path to the one in use dies mid-file: the other
        serves the rest within 30 seconds, without any new dial.
        """
        a, b, mesh = self.a, self.b, self.mesh
        c = mesh.node("c")
        _, _, bc = mesh.link(c, b)
        mesh.settle(b, c)
        client, _, ab = mesh.link(a, b)
        _, _, ac = mesh.link(a, c)
        from_c = record(ac.clientIO, wire.GET)
        mesh.run(lambda: bool(a.folder.fetcher.active))
        used = a.folder.fetcher.active[0].peer
        dead = ab if used == b.node_id else ac
        proto = client if used == b.node_id else a.connections[c.node_id]
        stalled_at = self.stall_mid_file(dead, proto)
        mesh.run(self.landed, timeout=RECOVERY)
        self.assertLess(mesh.reactor.seconds() - stalled_at, RECOVERY)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        if used == b.node_id:
            self.assertGreaterEqual(from_c[-1].offset, MiB)

    def test_live_connection_that_sends_nothing(self):
        """
        B answers PINGs but sends no more of the file: the connection
        stays, and at the stall timeout the download goes to C, which has
        the same version, at once (not after the sync's retry delay), from
        where it stopped.
        """
        a, b, mesh = self.a, self.b, self.mesh
        client, _, ab = mesh.link(a, b)
        mesh.run(lambda: any(d.offset >= MiB for d in client.downloads.values()))
        tap(ab.serverIO, lambda f: wire.encode_frame(wire.Pong(1))
            if f[0] in (wire.DATA, wire.END) else f)
        c = mesh.node("c")
        _, _, bc = mesh.link(c, b)
        mesh.run(lambda: c.folder.in_sync() and os.path.exists(
            os.path.join(c.share_dir, "big.bin")))
        _, _, ac = mesh.link(a, c)
        from_c = record(ac.clientIO, wire.GET)
        gave_up = lambda: [line for line in self.logs() if "no data for" in line]  # noqa: E731
        mesh.run(gave_up, timeout=a.limits.stall_timeout + RECOVERY)
        at = mesh.reactor.seconds()
        mesh.run(lambda: bool(from_c))
        self.assertLess(mesh.reactor.seconds() - at, 1.0)
        gave_up = gave_up()
        self.assertEqual(len(gave_up), 1)
        self.assertIn("not asking it for this version for", gave_up[0])
        self.assertGreaterEqual(from_c[0].offset, MiB)
        mesh.run(self.landed)
        self.assertEqual(read_file(a.share_dir, "big.bin"), self.data)
        self.assertIn(b.node_id, a.connections)


class ProgressTests(SynchronousTestCase):
    """
    A big download gets a line every PROGRESS_EVERY seconds with its share
    done, rate and time left; a small one gets none.
    """

    def watch(self, size):
        from twisted.internet.task import Clock

        from p2ptwisted.core.index import FILE, Entry
        from p2ptwisted.core.versions import Vector
        from p2ptwisted.downloads import Download, Want

        self.clock = Clock()
        self.clock.advance(1000)
        entry = Entry(path="big.iso", kind=FILE, size=size, mtime_ns=1, perms=0o644,
                      hash="ab" * 32, deleted=False, version=Vector({"b" * 16: 1}),
                      modified_by="b" * 16)
        peer = type("Peer", (), {"describe": lambda self: "B (b0b0b0b0b0b0) at 127.0.0.1:9",
                                 "quiet_for": lambda self: 0.0, "probing": False})()
        download = Download(entry=entry, dir_fd=-1, peer=peer, started_at=self.clock.seconds(),
                            last_activity=self.clock.seconds())
        want = Want(entry=entry, sources=("b",), done=None, download=download, state="running")
        self.download = download
        watch = stalls_module.StallWatch(self.clock, 60.0, lambda: [want],
                                         lambda want, idle: None, lambda: None)
        self.addCleanup(watch.stop)

    def receive(self, seconds, n):
        for _ in range(int(seconds / stalls_module.STALL_CHECK)):
            self.download.offset += n
            self.download.received += n
            self.download.last_activity = self.clock.seconds() + stalls_module.STALL_CHECK
            self.clock.advance(stalls_module.STALL_CHECK)

    def test_big_download_lines(self):
        logs = capture_logs(self)
        self.watch(100 * MiB)
        self.receive(24, 2 * MiB)  # 1 MiB/s
        lines = [line for line in logs() if line.startswith("fetching big.iso from B")]
        self.assertEqual(lines, [
            "fetching big.iso from B (b0b0b0b0b0b0) at 127.0.0.1:9: 10% (10485760 of"
            " 104857600 bytes), 1.0 MiB/s, about 90s left",
            "fetching big.iso from B (b0b0b0b0b0b0) at 127.0.0.1:9: 20% (20971520 of"
            " 104857600 bytes), 1.0 MiB/s, about 80s left",
        ])

    def test_small_download_no_lines(self):
        logs = capture_logs(self)
        self.watch(stalls_module.PROGRESS_MIN - 1)
        self.receive(30, MiB)
        self.assertEqual([line for line in logs() if "big.iso" in line], [])
