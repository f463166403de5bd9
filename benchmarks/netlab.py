"""
A little LAN on one machine for benchmarks: hosts in network namespaces,
each with a veth to one bridge in the root namespace, each link shaped to a
given rate in both directions; benchmarks/labnodes.py starts real
``twistd -n p2pshare`` nodes in them.

    python benchmarks/netlab.py [--hosts 2] [--rate-mbit 100] [--seconds 3]

Run alone it checks the plumbing: it builds the hosts and measures a raw
TCP stream from host 1 to host 2, shaped and then unshaped, so the rate a
benchmark's links really give is known.

Host I is the namespace ``p2plab-hI`` with ``eth0`` at 10.77.0.I/24 (and
``lo`` up); its other end, ``p2plab-vI``, is on the bridge ``p2plab-br``.
Shaping is a tbf on ``eth0`` (what the host sends) and one on ``p2plab-vI``
(what it receives).  Everything is removed on the way out, Ctrl-C and
errors included; a run that was killed leaves names starting with ``p2plab-``
behind, and the next run removes them first (a lock keeps two runs from
removing each other's).  It needs root and iproute2 (``ip`` and ``tc``:
``apt-get install -y iproute2``); without them it says why and exits 0.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

#: (Not "p2pb-": tests/test_netns.py names its host b's namespace
#: p2pb-XXXXXX, and a run of this lab would end its processes as stale.)
PREFIX = "p2plab-"
BRIDGE = PREFIX + "br"
SUBNET = "10.77.0"
PORT = 12345
LOCK_PATH = os.path.join(tempfile.gettempdir(), "p2plab-netlab.lock")
TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LabError(Exception):
    """
    A command building or running the lab failed, or a node did not do
    what was waited for; the message says which.
    """


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except OSError as e:
        raise LabError(f"{argv[0]}: {e}") from None
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> Optional[str]:
    """
    Why the lab cannot be built here, or C{None}: probed by making a
    namespace with a shaped veth in it, and removing it.
    """
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for network namespaces and tc"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs iproute2's {tool} on PATH (apt-get install -y iproute2)"
    ns = f"{PREFIX}probe{os.getpid()}"
    try:
        steps = [("ip", "netns", "add", ns),
                 ("ip", "-n", ns, "link", "add", "name", "probe0", "type", "veth", "peer", "name",
                  "probe1"),
                 ("tc", "-n", ns, "qdisc", "add", "dev", "probe0", "root", "tbf", "rate", "100mbit",
                  "burst", "70000", "latency", "20ms")]
        for step in steps:
            done = sh(*step, check=False)
            if done.returncode != 0:
                return f"{' '.join(step[:4])} failed: {done.stderr.strip()}"
        return None
    finally:
        sh("ip", "netns", "del", ns, check=False)


def burst_bytes(rate_mbit: float) -> int:
    """
    The tbf bucket: 4 ms at the rate, and never less than one 64 KiB GSO
    packet plus a frame, which tbf would otherwise have to split.
    """
    return max(int(rate_mbit * 1e6 / 8 * 0.004), 65536 + 1514)


class Lab:
    """
    N hosts on one bridge; a context manager that removes all it made.

    @param rates: per host (1-based) its rate in Mbit/s, or C{None} for an
        unshaped link; hosts not listed get C{rate_mbit}.
    """

    def __init__(self, hosts: int, workdir: str, rate_mbit: Optional[float] = 100.0,
                 rates: Optional[Dict[int, Optional[float]]] = None):
        if not 1 <= hosts <= 250:
            raise ValueError("1 to 250 hosts")
        self.count = hosts
        self.workdir = workdir
        self.rates = {i: (rates or {}).get(i, rate_mbit) for i in range(1, hosts + 1)}
        self.nodes: List[Any] = []  # what to stop() on the way out (labnodes.Node)
        self._lock: Optional[int] = None

    @staticmethod
    def ns(i: int) -> str:
        return f"{PREFIX}h{i}"

    @staticmethod
    def address(i: int) -> str:
        return f"{SUBNET}.{i}"

    def __enter__(self) -> "Lab":
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LabError(f"another netlab run holds {LOCK_PATH}") from None
        self._lock = fd
        try:
            clean_stale()
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        for i in range(1, self.count + 1):
            ns, veth = self.ns(i), f"{PREFIX}v{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", BRIDGE, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            rate = self.rates[i]
            if rate is not None:
                tbf = ("root", "tbf", "rate", f"{rate}mbit", "burst", str(burst_bytes(rate)),
                       "latency", "20ms")
                sh("tc", "-n", ns, "qdisc", "replace", "dev", "eth0", *tbf)
                sh("tc", "qdisc", "replace", "dev", veth, *tbf)

    def __exit__(self, *exc) -> None:
        try:
            for node in self.nodes:
                node.stop()
            self.nodes.clear()
            clean_stale()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def link_bytes(self, i: int) -> Dict[str, int]:
        """
        Bytes host I has sent and received on its link so far (from the
        bridge end's counters: what it sent is what that end received).
        """
        base = f"/sys/class/net/{PREFIX}v{i}/statistics"
        with open(f"{base}/rx_bytes") as rx, open(f"{base}/tx_bytes") as tx:
            return {"sent": int(rx.read()), "received": int(tx.read())}

    def stop_nodes(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()


def clean_stale() -> None:
    """
    Remove every namespace and link named C{p2plab-...}: this lab's own, or
    those a killed run left.  Processes still in such a namespace can only
    be nodes an earlier run started; they are ended by PID first.
    """
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split(":")
        if len(fields) > 1:
            name = fields[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                sh("ip", "link", "del", name, check=False)


def on_signals() -> None:
    """
    SIGTERM and SIGHUP unwind like Ctrl-C, so the lab is removed (and
    Ctrl-C does even where it was inherited as ignored, in a background job).
    """
    def leave(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


RECEIVER = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
            "socket.SO_REUSEADDR,1);s.bind(('',int(sys.argv[1])));s.listen(1)\n"
            "print('ready',flush=True)\nc,_=s.accept();b=bytearray(1<<20);n=0\n"
            "while True:\n k=c.recv_into(b)\n if not k: break\n n+=k\nprint(n,flush=True)\n")
SENDER = ("import socket,sys,time\nc=socket.create_connection((sys.argv[1],int(sys.argv[2])))\n"
          "b=bytes(1<<20);end=time.monotonic()+float(sys.argv[3])\n"
          "while time.monotonic()<end: c.sendall(b)\nc.close()\n")


def raw_rate_mbit(lab: Lab, src: int, dst: int, seconds: float) -> float:
    """
    Mbit/s of one raw TCP stream from host C{src} to host C{dst}.
    """
    rx = subprocess.Popen(["ip", "netns", "exec", lab.ns(dst), sys.executable, "-c", RECEIVER,
                           str(PORT + 1)], stdout=subprocess.PIPE, text=True)
    try:
        rx.stdout.readline()
        start = time.monotonic()
        sh("ip", "netns", "exec", lab.ns(src), sys.executable, "-c", SENDER, lab.address(dst),
           str(PORT + 1), str(seconds))
        total = int(rx.stdout.readline())
        return total * 8 / (time.monotonic() - start) / 1e6
    finally:
        if rx.poll() is None:
            rx.kill()
        rx.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    on_signals()
    with tempfile.TemporaryDirectory(prefix="p2plab-") as workdir:
        for rate in (args.rate_mbit, None):
            with Lab(max(args.hosts, 2), workdir, rate_mbit=rate) as lab:
                got = raw_rate_mbit(lab, 1, 2, args.seconds)
                link = "unshaped" if rate is None else f"{rate:g} Mbit/s"
                print(f"host 1 -> host 2, link {link}: raw TCP {got:.1f} Mbit/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
