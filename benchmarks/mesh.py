"""
A big mesh on one host: N real ``twistd -n p2pshare`` nodes on 127.0.0.1,
default options apart from ports, share and state directories, with
``--no-discover`` and a ``--peer`` to one or two earlier nodes, so they can
only find each other by gossip.

    python benchmarks/mesh.py                # 50 nodes
    python benchmarks/mesh.py --nodes 30 --keep /tmp/mesh30

All nodes are started at once (their ports chosen beforehand), then their
logs are read until every node has a connection to every other one.
Reported, from the nodes' own log lines:

  - seconds to the full mesh, counted from the first process started and
    from the moment the last node logged that it listens (50 Python
    processes need a while to start on a small machine: before the last
    one listens no mesh can be full, so the second figure is the one about
    the mesh itself);
  - the connections closed as duplicates, as a share of all connections
    that completed a handshake, counted per end: each end that logged
    ``connected to`` or closed a connection as ``already connected to this
    node``, against the ends that closed one as a duplicate (either
    message);
  - connections refused by a limit (``dropping ... limit``), dials that
    failed (``could not reach``) and connections that ended (``left``).

Only the processes this script started are stopped, by PID.  Their logs
stay in the work directory if ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CONNECTED = re.compile(r"connected to (.*?) \(([0-9a-f]{12})\) at \S+ \((?:outbound|inbound)\)")
LEFT = re.compile(r"\] (.*?) \(([0-9a-f]{12})\) at \S+ left: ")
LISTENING = re.compile(r"listening for peers on 127\.0\.0\.1:(\d+)")
STARTING = re.compile(r"node \S+ \(([0-9a-f]{64})\) starting")
DUP_NEW = "already connected to this node"
DUP_OLD = "a preferred connection to this node opened"


def free_ports(n: int) -> list:
    """
    N ports free right now on 127.0.0.1 (bound once, then released).
    """
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


class Node:
    def __init__(self, workdir: str, index: int, port: int, peers: list):
        self.name = f"n{index:02d}"
        self.share = os.path.join(workdir, self.name, "share")
        self.state = os.path.join(workdir, self.name, "state")
        self.log_path = os.path.join(workdir, f"{self.name}.log")
        self.port = port
        self.peers = peers
        self.proc = None
        self.node_id = None
        self.listening_at = None
        self.connected = {}  # short id -> name
        self.counts = dict(connected=0, dup_new=0, dup_old=0, dropped=0, unreachable=0,
                           left=0)
        self._offset = 0
        self._partial = ""

    def start(self) -> None:
        os.makedirs(self.share, exist_ok=True)
        args = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n",
                "--pidfile=", "p2pshare",
                "--port", f"tcp:{self.port}:interface=127.0.0.1",
                "--share", self.share, "--state", self.state,
                "--name", self.name, "--no-discover"]
        for peer in self.peers:
            args += ["--peer", f"127.0.0.1:{peer}"]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def read(self, now: float) -> None:
        """
        Take in the log lines written since the last call.
        """
        with open(self.log_path) as f:
            f.seek(self._offset)
            data = f.read()
            self._offset = f.tell()
        data = self._partial + data
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            if self.node_id is None:
                m = STARTING.search(line)
                if m:
                    self.node_id = m.group(1)
            if self.listening_at is None and LISTENING.search(line):
                self.listening_at = now
            m = CONNECTED.search(line)
            if m:
                self.counts["connected"] += 1
                self.connected[m.group(2)] = m.group(1)
                continue
            m = LEFT.search(line)
            if m:
                self.counts["left"] += 1
                self.connected.pop(m.group(2), None)
                continue
            if DUP_NEW in line:
                self.counts["dup_new"] += 1
            elif DUP_OLD in line:
                self.counts["dup_old"] += 1
            elif "dropping" in line and "limit" in line:
                self.counts["dropped"] += 1
            elif "could not reach" in line:
                self.counts["unreachable"] += 1

    def cpu_seconds(self) -> float:
        """
        User and system CPU time the process has used so far.
        """
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def run(n: int, workdir: str, timeout: float, seed: int) -> dict:
    rng = random.Random(seed)
    ports = free_ports(n)
    nodes = []
    for i in range(n):
        peers = []
        if i > 0:
            peers.append(ports[i - 1])
            if i > 2 and rng.random() < 0.5:
                peers.append(ports[rng.randrange(0, i - 1)])
        nodes.append(Node(workdir, i, ports[i], peers))
    first_start = time.monotonic()
    for node in nodes:
        node.start()
    started = time.monotonic()
    mesh_at = None
    try:
        while time.monotonic() - first_start < timeout:
            now = time.monotonic()
            for node in nodes:
                node.read(now)
                if node.proc.poll() is not None:
                    raise RuntimeError(f"{node.name} exited; see {node.log_path}")
            all_listening = all(node.listening_at is not None for node in nodes)
            if all_listening and all(len(node.connected) == n - 1 for node in nodes):
                mesh_at = now
                break
            time.sleep(0.1)
        # Let late duplicate closes and drops reach the logs.
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle:
            time.sleep(0.2)
        for node in nodes:
            node.read(time.monotonic())
        complete = sum(len(node.connected) for node in nodes) // 2
        cpu = sum(node.cpu_seconds() for node in nodes)
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            node.wait()
    last_listening = max((node.listening_at for node in nodes if node.listening_at), default=None)
    totals = {k: sum(node.counts[k] for node in nodes) for k in nodes[0].counts}
    ends = totals["connected"] + totals["dup_new"]
    duplicate_ends = totals["dup_new"] + totals["dup_old"]
    return {
        "nodes": n,
        "pairs": n * (n - 1) // 2,
        "pairs_connected": complete,
        "start_all_s": started - first_start,
        "last_listening_s": (last_listening - first_start) if last_listening else None,
        "mesh_from_first_start_s": (mesh_at - first_start) if mesh_at else None,
        "mesh_from_last_listening_s": (mesh_at - last_listening) if mesh_at else None,
        "cpu_s": cpu,
        "handshaken_ends": ends,
        "duplicate_ends": duplicate_ends,
        "duplicate_share": duplicate_ends / ends if ends else 0.0,
        **{f"lines_{k}": v for k, v in totals.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="give up after this many seconds from the first start")
    parser.add_argument("--seed", type=int, default=1, help="for the choice of --peer")
    parser.add_argument("--keep", help="work in this directory and keep the logs")
    args = parser.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="p2p-mesh-")
    os.makedirs(workdir, exist_ok=True)
    try:
        result = run(args.nodes, workdir, args.timeout, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    def seconds(value):
        return "never" if value is None else f"{value:.1f} s"

    print(f"{result['nodes']} nodes, {result['pairs_connected']} of {result['pairs']} pairs"
          " connected")
    print(f"  all processes started after  {seconds(result['start_all_s'])}")
    print(f"  last node listening after    {seconds(result['last_listening_s'])}")
    print(f"  full mesh, from first start  {seconds(result['mesh_from_first_start_s'])}")
    print(f"  full mesh, from last listen  {seconds(result['mesh_from_last_listening_s'])}")
    print(f"  CPU time of all nodes        {seconds(result['cpu_s'])}")
    print(f"  duplicates: {result['duplicate_ends']} of {result['handshaken_ends']} handshaken"
          f" connection ends ({100 * result['duplicate_share']:.1f} %)")
    print(f"  log lines: {result['lines_dropped']} dropped by a limit,"
          f" {result['lines_unreachable']} could not reach, {result['lines_left']} left")


if __name__ == "__main__":
    main()
