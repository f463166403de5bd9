"""
Transfer benchmark (issue 13): p2ptwisted against what a user would use
instead, on the same bytes, in one run of alternating rounds.

    python benchmarks/transfer.py [--size-mib 1024] [--files 10000] [--runs 3]
    python benchmarks/transfer.py --baseline-tree ../base     # also an older tree

Each round runs every case once, in an order that rotates from round to
round (the case that follows another's heavy disk writes is not always the
same one), with a sync before each.  Cases:

- raw: a plain socket copy of the big file (sendfile -> recv_into -> write,
  fsync), the yardstick.
- curl: curl from ``python -m http.server`` (plaintext, unverified).
- rsync: the rsync daemon (``rsync -a --fsync``, plaintext).
- TLS / plaintext: two ``twistd -n p2pshare`` nodes (the default, and
  ``--no-tls``), started and in step; the big file is renamed into A's
  share, and timed until B logs it verified (after fsync); also from the
  moment its first bytes land in B's share, and the seconds from the drop
  to that first byte.  Then a 4 KiB file is dropped: seconds until B has it.
- small files: a tree of N files of 4 KiB (default 10,000) with the rsync
  daemon, and dropped into a TLS node's share; files per second.

Reported: medians, and per-round ratios to the raw copy (MB/s) or to rsync
(files/s), medians of those; each node's peak RSS (VmHWM).  curl and rsync
are skipped with the reason where they are not installed (Debian:
``apt-get install -y curl rsync``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from baselines import HttpServer, RsyncDaemon, raw_copy  # noqa: E402
from benchnodes import Pair  # noqa: E402

MB = 1e6


def make_big(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))


def make_small(directory: str, count: int, size: int) -> None:
    if os.path.isdir(directory):
        if sum(len(files) for _, _, files in os.walk(directory)) == count:
            return
        shutil.rmtree(directory)
    for i in range(count):
        sub = os.path.join(directory, f"d{i // 1000:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="p2pbench-")
        self.data = os.path.join(self.workdir, "data")
        self.stage = os.path.join(self.workdir, "stage")
        os.makedirs(self.data, exist_ok=True)
        self.size = args.size_mib << 20
        self.big = os.path.join(self.data, "big.bin")
        self.tiny = os.path.join(self.data, "tiny.bin")
        self.small = os.path.join(self.data, "small")
        print(f"preparing data in {self.workdir} ...", flush=True)
        make_big(self.big, self.size)
        make_big(self.tiny, 4096)
        if args.files:
            make_small(self.small, args.files, args.file_kib << 10)
        self.results: Dict[str, List[float]] = {}
        self.rss: Dict[str, float] = {}
        self.http = HttpServer(self.data)
        self.rsync = RsyncDaemon(self.workdir, {"data": self.data})

    def note(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)

    def staged(self, source: str, name: str) -> str:
        """
        A hard-linked copy of C{source} to drop into a share: the share gets
        a fresh name whose data is already on disk, as a user's ``mv``.
        """
        shutil.rmtree(self.stage, ignore_errors=True)
        os.makedirs(self.stage)
        target = os.path.join(self.stage, name)
        if os.path.isdir(source):
            subprocess.run(["cp", "-al", source, target], check=True)
        else:
            os.link(source, target)
        return target

    # -- cases -------------------------------------------------------------------------

    def raw(self, _round: int) -> str:
        seconds = raw_copy(self.big, self.workdir)
        self.note("raw", self.size / seconds / MB)
        return f"raw {self.size / seconds / MB:.0f} MB/s"

    def curl(self, _round: int) -> str:
        seconds = self.http.fetch("big.bin", os.path.join(self.workdir, "curl.out"))
        self.note("curl", self.size / seconds / MB)
        return f"curl {self.size / seconds / MB:.0f} MB/s"

    def rsync_big(self, _round: int) -> str:
        seconds = self.rsync.fetch("data/big.bin", os.path.join(self.workdir, "rsync.out"))
        self.note("rsync", self.size / seconds / MB)
        return f"rsync {self.size / seconds / MB:.0f} MB/s"

    def rsync_small(self, _round: int) -> str:
        seconds = self.rsync.fetch("data/small/", os.path.join(self.workdir, "rsync-small"))
        self.note("rsync files/s", self.args.files / seconds)
        return f"rsync small {self.args.files / seconds:.0f} files/s"

    def node_case(self, label: str, extra=(), tree=None) -> Callable[[int], str]:
        def case(_round: int) -> str:
            pair = Pair(self.workdir, extra=extra, tree=tree)
            try:
                first, total, after_first = pair.drop(self.staged(self.big, "big.bin"), 1)
                _, tiny, _ = pair.drop(self.staged(self.tiny, "tiny.bin"), 1)
            finally:
                pair.stop()
            self.rss[label] = max(self.rss.get(label, 0.0), pair.peak_rss_mib())
            self.note(label, self.size / total / MB)
            self.note(label + " from first byte", self.size / after_first / MB)
            self.note(label + " first byte s", first)
            self.note(label + " 4 KiB file s", tiny)
            return (f"{label} {self.size / total / MB:.0f} MB/s (first byte after {first:.2f} s;"
                    f" 4 KiB file {tiny:.2f} s)")
        return case

    def node_small(self, _round: int) -> str:
        pair = Pair(self.workdir)
        try:
            _, total, _ = pair.drop(self.staged(self.small, "small"), self.args.files)
        finally:
            pair.stop()
        self.rss["TLS, small files"] = max(self.rss.get("TLS, small files", 0.0),
                                           pair.peak_rss_mib())
        self.note("TLS files/s", self.args.files / total)
        return f"TLS small {self.args.files / total:.0f} files/s"

    def cases(self) -> Dict[str, Callable[[int], str]]:
        cases: Dict[str, Callable[[int], str]] = {"raw": self.raw}
        if not self.http.reason:
            cases["curl"] = self.curl
        if not self.rsync.reason:
            cases["rsync"] = self.rsync_big
        cases["TLS"] = self.node_case("TLS")
        cases["plaintext"] = self.node_case("plaintext", ("--no-tls",))
        if self.args.baseline_tree:
            base = os.path.abspath(self.args.baseline_tree)
            cases["TLS, baseline"] = self.node_case("TLS, baseline", tree=base)
            cases["plaintext, baseline"] = self.node_case("plaintext, baseline", ("--no-tls",),
                                                          tree=base)
        if self.args.files:
            if not self.rsync.reason:
                cases["rsync small"] = self.rsync_small
            cases["TLS small"] = self.node_small
        return cases

    def run(self) -> None:
        for reason in (self.http.reason, self.rsync.reason):
            if reason:
                print(f"skipped: {reason}", flush=True)
        cases = list(self.cases().items())
        for r in range(self.args.runs):
            shift = r % len(cases)
            line = []
            for _, case in cases[shift:] + cases[:shift]:
                os.sync()  # so writeback from the case before does not slow this one
                line.append(case(r))
            print(f"  round {r + 1}: " + "; ".join(line), flush=True)

    # -- report ------------------------------------------------------------------------

    def median(self, key: str) -> float:
        return statistics.median(self.results[key])

    def ratio(self, key: str, base: str) -> float:
        """The median of the per-round ratios of C{key} to C{base}."""
        return statistics.median(a / b for a, b in zip(self.results[key], self.results[base]))

    def report(self) -> None:
        runs = self.args.runs
        print(f"\n| figure (median of {runs} rounds) | value | ratio | target |")
        print("| --- | --- | --- | --- |")
        print(f"| raw copy, {self.args.size_mib} MiB | {self.median('raw'):.0f} MB/s | 1.00 | |")
        targets = {"TLS": ">= 0.85", "plaintext": ">= 0.95"}
        for key in ("curl", "rsync", "TLS", "TLS from first byte", "plaintext",
                    "plaintext from first byte", "TLS, baseline", "plaintext, baseline"):
            if key in self.results:
                print(f"| {key} | {self.median(key):.0f} MB/s | {self.ratio(key, 'raw'):.2f}"
                      f" | {targets.get(key, '')} |")
        for key in ("TLS", "plaintext"):
            if key + ", baseline" in self.results:
                print(f"| {key}: this tree / the baseline | | "
                      f"{self.ratio(key, key + ', baseline'):.2f} | |")
        for key in ("TLS", "plaintext"):
            print(f"| {key}: drop to first byte | {self.median(key + ' first byte s'):.2f} s"
                  f" | | {'<= 0.3 s' if key == 'TLS' else ''} |")
            print(f"| {key}: 4 KiB file, drop to verified | "
                  f"{self.median(key + ' 4 KiB file s'):.2f} s | | |")
        if "TLS files/s" in self.results:
            files = f"{self.args.files} x {self.args.file_kib} KiB"
            if "rsync files/s" in self.results:
                print(f"| rsync, {files} | {self.median('rsync files/s'):.0f} files/s | 1.00 | |")
                ratio = f"{self.ratio('TLS files/s', 'rsync files/s'):.2f}"
            else:
                ratio = "(no rsync)"
            print(f"| TLS, {files} | {self.median('TLS files/s'):.0f} files/s | {ratio}"
                  " | >= 1.5 |")
        print("| peak RSS per node | " + ", ".join(f"{k} {v:.0f} MiB" for k, v in self.rss.items())
              + " | | <= 64 MiB |", flush=True)

    def close(self) -> None:
        self.http.stop()
        self.rsync.stop()
        if not self.args.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="the big file's size")
    parser.add_argument("--files", type=int, default=10000, help="small files (0: none)")
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--baseline-tree", default=None,
                        help="also run the node cases with the code of this tree (a git"
                             " worktree of an earlier commit), and report the ratio")
    parser.add_argument("--workdir", default=None,
                        help="where to keep the generated data (reused between runs)")
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.run()
        bench.report()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
