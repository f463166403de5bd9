"""
Several hosts on one machine: network namespaces joined by a bridge, each
running C{twistd -n p2pshare --port 12345} with no --peer at all.

The test builds its own little LAN -- one namespace holding a bridge, and
three "hosts", each with a veth pair whose other end is on the bridge, with
addresses private to those namespaces -- and removes it afterwards.  Nothing
is sent outside those namespaces.  It needs root and iproute2's C{ip netns};
where they are missing it is skipped with the reason (probed once).

It checks what a user on a real LAN would: the nodes find each other by
discovery, form a full mesh, files placed on each reach the others in both
directions, and a transfer cut off by a host losing its link resumes and
verifies once the link is back.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
from typing import Dict, List, Optional

from twisted.internet import reactor
from twisted.trial import unittest

from p2ptwisted.blockfile import HAVE_SUFFIX
from p2ptwisted.core.blocks import block_size
from p2ptwisted.swarm import DEPTH_BYTES, DEPTH_SHARE

from . import test_twistd as base
from .test_twistd import NodeProcess, twistd_command
from .test_twistd_files import (
    IN_FLIGHT,
    IN_STEP,
    PARTIAL_PREFIX,
    SYNC_TIMEOUT,
    partial_reaches,
    tcp_bytes_received,
    verified_bytes,
)

SUBNET = "10.231.77"
HOSTS = ("a", "b", "c")
PORT = 12345
MiB = 1 << 20

#: How long a cut link lasts at most before the test gives up waiting for
#: the node to notice it.
NOTICE_TIMEOUT = 30.0

_probe: Optional[str] = None


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def namespaces_unavailable() -> Optional[str]:
    """
    Why network namespaces cannot be used here, or C{None} if they can
    (probed once, by creating and deleting one).
    """
    global _probe
    if _probe is not None:
        return _probe or None
    if os.geteuid() != 0:
        _probe = "needs root to create network namespaces"
    elif shutil.which("ip") is None:
        _probe = "needs iproute2's ip command"
    else:
        name = f"p2pprobe-{secrets.token_hex(3)}"
        done = _ip("netns", "add", name)
        if done.returncode != 0:
            _probe = f"ip netns add failed: {done.stderr.strip()}"
        else:
            _ip("netns", "del", name)
            _probe = ""
    return _probe or None


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Lan:
    """
    A bridge namespace and host namespaces on it, created and removed by a
    test.
    """

    def __init__(self, testcase: unittest.TestCase):
        self.tag = secrets.token_hex(3)
        self.bridge = f"p2pbr-{self.tag}"
        self.hosts: Dict[str, str] = {}
        self.addresses: Dict[str, str] = {}
        self.testcase = testcase
        testcase.addCleanup(self.remove)
        self._run("netns", "add", self.bridge)
        self._run("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        self._run("-n", self.bridge, "link", "set", "br0", "up")

    def _run(self, *args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def add_host(self, name: str, index: int) -> str:
        ns = f"p2p{name}-{self.tag}"
        self._run("netns", "add", ns)
        self.hosts[name] = ns
        self._run("link", "add", "eth0", "netns", ns, "type", "veth",
                  "peer", "name", f"v{name}", "netns", self.bridge)
        self._run("-n", self.bridge, "link", "set", f"v{name}", "master", "br0", "up")
        address = f"{SUBNET}.{index}"
        self._run("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        self._run("-n", ns, "link", "set", "eth0", "up")
        self._run("-n", ns, "link", "set", "lo", "up")
        self.addresses[name] = address
        return ns

    def cut(self, name: str) -> None:
        """
        Take the host's link off the bridge (its own interface stays up, as
        when a cable is pulled at the switch).
        """
        self._run("-n", self.bridge, "link", "set", f"v{name}", "down")

    def restore(self, name: str) -> None:
        self._run("-n", self.bridge, "link", "set", f"v{name}", "up")

    def remove(self) -> None:
        for ns in list(self.hosts.values()) + [self.bridge]:
            _ip("netns", "del", ns)


class NamespaceTests(unittest.TestCase):
    """
    Three hosts, no --peer: discovery, a mesh, files both ways, a cut link.
    """

    timeout = 180

    stop_node = base.TwistdTests.stop_node
    connected_to = base.TwistdTests.connected_to

    def setUp(self) -> None:
        why = namespaces_unavailable()
        if why:
            raise unittest.SkipTest(why)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.lan = Lan(self)

    def start_host_node(self, name: str, share: str, options: List[str] = ()) -> NodeProcess:
        ns = self.lan.hosts[name]
        args = ["ip", "netns", "exec", ns] + twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "p2pshare",
            "--port", str(PORT), "--share", share, "--name", name.upper(),
            # Notice a dead link in seconds rather than minutes.
            "--limit", "ping_interval=1", "--limit", "idle_timeout=4",
            "--limit", "stall_timeout=4",
        ] + list(options)
        node = NodeProcess(name.upper(), args, share)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        rundir = os.path.join(self.dir, f"run-{name}")
        os.makedirs(rundir)
        reactor.spawnProcess(node, shutil.which("ip"), args, env=env, path=rundir)
        self.addCleanup(self.stop_node, node)
        return node

    async def started(self, node: NodeProcess) -> NodeProcess:
        match = await node.wait_for(base.STARTING, timeout=base.START_TIMEOUT)
        node.node_id = match.group("id")
        match = await node.wait_for(base.LISTENING, timeout=base.START_TIMEOUT)
        node.port = int(match.group("port"))
        self.assertEqual(node.port, PORT)
        await node.wait_for(r"LAN discovery on: announcing on " + re.escape(
            self.lan.addresses[node.name.lower()]), timeout=base.START_TIMEOUT)
        return node

    async def in_step(self, node: NodeProcess, files: int, since: int = 0,
                      timeout: float = SYNC_TIMEOUT) -> int:
        """
        Wait until C{node}'s "in step with peers" lines from line C{since}
        on add up to C{files} fetched files; check they add up to exactly
        that many, and return the bytes they say were fetched.
        """
        got = got_bytes = 0
        while got < files:
            match = await node.wait_for(IN_STEP, since, timeout=timeout)
            got += int(match.group("n"))
            got_bytes += int(match.group("bytes"))
            since = next(i for i in range(since, len(node.lines))
                         if IN_STEP.search(node.lines[i])) + 1
        self.assertEqual(got, files, node.output())
        return got_bytes

    async def test_discovery_mesh_files_and_a_cut_link(self) -> None:
        shares = {}
        contents = {}
        for index, name in enumerate(HOSTS, start=1):
            self.lan.add_host(name, index)
            share = os.path.join(self.dir, name)
            os.makedirs(share)
            data = os.urandom(300_000 + index)
            path = os.path.join(share, f"from-{name}.bin")
            with open(path, "wb") as f:
                f.write(data)
            # There before the node starts (a file written a moment ago is
            # published only once left alone for a moment).
            then = os.stat(path).st_mtime - 60
            os.utime(path, (then, then))
            shares[name], contents[f"from-{name}.bin"] = share, data
        # The sender of the big file is rate-capped so the cut lands mid-transfer.
        nodes = {name: self.start_host_node(
            name, shares[name], ["--max-rate", "4M"] if name == "a" else [])
            for name in HOSTS}
        for node in nodes.values():
            await self.started(node)

        # Discovery: every node connects to both others, with no --peer.
        for node in nodes.values():
            for other in nodes.values():
                if other is not node:
                    await self.connected_to(node, other).addTimeout(NOTICE_TIMEOUT, reactor)
            self.assertNotIn("--peer", node.argv)
        # The mesh came from announcements: nodes heard each other on the
        # LAN (a node that is already connected to the announcer when an
        # announcement arrives does not say so, hence not all pairs).
        heard = [line for node in nodes.values() for line in node.lines
                 if re.search(rf"on the LAN at {SUBNET}\.\d:{PORT}$", line)]
        self.assertGreaterEqual(len(heard), 2, "\n".join(heard))

        # Files placed on each node reach both others (both directions on
        # every link).
        for name, node in nodes.items():
            await self.in_step(node, files=2)
            for filename, data in contents.items():
                with open(os.path.join(shares[name], filename), "rb") as f:
                    self.assertEqual(f.read(), data, f"{filename} on {name}")

        # A big file appears on A; C's link is cut while C fetches it, and
        # restored once C has noticed.  The transfer resumes where it
        # stopped, completes and verifies.
        size = 24 * MiB
        big = os.path.join(self.dir, "movie.bin")
        with open(big, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        then = os.stat(big).st_mtime - 60
        os.utime(big, (then, then))
        digest = sha256(big)
        c = nodes["c"]
        marks = {name: node.mark() for name, node in nodes.items()}
        growing = partial_reaches(self, shares["c"], size // 5, block_size(size))
        os.rename(big, os.path.join(shares["a"], "movie.bin"))
        partial = await growing
        cut_mark = c.mark()
        self.lan.cut("c")
        await c.wait_for(rf"(?:dropping )?A \({nodes['a'].node_id[:12]}\) at \S+( left)?: ",
                         cut_mark, timeout=NOTICE_TIMEOUT)
        kept = verified_bytes(partial + HAVE_SUFFIX, block_size(size))
        self.assertTrue(size // 5 <= kept < size, c.output(cut_mark))
        self.lan.restore("c")
        await c.wait_for(r"fetched movie\.bin \(25165824 bytes\) from ", cut_mark,
                         timeout=NOTICE_TIMEOUT)
        # All the bytes fetched since the file appeared add up to the file
        # once -- the blocks kept, and the rest after the link came back --
        # and the blocks that were on their way at the cut.
        fetched = await self.in_step(c, 1, since=marks["c"], timeout=NOTICE_TIMEOUT)
        self.assertTrue(size <= fetched <= size + IN_FLIGHT, c.output(marks["c"]))
        received = tcp_bytes_received(c.transport.pid, netns=self.lan.hosts["c"])
        # (the blocks on their way at the cut were not verified: asked again)
        in_flight = min(DEPTH_BYTES, size // DEPTH_SHARE)
        self.assertLess(received, size - kept + in_flight + MiB,
                        f"C received {received} bytes after the cut for the {size - kept}"
                        f" it lacked\n{c.output(cut_mark)}")
        self.assertEqual(sha256(os.path.join(shares["c"], "movie.bin")), digest)
        self.assertEqual([n for n in os.listdir(shares["c"]) if n.startswith(PARTIAL_PREFIX)],
                         [])
        # B got it too, untouched by C's trouble (but for the blocks it had
        # asked of C, a source too, when C's link went: asked again).
        got = await self.in_step(nodes["b"], 1, since=marks["b"], timeout=NOTICE_TIMEOUT)
        self.assertTrue(size <= got <= size + in_flight, nodes["b"].output(marks["b"]))
        self.assertEqual(sha256(os.path.join(shares["b"], "movie.bin")), digest)


class LoopbackDiscoveryTests(unittest.TestCase):
    """
    Three real nodes on one machine, bound to 127.0.0.1, with discovery on
    and no --peer: they announce on the loopback interface and find each
    other.  (Always runs: nothing leaves loopback.)
    """

    timeout = 60

    stop_node = base.TwistdTests.stop_node
    started = base.TwistdTests.started
    connected_to = base.TwistdTests.connected_to

    def start_node(self, name: str) -> NodeProcess:
        return base.TwistdTests.start_node(self, name, discover=True)

    async def test_three_nodes_find_each_other(self) -> None:
        nodes = [await self.started(self.start_node(name)) for name in ("A", "B", "C")]
        for node in nodes:
            await node.wait_for(r"LAN discovery on: announcing on 127\.0\.0\.1 ")
        for node in nodes:
            for other in nodes:
                if other is not node:
                    await self.connected_to(node, other)
            self.assertNotIn("--peer", node.argv)
