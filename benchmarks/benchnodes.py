"""
Two real ``twistd -n p2pshare`` processes on loopback for
benchmarks/transfer.py: started and in step before anything is timed; a
file or tree is then dropped (renamed) into A's share, and B's log says when
it holds it verified.  A thread watching B's share notes when the first
bytes of a download land there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

from baselines import free_port
from labnodes import peak_rss_mib

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: Name prefix of a node's partial downloads (p2ptwisted.wire.RESERVED_PREFIX).
RESERVED_PREFIX = ".p2pshare"

FETCHED = r"in step with peers: applied \d+ changes, fetched (\d+) files"


class Node:
    """
    A twistd p2pshare process whose log lines are read as they arrive.
    """

    def __init__(self, name, share, state, port, peers=(), extra=(), tree=None):
        args = [sys.executable, TWISTD, "-n", "--pidfile=", "p2pshare",
                "--port", f"tcp:{port}:interface=127.0.0.1", "--share", share,
                "--state", state, "--no-discover", "--name", name, *extra]
        for peer in peers:
            args += ["--peer", peer]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if tree is not None:  # the code of another tree (a baseline), not the installed one
            env["PYTHONPATH"] = tree
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=share)
        self.lines: List[Tuple[float, str]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait_total(self, pattern, total, since=0, timeout=600.0) -> float:
        """
        Wait until the numbers the lines matching C{pattern} after line
        C{since} carry add up to C{total} (a pattern without a group counts
        lines); the time the last one arrived.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [(t, int(m.group(1)) if m.groups() else 1)
                        for t, line in self.lines[since:] for m in [regex.search(line)] if m]
                if sum(n for _, n in hits) >= total:
                    return hits[-1][0]
                if self.proc.poll() is not None:
                    raise RuntimeError("node exited:\n"
                                       + "\n".join(l for _, l in self.lines[-20:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(pattern)
                self.cond.wait(min(left, 1.0))

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FirstByte:
    """
    Watches a directory (polling every millisecond) for the first partial
    download holding data: when the first file bytes arrived.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.at: Optional[float] = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self._stop.is_set():
            try:
                for entry in os.scandir(self.directory):
                    if (entry.name.startswith(RESERVED_PREFIX)
                            and entry.stat(follow_symlinks=False).st_blocks > 0):
                        self.at = time.perf_counter()
                        return
                    if not entry.name.startswith(RESERVED_PREFIX) and entry.is_file():
                        self.at = time.perf_counter()  # (published before we looked)
                        return
            except OSError:
                pass
            time.sleep(0.001)

    def stop(self):
        self._stop.set()
        self.thread.join()


class Pair:
    """
    Nodes A and B, connected, each holding the other's (empty) index.
    """

    def __init__(self, workdir: str, extra=(), tree=None):
        self.share_a = os.path.join(workdir, "share-a")
        self.share_b = os.path.join(workdir, "share-b")
        for d in (self.share_a, self.share_b, os.path.join(workdir, "state-a"),
                  os.path.join(workdir, "state-b")):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        a_port, b_port = free_port(), free_port()
        self.a = Node("A", self.share_a, os.path.join(workdir, "state-a"), a_port, extra=extra,
                      tree=tree)
        self.b = None
        self.peak = float("nan")
        try:
            self.a.wait_total(r"first scan: ", 1)
            self.b = Node("B", self.share_b, os.path.join(workdir, "state-b"), b_port,
                          peers=[f"127.0.0.1:{a_port}"], extra=extra, tree=tree)
            self.b.wait_total(r"A \([0-9a-f]+\) .*its index is up to date here", 1)
            self.a.wait_total(r"B \([0-9a-f]+\) .*its index is up to date here", 1)
        except BaseException:
            self.stop()
            raise

    def drop(self, source: str, files: int) -> Tuple[float, float, float]:
        """
        Rename C{source} into A's share; wait until B holds its C{files}
        files verified.  (seconds from the drop to B's first file bytes,
        seconds from the drop to the last file verified, from the first
        byte to it.)
        """
        assert self.b is not None
        since = self.b.mark()
        watch = FirstByte(self.share_b)
        start = time.perf_counter()
        os.rename(source, os.path.join(self.share_a, os.path.basename(source)))
        try:
            end = self.b.wait_total(FETCHED, files, since=since)
        finally:
            watch.stop()
        first = watch.at if watch.at is not None else end
        return first - start, end - start, end - first

    def peak_rss_mib(self) -> float:
        """The larger peak RSS of the two nodes (read before they stop)."""
        return self.peak

    def stop(self):
        self.peak = max(n.peak_rss_mib() for n in (self.a, self.b) if n is not None)
        for node in (self.b, self.a):
            if node is not None:
                node.stop()
