"""
Block-level transfer benchmarks (issue 12): real ``twistd -n p2pshare``
nodes in network namespaces on one bridge (benchmarks/netlab.py), each
figure against a baseline measured in the same run.

    python benchmarks/blocks.py --all                      # about 5 minutes
    python benchmarks/blocks.py swarm [--hosts 6] [--size-mib 200]
    python benchmarks/blocks.py multi [--sources 3] [--size-mib 200]
    python benchmarks/blocks.py delta [--delta-mib 1024] [--edit-kib 1024]
    python benchmarks/blocks.py --all --size-mib 20 --delta-mib 64   # a quick look

swarm: N hosts (default 6), each link shaped to 100 Mbit/s both ways, all
nodes up and in a full mesh; a file of random bytes is renamed into host
1's share; the time until every other host holds it under its final name
(a node puts it there only once verified), against the same with 2 hosts.
Target: at most 2x.  Also per host: who it fetched from, the bytes its link
sent, and what it logged as served (``served N files (B bytes) to PEER``).

multi: 3 sources (links shaped to 100 Mbit/s) already holding the same
file, one downloader (link unshaped) starting empty and dialling all of
them; from its first connection until it holds the file, against 1 source.
Target: at least 2.5x as fast.

delta: 2 hosts, links unshaped; a file (default 1 GiB) synced from A to B,
then 1 MiB about its middle overwritten on A (same size), then the file
renamed on A.  For each, the file bytes B received by its own count (its
``in step with peers: ... fetched N files (B bytes)`` line, and any
``reused R bytes`` it adds), and the bytes its link received.  Targets:
the update at most the blocks the edit touches (2 of 1 MiB: the block size
is the smallest power of two from 128 KiB to 16 MiB keeping the file under
2,000 blocks) plus index overhead; the rename 0.

Every node's peak RSS (VmHWM) is reported.  Needs root and iproute2 (ip,
tc); skipped with the reason otherwise.  --tree sets the code measured
(PYTHONPATH of the nodes; default: the tree holding this script).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

import labnodes
import netlab
from labnodes import (
    IN_STEP, SCAN, SERVED, Node, fetched_from, in_step_bytes, served_by_peer, start_node, texts,
    wait_mesh, wait_quiet, wait_until,
)
from netlab import Lab

MiB = 1 << 20
NAME = "big.bin"


def block_size(size: int) -> int:
    """
    Issue 12's rule: the smallest power of two from 128 KiB to 16 MiB
    that keeps the file under 2,000 blocks.
    """
    bs = 128 * 1024
    while size >= 2000 * bs and bs < 16 * MiB:
        bs *= 2
    return bs


def touched_blocks(offset: int, length: int, bs: int) -> int:
    return (offset + length - 1) // bs - offset // bs + 1


def make_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))


def digest(path: str) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def size_of(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


class Bench:
    """
    The scenarios, sharing the options, the work directory and the table.
    """

    def __init__(self, args, workdir: str):
        self.args = args
        self.workdir = workdir
        self.rows: List[tuple] = []  # (scenario, figure, value, target, verdict)
        self.peaks: List[str] = []

    def row(self, scenario: str, figure: str, value: str, target: str = "",
            met: Optional[bool] = None) -> None:
        verdict = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((scenario, figure, value, target, verdict))

    def say(self, text: str) -> None:
        print(text, flush=True)

    def node(self, lab: Lab, run: str, i: int, peers: List[int]) -> Node:
        base = os.path.join(self.workdir, run, f"h{i}")
        return start_node(lab, i, os.path.join(base, "share"), os.path.join(base, "state"),
                          os.path.join(self.workdir, run, f"h{i}.log"), peers=peers,
                          tree=self.args.tree, python=self.args.python)

    def share(self, run: str, i: int) -> str:
        return os.path.join(self.workdir, run, f"h{i}", "share")

    def rss(self, label: str, nodes: List[Node]) -> None:
        """
        Print each node's peak RSS; remember the largest for the table.
        """
        peaks = {n.name: n.peak_rss_mib() for n in nodes}
        self.say("  peak RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        self.peaks.append(f"{max(peaks.values()):.0f} MiB ({label})")

    def rss_row(self, scenario: str) -> None:
        self.row(scenario, "peak RSS, largest node", ", ".join(self.peaks),
                 "issue 12: <= 64 MiB for a 4 GiB file")
        self.peaks = []

    # swarm

    def swarm_run(self, lab: Lab, hosts: int, data: str, size: int) -> Dict:
        run = f"swarm{hosts}"
        nodes = [self.node(lab, run, i, [] if i == 1 else [1]) for i in range(1, hosts + 1)]
        wait_mesh(nodes, self.args.timeout)
        staged = os.path.join(self.workdir, run, "h1", NAME)
        shutil.copyfile(data, staged)
        before = {i: lab.link_bytes(i) for i in range(1, hosts + 1)}
        start = time.monotonic()
        os.rename(staged, os.path.join(self.share(run, 1), NAME))
        done: Dict[int, float] = {}

        def everyone(now: float) -> bool:
            for i in range(2, hosts + 1):
                if i not in done and size_of(os.path.join(self.share(run, i), NAME)) == size:
                    done[i] = now
            return len(done) == hosts - 1
        end = wait_until(everyone, nodes, f"{hosts} hosts to hold the file", self.args.timeout)
        wait_quiet(nodes, SERVED, end, 3.0)
        sent = {i: lab.link_bytes(i)["sent"] - before[i]["sent"] for i in range(1, hosts + 1)}
        scan = [float(m.group(1)) for _, m in nodes[0].matching(SCAN, start)]
        self.say(f"  {hosts} hosts: every other host holds it after {end - start:.1f} s"
                 f" (host 1's scan took {scan[0] if scan else float('nan'):.1f} s)")
        for i, node in enumerate(nodes, 1):
            served = served_by_peer(texts(node, start))
            self.say(f"    h{i}: " + (f"done at {done[i] - start:.1f} s, fetched from "
                                      f"{fetched_from(node, start)}; " if i in done else "")
                     + f"link sent {sent[i] / MiB:.0f} MiB ({sent[i] / size:.2f} copies); "
                     f"logged served {sum(served.values()) / MiB:.0f} MiB"
                     + (f" ({', '.join(f'{k}: {v / MiB:.0f}' for k, v in served.items())})"
                        if served else ""))
        self.rss(f"{hosts} hosts", nodes)
        want = digest(data)
        bad = [i for i in done if digest(os.path.join(self.share(run, i), NAME)) != want]
        if bad:
            raise netlab.LabError(f"hosts {bad} hold different bytes")
        lab.stop_nodes()
        source_served = sum(served_by_peer(texts(nodes[0], start)).values())
        return {"seconds": end - start, "source_sent": sent[1], "source_served": source_served}

    def swarm(self) -> None:
        hosts, size = self.args.hosts, self.args.size_mib * MiB
        self.say(f"swarm: {hosts} hosts at {self.args.rate_mbit:g} Mbit/s,"
                 f" {self.args.size_mib} MiB file")
        data = os.path.join(self.workdir, "swarm.data")
        make_random(data, size)
        with Lab(hosts, self.workdir, rate_mbit=self.args.rate_mbit) as lab:
            one = self.swarm_run(lab, 2, data, size)
            many = self.swarm_run(lab, hosts, data, size)
        os.unlink(data)
        ratio = many["seconds"] / one["seconds"]
        self.row("swarm", "2 hosts: the other holds it", f"{one['seconds']:.1f} s")
        self.row("swarm", f"{hosts} hosts: all {hosts - 1} others hold it",
                 f"{many['seconds']:.1f} s")
        self.row("swarm", f"ratio {hosts} hosts / 2 hosts", f"{ratio:.2f}", "<= 2", ratio <= 2)
        self.row("swarm", "host 1 uploaded (link / logged served)",
                 f"{many['source_sent'] / size:.2f} / {many['source_served'] / size:.2f} copies",
                 f"source-only would be {hosts - 1}")
        self.rss_row("swarm")

    # multi

    def multi_run(self, lab: Lab, sources: List[int], downloader: int, data: str,
                  size: int) -> tuple:
        run = f"multi{len(sources)}"
        for i in sources:
            os.makedirs(self.share(run, i))
            shutil.copy2(data, os.path.join(self.share(run, i), NAME))  # same bytes and mtime
        nodes = [self.node(lab, run, i, [] if i == sources[0] else [sources[0]])
                 for i in sources]
        wait_mesh(nodes, self.args.timeout)
        wait_quiet(nodes, re.compile(""), 0.0, 1.0)  # same bytes on each: versions merge
        before = {i: lab.link_bytes(i)["sent"] for i in sources}
        node = self.node(lab, run, downloader, sources)
        nodes.append(node)
        path = os.path.join(self.share(run, downloader), NAME)
        end = wait_until(lambda now: size_of(path) == size, nodes, "the download",
                         self.args.timeout)
        start = node.matching(labnodes.CONNECTED)[0][0]
        sent = {i: lab.link_bytes(i)["sent"] - before[i] for i in sources}
        self.say(f"  {len(sources)} source(s): {end - start:.1f} s from the first connection"
                 f" ({size / (end - start) * 8 / 1e6:.0f} Mbit/s); fetched from"
                 f" {fetched_from(node)}; sources' links sent "
                 + ", ".join(f"h{i} {v / MiB:.0f} MiB" for i, v in sent.items()))
        self.rss(f"{len(sources)} source(s)", nodes)
        if digest(path) != digest(data):
            raise netlab.LabError("the downloader holds different bytes")
        lab.stop_nodes()
        return end - start, sent

    def multi(self) -> None:
        count, size = self.args.sources, self.args.size_mib * MiB
        self.say(f"multi: {count} sources at {self.args.rate_mbit:g} Mbit/s, downloader"
                 f" unshaped, {self.args.size_mib} MiB file")
        data = os.path.join(self.workdir, "multi.data")
        make_random(data, size)
        downloader = count + 1
        with Lab(downloader, self.workdir, rate_mbit=self.args.rate_mbit,
                 rates={downloader: None}) as lab:
            one, _ = self.multi_run(lab, [1], downloader, data, size)
            many, sent = self.multi_run(lab, list(range(1, count + 1)), downloader, data, size)
        os.unlink(data)
        speedup = one / many
        self.row("multi", "1 source", f"{one:.1f} s")
        self.row("multi", f"{count} sources", f"{many:.1f} s")
        self.row("multi", "speedup", f"{speedup:.2f}x", ">= 2.5x", speedup >= 2.5)
        self.row("multi", f"{count} sources: share each link sent",
                 " / ".join(f"{v / size:.2f}" for v in sent.values()), f"about 1/{count} each")
        self.rss_row("multi")

    # delta

    def delta_step(self, lab: Lab, a: Node, b: Node, what: str, done) -> Dict:
        """
        Wait for B to show a change made on A; what its in-step lines and
        its link say it received for it.
        """
        mark = time.monotonic()
        before = lab.link_bytes(2)["received"]
        end = wait_until(lambda now: bool(b.matching(IN_STEP, mark)) and done(), [a, b],
                         what, self.args.timeout, interval=0.1)
        wait_quiet([b], IN_STEP, end, 1.0)
        got = in_step_bytes(texts(b, mark))
        got["link"] = lab.link_bytes(2)["received"] - before
        got["seconds"] = end - mark
        reused = f", reused {got['reused']:,}" if got["reused"] else ""
        self.say(f"  {what}: {got['seconds']:.1f} s; B fetched {got['files']} files,"
                 f" {got['bytes']:,} bytes{reused}; its link received {got['link']:,} bytes")
        return got

    def delta(self) -> None:
        size, edit = self.args.delta_mib * MiB, self.args.edit_kib * 1024
        bs = block_size(size)
        offset = size // 2 - edit // 2
        touched = touched_blocks(offset, edit, bs)
        overhead = (size // bs + 1) * 64 + 64 * 1024
        self.say(f"delta: {self.args.delta_mib} MiB file, {self.args.edit_kib} KiB edited at"
                 f" byte {offset:,} (block size {bs // 1024} KiB: {touched} blocks touched)")
        run = "delta"
        a_share, b_share = self.share(run, 1), self.share(run, 2)
        os.makedirs(a_share)
        a_path, b_path = os.path.join(a_share, NAME), os.path.join(b_share, NAME)
        make_random(a_path, size)
        with Lab(2, self.workdir, rate_mbit=None) as lab:
            a = self.node(lab, run, 1, [])
            wait_until(lambda now: bool(a.matching(labnodes.FIRST_SCAN)), [a], "A's scan",
                       self.args.timeout)
            b = self.node(lab, run, 2, [1])
            first = self.delta_step(lab, a, b, "first sync", lambda: size_of(b_path) == size)
            new = os.urandom(edit)
            with open(a_path, "r+b") as f:
                f.seek(offset)
                f.write(new)

            def edited() -> bool:
                try:
                    with open(b_path, "rb") as f:
                        f.seek(offset)
                        return f.read(edit) == new
                except FileNotFoundError:
                    return False
            update = self.delta_step(lab, a, b, "update", edited)
            if digest(a_path) != digest(b_path):
                raise netlab.LabError("B's copy differs from A's after the update")
            renamed = os.path.join(b_share, "renamed.bin")
            os.rename(a_path, os.path.join(a_share, "renamed.bin"))
            moved = self.delta_step(lab, a, b, "rename",
                                    lambda: size_of(renamed) == size and size_of(b_path) < 0)
            self.rss("A and B", [a, b])
            lab.stop_nodes()
        limit = touched * bs + overhead
        self.row("delta", "first sync", f"{first['seconds']:.1f} s, {first['bytes']:,} bytes")
        reused = f" (reused {update['reused']:,})" if update["reused"] else ""
        self.row("delta", f"update of {self.args.edit_kib} KiB: bytes B fetched",
                 f"{update['bytes']:,}{reused}",
                 f"<= {limit:,} ({touched} x {bs // 1024} KiB + {overhead // 1024} KiB index)",
                 update["bytes"] <= limit)
        self.row("delta", "update: bytes B's link received", f"{update['link']:,}")
        self.row("delta", "rename: bytes B fetched", f"{moved['bytes']:,}", "0",
                 moved["bytes"] == 0)
        self.row("delta", "rename: bytes B's link received", f"{moved['link']:,}")
        self.rss_row("delta")

    def table(self) -> str:
        head = ("scenario", "figure", "value", "target", "verdict")
        lines = [head, ("---",) * 5] + self.rows
        return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("scenarios", nargs="*", metavar="swarm|multi|delta",
                        help="which to run (or --all)")
    parser.add_argument("--all", action="store_true", help="swarm, multi and delta")
    parser.add_argument("--hosts", type=int, default=6, help="swarm: hosts in all")
    parser.add_argument("--size-mib", type=int, default=200, help="swarm and multi: file size")
    parser.add_argument("--sources", type=int, default=3, help="multi: sources")
    parser.add_argument("--delta-mib", type=int, default=1024, help="delta: file size")
    parser.add_argument("--edit-kib", type=int, default=1024, help="delta: bytes overwritten")
    parser.add_argument("--rate-mbit", type=float, default=100.0, help="shaped links' rate")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    parser.add_argument("--tree", default=netlab.TREE, help="code measured (PYTHONPATH)")
    parser.add_argument("--python", default=sys.executable, help="its venv's python")
    parser.add_argument("--keep", help="work here and keep the logs (data files are removed)")
    args = parser.parse_args(argv)
    chosen = ["swarm", "multi", "delta"] if args.all else list(dict.fromkeys(args.scenarios))
    if not chosen or not set(chosen) <= {"swarm", "multi", "delta"}:
        parser.error("name scenarios (swarm, multi, delta) or give --all")
    if args.hosts < 3 or args.sources < 2 or max(args.hosts, args.sources + 1) > 250:
        parser.error("--hosts from 3 to 250, --sources from 2 to 249")
    sizes = (args.size_mib, args.delta_mib, args.edit_kib)
    if min(sizes) < 1 or args.edit_kib > 1024 * args.delta_mib:
        parser.error("sizes at least 1, and --edit-kib at most the --delta-mib file")
    why = netlab.unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    try:
        code = labnodes.code_path(args.tree, args.python)
    except netlab.LabError as e:
        print(e, file=sys.stderr)
        return 1
    if os.path.realpath(code) != os.path.realpath(args.tree):
        print(f"the nodes would run the code in {code}, not {args.tree}", file=sys.stderr)
        return 1
    netlab.on_signals()
    workdir = args.keep or tempfile.mkdtemp(prefix="p2plab-blocks-")
    os.makedirs(workdir, exist_ok=True)
    bench = Bench(args, workdir)
    began = time.monotonic()
    status = 0
    try:
        for name in chosen:
            getattr(bench, name)()
    except KeyboardInterrupt:
        print("interrupted; the lab and the nodes are removed", file=sys.stderr)
        status = 130
    except netlab.LabError as e:
        print(f"failed: {e}", file=sys.stderr)
        status = 1
    finally:
        if bench.rows:
            print(f"\n{bench.table()}\n\n({time.monotonic() - began:.0f} s in all; code from"
                  f" {args.tree})", flush=True)
        if args.keep:
            for root, _, files in os.walk(workdir):
                for f in files:
                    if not f.endswith(".log"):
                        os.unlink(os.path.join(root, f))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
