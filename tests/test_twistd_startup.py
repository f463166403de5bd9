# -*- test-case-name: tests.test_twistd_startup -*-
"""
Start-up failures, in real twistd processes: a node that cannot start says
why in one line and exits 1 within a second or two, as a daemon exactly as
with C{-n}, leaving no pidfile; a mistake on the command line is one line
and a hint, not 60 lines of usage.

Each case is one short-lived process, followed with a ProcessProtocol; no
test sleeps.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
from typing import List, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from p2ptwisted import __version__
from p2ptwisted.state import LOCK_FILE

from .test_twistd import LOCALHOST, twistd_command

#: Seconds a failing start has to exit: it takes well under two.
FAIL_TIMEOUT = 10.0

#: An ed25519 public key, so that --manhole accepts its options.
KEY_LINE = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH6X4hHlTQjOSCYK+dnSbCdmrlq8VDeBkUYsRNM+ur0n"
            " operator@test\n")


class Run(ProcessProtocol):
    """
    One process run to its end: its stdout and stderr apart, and a
    Deferred that fires with the run once it exited.
    """

    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)
        self.out = b""
        self.err = b""
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.ended = False
        self._waiters: List[Deferred] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        self.ended = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    def wait(self) -> Deferred:
        """
        A Deferred that fires with this run once the process has exited.
        """
        if self.ended:
            return succeed(self)
        d = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        return d

    @property
    def out_lines(self) -> List[str]:
        return self.out.decode("utf-8", "replace").splitlines()

    @property
    def err_lines(self) -> List[str]:
        return self.err.decode("utf-8", "replace").splitlines()

    def text(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.exit_code} signal {self.signal}\n"
                f"--- stdout\n{self.out.decode('utf-8', 'replace')}"
                f"--- stderr\n{self.err.decode('utf-8', 'replace')}")


class StartupTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.share = os.path.join(self.root, "share")
        self.pidfile = os.path.join(self.root, "node.pid")
        self.logfile = os.path.join(self.root, "node.log")

    async def twistd(self, *args: str, timeout: float = FAIL_TIMEOUT) -> Run:
        """
        Run C{twistd ARGS} in the test's directory and wait for it to exit,
        failing the test if it takes longer than C{timeout}.
        """
        argv = twistd_command() + list(args)
        run = Run(argv)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        reactor.spawnProcess(run, argv[0], argv, env=env, path=self.root)
        self.addCleanup(self._reap, run)
        self.addCleanup(self._kill_daemon)

        def timed_out(result, timeout):
            self.fail(f"twistd did not exit within {timeout:g}s\n{run.text()}")

        return await run.wait().addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    async def _reap(self, run: Run) -> None:
        if run.ended:
            return
        try:
            run.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        await run.wait()

    def _kill_daemon(self) -> None:
        """
        A daemon that did start (so the test failed) must not outlive the
        test: its pidfile names it.
        """
        try:
            with open(self.pidfile) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def node_args(self, *options: str, daemon: bool = False) -> List[str]:
        mode = [] if daemon else ["-n"]
        web = [] if any(o in ("--web", "--no-web") for o in options) else [
            "--web", "tcp:0:interface=127.0.0.1"]  # (not 8384: tests run side by side)
        return mode + ["--pidfile", self.pidfile, "--logfile", self.logfile, "p2pshare",
                       "--share", self.share, "--no-discover", *web, *options]

    def log_lines(self) -> List[str]:
        with open(self.logfile, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()

    def held_port(self) -> int:
        """
        A port on 127.0.0.1 that this test process listens on.
        """
        port = reactor.listenTCP(0, Factory(), interface=LOCALHOST)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def hold_state(self, state: str) -> None:
        """
        Lock the state directory the way a running node does.
        """
        os.makedirs(state, exist_ok=True)
        fd = os.open(os.path.join(state, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")

    def assert_failed_start(self, run: Run, reason: str) -> None:
        """
        The node exited 1, logged exactly one "cannot start" line matching
        C{reason} and no traceback, and left no pidfile.
        """
        log = self.log_lines()
        self.assertEqual(run.exit_code, 1, run.text())
        lines = [line for line in log if "cannot start:" in line]
        self.assertEqual(len(lines), 1, "\n".join(log))
        self.assertRegex(lines[0], reason)
        self.assertFalse([line for line in log if "Traceback" in line], "\n".join(log))
        self._daemon_exited()
        self.assertFalse(os.path.exists(self.pidfile), "the pidfile was left behind")

    def _daemon_exited(self, timeout: float = 10.0) -> None:
        """
        Wait for a daemon that failed to start to exit: twistd tells the
        waiting parent why before the daemon removes its pidfile, so the
        parent can be gone while the pidfile still is not.  (A pidfd
        becomes readable when its process exits.)
        """
        try:
            with open(self.pidfile) as f:
                pid = int(f.read())
            fd = os.pidfd_open(pid)
        except (OSError, ValueError):
            return  # no pidfile (or no such process): nothing to wait for
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)


class DaemonStartupTests(StartupTestCase):
    """
    Issue 11, point 1: a daemon that cannot start makes C{twistd} exit 1 at
    once with the reason, instead of waiting for ever on its status pipe.
    """

    async def test_port_in_use(self) -> None:
        port = self.held_port()
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:{port}:interface={LOCALHOST}", daemon=True))
        reason = rf"{LOCALHOST}:{port} \(--port\): Address already in use"
        self.assert_failed_start(run, reason)
        # The waiting parent prints the reason on the terminal.
        self.assertRegex(run.err.decode(), reason, run.text())

    async def test_state_in_use(self) -> None:
        state = os.path.join(self.root, "state")
        self.hold_state(state)
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}", "--state", state, daemon=True))
        self.assert_failed_start(run, r"cannot start: state directory in use by another node"
                                      rf" \(pid 4242\): {re.escape(state)}; give each node")
        # twistd shows the parent the line's first 65 characters or so.
        self.assertRegex(run.err.decode(), r"in use by another node \(pid 4242\)", run.text())

    async def test_foreground_removes_pidfile(self) -> None:
        """
        With C{-n} too, a failed start leaves no pidfile.
        """
        port = self.held_port()
        run = await self.twistd(*self.node_args("--port", f"tcp:{port}:interface={LOCALHOST}"))
        self.assertFalse(os.path.exists(self.pidfile), "the pidfile was left behind")
        self.assert_failed_start(run, rf"{LOCALHOST}:{port} \(--port\): Address already in use")


class BadPathTests(StartupTestCase):
    """
    Issue 11, point 2: a share or state directory that cannot be used, or a
    manhole port in use, is one line and exit status 1, not a traceback.
    """

    def a_file(self) -> str:
        path = os.path.join(self.root, "a-file")
        with open(path, "w") as f:
            f.write("not a directory\n")
        return path

    async def usage_error(self, *options: str) -> Run:
        """
        Run a node whose options are refused, and check that it says so in
        one line and a hint, on stderr, before it writes any log or pidfile.
        """
        run = await self.twistd(*self.node_args("--port", "0", *options, daemon=True))
        self.assertEqual(run.exit_code, 1, run.text())
        self.assertEqual(len(run.err_lines), 2, run.text())
        self.assertEqual(run.err_lines[1], "Run 'twistd p2pshare --help' for the options.")
        self.assertEqual(run.out, b"", run.text())
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertFalse(os.path.exists(self.logfile))
        return run

    async def test_share_under_a_file(self) -> None:
        path = os.path.join(self.a_file(), "sub")
        run = await self.usage_error("--share", path)
        self.assertEqual(run.err_lines[0], f"twistd p2pshare: --share {path}: cannot be created,"
                                           f" {os.path.dirname(path)} is not a directory")

    async def test_state_under_a_file(self) -> None:
        path = os.path.join(self.a_file(), "x", "y")
        run = await self.usage_error("--state", path)
        self.assertEqual(run.err_lines[0], f"twistd p2pshare: --state {path}: cannot be created,"
                                           f" {self.root}/a-file is not a directory")

    async def test_share_under_proc(self) -> None:
        """
        /proc takes no new directories, even from root: found at start.
        """
        if not os.path.isdir("/proc/self"):
            raise unittest.SkipTest("no /proc here")
        self.share = "/proc/p2ptwisted-test-share"
        run = await self.twistd(*self.node_args("--port", f"tcp:0:interface={LOCALHOST}"))
        self.assert_failed_start(run, rf"cannot start: No such file or directory: {self.share}$")

    def unwritable_directory(self) -> str:
        """
        An existing directory in which no file can be created, even by root:
        /sys (sysfs refuses new files) for root, a mode 0555 one otherwise.
        """
        if os.geteuid() != 0:
            path = os.path.join(self.root, "read-only")
            os.makedirs(path, mode=0o555)
            return path
        path = "/sys"
        try:
            fd = os.open(os.path.join(path, "p2ptwisted-test"), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            return path
        os.close(fd)
        os.unlink(os.path.join(path, "p2ptwisted-test"))
        raise unittest.SkipTest("no directory here is unwritable for root")

    async def test_unwritable_state_directory(self) -> None:
        state = self.unwritable_directory()
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}", "--state", state))
        self.assert_failed_start(
            run, rf"cannot start: state directory unusable \(Permission denied\):"
                 rf" {re.escape(state)}/lock$")

    async def test_unwritable_state_directory_with_manhole(self) -> None:
        """
        The manhole's host key is made while the service tree is built,
        before twistd starts logging: the line goes to stderr.
        """
        state = self.unwritable_directory()
        keys = os.path.join(self.root, "authorized_keys")
        with open(keys, "w") as f:
            f.write(KEY_LINE)
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}", "--state", state,
            "--manhole", "0", "--manhole-keys", keys))
        self.assertEqual(run.exit_code, 1, run.text())
        self.assertEqual(run.err_lines, [
            f"twistd p2pshare: --manhole: cannot create its host key:"
            f" {state}/manhole_host_key: Permission denied"], run.text())
        self.assertFalse(os.path.exists(self.pidfile))

    async def test_manhole_port_in_use(self) -> None:
        port = self.held_port()
        keys = os.path.join(self.root, "authorized_keys")
        with open(keys, "w") as f:
            f.write(KEY_LINE)
        run = await self.twistd(*self.node_args(
            "--port", f"tcp:0:interface={LOCALHOST}",
            "--manhole", str(port), "--manhole-keys", keys))
        self.assert_failed_start(run, rf"cannot start: {LOCALHOST}:{port} \(--manhole\):"
                                      r" Address already in use$")


class OptionErrorTests(StartupTestCase):
    """
    Issue 11, point 3: what twistd shows for a mistake, and --version.
    """

    async def test_error_first_and_short(self) -> None:
        run = await self.twistd("-n", "--pidfile=", "p2pshare", "--port", "-1")
        self.assertEqual(run.exit_code, 1, run.text())
        self.assertEqual(run.err_lines, [
            "twistd p2pshare: --port -1: not a port number (0 to 65535)",
            "Run 'twistd p2pshare --help' for the options.",
        ], run.text())
        self.assertEqual(run.out, b"", run.text())

    async def test_version(self) -> None:
        run = await self.twistd("p2pshare", "--version")
        self.assertEqual(run.exit_code, 0, run.text())
        self.assertRegex(run.out.decode(), rf"^p2ptwisted {re.escape(__version__)}"
                                           r" \(Twisted \d+\.\d+\.\d+.*\)\n$")
