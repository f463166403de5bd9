# -*- test-case-name: tests.test_cli -*-
"""
The client's side of the node's JSON API (docs/api.md): where the node is,
one request, and the event stream.

Plain blocking stdlib HTTP, no reactor: a command makes one or two requests
and exits, and should start fast.  Every failure a user can cause or meet
(no node, a stale address, a refused key, an API error) becomes a
L{CliError} carrying the one line to print; nothing else escapes.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator, Optional

import attrs

from p2ptwisted.cli.formatting import clean
from p2ptwisted.cli.sse import Event, read_events

#: The discovery file a node writes into its state directory once its web
#: server listens, and the API key file beside it.
WEB_FILE = "web.json"
KEY_FILE = "api-key"

#: Seconds a request may take before the node counts as not answering.
TIMEOUT = 30.0

#: Seconds the event stream may stay silent before the client reconnects.
EVENTS_TIMEOUT = 60.0

#: Exit statuses (see C{p2pshare --help}).
EXIT_API = 1
EXIT_USAGE = 2
EXIT_NO_NODE = 3
EXIT_KEY = 4


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """
    Follow no redirect: urllib would carry the API key to wherever the
    answer points.  A redirect is an error answer instead.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


#: No proxies (the key must not go to one, whatever the environment says:
#: the node is on this machine) and no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


class CliError(Exception):
    """
    An expected failure: C{str()} is the one line to print, C{status} the
    exit status.
    """

    def __init__(self, message: str, status: int = EXIT_API):
        super().__init__(message)
        self.status = status


@attrs.frozen
class Target:
    """
    A node to talk to: its API's base URL and its key, and the state
    directory they came from (for messages).
    """

    url: str
    key: str
    state: str
    hint: str
    password: Optional[str] = None

    @classmethod
    def find(cls, state: str, url: Optional[str] = None, key_file: Optional[str] = None,
             hint: str = "", password_file: Optional[str] = None) -> "Target":
        """
        The node whose state directory is C{state}: its URL and key file
        from C{state}/web.json unless given, the key read from the file.

        @param hint: how to start that node, for the "no node" message.
        """
        if url is None or key_file is None:
            try:
                with open(os.path.join(state, WEB_FILE), encoding="utf-8") as f:
                    web = json.load(f)
            except FileNotFoundError:
                raise no_node(state, hint) from None
            except (OSError, ValueError) as e:
                raise CliError(f"cannot read {os.path.join(state, WEB_FILE)}: {e}") from None
            if not isinstance(web, dict):
                web = {}
            if url is None and _gone(web.get("pid")):
                # Left by a node that was killed: whatever listens on its
                # port now is not that node, and gets no key.
                raise no_node(state, hint)
            url = url or web.get("url")
            key_file = key_file or web.get("key_file") or os.path.join(state, KEY_FILE)
            if not isinstance(url, str) or not isinstance(key_file, str):
                raise CliError(f"{os.path.join(state, WEB_FILE)} names no url")
        try:
            with open(os.path.expanduser(key_file), encoding="ascii") as f:
                key = f.read().strip()
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise CliError(f"cannot read the API key {key_file}: {reason}",
                           EXIT_KEY) from None
        password = None
        if password_file is not None:
            try:
                with open(os.path.expanduser(password_file), encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except (OSError, ValueError) as e:
                reason = getattr(e, "strerror", None) or str(e)
                raise CliError(f"cannot read the web password {password_file}: {reason}",
                               EXIT_KEY) from None
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise CliError(f"not a web address (http:// or https://): {url}", EXIT_USAGE)
        return cls(url.rstrip("/"), key, state, hint, password)

    def _open(self, method: str, path: str, body: Optional[dict] = None,
              headers: Optional[dict] = None, timeout: Optional[float] = TIMEOUT):
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("X-API-Key", self.key)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.password is not None:
            # A node serving beyond loopback (over TLS) wants its password
            # too, as HTTP Basic (any user name).
            token = base64.b64encode(f"p2pshare:{self.password}".encode("utf-8"))
            request.add_header("Authorization", "Basic " + token.decode("ascii"))
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            return _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise self._refused(e) from None
        except http.client.InvalidURL as e:
            raise CliError(f"cannot use the address {self.url}: {e}", EXIT_USAGE) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        except ValueError as e:
            # urllib's word for a URL it cannot use (a bad port, say).
            raise CliError(f"cannot use the address {self.url}: {e}", EXIT_USAGE) from None

    def _unreachable(self, e: Exception) -> CliError:
        """
        The one line for a request that got no answer.
        """
        reason = getattr(e, "reason", e)
        if isinstance(reason, (ConnectionRefusedError, FileNotFoundError)):
            return no_node(self.state, self.hint, self.url)
        if isinstance(reason, socket.timeout):
            return CliError(f"the node at {self.url} did not answer in time", EXIT_NO_NODE)
        return CliError(f"cannot reach the node at {self.url}: {reason}", EXIT_NO_NODE)

    def _refused(self, e: urllib.error.HTTPError) -> CliError:
        """
        The one line for an HTTP error answer: the API's own words.
        """
        try:
            error = json.loads(e.read().decode("utf-8")).get("error")
        except (ValueError, AttributeError, OSError):
            error = None
        if not isinstance(error, str) or not error:
            error = f"{e.code} {e.reason}"
        error = clean(" ".join(error.split()), 500)
        if e.code == 401 and (e.headers.get("WWW-Authenticate") or "").startswith("Basic"):
            return CliError(f"the node at {self.url} wants its web password: {error}"
                            " (give it with --web-password-file FILE)", EXIT_KEY)
        if e.code == 401:
            return CliError(f"the node at {self.url} refused the API key: {error}", EXIT_KEY)
        return CliError(error, EXIT_API)

    def request(self, method: str, path: str, body: Optional[dict] = None,
                timeout: Optional[float] = TIMEOUT) -> Any:
        """
        Make one API request and return its decoded JSON answer.
        """
        try:
            with self._open(method, path, body, timeout=timeout) as response:
                raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        try:
            return json.loads(raw.decode("utf-8")) if raw.strip() else None
        except ValueError:
            raise CliError(f"the node at {self.url} answered {path} with no JSON") from None

    def get(self, path: str, **query: Optional[str]) -> Any:
        given = {k: v for k, v in query.items() if v is not None}
        if given:
            path += "?" + urllib.parse.urlencode(given)
        return self.request("GET", path)

    def post(self, path: str, body: Optional[dict] = None,
             timeout: Optional[float] = TIMEOUT) -> Any:
        return self.request("POST", path, body if body is not None else {}, timeout)

    def events(self, last_id: Optional[str] = None) -> Iterator[Event]:
        """
        Connect to /api/events (from after C{last_id}, if given) and
        return the events of that one connection, until the node closes
        it; reconnecting is the caller's choice (L{p2ptwisted.cli.watch}).
        The connection is made before this returns, so an event that
        happens after it is not missed.
        """
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        # Not forever: a node that went silent (no keep-alive either) is
        # taken for gone, and the caller reconnects.
        response = self._open("GET", "/api/events", headers=headers, timeout=EVENTS_TIMEOUT)

        def read() -> Iterator[Event]:
            with response:
                yield from read_events(response)

        return read()


def _gone(pid: Any) -> bool:
    """
    Whether the process C{pid} no longer exists (C{False} if unsure).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def no_node(state: str, hint: str, url: Optional[str] = None) -> CliError:
    """
    The one line for "nothing answers": which state directory was looked
    at, and how to start a node for it.
    """
    where = f" at {url}" if url else ""
    return CliError(
        f"no node running{where} for state {state} (start one with: twistd -n p2pshare{hint})",
        EXIT_NO_NODE,
    )
