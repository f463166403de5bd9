# -*- test-case-name: tests.test_manhole -*-
"""
End-to-end tests of the SSH manhole: real C{twistd -n p2pshare --manhole}
processes, logged into with the system's own C{ssh} client, plus the
C{--manhole} options.

The ssh client is driven like the nodes in L{tests.test_twistd}: spawned
with C{reactor.spawnProcess}, its output collected by a L{SSHClient}, and
the next command written only once the prompt (or the awaited output) has
appeared.  Nothing sleeps; every wait is bounded, and every process a test
starts is stopped and reaped in its clean-up.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from typing import Callable, List, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial import unittest

import p2ptwisted
from p2ptwisted.tap import Options

# Modules, not classes: trial collects every TestCase in this module's
# namespace, and importing one by name would run its tests again here.
from . import test_twistd as base
from . import test_twistd_files as files_base
from .test_twistd import EVENT_TIMEOUT, LOCALHOST, NodeProcess, WaitTimeout, free_port

SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen")
SSH_KEYSCAN = shutil.which("ssh-keyscan")
MISSING = [name for name, path in [("ssh", shutil.which("ssh")), ("ssh-keygen", SSH_KEYGEN),
                                   ("ssh-keyscan", SSH_KEYSCAN)] if path is None]

#: Seconds for an ssh client to log in, answer a command, or exit.
SSH_TIMEOUT = EVENT_TIMEOUT

#: The manhole's prompt (twisted.conch.manhole), at the end of the output
#: once a command has been answered.
PROMPT = ">>> "

#: Terminal control sequences the manhole writes: CSI sequences (colours,
#: cursor moves, erase) and two-byte escapes such as ESC c (reset).
ESCAPES = re.compile(rb"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])")

#: The host key file in the node's state directory (p2ptwisted.manhole).
HOST_KEY_FILE = "manhole_host_key"

#: A Ctrl-D keystroke: at an empty prompt the manhole ends the session.
CTRL_D = b"\x04"


def clean(raw: bytes) -> str:
    """
    Terminal output as text: escape sequences removed.
    """
    return ESCAPES.sub(b"", raw).decode("utf-8", "replace")


def make_key_pair(directory: str, name: str) -> str:
    """
    Make an unencrypted ed25519 key pair with ssh-keygen; return the
    private key's path (the public key is next to it, with ".pub").
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", path],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    return path


def public_key_blob(line: str) -> str:
    """
    The base64 key of an OpenSSH public key line ("[host]:port ssh-ed25519
    AAAA..." from ssh-keyscan, or "ssh-ed25519 AAAA... comment").
    """
    fields = line.split()
    index = fields.index("ssh-ed25519")
    return fields[index + 1]


def key_fingerprint(private_key: str) -> str:
    """
    The SHA256 fingerprint of a key pair's public key, as ssh-keygen -l
    prints it.
    """
    done = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", private_key + ".pub"],
                          check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    return done.stdout.split()[1]


def errors_logged(node: NodeProcess, since: int = 0) -> List[str]:
    """
    The lines C{node} logged since line C{since} that report an unhandled
    error or start a traceback.
    """
    return [m.string for m in node.matching(r"Unhandled Error|Traceback", since)]


class SSHClient(ProcessProtocol):
    """
    One ssh (or ssh-keyscan) child: its output, and Deferreds that fire
    when the output satisfies a condition or the child exits.

    @ivar raw: everything it wrote to stdout, escape codes and all.
    @ivar err: everything it wrote to stderr.
    @ivar reason: what C{processEnded} reported, once it exited.
    """

    def __init__(self, what: str):
        self.what = what
        self.raw = b""
        self.err = b""
        self.reason: Optional[BaseException] = None
        self._waiters: List[tuple] = []
        self._exit_waiters: List[Deferred] = []

    # -- ProcessProtocol -------------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        self.raw += data
        for waiter in list(self._waiters):
            since, condition, d = waiter
            result = condition(clean(self.raw[since:]))
            if result is not None:
                self._waiters.remove(waiter)
                d.callback(result)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason.value
        waiters, self._waiters = self._waiters, []
        for _, _, d in waiters:
            d.errback(unittest.FailTest(f"{self.what} exited ({self.reason}) first\n"
                                        f"{self.transcript()}"))
        exit_waiters, self._exit_waiters = self._exit_waiters, []
        for d in exit_waiters:
            d.callback(self.reason)

    # -- for tests ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.reason is None

    @property
    def exit_code(self) -> Optional[int]:
        return getattr(self.reason, "exitCode", None)

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    def transcript(self) -> str:
        return (f"--- {self.what} stdout:\n{clean(self.raw)}\n"
                f"--- {self.what} stderr:\n{self.stderr}")

    def wait_output(self, condition: Callable[[str], object], since: int = 0,
                    timeout: float = SSH_TIMEOUT, what: str = "the expected output") -> Deferred:
        """
        Fire with C{condition(text)}, C{text} being the cleaned output from
        byte C{since} on, once that is not C{None}; fail after C{timeout}
        seconds or if the client exits first.
        """
        result = condition(clean(self.raw[since:]))
        if result is not None:
            return succeed(result)
        if not self.running:
            return fail(unittest.FailTest(
                f"{self.what} has exited ({self.reason}) without {what}\n{self.transcript()}"))

        def cancel(d: Deferred) -> None:
            self._waiters[:] = [w for w in self._waiters if w[2] is not d]

        d = Deferred(cancel)
        self._waiters.append((since, condition, d))

        def timed_out(result, timeout):
            raise WaitTimeout(f"{self.what} showed no {what} within {timeout:g}s\n"
                              f"{self.transcript()}")

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    def wait_exit(self, timeout: float = SSH_TIMEOUT) -> Deferred:
        if not self.running:
            return succeed(self.reason)

        def cancel(d: Deferred) -> None:
            if d in self._exit_waiters:
                self._exit_waiters.remove(d)

        d = Deferred(cancel)
        self._exit_waiters.append(d)

        def timed_out(result, timeout):
            raise WaitTimeout(f"{self.what} did not exit within {timeout:g}s\n"
                              f"{self.transcript()}")

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    async def prompt(self) -> None:
        """
        Wait for the first prompt after logging in.
        """
        await self.wait_output(lambda text: True if text.endswith(PROMPT) else None,
                               what="prompt")

    async def command(self, line: str) -> str:
        """
        Type C{line} and Enter at the prompt; return what the manhole
        printed in answer, once the next prompt appears, with line ends
        normalised to "\\n".

        The manhole echoes keystrokes by redrawing the input line (no line
        break) until Enter, which it answers with a line break: the answer
        is what lies between that first line break and the new prompt.
        """
        since = len(self.raw)
        self.transport.write(line.encode() + b"\r")

        def answered(text: str) -> Optional[str]:
            if not text.endswith(PROMPT) or "\n" not in text:
                return None
            answer = text[text.index("\n") + 1:-len(PROMPT)]
            return answer.replace("\r\n", "\n")

        return await self.wait_output(answered, since, what=f"answer to {line!r} and a prompt")

    async def stop(self) -> None:
        """
        Stop the child if it still runs (SIGTERM, then SIGKILL), and reap it.
        """
        if not self.running:
            return
        for signal in ("TERM", "KILL"):
            try:
                self.transport.signalProcess(signal)
            except ProcessExitedAlready:
                pass
            try:
                await self.wait_exit()
                return
            except WaitTimeout:
                if signal == "KILL":
                    raise


class ManholeTestCase(unittest.TestCase):
    """
    Real nodes with a manhole, and the system ssh client to log in.
    """

    timeout = 60

    if MISSING:
        skip = f"needs OpenSSH's {', '.join(MISSING)}"

    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    terminate = base.TwistdTests.terminate
    connected_to = base.TwistdTests.connected_to
    left = base.TwistdTests.left
    start_node = files_base.FileNodeTestCase.start_node
    in_step = files_base.FileNodeTestCase.in_step

    def setUp(self) -> None:
        self.keys_dir = os.path.abspath(self.mktemp())
        self.key = make_key_pair(self.keys_dir, "operator")
        self.authorized_keys = os.path.join(self.keys_dir, "authorized_keys")
        shutil.copyfile(self.key + ".pub", self.authorized_keys)
        # The ssh clients' HOME: nothing of the real user's ~/.ssh is used.
        self.home = os.path.join(self.keys_dir, "home")
        os.makedirs(self.home)

    def start_manhole_node(self, name: str, share: str, manhole_port: int,
                           peers: Sequence[NodeProcess] = (),
                           options: Sequence[str] = ()) -> NodeProcess:
        return self.start_node(
            name, share, peers=peers,
            options=["--manhole", str(manhole_port), "--manhole-keys", self.authorized_keys,
                     *options],
        )

    def spawn_ssh(self, what: str, args: Sequence[str], program: str = SSH) -> SSHClient:
        """
        Spawn C{program args...}; it is stopped and reaped at clean-up.
        """
        client = SSHClient(what)
        env = {key: value for key, value in os.environ.items() if key != "SSH_AUTH_SOCK"}
        env.update(HOME=self.home, TERM="xterm")
        argv = [program, *args]
        reactor.spawnProcess(client, program, argv, env=env)
        self.addCleanup(client.stop)
        return client

    def ssh_args(self, port: int, *options: str, key: Optional[str] = None) -> List[str]:
        args = ["-F", "/dev/null", "-p", str(port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"]
        if key is not None:
            args += ["-i", key]
        return args + list(options) + [f"admin@{LOCALHOST}"]

    async def log_in(self, port: int, key: Optional[str] = None) -> SSHClient:
        """
        Log into the manhole on C{port} with a forced terminal, as an
        operator would, and wait for the prompt.
        """
        client = self.spawn_ssh(f"ssh to manhole port {port}",
                                self.ssh_args(port, "-tt", key=key or self.key))
        await client.prompt()
        return client

    async def log_out(self, client: SSHClient) -> None:
        """
        Ctrl-D at the empty prompt, and wait for ssh to exit: with status
        0, as after a shell (the session sends an exit status).
        """
        client.transport.write(CTRL_D)
        await client.wait_exit()
        self.assertEqual(client.exit_code, 0, client.transcript())

    async def refused(self, port: int, *options: str, key: Optional[str] = None) -> SSHClient:
        """
        Try to log in with C{options}; wait for ssh to give up.
        """
        client = self.spawn_ssh(f"ssh {' '.join(options)}",
                                self.ssh_args(port, "-T", *options, key=key))
        client.transport.closeStdin()
        await client.wait_exit()
        return client

    async def keyscan(self, port: int) -> str:
        """
        The ed25519 host key the server on C{port} offers, per ssh-keyscan.
        """
        client = self.spawn_ssh(
            f"ssh-keyscan port {port}",
            ["-T", "5", "-t", "ed25519", "-p", str(port), LOCALHOST], program=SSH_KEYSCAN,
        )
        client.transport.closeStdin()
        await client.wait_exit()
        lines = [l for l in clean(client.raw).splitlines() if "ssh-ed25519" in l]
        self.assertEqual(len(lines), 1, client.transcript())
        return public_key_blob(lines[0])

    async def still_serves(self, node: NodeProcess, port: int, expect: str) -> None:
        """
        C{node} still runs and a fresh manhole session answers C{peers()}
        with text containing C{expect}.
        """
        self.assertTrue(node.running, node.output())
        session = await self.log_in(port)
        answer = await session.command("peers()")
        self.assertIn(expect, answer, session.transcript())
        await self.log_out(session)


#: What the manhole prints for a Deferred that has not fired yet, and the
#: line it prints later when it fires (twisted.conch.manhole).
PENDING = re.compile(r"^<Deferred #(?P<n>\d+)>(\r?\n|$)")
FIRED = r"Deferred #{n} (?P<outcome>called back|failed): (?P<result>.*?)\r?\n"


class ManholeSessionTests(ManholeTestCase):
    async def result_of(self, session: SSHClient, line: str) -> str:
        """
        Type C{line}, whose value is a Deferred; wait for the manhole to
        say it fired, and return the repr of its result (failing the test
        if it failed).
        """
        since = len(session.raw)
        answer = (await session.command(line)).strip()
        done = re.match(r"<Deferred at 0x[0-9a-f]+ current result: (?P<result>.*)>$", answer)
        if done is not None:  # it had fired already
            return done.group("result")
        pending = PENDING.match(answer)
        self.assertIsNotNone(pending, f"{line} gave {answer!r}\n{session.transcript()}")
        fired = re.compile(FIRED.format(n=pending.group("n")))
        match = await session.wait_output(lambda text: fired.search(text), since,
                                          what=f"the result of {line}")
        self.assertEqual(match.group("outcome"), "called back", session.transcript())
        return match.group("result")

    async def in_step_here(self, session: SSHClient) -> None:
        """
        Wait, through the prompt, until the node's folder is in step.
        """
        since = len(session.raw)
        answer = (await session.command("node.folder.when(node.folder.in_sync)")).strip()
        pending = PENDING.match(answer)
        if pending is None:
            self.assertIn("current result: None", answer, session.transcript())
            return
        fired = re.compile(FIRED.format(n=pending.group("n")))
        await session.wait_output(lambda text: fired.search(text), since,
                                  what="the folder in step")

    async def test_operator_session(self) -> None:
        """
        An operator logs into A's manhole with the real ssh client, sees A
        and its peer B in C{status()}, C{peers()} and C{doctor()}, drops B
        and connects to it again, survives an exception at the prompt, and
        logs out with Ctrl-D; A keeps running and logs no error for any of
        it.
        """
        share_a = os.path.abspath(self.mktemp())
        share_b = os.path.abspath(self.mktemp())
        manhole_port = free_port()

        a = await self.started(self.start_manhole_node("A", share_a, manhole_port))
        b = await self.started(self.start_node("B", share_b, peers=[a]))
        await self.connected_to(a, b)
        mark = a.mark()

        session = await self.log_in(manhole_port)
        status = await session.command("status()")
        self.assertIn(f"node A ({a.node_id})", status, session.transcript())
        self.assertRegex(status, r"peers: 1 connected\b")
        self.assertRegex(status, rf"(?m)^\s+B {b.node_id[:12]} {re.escape(LOCALHOST)}:\d+ inbound")
        self.assertIn("sharing 0 files (0 B); mode send-receive, ", status)
        self.assertIn(f"<Peer 'B' {b.node_id[:12]} at {LOCALHOST}:",
                      await session.command("peers()"), session.transcript())
        doctor = await session.command("doctor()")
        self.assertIn(f"listening on TCP port {a.port} on {LOCALHOST}", doctor,
                      session.transcript())
        self.assertIn("1 peer, all reachable both ways", doctor)

        # drop() closes the connection, and both ends say so.
        dropped = await session.command('drop("B")')
        again = a.mark()  # (B redials within a second or two)
        self.assertIn(f"<Peer 'B' {b.node_id[:12]} at {LOCALHOST}:", dropped,
                      session.transcript())
        await self.left(a, b, since=mark)
        await b.wait_for(rf"{files_base.peer_text(a)} reports error dropped: dropped by the"
                         r" operator$")
        # connect() dials B and fires with it once connected.  (B may
        # redial A first: connect() then fires with that connection.)
        peer = await self.result_of(session, f'connect("{LOCALHOST}:{b.port}")')
        self.assertIn(f"<Peer 'B' {b.node_id[:12]} at {LOCALHOST}:", peer, session.transcript())
        await self.connected_to(a, b, since=again)
        self.assertIn(f"<Peer 'B' {b.node_id[:12]}", await session.command("peers()"))

        error = await session.command("1/0")
        self.assertIn("Traceback (most recent call last):", error, session.transcript())
        self.assertIn("ZeroDivisionError: division by zero", error)
        # The session goes on, and so does the node.
        self.assertIn(f"<Peer 'B' {b.node_id[:12]}", await session.command("peers()"),
                      session.transcript())
        self.assertIn(f"node A ({a.node_id})", await session.command("status()"))

        await self.log_out(session)
        self.assertNotIn("closed by remote host", session.stderr, session.transcript())
        await self.still_serves(a, manhole_port, f"<Peer 'B' {b.node_id[:12]}")
        self.assertEqual(errors_logged(a), [], a.output())
        self.assertTrue(b.running, b.output())

    async def test_files_session(self) -> None:
        """
        A runs --no-sync, so B's files stay at B until the operator asks:
        catalog() and catalog_of("B") list both sides, fetch() brings one
        file into a directory outside the share and another into the
        share, transfers() lists both, rescan() picks up a new file (which
        B then takes), and status() counts it all.
        """
        hello = b"hello from B\n" * 500
        report = os.urandom(200 * 1024)
        share_a = os.path.abspath(self.mktemp())
        share_b = os.path.abspath(self.mktemp())
        files_base.write_files(share_a, {"a-note.txt": b"A's own\n"}, age=60)
        files_base.write_files(share_b, {"hello.txt": hello, "docs/report.bin": report},
                               age=60)
        outside = os.path.join(os.path.abspath(self.mktemp()), "fetched")
        manhole_port = free_port()

        a = await self.started(self.start_manhole_node("A", share_a, manhole_port,
                                                       options=["--no-sync"]))
        b = await self.started(self.start_node("B", share_b, peers=[a]))
        # fetch() needs B's index at A, which follows the handshake.
        await a.wait_for(files_base.shares_line(b))
        b_mark = await self.in_step(b, 1, len(b"A's own\n"))

        session = await self.log_in(manhole_port)
        # Both print as tables: a header, then a line per entry.
        catalog = await session.command("catalog()")
        self.assertRegex(catalog, r"^path +kind +size +modified \(UTC\) +by +hash\n")
        self.assertRegex(catalog, r"(?m)^a-note\.txt +file +8 B +\d{4}-\d\d-\d\d ")
        self.assertNotIn("hello.txt", catalog)
        theirs = await session.command('catalog_of("B")')
        for path, data in (("docs", None), ("docs/report.bin", report), ("hello.txt", hello),
                           ("a-note.txt", b"A's own\n")):
            kind = "dir" if data is None else "file"
            self.assertRegex(theirs, rf"(?m)^{re.escape(path)} +{kind} ", session.transcript())

        landed = await self.result_of(
            session, f'fetch("docs/report.bin", dest={outside!r})')
        self.assertEqual(landed, repr(os.path.join(outside, "report.bin")))
        with open(os.path.join(outside, "report.bin"), "rb") as f:
            self.assertTrue(f.read() == report, "report.bin arrived with other content")
        self.assertFalse(os.path.exists(os.path.join(share_a, "docs")))

        landed = await self.result_of(session, 'fetch("hello.txt")')
        self.assertEqual(landed, repr(os.path.join(share_a, "hello.txt")))
        with open(os.path.join(share_a, "hello.txt"), "rb") as f:
            self.assertTrue(f.read() == hello, "hello.txt arrived at A with other content")

        transfers = await session.command("transfers()")
        self.assertRegex(transfers, rf"(?m)^docs/report\.bin +done +200\.0 KiB of 200\.0 KiB"
                                    rf" \(100%\) +{b.node_id[:12]} +\d+s ago$")
        self.assertRegex(transfers, rf"(?m)^hello\.txt +done +6\.3 KiB of 6\.3 KiB"
                                    rf" \(100%\) +{b.node_id[:12]} +\d+s ago$")

        # A new file: rescan() records it at once (or finds that the
        # watcher's rescan already did), and B takes it from A.
        files_base.write_files(share_a, {"later.txt": b"later\n"}, age=60)
        self.assertRegex(await self.result_of(session, "rescan()"), r"^[01]$")
        self.assertRegex(await session.command("catalog()"), r"(?m)^later\.txt +file ")
        await self.in_step(b, 1, len(b"later\n"), since=b_mark)
        with open(os.path.join(share_b, "later.txt"), "rb") as f:
            self.assertEqual(f.read(), b"later\n")

        # A may still be planning B's news (nothing to do, send-only):
        # wait for it to say so, through the same prompt.
        await self.in_step_here(session)
        status = await session.command("status()")
        total = len(hello) + len(b"A's own\n") + len(b"later\n")
        self.assertIn(f"sharing 3 files ({total / 1024:.1f} KiB); mode send-only, in step",
                      status, session.transcript())
        self.assertIn("transfers: 0 in flight or waiting, 2 completed since start", status)
        await self.log_out(session)
        self.assertEqual(errors_logged(a), [], a.output())
        # What B has is what it had, and A's files: nothing A fetched made
        # B change or copy its own.
        self.assertEqual(sorted(files_base.share_contents(share_b)),
                         ["a-note.txt", "docs/report.bin", "hello.txt", "later.txt"])
        # Finished fetches are shown as such (not as still running).
        self.assertNotRegex(transfers, r"(?m)^\S+ +running ", session.transcript())

    async def test_closing_stdin_ends_session(self) -> None:
        """
        Closing ssh's stdin (EOF, as at the end of a piped script) ends the
        session cleanly: no error in the node's log, the node goes on.
        """
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        a = await self.started(self.start_manhole_node("A", share, manhole_port))
        mark = a.mark()
        session = await self.log_in(manhole_port)
        self.assertEqual(await session.command("peers()"), "[]\n")
        session.transport.closeStdin()
        await session.wait_exit()
        await self.still_serves(a, manhole_port, "[]")
        self.assertEqual(errors_logged(a, mark), [], a.output(mark))
        self.assertNotIn("closed by remote host", session.stderr, session.transcript())



class ManholeAccessTests(ManholeTestCase):
    async def test_wrong_key_and_passwords_refused(self) -> None:
        """
        A key not in --manhole-keys is refused, and the server offers no
        other way in: no password, no keyboard-interactive.
        """
        other = make_key_pair(os.path.join(self.keys_dir, "other"), "stranger")
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        a = await self.started(self.start_manhole_node("A", share, manhole_port))
        mark = a.mark()

        client = await self.refused(manhole_port, key=other)
        self.assertNotEqual(client.exit_code, 0, client.transcript())
        self.assertIn("Permission denied (publickey)", client.stderr, client.transcript())

        client = await self.refused(
            manhole_port, "-o", "PreferredAuthentications=password,keyboard-interactive",
            "-o", "PubkeyAuthentication=no",
        )
        self.assertNotEqual(client.exit_code, 0, client.transcript())
        # The server's list of methods that can continue: publickey alone.
        self.assertIn("Permission denied (publickey).", client.stderr, client.transcript())
        self.assertNotIn("password", client.stderr.split("Permission denied", 1)[1])

        self.assertEqual(a.matching(r"authenticated with", mark), [], a.output(mark))
        self.assertTrue(a.running, a.output())

    async def test_prompt_and_logins_as_expected(self) -> None:
        """
        Over the real ssh client: a refused key and a login are each logged
        at info with the user, the key's fingerprint (as ssh-keygen -l
        prints it) and the address; Tab completes at the prompt; readline's
        Ctrl-U, Ctrl-W and Ctrl-R are no node warnings; exit() ends the
        session with a line in the log and no error, warning or traceback.
        """
        other = make_key_pair(os.path.join(self.keys_dir, "other"), "stranger")
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        a = await self.started(self.start_manhole_node("A", share, manhole_port))
        mark = a.mark()

        await self.refused(manhole_port, key=other)
        await a.wait_for(rf"\[p2ptwisted\.manhole#info\] manhole refused key"
                         rf" {re.escape(key_fingerprint(other))} for admin from"
                         rf" {re.escape(LOCALHOST)}:\d+: ", since=mark)
        session = await self.log_in(manhole_port)
        await a.wait_for(rf"\[p2ptwisted\.manhole#info\] manhole login by admin with key"
                         rf" {re.escape(key_fingerprint(self.key))} from"
                         rf" {re.escape(LOCALHOST)}:\d+$", since=mark)

        since = len(session.raw)
        session.transport.write(b"junk two\x17\x15\x12\x07statu\t")
        await session.wait_output(lambda text: True if "status()" in text else None, since,
                                  what="status() completed by Tab")
        answer = await session.command("")
        self.assertIn(f"node A ({a.node_id})", answer, session.transcript())

        session.transport.write(b"exit()\r")
        await session.wait_exit()
        self.assertEqual(session.exit_code, 0, session.transcript())
        await a.wait_for(r"manhole session of admin \(key SHA256:\S+\) from \S+ ended$",
                         since=mark)
        self.assertEqual(errors_logged(a, mark), [], a.output(mark))
        self.assertEqual(a.matching(r"#(warn|error|critical)\]|SystemExit|unhandled keyID",
                                    mark), [], a.output(mark))
        self.assertTrue(a.running, a.output())

    async def test_host_key_kept_across_restarts(self) -> None:
        """
        The host key is made once, ed25519, mode 0600, in the state
        directory; it is the key the server offers; a restart reuses it
        (and makes it 0600 again if its mode was loosened meanwhile).
        """
        share = os.path.abspath(self.mktemp())
        manhole_port = free_port()
        a = await self.started(self.start_manhole_node("A", share, manhole_port))
        path = os.path.join(share, files_base.RESERVED_PREFIX, HOST_KEY_FILE)
        self.assertTrue(os.path.isfile(path), a.output())
        self.assertEqual(oct(stat.S_IMODE(os.stat(path).st_mode)), oct(0o600))
        with open(path, "rb") as f:
            key = f.read()
        self.assertTrue(key.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"))
        self.assertEqual(len(a.matching(r"created manhole host key")), 1, a.output())

        offered = await self.keyscan(manhole_port)
        public = subprocess.run([SSH_KEYGEN, "-y", "-f", path], check=True, capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=30).stdout.decode()
        self.assertEqual(offered, public_key_blob(public), "the server offers another key")

        await self.terminate(a)
        os.chmod(path, 0o640)
        a2 = await self.started(self.start_manhole_node("A", share, manhole_port))
        self.assertEqual(a2.node_id, a.node_id)
        self.assertEqual(await self.keyscan(manhole_port), offered,
                         "the restarted node offers another host key")
        with open(path, "rb") as f:
            self.assertTrue(f.read() == key, "the host key file changed")
        self.assertEqual(oct(stat.S_IMODE(os.stat(path).st_mode)), oct(0o600))
        self.assertEqual(a2.matching(r"created manhole host key"), [], a2.output())
        # And it still lets the operator in.
        await self.still_serves(a2, manhole_port, "[]")


class ManholeOptionsTests(unittest.SynchronousTestCase):
    """
    C{--manhole} and C{--manhole-keys}, in process.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.share = os.path.join(self.root, "share")
        self.home = os.path.join(self.root, "home")
        os.makedirs(self.home)
        self.set_home(self.home)

    def set_home(self, home: str) -> None:
        old = os.environ.get("HOME")

        def restore():
            if old is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = old

        os.environ["HOME"] = home
        self.addCleanup(restore)

    def keys_file(self, text: str, path: Optional[str] = None) -> str:
        path = path or os.path.join(self.root, "authorized_keys")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--share", self.share, "--port", "tcp:0:interface=127.0.0.1",
                              "--no-discover", *args])
        return options

    KEY_LINE = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH6X4hHlTQjOSCYK+dnSbCdmrlq8VDeBkUYsRNM+ur0n"
                " operator@test\n")

    def test_bare_port_is_loopback(self) -> None:
        keys = self.keys_file(self.KEY_LINE)
        options = self.parse("--manhole", "2222", "--manhole-keys", keys)
        self.assertEqual(options["manhole"], "tcp:2222:interface=127.0.0.1")
        self.assertEqual(options["manhole-keys"], keys)

    def test_endpoint_kept(self) -> None:
        keys = self.keys_file(self.KEY_LINE)
        endpoint = r"tcp:2222:interface=\:\:1"
        options = self.parse("--manhole", endpoint, "--manhole-keys", keys)
        self.assertEqual(options["manhole"], endpoint)

    def test_bad_manhole(self) -> None:
        keys = self.keys_file(self.KEY_LINE)
        for bad in ["70000", "nope:1", "tcp:2222:interface=::1"]:
            e = self.assertRaises(usage.UsageError, self.parse,
                                  "--manhole", bad, "--manhole-keys", keys)
            self.assertIn("--manhole", str(e))

    def test_off_by_default(self) -> None:
        self.assertIsNone(self.parse()["manhole"])

    def test_no_keys_file(self) -> None:
        """
        Without --manhole-keys and without ~/.ssh/authorized_keys, the
        options are refused with a message saying what to do.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--manhole", "2222")
        self.assertIn("--manhole-keys", str(e))
        self.assertIn(os.path.join(self.home, ".ssh", "authorized_keys"), str(e))

    def test_missing_keys_file(self) -> None:
        missing = os.path.join(self.root, "nope")
        e = self.assertRaises(usage.UsageError, self.parse,
                              "--manhole", "2222", "--manhole-keys", missing)
        self.assertIn(missing, str(e))

    def test_default_keys_file(self) -> None:
        keys = self.keys_file(self.KEY_LINE, os.path.join(self.home, ".ssh", "authorized_keys"))
        self.assertEqual(self.parse("--manhole", "2222")["manhole-keys"], keys)

    def test_keys_file_without_keys(self) -> None:
        """
        An authorized_keys file with no usable key is refused with the
        options (where twistd shows a usage error as one line): nobody
        could log in.
        """
        keys = self.keys_file("# nobody yet\n\nnot a key\n")
        e = self.assertRaises(usage.UsageError, self.parse, "--manhole", "0",
                              "--manhole-keys", keys)
        self.assertIn("holds no usable public keys", str(e))
        self.assertIn(keys, str(e))

    def test_conch_only_when_asked(self) -> None:
        """
        Without --manhole, building the service imports neither Conch's
        manhole nor ours; with it, both (which shows the check can see).
        """
        keys = self.keys_file(self.KEY_LINE)
        script = (
            "import sys\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "from p2ptwisted.tap import Options, makeService\n"
            "def build(*extra):\n"
            "    options = Options()\n"
            "    options.parseOptions(['--share', sys.argv[1], '--port', 'tcp:0', *extra])\n"
            "    makeService(options, reactor=MemoryReactorClock())\n"
            "    print([m in sys.modules for m in\n"
            "           ('twisted.conch.manhole_ssh', 'p2ptwisted.manhole')])\n"
            "build()\n"
            "build('--manhole', '0', '--manhole-keys', sys.argv[2])\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(p2ptwisted.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        done = subprocess.run([sys.executable, "-c", script, self.share, keys],
                              capture_output=True, text=True, env=env, cwd=self.root,
                              stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.splitlines(), ["[False, False]", "[True, True]"],
                         done.stderr)
