"""
Index store benchmark: L{p2ptwisted.store.SqliteStore} against
L{p2ptwisted.core.index.MemoryStore} measured in the same run.

    python benchmarks/index_store.py [--files 100000] [--batch 1000] [--lookups 10000]
                                     [--runs 3]

For each store, at --files entries and at a tenth of it (to show that the
cost per entry does not grow with the index), in a fresh process each (so
peak RSS is that store's alone):

  - put: the entries, in batches of --batch (one put per batch, as a sync
    writes them);
  - since: page through the whole index with C{since(last, batch)};
  - remote_put: the same paths for two peers, in batches;
  - get, remote_for: --lookups random paths;
  - paths: iterate the sorted union of local and remote paths;
  - reopen (SQLite only): close, open, first read.

Only the store calls are timed; building the entries is not.  Each
measurement is the best of --runs processes (a shared machine is noisy).
Reported: microseconds per entry (or per lookup), the SQLite/memory time
ratio, and each process's peak RSS (C{getrusage}, the largest of the runs),
with the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ME = "a1a1a1a1a1a1a1a1"
PEERS = ("b2b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3c3")
OPS = ("put", "since", "remote_put", "get", "remote_for", "paths", "reopen")


def path_of(i: int) -> str:
    # Spread over directories so inserts do not arrive in sorted order.
    return f"projects/p{i % 97:02d}/src/module{i // 97 % 50:02d}/file_{i:08d}.py"


def batches(n: int, size: int, who: str, sequence_base: int = 0):
    """
    Entries 0..n-1 as lists of C{size}, built lazily so the benchmark itself
    never holds more than one batch.
    """
    from p2ptwisted.core.index import FILE, Entry
    from p2ptwisted.core.versions import Vector

    for start in range(0, n, size):
        yield [Entry(path=path_of(i), kind=FILE, size=1000 + i,
                     mtime_ns=1_700_000_000_000_000_000 + i, perms=0o644,
                     hash=hashlib.blake2b(b"%d" % i, digest_size=32).hexdigest(),
                     deleted=False, version=Vector({who: 1_700_000_000 + i, ME: 5}),
                     modified_by=who, sequence=sequence_base + i + 1)
               for i in range(start, min(n, start + size))]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(kind: str, n: int, size: int, lookups: int, workdir: str) -> dict:
    from p2ptwisted.core.index import MemoryStore
    from p2ptwisted.store import SqliteStore

    base_rss = peak_rss_mib()
    path = os.path.join(workdir, f"index-{n}.sqlite3")
    assert not os.path.exists(path), path
    store = SqliteStore(path) if kind == "sqlite" else MemoryStore()
    times = dict.fromkeys(OPS, 0.0)
    clock = time.perf_counter

    for batch in batches(n, size, ME):
        start = clock()
        store.put(batch)
        times["put"] += clock() - start

    start, last, seen = clock(), 0, 0
    while True:
        page = store.since(last, size)
        if not page:
            break
        seen += len(page)
        last = page[-1].sequence
    times["since"] = clock() - start
    assert seen == n, (seen, n)

    for peer in PEERS:
        for batch in batches(n, size, peer):
            start = clock()
            store.remote_put(peer, batch)
            times["remote_put"] += clock() - start

    rng = random.Random(1)
    sample = [path_of(rng.randrange(n)) for _ in range(lookups)]
    start = clock()
    for p in sample:
        assert store.get(p) is not None
    times["get"] = clock() - start
    start = clock()
    for p in sample:
        assert len(store.remote_for(p)) == len(PEERS)
    times["remote_for"] = clock() - start

    start = clock()
    count = sum(1 for _ in store.paths())
    times["paths"] = clock() - start
    assert count == n, (count, n)

    size_mib = None
    if kind == "sqlite":
        store.close()
        size_mib = os.path.getsize(path) / 2**20
        start = clock()
        store = SqliteStore(path)
        assert store.get(sample[0]) is not None
        times["reopen"] = clock() - start
        store.close()
        os.unlink(path)
    else:
        times["reopen"] = None

    per = {"put": n, "since": n, "remote_put": n * len(PEERS), "get": lookups,
           "remote_for": lookups, "paths": n, "reopen": 1}
    micros = {op: None if t is None else t / per[op] * 1e6 for op, t in times.items()}
    return {"micros": micros, "rss": peak_rss_mib(), "base_rss": base_rss,
            "file_mib": size_mib}


def run_child(kind: str, n: int, args, workdir: str) -> dict:
    """
    Best time of C{args.runs} fresh processes for each operation, and the
    highest peak RSS.
    """
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", kind, "--files", str(n),
             "--batch", str(args.batch), "--lookups", str(args.lookups),
             "--workdir", workdir],
            check=True, stdout=subprocess.PIPE, text=True).stdout
        runs.append(json.loads(out))
    best = dict(runs[0])
    best["micros"] = {op: runs[0]["micros"][op] if runs[0]["micros"][op] is None
                      else min(r["micros"][op] for r in runs) for op in OPS}
    for key in ("rss", "base_rss"):
        best[key] = max(r[key] for r in runs)
    return best


def fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=("memory", "sqlite"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.files, args.batch, args.lookups,
                               args.workdir)))
        return 0

    sizes = sorted({max(1, args.files // 10), args.files})
    workdir = tempfile.mkdtemp(prefix="index-bench-")
    try:
        results = {(kind, n): run_child(kind, n, args, workdir)
                   for n in sizes for kind in ("memory", "sqlite")}
    finally:
        shutil.rmtree(workdir)

    import sqlite3
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version},"
          f" batch {args.batch}, {args.lookups} lookups, best of {args.runs};"
          " microseconds per entry (per lookup for get/remote_for, per call for reopen)")
    head = f"{'operation':<11}"
    for n in sizes:
        head += f" | {'memory':>8} {'sqlite':>8} {'ratio':>6}  @{n:<7}"
    head += " | sqlite scale"
    print(head)
    print("-" * len(head))
    for op in OPS:
        line = f"{op:<11}"
        for n in sizes:
            mem = results["memory", n]["micros"][op]
            sql = results["sqlite", n]["micros"][op]
            ratio = None if mem is None or sql is None else sql / mem
            line += f" | {fmt(mem):>8} {fmt(sql):>8} {fmt(ratio, '.1f'):>6}  {'':8}"
        small, big = (results["sqlite", n]["micros"][op] for n in (sizes[0], sizes[-1]))
        line += f" | {fmt(big / small if small else None):>6}x"
        print(line)
    for label, key in (("peak RSS", "rss"), ("  at start", "base_rss")):
        line = f"{label:<11}"
        for n in sizes:
            mem, sql = results["memory", n][key], results["sqlite", n][key]
            line += f" | {mem:>8.1f} {sql:>8.1f} {sql / mem:>6.2f}  {'MiB':8}"
        print(line)
    for n in sizes:
        mem, sql = results["memory", n], results["sqlite", n]
        print(f"sqlite file at {n} entries (+{2 * n} remote): {sql['file_mib']:.1f} MiB;"
              f" RSS growth memory {mem['rss'] - mem['base_rss']:.1f} MiB,"
              f" sqlite {sql['rss'] - sql['base_rss']:.1f} MiB")
    print(f"throughput at {sizes[-1]}: " + ", ".join(
        f"{op} {1e6 / results['sqlite', sizes[-1]]['micros'][op]:,.0f}/s"
        for op in OPS if op != "reopen"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
