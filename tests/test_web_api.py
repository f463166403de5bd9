"""
The web API (docs/api.md), endpoint by endpoint: real nodes built as
twistd builds them, in this process, their web servers on free loopback
ports, asked over real TCP with twisted.web's Agent.
"""

import os
import time

from twisted.trial.unittest import TestCase

from p2ptwisted.identity import format_id

from .helpers import RealNodes, indexed
from .webclient import WebNodes


def write(node, path, data: bytes) -> str:
    """
    Write a file into C{node}'s share, a minute old: a scan records it at
    once (a file changed within the last second waits to be left alone).
    """
    full = os.path.join(node.share_dir, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    old = time.time() - 60
    os.utime(full, (old, old))
    return full


async def connected(a, b):
    """
    Once each of two nodes has the other as a peer (each checks its own
    condition on its own connection changes).
    """
    await a.wait_for(lambda _: b.node_id in a.connections)
    await b.wait_for(lambda _: a.node_id in b.connections)


class StatusTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_status(self):
        a = self.web_node("A")
        await a.folder.when(lambda: a.folder.sync.scans.count > 0)
        reply = await a.client.get("/api/status")
        self.assertEqual(reply.code, 200, reply)
        self.assertEqual(reply.header("Content-Type"), "application/json; charset=utf-8")
        status = reply.json()
        self.assertEqual((status["name"], status["id"], status["id_readable"]),
                         ("A", a.node_id, format_id(a.node_id)))
        self.assertEqual(status["addresses"], [a.address])
        self.assertEqual((status["tls"], status["mode"], status["paused"], status["peers"]),
                         (True, "send-receive", False, 0))
        self.assertEqual(status["folder"]["state"], "in sync")
        self.assertEqual((status["folder"]["files"], status["folder"]["need_files"]), (0, 0))

    async def test_unknown_endpoint_wrong_method_and_bad_bodies(self):
        a = self.web_node("A")
        reply = await a.client.get("/api/nothing")
        self.assertEqual((reply.code, list(reply.json())), (404, ["error"]))
        reply = await a.client.post("/api/status")
        self.assertEqual((reply.code, reply.header("Allow")), (405, "GET"))
        reply = await a.client.get("/api/rescan")
        self.assertEqual((reply.code, reply.header("Allow")), (405, "POST"))
        reply = await a.client.post("/api/connect", b"{not json")
        self.assertEqual(reply.code, 400)
        self.assertIn("not JSON", reply.json()["error"])
        reply = await a.client.post("/api/connect", [1, 2])
        self.assertEqual(reply.code, 400)
        reply = await a.client.post("/api/connect", {})
        self.assertEqual(reply.json(), {"error": "give 'address' as a non-empty string"})
        reply = await a.client.post("/api/connect", b"x" * (64 * 1024 + 1))
        self.assertEqual(reply.code, 413)
        reply = await a.client.get("/api/changes?limit=zero")
        self.assertEqual(reply.code, 400)


class PeerTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_peers_both_ways(self):
        a = self.web_node("A")
        write(a, "f.txt", b"hello")
        b = self.web_node("B", [a.address])
        await connected(a, b)
        await indexed(b, "f.txt")
        await b.folder.when(b.folder.in_sync)
        [seen_by_a] = (await a.client.get("/api/peers")).json()
        [seen_by_b] = (await b.client.get("/api/peers")).json()
        self.assertEqual((seen_by_a["name"], seen_by_a["id"], seen_by_a["direction"]),
                         ("B", b.node_id, "in"))
        self.assertEqual((seen_by_b["name"], seen_by_b["id"], seen_by_b["direction"]),
                         ("A", a.node_id, "out"))
        self.assertEqual(seen_by_b["address"], a.address)
        for peer in (seen_by_a, seen_by_b):
            self.assertGreater(peer["bytes_in"], 0)
            self.assertGreater(peer["since"], 0)
            self.assertEqual(set(peer) >= {"rate_in", "rate_out", "completion", "id_readable"},
                             True)
        self.assertEqual(seen_by_b["completion"], 100.0)
        status = (await b.client.get("/api/status")).json()
        self.assertEqual(status["peers"], 1)

    async def test_completion_counts_what_the_peer_lacks(self):
        """
        A node in send-only mode that has our file's path with other
        content counts as not having it.
        """
        a = self.web_node("A")
        write(a, "f.txt", b"1" * 3000)
        write(a, "g.txt", b"2" * 1000)
        b = self.web_node("B", [a.address], extra=["--mode", "send-only"])
        write(b, "g.txt", b"different")
        await b.rescan()
        await indexed(a, "f.txt")
        await indexed(a, "g.txt")
        await connected(a, b)
        await a.folder.when(lambda: len(a.folder.store.remote_paths(b.node_id)) == 1)
        [peer] = (await a.client.get("/api/peers")).json()
        self.assertEqual(peer["completion"], 0.0)

    async def test_connect(self):
        a = self.web_node("A")
        c = self.web_node("C")
        reply = await c.client.post("/api/connect", {"address": a.address})
        self.assertEqual(reply.code, 200, reply)
        self.assertEqual((reply.json()["id"], reply.json()["name"]), (a.node_id, "A"))
        self.assertIn(a.node_id, c.connections)

    async def test_connect_bad_and_unreachable(self):
        c = self.web_node("C")
        reply = await c.client.post("/api/connect", {"address": "10.0.0.1"})
        self.assertEqual(reply.code, 400)
        self.assertIn("'10.0.0.1'", reply.json()["error"])
        from .test_twistd import free_port

        reply = await c.client.post("/api/connect", {"address": f"127.0.0.1:{free_port()}"})
        self.assertEqual(reply.code, 502)
        self.assertIn("could not reach", reply.json()["error"])


class FileTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_rescan_changes_and_ls(self):
        a = self.web_node("A")
        await a.folder.when(lambda: a.folder.sync.scans.count > 0)
        write(a, "docs/new.txt", b"new")
        reply = await a.client.post("/api/rescan")
        self.assertEqual(reply.json(), {"changes": 2})  # the directory and the file
        changes = (await a.client.get("/api/changes")).json()
        self.assertEqual([(c["path"], c["action"], c["by"], c["local"]) for c in changes],
                         [("docs/new.txt", "added", "A", True),
                          ("docs", "added", "A", True)])
        os.rename(os.path.join(a.share_dir, "docs", "new.txt"),
                  os.path.join(a.share_dir, "docs", "old.txt"))
        await a.client.post("/api/rescan")
        [latest] = (await a.client.get("/api/changes?limit=1")).json()
        self.assertEqual((latest["path"], latest["action"], latest["from"]),
                         ("docs/old.txt", "renamed", "docs/new.txt"))
        listing = (await a.client.get("/api/ls")).json()
        self.assertEqual([(e["path"], e["kind"], e["size"]) for e in listing],
                         [("docs", "dir", 0), ("docs/old.txt", "file", 3)])
        self.assertEqual(len(listing[1]["hash"]), 64)

    async def test_ls_of_a_peer(self):
        a = self.web_node("A")
        write(a, "f.txt", b"hello")
        b = self.web_node("B", [a.address], extra=["--mode", "send-only"])
        await connected(a, b)
        await b.folder.when(lambda: b.folder.store.remote_paths(a.node_id))
        listing = (await b.client.get("/api/ls?peer=A")).json()
        self.assertEqual([e["path"] for e in listing], ["f.txt"])
        reply = await b.client.get("/api/ls?peer=nobody")
        self.assertEqual(reply.code, 404)
        self.assertIn("no connected peer matches", reply.json()["error"])

    async def test_fetch_and_transfers(self):
        a = self.web_node("A")
        write(a, "f.txt", b"x" * 100_000)
        b = self.web_node("B", [a.address], extra=["--mode", "send-only"])
        await connected(a, b)
        await b.folder.when(lambda: b.folder.store.remote_paths(a.node_id))
        reply = await b.client.post("/api/fetch", {"path": "f.txt", "peer": "A"})
        self.assertEqual(reply.code, 202, reply)
        transfer = reply.json()["transfer"]
        self.assertIsInstance(transfer, int)
        await indexed(b, "f.txt")
        [row] = [t for t in (await b.client.get("/api/transfers")).json()
                 if t["id"] == transfer]
        self.assertEqual((row["path"], row["direction"], row["state"], row["size"], row["done"],
                          row["peer"], row["peer_name"]),
                         ("f.txt", "down", "done", 100_000, 100_000, a.node_id, "A"))
        with open(os.path.join(b.share_dir, "f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"x" * 100_000)
        reply = await b.client.post("/api/fetch", {"path": "missing.txt"})
        self.assertEqual(reply.code, 404)

    async def test_conflicts_ignored_doctor(self):
        a = self.web_node("A")
        write(a, "notes.sync-conflict-20240610-070000-3f2a9c0.txt", b"old")
        write(a, "notes.txt", b"new")
        write(a, ".p2pignore", b"# editor files\n*.swp\nbuild/\n")
        await a.client.post("/api/rescan")
        conflicts = (await a.client.get("/api/conflicts")).json()
        self.assertEqual([(c["path"], c["original"], c["size"]) for c in conflicts],
                         [("notes.sync-conflict-20240610-070000-3f2a9c0.txt", "notes.txt", 3)])
        ignored = (await a.client.get("/api/ignored")).json()
        self.assertEqual(ignored, {"patterns": ["*.swp", "build/"], "error": None,
                                   "skipped": []})
        doctor = (await a.client.get("/api/doctor")).json()
        self.assertTrue(doctor["lines"][0].startswith("listening on TCP port"), doctor)

    async def test_trash_and_restore(self):
        a = self.web_node("A")
        trash = os.path.join(a.state_dir, "trash", "docs")
        os.makedirs(trash)
        with open(os.path.join(trash, "report~20261203-141502.txt"), "wb") as f:
            f.write(b"kept")
        items = (await a.client.get("/api/trash")).json()
        self.assertEqual(items, [{"trashed": "docs/report~20261203-141502.txt",
                                  "original": "docs/report.txt", "time": 1796307302.0,
                                  "size": 4}])
        reply = await a.client.post("/api/restore",
                                    {"trashed": "docs/report~20261203-141502.txt"})
        self.assertEqual(reply.json(), {"path": "docs/report.txt"})
        with open(os.path.join(a.share_dir, "docs", "report.txt"), "rb") as f:
            self.assertEqual(f.read(), b"kept")
        await indexed(a, "docs/report.txt")  # (once it has been left alone a moment)
        self.assertEqual((await a.client.get("/api/trash")).json(), [])
        reply = await a.client.post("/api/restore",
                                    {"trashed": "docs/report~20261203-141502.txt"})
        self.assertEqual(reply.code, 404, reply)
        reply = await a.client.post("/api/restore", {"path": "not-a-version.txt"})
        self.assertEqual(reply.code, 400, reply)


class PauseTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_paused_node_takes_nothing_until_resumed(self):
        a = self.web_node("A")
        b = self.web_node("B", [a.address])
        await connected(a, b)
        reply = await b.client.post("/api/pause")
        self.assertEqual(reply.json(), {"paused": True})
        status = (await b.client.get("/api/status")).json()
        self.assertEqual((status["paused"], status["folder"]["state"]), (True, "paused"))
        write(a, "f.txt", b"while paused")
        await a.rescan()
        # B hears of the file, plans nothing, fetches nothing.
        await b.folder.when(lambda: b.folder.store.remote_for("f.txt"))
        self.assertFalse(os.path.exists(os.path.join(b.share_dir, "f.txt")))
        self.assertEqual(b.folder.fetcher.transfers(), [])
        reply = await b.client.post("/api/resume")
        self.assertEqual(reply.json(), {"paused": False})
        await indexed(b, "f.txt")
        self.assertFalse((await b.client.get("/api/status")).json()["paused"])


    async def test_paused_node_sends_no_index_updates(self):
        """
        Paused, a node's own changes are recorded but not announced to its
        peers until it resumes.
        """
        a = self.web_node("A")
        await a.folder.when(lambda: a.folder.sync.scans.count > 0)
        announced = []
        a.folder.sync.announce = lambda: announced.append(True)
        await a.client.post("/api/pause")
        write(a, "mine.txt", b"local")
        self.assertEqual((await a.client.post("/api/rescan")).json(), {"changes": 1})
        self.assertEqual(announced, [])
        await a.client.post("/api/resume")
        self.assertEqual(announced, [True])


class ApproveTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_pending_node_approved(self):
        """
        A node with an allow-list lists a stranger that knocked, and lets
        it in once approved (and remembers that in STATE/approved-ids).
        """
        a = self.web_node("A", extra=["--allow", "ab" * 32])
        b = self.web_node("B", [a.address])
        await a.wait_for(lambda _: b.node_id in a.approvals.pending)
        [pending] = (await a.client.get("/api/pending")).json()
        self.assertEqual((pending["id"], pending["id_readable"]),
                         (b.node_id, format_id(b.node_id)))
        self.assertTrue(pending["address"].startswith("127.0.0.1:"), pending)
        reply = await a.client.post("/api/approve", {"id": format_id(b.node_id)})
        self.assertEqual(reply.json(), {"approved": b.node_id})
        self.assertEqual((await a.client.get("/api/pending")).json(), [])
        for entry in b.book:  # (B redials with backoff: make it now)
            entry.next_attempt = 0.0
        await connected(a, b)
        with open(os.path.join(a.state_dir, "approved-ids")) as f:
            self.assertEqual(f.read().split()[0], b.node_id)
        self.assertIn(b.node_id, a.approvals.load())

    async def test_approve_without_allow_list_or_bad_id(self):
        a = self.web_node("A")
        reply = await a.client.post("/api/approve", {"id": "ab" * 32})
        self.assertEqual(reply.code, 400)
        self.assertIn("admits any node", reply.json()["error"])
        self.assertEqual((await a.client.get("/api/pending")).json(), [])
        a2 = self.web_node("A2", extra=["--allow", "ab" * 32])
        reply = await a2.client.post("/api/approve", {"id": "xyz"})
        self.assertEqual(reply.code, 400)
        self.assertIn("not a node id", reply.json()["error"])
