"""
Run the simulator from the command line and print convergence figures:

    python -m p2ptwisted.sim --nodes 20 --ops 10000 --seed 7

Exit status 0 if the mesh converged with nothing lost, 1 if not (the
problems are printed, with the seed that replays them).

And the swarm simulator (L{p2ptwisted.sim.swarm}): one file through a mesh,
block by block, with the time until every node has it:

    python -m p2ptwisted.sim swarm --nodes 6 --size-mib 200 --seed 1

Exit status 0 if every node still there got the file, 1 if not.
"""

from __future__ import annotations

import argparse
import sys
import time

from p2ptwisted.sim.mesh import Simulation, check_converged


def swarm_main(argv) -> int:
    from p2ptwisted.sim.swarm import SwarmSim, mbit

    parser = argparse.ArgumentParser(prog="python -m p2ptwisted.sim swarm",
                                     description="Simulate one file swarming through a mesh.")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--size-mib", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", type=int, default=1, help="nodes that hold the file at first")
    parser.add_argument("--up-mbit", type=float, default=100.0)
    parser.add_argument("--down-mbit", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=0.5)
    parser.add_argument("--no-have", action="store_true", help="downloaders send no HAVEs")
    parser.add_argument("--bad", metavar="NODE", help="a node that sends corrupt blocks (n3)")
    parser.add_argument("--leave", metavar="NODE@SECONDS", help="a node that leaves (n3@8)")
    args = parser.parse_args(argv)
    if not 1 <= args.full < args.nodes or args.size_mib <= 0:
        parser.error("need 1 <= --full < --nodes and --size-mib > 0")
    leave = None
    if args.leave:
        name, _, when = args.leave.partition("@")
        leave = (name, float(when or 0))
    sim = SwarmSim(args.nodes, int(args.size_mib * 2**20), args.seed, full=args.full,
                   up=mbit(args.up_mbit), down=mbit(args.down_mbit),
                   latency=args.latency_ms / 1000, have_messages=not args.no_have,
                   bad=args.bad, leave=leave)
    started = time.perf_counter()
    report = sim.run()
    print(report.summary())
    for name, done in report.done.items():
        used = ", ".join(f"{p} {n}" for p, n in sorted(report.used.get(name, {}).items()))
        took = "never" if done is None else f"{done:.2f} s"
        print(f"  {name}: done at {took}, uploaded {report.uploads[name]:.2f} copies"
              + (f"; blocks from {used}" if used else ""))
    print(f"  ({sim.clock.seconds():.0f} s simulated in {time.perf_counter() - started:.1f} s)")
    return 0 if report.all_done is not None else 1


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["swarm"]:
        return swarm_main(argv[1:])
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
