"""
The web server of a node run by twistd: the default port, and the free
loopback port it falls back to when that one is taken (a second node on
the machine); C{STATE/web.json} for clients; and the start-up refusals,
each one line.
"""

import json
import os
import re

from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from . import test_twistd, test_twistd_startup
from .test_twistd import LOCALHOST
from .webclient import WebClient

WEB_UI = re.compile(r"web UI at (?P<url>http://127\.0\.0\.1:(?P<port>\d+))/$")


class DefaultPortTests(unittest.TestCase):
    timeout = 60

    # TwistdTests' helpers (not its tests).
    start_node = test_twistd.TwistdTests.start_node
    started = test_twistd.TwistdTests.started
    stop_node = test_twistd.TwistdTests.stop_node

    async def test_default_port_taken_falls_back(self):
        """
        With 8384 taken (here by this test; it may be another node), a node
        started without --web serves on another loopback port, says where,
        and tells clients in web.json; stopped, it removes web.json.
        """
        try:
            held = reactor.listenTCP(8384, Factory(), interface=LOCALHOST)
            self.addCleanup(held.stopListening)
        except CannotListenError:
            pass  # taken already: the same case
        node = await self.started(self.start_node("A", web=None))
        await node.wait_for("web port tcp:8384:interface=127.0.0.1 is taken")
        match = await node.wait_for(WEB_UI)
        self.assertNotEqual(match.group("port"), "8384")
        state = os.path.join(node.share, ".p2pshare")
        with open(os.path.join(state, "web.json")) as f:
            info = json.load(f)
        self.assertEqual(info["url"], match.group("url"))
        self.assertEqual(info["key_file"], os.path.join(state, "api-key"))
        with open(info["key_file"]) as f:
            key = f.read().strip()
        reply = await WebClient(info["url"], key).get("/api/status")
        self.assertEqual((reply.code, reply.json()["name"]), (200, "A"), reply)
        reply = await WebClient(info["url"]).get("/api/status")
        self.assertEqual(reply.code, 401)
        node.send_signal("TERM")
        await node.wait_exit()
        self.assertFalse(os.path.exists(os.path.join(state, "web.json")))

    async def test_no_web(self):
        node = await self.started(self.start_node("A", options=["--no-web"]))
        await node.wait_for("first scan")
        self.assertEqual(node.matching("web UI at"), [])
        self.assertFalse(os.path.exists(os.path.join(node.share, ".p2pshare", "web.json")))


class WebStartupTests(test_twistd_startup.StartupTestCase):
    async def test_explicit_port_in_use(self) -> None:
        port = self.held_port()
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}",
            "--web", f"tcp:{port}:interface={LOCALHOST}"))
        # (In the foreground: a daemon's parent exits as soon as the child
        # reports, a moment before the child removes its pidfile.)
        self.assert_failed_start(run, rf"cannot start: {LOCALHOST}:{port} \(--web\): Address"
                                      r" already in use$")

    async def test_key_file_open_to_others(self) -> None:
        state = os.path.join(self.root, "state")
        os.makedirs(state)
        key_file = os.path.join(state, "api-key")
        with open(key_file, "w") as f:
            f.write("k" * 43 + "\n")
        os.chmod(key_file, 0o644)
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}", "--state", state))
        self.assert_failed_start(run, rf"cannot start: the API key file {re.escape(key_file)}"
                                      r" is open to others \(mode 0644\); run chmod 600")

    async def test_beyond_loopback_without_tls(self) -> None:
        run = await self.twistd("-n", "--pidfile=", "p2pshare", "--share", self.share,
                                "--web", "tcp:8384:interface=0.0.0.0")
        self.assertEqual(run.exit_code, 1, run.text())
        self.assertEqual(run.err_lines, [
            "twistd p2pshare: --web tcp:8384:interface=0.0.0.0: listening beyond this"
            " machine needs TLS (an ssl: endpoint) and --web-password-file",
            "Run 'twistd p2pshare --help' for the options.",
        ], run.text())
