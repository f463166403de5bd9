"""
The plumbing of the block benchmarks (benchmarks/netlab.py, labnodes.py
and blocks.py): the figures they read from the nodes' logs, the
block size rule their targets use, and -- where root and iproute2 are
available, skipped with the reason otherwise -- that a lab's links are
shaped and that everything it makes, or an earlier killed run left, is
removed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def load(name: str):
    """
    A benchmark script as a module (they import each other by plain name,
    as they do when run as C{python benchmarks/blocks.py}).
    """
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


netlab = load("netlab")
labnodes = load("labnodes")
blocks = load("blocks")

MiB = 1 << 20


def lab_names() -> list:
    names = [line.split()[0] for line in
             netlab.sh("ip", "netns", "list", check=False).stdout.splitlines() if line.split()]
    links = [line.split(":")[1].strip().split("@")[0] for line in
             netlab.sh("ip", "-o", "link", "show", check=False).stdout.splitlines()]
    # (not another process's short-lived probe: netlab.unavailable, run by
    # a test in another worker at the same time, removes its own)
    return [n for n in names + links
            if n.startswith(netlab.PREFIX) and not n.startswith(netlab.PREFIX + "probe")]


class FiguresTests(unittest.TestCase):
    def test_block_size(self):
        """
        Issue 12's rule: the smallest power of two from 128 KiB to 16 MiB
        keeping a file under 2,000 blocks.
        """
        self.assertEqual(blocks.block_size(0), 128 * 1024)
        self.assertEqual(blocks.block_size(200 * MiB), 128 * 1024)
        self.assertEqual(blocks.block_size(250 * MiB), 256 * 1024)
        self.assertEqual(blocks.block_size(1024 * MiB), MiB)
        self.assertEqual(blocks.block_size(4096 * MiB), 4 * MiB)
        self.assertEqual(blocks.block_size(1 << 50), 16 * MiB)

    def test_touched_blocks(self):
        self.assertEqual(blocks.touched_blocks(0, MiB, MiB), 1)
        self.assertEqual(blocks.touched_blocks(512 * MiB - MiB // 2, MiB, MiB), 2)
        self.assertEqual(blocks.touched_blocks(1, MiB, 128 * 1024), 9)

    def test_in_step_bytes(self):
        """
        Today's in-step line, and one with a reuse field added, are both
        read; other lines are not.
        """
        lines = [
            "2026-12-03T21:50:14+0000 [p2ptwisted.folder.Folder#info] in step with peers:"
            " applied 1 changes, fetched 1 files (20971520 bytes) in 1.8s, 11.3 MiB/s",
            "x in step with peers: applied 2 changes, fetched 1 files (2097152 bytes,"
            " reused 1071644672 bytes from local files) in 1.0s, 2.0 MiB/s",
            "x fetched big.bin (20971520 bytes) from h2 (ac0b9e6b4f33) at 10.77.0.2:12345",
        ]
        self.assertEqual(labnodes.in_step_bytes(lines),
                         {"lines": 2, "changes": 3, "files": 2, "bytes": 23068672,
                          "reused": 1071644672})

    def test_served_by_peer(self):
        lines = [
            "x served 1 files (209715200 bytes) to h2 (ac0b9e6b4f33) at 10.77.0.2:40000 in"
            " 17.5s, 11.4 MiB/s",
            "x served 2 files (5 bytes) to h2 (ac0b9e6b4f33) at 10.77.0.2:40002 in 0.1s, 0 MiB/s",
            "x served 1 files (7 bytes) to h3 (0123456789ab) at 10.77.0.3:40000 in 0.1s, 0 MiB/s",
        ]
        self.assertEqual(labnodes.served_by_peer(lines), {"h2": 209715205, "h3": 7})

    def test_node_log(self):
        """
        A node's connections are followed through its log: connected,
        then left.
        """
        log = os.path.abspath(self.mktemp())
        script = ("print('t [n] connected to h2 (ac0b9e6b4f33) at 10.77.0.2:12345 (outbound)');"
                  "print('t [n] connected to h3 (0123456789ab) at 10.77.0.3:5 (inbound)');"
                  "print('t [n] h2 (ac0b9e6b4f33) at 10.77.0.2:12345 left: closed')")
        node = labnodes.Node("h1", [sys.executable, "-c", script], log, ROOT)
        node.proc.wait(30)
        node.poll(time.monotonic())
        self.assertEqual(node.connected, {"0123456789ab": "h3"})
        self.assertEqual(len(node.lines), 3)


class LabTests(unittest.TestCase):
    """
    Needs root and iproute2; builds at most two namespaces for a few
    seconds.
    """

    timeout = 60

    def setUp(self):
        why = netlab.unavailable()
        if why:
            raise unittest.SkipTest(why)
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def enter(self, lab):
        try:
            return lab.__enter__()
        except netlab.LabError as e:
            if "another netlab run" in str(e):
                raise unittest.SkipTest(str(e)) from None
            raise

    def test_shaped_and_removed(self):
        """
        A 20 Mbit/s link carries no more than that; leaving the lab removes
        its namespaces, bridge and veths.
        """
        lab = netlab.Lab(2, self.workdir, rate_mbit=20)
        self.enter(lab)
        try:
            self.assertEqual(sorted(lab_names()), sorted(
                ["p2plab-h1", "p2plab-h2", "p2plab-br", "p2plab-v1", "p2plab-v2"]))
            rate = netlab.raw_rate_mbit(lab, 1, 2, 1.0)
            self.assertGreater(rate, 2)
            self.assertLess(rate, 24)
        finally:
            lab.__exit__(None, None, None)
        self.assertEqual(lab_names(), [])

    def test_stale_removed(self):
        """
        What a killed run left -- a namespace with a process still in it
        -- is removed by the next lab, the process ended.
        """
        netlab.sh("ip", "netns", "add", "p2plab-stale")
        self.addCleanup(netlab.sh, "ip", "netns", "del", "p2plab-stale", check=False)
        left = subprocess.Popen(["ip", "netns", "exec", "p2plab-stale", "sh", "-c",
                                 "echo in; exec sleep 60"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: left.poll() is None and left.kill())
        self.addCleanup(left.stdout.close)
        self.assertEqual(left.stdout.readline(), "in\n")  # it is in the namespace
        lab = netlab.Lab(1, self.workdir, rate_mbit=None)
        self.enter(lab)
        try:
            self.assertEqual(left.wait(10), -9)
            self.assertNotIn("p2plab-stale", lab_names())
        finally:
            lab.__exit__(None, None, None)
        self.assertEqual(lab_names(), [])
