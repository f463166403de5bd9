# -*- test-case-name: tests.test_cli -*-
"""
The commands of C{p2pshare}: each asks the node's API one thing and prints
the answer, as a table for people or as the API's own JSON (C{--json}).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Dict, List, TextIO

import p2ptwisted.cli.formatting as fmt
from p2ptwisted.cli.client import CliError, Target

#: Seconds between looks at a fetch that fetch --wait follows.
WAIT_POLL = 0.5

Command = Callable[[Target, argparse.Namespace, TextIO], int]


def _show(out: TextIO, args: argparse.Namespace, answer: Any,
          text: Callable[[Any], str]) -> int:
    if args.json:
        out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
    else:
        shown = text(answer)
        if shown:
            out.write(shown + "\n")
    return 0


def status(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    return _show(out, args, target.get("/api/status"), fmt.status_text)


def peers(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    return _show(out, args, target.get("/api/peers"),
                 lambda rows: fmt.table(rows, fmt.PEER_COLUMNS, "(no peers connected)"))


def ls(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    empty = f"(no files at {fmt.clean(args.peer)})" if args.peer else "(no files)"
    return _show(out, args, target.get("/api/ls", peer=args.peer),
                 lambda rows: fmt.table(rows, fmt.LS_COLUMNS, empty))


def transfers(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    return _show(out, args, target.get("/api/transfers"),
                 lambda rows: fmt.table(rows, fmt.TRANSFER_COLUMNS, "(no transfers)"))


def doctor(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    answer = target.get("/api/doctor")
    lines = answer.get("lines", []) if isinstance(answer, dict) else answer
    return _show(out, args, answer, lambda _: fmt.lines_text(lines or []))


def listing(path: str, columns: List[fmt.Column], empty: str) -> Command:
    """
    A command that prints a list as a table.
    """
    def command(target: Target, args: argparse.Namespace, out: TextIO) -> int:
        return _show(out, args, target.get(path), lambda rows: fmt.table(rows, columns, empty))

    return command


def action(path: str, text: Callable[[Any], str]) -> Command:
    """
    A command that POSTs to C{path} and says what the node answered.
    """
    def command(target: Target, args: argparse.Namespace, out: TextIO) -> int:
        return _show(out, args, target.post(path), text)

    return command


def _field(answer: Any, name: str) -> Any:
    return answer.get(name) if isinstance(answer, dict) else None


def restore(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """
    Put a file back from the trash can.  PATH is a version's name in the
    trash can (as C{p2pshare trash} lists them), or a file's path in the
    share, which restores its newest version there.
    """
    trash = target.get("/api/trash")
    versions = [t for t in trash if isinstance(t, dict)] if isinstance(trash, list) else []
    exact = [t for t in versions if t.get("trashed") == args.path]
    of_path = [t for t in versions if t.get("original") == args.path]
    if not exact and not of_path:
        raise CliError(f"the trash can holds no {args.path!r} (see: p2pshare trash)")
    chosen = exact[0] if exact else max(of_path, key=lambda t: t.get("time") or 0)
    answer = target.post("/api/restore", {"trashed": chosen.get("trashed")})
    return _show(out, args, answer, lambda a: (
        f"restored {fmt.clean(_field(a, 'path') or chosen.get('original'))}"
        f" (the version trashed {fmt.when(chosen.get('time'))})"))


def fetch(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """
    Start a fetch; with --wait, follow it until it ends.
    """
    body = {"path": args.path}
    if args.peer:
        body["peer"] = args.peer
    answer = target.post("/api/fetch", body)
    ident = _field(answer, "transfer")
    if ident is None:
        # Already over (the same fetch was running and has just ended).
        return _show(out, args, answer, lambda a: f"fetched {fmt.clean(args.path)}")
    if not args.wait:
        return _show(out, args, answer, lambda a: (
            f"fetching {fmt.clean(args.path)} (transfer {fmt.clean(ident)};"
            " follow it with: p2pshare watch)"))
    while True:
        listed = target.get("/api/transfers")
        mine = [t for t in listed if isinstance(t, dict) and t.get("id") == ident]
        if mine and mine[0].get("state") == "done":
            return _show(out, args, mine[0], lambda t: (
                f"fetched {fmt.clean(t.get('path'))} ({fmt.human(t.get('size'))})"
                f" from {fmt.clean(fmt.peer_name(t))}"))
        if not mine or mine[0].get("state") == "failed":
            raise CliError(f"fetching {args.path!r} failed (see: p2pshare watch, the node's log)")
        time.sleep(WAIT_POLL)


def watch(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    from p2ptwisted.cli.watch import run

    return run(target, args, out)


#: Every command: name -> (function, help).
COMMANDS: Dict[str, tuple] = {
    "status": (status, "the node: name, id, addresses, folder state, peers"),
    "peers": (peers, "the connected peers: address, direction, rates, completion"),
    "ls": (ls, "the files of this node's share, or of a connected PEER's"),
    "fetch": (fetch, "fetch PATH from a peer (any that has it, or --peer)"),
    "rescan": (action("/api/rescan", lambda a: (
        f"rescanned: {fmt.clean(_field(a, 'changes'))} changes")),
        "look at the share again now"),
    "doctor": (doctor, "what the node can see of its reachability, and what to do"),
    "conflicts": (listing("/api/conflicts", fmt.CONFLICT_COLUMNS, "(no conflicts)"),
                  "the conflict copies in the share"),
    "trash": (listing("/api/trash", fmt.TRASH_COLUMNS, "(the trash can is empty)"),
              "replaced and deleted files kept in the trash can"),
    "restore": (restore, "put PATH back from the trash can (its newest version,"
                         " or the one named as trash lists it)"),
    "transfers": (transfers, "fetches running, waiting and recently ended"),
    "pause": (action("/api/pause", lambda a: "paused: the node applies nothing from peers"),
              "stop taking changes from peers (connections and serving go on)"),
    "resume": (action("/api/resume", lambda a: "resumed"), "sync again"),
    "watch": (watch, "live progress of transfers and of the folder, like rsync --info=progress2"),
}
