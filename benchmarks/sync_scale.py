"""
How the sync core scales with the number of files: two folders on real
directories, each with its real sqlite index, joined in memory (entries
handed across, bytes copied from one share to the other, as the network
shell will), on the real reactor with disk work in a thread pool.

    python benchmarks/sync_scale.py --files 10000 --files 100000

Each size runs in a fresh process (so peak RSS is per size); the figures
are files per second from the first scan to B holding everything, the
ratio of each size's rate to the smallest size's, peak RSS, and a second
scan of an unchanged share (nothing hashed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def run_one(files: int, workdir: str) -> dict:
    from twisted.internet import reactor
    from twisted.internet.defer import succeed
    from twisted.internet.threads import deferToThread

    from p2ptwisted.apply import Disk
    from p2ptwisted.core.engine import SyncEngine
    from p2ptwisted.core.index import LocalIndex
    from p2ptwisted.scanner import Scanner
    from p2ptwisted.store import SqliteStore
    from p2ptwisted.sync import FolderSync

    sides = {}
    for name, me in (("a", "a" * 16), ("b", "b" * 16)):
        root = os.path.join(workdir, name)
        state = os.path.join(root, ".p2pshare")
        os.makedirs(state)
        store = SqliteStore.open(state)
        scanner = Scanner(root, state, store)
        engine = SyncEngine(LocalIndex(store, me), store, ignored=scanner.ignored)
        sides[name] = dict(root=root, store=store, engine=engine, scanner=scanner,
                           disk=Disk(root, state))
    a, b = sides["a"], sides["b"]
    for i in range(files):
        d = os.path.join(a["root"], f"d{i % 1000:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
            f.write(b"%d\n" % i)
    old = time.time() - 60
    for top, _, names in os.walk(a["root"]):
        for n in names:
            os.utime(os.path.join(top, n), (old, old))

    def fetch(action, sources):
        src = os.path.join(a["root"], action.path)
        directory = os.path.dirname(os.path.join(b["root"], action.path))
        os.makedirs(directory, exist_ok=True)
        tmp = ".p2pshare-tmp-" + os.path.basename(action.path)
        shutil.copyfile(src, os.path.join(directory, tmp))
        return succeed(tmp)

    def flow(sender, receiver, sname, rname):
        while True:
            entries = sender["engine"].outgoing(rname, limit=500)
            if not entries:
                return
            receiver["engine"].entries_received(sname, entries, int(reactor.seconds()))
            receiver["sync"].kick()

    a["sync"] = FolderSync(a["engine"], a["scanner"], a["disk"], reactor, fetch=fetch,
                           announce=lambda: flow(a, b, "a", "b"), run_blocking=deferToThread)
    b["sync"] = FolderSync(b["engine"], b["scanner"], b["disk"], reactor, fetch=fetch,
                           announce=lambda: flow(b, a, "b", "a"), run_blocking=deferToThread)
    ha, hb = a["engine"].peer_connected("b"), b["engine"].peer_connected("a")
    a["engine"].hello_received("b", hb)
    b["engine"].hello_received("a", ha)
    result = {}
    started = time.perf_counter()

    def check():
        have = sum(1 for _ in b["store"].local_paths())
        if have >= files + 1000 and b["engine"].in_sync():
            result["seconds"] = time.perf_counter() - started
            rescan_started = time.perf_counter()
            d = a["sync"].rescan()

            def rescanned(n):
                result["rescan_seconds"] = time.perf_counter() - rescan_started
                result["rescan_changes"] = n
                reactor.stop()
            d.addCallback(rescanned)
            return
        reactor.callLater(0.2, check)

    a["sync"].rescan()
    reactor.callLater(0.2, check)
    reactor.run()
    result["files"] = files
    result["rate"] = files / result["seconds"]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, action="append")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        work = tempfile.mkdtemp(prefix="p2p-sync-scale-")
        try:
            print(json.dumps(run_one(args.one, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    sizes = args.files or [10_000, 100_000]
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["rate"]
    print(f"{'files':>8} {'seconds':>8} {'files/s':>8} {'vs first':>8} {'peak RSS':>9}"
          f" {'rescan s':>8} {'changes':>7}")
    for r in rows:
        print(f"{r['files']:>8} {r['seconds']:>8.1f} {r['rate']:>8.0f} {r['rate'] / base:>8.2f}"
              f" {r['peak_rss_mib']:>8.0f}M {r['rescan_seconds']:>8.2f} {r['rescan_changes']:>7}")


if __name__ == "__main__":
    main()
