"""
Adversarial suite, family "Control surfaces" of threats.md, its manhole
half: "The manhole is a Python shell: off by default, loopback by default,
public-key authentication only, host key not world-readable, never a
password file default."

Real C{twistd -n p2pshare} processes, checked from the outside: the
sockets the process really listens on (from /proc), a raw SSH client
(Conch's, driven message by message) trying passwords, file modes on disk,
and what twistd prints when the manhole cannot be set up.  These go beyond
L{tests.test_manhole}, which checks the options in process, logs in with
OpenSSH, and refuses a wrong key and OpenSSH's password attempt.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Set, Tuple

from twisted.conch.ssh import common, connection, transport, userauth
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

# Modules, not classes: trial would collect and run their tests again here.
from . import test_manhole as manhole_base
from . import test_twistd as base
from . import test_twistd_files as files_base
from .test_twistd import EVENT_TIMEOUT, free_port

#: The manhole's host key in the state directory (p2ptwisted.manhole).
HOST_KEY_FILE = "manhole_host_key"


async def web_port(node) -> int:
    """
    The port of the node's web page, as it logs it (on loopback).
    """
    match = await node.wait_for(r"web UI at http://127\.0\.0\.1:(?P<port>\d+)/$")
    return int(match.group("port"))


def listening_sockets(pid: int) -> Set[Tuple[str, int]]:
    """
    The TCP sockets process C{pid} listens on, as (address, port): its open
    socket inodes matched against the kernel's tables (IPv4 and IPv6).
    """
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


class _Transport(transport.SSHClientTransport):
    """
    An SSH client transport that accepts any host key (the test asks
    nothing of the server but how it answers authentication), then starts
    the factory's user-auth probe.
    """

    def verifyHostKey(self, hostKey, fingerprint):
        return succeed(True)

    def connectionSecure(self):
        self.requestService(self.probe)

    def connectionLost(self, reason):
        transport.SSHClientTransport.connectionLost(self, reason)
        if not self.probe.done.called:
            self.probe.done.errback(AssertionError(f"connection lost first: {reason.value}"))


class _AuthProbe(userauth.SSHUserAuthClient):
    """
    Asks with method "none" (the server answers with the methods that can
    continue), then tries a password and then keyboard-interactive whatever
    the server said, and records each answer.  A server that logs us in,
    or asks for a password or a keyboard-interactive answer, is recorded.
    """

    def __init__(self):
        userauth.SSHUserAuthClient.__init__(self, b"root", connection.SSHConnection())
        self.done: Deferred = Deferred()
        self.answers = []
        self.prompts = []

    def ssh_USERAUTH_FAILURE(self, packet):
        methods, rest = common.getNS(packet)
        self.answers.append((self.lastAuth, methods.split(b","), rest[0:1] == b"\x01"))
        if len(self.answers) == 1:
            self.askForAuth(b"password", b"\x00" + common.NS(b"hunter2"))
        elif len(self.answers) == 2:
            self.askForAuth(b"keyboard-interactive", common.NS(b"") + common.NS(b""))
        else:
            self.done.callback(self.answers)
            self.transport.loseConnection()

    def ssh_USERAUTH_SUCCESS(self, packet):
        if not self.done.called:
            self.done.errback(AssertionError(f"logged in with {self.lastAuth!r}"))
        self.transport.loseConnection()

    def ssh_USERAUTH_PK_OK(self, packet):
        # Number 60: a password-change request or a keyboard-interactive
        # prompt, depending on the method tried.
        self.prompts.append(self.lastAuth)
        if not self.done.called:
            self.done.errback(AssertionError(f"the server prompted for {self.lastAuth!r}"))
        self.transport.loseConnection()


class ManholeSurfaceTests(manhole_base.ManholeTestCase):
    """
    The manhole is off unless asked for, on loopback when asked for with a
    bare port, and takes public keys only.
    """

    timeout = 60

    async def test_no_manhole_by_default(self) -> None:
        """
        A node started without --manhole listens on its peer port and its
        web page's loopback port and on nothing else (no SSH server on any
        address), and never loads the manhole (no host key is made).
        """
        share = os.path.abspath(self.mktemp())
        node = await self.started(self.start_node("A", share))
        web = await web_port(node)  # (once it listens)
        self.assertEqual(listening_sockets(node.transport.pid),
                         {(base.LOCALHOST, node.port), (base.LOCALHOST, web)}, node.output())
        self.assertFalse(os.path.exists(
            os.path.join(share, files_base.RESERVED_PREFIX, HOST_KEY_FILE)))
        self.assertEqual(node.matching(r"ConchFactory|SSHFactory|manhole host key", 0), [],
                         node.output())

    async def test_bare_port_binds_loopback_only(self) -> None:
        """
        C{--manhole PORT} (a bare number) makes the process listen on
        127.0.0.1:PORT -- not 0.0.0.0, not ::, not any other address -- as
        the kernel reports the process's listening sockets.
        """
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        node = await self.started(self.start_manhole_node("A", share, manhole_port))
        await node.wait_for(rf"\b{manhole_port}\b")  # Conch's "starting on PORT" line
        web = await web_port(node)
        self.assertEqual(
            listening_sockets(node.transport.pid),
            {(base.LOCALHOST, node.port), (base.LOCALHOST, manhole_port), (base.LOCALHOST, web)},
            node.output(),
        )

    async def test_password_methods_refused_at_protocol_level(self) -> None:
        """
        Speaking SSH directly: the server's list of methods that can
        continue is "publickey" alone; a password sent anyway and a
        keyboard-interactive request are both answered with a plain
        failure (no prompt, no password change request, no login), and
        the node logs no login and no error.
        """
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        node = await self.started(self.start_manhole_node("A", share, manhole_port))
        await node.wait_for(rf"\b{manhole_port}\b")
        mark = node.mark()
        client = _Transport()
        client.probe = _AuthProbe()
        endpoint = TCP4ClientEndpoint(reactor, base.LOCALHOST, manhole_port, timeout=5)
        await connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.transport.connected and client.transport.abortConnection())
        answers = await client.probe.done.addTimeout(EVENT_TIMEOUT, reactor)
        self.assertEqual(answers, [
            (b"none", [b"publickey"], False),
            (b"password", [b"publickey"], False),
            (b"keyboard-interactive", [b"publickey"], False),
        ])
        self.assertEqual(client.probe.prompts, [])
        self.assertEqual(node.matching(r"authenticated with|Traceback|Unhandled", mark), [],
                         node.output(mark))
        self.assertTrue(node.running)

    async def test_keys_not_world_readable_and_restored(self) -> None:
        """
        The manhole host key and the node's TLS key are 0600 in a 0700
        state directory.  Made world-readable (0644) while the node is
        stopped, both are back at 0600 after a restart, the manhole one
        with one warning line naming it, and the host key is unchanged.
        (tests.test_manhole checks a group-readable 0640 host key only.)
        """
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        a = await self.started(self.start_manhole_node("A", share, manhole_port))
        state = os.path.join(share, files_base.RESERVED_PREFIX)
        host_key = os.path.join(state, HOST_KEY_FILE)
        tls_key = os.path.join(state, "node.key")
        await a.wait_for(r"created manhole host key")
        mode = lambda path: oct(stat.S_IMODE(os.stat(path).st_mode))  # noqa: E731
        self.assertEqual(mode(state), oct(0o700))
        self.assertEqual(mode(host_key), oct(0o600))
        self.assertEqual(mode(tls_key), oct(0o600))
        with open(host_key, "rb") as f:
            key = f.read()
        # twistd starts the services before the reactor runs and installs
        # its SIGTERM handler; an answered SSH connection shows the reactor
        # is running.
        await self.keyscan(manhole_port)
        await self.terminate(a)

        os.chmod(host_key, 0o644)
        os.chmod(tls_key, 0o644)
        a2 = await self.started(self.start_manhole_node("A", share, manhole_port))
        self.assertEqual(a2.node_id, a.node_id)
        await a2.wait_for(rf"\b{manhole_port}\b")
        self.assertEqual(mode(host_key), oct(0o600))
        self.assertEqual(mode(tls_key), oct(0o600))
        warned = a2.matching(r"manhole host key (\S+) was readable by others; made it 0600")
        self.assertEqual([m.group(1) for m in warned], [host_key], a2.output())
        with open(host_key, "rb") as f:
            self.assertTrue(f.read() == key, "the host key changed")
        self.assertEqual(a2.matching(r"created manhole host key"), [], a2.output())


class ManholeStartupTests(manhole_base.ManholeTestCase):
    """
    A manhole nobody could log into is not started, and neither is the
    node: twistd exits non-zero with one clear line.
    """

    timeout = 60

    async def refused_start(self, share: str, options) -> base.NodeProcess:
        env_home = os.path.abspath(self.mktemp())
        os.makedirs(env_home)
        old = os.environ.get("HOME")
        # The child inherits HOME: an empty one, so ~/.ssh/authorized_keys
        # (the default keys file) does not exist.
        os.environ["HOME"] = env_home
        try:
            node = self.start_node("A", share, options=options)
        finally:
            if old is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = old
        reason = await node.wait_exit()
        self.assertEqual(node.exit_code, 1, f"{reason}\n{node.output()}")
        self.assertEqual(node.matching(r"listening for peers|starting;"), [], node.output())
        self.assertFalse(os.path.exists(os.path.join(share, files_base.RESERVED_PREFIX,
                                                     HOST_KEY_FILE)))
        return node

    async def test_manhole_without_keys_refuses_to_start(self) -> None:
        """
        C{--manhole PORT} with no --manhole-keys and no
        ~/.ssh/authorized_keys: the process exits 1 before listening
        anywhere, with one line saying what to do, and no traceback.
        """
        share = os.path.abspath(self.mktemp())
        node = await self.refused_start(share, ["--manhole", str(free_port())])
        lines = node.matching(r"--manhole needs public keys to let you in, and \S+ does not"
                              r" exist: pass --manhole-keys FILE")
        self.assertEqual(len(lines), 1, node.output())
        self.assertEqual(node.matching(r"Traceback"), [], node.output())

    async def test_manhole_keys_without_keys_refuses_to_start(self) -> None:
        """
        C{--manhole-keys FILE} naming a file with no usable key (comments
        and junk only): the process exits 1 before listening, with one
        line naming the file, and no traceback.
        """
        share = os.path.abspath(self.mktemp())
        keys = os.path.abspath(self.mktemp())
        with open(keys, "w") as f:
            f.write("# nobody yet\n\nnot a key\n")
        node = await self.refused_start(share, ["--manhole", str(free_port()),
                                                "--manhole-keys", keys])
        lines = node.matching(rf"{keys} holds no usable public keys")
        self.assertEqual(len(lines), 1, node.output())
        self.assertEqual(node.matching(r"Traceback"), [], node.output())
