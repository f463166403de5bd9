# -*- test-case-name: tests.test_web_security -*-
"""
The web server's one resource: the checks every request passes first
(the C{Host} header, then the password if there is one), then the API or
the page's files.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger
from twisted.web.resource import Resource

from p2ptwisted.web.api import Api, error_body, set_common_headers
from p2ptwisted.web.security import basic_password, host_allowed, same
from p2ptwisted.web.static import StaticFiles


class WebRoot(Resource):
    """
    @param interface: the address the server binds, and C{port} its port
        (the C{Host} check needs them).
    @param password: for HTTP Basic, if any.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, api: Api, static: StaticFiles, interface: str, port: int,
                 password: Optional[str] = None):
        super().__init__()
        self.api = api
        self.static = static
        self.interface = interface
        self.port = port
        self.password = password

    def render(self, request):
        refused = self.refusal(request)
        if refused is not None:
            return refused
        if request.path.startswith(b"/api/"):
            return self.api.render(request)
        return self.static.render(request)

    def refusal(self, request) -> Optional[bytes]:
        """
        The answer to a request refused before anything else, or C{None}.
        """
        host = request.getHeader(b"host")
        if not host_allowed(host, self.interface, self.port):
            set_common_headers(request)
            shown = host.decode("latin-1") if host is not None else None
            return error_body(request, 403, f"Host {shown!r} is not this node's web address"
                                            " (DNS rebinding protection): use the URL the"
                                            " node logged")
        if self.password is not None and not same(
                basic_password(request.getHeader(b"authorization")), self.password):
            set_common_headers(request)
            request.setHeader(b"www-authenticate", b'Basic realm="p2pshare", charset="UTF-8"')
            return error_body(request, 401, "this node's web page needs its password"
                                            " (HTTP Basic, any user name)")
        return None
