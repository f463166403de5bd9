"""
Tests for L{p2ptwisted.tap} (options and the service tree), the listener,
and the twistd dropin.
"""

import io
import os
import re
import sys

from twisted import copyright
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

import p2ptwisted
from p2ptwisted.identity import format_id
from p2ptwisted.limits import Limits
from p2ptwisted.node import Node
from p2ptwisted.tap import Options, makeService

from .helpers import capture_logs


def parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["listen"], "tcp:12345")
        self.assertEqual(options["share"], os.path.expanduser("~/P2PShare"))
        self.assertEqual(options["state"], os.path.join(options["share"], ".p2pshare"))
        self.assertEqual(options["peers"], [])
        self.assertTrue(options["name"])

    def test_port_number(self):
        self.assertEqual(parse("--port", "4000")["listen"], "tcp:4000")
        self.assertEqual(parse("-p", "0")["listen"], "tcp:0")

    def test_port_endpoint(self):
        desc = "tcp:4000:interface=127.0.0.1"
        self.assertEqual(parse("--port", desc)["listen"], desc)

    def test_bad_port(self):
        for bad in ["abc", "70000", "nope:1", ""]:
            e = self.assertRaises(usage.UsageError, parse, "--port", bad)
            self.assertIn("--port", str(e))

    def test_port_out_of_range(self):
        """
        A negative or too large number is called what it is, not an
        unknown endpoint type.
        """
        for bad in ["-1", "70000", "+99999"]:
            e = self.assertRaises(usage.UsageError, parse, "--port", bad)
            self.assertEqual(str(e), f"--port {bad}: not a port number (0 to 65535)")

    def test_port_must_be_tcp(self):
        """
        Peers reach a node at the TCP port it announces: a UNIX socket is
        refused in one line; tcp6 is fine.
        """
        e = self.assertRaises(usage.UsageError, parse, "--port", "unix:/tmp/p2p.sock")
        self.assertIn("--port 'unix:/tmp/p2p.sock': peers reach a node at a TCP port", str(e))
        self.assertEqual(parse("--port", "tcp6:0")["listen"], "tcp6:0")

    def test_numbers_name_their_option(self):
        for option in ["--max-connections", "--max-per-address", "--keep-versions",
                       "--keep-deletions"]:
            e = self.assertRaises(usage.UsageError, parse, option, "ten")
            self.assertEqual(str(e), f"{option} 'ten': not a whole number")

    def test_peers_repeatable(self):
        options = parse("--peer", "10.0.0.1:12345", "-P", "tcp:host=h:port=1",
                        "--peer", "[::1]:5")
        self.assertEqual(options["peers"], ["10.0.0.1:12345", "tcp:host=h:port=1", "[::1]:5"])

    def test_bad_peer(self):
        e = self.assertRaises(usage.UsageError, parse, "--peer", "bogus:x=1")
        self.assertIn("--peer 'bogus:x=1'", str(e))
        self.assertRaises(usage.UsageError, parse, "--peer", "nocolon")

    def test_peer_mistakes_explained(self):
        """
        A forgotten port, a port out of range, an IPv6 address without
        brackets: each is said as such, not "Unknown endpoint type".
        """
        for bad, text in [
            ("10.0.0.2", "no port: give HOST:PORT, e.g. 10.0.0.2:12345"),
            ("laptop.local", "no port: give HOST:PORT, e.g. laptop.local:12345"),
            ("10.0.0.2:99999", "port 99999 is not a port number (1 to 65535)"),
            ("10.0.0.2:0", "port 0 is not a port number (1 to 65535)"),
            ("fe80::1:12345", "an IPv6 address needs brackets: [fe80::1]:12345"),
            ("laptop:http", "'http' is not a port number: give HOST:PORT"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--peer", bad)
            self.assertEqual(str(e), f"--peer {bad!r}: {text}")

    def test_share_and_state(self):
        share = os.path.abspath(self.mktemp())
        options = parse("--share", share)
        self.assertEqual(options["state"], os.path.join(share, ".p2pshare"))
        state = os.path.abspath(self.mktemp())
        self.assertEqual(parse("--share", share, "--state", state)["state"], state)

    def test_share_not_a_directory(self):
        path = self.mktemp()
        with open(path, "w"):
            pass
        e = self.assertRaises(usage.UsageError, parse, "--share", path)
        self.assertIn("not a directory", str(e))

    def test_directory_under_a_file(self):
        """
        A share or state directory that could only be made inside a file is
        refused while parsing, before twistd daemonizes.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w"):
            pass
        for option in ["--share", "--state"]:
            below = os.path.join(path, "a", "b")
            e = self.assertRaises(usage.UsageError, parse, option, below)
            self.assertEqual(str(e), f"{option} {below}: cannot be created,"
                                     f" {path} is not a directory")

    def test_help_is_plain_text(self):
        """
        --help has no runs of spaces inside its sentences (docstrings'
        line breaks and indentation).
        """
        for line in str(Options()).splitlines():
            text = line.strip()
            if text.startswith("-"):
                text = re.split(r"\s{2,}", text, maxsplit=1)[-1]
            self.assertNotRegex(text, r"\S\s{2,}\S", line)

    def test_version(self):
        """
        --version names p2ptwisted and its version, then Twisted's.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, parse, "--version")
        self.assertIn(e.code, (None, 0))
        self.assertEqual(out.getvalue(),
                         f"p2ptwisted {p2ptwisted.__version__} (Twisted {copyright.version})\n")

    def test_name(self):
        self.assertEqual(parse("--name", "Zoë's laptop")["name"], "Zoë's laptop")
        self.assertRaises(usage.UsageError, parse, "--name", "x" * 65)
        self.assertRaises(usage.UsageError, parse, "--name", "two\nlines")


class SecurityOptionsTests(SynchronousTestCase):
    node_id = "0123456789abcdef" * 4

    def test_allow_and_trust(self):
        """
        --allow takes ids in any usual spelling; --trust files add to them;
        the node gets the union.
        """
        other = "fedcba9876543210" * 4
        trust = self.mktemp()
        with open(trust, "w") as f:
            f.write(f"{other} nas\n")
        share = self.mktemp()
        options = parse("--share", share, "--allow", format_id(self.node_id), "--trust", trust)
        node = makeService(options, reactor=MemoryReactorClock()).getServiceNamed("node")
        self.assertEqual(node.allow, {self.node_id, other})
        self.assertTrue(node.tls)

    def test_bad_values_are_usage_errors(self):
        missing = self.mktemp()
        empty = self.mktemp()
        with open(empty, "w") as f:
            f.write("# nobody yet\n\n")
        for args, text in [
            (["--allow", "laptop"], "not a node id"),
            (["--trust", missing], "--trust"),
            (["--trust", empty], "list no ids"),
            (["--no-tls", "--allow", self.node_id], "need TLS"),
            (["--no-tls", "--peer", f"{self.node_id}@10.0.0.9:12345"], "need TLS"),
            (["--peer", f"{self.node_id[:-1]}@10.0.0.9:12345"], "not a node id"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--share", self.mktemp(), *args)
            self.assertIn(text, str(e))

    def test_limits(self):
        """
        --limit NAME=VALUE changes one limit and leaves the others at their
        defaults; nonsense is a usage error naming the item.
        """
        options = parse("--share", self.mktemp(), "--limit", "handshake_timeout=5",
                        "--limit", "uploads-per-peer=8")
        node = makeService(options, reactor=MemoryReactorClock()).getServiceNamed("node")
        self.assertEqual(node.limits, Limits(handshake_timeout=5.0, uploads_per_peer=8))
        for bad, text in [("nonsense", "NAME=VALUE"), ("idle_timeout=x", "not a number"),
                          ("ping_interval=-1", "positive"),
                          ("idle_timeout=10", "longer than ping_interval"),
                          ("gossip_entries=1000", "at most 64")]:
            e = self.assertRaises(usage.UsageError, parse, "--share", self.mktemp(),
                                  "--limit", bad)
            self.assertIn(text, str(e))

    def test_no_tls(self):
        node = makeService(parse("--share", self.mktemp(), "--no-tls"),
                           reactor=MemoryReactorClock()).getServiceNamed("node")
        self.assertFalse(node.tls)
        self.assertIsNone(node.allow)

    def test_peer_with_expected_id(self):
        """
        --peer ID@host:port dials host:port and requires that node there.
        """
        options = parse("--share", self.mktemp(), "--peer", f"{self.node_id}@10.0.0.9:12345")
        node = makeService(options, reactor=MemoryReactorClock()).getServiceNamed("node")
        [entry] = list(node.book)
        self.assertEqual(entry.key, "10.0.0.9:12345")
        self.assertEqual(entry.expected_id, self.node_id)


class SyncOptionsTests(SynchronousTestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual((options["mode"], options["keep-versions"], options["keep-deletions"]),
                         ("send-receive", 30, 180))

    def test_values_reach_the_folder(self):
        """
        --mode, --keep-versions and --keep-deletions reach the running
        folder: its mode, its trash can's keep-days, its deletion lifetime.
        """
        memory = MemoryReactorClock()
        service = makeService(parse("--port", "tcp:4001:interface=127.0.0.1",
                                    "--share", self.mktemp(), "--mode", "receive-only",
                                    "--keep-versions", "0", "--keep-deletions", "7"),
                              reactor=memory, quiet=False)
        service.startService()
        self.addCleanup(service.stopService)
        folder = service.getServiceNamed("node").folder
        self.assertEqual(folder.mode, "receive-only")
        self.assertEqual(folder.disk.keep_days, 0)
        self.assertEqual(folder.deletion_lifetime, 7 * 24 * 3600)

    def test_no_sync_is_send_only(self):
        self.assertEqual(parse("--no-sync")["mode"], "send-only")

    def test_bad_values_are_usage_errors(self):
        for args, text in ((["--mode", "mirror"], "--mode mirror: not one of send-receive"),
                           (["--keep-versions", "-1"], "--keep-versions: days cannot be"),
                           (["--keep-deletions", "0"], "--keep-deletions: at least 1 day")):
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertIn(text, str(e))


class MakeServiceTests(SynchronousTestCase):
    def test_service_tree(self):
        share = self.mktemp()
        memory = MemoryReactorClock()
        service = makeService(
            parse("--port", "tcp:4000:interface=127.0.0.1", "--share", share,
                  "--name", "n", "--peer", "10.0.0.9:12345", "--no-web"),
            reactor=memory, quiet=False,
        )
        node = service.getServiceNamed("node")
        self.assertIsInstance(node, Node)
        self.assertIs(service.getServiceNamed("listener").node, node)
        self.assertEqual([e.key for e in node.book], ["10.0.0.9:12345"])
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, backlog, interface)] = memory.tcpServers
        self.assertEqual((port, interface), (4000, "127.0.0.1"))
        # TLS by default: the one peer factory, behind TLS.
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory, node.factory)
        self.assertEqual(node.listen_ports, [4000])
        self.assertTrue(os.path.isdir(share))
        memory.advance(0)
        self.assertEqual(memory.tcpClients[0][:2], ("10.0.0.9", 12345))


class StartupFailureTests(TestCase):
    async def test_port_in_use(self):
        """
        A port already in use stops start-up: one clear log line and
        SystemExit, and the state directory is free again.
        """
        logs = capture_logs(self)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        share = self.mktemp()
        service = makeService(
            parse("--port", f"tcp:{number}:interface=127.0.0.1", "--share", share),
            reactor=reactor, quiet=False,
        )
        e = self.assertRaises(SystemExit, service.startService)
        # An Exception too, so that twistd reports it to a daemon's parent.
        self.assertIsInstance(e, Exception)
        self.assertEqual(e.code, 1)
        self.assertEqual(str(e), f"127.0.0.1:{number} (--port): Address already in use")
        [line] = [l for l in logs() if l.startswith("cannot start")]
        self.assertIn(f"127.0.0.1:{number}", line)
        self.assertIn("Address already in use", line)

    def test_state_in_use(self):
        logs = capture_logs(self)
        share = self.mktemp()
        first = makeService(parse("--port", "tcp:0:interface=127.0.0.1", "--share", share),
                            reactor=reactor, quiet=False)
        first.startService()
        self.addCleanup(first.stopService)
        second = makeService(parse("--port", "tcp:0:interface=127.0.0.1", "--share", share),
                             reactor=reactor, quiet=False)
        self.assertRaises(SystemExit, second.startService)
        [line] = [l for l in logs() if l.startswith("cannot start")]
        self.assertIn("in use by another node", line)


class PluginTests(SynchronousTestCase):
    def test_dropin_found(self):
        """
        twistd finds the p2pshare subcommand, and it points at our tap.
        """
        [maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "p2pshare"]
        self.assertIs(maker.options, Options)

    def test_no_init_under_twisted(self):
        """
        Our twisted/ and twisted/plugins/ must not be packages: an
        __init__.py there would shadow Twisted's own.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for sub in ("twisted", os.path.join("twisted", "plugins")):
            self.assertFalse(os.path.exists(os.path.join(root, sub, "__init__.py")))


class HandshakeLimitOptionTests(SynchronousTestCase):
    def test_max_handshakes(self):
        """
        --max-handshakes (issue 11 point 6) reaches the node; it defaults to
        the node's MAX_HANDSHAKES and must be at least 1.
        """
        from p2ptwisted.connections import MAX_HANDSHAKES

        def node_for(*args):
            options = Options()
            options.parseOptions(["--share", self.mktemp(), "--no-discover", *args])
            return makeService(options, reactor=MemoryReactorClock()).getServiceNamed("node")

        self.assertEqual(node_for().max_handshakes, MAX_HANDSHAKES)
        self.assertEqual(node_for("--max-handshakes", "5").max_handshakes, 5)
        options = Options()
        e = self.assertRaises(usage.UsageError, options.parseOptions,
                              ["--share", self.mktemp(), "--max-handshakes", "0"])
        self.assertIn("--max-handshakes: at least 1", str(e))
