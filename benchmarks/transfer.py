"""
Transfer benchmark: two real p2pshare nodes on loopback, against a raw
socket copy of the same bytes measured in the same run.

    python benchmarks/transfer.py [--size-mib 1024] [--files 10000] [--runs 3]

(a) one large file (default 1 GiB), between nodes with TLS (the default)
and with --no-tls, and (b) many small files (default 10,000 of 4 KiB,
with TLS) move from node A to node B.  The baseline is a plain
Python socket copy: C{socket.sendfile} on one side, C{recv_into} on the
other, written to disk.  Reported: MB/s, the ratio to the raw copy, files
per second, and each node's peak RSS (VmHWM).  Each node is a separate
C{twistd -n p2pshare} process, so the two sides use separate cores, as on
two machines.  Timing runs from the moment B logs its connection to A until
B logs the last file as verified.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

RAW_RECEIVER = r"""
import os, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 20)
view = memoryview(buf)
with open(sys.argv[1], "wb") as f:
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        f.write(view[:n])
    f.flush()
    os.fsync(f.fileno())
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raw_copy(path: str, workdir: str) -> float:
    """
    Seconds to copy C{path} over loopback with sendfile -> recv_into -> disk.
    """
    out = os.path.join(workdir, "raw.out")
    receiver = subprocess.Popen([sys.executable, "-c", RAW_RECEIVER, out],
                                stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        s.sendfile(f)
    receiver.wait()
    elapsed = time.perf_counter() - start
    os.unlink(out)
    return elapsed


class Node:
    """
    A twistd p2pshare process whose log lines are read as they arrive.
    """

    def __init__(self, name, share, port, peers=(), extra=(), tree=None):
        args = [sys.executable, TWISTD, "-n", "--pidfile=", "p2pshare",
                "--port", f"tcp:{port}:interface=127.0.0.1", "--share", share, "--no-discover",
                "--name", name, *extra]
        for peer in peers:
            args += ["--peer", peer]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if tree is not None:  # the code of another tree (a baseline), not the installed one
            env["PYTHONPATH"] = tree
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=share)
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, pattern, count=1, timeout=600.0):
        """
        Wait until C{count} lines match; return the time the last arrived.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [t for t, line in self.lines if regex.search(line)]
                if len(hits) >= count:
                    return hits[count - 1]
                if self.proc.poll() is not None:
                    raise RuntimeError("node exited:\n" + "\n".join(l for _, l in self.lines[-20:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(pattern)
                self.cond.wait(min(left, 1.0))

    def wait_total(self, pattern, total, timeout=600.0):
        """
        Wait until the numbers the matching lines carry add up to C{total}
        (a node may come in step more than once on the way); return the
        time the last one arrived.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [(t, int(m.group(1))) for t, line in self.lines
                        for m in [regex.search(line)] if m]
                if sum(n for _, n in hits) >= total:
                    return hits[-1][0]
                if self.proc.poll() is not None:
                    raise RuntimeError("node exited:\n" + "\n".join(l for _, l in self.lines[-20:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(pattern)
                self.cond.wait(min(left, 1.0))

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def node_transfer(source_dir: str, workdir: str, expect: int, extra=(), tree=None):
    """
    Move everything in C{source_dir} from a node A to a fresh node B.

    Returns (seconds, peak RSS of A, peak RSS of B).
    """
    dest = os.path.join(workdir, "dest")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    state_a = os.path.join(workdir, "state-a")
    a_port, b_port = free_port(), free_port()
    shutil.rmtree(state_a, ignore_errors=True)  # (each run from scratch, whichever tree)
    a = Node("A", source_dir, a_port, extra=("--state", state_a, *extra), tree=tree)
    b = None
    try:
        a.wait_for(r"first scan: ")
        b = Node("B", dest, b_port, peers=[f"127.0.0.1:{a_port}"], extra=extra, tree=tree)
        start = b.wait_for(r"connected to A ")
        end = b.wait_total(r"in step with peers: applied \d+ changes, fetched (\d+) files", expect)
        return end - start, a.peak_rss_mib(), b.peak_rss_mib()
    finally:
        for node in (b, a):
            if node is not None:
                node.stop()
        shutil.rmtree(dest, ignore_errors=True)


def make_big(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))


def make_small(directory: str, count: int, size: int) -> None:
    if os.path.isdir(directory) and len(os.listdir(directory)) >= min(count, 100):
        existing = sum(len(files) for _, _, files in os.walk(directory))
        if existing == count:
            return
    shutil.rmtree(directory, ignore_errors=True)
    for i in range(count):
        sub = os.path.join(directory, f"d{i // 1000:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of (a), alternating with the raw copy; medians are reported")
    parser.add_argument("--baseline-tree", default=None,
                        help="also run (a) with the code of this tree (a git worktree of an"
                             " earlier commit), in the same rounds, and report the ratio")
    parser.add_argument("--workdir", default=None,
                        help="where to keep the generated data (reused between runs)")
    args = parser.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="p2pbench-")
    os.makedirs(workdir, exist_ok=True)
    big_dir = os.path.join(workdir, "big")
    os.makedirs(big_dir, exist_ok=True)
    size = args.size_mib * 1024 * 1024
    big = os.path.join(big_dir, "big.bin")
    small_dir = os.path.join(workdir, "small")
    print(f"preparing data in {workdir} ...", flush=True)
    make_big(big, size)
    if args.files:
        make_small(small_dir, args.files, args.file_kib * 1024)

    modes = {"TLS": (), "plaintext": ("--no-tls",)}
    trees = {mode: None for mode in modes}
    if args.baseline_tree:
        base = os.path.abspath(args.baseline_tree)
        modes.update({"TLS, baseline": (), "plaintext, baseline": ("--no-tls",)})
        trees.update({"TLS, baseline": base, "plaintext, baseline": base})
    raws, rss = [], {}
    nodes = {mode: [] for mode in modes}
    for run in range(args.runs):
        line = []
        os.sync()  # so writeback from earlier runs does not slow this one
        raws.append(raw_copy(big, workdir))
        line.append(f"raw copy {size / raws[-1] / 1e6:.0f} MB/s")
        for mode, extra in modes.items():
            os.sync()
            seconds, rss_a, rss_b = node_transfer(big_dir, workdir, expect=1, extra=extra,
                                                  tree=trees[mode])
            nodes[mode].append(seconds)
            rss[mode] = max(rss.get(mode, 0.0), rss_a, rss_b)
            line.append(f"{mode} {size / seconds / 1e6:.0f} MB/s")
        print(f"  run {run + 1}: " + ", ".join(line), flush=True)
    raw_mbs = size / statistics.median(raws) / 1e6
    print(f"(a) {args.size_mib} MiB file, median of {args.runs}: raw copy {raw_mbs:.0f} MB/s",
          flush=True)
    for mode in modes:
        node_mbs = size / statistics.median(nodes[mode]) / 1e6
        print(f"    p2pshare, {mode}: {node_mbs:.0f} MB/s, ratio {node_mbs / raw_mbs:.2f}",
              flush=True)
    if args.baseline_tree:
        for mode in ("TLS", "plaintext"):
            ratio = statistics.median(nodes[mode + ", baseline"]) / statistics.median(nodes[mode])
            print(f"    {mode}: this tree's speed / the baseline's: {ratio:.2f}", flush=True)
    print("    peak RSS per node at most: " + ", ".join(f"{mode} {peak:.0f} MiB"
                                                   for mode, peak in rss.items()), flush=True)
    if args.files:
        os.sync()
        secs, rss_a, rss_b = node_transfer(small_dir, workdir, expect=args.files)
        print(f"(b) {args.files} files of {args.file_kib} KiB: {args.files / secs:.0f} files/s"
              f" ({secs:.1f}s); peak RSS A {rss_a:.0f} MiB, B {rss_b:.0f} MiB", flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
