# -*- test-case-name: tests.test_web_security -*-
"""
The web options of C{twistd p2pshare} (C{--web}, C{--no-web},
C{--web-password-file}), checked while twistd parses the command line, so
a web server that would be open to the network without TLS or a password
is refused before the node starts, in one line.
"""

from __future__ import annotations

from twisted.internet import endpoints
from twisted.python import usage

from p2ptwisted.optcheck import _ParseOnly
from p2ptwisted.web.security import is_loopback, read_password_file

DEFAULT_WEB = "tcp:8384:interface=127.0.0.1"


def check_web(options) -> None:
    """
    Fill in C{options["web-endpoint"]} (None: no web server),
    C{["web-explicit"]}, C{["web-interface"]}, C{["web-tls"]} and
    C{["web-password"]}.

    @raise usage.UsageError: a bad endpoint, or one beyond loopback
        without TLS and a password.
    """
    options["web-password"] = None
    if options["no-web"]:
        if options["web"] is not None:
            raise usage.UsageError("--web and --no-web: choose one")
        options["web-endpoint"] = None
        return
    explicit = options["web"] is not None
    description = options["web"] if explicit else DEFAULT_WEB
    if description.strip().isdigit():
        description = f"tcp:{description.strip()}:interface=127.0.0.1"
    try:
        endpoint = endpoints.serverFromString(_ParseOnly(), description)
    except Exception as e:
        raise usage.UsageError(f"--web {description!r}: not a server endpoint string such as"
                               f" tcp:8384:interface=127.0.0.1 ({e})") from None
    tcp = (endpoints.TCP4ServerEndpoint, endpoints.TCP6ServerEndpoint)
    tls = isinstance(endpoint, endpoints.SSL4ServerEndpoint)
    if not (tls or isinstance(endpoint, tcp)):
        raise usage.UsageError(f"--web {description!r}: give a tcp:, tcp6: or ssl: endpoint")
    interface = getattr(endpoint, "_interface", "")
    password_file = options["web-password-file"]
    if not is_loopback(interface):
        if not tls or password_file is None:
            raise usage.UsageError(
                f"--web {description}: listening beyond this machine needs TLS (an ssl:"
                " endpoint) and --web-password-file")
    if password_file is not None:
        try:
            options["web-password"] = read_password_file(password_file)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
    options["web-endpoint"] = description
    options["web-explicit"] = explicit
    options["web-interface"] = interface
    options["web-tls"] = tls
