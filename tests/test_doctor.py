"""
Tests for L{p2ptwisted.doctor}: the reachability report, read through
L{p2ptwisted.control.Control.doctor} the way an operator reads it, with
nodes joined in memory on a fake clock.
"""

import errno
import os

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.control import Control
from p2ptwisted.discovery import Announcement, Discovery, Interface, encode
from p2ptwisted.doctor import NO_SYNC_HINT_AFTER, diagnose
from p2ptwisted.node import DOCTOR_AFTER

from .helpers import capture_logs, flush, link, make_node
from .test_discovery import MulticastClock
from .test_control import content, write_file

LOOPBACK = Interface("lo", "127.0.0.1", True, True, False)

NO_SYNC_THERE = "probably runs --no-sync"
NO_SYNC_HERE = "this node takes nothing from peers"


class DoctorTestCase(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.reactor = MemoryReactorClock()
        self.out = []
        self.pumps = []

    def node(self, name, **kwargs):
        return make_node(self, name, reactor=self.reactor, **kwargs)

    def doctor(self, node):
        """
        What C{doctor()} prints for C{node}: one block of text, as lines.
        """
        before = len(self.out)
        Control(node, out=self.out.append).doctor()
        self.assertEqual(len(self.out), before + 1)
        return self.out[-1].split("\n")

    def section(self, lines, node):
        """
        The findings about C{node}: the lines naming it (one per finding).
        """
        head = f"({node.node_id[:12]}):"
        found = [line for line in lines if head in line]
        if not found:
            self.fail(f"no line about {node.display_name} in {lines}")
        return found

    def connect(self, dialer, listener):
        client, server, pump = link(dialer, listener)
        self.pumps.append(pump)
        flush(pump)
        return client, server, pump

    def settle(self, seconds):
        """
        Let C{seconds} of fake time pass a second at a time, moving bytes
        (pings included) after each.
        """
        for _ in range(int(seconds)):
            self.reactor.advance(1)
            flush(*self.pumps)

    def share(self, node, *paths):
        for i, path in enumerate(paths):
            write_file(node.share_dir, path, content(i, 1000 + i))
        self.successResultOf(node.rescan())

    def holds_index(self, node, peer):
        """
        Whether C{node} has logged that it holds C{peer}'s index up to what
        the peer announced.
        """
        head = f"{peer.display_name} ({peer.node_id[:12]}) at "
        return any(line.startswith(head) and line.endswith("its index is up to date here")
                   for line in self.logs())

    def live_paths(self, node):
        return {e.path for e in Control(node).catalog()}


class ReachTests(DoctorTestCase):
    """
    Who reached whom, and what it means for files.
    """

    def test_we_dialled_it(self):
        """
        A dialled B: both are connected, and neither report warns of
        anything (B never dialled A, but it had no need to: the one
        connection carries files both ways).
        """
        a, b = self.node("a"), self.node("b")
        self.connect(a, b)
        for node in (a, b):
            lines = self.doctor(node)
            self.assertIn("1 peer, all reachable both ways", lines)
            self.assertNotIn("reached us", "\n".join(lines))

    def test_it_dialled_us(self):
        """
        B was dialled by A: no finding about A in B's report, even after a
        dial of B's to A's address failed before (a connected node is
        never dialled: such a failure is older than the connection).  Once
        A is gone and B's dials to it fail, one line says so, with the
        address and the error, and that it never reached A.
        """
        a, b = self.node("a"), self.node("b")
        client, server, pump = self.connect(a, b)
        [entry] = b.book.entries_for(a.node_id)
        self.assertEqual(entry.key, f"127.0.0.1:{a.listen_ports[0]}")
        b.book.dial_failed(entry, self.reactor.seconds(), "Connection refused")
        self.assertIn("1 peer, all reachable both ways", self.doctor(b))
        client.transport.loseConnection()
        flush(pump)
        b.book.dial_failed(entry, self.reactor.seconds(), "Connection refused")
        [line] = self.section(self.doctor(b), a)
        self.assertIn(f"a ({a.node_id[:12]}): not connected (last connected 0s ago); our dials"
                      f" to it fail (127.0.0.1:{a.listen_ports[0]}: Connection refused): it"
                      " reached us but we never reached it, so it may listen on another"
                      " interface, or a firewall on its side blocks its port", line)

    def test_both_ways(self):
        """
        Each node dialled the other once: both reports say all is well.
        """
        a, b = self.node("a"), self.node("b")
        self.connect(a, b)
        self.connect(b, a)
        self.assertIn(b.node_id, a.connections)
        for here in (a, b):
            self.assertIn("1 peer, all reachable both ways", self.doctor(here))

    def test_disconnected_peer_remembered(self):
        """
        After the connection is gone, the peer is one line: not connected,
        since when, and that we redial it (or why our dials fail).
        """
        a, b = self.node("a"), self.node("b")
        client, server, pump = self.connect(a, b)
        self.reactor.advance(5)
        client.transport.loseConnection()
        flush(pump)
        self.assertNotIn(b.node_id, a.connections)
        lines = self.doctor(a)
        self.assertIn("peers: 0 connected", lines)
        [line] = self.section(lines, b)
        self.assertEqual(line, f"  b ({b.node_id[:12]}): not connected (last connected 5s ago);"
                               " redialling it")
        [entry] = a.book.entries_for(b.node_id)
        a.book.dial_failed(entry, self.reactor.seconds(), "Connection refused")
        [line] = self.section(self.doctor(a), b)
        self.assertTrue(line.endswith(f"our dials to it fail ({entry.key}: Connection refused)"),
                        line)

    def test_never_reached_entry(self):
        """
        An address never reached says how many attempts and the last error.
        """
        a = self.node("a", bootstrap=["10.1.2.3:4000"])
        for _ in range(2):
            self.reactor.advance(3)
            host, port, factory, timeout, bind = self.reactor.tcpClients[-1]
            self.assertEqual((host, port), ("10.1.2.3", 4000))
            factory.clientConnectionFailed(self.reactor.connectors[-1],
                                           Failure(ConnectionRefusedError("no one home")))
        lines = self.doctor(a)
        [line] = [l for l in lines if "10.1.2.3:4000" in l]
        self.assertTrue(line.startswith("  10.1.2.3:4000: never reached (2 attempts; last: "), line)
        self.assertIn("no one home", line)

    def test_no_peers(self):
        """
        A node alone says so.
        """
        lines = self.doctor(self.node("a"))
        self.assertEqual(lines[-1], "no peers yet")


class FileHintTests(DoctorTestCase):
    """
    The hints about files that do not move.
    """

    def test_peer_probably_no_sync(self):
        """
        A connected peer that lacks our files and has asked for none: no
        hint before NO_SYNC_HINT_AFTER seconds, the --no-sync hint after
        (naming --mode send-only too, and saying it still serves).
        """
        a, b = self.node("a"), self.node("b", sync=False)
        self.share(a, "one.txt", "two.txt")
        self.connect(a, b)
        self.settle(NO_SYNC_HINT_AFTER - 1)
        self.assertTrue(self.holds_index(a, b))
        self.assertTrue(self.holds_index(b, a))
        self.assertEqual(self.live_paths(b), set())
        self.assertNotIn(NO_SYNC_THERE, "\n".join(self.doctor(a)))
        self.settle(1)
        text = "\n".join(self.section(self.doctor(a), b))
        self.assertIn("it lacks 2 of our files and has asked for none: it probably runs"
                      " --no-sync or --mode send-only (it still serves its files)", text)
        # B, for its part, lacks A's files and takes nothing from peers.
        text = "\n".join(self.section(self.doctor(b), a))
        self.assertIn("we lack 2 of its files and this node takes nothing from peers"
                      " (--no-sync or --mode send-only): fetch them with fetch(path)", text)
        self.assertEqual(self.live_paths(b), set())

    def test_peer_that_asked_gets_no_hint(self):
        """
        A peer that still lacks some of our files but has sent a GET is not
        taken for a --no-sync node.
        """
        a, b = self.node("a"), self.node("b", sync=False)
        self.share(a, "one.txt", "two.txt")
        self.connect(a, b)
        self.settle(1)
        self.assertTrue(self.holds_index(b, a))
        fetched = Control(b, out=self.out.append).fetch("one.txt")
        self.settle(NO_SYNC_HINT_AFTER + 5)
        self.assertEqual(self.successResultOf(fetched),
                         os.path.join(b.share_dir, "one.txt"))
        self.assertGreaterEqual(a.connections[b.node_id].gets_received, 1)
        self.assertEqual(self.live_paths(b), {"one.txt"})
        self.assertNotIn(NO_SYNC_THERE, "\n".join(self.doctor(a)))

    def test_peer_with_our_files_gets_no_hint(self):
        """
        A peer that has all our files (it synced them) gets no hint.
        """
        a, b = self.node("a"), self.node("b")
        self.share(a, "one.txt")
        self.connect(a, b)
        self.settle(NO_SYNC_HINT_AFTER + 5)
        self.assertEqual(self.live_paths(b), {"one.txt"})
        self.assertNotIn(NO_SYNC_THERE, "\n".join(self.doctor(a)))
        self.assertNotIn(NO_SYNC_HERE, "\n".join(self.doctor(b)))

    def test_sync_off_here(self):
        """
        We run --no-sync and lack a peer's files: the report says this node
        takes nothing from peers and how to fetch; with sync on, it does
        not.
        """
        a, b = self.node("a", sync=False), self.node("b")
        self.share(b, "one.txt", "two.txt", "three.txt")
        self.connect(a, b)
        self.settle(1)
        self.assertTrue(self.holds_index(a, b))
        text = "\n".join(self.section(self.doctor(a), b))
        self.assertIn("we lack 3 of its files and this node takes nothing from peers"
                      " (--no-sync or --mode send-only): fetch them with fetch(path)", text)
        self.assertNotIn(NO_SYNC_HERE, "\n".join(self.doctor(b)))

    def test_send_only_mode_here(self):
        """
        --mode send-only is the same as --no-sync for the report.
        """
        a, b = self.node("a", mode="send-only"), self.node("b")
        self.share(b, "one.txt")
        self.connect(a, b)
        self.settle(1)
        text = "\n".join(self.section(self.doctor(a), b))
        self.assertIn("we lack 1 of its files and this node takes nothing from peers", text)

    def test_receive_only_gets_no_send_only_hint(self):
        """
        A receive-only node takes peers' files, so it is neither told that
        it takes nothing nor, once in step, taken for a --no-sync peer.
        """
        a, b = self.node("a", mode="receive-only"), self.node("b")
        self.share(b, "one.txt", "two.txt")
        self.connect(a, b)
        self.settle(NO_SYNC_HINT_AFTER + 5)
        self.assertEqual(sorted(os.listdir(a.share_dir)), ["one.txt", "two.txt"])
        self.assertNotIn(NO_SYNC_HERE, "\n".join(self.doctor(a)))
        self.assertNotIn(NO_SYNC_THERE, "\n".join(self.doctor(b)))

    def test_index_not_arrived(self):
        """
        Before the peer's index arrives, the report says so; once it has,
        it does not.
        """
        a, b = self.node("a"), self.node("b")
        client, server, pump = link(a, b)

        def arrived():
            return a.folder.store.meta(f"peer-index:{b.node_id}") is not None

        # Move the handshakes only: up to both HELLOs.
        for _ in range(3):
            pump.pump()
            if b.node_id in a.connections and not arrived():
                break
        if b.node_id not in a.connections or arrived():
            self.skipTest("the index came with the handshake")  # pragma: no cover
        text = "\n".join(self.section(self.doctor(a), b))
        self.assertIn("its index has not arrived yet", text)
        self.pumps.append(pump)
        self.settle(1)
        self.assertTrue(self.holds_index(a, b))
        self.assertNotIn("has not arrived", "\n".join(self.doctor(a)))


class DiscoveryLineTests(DoctorTestCase):
    """
    What the report says about LAN discovery.
    """

    def start_discovery(self, node, reactor, **kwargs):
        kwargs.setdefault("interfaces", lambda: [LOOPBACK])
        kwargs.setdefault("listen_host", "127.0.0.1")
        discovery = Discovery(node, reactor, group="239.255.43.201", port=7777, **kwargs)
        node.discovery = discovery
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return discovery

    def test_no_discover(self):
        """
        Without discovery (--no-discover): off, and where peers come from.
        """
        lines = self.doctor(self.node("a"))
        self.assertIn("LAN discovery: off (--no-discover); peers come from --peer and gossip",
                      lines)

    def test_off_with_reason(self):
        """
        Discovery that could not start: its state, reason included.
        """
        a = self.node("a")
        discovery = self.start_discovery(a, self.reactor, interfaces=lambda: [])
        self.assertTrue(discovery.state.startswith("off: "))
        lines = self.doctor(a)
        self.assertIn(f"LAN discovery: {discovery.state}", lines)
        self.assertIn("no IPv4 interface that can multicast", f"LAN discovery: {discovery.state}")

    def test_on_nothing_heard(self):
        """
        On, but nothing heard: "not yet" just after start, then the advice
        (multicast filtered, or no other node; give --peer).
        """
        reactor = MulticastClock()
        a = make_node(self, "a", reactor=reactor)
        discovery = self.start_discovery(a, reactor)
        self.assertEqual(discovery.state, "on")
        lines = self.doctor(a)
        self.assertIn("LAN discovery: on, announcing on 127.0.0.1 to 239.255.43.201 UDP port"
                      " 7777; 1 announcements sent (last 0s ago); no other node heard yet",
                      lines)
        self.assertFalse([l for l in lines if "no announcement from any other node" in l])
        reactor.advance(6)
        lines = self.doctor(a)
        [advice] = [l for l in lines if "no announcement from any other node has arrived" in l]
        self.assertIn("multicast is filtered between us", advice)
        self.assertIn("--peer HOST:PORT", advice)
        [on] = [l for l in lines if l.startswith("LAN discovery: on")]
        self.assertIn("1 announcements sent (last 6s ago)", on)

    def test_heard_and_malformed(self):
        """
        Once another node is heard: how many and when last; malformed
        datagrams are counted; the heard node appears among the peers with
        why it was never reached.
        """
        reactor = MulticastClock()
        a = make_node(self, "a", reactor=reactor)
        lan = Interface("eth0", "10.0.0.2", True, False, True, "255.255.255.0")
        discovery = self.start_discovery(a, reactor, interfaces=lambda: [lan],
                                         listen_host="10.0.0.2")
        reactor.advance(10)
        other = "ab" * 32
        discovery.datagram_received(
            encode(Announcement(other, 5000, "00" * 8, a.tls)), ("10.0.0.7", 7777))
        discovery.datagram_received(b"junk", ("10.0.0.8", 7777))
        host, port, factory, timeout, bind = reactor.tcpClients[-1]
        self.assertEqual((host, port), ("10.0.0.7", 5000))
        factory.clientConnectionFailed(reactor.connectors[-1],
                                       Failure(ConnectionRefusedError("nobody")))
        reactor.advance(3)
        lines = self.doctor(a)
        [on] = [l for l in lines if l.startswith("LAN discovery: on")]
        self.assertTrue(on.endswith("; heard 1 other node, last 3s ago"), on)
        self.assertIn("LAN discovery: ignored 1 malformed announcement(s)", lines)
        self.assertFalse([l for l in lines if "no announcement from any other node" in l])
        [line] = [l for l in lines if "heard on the LAN" in l]
        self.assertIn("heard on the LAN at 10.0.0.7:5000 3s ago, never reached"
                      " (10.0.0.7:5000: ", line)
        self.assertIn("nobody", line)
        self.assertTrue(line.startswith(f"  unnamed ({other[:12]}): heard on the LAN"), line)

    def test_send_error(self):
        """
        Announcements that cannot be sent: the report says so, with the
        error.
        """
        reactor = MulticastClock()
        a = make_node(self, "a", reactor=reactor)
        reactor_listen = reactor.listenMulticast

        def listen(*args, **kwargs):
            listening = reactor_listen(*args, **kwargs)

            def refuse(data, address):
                raise OSError(errno.ENETUNREACH, "Network is unreachable")

            listening.socket.sendto = refuse
            return listening

        reactor.listenMulticast = listen
        discovery = self.start_discovery(a, reactor)
        self.assertEqual(discovery.sent, 0)
        lines = self.doctor(a)
        self.assertIn("LAN discovery: our announcements do not go out: from 127.0.0.1: Network"
                      " is unreachable", lines)
        self.assertEqual(len([l for l in self.logs()
                              if l.startswith("cannot send LAN announcements")]), 1)


class ListenLineTests(DoctorTestCase):
    def test_all_interfaces(self):
        """
        The first line names the listen port and where.
        """
        a = self.node("a", port=43210)
        lines = self.doctor(a)
        self.assertTrue(lines[0].startswith("listening on TCP port 43210 on all interfaces"),
                        lines[0])
        self.assertNotIn("only this machine", "\n".join(lines))

    def test_loopback_only(self):
        """
        Listening on loopback: only this machine can reach it, and how to
        fix that.
        """
        a = self.node("a", port=43210)
        a.listen_host = "127.0.0.1"
        lines = self.doctor(a)
        self.assertEqual(lines[0], "listening on TCP port 43210 on 127.0.0.1: only this machine"
                                   " can reach it; listen on all interfaces (--port 12345) to be"
                                   " reachable from the LAN")


class SummaryTests(DoctorTestCase):
    def test_logged_once_after_start(self):
        """
        DOCTOR_AFTER seconds after start-up the node logs the report once,
        listen line included; not before, and not again.
        """
        a = self.node("a", port=43211)

        def summaries():
            return [l for l in self.logs() if l.startswith("reachability after")]

        self.reactor.advance(DOCTOR_AFTER - 0.5)
        self.assertEqual(summaries(), [])
        self.reactor.advance(0.5)
        [summary] = summaries()
        self.assertTrue(summary.startswith(f"reachability after {DOCTOR_AFTER:.0f}s:\n"), summary)
        self.assertIn("listening on TCP port 43211 on", summary)
        self.assertIn("LAN discovery: off (--no-discover)", summary)
        self.assertEqual(summary.split("\n", 1)[1], "\n".join(diagnose(a)))
        self.reactor.advance(10 * DOCTOR_AFTER)
        self.assertEqual(len(summaries()), 1)

    def test_not_logged_after_stop(self):
        """
        A node stopped before DOCTOR_AFTER logs no summary.
        """
        a = self.node("a")
        self.reactor.advance(1)
        a.stopService()
        self.reactor.advance(DOCTOR_AFTER)
        self.assertFalse([l for l in self.logs() if l.startswith("reachability after")])


class HealthyMeshTests(DoctorTestCase):
    """
    The doctor warns only about what failed (issue 11, point 12): a
    healthy mesh, whoever dialled whom, is one line.
    """

    #: Words of the warnings a healthy mesh must not get.
    WOLF = ("firewall", "may block", "never reached", "not reached", "has not reached",
            "no announcement")

    def mesh(self, count):
        """
        C{count} nodes, each pair joined once (the lower one dialled), in
        step after a few seconds.
        """
        nodes = [self.node(f"n{i}") for i in range(count)]
        for i, dialer in enumerate(nodes):
            for listener in nodes[i + 1:]:
                self.connect(dialer, listener)
        self.settle(3)
        for node in nodes:
            self.assertEqual(len(node.connections), count - 1)
        return nodes

    def test_healthy_mesh_is_one_line(self):
        """
        In a mesh of 5 where each pair connected once, one way, every
        node's report says "4 peers, all reachable both ways" and warns of
        nothing: no firewall, no one-way reachability.
        """
        for node in self.mesh(5):
            lines = self.doctor(node)
            self.assertIn("4 peers, all reachable both ways", lines)
            self.assertEqual(
                [l for l in lines if any(w in l for w in self.WOLF)], [], "\n".join(lines))
            self.assertEqual(len(lines), 3, "\n".join(lines))

    def test_logged_summary_of_a_healthy_mesh(self):
        """
        The summary logged DOCTOR_AFTER seconds after start is one line
        per finding: listening, discovery, and the peers' one line.
        """
        nodes = self.mesh(3)
        self.settle(DOCTOR_AFTER)
        summaries = [l for l in self.logs() if l.startswith("reachability after")]
        self.assertEqual(len(summaries), 3)
        for summary in summaries:
            lines = summary.split("\n")[1:]
            self.assertEqual(len(lines), 3, summary)
            self.assertEqual(lines[2], "2 peers, all reachable both ways")
        self.assertEqual(len(nodes), 3)

    def test_dial_failed_before_the_peer_connected(self):
        """
        The start of a mesh: our dial to a peer failed (it was not up
        yet), then it dialled us.  That old failure is no finding.
        """
        a, b = self.node("a"), self.node("b")
        entry = b.book.add_bootstrap(f"127.0.0.1:{a.listen_ports[0]}")
        b.book.dial_failed(entry, self.reactor.seconds(), "Connection refused")
        self.reactor.advance(0.5)
        self.connect(a, b)
        self.assertEqual(b.book.entries_for(a.node_id), [entry])
        self.assertEqual(entry.last_error, "Connection refused")
        lines = self.doctor(b)
        self.assertIn("1 peer, all reachable both ways", lines)
        self.assertEqual([l for l in lines if any(w in l for w in self.WOLF)], [])


class ExpectedAnnouncementTests(DoctorTestCase):
    """
    "No announcement has arrived" only when one was expected.
    """

    def setUp(self):
        super().setUp()
        self.reactor = MulticastClock()

    def discover(self, node):
        discovery = Discovery(node, self.reactor, group="239.255.43.201", port=7777,
                              interfaces=lambda: [LOOPBACK], listen_host="127.0.0.1")
        node.discovery = discovery
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return discovery

    def test_connected_to_neighbours(self):
        """
        A node connected to a neighbour (on its discovery network) that has
        heard nothing: no warning at 15 s (nodes announce every 30 to 60
        s); a warning naming the neighbour once one announcement at least
        should have come; none if the neighbour's announcement arrives.
        """
        from p2ptwisted.discovery import ANNOUNCE_MAX

        a, b = self.node("a"), self.node("b")
        discovery = self.discover(a)
        self.connect(b, a)
        self.settle(DOCTOR_AFTER)
        text = "\n".join(self.doctor(a))
        self.assertNotIn("no announcement", text)
        self.assertIn("1 peer, all reachable both ways", text)
        self.settle(ANNOUNCE_MAX)
        [line] = [l for l in self.doctor(a) if "no announcement" in l]
        self.assertIn("though 1 connected peer is on this network (b)", line)
        self.assertIn("--no-discover", line)
        self.assertIn("multicast is filtered", line)
        discovery.datagram_received(
            encode(Announcement(b.node_id, b.listen_ports[0], "00" * 8, b.tls)),
            ("127.0.0.1", 7777))
        self.assertNotIn("no announcement", "\n".join(self.doctor(a)))

    def test_peers_off_the_network(self):
        """
        Peers reached from elsewhere (not on our discovery network) make
        no announcement expected: no warning, however long.
        """
        from p2ptwisted.discovery import ANNOUNCE_MAX

        a, b = self.node("a"), self.node("b")
        self.discover(a)
        client, server, pump = link(b, a, dialer_host="10.9.9.9")
        self.pumps.append(pump)
        flush(pump)
        self.assertIn(b.node_id, a.connections)
        self.settle(2 * ANNOUNCE_MAX)
        self.assertNotIn("no announcement", "\n".join(self.doctor(a)))
