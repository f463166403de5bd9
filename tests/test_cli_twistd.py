# -*- test-case-name: tests.test_cli_twistd -*-
"""
End-to-end: the C{p2pshare} command-line client, run as its own process,
against real C{twistd -n p2pshare} nodes on 127.0.0.1 (each with its web
server on a free loopback port, found through its state directory).

The node plumbing (spawning, waiting for log lines, stopping and reaping)
is L{tests.test_twistd}'s; a C{watch} process is followed the same way, by
its output lines.  Nothing sleeps: every wait is for a line or an exit.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import List, Tuple

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

# The module, not the class: trial would run TwistdTests' tests again.
from . import test_twistd as base
from .test_twistd import START_TIMEOUT, NodeProcess

WEB_UI = re.compile(r"web UI at (?P<url>http://\S+)/$")

#: Seconds a watch has to see a transfer through (it is rate-capped).
WATCH_TIMEOUT = 30.0

#: An mtime well in the past: the scanner publishes a file at once.
OLD = time.time() - 3 * 3600


def cli_command() -> List[str]:
    """
    The installed console script, run by this very Python; or, where the
    package was installed before it had one, its module.
    """
    script = os.path.join(os.path.dirname(sys.executable), "p2pshare")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "p2ptwisted.cli"]


def write(share: str, name: str, data: bytes) -> None:
    path = os.path.join(share, name)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.utime(path + ".tmp", (OLD, OLD))
    os.rename(path + ".tmp", path)


class CliNodeTests(unittest.TestCase):
    timeout = 90

    start_node = base.TwistdTests.start_node
    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    terminate = base.TwistdTests.terminate
    connected_to = base.TwistdTests.connected_to

    async def web_node(self, name: str, **kwargs) -> NodeProcess:
        """
        A started node whose web server listens (its URL is in web.json).
        """
        if "share" not in kwargs:
            kwargs["share"] = os.path.abspath(self.mktemp())
            os.makedirs(kwargs["share"])
        node = await self.started(self.start_node(name, **kwargs))
        await node.wait_for(WEB_UI, timeout=START_TIMEOUT)
        return node

    async def cli(self, node: NodeProcess, *argv: str) -> Tuple[int, str, str]:
        """
        Run C{p2pshare --share SHARE ARGV...} to its end.
        """
        command = cli_command()
        out, err, code = await getProcessOutputAndValue(
            command[0], command[1:] + ["--share", node.share, *argv], env=os.environ,
            reactor=reactor)
        return code, out.decode(), err.decode()

    async def test_status_ls_rescan(self):
        """
        status --json gives the node's id; ls lists a file of the share;
        rescan finds a new one; a wrong key is refused in one line.
        """
        share = os.path.abspath(self.mktemp())
        os.makedirs(share)
        write(share, "hello.txt", b"hello\n")
        a = await self.web_node("A", share=share)

        code, out, err = await self.cli(a, "status", "--json")
        self.assertEqual((code, err), (0, ""))
        status = json.loads(out)
        self.assertEqual((status["id"], status["name"]), (a.node_id, "A"))

        code, out, err = await self.cli(a, "status")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("node A (", out)
        self.assertIn(f"127.0.0.1:{a.port}", out)

        code, out, err = await self.cli(a, "ls")
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(out, r"(?m)^hello\.txt +file +6 B ")

        write(share, "second.txt", b"two\n")
        code, out, err = await self.cli(a, "rescan")
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(out, r"^rescanned: [01] changes\n$")
        code, out, _ = await self.cli(a, "ls", "--json")
        self.assertEqual(sorted(e["path"] for e in json.loads(out)), ["hello.txt", "second.txt"])

        wrong = os.path.abspath(self.mktemp())
        with open(wrong, "w") as f:
            f.write("not-the-key\n")
        code, out, err = await self.cli(a, "--key-file", wrong, "peers")
        self.assertEqual((code, out), (4, ""))
        self.assertRegex(err, r"^p2pshare: the node at http://127\.0\.0\.1:\d+ refused the API"
                              r" key: .+\n$")

    async def test_no_node(self):
        """
        No node for the state directory, or one that has stopped: exit
        status 3 and one line saying how to start one.
        """
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        command = cli_command()
        out, err, code = await getProcessOutputAndValue(
            command[0], command[1:] + ["--share", empty, "status"], env=os.environ)
        self.assertEqual((code, out), (3, b""))
        self.assertEqual(err.decode(), f"p2pshare: no node running for state {empty}/.p2pshare"
                                       f" (start one with: twistd -n p2pshare --share {empty})\n")

        a = await self.web_node("A")
        code, _, err = await self.cli(a, "status")
        self.assertEqual((code, err), (0, ""))
        await self.terminate(a)
        code, out, err = await self.cli(a, "peers")
        self.assertEqual((code, out), (3, ""))
        self.assertRegex(err, r"^p2pshare: no node running .*\n$")

    async def test_watch_a_transfer(self):
        """
        watch --until-idle, into a pipe, prints the folder's state, then a
        line per progress event of a file moving from A to B, then B in
        sync, and exits 0.

        B is paused before A joins it, so nothing moves until watch has
        printed its first line and the test resumes B: the transfer cannot
        slip past the watch.  A caps its upload rate so that it takes a
        couple of seconds, and sends several progress events.
        """
        b = await self.web_node("B")
        code, _, err = await self.cli(b, "pause")
        self.assertEqual((code, err), (0, ""))
        share = os.path.abspath(self.mktemp())
        os.makedirs(share)
        data = os.urandom(5 * 1024 * 1024)
        write(share, "big.bin", data)
        a = await self.web_node("A", share=share, peers=[b.port], options=["--max-rate", "2M"])
        await self.connected_to(b, a)

        command = cli_command()
        argv = command + ["--share", b.share, "watch", "--until-idle"]
        watch = NodeProcess("watch", argv, b.share)
        reactor.spawnProcess(watch, argv[0], argv, env=dict(os.environ))
        self.addCleanup(self.stop_node, watch)
        await watch.wait_for(r"^folder paused: ", timeout=START_TIMEOUT)

        code, out, err = await self.cli(b, "resume")
        self.assertEqual((code, out, err), (0, "resumed\n", ""))
        await watch.wait_for(r"^folder in sync: ", timeout=WATCH_TIMEOUT)
        await watch.wait_exit()
        self.assertIsInstance(watch.reason, base.ProcessDone, watch.output())

        progress = watch.matching(
            r"^big\.bin +(?P<percent>\d+)% +[\d.]+ \w+ of 5\.0 MiB +[\d.]+ [KM]iB/s"
            r" +ETA \d:\d\d:\d\d +running from A$")
        self.assertGreaterEqual(len(progress), 2, watch.output())
        percents = [int(m.group("percent")) for m in progress]
        self.assertEqual(percents, sorted(percents), watch.output())
        self.assertTrue(watch.matching(r"^fetched big\.bin \(5\.0 MiB\) from A"), watch.output())
        self.assertEqual(watch.lines[-1], "folder in sync: 1 file, 5.0 MiB", watch.output())
        self.assertTrue(watch.matching(r"^resumed$"), watch.output())
        with open(os.path.join(b.share, "big.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
