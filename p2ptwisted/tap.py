# -*- test-case-name: tests.test_tap -*-
"""
C{twistd p2pshare}: command-line options and the service tree.
"""

from __future__ import annotations

import os
import re
import socket
import sys

from twisted import copyright
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.python import usage

from p2ptwisted import __version__, wire
from p2ptwisted.identity import parse_id, read_trust_file
from p2ptwisted.limits import Limits
from p2ptwisted.optcheck import (
    DEFAULT_PORT,
    check_directory,
    check_peer,
    parse_rate,
    server_description,
    whole_number,
)
from p2ptwisted.paths import DEFAULT_SHARE, STATE_SUBDIR, state_dir
from p2ptwisted.peers import split_expected_id
from p2ptwisted.startup import NodeService, StartupError

DEFAULT_MANHOLE_KEYS = "~/.ssh/authorized_keys"

#: The folder modes (L{p2ptwisted.core.planner}).
MODES = ("send-receive", "send-only", "receive-only")


class Options(usage.Options):
    synopsis = "[--port PORT] [--share DIR] [--state DIR] [--peer ADDRESS]..."
    longdesc = (
        "Run a p2pshare node: it listens for peers, dials the peers it is"
        " given and those it learns about, and shares the files in --share."
    )

    optParameters = [
        ["port", "p", str(DEFAULT_PORT),
         "TCP port to listen on, or a server endpoint string"
         " (e.g. tcp:12345:interface=127.0.0.1)."],
        ["share", "s", DEFAULT_SHARE,
         "Directory whose files this node shares (created if missing)."],
        ["state", None, None,
         "Directory for this node's identity and state"
         f" [default: SHARE/{STATE_SUBDIR}]."],
        ["name", None, None,
         "Display name shown to peers [default: this machine's host name]."],
        ["manhole", None, None,
         "Offer a Python prompt into the running node over SSH on this port"
         " (loopback only) or server endpoint string [default: off]."],
        ["manhole-keys", None, None,
         "authorized_keys file of the keys that may log into the manhole"
         " [default: ~/.ssh/authorized_keys]."],
        ["max-connections", None, 256,
         "Connections at most, in total (either direction).", whole_number("--max-connections")],
        ["max-per-address", None, 16,
         "Connections at most from one remote IP address (inbound; from this"
         " machine, only those still in the handshake count).",
         whole_number("--max-per-address")],
        ["max-handshakes", None, 64,
         "Inbound connections at most still in the handshake; past it the"
         " oldest gives way to a new one.", whole_number("--max-handshakes")],
        ["max-rate", None, None,
         "Cap on the node's total upload rate, in bytes per second; K, M and G"
         " suffixes (powers of 1024) allowed, e.g. 20M [default: no cap]."],
        ["mode", None, "send-receive",
         "send-receive (keep the folder in step both ways), send-only (publish"
         " local changes, apply none from peers) or receive-only (apply peers'"
         " changes, publish none of ours; status() shows what differs)."],
        ["keep-versions", None, 30,
         "Days a replaced or deleted file is kept in the trash can (STATE/trash);"
         " 0 turns the trash can off.", whole_number("--keep-versions")],
        ["web", None, None,
         "Serve the web page and API on this server endpoint (tcp:, tcp6: or ssl:)"
         " [default: tcp:8384:interface=127.0.0.1, or a free loopback port if 8384 is"
         " taken]. Beyond loopback it needs ssl: and --web-password-file."],
        ["web-password-file", None, None,
         "File whose first line is the password (HTTP Basic) for a --web beyond loopback."],
        ["keep-deletions", None, 180,
         "Days a deletion is remembered, so a node that was off for less than"
         " this learns of it (one off for longer brings the file back).",
         whole_number("--keep-deletions")],
    ]

    optFlags = [
        ["no-sync", None,
         "Take nothing from peers: the same as --mode send-only."],
        ["no-discover", None,
         "Do not announce this node on the LAN nor listen for other nodes'"
         " announcements (UDP multicast); peers then come from --peer and gossip."],
        ["no-web", None, "Serve no web page or API."],
        ["no-tls", None,
         "Talk to peers in plaintext, for debugging only: no encryption and"
         " no proof of who a peer is. Such a node and a TLS node cannot talk."],
    ]

    def __init__(self):
        super().__init__()
        self["peers"] = []
        self["allow"] = []
        self["trust"] = []  # the ids read from the --trust files
        self["trust-files"] = []
        self["limit"] = []
        # --help shows docstrings with their line breaks and indentation
        # turned into runs of spaces: make each one plain text.
        self.docs = {name: " ".join(doc.split()) for name, doc in self.docs.items()}

    def parseOptions(self, options=None) -> None:
        """
        Parse, and under twistd (or twist) report a mistake in one line
        with a hint, instead of twistd's 60 lines of usage before it.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            command = f"{_program()} p2pshare"
            sys.stderr.write(f"{command}: {e}\nRun '{command} --help' for the options.\n")
            raise SystemExit(1) from None

    def opt_version(self) -> None:
        """
        Print the versions of p2ptwisted and Twisted, and exit.
        """
        print(f"p2ptwisted {__version__} (Twisted {copyright.version})")
        sys.exit(0)

    def opt_limit(self, value: str) -> None:
        """
        Change one per-peer limit, as NAME=VALUE (repeatable): handshake_timeout
        (15 s: TLS and HELLO together), ping_interval (30 s), idle_timeout
        (90 s), gossip_entries (64 addresses used per PEERS), gossip_spacing
        (1 s between PEERS from one peer), uploads_per_peer (64 in flight),
        stall_timeout (60 s without data ends a download).
        """
        self["limit"].append(value)

    def opt_allow(self, value: str) -> None:
        """
        Admit only nodes with these ids (repeatable); the id is what a node
        prints at start-up. Without --allow or --trust any node may join.
        """
        try:
            self["allow"].append(parse_id(value))
        except ValueError as e:
            raise usage.UsageError(f"--allow: {e}") from None

    def opt_trust(self, path: str) -> None:
        """
        Admit only the nodes whose ids are listed in FILE, one per line, each
        optionally followed by a label; # starts a comment (repeatable,
        combines with --allow).
        """
        try:
            self["trust"].extend(read_trust_file(path))
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"--trust: {e}") from None
        self["trust-files"].append(os.path.abspath(path))

    def opt_peer(self, value: str) -> None:
        """
        A peer to dial, as host:port or a client endpoint string such as
        tcp:host=10.0.0.2:port=12345, optionally prefixed with ID@ to
        require that node there (repeatable).
        """
        self["peers"].append(check_peer(value))

    opt_P = opt_peer

    def postOptions(self) -> None:
        self["listen"] = server_description("--port", self["port"], tcp_only=True)
        if self["mode"] not in MODES:
            raise usage.UsageError(f"--mode {self['mode']}: not one of {', '.join(MODES)}")
        if self["no-sync"]:
            self["mode"] = "send-only"
        for option in ("keep-versions", "keep-deletions"):
            if self[option] < 0:
                raise usage.UsageError(f"--{option}: days cannot be negative")
        if self["keep-deletions"] < 1:
            raise usage.UsageError("--keep-deletions: at least 1 day")
        share = os.path.abspath(os.path.expanduser(self["share"]))
        check_directory("--share", share)
        self["share"] = share
        self["state"] = state_dir(self["state"], share)
        check_directory("--state", self["state"])
        name = self["name"] if self["name"] is not None else socket.gethostname()
        if len(name) > wire.MAX_NAME or wire.has_control_chars(name):
            raise usage.UsageError(
                f"--name: at most {wire.MAX_NAME} printable characters"
            )
        self["name"] = name
        self["max-rate"] = parse_rate(self["max-rate"])
        for limit in ("max-connections", "max-per-address", "max-handshakes"):
            if self[limit] < 1:
                raise usage.UsageError(f"--{limit}: at least 1")
        try:
            self["limits"] = Limits.parse(self["limit"])
        except ValueError as e:
            raise usage.UsageError(f"--limit {e}") from None
        pinned = [p for p in self["peers"] if split_expected_id(p)[0] is not None]
        if self["no-tls"] and (self["allow"] or self["trust-files"] or pinned):
            raise usage.UsageError(
                "--allow, --trust and --peer ID@ADDRESS need TLS: without it a peer's id"
                " is not proven"
            )
        self["allowed"] = None
        if self["allow"] or self["trust-files"]:
            self["allowed"] = set(self["allow"]) | set(self["trust"])
            if not self["allowed"]:
                raise usage.UsageError(
                    "--trust: the files list no ids, so no node could connect; add ids"
                    " (one per line) or leave out --trust"
                )
        from p2ptwisted.web.options import check_web

        check_web(self)
        if self["manhole"] is not None:
            # A bare port binds the manhole to loopback only: it is a Python
            # prompt into the node, not something to offer the LAN by accident.
            self["manhole"] = server_description("--manhole", self["manhole"], "127.0.0.1")
            keys = self["manhole-keys"] or os.path.expanduser(DEFAULT_MANHOLE_KEYS)
            if not os.path.isfile(keys):
                raise usage.UsageError(
                    f"--manhole needs public keys to let you in, and {keys} does not exist:"
                    " pass --manhole-keys FILE (authorized_keys format, e.g. a copy of your"
                    " ~/.ssh/id_ed25519.pub), or create ~/.ssh/authorized_keys"
                )
            self["manhole-keys"] = os.path.abspath(keys)
            # Checked here, while twistd still turns a UsageError into one
            # clear line; later it would be a traceback.
            from p2ptwisted.manhole import ManholeError, load_authorized_keys

            try:
                load_authorized_keys(self["manhole-keys"])
            except ManholeError as e:
                raise usage.UsageError(str(e)) from None


def _program() -> str:
    """
    The name the operator ran: twistd or twist.
    """
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name in ("twistd", "twist") else "twistd"


def _refuse(options: Options, message: str) -> None:
    """
    Stop on a mistake found while building the service tree: under twistd
    (which calls makeService before it starts logging or daemonizes, and
    would show a traceback) one line on stderr and exit status 1;
    otherwise a L{usage.UsageError}.
    """
    if options.parent is None:
        raise usage.UsageError(message)
    sys.stderr.write(f"{_program()} p2pshare: {message}\n")
    raise StartupError(message)


def _listen_host(description: str) -> str:
    """
    The address a server endpoint string binds ("" for all interfaces).
    """
    match = re.search(r"(?:^|:)interface=((?:\\.|[^:])*)", description)
    return match.group(1).replace("\\", "") if match else ""


def makeService(options: Options, reactor=None, quiet: bool = True) -> MultiService:
    """
    Build the node's service tree: the node, then its listener.

    The node starts first so that the state directory is locked and the
    identity loaded before any peer can connect.

    @param quiet: keep Twisted's port chatter out of the log once started
        (see L{p2ptwisted.quiet}); in-process tests say C{False}, since
        filtering rewraps the log observers trial adds and removes per test.
    """
    if reactor is None:
        from twisted.internet import reactor
    from p2ptwisted.listener import ListenerService
    from p2ptwisted.node import Node

    top = NodeService(quiet=quiet)
    node = Node(
        reactor,
        state_dir=options["state"],
        share_dir=options["share"],
        display_name=options["name"],
        bootstrap=options["peers"],
        mode=options["mode"],
        keep_days=options["keep-versions"],
        deletion_lifetime=options["keep-deletions"] * 24 * 3600,
        max_rate=options["max-rate"],
        max_connections=options["max-connections"],
        max_per_address=options["max-per-address"],
        max_handshakes=options["max-handshakes"],
        tls=not options["no-tls"],
        limits=options["limits"],
        allow=options["allowed"],
    )
    node.listen_host = _listen_host(options["listen"])
    node.setServiceParent(top)
    listener = ListenerService(
        endpoints.serverFromString(reactor, options["listen"]), node, options["listen"]
    )
    listener.setName("listener")
    listener.setServiceParent(top)
    if not options["no-discover"]:
        from p2ptwisted.discovery import Discovery

        node.discovery = Discovery(node, reactor, listen_host=node.listen_host)
        node.discovery.setServiceParent(top)
    if options["web-endpoint"] is not None:
        # twisted.web only when asked for (the default).
        from p2ptwisted.web.service import WebService

        WebService(node, reactor, options["web-endpoint"], options["web-explicit"],
                   options["web-interface"], options["web-password"],
                   options["web-tls"]).setServiceParent(top)
    if options["manhole"] is not None:
        # Conch (and cryptography) only when asked for.
        from p2ptwisted.control import Control
        from p2ptwisted.manhole import ManholeError, make_manhole_service

        try:
            make_manhole_service(
                options["manhole"], options["manhole-keys"], options["state"],
                Control(node).namespace(), reactor,
            ).setServiceParent(top)
        except ManholeError as e:
            _refuse(options, str(e))
        except OSError as e:
            # The host key is made here, in the state directory.
            _refuse(options, f"--manhole: cannot create its host key: {e.filename}: {e.strerror}")
    return top
