"""
Sync at scale between two real nodes: twistd processes on 127.0.0.1, TLS,
each with its own share and state, as a user runs them.

    python benchmarks/sync_nodes.py                 # 10,000 then 100,000 files
    python benchmarks/sync_nodes.py --files 20000 --files 100000

For each size, in a fresh directory: A's share holds that many small
files in 1,000 directories; A starts and scans; B starts with --peer A and
an empty share.  Measured:

  - files per second, from B's start to B holding every file, and the
    ratio of each size's rate to the first size's (measured in the same
    run: the machines are noisy, so only ratios mean much);
  - a file written on A once B holds a tenth of the files: seconds until
    it is on B (it must not wait behind the batch);
  - peak RSS of each node (VmHWM);
  - B restarted with nothing changed, counted from starting its process:
    seconds until the indexes are exchanged again (each node logs the
    other's index as up to date), seconds until B's first scan is done
    (it runs meanwhile: a restarted node does not wait for it), and how
    many files that scan hashed (none, if the index survived).

The share is read by polling the file system (this is a benchmark, not a
test); the nodes' own log lines say when a scan and an index exchange end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Node:
    def __init__(self, workdir: str, name: str, peer: str = ""):
        self.share = os.path.join(workdir, name)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.name = name
        self.peer = peer
        self.proc = None
        self.port = None

    def start(self) -> None:
        os.makedirs(self.share, exist_ok=True)
        args = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=",
                "p2pshare",
                "--port", "tcp:0:interface=127.0.0.1", "--share", self.share,
                "--name", self.name, "--no-discover"]
        if self.peer:
            args += ["--peer", self.peer]
        self.log = open(self.log_path, "a")
        self.mark = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        m = self.wait_for(r"listening for peers on 127\.0\.0\.1:(\d+)", 60)
        self.port = int(m.group(1))

    def lines(self) -> str:
        with open(self.log_path) as f:
            f.seek(self.mark)
            return f.read()

    def wait_for(self, pattern: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.lines(), re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.lines()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no {pattern!r} in {timeout}s:\n{self.lines()[-3000:]}")

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()


def count_files(root: str) -> int:
    n = 0
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".p2pshare")]
        n += sum(1 for f in files if not f.startswith(".p2pshare"))
    return n


def run_one(files: int, workdir: str) -> dict:
    a, b = Node(workdir, "a"), None
    for i in range(files):
        d = os.path.join(a.share, f"d{i % 1000:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
            f.write(b"%d\n" % i)
    old = time.time() - 60
    for top, _, names in os.walk(a.share):
        for n in names:
            os.utime(os.path.join(top, n), (old, old))
    result = {"files": files}
    try:
        a.start()
        a.wait_for(r"first scan: ", 600)
        b = Node(workdir, "b", peer=f"127.0.0.1:{a.port}")
        started = time.monotonic()
        b.start()
        late_at = late_seen = None
        while True:
            have = count_files(b.share)
            now = time.monotonic()
            if late_at is None and have >= files // 10:
                with open(os.path.join(a.share, "late.txt"), "wb") as f:
                    f.write(b"late\n")
                late_at = now
            if late_at is not None and late_seen is None and os.path.exists(
                    os.path.join(b.share, "late.txt")):
                late_seen = now
            if have >= files + 1 and late_seen is not None:
                break
            if now - started > 3600:
                raise TimeoutError("B never caught up")
            time.sleep(0.2)
        result["seconds"] = time.monotonic() - started
        result["late_seconds"] = late_seen - late_at
        result["rss_a"] = a.peak_rss_mib()
        result["rss_b"] = b.peak_rss_mib()
        b.wait_for(r"in step with peers", 60)
        b.stop()
        a.mark = os.path.getsize(a.log_path)
        restarted = time.monotonic()
        b.start()
        waits = {"exchange": [(b, r"a \(\w+\) at .* shares \d+ files .*its index is up to date"),
                              (a, r"b \(\w+\) at .* shares \d+ files .*its index is up to date")],
                 "scan": [(b, r"first scan: .* (\d+) files hashed")]}
        seen = {}
        deadline = restarted + 120
        while len(seen) < len(waits):
            if time.monotonic() > deadline:
                raise TimeoutError(f"B's restart: only {sorted(seen)} in 120s")
            for what, patterns in waits.items():
                if what not in seen and all(re.search(p, n.lines(), re.M) for n, p in patterns):
                    seen[what] = time.monotonic() - restarted
            time.sleep(0.02)
        result["exchange_seconds"] = seen["exchange"]
        result["scan_seconds"] = seen["scan"]
        m = re.search(waits["scan"][0][1], b.lines(), re.M)
        result["restart_hashed"] = int(m.group(1))
    finally:
        for node in (a, b):
            if node is not None:
                node.stop()
    result["rate"] = files / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, action="append")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    sizes = args.files or [10_000, 100_000]
    rows = []
    for n in sizes:
        work = tempfile.mkdtemp(prefix="p2p-sync-nodes-")
        try:
            rows.append(run_one(n, work))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        r = rows[-1]
        print(f"{n} files: {r['seconds']:.1f}s", file=sys.stderr)
    base = rows[0]["rate"]
    print(f"{'files':>8} {'seconds':>8} {'files/s':>8} {'vs first':>8} {'late file':>9}"
          f" {'RSS A':>7} {'RSS B':>7} {'exchange':>8} {'scan':>7} {'hashed':>6}")
    for r in rows:
        print(f"{r['files']:>8} {r['seconds']:>8.1f} {r['rate']:>8.0f} {r['rate'] / base:>8.2f}"
              f" {r['late_seconds']:>8.2f}s {r['rss_a']:>6.0f}M {r['rss_b']:>6.0f}M"
              f" {r['exchange_seconds']:>7.2f}s {r['scan_seconds']:>6.2f}s"
              f" {r['restart_hashed']:>6}")


if __name__ == "__main__":
    main()
