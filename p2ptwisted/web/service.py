# -*- test-case-name: tests.test_web_twistd -*-
"""
The web server as a service of the node's tree: the API key, the site,
listening (falling back to a free loopback port when the default one is
taken), C{STATE/web.json} for clients, and the URL in the log.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Optional

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from p2ptwisted.control import Control
from p2ptwisted.web.actions import Actions
from p2ptwisted.web.api import Api
from p2ptwisted.web.monitor import Monitor
from p2ptwisted.web.options import DEFAULT_WEB
from p2ptwisted.web.root import WebRoot
from p2ptwisted.web.security import KEY_FILE, Sessions, load_or_create_key
from p2ptwisted.web.sse import EventStream
from p2ptwisted.web.static import STATIC_DIR, StaticFiles
from p2ptwisted.web.views import ChangeLog, Views

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.node import Node

#: Where a node whose default port is taken listens instead.
FALLBACK_WEB = "tcp:0:interface=127.0.0.1"

WEB_JSON = "web.json"


class QuietSite(Site):
    """
    A site that does not log every request: the page asks for something
    every few seconds, and the node's log is for the node.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request) -> None:
        pass


class WebService(Service):
    """
    @param description: the server endpoint string (C{--web}).
    @param explicit: whether the operator chose it; if not, a port in use
        means "listen elsewhere on loopback", not "do not start".
    @param interface: the address it binds, for the C{Host} check.
    """

    name = "web"  # type: ignore[assignment]  # (Service annotates it as None)
    log = Logger()

    def __init__(self, node: "Node", reactor, description: str = DEFAULT_WEB,
                 explicit: bool = False, interface: str = "127.0.0.1",
                 password: Optional[str] = None, tls: bool = False,
                 static_dir: str = STATIC_DIR):
        self.node = node
        self.reactor = reactor
        self.description = description
        self.explicit = explicit
        self.interface = interface
        self.password = password
        self.tls = tls
        self.static_dir = static_dir
        self.port: Any = None
        self.url: Optional[str] = None
        self.monitor: Optional[Monitor] = None

    @property
    def web_json(self) -> str:
        return os.path.join(self.node.state_dir, WEB_JSON)

    def startService(self) -> None:
        node = self.node
        # (a file others can read: WebSecurityError, one line at start-up)
        key = load_or_create_key(node.state_dir)
        Service.startService(self)
        self.changes = ChangeLog(node.events)
        # The resource is made once the port is known (the Host check and
        # the cookie's name need it); no request is read before that.
        site = QuietSite(Resource())
        try:
            self.port = self._listen(self.description, site)
        except CannotListenError:
            if self.explicit:
                self._undo()
                raise
            self.log.info("web port {where} is taken (another node on this machine?):"
                          " listening on a free loopback port instead", where=self.description)
            self.interface = "127.0.0.1"
            self.port = self._listen(FALLBACK_WEB, site)
        port = self.port.getHost().port
        site.resource = self._resource(key, port)
        self.url = f"{'https' if self.tls else 'http'}://{_url_host(self.interface)}:{port}"
        assert self.monitor is not None
        self.monitor.start()
        self.stream.start()
        self._write_web_json()
        self.log.info("web UI at {url}/", url=self.url)

    def _resource(self, key: str, port: int) -> WebRoot:
        """
        The server's resource: the checks, the API and the page.
        """
        node = self.node
        self.stream = EventStream(node.events, self.reactor, joined=lambda: monitor.forget())
        self.monitor = monitor = Monitor(node, self.reactor,
                                         watched=lambda: bool(self.stream.clients))
        views = Views(node, Control(node, out=lambda text: None), monitor, self.changes)
        sessions = Sessions()
        cookie = f"p2pshare-session-{port}"
        api = Api(views, Actions(views), self.stream, key, sessions, cookie)
        static = StaticFiles(sessions, cookie, self.tls, self.static_dir)
        return WebRoot(api, static, self.interface, port, self.password)

    def _listen(self, description: str, site: Site):
        """
        Listen now; a failure that happens at once (a port in use) is
        raised here, as the peers' listener does.
        """
        result: list = []
        endpoints.serverFromString(self.reactor, description).listen(site).addBoth(
            result.append)
        if not result:
            raise CannotListenError(self.interface, 0, "the endpoint did not listen at once")
        if hasattr(result[0], "raiseException"):
            result[0].raiseException()
        return result[0]

    def _write_web_json(self) -> None:
        info = {"url": self.url, "key_file": os.path.abspath(
            os.path.join(self.node.state_dir, KEY_FILE)), "pid": os.getpid()}
        temporary = self.web_json + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
            f.write("\n")
        os.replace(temporary, self.web_json)

    def _undo(self) -> None:
        Service.stopService(self)
        self.changes.stop()

    def stopService(self):
        if not self.running:
            return None
        self._undo()
        assert self.monitor is not None
        self.monitor.stop()
        self.stream.stop()
        try:
            with open(self.web_json, encoding="utf-8") as f:
                ours = json.load(f).get("url") == self.url
            if ours:
                os.unlink(self.web_json)
        except (OSError, ValueError):
            pass
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def _url_host(interface: str) -> str:
    """
    How the server's address is written in its URL: a loopback server as
    127.0.0.1 (what the Host check accepts), another by its address or,
    for all interfaces, this machine's name.
    """
    if interface in ("", "0.0.0.0", "::"):
        import socket

        return socket.getfqdn()
    return f"[{interface}]" if ":" in interface else interface
