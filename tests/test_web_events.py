"""
The event stream (C{/api/events}): real changes between two real nodes
arrive as events; the backlog answers Last-Event-ID; keep-alives flow;
a client that leaves is forgotten; progress is throttled.
"""

import os
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from p2ptwisted.web.hub import EventHub
from p2ptwisted.web.monitor import NEED_SAMPLE, Monitor
from p2ptwisted.web.sse import KEEP_ALIVE, EventStream

from .helpers import RealNodes
from .test_web_api import connected, write
from .webclient import WebNodes


async def turns_until(condition, limit=1000):
    """
    Let the reactor run turn by turn until C{condition()} (the server's
    side of a closed connection is handled a turn or two after ours).
    """
    for _ in range(limit):
        if condition():
            return
        await deferLater(reactor, 0, lambda: None)
    raise AssertionError("condition never became true")


class LiveEventTests(WebNodes, RealNodes, TestCase):
    timeout = 30

    async def test_a_file_moving_between_two_nodes(self):
        a = self.web_node("A")
        b = self.web_node("B", [a.address])
        await connected(a, b)
        on_a = await a.client.events()
        on_b = await b.client.events(headers={"Last-Event-ID": "0"})
        self.addCleanup(on_a.close)
        self.addCleanup(on_b.close)
        self.assertEqual(on_a.response.code, 200)
        self.assertEqual(on_a.response.headers.getRawHeaders("content-type"),
                         ["text/event-stream; charset=utf-8"])
        hello = await on_a.of_type("hello")
        self.assertEqual(hello["id"], None)
        # B's peer-connected happened before the stream opened: the
        # backlog (Last-Event-ID: 0) has it.
        joined = await on_b.of_type("peer-connected")
        self.assertEqual((joined["data"]["id"], joined["data"]["name"],
                          joined["data"]["direction"]), (a.node_id, "A", "out"))
        write(a, "big.bin", os.urandom(3 * 1024 * 1024))
        await a.client.post("/api/rescan")
        local = await on_a.of_type("local-change", lambda d: d["path"] == "big.bin")
        self.assertEqual((local["data"]["action"], local["data"]["by"],
                          local["data"]["local"]), ("added", "A", True))
        fetched = await on_b.of_type("fetched", lambda d: d["path"] == "big.bin")
        self.assertEqual((fetched["data"]["size"], fetched["data"]["peer"]),
                         (3 * 1024 * 1024, a.node_id))
        remote = await on_b.of_type("remote-change", lambda d: d["path"] == "big.bin")
        self.assertEqual((remote["data"]["action"], remote["data"]["by"],
                          remote["data"]["local"]), ("added", "A", False))
        await on_b.of_type("folder-state", lambda d: d["state"] == "in sync"
                           and d["files"] == 1)
        ids = [e["id"] for e in on_b.events if e["id"] is not None]
        self.assertEqual(ids, sorted(set(ids)))
        # A peer that leaves.
        await b.client.post("/api/connect", {"address": a.address})
        a.connections[b.node_id].close("dropped", "by the test")
        lost = await on_b.of_type("peer-lost")
        self.assertEqual((lost["data"]["id"], lost["data"]["name"]), (a.node_id, "A"))

    async def test_last_event_id_and_disconnect(self):
        a = self.web_node("A")
        for n in range(3):
            a.events.emit("error", {"path": None, "message": f"number {n}"})
        last = a.events.last_id
        reader = await a.client.events(headers={"Last-Event-ID": str(last - 1)})
        await reader.of_type("error", lambda d: d["message"] == "number 2")
        self.assertEqual([e["data"]["message"] for e in reader.events if e["type"] == "error"],
                         ["number 2"])
        # A new client is told the folder's state, though nothing changed.
        await a.folder.when(a.folder.in_sync)
        state = await reader.of_type("folder-state")
        self.assertEqual(state["data"]["state"], "in sync")
        emitted = a.events.emit("error", {"path": None, "message": "live"})
        live = await reader.of_type("error", lambda d: d["message"] == "live")
        self.assertEqual(live["id"], emitted.id)
        stream = a.web.stream
        self.assertEqual(len(stream.clients), 1)
        reader.close()
        await reader.closed
        await turns_until(lambda: not stream.clients)
        # (the change log still listens; the stream's client does not)
        self.assertEqual(len(a.events._listeners), 1)

    async def test_events_need_the_key(self):
        a = self.web_node("A")
        reply = await a.client.get("/api/events", key=False)
        self.assertEqual(reply.code, 401)
        self.assertEqual(a.web.stream.clients, {})


class StreamUnitTests(SynchronousTestCase):
    def test_keep_alive_and_cleanup(self):
        hub, clock = EventHub(), Clock()
        stream = EventStream(hub, clock)
        stream.start()
        request = DummyRequest([b"api", b"events"])
        stream.render(request)
        clock.advance(KEEP_ALIVE)
        self.assertEqual(request.written[-1], b": keep-alive\n\n")
        hub.emit("conflict", {"path": "a.txt", "copy": "a.sync-conflict-x.txt"})
        self.assertEqual(request.written[-1],
                         b'id: 1\nevent: conflict\ndata: {"path":"a.txt",'
                         b'"copy":"a.sync-conflict-x.txt"}\n\n')
        self.assertTrue(hub.listening)
        request.processingFailed(Exception("client went away"))
        self.assertFalse(hub.listening)
        self.assertEqual(stream.clients, {})
        stream.stop()

    def test_backlog_after_restart(self):
        """
        A Last-Event-ID beyond the node's newest (the node restarted)
        gets everything kept.
        """
        hub = EventHub(backlog=2)
        for n in range(3):
            hub.emit("error", {"n": n})
        self.assertEqual([e.id for e in hub.since(1)], [2, 3])
        self.assertEqual([e.id for e in hub.since(99)], [2, 3])
        self.assertEqual(hub.since(3), [])


class FakeWant:
    def __init__(self, size):
        self.entry = type("E", (), {"size": size})()
        self.path = "big.bin"
        self.state = "running"
        self.finished_at = None
        self.peer = "p" * 64
        self.got = 0


def fake_node(transfers=(), totals=(0, 0), in_sync=False, mode="send-receive", unplanned=(),
              needed=None):
    """
    A node as the monitor looks at it: its folder answers what the test
    sets (C{folder.totals} and C{folder.synced} may be changed later).
    """
    folder = SimpleNamespace(
        fetcher=SimpleNamespace(transfers=lambda: list(transfers), bytes_received=0),
        store=SimpleNamespace(totals=lambda: folder.totals, needed=needed),
        sync=SimpleNamespace(paused=False), mode=mode, totals=totals, synced=in_sync,
        in_sync=lambda: folder.synced, unplanned=lambda: list(unplanned))
    return SimpleNamespace(connections={}, folder=folder, events=EventHub())


class ProgressThrottleTests(SynchronousTestCase):
    """
    The monitor sends a running transfer's progress at most once a tick
    (4 a second), and only when it moved.
    """

    def test_progress_throttled(self):
        clock, want = Clock(), FakeWant(1000)
        node = fake_node(transfers=[want])
        seen = []
        node.events.subscribe(seen.append)
        monitor = Monitor(node, clock)
        monitor.start()
        self.addCleanup(monitor.stop)
        for _ in range(40):  # ten seconds of a byte counter moving very fast
            want.got += 10
            clock.advance(0.01)
        progress = [e for e in seen if e.type == "progress"]
        self.assertLessEqual(len(progress), 1 + 0.4 / 0.25)
        for _ in range(12):  # three seconds, each tick a little more
            want.got += 50
            clock.advance(0.25)
        progress = [e for e in seen if e.type == "progress"]
        times = len(progress)
        self.assertEqual(progress[-1].data["done"], want.got)
        self.assertAlmostEqual(progress[-1].data["rate"], 200.0)
        self.assertAlmostEqual(progress[-1].data["eta"], (1000 - want.got) / 200.0)
        clock.advance(1.0)  # nothing moved: nothing sent
        self.assertEqual(len([e for e in seen if e.type == "progress"]), times)
        want.finished_at, want.state = clock.seconds(), "done"
        clock.advance(0.25)
        [fetched] = [e for e in seen if e.type == "fetched"]
        self.assertEqual((fetched.data["path"], fetched.data["size"]), ("big.bin", 1000))
        # From when it was first seen, not from the start of the rate's window.
        self.assertAlmostEqual(fetched.data["seconds"], 0.4 + 3.0 + 1.0)


class FolderStateTests(SynchronousTestCase):
    def test_new_state_has_a_fresh_count(self):
        """
        The folder turns "in sync" within a second of its last count: the
        event counts the file that was just placed (it would otherwise
        repeat the count from before).
        """
        clock = Clock()
        node = fake_node(totals=(1, 100))
        seen = []
        node.events.subscribe(seen.append)
        monitor = Monitor(node, clock)
        monitor.start()
        self.addCleanup(monitor.stop)
        clock.advance(0.25)
        node.folder.totals, node.folder.synced = (2, 300), True
        clock.advance(0.25)
        states = [(e.data["state"], e.data["files"], e.data["bytes"])
                  for e in seen if e.type == "folder-state"]
        self.assertEqual(states, [("syncing", 1, 100), ("in sync", 2, 300)])


class UnplannedNeedTests(SynchronousTestCase):
    """
    A syncing folder's files and bytes left count the paths it has yet to
    plan (as the index has them from peers), not only the fetches under way.
    """

    def monitor(self, unplanned, in_sync=False, mode="send-receive"):
        asked = []

        def needed(paths):
            asked.append(list(paths))
            return len(paths) // 2, 100 * (len(paths) // 2)

        want = FakeWant(1000)
        want.got = 400
        node = fake_node(transfers=[want], in_sync=in_sync, mode=mode, unplanned=unplanned,
                         needed=needed)
        return Monitor(node, Clock()), asked

    def test_fetches_and_unplanned_paths(self):
        monitor, asked = self.monitor([f"p{i}" for i in range(10)])
        state = monitor.folder()
        self.assertEqual((state["need_files"], state["need_bytes"]), (1 + 5, 600 + 500))
        self.assertEqual(asked, [[f"p{i}" for i in range(10)]])

    def test_many_paths_sampled(self):
        monitor, asked = self.monitor([f"p{i}" for i in range(3 * NEED_SAMPLE)])
        state = monitor.folder()
        self.assertEqual([len(paths) for paths in asked], [NEED_SAMPLE])
        half = NEED_SAMPLE // 2
        self.assertEqual((state["need_files"], state["need_bytes"]),
                         (1 + 3 * half, 600 + 3 * 100 * half))

    def test_rate_of_files_fetched_between_ticks(self):
        """
        Small files come and go between two looks: the folder's rate is
        what its fetcher received, and its time left follows from it.
        """
        monitor, _ = self.monitor([f"p{i}" for i in range(10)])
        fetcher = monitor.node.folder.fetcher
        for _ in range(8):
            fetcher.bytes_received += 2000
            monitor.clock.advance(0.25)
            monitor.tick()
        state = monitor.folder()
        self.assertAlmostEqual(state["rate"], 8000.0)
        self.assertAlmostEqual(state["eta"], (600 + 500) / 8000.0)

    def test_not_looked_up_in_sync_or_send_only(self):
        for kwargs in ({"in_sync": True}, {"mode": "send-only"}):
            monitor, asked = self.monitor(["p"] * 4, **kwargs)
            state = monitor.folder()
            self.assertEqual((state["need_files"], state["need_bytes"], asked), (1, 600, []))


def entry(path, content_hash="h1", live=True, by="aaaa", kind="file"):
    from p2ptwisted.core.index import Entry
    from p2ptwisted.core.versions import Vector

    return Entry(path=path, kind=kind, size=1, mtime_ns=0, perms=0o644,
                 hash=content_hash if live else "", deleted=not live,
                 version=Vector({by: 1}), modified_by=by)


class HubTests(SynchronousTestCase):
    """
    How the hub tells what a change was, and a lost conflict.
    """

    def setUp(self):
        self.hub = EventHub()
        self.hub.names = {"aaaa": "A", "bbbb": "B"}.get
        self.seen = []
        self.hub.subscribe(self.seen.append)

    def test_added_changed_deleted(self):
        self.hub.changes([(None, entry("new")), (entry("old"), entry("old", "h2")),
                          (entry("gone", "h3"), entry("gone", live=False, by="bbbb"))],
                         local=True)
        self.assertEqual([(e.type, e.data["path"], e.data["action"], e.data["by"])
                          for e in self.seen],
                         [("local-change", "new", "added", "A"),
                          ("local-change", "old", "changed", "A"),
                          ("local-change", "gone", "deleted", "B")])

    def test_rename_is_one_change(self):
        self.hub.changes([(None, entry("b.txt", "h9")),
                          (entry("a.txt", "h9"), entry("a.txt", live=False))], local=False)
        [event] = self.seen
        self.assertEqual((event.type, event.data["path"], event.data["action"],
                          event.data["from"]), ("remote-change", "b.txt", "renamed", "a.txt"))

    def test_applied_conflict_and_move(self):
        from p2ptwisted.core.planner import DELETE, FETCH, MOVE, Action

        self.hub.applied(Action(FETCH, "n.txt", entry("n.txt", "h2", by="bbbb"),
                                local=entry("n.txt"),
                                conflict_copy="n.sync-conflict-20240610-070000-aaaa.txt"))
        self.assertEqual([(e.type, e.data) for e in self.seen][0],
                         ("conflict", {"path": "n.txt",
                                       "copy": "n.sync-conflict-20240610-070000-aaaa.txt"}))
        self.assertEqual((self.seen[1].type, self.seen[1].data["action"]),
                         ("remote-change", "changed"))
        self.seen.clear()
        source = Action(DELETE, "old.txt", entry("old.txt", live=False, by="bbbb"),
                        local=entry("old.txt", "h5"))
        self.hub.applied(Action(MOVE, "new.txt", entry("new.txt", "h5", by="bbbb"),
                                source=source))
        [event] = self.seen
        self.assertEqual((event.data["path"], event.data["action"], event.data["from"],
                          event.data["by"]), ("new.txt", "renamed", "old.txt", "B"))

    def test_at_most_a_hundred(self):
        self.hub.changes([(None, entry(f"f{i}")) for i in range(150)], local=True)
        self.assertEqual(len(self.seen), 100)
