# -*- test-case-name: tests.test_tap -*-
"""
Checks of C{twistd p2pshare} option values, each turning a mistake into a
L{usage.UsageError} that says what is wrong and what was probably meant.

They run while twistd parses the command line, before it daemonizes, so
the operator sees the error at once on the terminal.
"""

from __future__ import annotations

import os
import re
import socket

from twisted.internet import endpoints
from twisted.python import usage

from p2ptwisted.peers import parse_dial_target, split_expected_id

DEFAULT_PORT = 12345


class _ParseOnly:
    """
    Stands in for the reactor while endpoint strings are checked at option
    time: twistd has not installed its reactor yet, and parsing must not
    install one.
    """


def server_description(option: str, value: str, interface: str = "",
                        tcp_only: bool = False) -> str:
    """
    A server endpoint string from a port number or an endpoint string.

    A bare port listens on C{interface} (all interfaces if empty).  With
    C{tcp_only}, only endpoints that listen on a TCP port are accepted.
    """
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        port = int(value)
        if not 0 <= port <= 65535:
            raise usage.UsageError(f"{option} {value}: not a port number (0 to 65535)")
        return f"tcp:{port}" + (f":interface={interface}" if interface else "")
    try:
        endpoint = endpoints.serverFromString(_ParseOnly(), value)
    except Exception as e:
        raise usage.UsageError(
            f"{option} {value!r}: not a port number (0 to 65535) or a server endpoint"
            f" string such as tcp:12345:interface=127.0.0.1 ({e})"
        ) from None
    if tcp_only and not listens_on_tcp(endpoint):
        raise usage.UsageError(
            f"{option} {value!r}: peers reach a node at a TCP port, which it announces;"
            " give a port number or a tcp:, tcp6: or systemd:domain=INET endpoint"
        )
    return value


def listens_on_tcp(endpoint) -> bool:
    """
    Whether a server endpoint listens on a plain TCP port: the only kind a
    node can listen on for peers, as HELLO, gossip and discovery announce a
    TCP port (and TLS is the node's own, not an C{ssl:} endpoint's).
    """
    if isinstance(endpoint, (endpoints.TCP4ServerEndpoint, endpoints.TCP6ServerEndpoint)):
        return True
    return isinstance(endpoint, endpoints.AdoptedStreamServerEndpoint) and (
        endpoint.addressFamily in (socket.AF_INET, socket.AF_INET6)
    )


def guess_peer_mistake(target: str) -> str | None:
    """
    What was probably meant by a --peer that is neither host:port nor a
    client endpoint string (whose parser would only say "Unknown endpoint
    type"), or C{None} if it does not look like host:port at all.
    """
    host, colon, port = target.rpartition(":")
    if not colon:
        return f"no port: give HOST:PORT, e.g. {target}:{DEFAULT_PORT}"
    if "=" in target or host.startswith("["):
        return None
    if port.isdigit() and ":" in host:
        return f"an IPv6 address needs brackets: [{host}]:{port}"
    if port.isdigit():
        return f"port {port} is not a port number (1 to 65535)"
    if ":" not in host:
        return f"{port!r} is not a port number: give HOST:PORT"
    return None


def check_peer(value: str) -> str:
    """
    Check a --peer: C{[ID@]host:port} or C{[ID@]}client endpoint string.
    """
    try:
        target = split_expected_id(value)[1]
    except ValueError as e:
        raise usage.UsageError(f"--peer {value!r}: {e}") from None
    _key, _address, endpoint = parse_dial_target(target)
    if endpoint is not None:
        try:
            endpoints.clientFromString(_ParseOnly(), endpoint)
        except Exception as e:
            why = guess_peer_mistake(target) or (
                "not HOST:PORT or a client endpoint string such as"
                f" tcp:host=10.0.0.2:port=12345 ({e})"
            )
            raise usage.UsageError(f"--peer {value!r}: {why}") from None
    return value


def check_directory(option: str, path: str) -> None:
    """
    Refuse a directory that cannot be created because something on its
    path is a file; other failures (permissions, /proc) are met at start.
    """
    ancestor = path
    while not os.path.exists(ancestor):
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            return
        ancestor = parent
    if not os.path.isdir(ancestor):
        if ancestor == path:
            raise usage.UsageError(f"{option} {path}: not a directory")
        raise usage.UsageError(
            f"{option} {path}: cannot be created, {ancestor} is not a directory")


def parse_rate(value: str | None) -> float | None:
    """
    A --max-rate in bytes per second: a positive number, K, M or G allowed.
    """
    if value is None:
        return None
    text = value.strip().upper()
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        rate = float(number) * scale
    except ValueError:
        rate = 0
    if not rate > 0:
        raise usage.UsageError(f"--max-rate {value!r}: a positive number of bytes per second")
    return rate


def whole_number(option: str):
    """
    A coercer for an integer option whose error names the option (twistd's
    own says only "Parameter type enforcement failed").
    """

    def coerce(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise usage.UsageError(f"{option} {value!r}: not a whole number") from None

    return coerce
