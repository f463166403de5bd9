# -*- test-case-name: tests.test_web_security -*-
"""
The page: the files of C{p2ptwisted/web/static/}, and C{index.html} with
this browser's CSRF token filled in and its session cookie set.

The files are read on each request (a page edited in a checkout shows
on reload).  No directory listings, nothing outside the directory.
"""

from __future__ import annotations

import os
import re

from twisted.web.resource import NoResource
from twisted.web.static import File

from p2ptwisted.web.api import set_common_headers
from p2ptwisted.web.security import Sessions

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: The page's scripts, styles and images come from the node only, and it
#: may not be framed.
CSP = (b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
       b" connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

META = re.compile(rb'<meta\s+name="csrf-token"\s+content="[^"]*"\s*/?>', re.IGNORECASE)

#: Served when the package has no index.html (a checkout without the page).
PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="csrf-token" content="">
<title>p2pshare</title></head>
<body><h1>p2pshare</h1><p>This node's web page is not installed; its API is at
<code>/api/</code> (see docs/api.md).</p></body></html>
"""


class StaticFiles:
    """
    @param cookie: the session cookie's name (one per port: browsers share
        cookies between the ports of a host, and two nodes must not
        overwrite each other's session).
    """

    def __init__(self, sessions: Sessions, cookie: str, secure: bool,
                 directory: str = STATIC_DIR):
        self.sessions = sessions
        self.cookie = cookie.encode("ascii")
        self.secure = secure
        self.directory = directory

    def render(self, request):
        set_common_headers(request)
        request.setHeader(b"content-security-policy", CSP)
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if parts in ([], [""], ["index.html"]):
            return self.index(request)
        if any(p in ("", ".", "..") or "/" in p or "\\" in p or "\0" in p for p in parts):
            return NoResource().render(request)
        path = os.path.join(self.directory, *parts)
        if not os.path.isfile(path):
            return NoResource().render(request)
        return File(path).render(request)

    def index(self, request) -> bytes:
        try:
            with open(os.path.join(self.directory, "index.html"), "rb") as f:
                page = f.read()
        except FileNotFoundError:
            page = PLACEHOLDER
        session, token = self.sessions.new()
        request.addCookie(self.cookie, session.encode("ascii"), path=b"/", httpOnly=True,
                          sameSite="strict", secure=self.secure)
        meta = b'<meta name="csrf-token" content="' + token.encode("ascii") + b'">'
        if META.search(page):
            page = META.sub(lambda _: meta, page, count=1)
        else:
            page = re.sub(rb"(<head[^>]*>)", lambda m: m.group(1) + meta, page, count=1,
                          flags=re.IGNORECASE)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return page
