"""
Run the simulator from the command line and print convergence figures:

    python -m p2ptwisted.sim --nodes 20 --ops 10000 --seed 7

Exit status 0 if the mesh converged with nothing lost, 1 if not (the
problems are printed, with the seed that replays them).
"""

from __future__ import annotations

import argparse
import sys
import time

from p2ptwisted.sim.mesh import Simulation, check_converged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2ptwisted.sim",
                                     description="Simulate a p2pshare sync mesh.")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="run this many seeds, from --seed on")
    parser.add_argument("--sqlite", action="store_true",
                        help="keep each node's index in sqlite (in memory), as a real node does")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.ops < 0 or args.seeds < 1:
        parser.error("need --nodes >= 2, --ops >= 0, --seeds >= 1")
    failed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.perf_counter()
        if args.sqlite:
            from p2ptwisted.store import SqliteStore
            sim = Simulation(args.nodes, seed, store_factory=lambda: SqliteStore(":memory:"))
        else:
            sim = Simulation(args.nodes, seed)
        quiet = sim.run(args.ops)
        report = check_converged(sim)
        elapsed = time.perf_counter() - started
        messages = sum(n.sent for n in sim.nodes.values())
        ok = quiet and not report.problems
        print(f"seed {seed}: {'converged' if ok else 'DID NOT CONVERGE'}:"
              f" {args.nodes} nodes, {args.ops} operations"
              f" ({', '.join(f'{k} {v}' for k, v in sorted(sim.ops_done.items()))});"
              f" {report.paths} paths in the end, {report.conflict_copies} conflict copies,"
              f" {report.trashed} files in trash cans; {messages} messages;"
              f" {sim.clock.seconds() - sim.started:.0f} s simulated in {elapsed:.1f} s")
        if not ok:
            failed += 1
            if not quiet:
                print("  still busy after the time limit")
            for problem in report.problems:
                print("  " + problem)
            print(f"  replay: python -m p2ptwisted.sim --nodes {args.nodes}"
                  f" --ops {args.ops} --seed {seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
