# -*- test-case-name: tests.test_web_api -*-
"""
The C{/api/} endpoints: who may call them (the key, or the page's session
and its CSRF token), which function answers each, and JSON in and out.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from p2ptwisted.web.actions import Actions, ApiError
from p2ptwisted.web.security import Sessions, same
from p2ptwisted.web.views import Views

#: The largest POST body read.
MAX_BODY = 64 * 1024

#: Headers on every answer: nothing cached, no sniffing, no framing.
COMMON_HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}


def set_common_headers(request) -> None:
    for name, value in COMMON_HEADERS.items():
        request.setHeader(name, value)


def json_body(request, status: int, value: Any) -> bytes:
    """
    Answer C{request} with C{value} as JSON.
    """
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def error_body(request, status: int, message: str) -> bytes:
    return json_body(request, status, {"error": message})


class Api:
    """
    The API's dispatcher: C{render} answers one C{/api/...} request.
    """

    log = Logger()

    def __init__(self, views: Views, actions: Actions, stream, key: str, sessions: Sessions,
                 cookie: str):
        self.views = views
        self.stream = stream
        self.key = key
        self.sessions = sessions
        self.cookie = cookie.encode("ascii")
        self.gets: Dict[str, Callable[[Any], Any]] = {
            "status": lambda r: views.status(),
            "peers": lambda r: views.peers(),
            "transfers": lambda r: views.transfers(),
            "changes": lambda r: views.recent_changes(_limit(r)),
            "conflicts": lambda r: views.conflicts(),
            "ignored": lambda r: views.ignored(),
            "trash": lambda r: views.trash(),
            "doctor": lambda r: views.doctor(),
            "ls": lambda r: self._ls(r),
            "pending": lambda r: views.pending(),
        }
        self.posts: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            name: getattr(actions, name)
            for name in ("rescan", "pause", "resume", "connect", "approve", "restore", "fetch")
        }

    def _ls(self, request) -> Any:
        peer = _arg(request, "peer")
        try:
            return self.views.ls(peer or None)
        except LookupError as e:
            raise ApiError(404, str(e)) from None

    def authorize(self, request) -> None:
        """
        The key, or a session of the page's (with its CSRF token for
        anything but a read).

        @raise ApiError: 401 without either, 403 for a missing or wrong
            CSRF token.
        """
        key = request.getHeader(b"x-api-key")
        if key is not None:
            if not same(key, self.key):
                raise ApiError(401, "wrong API key (X-API-Key)")
            return
        session = request.getCookie(self.cookie)
        token = self.sessions.token_of(session.decode("ascii", "replace") if session else None)
        if token is None:
            raise ApiError(401, "no API key: send it in the X-API-Key header (it is in"
                                " STATE/api-key), or open the page at / first")
        if request.method not in (b"GET", b"HEAD") and not same(
                request.getHeader(b"x-csrf-token"), token):
            raise ApiError(403, "missing or wrong X-CSRF-Token: a request with the page's"
                                " session that changes something must carry its token")

    def render(self, request):
        set_common_headers(request)
        name = request.path[len(b"/api/"):].decode("utf-8", "replace")
        try:
            self.authorize(request)
            if name == "events":
                _method(request, b"GET")
                return self.stream.render(request)
            if name in self.gets:
                _method(request, b"GET")
                result = self.gets[name](request)
            elif name in self.posts:
                _method(request, b"POST")
                result = self.posts[name](_json_object(request))
            else:
                raise ApiError(404, f"no endpoint /api/{name} (see docs/api.md)")
        except ApiError as e:
            return error_body(request, e.status, e.message)
        except Exception as e:
            self.log.failure("/api/{name} failed", name=name)
            return error_body(request, 500, f"internal error: {e}")
        if isinstance(result, Deferred):
            self._later(request, name, result)
            return NOT_DONE_YET
        return json_body(request, 200 if name != "fetch" else 202, result)

    def _later(self, request, name: str, result: Deferred) -> None:
        gone: list = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(value: Any) -> None:
            if not gone:
                request.write(json_body(request, 200, value))
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(ApiError):
                status, message = failure.value.status, failure.value.message
            else:
                self.log.failure("/api/{name} failed", failure, name=name)
                status, message = 500, f"internal error: {failure.getErrorMessage()}"
            if not gone:
                request.write(error_body(request, status, message))
                request.finish()

        result.addCallbacks(answer, failed)


def _method(request, allowed: bytes) -> None:
    if request.method != allowed and not (allowed == b"GET" and request.method == b"HEAD"):
        request.setHeader(b"allow", allowed)
        raise ApiError(405, f"use {allowed.decode()} for this endpoint")


def _arg(request, name: str) -> Optional[str]:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _limit(request) -> int:
    text = _arg(request, "limit")
    if text is None:
        return 50
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ApiError(400, "limit: a whole number from 1 to 1000")
    return int(text)


def _json_object(request) -> Dict[str, Any]:
    data = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(data) > MAX_BODY:
        raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
