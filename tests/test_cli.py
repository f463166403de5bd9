# -*- test-case-name: tests.test_cli -*-
"""
The C{p2pshare} command-line client against a stand-in for a node's API: a
twisted.web site on 127.0.0.1 that answers as docs/api.md says, records what
it was asked, and streams the events a test gives it.

The client blocks (it is a plain stdlib program), so each command runs in
a thread (C{deferToThread}) while the reactor serves the site.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tomllib
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from p2ptwisted import cli, tap
from p2ptwisted.cli import watch as _watch  # noqa: F401  (cli.watch, patched)
from p2ptwisted.cli import formatting as fmt
from p2ptwisted.cli.activity import Activity
from p2ptwisted.cli.sse import Event, read_events
from p2ptwisted.paths import state_dir

KEY = "k" * 43

STATUS = {
    "name": "alpha", "id": "ab" * 32, "id_readable": "ABCDEFG-HIJKLMN", "version": "1",
    "addresses": ["127.0.0.1:12345"], "tls": True, "mode": "send-receive", "paused": False,
    "folder": {"state": "in sync", "files": 3, "bytes": 3 * 1024 * 1024, "need_files": 0,
               "need_bytes": 0, "rate": 0.0, "eta": None},
    "peers": 1,
}

PEERS = [{"name": "beta\x1b[2J", "id": "cd" * 32, "id_readable": "QRSTUVW-XYZ",
          "address": "127.0.0.1:40000", "direction": "out", "since": 1764840003.1,
          "rate_in": 1048576.0, "rate_out": 0.0, "bytes_in": 10, "bytes_out": 20,
          "completion": 87.5}]

LS = [{"path": "docs/report.txt", "kind": "file", "size": 2048, "mtime": 1764840000.0,
       "hash": "9f86d081884c7d659a2feaa0c55ad015", "perms": "0644"},
      {"path": "docs", "kind": "dir", "size": 0, "mtime": 1764840000.0, "hash": None}]

TRASH = [{"trashed": "notes~20261201-100000.txt", "original": "notes.txt",
          "time": 1764583200.0, "size": 10},
         {"trashed": "notes~20261202-100000.txt", "original": "notes.txt",
          "time": 1764669600.0, "size": 12}]


class FakeApi(resource.Resource):
    """
    /api/NAME answers C{answers[(method, NAME)]}: a JSON value, or
    C{(status, value)}; /api/events streams what L{send} is given.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.answers: Dict[Tuple[str, str], Any] = {
            ("GET", "status"): STATUS, ("GET", "peers"): PEERS, ("GET", "ls"): LS,
            ("GET", "trash"): TRASH, ("GET", "transfers"): [],
            ("GET", "doctor"): {"lines": ["listening on TCP port 12345", "1 peer"]},
            ("GET", "conflicts"): [],
            ("POST", "rescan"): {"changes": 2}, ("POST", "fetch"): (202, {"transfer": 7}),
            ("POST", "restore"): {"path": "notes.txt"},
        }
        self.asked: List[Tuple[str, str, Any, Dict[str, str]]] = []
        self.streams: List[server.Request] = []
        self.backlog: List[bytes] = []
        self.next_id = 1
        self.connected: List[Deferred] = []
        self.waiting: Dict[str, List[Deferred]] = {}

    def render(self, request):
        method = request.method.decode()
        parts = request.path.decode().split("/")
        name = parts[2] if len(parts) > 2 else ""
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.asked.append((method, request.uri.decode(), json.loads(body) if body else None,
                           headers))
        request.setHeader("content-type", "application/json")
        for d in self.waiting.pop(name, []):
            reactor.callLater(0, d.callback, None)
        if headers.get("x-api-key") != KEY:
            request.setResponseCode(401)
            return b'{"error": "a wrong API key (X-API-Key)"}'
        if name == "events":
            return self._stream(request, headers.get("last-event-id"))
        answer = self.answers.get((method, name), (404, {"error": f"no such endpoint: {name}"}))
        if isinstance(answer, tuple):
            request.setResponseCode(answer[0])
            answer = answer[1]
        return json.dumps(answer).encode()

    def _stream(self, request, last_id):
        request.setHeader("content-type", "text/event-stream")
        request.write(b": hello there\n\n")
        start = int(last_id) if last_id else len(self.backlog)
        for raw in self.backlog[start:]:
            request.write(raw)
        self.streams.append(request)
        request.notifyFinish().addErrback(lambda _: None)
        waiting, self.connected = self.connected, []
        for d in waiting:
            d.callback(request)
        return server.NOT_DONE_YET

    def send(self, kind: str, data: Any) -> None:
        raw = f"id: {self.next_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
        self.next_id += 1
        self.backlog.append(raw)
        for request in self.streams:
            request.write(raw)

    def close_streams(self) -> None:
        streams, self.streams = self.streams, []
        for request in streams:
            if not request._disconnected:
                request.finish()

    def stream_opened(self) -> Deferred:
        d: Deferred = Deferred()
        self.connected.append(d)
        return d

    def asked_for(self, name: str) -> Deferred:
        """
        Fires once /api/NAME has been answered.
        """
        d: Deferred = Deferred()
        self.waiting.setdefault(name, []).append(d)
        return d

    def watching(self) -> Deferred:
        """
        Fires once a watch has opened the stream and taken its snapshot
        (it asks for the transfers last).
        """
        return self.asked_for("transfers")


def dead_pid() -> int:
    """
    The pid of a process that has exited and been reaped.
    """
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


class TtyOut(io.StringIO):
    def isatty(self) -> bool:
        return True


class CliTestCase(TestCase):
    timeout = 20

    def setUp(self):
        self.api = FakeApi()
        site = server.Site(self.api)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.api.close_streams)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.state = os.path.abspath(self.mktemp())
        os.makedirs(self.state)
        self.key_file = os.path.join(self.state, "api-key")
        with open(self.key_file, "w") as f:
            f.write(KEY + "\n")
        with open(os.path.join(self.state, "web.json"), "w") as f:
            json.dump({"url": self.url, "key_file": self.key_file, "pid": os.getpid()}, f)

    def run_cli(self, *argv: str, out: Optional[io.StringIO] = None) -> Deferred:
        """
        Run C{p2pshare --state STATE ARGV...} in a thread: a Deferred (it
        starts at once) of its exit status, stdout and stderr.
        """
        out = out if out is not None else io.StringIO()
        err = io.StringIO()
        d = deferToThread(cli.main, ["--state", self.state, *argv], out, err)
        return d.addCallback(lambda code: (code, out.getvalue(), err.getvalue()))

    def assertOneLine(self, err: str, *parts: str) -> None:
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("p2pshare: "), err)
        self.assertNotIn("Traceback", err)
        for part in parts:
            self.assertIn(part, err)


class CommandTests(CliTestCase):
    """
    Each command asks the API the right thing and prints a table or the
    API's JSON.
    """

    async def test_status_for_people(self):
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("node alpha (ABCDEFG-HIJKLMN)", out)
        self.assertIn("127.0.0.1:12345", out)
        self.assertIn("in sync: 3 files, 3.0 MiB", out)
        self.assertIn("1 connected", out)
        method, uri, _, headers = self.api.asked[-1]
        self.assertEqual((method, uri, headers["x-api-key"]), ("GET", "/api/status", KEY))
        self.assertEqual(headers["host"], self.url.split("//")[1])

    async def test_json_is_the_api_answer(self):
        """
        --json prints exactly what the API said, before or after the
        command's name.
        """
        for argv in (["--json", "status"], ["status", "--json"]):
            code, out, err = await self.run_cli(*argv)
            self.assertEqual((code, err), (0, ""))
            self.assertEqual(json.loads(out), STATUS)

    async def test_peers_table_escapes_names(self):
        """
        A peer's name is someone else's text: an escape sequence in it is
        printed escaped, never sent to the terminal.
        """
        code, out, err = await self.run_cli("peers")
        self.assertEqual(code, 0, err)
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["name", "id", "address", "dir", "since", "in", "out",
                                          "complete"])
        self.assertNotIn("\x1b", out)
        self.assertIn("beta\\x1b[2J", row)
        for cell in ("QRSTUVW", "127.0.0.1:40000", "out", "1.0 MiB/s", "88%"):
            self.assertIn(cell, row)

    async def test_empty_peers(self):
        self.api.answers[("GET", "peers")] = []
        code, out, _ = await self.run_cli("peers")
        self.assertEqual((code, out), (0, "(no peers connected)\n"))

    async def test_ls(self):
        code, out, err = await self.run_cli("ls")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["path", "kind", "size", "modified", "hash"])
        self.assertRegex(lines[1], r"^docs/report\.txt +file +2\.0 KiB +\d{4}-.* 9f86d081884c$")
        self.assertRegex(lines[2], r"^docs +dir +- ")
        self.assertEqual(self.api.asked[-1][1], "/api/ls")

    async def test_ls_of_a_peer(self):
        code, _, err = await self.run_cli("ls", "beta one")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.api.asked[-1][1], "/api/ls?peer=beta+one")

    async def test_rescan(self):
        code, out, err = await self.run_cli("rescan")
        self.assertEqual((code, out, err), (0, "rescanned: 2 changes\n", ""))
        self.assertEqual(self.api.asked[-1][:3], ("POST", "/api/rescan", {}))

    async def test_fetch(self):
        code, out, err = await self.run_cli("fetch", "big.iso", "--peer", "beta")
        self.assertEqual(code, 0, err)
        self.assertIn("fetching big.iso (transfer 7", out)
        self.assertEqual(self.api.asked[-1][:3],
                         ("POST", "/api/fetch", {"path": "big.iso", "peer": "beta"}))

    async def test_fetch_wait(self):
        """
        fetch --wait follows the transfer until it is done.
        """
        self.api.answers[("GET", "transfers")] = [
            {"id": 7, "path": "big.iso", "peer": "cd" * 32, "peer_name": "beta",
             "direction": "down", "size": 4096, "done": 4096, "rate": 0, "eta": None,
             "state": "done", "finished": 1.0}]
        code, out, err = await self.run_cli("fetch", "big.iso", "--wait")
        self.assertEqual((code, out, err), (0, "fetched big.iso (4.0 KiB) from beta\n", ""))
        self.assertEqual(self.api.asked[-2][2], {"path": "big.iso"})

    async def test_fetch_already_over(self):
        self.api.answers[("POST", "fetch")] = (202, {"transfer": None})
        code, out, err = await self.run_cli("fetch", "big.iso", "--wait")
        self.assertEqual((code, out, err), (0, "fetched big.iso\n", ""))

    async def test_fetch_wait_failed(self):
        self.api.answers[("GET", "transfers")] = [{"id": 7, "path": "big.iso",
                                                   "state": "failed"}]
        code, out, err = await self.run_cli("fetch", "big.iso", "--wait")
        self.assertEqual((code, out), (1, ""))
        self.assertOneLine(err, "fetching 'big.iso' failed")

    async def test_restore_newest_version_of_a_path(self):
        code, out, err = await self.run_cli("restore", "notes.txt")
        self.assertEqual(code, 0, err)
        self.assertIn("restored notes.txt", out)
        self.assertEqual(self.api.asked[-1][:3], ("POST", "/api/restore",
                                                  {"trashed": "notes~20261202-100000.txt"}))

    async def test_restore_a_named_version(self):
        code, _, err = await self.run_cli("restore", "notes~20261201-100000.txt")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.api.asked[-1][2], {"trashed": "notes~20261201-100000.txt"})

    async def test_restore_nothing(self):
        code, out, err = await self.run_cli("restore", "missing.txt")
        self.assertEqual((code, out), (1, ""))
        self.assertOneLine(err, "no 'missing.txt'")

    async def test_doctor_and_lists(self):
        code, out, _ = await self.run_cli("doctor")
        self.assertEqual((code, out), (0, "listening on TCP port 12345\n1 peer\n"))
        code, out, _ = await self.run_cli("conflicts")
        self.assertEqual((code, out), (0, "(no conflicts)\n"))
        code, out, _ = await self.run_cli("trash")
        self.assertEqual(code, 0)
        self.assertIn("notes~20261202-100000.txt  notes.txt", out)

    async def test_url_and_key_file_override(self):
        """
        --url and --key-file need no web.json.
        """
        os.remove(os.path.join(self.state, "web.json"))
        code, out, err = await self.run_cli("--url", self.url, "--key-file", self.key_file,
                                            "status")
        self.assertEqual(code, 0, err)
        self.assertIn("node alpha", out)


class FailureTests(CliTestCase):
    """
    Every expected failure: a non-zero exit status and one line on stderr.
    """

    async def test_no_node(self):
        os.remove(os.path.join(self.state, "web.json"))
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, out), (cli.EXIT_NO_NODE, ""))
        self.assertOneLine(err, f"no node running for state {self.state}",
                           f"twistd -n p2pshare --state {self.state}")

    async def test_node_gone(self):
        """
        A web.json left behind by a node that is gone: connection refused.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{s.getsockname()[1]}"
        with open(os.path.join(self.state, "web.json"), "w") as f:
            json.dump({"url": gone, "key_file": self.key_file}, f)
        code, out, err = await self.run_cli("peers")
        self.assertEqual((code, out), (cli.EXIT_NO_NODE, ""))
        self.assertOneLine(err, f"no node running at {gone} for state {self.state}")

    async def test_node_killed(self):
        """
        A web.json left by a node that was killed names a pid that is
        gone: no request is made (whatever has the port now gets no key).
        """
        with open(os.path.join(self.state, "web.json"), "w") as f:
            json.dump({"url": self.url, "key_file": self.key_file, "pid": dead_pid()}, f)
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, out), (cli.EXIT_NO_NODE, ""))
        self.assertOneLine(err, f"no node running for state {self.state}")
        self.assertEqual(self.api.asked, [])

    async def test_wrong_key(self):
        with open(self.key_file, "w") as f:
            f.write("wrong\n")
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, out), (cli.EXIT_KEY, ""))
        self.assertOneLine(err, "refused the API key: a wrong API key (X-API-Key)")

    async def test_no_key_file(self):
        os.remove(self.key_file)
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, out), (cli.EXIT_KEY, ""))
        self.assertOneLine(err, f"cannot read the API key {self.key_file}")

    async def test_api_error(self):
        self.api.answers[("GET", "ls")] = (404, {"error": "no connected peer matches 'x'"})
        code, out, err = await self.run_cli("ls", "x")
        self.assertEqual((code, out), (cli.EXIT_API, ""))
        self.assertEqual(err, "p2pshare: no connected peer matches 'x'\n")

    async def test_bad_url(self):
        for url, says in (("localhost:8384", "not a web address"),
                          ("file:///etc/passwd", "not a web address"),
                          ("http://127.0.0.1:port", "cannot use the address")):
            code, out, err = await self.run_cli("--url", url, "status")
            self.assertEqual((code, out), (cli.EXIT_USAGE, ""), err)
            self.assertOneLine(err, says)

    async def test_error_is_escaped(self):
        self.api.answers[("GET", "ls")] = (404, {"error": "no peer \x1b[2J\nmatches"})
        code, _, err = await self.run_cli("ls", "x")
        self.assertEqual(code, cli.EXIT_API)
        self.assertEqual(err, "p2pshare: no peer \\x1b[2J matches\n")

    async def test_error_without_json(self):
        self.api.answers[("GET", "status")] = (500, "oops")
        code, _, err = await self.run_cli("status")
        self.assertEqual(code, cli.EXIT_API)
        self.assertOneLine(err, "500")

    async def test_redirect_not_followed(self):
        """
        The key must not follow a redirect to another host.
        """
        class Redirect(resource.Resource):
            isLeaf = True

            def render(self, request):
                request.setResponseCode(302)
                request.setHeader("location", "http://192.0.2.1/steal")
                return b""

        port = reactor.listenTCP(0, server.Site(Redirect()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        code, _, err = await self.run_cli(
            "--url", f"http://127.0.0.1:{port.getHost().port}", "status")
        self.assertEqual(code, cli.EXIT_API)
        self.assertOneLine(err, "302")

    def test_usage_error(self):
        """
        argparse's own one-line usage error, status 2.
        """
        err = io.StringIO()
        self.patch(cli.sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            cli.main(["watch", "--count", "0"])
        self.assertEqual(caught.exception.code, cli.EXIT_USAGE)
        self.assertIn("not a positive whole number", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())


def transfer(done: int, state: str = "running", rate: float = 1048576.0) -> dict:
    return {"id": 7, "path": "big.iso", "peer": "cd" * 32, "peer_name": "beta",
            "direction": "down", "size": 4 * 1048576, "done": done, "rate": rate,
            "eta": (4 * 1048576 - done) / rate if rate else None, "state": state,
            "finished": None}


SYNCING = dict(STATUS, folder=dict(STATUS["folder"], state="syncing", need_files=1,
                                   need_bytes=4 * 1048576))


class WatchTests(CliTestCase):
    """
    watch follows the event stream: lines into a pipe, bars on a terminal,
    JSON lines with --json; it exits on --count or --until-idle.
    """

    def start_transfer(self) -> None:
        self.api.answers[("GET", "status")] = SYNCING
        self.api.answers[("GET", "transfers")] = [transfer(0, "waiting")]

    def finish_transfer(self) -> None:
        self.api.answers[("GET", "status")] = STATUS
        self.api.answers[("GET", "transfers")] = [transfer(4 * 1048576, "done", 0)]
        self.api.send("fetched", {"id": 7, "path": "big.iso", "size": 4 * 1048576,
                                  "peer": "cd" * 32, "seconds": 2.0})
        self.api.send("folder-state", STATUS["folder"])

    async def test_until_idle_in_a_pipe(self):
        """
        Into a pipe: one line per event, and the folder's state once in
        sync, then exit 0.
        """
        self.start_transfer()
        started = self.api.watching()
        watching = self.run_cli("watch", "--until-idle")
        await started
        self.api.send("hello", {"last": 0})
        # The stream starts with the folder's state, already printed: not again.
        self.api.send("folder-state", SYNCING["folder"])
        self.api.send("progress", {"id": 7, "path": "big.iso", "done": 1048576,
                                   "size": 4 * 1048576, "rate": 1048576.0, "eta": 3.0,
                                   "state": "running"})
        self.api.send("peer-connected", PEERS[0])
        self.finish_transfer()
        code, out, err = await watching
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            "folder syncing: 1 file (4.0 MiB) left; holds 3 files, 3.0 MiB",
            "big.iso    0%  0 B of 4.0 MiB  1.0 MiB/s  ETA 0:00:04  waiting from beta",
            "big.iso   25%  1.0 MiB of 4.0 MiB  1.0 MiB/s  ETA 0:00:03  running from beta",
            "peer connected: beta\\x1b[2J (QRSTUVW-XYZ) at 127.0.0.1:40000",
            "fetched big.iso (4.0 MiB) from beta in 2.0s",
            "folder in sync: 3 files, 3.0 MiB",
        ])

    async def test_until_idle_when_idle(self):
        code, out, err = await self.run_cli("watch", "--until-idle")
        self.assertEqual((code, out, err), (0, "folder in sync: 3 files, 3.0 MiB\n", ""))

    async def test_count_and_json(self):
        """
        --json: each event as a JSON line; --count N: exit after N (the
        hello not counted).
        """
        opened = self.api.stream_opened()
        watching = self.run_cli("watch", "--json", "--count", "2")
        await opened
        self.api.send("hello", {"last": 0})
        self.api.send("local-change", {"path": "a", "action": "added"})
        self.api.send("conflict", {"path": "b", "copy": "b.sync-conflict"})
        code, out, err = await watching
        self.assertEqual((code, err), (0, ""))
        self.assertEqual([json.loads(line) for line in out.splitlines()], [
            {"id": "2", "event": "local-change", "data": {"path": "a", "action": "added"}},
            {"id": "3", "event": "conflict", "data": {"path": "b", "copy": "b.sync-conflict"}},
        ])

    async def test_reconnects(self):
        """
        When the stream ends, watch reconnects with Last-Event-ID and goes
        on from the next event.
        """
        self.patch(cli.watch.Reader, "run", _fast_retry(cli.watch.Reader.run))
        opened = self.api.stream_opened()
        watching = self.run_cli("watch", "--count", "2")
        await opened
        self.api.send("local-change", {"path": "one", "action": "added"})
        reopened = self.api.stream_opened()
        self.api.close_streams()
        await reopened
        self.api.send("local-change", {"path": "two", "action": "added"})
        code, out, err = await watching
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            "folder in sync: 3 files, 3.0 MiB", "local change: added one",
            "lost the node's event stream; reconnecting", "reconnected",
            "local change: added two"])
        events = [a for a in self.api.asked if a[1] == "/api/events"]
        self.assertEqual(events[-1][3]["last-event-id"], "1")

    async def test_gives_up(self):
        """
        A node gone for longer than --reconnect: one line, exit status 3.
        """
        self.patch(cli.watch.Reader, "run", _fast_retry(cli.watch.Reader.run))
        opened = self.api.stream_opened()
        watching = self.run_cli("watch", "--reconnect", "0")
        await opened
        await self.port.stopListening()
        self.api.close_streams()
        code, out, err = await watching
        self.assertEqual(code, cli.EXIT_NO_NODE)
        self.assertOneLine(err, "no node running at")

    async def test_terminal(self):
        """
        On a terminal, rich draws the overall line and a bar per transfer;
        progress events redraw the bars instead of printing lines.
        """
        self.start_transfer()
        started = self.api.watching()
        out = TtyOut()
        watching = self.run_cli("watch", "--until-idle", out=out)
        await started
        self.api.send("progress", {"id": 7, "path": "big.iso", "done": 2 * 1048576,
                                   "size": 4 * 1048576, "rate": 1048576.0, "eta": 2.0,
                                   "state": "running"})
        self.finish_transfer()
        code, text, err = await watching
        self.assertEqual((code, err), (0, ""))
        self.assertIn("\x1b[", text, "no terminal drawing")
        self.assertIn("total", text)
        self.assertIn("big.iso", text)
        self.assertIn("100%", text)
        self.assertIn("fetched big.iso (4.0 MiB) from beta", text)
        self.assertNotIn("running from beta", text)


def _fast_retry(run):
    """
    Reader.run with the server's retry delay made nil.
    """
    def fast(self):
        self.stopped.wait = lambda timeout=None: self.stopped.is_set()
        return run(self)

    return fast


class ReadEventsTests(TestCase):
    """
    The event-stream reader follows the standard's parsing rules.
    """

    def parse(self, raw: bytes) -> List[Event]:
        return list(read_events(io.BytesIO(raw)))

    def test_fields(self):
        events = self.parse(
            b": keep-alive\n\nid: 1\nevent: progress\ndata: {\"a\":\ndata:1}\n\n"
            b"retry: 2500\r\ndata:plain\r\n\r\nid: 2\nevent: lost\ndata: unfinished\n")
        self.assertEqual(events, [Event("progress", '{"a":\n1}', "1", None),
                                  Event("message", "plain", "1", 2.5)])

    def test_no_data_no_event(self):
        self.assertEqual(self.parse(b"event: x\n\nid: 3\n\n"), [])


class FormattingTests(TestCase):
    def test_clean(self):
        self.assertEqual(fmt.clean("a\x1b[31mb\nc\u202ed\x9b"), "a\\x1b[31mb\\nc\\u202ed\\x9b")
        self.assertEqual(fmt.clean("café ☕"), "café ☕")
        self.assertEqual(fmt.clean("x" * 10, 5), "xxxx…")
        self.assertEqual(fmt.clean(None), "")

    def test_numbers(self):
        self.assertEqual([fmt.human(v) for v in (0, 1023, 1536, 3 * 2**30, None, "x")],
                         ["0 B", "1023 B", "1.5 KiB", "3.0 GiB", "-", "-"])
        self.assertEqual([fmt.duration(v) for v in (0, 65.4, 3725, None, -1)],
                         ["0:00:00", "0:01:05", "1:02:05", "-", "-"])
        self.assertEqual([fmt.rate(v) for v in (0, 2048.0, None)], ["-", "2.0 KiB/s", "-"])

    def test_table(self):
        rows = [{"a": "x", "b": 1}, {"a": "longer", "b": None}]
        self.assertEqual(fmt.table(rows, [("A", "a"), ("B", "b")], "none"),
                         "A       B\nx       1\nlonger  -")
        self.assertEqual(fmt.table([], [("A", "a")], "none"), "none")

    def test_syncing_folder(self):
        self.assertEqual(fmt.folder_text(SYNCING["folder"] | {"rate": 1048576.0, "eta": 4}),
                         "syncing: 1 file (4.0 MiB) left, 1.0 MiB/s, ETA 0:00:04;"
                         " holds 3 files, 3.0 MiB")


class ActivityTests(TestCase):
    """
    The overall figures of watch count every transfer seen, as rsync's do.
    """

    def test_overall(self):
        activity = Activity()
        activity.snapshot(SYNCING, [transfer(1048576), dict(transfer(0, "waiting"), id=8),
                                    dict(transfer(5, "done"), id=6)])
        # No ETA from the node: the bytes left at the rate now.
        self.assertEqual(activity.overall(), (1048576, 8 * 1048576, 1048576.0, 7.0))
        self.assertFalse(activity.idle())
        activity.apply(Event("fetched", json.dumps({"id": 7, "path": "big.iso",
                                                    "size": 4 * 1048576})))
        done, total, speed, _ = activity.overall()
        self.assertEqual((done, total, speed), (4 * 1048576, 8 * 1048576, 0))
        # Transfer 6 had ended before: not counted.  The node no longer
        # lists transfer 8: it is over.
        activity.snapshot(STATUS, [])
        self.assertTrue(activity.idle())


class PathTests(TestCase):
    def test_same_state_dir_as_the_node(self):
        """
        The client's default state directory is the node's, by the same
        code.
        """
        share = os.path.abspath(self.mktemp())
        options = tap.Options()
        options.parseOptions(["--share", share])
        self.assertEqual(options["state"], state_dir(None, share))
        self.assertEqual(state_dir(None), os.path.expanduser("~/P2PShare/.p2pshare"))
        self.assertEqual(state_dir("rel"), os.path.abspath("rel"))

    def test_light_start(self):
        """
        A command that does not draw loads neither Twisted nor rich: the
        client starts fast.
        """
        import subprocess

        code = ("import sys, p2ptwisted.cli as c, p2ptwisted.cli.commands; c.parser();"
                " print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'twisted'}))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60)
        self.assertEqual(result.stdout, "[]\n", result.stderr)

    def test_console_script(self):
        """
        pyproject.toml installs p2pshare as the client's entry point.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "pyproject.toml"), "rb") as f:
            scripts = tomllib.load(f)["project"]["scripts"]
        module, _, name = scripts["p2pshare"].partition(":")
        self.assertEqual((module, name), ("p2ptwisted.cli", "run"))
        self.assertTrue(callable(cli.run))


class PasswordTests(CliTestCase):
    """
    A node serving beyond loopback wants HTTP Basic too: the client sends
    it from --web-password-file, and says so when it is missing.
    """

    def setUp(self):
        super().setUp()
        render = self.api.render

        def guarded(request):
            if request.getHeader(b"authorization") != b"Basic cDJwc2hhcmU6c2VjcmV0":
                request.setResponseCode(401)
                request.setHeader("www-authenticate", 'Basic realm="p2pshare"')
                return b'{"error": "this node\'s web page needs its password"}'
            return render(request)

        self.api.render = guarded

    async def test_password(self):
        password = os.path.join(self.state, "password")
        with open(password, "w") as f:
            f.write("secret\nignored\n")
        code, out, err = await self.run_cli("--web-password-file", password, "status")
        self.assertEqual(code, 0, err)
        self.assertIn("node alpha", out)

    async def test_no_password(self):
        code, out, err = await self.run_cli("status")
        self.assertEqual((code, out), (cli.EXIT_KEY, ""))
        self.assertOneLine(err, "wants its web password", "--web-password-file")
