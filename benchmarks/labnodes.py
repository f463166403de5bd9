"""
Real ``twistd -n p2pshare`` nodes in a L{netlab.Lab}, and what their logs
say: connections, scans, what they fetched and served.  The log lines read
here are the nodes' ordinary ones, matched loosely so that a field added
to a line does not break the benchmarks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List

from netlab import PORT, TREE, Lab, LabError

CONNECTED = re.compile(r"connected to (.*?) \(([0-9a-f]{12})\) at \S+ \((?:outbound|inbound)\)")
LEFT = re.compile(r"\] (.*?) \(([0-9a-f]{12})\) at \S+ left: ")
FIRST_SCAN = re.compile(r"first scan: ")
IN_STEP = re.compile(r"in step with peers: applied (\d+) changes, fetched (\d+) files"
                     r" \((\d+) bytes")
REUSED = re.compile(r"reused (\d+) bytes")
SERVED = re.compile(r"served (\d+) files \((\d+) bytes\) to (.*?) \([0-9a-f]{12}\)")
FETCHED = re.compile(r"fetched (.+?) \((\d+) bytes\) from (.*)")
PEER = re.compile(r"([^\s,;:]+) \([0-9a-f]{12}\)")
SCAN = re.compile(r"share scan: .*\(([\d.]+)s\)")


def code_path(tree: str = TREE, python: str = sys.executable) -> str:
    """
    Where the nodes will import p2ptwisted from, with C{tree} on their
    PYTHONPATH (an editable install elsewhere must not win).
    """
    if not os.path.exists(os.path.join(os.path.dirname(python), "twistd")):
        raise LabError(f"no twistd beside {python}: run with the project's venv python"
                       " (or give --python)")
    done = subprocess.run([python, "-c", "import p2ptwisted; print(p2ptwisted.__file__)"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=tree))
    if done.returncode != 0:
        raise LabError(f"cannot import p2ptwisted from {tree}: {done.stderr.strip()[-300:]}")
    return os.path.dirname(os.path.dirname(os.path.abspath(done.stdout.strip())))


def start_node(lab: Lab, i: int, share: str, state: str, log_path: str,
               peers: List[int] = (), extra: List[str] = (), tree: str = TREE,
               python: str = sys.executable) -> "Node":
    """
    Start C{twistd -n p2pshare} in host I of the lab (which stops it on
    the way out), dialling the given hosts, with discovery off (the nodes
    find each other by --peer and gossip) and the code of C{tree} on its
    PYTHONPATH.
    """
    os.makedirs(share, exist_ok=True)
    twistd = os.path.join(os.path.dirname(python), "twistd")
    argv = ["ip", "netns", "exec", lab.ns(i), python, twistd, "-n", "--pidfile=",
            "p2pshare", "--port", str(PORT), "--share", share, "--state", state,
            "--name", f"h{i}", "--no-discover"]
    for peer in peers:
        argv += ["--peer", f"{lab.address(peer)}:{PORT}"]
    argv += list(extra)
    node = Node(f"h{i}", argv, log_path, tree)
    lab.nodes.append(node)
    return node



def peak_rss_mib(pid: int) -> float:
    """
    VmHWM of process C{pid}: read while it runs (C{nan} once it has gone).
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")

class Node:
    """
    One node process; its log (stdout, so it never rotates) is read
    incrementally, each line stamped with the time it was seen.
    """

    def __init__(self, name: str, argv: List[str], log_path: str, tree: str):
        self.name = name
        self.log_path = log_path
        self.lines: List[tuple] = []  # (monotonic seconds, text)
        self.connected: Dict[str, str] = {}  # short id -> peer's name
        self._offset = 0
        self._partial = ""
        env = dict(os.environ, PYTHONPATH=tree, PYTHONUNBUFFERED="1")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def poll(self, now: float) -> None:
        with open(self.log_path) as f:
            f.seek(self._offset)
            data = f.read()
            self._offset = f.tell()
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.lines.append((now, line))
            m = CONNECTED.search(line)
            if m:
                self.connected[m.group(2)] = m.group(1)
                continue
            m = LEFT.search(line)
            if m:
                self.connected.pop(m.group(2), None)

    def matching(self, pattern: "re.Pattern[str]", since: float = 0.0) -> List[tuple]:
        """
        (time, match) of the lines seen at or after C{since} that match.
        """
        return [(t, m) for t, line in self.lines if t >= since
                for m in [pattern.search(line)] if m]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.proc.pid)

    def tail(self, n: int = 15) -> str:
        self.poll(time.monotonic())
        return "\n".join(f"  {self.name}| {line}" for _, line in self.lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_until(condition: Callable[[float], bool], nodes: List[Node], what: str,
               timeout: float, interval: float = 0.02) -> float:
    """
    Poll the nodes' logs (and C{condition}, given the time) every
    C{interval} until it holds; return that time.  A node that exits or a
    timeout raises L{LabError} with the ends of the logs.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        for node in nodes:
            node.poll(now)
        if condition(now):
            return now
        dead = [node for node in nodes if not node.alive()]
        if dead or now > deadline:
            why = f"{dead[0].name} exited" if dead else f"timed out after {timeout:.0f}s"
            logs = "\n".join(node.tail() for node in (dead or nodes))
            raise LabError(f"waiting for {what}: {why}\n{logs}")
        time.sleep(interval)


def wait_mesh(nodes: List[Node], timeout: float) -> float:
    """
    Wait until every node has done its first scan and holds a connection
    to every other one.
    """
    def full(_now: float) -> bool:
        return all(len(n.connected) >= len(nodes) - 1 and n.matching(FIRST_SCAN)
                   for n in nodes)
    return wait_until(full, nodes, "a full mesh", timeout)


def wait_quiet(nodes: List[Node], pattern: "re.Pattern[str]", since: float, quiet: float,
               limit: float = 15.0) -> None:
    """
    Wait until no node has logged a line matching C{pattern} for C{quiet}
    seconds (served lines come 2 s after a peer's last upload), or
    C{limit} seconds at most: a node that keeps logging such lines does
    not hang the benchmark.
    """
    give_up = time.monotonic() + limit

    def settled(now: float) -> bool:
        last = max([since] + [t for n in nodes for t, _ in n.matching(pattern, since)])
        return now - last >= quiet or now >= give_up
    wait_until(settled, nodes, "the nodes to settle", limit + 5, interval=0.1)


def in_step_bytes(lines: List[str]) -> Dict[str, int]:
    """
    What in-step lines say was fetched (and reused, where a node says so).
    """
    out = {"lines": 0, "changes": 0, "files": 0, "bytes": 0, "reused": 0}
    for line in lines:
        m = IN_STEP.search(line)
        if m:
            out["lines"] += 1
            out["changes"] += int(m.group(1))
            out["files"] += int(m.group(2))
            out["bytes"] += int(m.group(3))
            r = REUSED.search(line)
            out["reused"] += int(r.group(1)) if r else 0
    return out


def served_by_peer(lines: List[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in lines:
        m = SERVED.search(line)
        if m:
            out[m.group(3)] = out.get(m.group(3), 0) + int(m.group(2))
    return out


def fetched_from(node: Node, since: float = 0.0) -> str:
    """
    The peers named in the node's "fetched PATH (N bytes) from ..." lines,
    in order, once each (one or several per line).
    """
    names = [p for _, m in node.matching(FETCHED, since) for p in PEER.findall(m.group(3))]
    return ", ".join(dict.fromkeys(names)) or "?"


def texts(node: Node, since: float = 0.0) -> List[str]:
    return [line for t, line in node.lines if t >= since]
