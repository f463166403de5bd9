# -*- test-case-name: tests.test_web_security -*-
"""
Who may use the web server, and how they prove it (docs/api.md, Security).

 - The API key lives in C{STATE/api-key}, mode 0600: whoever can read it is
   the node's user.  A key file others could read is refused, not fixed:
   the key may already have leaked, and the operator should know.
 - The page never sees the key.  Loading C{/} gives the browser a session
   cookie (HttpOnly, SameSite=Strict) and, in the page, a CSRF token tied
   to that session; cookie-authenticated POSTs must send the token back in
   a header, which another origin's page cannot do.
 - The C{Host} header must name the address the server is served on, so a
   page on attacker.example whose name was re-pointed at 127.0.0.1 (DNS
   rebinding) is refused before anything else.
 - Beyond loopback: TLS and an HTTP Basic password on every request.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import secrets
import socket
import stat
from collections import OrderedDict
from typing import FrozenSet, Optional, Union

from p2ptwisted.state import StateError

KEY_FILE = "api-key"

#: Sessions kept (a browser tab each, or a reload); the oldest go first.
MAX_SESSIONS = 64


class WebSecurityError(StateError):
    """
    The web server cannot start safely; the message says why, in one line.
    """


def load_or_create_key(state_dir: str) -> str:
    """
    The API key in C{STATE/api-key}, made (mode 0600) if missing.

    @raise WebSecurityError: the file is open to group or others, is not a
        regular file of ours, or cannot be made or read.
    """
    path = os.path.join(state_dir, KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise WebSecurityError(f"cannot create the API key file {path}: {e.strerror}") from None
    else:
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
        finally:
            os.close(fd)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise WebSecurityError(f"cannot read the API key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WebSecurityError(f"the API key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise WebSecurityError(
                f"the API key file {path} is open to others (mode {st.st_mode & 0o777:04o});"
                f" run chmod 600 {path}, or delete it for a new key")
        if st.st_uid != os.geteuid():
            raise WebSecurityError(f"the API key file {path} belongs to another user")
        key = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(key) < 16:
        raise WebSecurityError(f"the API key file {path} holds no key; delete it for a new one")
    return key


def same(given: Union[bytes, str, None], secret: str) -> bool:
    """
    Compare a secret given in a request with ours in constant time
    (nothing to learn from how long a wrong guess took).
    """
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode("utf-8", "replace")
    return hmac.compare_digest(given, secret.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """
    Whether a server endpoint's interface is on this machine only ("" and
    0.0.0.0 and :: are every interface).
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_hosts(port: int) -> FrozenSet[str]:
    """
    The exact C{Host} headers accepted for a loopback server: its address
    as the page's URL can spell it.
    """
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def host_allowed(header: Optional[bytes], interface: str, port: int) -> bool:
    """
    Whether a request's C{Host} header names this server.  Loopback: only
    the names of L{allowed_hosts}.  Beyond: an IP address literal (a
    rebinding attack needs a name it controls), localhost, or this
    machine's own names, each with our port.
    """
    if header is None:
        return False
    host = header.decode("latin-1").strip().lower()
    if is_loopback(interface):
        return host in allowed_hosts(port)
    name, colon, given = host.rpartition(":")
    if not colon or given != str(port):
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        pass
    return name in {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}


def basic_password(header: Optional[bytes]) -> Optional[str]:
    """
    The password of an HTTP Basic C{Authorization} header (any user name).
    """
    if not header or not header.lower().startswith(b"basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def read_password_file(path: str) -> str:
    """
    The first line of a C{--web-password-file}.

    @raise ValueError: unreadable or empty, with a message naming it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--web-password-file {path}: cannot read it ({e})") from None
    if not password:
        raise ValueError(f"--web-password-file {path}: the first line is empty")
    return password


class Sessions:
    """
    The browser sessions the page was given: session id -> CSRF token.
    In memory only; a restarted node's page loads again.
    """

    def __init__(self, limit: int = MAX_SESSIONS):
        self.limit = limit
        self._tokens: "OrderedDict[str, str]" = OrderedDict()

    def new(self) -> tuple:
        """
        A new session: C{(session id, CSRF token)}.
        """
        session, token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._tokens[session] = token
        while len(self._tokens) > self.limit:
            self._tokens.popitem(last=False)
        return session, token

    def token_of(self, session: Optional[str]) -> Optional[str]:
        """
        The CSRF token of a live session, or C{None} (no such session).
        """
        if not session:
            return None
        for known, token in self._tokens.items():
            if same(session, known):
                return token
        return None
