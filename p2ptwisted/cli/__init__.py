# -*- test-case-name: tests.test_cli -*-
"""
C{p2pshare}: drive a running node from a shell, through its JSON API.

The client finds the node through its state directory, the one the node was
started with (C{--state}, or C{SHARE/.p2pshare}): the node writes its web
address into C{web.json} there and its API key into C{api-key}.  It needs
no reactor and imports C{rich} only to draw (C{watch}), so it starts fast.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import List, Optional, TextIO

from p2ptwisted.cli.client import EXIT_API, EXIT_KEY, EXIT_NO_NODE, EXIT_USAGE, CliError, Target
from p2ptwisted.paths import DEFAULT_SHARE, STATE_SUBDIR, state_dir

PROG = "p2pshare"

EPILOG = f"""\
The node is found through its state directory: --state, or SHARE/{STATE_SUBDIR}
for --share (default {DEFAULT_SHARE}), as for twistd p2pshare.

watch draws live progress bars on a terminal and prints one line per event
otherwise (with --json, one JSON object per line); it runs until Ctrl-C,
or --until-idle, or --count N events.

exit status: 0 ok; {EXIT_API} the node refused the request (its reason is
printed); {EXIT_USAGE} bad command line; {EXIT_NO_NODE} no node running (or not
reachable); {EXIT_KEY} the API key is missing or refused.  Failures print one
line on stderr.
"""


def _common(parser: argparse.ArgumentParser, default) -> None:
    """
    The options every command takes, before or after its name: given
    after it, they override those given before (C{default} is
    SUPPRESS there, so an absent one does not).
    """
    parser.add_argument("--state", metavar="DIR", default=default(None),
                        help="the node's state directory")
    parser.add_argument("--share", metavar="DIR", default=default(DEFAULT_SHARE),
                        help="the node's share, for its default state directory")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the API's JSON answer, for scripts")
    parser.add_argument("--url", default=default(None),
                        help="the node's API, e.g. http://127.0.0.1:8384 [default: from web.json]")
    parser.add_argument("--key-file", metavar="FILE", default=default(None),
                        help="the API key file [default: from web.json]")
    parser.add_argument("--web-password-file", metavar="FILE", default=default(None),
                        help="the password of a node serving beyond loopback"
                             " (its --web-password-file)")


def parser() -> argparse.ArgumentParser:
    from p2ptwisted.cli.commands import COMMANDS

    top = argparse.ArgumentParser(
        prog=PROG, description="Drive a running p2pshare node from a shell.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(top, lambda value: value)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, lambda value: argparse.SUPPRESS)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = {}
    for name, (function, help_text) in COMMANDS.items():
        sub[name] = commands.add_parser(name, parents=[common], help=help_text,
                                        description=help_text[0].upper() + help_text[1:] + ".")
        sub[name].set_defaults(function=function)
    sub["ls"].add_argument("peer", metavar="PEER", nargs="?",
                           help="a connected peer: its name, id or an id prefix")
    sub["fetch"].add_argument("path", metavar="PATH", help="the file's path in the share")
    sub["fetch"].add_argument("--peer", metavar="PEER", help="fetch from this peer only")
    sub["fetch"].add_argument("--wait", action="store_true",
                              help="wait until it is done (exit 1 if it fails)")
    sub["restore"].add_argument("path", metavar="PATH",
                                help="a path in the share, or a name in the trash can")
    watch = sub["watch"]
    watch.add_argument("--until-idle", action="store_true",
                       help="exit once the folder is in sync and nothing is moving"
                            " (at once if it already is)")
    watch.add_argument("--count", type=_positive, metavar="N",
                       help="exit after N events (not counting the hello of each connection)")
    watch.add_argument("--reconnect", type=float, default=15.0, metavar="SECONDS",
                       help="how long to keep reconnecting to a node that went away"
                            " [default: 15]")
    return top


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _hint(args: argparse.Namespace) -> str:
    """
    The twistd options that would start the node this command looked for.
    """
    hint = f" --share {shlex.quote(args.share)}" if args.share != DEFAULT_SHARE else ""
    if args.state is not None:
        hint += f" --state {shlex.quote(args.state)}"
    return hint


def main(argv: Optional[List[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
    """
    Run one command; return its exit status.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = parser().parse_args(argv)
    state = state_dir(args.state, args.share)
    try:
        target = Target.find(state, args.url, args.key_file, _hint(args),
                             args.web_password_file)
        return args.function(target, args, out)
    except CliError as e:
        err.write(f"{PROG}: {e}\n")
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # p2pshare ls | head: the reader has all it wanted.  Point stdout
        # at /dev/null, or the exit's flush fails again, with a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def run() -> None:
    """
    The console script's entry point.
    """
    sys.exit(main())
