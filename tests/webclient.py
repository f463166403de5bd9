"""
A small real HTTP client for the web API's tests (twisted.web.client.Agent
over real TCP), and a reader of its event stream.
"""

import json
import re
from typing import Callable, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        from twisted.internet.defer import succeed

        return succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


class Reply:
    def __init__(self, response, body: bytes):
        self.code = response.code
        self.headers = response.headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Reply {self.code} {self.body[:200]!r}>"


class WebClient:
    """
    Requests to one web server (C{url}, e.g. http://127.0.0.1:PORT), with
    the key unless told otherwise.
    """

    def __init__(self, url: str, key: Optional[str] = None):
        self.url = url
        self.key = key
        self.agent = Agent(reactor)

    def headers(self, key=True, extra: Optional[Dict[str, str]] = None) -> Headers:
        headers = Headers()
        if key is True and self.key is not None:
            headers.addRawHeader("X-API-Key", self.key)
        elif isinstance(key, str):
            headers.addRawHeader("X-API-Key", key)
        for name, value in (extra or {}).items():
            headers.addRawHeader(name, value)
        return headers

    async def request(self, method: str, path: str, body=None, key=True,
                      headers: Optional[Dict[str, str]] = None) -> Reply:
        data = None
        if body is not None:
            data = _Body(body if isinstance(body, bytes) else json.dumps(body).encode())
        response = await self.agent.request(method.encode(), (self.url + path).encode(),
                                            self.headers(key, headers), data)
        return Reply(response, await readBody(response))

    async def get(self, path: str, **kwargs) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body=None, **kwargs) -> Reply:
        return await self.request("POST", path, body if body is not None else {}, **kwargs)

    async def page_session(self):
        """
        Load the page as a browser does: returns (cookie header value,
        CSRF token).
        """
        reply = await self.get("/", key=False)
        cookie = reply.header("Set-Cookie").split(";")[0]
        token = re.search(rb'<meta name="csrf-token" content="([^"]+)">', reply.body).group(1)
        return cookie, token.decode()

    async def events(self, key=True, headers: Optional[Dict[str, str]] = None) -> "EventReader":
        response = await self.agent.request(b"GET", (self.url + "/api/events").encode(),
                                            self.headers(key, headers), None)
        reader = EventReader(response)
        response.deliverBody(reader)
        return reader


class EventReader(Protocol):
    """
    Parses a text/event-stream as it arrives; L{wait_for} gives the first
    event (id, type, data) matching a condition, from the start.
    """

    def __init__(self, response):
        self.response = response
        self.events: List[dict] = []
        self.comments: List[str] = []
        self._buffer = b""
        self._waiting: List[tuple] = []
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event = {"id": None, "type": "message", "data": None}
            for line in block.decode().split("\n"):
                field, _, value = line.partition(": ")
                if line.startswith(":"):
                    self.comments.append(line)
                elif field == "id":
                    event["id"] = int(value)
                elif field == "event":
                    event["type"] = value
                elif field == "data":
                    event["data"] = json.loads(value)
            if event["data"] is not None:
                self.events.append(event)
                self._check()

    def _check(self) -> None:
        # One at a time: a waiter's callback may wait for more (and so
        # come back here) before this returns.
        while True:
            for i, (condition, d) in enumerate(self._waiting):
                found = next((e for e in self.events if condition(e)), None)
                if found is not None:
                    del self._waiting[i]
                    d.callback(found)
                    break
            else:
                return

    def wait_for(self, condition: Callable[[dict], bool]) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append((condition, d))
        self._check()
        return d

    def of_type(self, kind: str, where: Callable[[dict], bool] = lambda data: True) -> Deferred:
        return self.wait_for(lambda e: e["type"] == kind and where(e["data"]))

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)

    def close(self) -> None:
        self.transport.stopProducing()


class WebNodes:
    """
    A TestCase mixin over L{tests.helpers.RealNodes}: nodes with their web
    server on a free loopback port, and a client for each.
    """

    def web_node(self, name, peers=(), extra=()):
        import os

        service, node = self.start(name, peers, web=True, extra=extra)
        web = service.getServiceNamed("web")
        with open(os.path.join(node.state_dir, "api-key")) as f:
            key = f.read().strip()
        node.web = web
        node.client = WebClient(web.url, key)
        return node
