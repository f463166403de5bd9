"""
The web server's security rules (docs/api.md, Security), each with the
forbidden request made and refused: no key, a wrong key, a foreign Host,
a cookie POST without its CSRF token, no CORS, a path out of the page's
directory; a missing password; a key file others can read; a bind
beyond loopback without TLS and a password.
"""

import os
import stat

from twisted.internet import reactor
from twisted.internet.ssl import CertificateOptions
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from p2ptwisted.identity import load_or_create_identity
from p2ptwisted.startup import StartupError
from p2ptwisted.tap import Options
from p2ptwisted.web.security import (WebSecurityError, basic_password, host_allowed,
                                     load_or_create_key)

from .helpers import RealNodes
from .webclient import WebNodes


def parse(*args):
    options = Options()
    options.parseOptions(["--no-discover", *args])
    return options


class KeyTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_no_key_wrong_key(self):
        a = self.web_node("A")
        for method, path in (("GET", "/api/status"), ("GET", "/api/peers"),
                             ("POST", "/api/rescan"), ("POST", "/api/pause"),
                             ("GET", "/api/events")):
            reply = await a.client.request(method, path, key=False)
            self.assertEqual(reply.code, 401, (path, reply))
            self.assertIn("no API key", reply.json()["error"])
            reply = await a.client.request(method, path, key="not-the-key")
            self.assertEqual(reply.code, 401, (path, reply))
            self.assertEqual(reply.json(), {"error": "wrong API key (X-API-Key)"})
        self.assertFalse(a.folder.sync.paused)

    async def test_key_file_made_private(self):
        a = self.web_node("A")
        mode = os.stat(os.path.join(a.state_dir, "api-key")).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        self.assertEqual(len(a.client.key), 43)

    async def test_bad_host(self):
        a = self.web_node("A")
        port = a.web.port.getHost().port
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.2:{port}",
                     f"localhost:{port + 1}", f"192.168.1.10:{port}"):
            for path in ("/api/status", "/", "/app.js"):
                reply = await a.client.get(path, headers={"Host": host})
                self.assertEqual(reply.code, 403, (host, path, reply))
                self.assertIn("DNS rebinding", reply.json()["error"])
            self.assertIsNone(reply.header("Set-Cookie"))
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                     f"LOCALHOST:{port}"):
            reply = await a.client.get("/api/status", headers={"Host": host})
            self.assertEqual(reply.code, 200, (host, reply))

    async def test_cookie_needs_csrf_token_to_change_anything(self):
        a = self.web_node("A")
        cookie, token = await a.client.page_session()
        self.assertTrue(cookie.startswith(f"p2pshare-session-{a.web.port.getHost().port}="))
        reply = await a.client.get("/api/status", key=False, headers={"Cookie": cookie})
        self.assertEqual(reply.code, 200, reply)
        for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "forged"}):
            reply = await a.client.post("/api/pause", key=False, headers=headers)
            self.assertEqual(reply.code, 403, reply)
            self.assertIn("X-CSRF-Token", reply.json()["error"])
        self.assertFalse(a.folder.sync.paused)
        reply = await a.client.post("/api/pause", key=False,
                                    headers={"Cookie": cookie, "X-CSRF-Token": token})
        self.assertEqual(reply.json(), {"paused": True})
        # Another session's token does not fit this one; an unknown
        # session is no session.
        other_cookie, other_token = await a.client.page_session()
        reply = await a.client.post("/api/resume", key=False,
                                    headers={"Cookie": cookie, "X-CSRF-Token": other_token})
        self.assertEqual(reply.code, 403)
        reply = await a.client.get("/api/status", key=False,
                                   headers={"Cookie": cookie.split("=")[0] + "=made-up"})
        self.assertEqual(reply.code, 401)

    async def test_page_cookie_and_token(self):
        a = self.web_node("A")
        reply = await a.client.get("/", key=False)
        self.assertEqual(reply.code, 200)
        cookie = reply.header("Set-Cookie")
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertIn(b'<meta name="csrf-token" content="', reply.body)
        self.assertNotIn(a.client.key.encode(), reply.body)
        self.assertIn("frame-ancestors 'none'", reply.header("Content-Security-Policy"))
        self.assertEqual((reply.header("X-Frame-Options"), reply.header("X-Content-Type-Options")),
                         ("DENY", "nosniff"))

    async def test_no_cors(self):
        a = self.web_node("A")
        origin = {"Origin": "http://evil.example"}
        for method, path in (("GET", "/api/status"), ("OPTIONS", "/api/status"),
                             ("GET", "/")):
            reply = await a.client.request(method, path, headers=origin)
            self.assertEqual([name for name, _ in reply.headers.getAllRawHeaders()
                              if name.lower().startswith(b"access-control-")], [])

    async def test_static_files_stay_in_their_directory(self):
        a = self.web_node("A")
        for path in ("/../security.py", "/%2e%2e/security.py", "/..%2fsecurity.py",
                     "/static/../security.py", "/nothing.js"):
            reply = await a.client.get(path, key=False)
            self.assertEqual(reply.code, 404, (path, reply))


class PasswordTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_basic_password(self):
        password_file = self.mktemp()
        with open(password_file, "w") as f:
            f.write("s3cret words\n")
        a = self.web_node("A", extra=["--web-password-file", password_file])
        for auth in (None, "Basic " + _b64("user:wrong"), "Basic !!", "Bearer x"):
            headers = {"Authorization": auth} if auth else {}
            for path in ("/", "/api/status"):
                reply = await a.client.get(path, headers=headers)
                self.assertEqual(reply.code, 401, (auth, path, reply))
                self.assertEqual(reply.header("WWW-Authenticate"),
                                 'Basic realm="p2pshare", charset="UTF-8"')
        good = {"Authorization": "Basic " + _b64("anyone:s3cret words")}
        reply = await a.client.get("/api/status", headers=good)
        self.assertEqual(reply.code, 200, reply)
        reply = await a.client.get("/api/status", key=False, headers=good)
        self.assertEqual(reply.code, 401)  # the password is not the key

    async def test_tls_endpoint(self):
        """
        An ssl: endpoint serves over TLS, and its cookie is Secure.
        """
        identity = self.mktemp()
        load_or_create_identity(identity)
        password_file = self.mktemp()
        with open(password_file, "w") as f:
            f.write("pw\n")
        key, cert = os.path.join(identity, "node.key"), os.path.join(identity, "node.crt")
        service, node = self.start("A", web=True, extra=[  # (the last --web counts)
            "--web", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            "--web-password-file", password_file])
        web = service.getServiceNamed("web")
        self.assertTrue(web.url.startswith("https://127.0.0.1:"))
        agent = Agent(reactor, contextFactory=_TrustAnything())
        headers = Headers({"Authorization": ["Basic " + _b64("x:pw")]})
        response = await agent.request(b"GET", (web.url + "/").encode(), headers)
        await readBody(response)
        self.assertEqual(response.code, 200)
        self.assertIn("Secure", response.headers.getRawHeaders("set-cookie")[0])


@implementer(IPolicyForHTTPS)
class _TrustAnything:
    def creatorForNetloc(self, hostname, port):
        return CertificateOptions(verify=False)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


class StartupRefusalTests(SynchronousTestCase):
    def test_beyond_loopback_needs_tls_and_password(self):
        password_file = self.mktemp()
        with open(password_file, "w") as f:
            f.write("pw\n")
        identity = self.mktemp()
        load_or_create_identity(identity)
        ssl = (f"ssl:8384:interface=0.0.0.0:privateKey={identity}/node.key"
               f":certKey={identity}/node.crt")
        for args in (["--web", "tcp:8384:interface=0.0.0.0"], ["--web", "tcp:8384"],
                     ["--web", "tcp:8384", "--web-password-file", password_file],
                     ["--web", ssl]):
            e = self.assertRaises(usage.UsageError, parse, "--share", self.mktemp(), *args)
            self.assertIn("listening beyond this machine needs TLS (an ssl: endpoint) and"
                          " --web-password-file", str(e))
            self.assertNotIn("\n", str(e))
        options = parse("--share", self.mktemp(), "--web", ssl,
                        "--web-password-file", password_file)
        self.assertEqual((options["web-tls"], options["web-password"]), (True, "pw"))

    def test_other_web_option_mistakes(self):
        for args, text in ((["--web", "unix:/tmp/x"], "give a tcp:, tcp6: or ssl: endpoint"),
                           (["--web", "nonsense:1"], "not a server endpoint string"),
                           (["--web", "8000", "--no-web"], "choose one"),
                           (["--web-password-file", "/nonexistent/pw"], "cannot read it")):
            e = self.assertRaises(usage.UsageError, parse, "--share", self.mktemp(), *args)
            self.assertIn(text, str(e))
        self.assertEqual(parse("--share", self.mktemp(), "--web", "8000")["web-endpoint"],
                         "tcp:8000:interface=127.0.0.1")
        self.assertIsNone(parse("--share", self.mktemp(), "--no-web")["web-endpoint"])

    def test_key_file_open_to_others_refused(self):
        state = self.mktemp()
        os.makedirs(state)
        load_or_create_key(state)
        path = os.path.join(state, "api-key")
        os.chmod(path, 0o644)
        e = self.assertRaises(WebSecurityError, load_or_create_key, state)
        self.assertEqual(str(e), f"the API key file {path} is open to others (mode 0644);"
                                 f" run chmod 600 {path}, or delete it for a new key")

    def test_node_with_open_key_file_does_not_start(self):
        from p2ptwisted.tap import makeService

        share = self.mktemp()
        options = parse("--share", share, "--port", "tcp:0:interface=127.0.0.1",
                        "--web", "tcp:0:interface=127.0.0.1")
        state = options["state"]
        os.makedirs(state)
        with open(os.path.join(state, "api-key"), "w") as f:
            f.write("k" * 43 + "\n")
        os.chmod(os.path.join(state, "api-key"), 0o640)
        service = makeService(options, reactor=reactor, quiet=False)
        e = self.assertRaises(StartupError, service.startService)
        self.assertIn("is open to others (mode 0640)", str(e))
        self.assertNotIn("\n", str(e))
        self.assertFalse(os.path.exists(os.path.join(state, "web.json")))
        self.flushLoggedErrors()

    def test_key_file_cannot_be_made(self):
        state = self.mktemp()
        os.makedirs(state)
        os.chmod(state, 0o500)
        self.addCleanup(os.chmod, state, 0o700)
        if os.geteuid() == 0:
            # (root writes anyway: a key file that is a directory, then)
            os.chmod(state, 0o700)
            os.mkdir(os.path.join(state, "api-key"))
        e = self.assertRaises(WebSecurityError, load_or_create_key, state)
        self.assertIn("API key file", str(e))


class RuleUnitTests(SynchronousTestCase):
    def test_hosts_beyond_loopback(self):
        """
        Beyond loopback an IP literal is fine (rebinding needs a name);
        a foreign name is not.
        """
        self.assertTrue(host_allowed(b"192.0.2.5:8384", "0.0.0.0", 8384))
        self.assertTrue(host_allowed(b"[2001:db8::1]:8384", "::", 8384))
        self.assertFalse(host_allowed(b"evil.example:8384", "0.0.0.0", 8384))
        self.assertFalse(host_allowed(b"192.0.2.5:9999", "0.0.0.0", 8384))
        self.assertFalse(host_allowed(None, "127.0.0.1", 8384))

    def test_basic_password(self):
        self.assertEqual(basic_password(b"Basic " + _b64("u:p:q").encode()), "p:q")
        self.assertIsNone(basic_password(b"Basic %%%"))
        self.assertIsNone(basic_password(None))
