"""
Tests for L{p2ptwisted.watch.ShareWatcher}: real inotify on a temporary
directory and the real reactor, waiting on the rescans the watcher asks for
(each wait gives up after 5 seconds, so a watcher gone deaf fails the test
instead of hanging it); the fallback to polling on a L{task.Clock}.

To be sure something was I{not} reported, a test changes it, then writes a
sentinel file and waits for that: inotify queues events in order, so by the
time the sentinel is reported every earlier change has been seen too.
"""

import errno
import os
import shutil

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2ptwisted import watch, wire

try:
    from twisted.internet import inotify
except ImportError:  # not Linux
    inotify = None

#: Seconds any one wait for a rescan may take before the test fails.
TIMEOUT = 5


def warnings(observer):
    return [e for e in observer
            if e["log_level"] >= LogLevel.warn and e.get("log_namespace", "").startswith(
                "p2ptwisted.watch")]


class _Recording:
    """
    The real reactor, but every C{callLater} is remembered, and
    C{scheduled} fires at the first one made after C{expect()}.
    """

    def __init__(self, real):
        self._real = real
        self.calls = []
        self.scheduled = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def expect(self):
        self.scheduled = Deferred().addTimeout(TIMEOUT, self._real)
        return self.scheduled

    def callLater(self, *args, **kwargs):
        call = self._real.callLater(*args, **kwargs)
        self.calls.append(call)
        d, self.scheduled = self.scheduled, None
        if d is not None:  # once the watcher has finished with this call
            self._real.callLater(0, d.callback, call)
        return call


class InotifyTests(TestCase):
    if inotify is None:
        skip = "no inotify on this platform"

    def setUp(self):
        self.patch(watch, "SETTLE", 0.02)
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.changes = []  # the changed paths of each rescan so far
        self.finished = []  # and the files among them known to be whole
        self._waiting = None  # (wanted path, Deferred)
        self.watcher = None

    def start(self, reactor=reactor, known=lambda path: False):
        self.watcher = watch.ShareWatcher(reactor, self.root, self.rescanned, known=known)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)
        self.assertEqual(self.watcher.mode, "inotify")
        return self.watcher

    def rescanned(self):
        changed = self.watcher.changed
        self.changes.append(changed)
        self.finished.append(self.watcher.finished)
        if self._waiting is not None:
            wanted, d = self._waiting
            if (changed is None) if wanted is None else (changed is not None and wanted in changed):
                self._waiting = None
                d.callback(changed)

    def rescan_for(self, relative):
        """
        A Deferred that fires at the first rescan from now on that names
        C{relative} (a /-separated path) among its changes -- or, for
        C{None}, a rescan of everything.
        """
        wanted = None if relative is None else os.path.join(*relative.split("/"))
        d = Deferred()
        self._waiting = (wanted, d)
        return d.addTimeout(TIMEOUT, reactor)

    def path(self, relative):
        return os.path.join(self.root, *relative.split("/"))

    def write(self, relative, data=b"x"):
        with open(self.path(relative), "wb") as f:
            f.write(data)

    def assertWatchingExactly(self):
        """One watch on each directory of the share, labelled with its path."""
        on_disk = [""]
        for parent, dirs, _ in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(wire.RESERVED_PREFIX)]
            on_disk += [os.path.relpath(os.path.join(parent, d), self.root) for d in dirs]
        self.assertEqual(sorted(self.watcher._wds.values()), sorted(on_disk))

    def reported(self, since=0):
        return {p for changed in self.changes[since:] if changed for p in changed}

    async def test_new_file(self):
        """A file written at the top of the share brings a rescan naming it."""
        self.start()
        d = self.rescan_for("f")
        self.write("f")
        self.assertEqual(await d, {"f"})

    async def test_directory_removed(self):
        """
        Removing a subdirectory leaves the rest of the share watched (it
        used to close the whole inotify connection: the reported bug).
        """
        self.start()
        d = self.rescan_for("x")
        os.mkdir(self.path("x"))
        await d
        d = self.rescan_for("x")
        os.rmdir(self.path("x"))
        await d
        d = self.rescan_for("f")
        self.write("f")
        await d
        d = self.rescan_for("a")
        os.makedirs(self.path("a/b/c"))
        await d
        d = self.rescan_for("a")
        shutil.rmtree(self.path("a"))
        await d
        d = self.rescan_for("g")
        self.write("g")
        await d
        self.assertWatchingExactly()

    async def test_deep_tree(self):
        """
        A tree made all at once is reported whole, and every directory of
        it is watched from then on.
        """
        self.start()
        d = self.rescan_for("a/b/c/d/f")
        os.makedirs(self.path("a/b/c/d"))
        os.makedirs(self.path("a/x/y"))
        self.write("a/b/c/d/f")
        await d
        for relative in ("a/b/c/d/g", "a/x/y/g", "a/x/g", "a/g"):
            d = self.rescan_for(relative)
            self.write(relative)
            await d
        self.assertWatchingExactly()

    async def test_existing_tree(self):
        """Directories already there when the watch starts are watched."""
        os.makedirs(self.path("a/b/c"))
        self.start()
        d = self.rescan_for("a/b/c/f")
        self.write("a/b/c/f")
        await d

    async def test_renamed_directory(self):
        """
        After C{a} is renamed C{b}, changes in C{b} and in directories made
        in it are reported under C{b}.
        """
        self.start()
        d = self.rescan_for("a/sub")
        os.makedirs(self.path("a/sub"))
        await d
        d = self.rescan_for("b")
        os.rename(self.path("a"), self.path("b"))
        await d
        since = len(self.changes)
        d = self.rescan_for("b/new/f")
        os.mkdir(self.path("b/new"))
        self.write("b/new/f")
        await d
        d = self.rescan_for("b/sub/g")
        self.write("b/sub/g")
        await d
        d = self.rescan_for("b/new/h")
        self.write("b/new/h")
        await d
        self.assertEqual([p for p in self.reported(since) if p.startswith("a")], [])
        self.assertWatchingExactly()

    async def test_moved_out_and_back(self):
        """
        A directory moved out of the share is no longer watched; moved back
        in, it is watched again.
        """
        outside = os.path.abspath(self.mktemp())
        self.start()
        d = self.rescan_for("a/sub")
        os.makedirs(self.path("a/sub"))
        await d
        d = self.rescan_for("a")
        os.rename(self.path("a"), outside)
        await d
        since = len(self.changes)
        with open(os.path.join(outside, "sub", "away"), "wb") as f:
            f.write(b"x")
        d = self.rescan_for("sentinel")
        self.write("sentinel")
        await d
        self.assertEqual(self.reported(since), {"sentinel"})
        d = self.rescan_for("a")
        os.rename(outside, self.path("a"))
        await d
        d = self.rescan_for("a/sub/back")
        self.write("a/sub/back")
        await d
        self.assertWatchingExactly()

    async def test_directory_replaced_by_file(self):
        """A directory replaced by a file of its name, and the reverse."""
        self.start()
        d = self.rescan_for("x")
        os.makedirs(self.path("x/y"))
        await d
        d = self.rescan_for("x")
        shutil.rmtree(self.path("x"))
        self.write("x")
        await d
        d = self.rescan_for("x")
        self.write("x", b"again")
        await d
        d = self.rescan_for("x")
        os.remove(self.path("x"))
        os.mkdir(self.path("x"))
        await d
        d = self.rescan_for("x/f")
        self.write("x/f")
        await d
        self.assertWatchingExactly()

    async def test_reserved_names(self):
        """
        Changes under names starting with L{wire.RESERVED_PREFIX} (our
        partial downloads and state) bring no rescan.
        """
        self.start()
        d = self.rescan_for("d")
        os.mkdir(self.path("d"))
        await d
        since = len(self.changes)
        reserved = wire.RESERVED_PREFIX
        os.makedirs(self.path(reserved + "/deep/er"))
        self.write(reserved + "/deep/er/f")
        self.write(reserved + "-part-1")
        self.write("d/" + reserved + "-part-2")
        os.rename(self.path(reserved + "/deep"), self.path(reserved + "-moved"))
        self.write(reserved + "-moved/er/g")
        d = self.rescan_for("sentinel")
        self.write("sentinel")
        await d
        self.assertEqual(self.reported(since), {"sentinel"})
        self.assertWatchingExactly()

    async def test_known_paths(self):
        """
        Changes whose every path C{known} says is catalogued as it is (files
        this node just wrote) bring no rescan.
        """
        self.start(known=lambda path: path == "mine")
        self.write("mine")
        d = self.rescan_for("sentinel")
        self.write("sentinel")
        await d
        self.assertNotIn(frozenset({"mine"}), self.changes)

    async def test_queue_overflow(self):
        """
        When the kernel's event queue overflows, events were lost: the whole
        share is rescanned, and the watches are still there after.
        """
        self.start()
        d = self.rescan_for(None)
        self.watcher._event(-1, inotify.IN_Q_OVERFLOW, b"")
        await d
        d = self.rescan_for("f")
        self.write("f")
        await d

    async def test_a_finished_file_is_scanned_at_once(self):
        """
        A file being written (created, still open) is given the full
        settling time; once it is closed, the rescan comes at once.  A file
        moved in is finished from the start.
        """
        self.patch(watch, "SETTLE", 60.0)
        self.patch(watch, "SETTLE_DONE", 0.01)
        recording = _Recording(reactor)
        self.start(reactor=recording)
        scheduled = recording.expect()
        f = open(self.path("f"), "wb")
        self.addCleanup(f.close)
        f.write(b"partly")
        f.flush()
        call = await scheduled
        self.assertGreater(call.getTime() - reactor.seconds(), 30)
        d = self.rescan_for("f")
        f.close()
        await d
        self.assertEqual(self.finished[-1], frozenset(["f"]))
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as g:
            g.write(b"whole")
        d = self.rescan_for("moved")
        os.rename(outside, self.path("moved"))
        await d
        self.assertEqual(self.finished[-1], frozenset(["moved"]))
        # Touched (its bits changed) after it was closed: no longer known
        # to be whole; the scanner's own rule decides.
        d = self.rescan_for("f")
        os.chmod(self.path("f"), 0o600)
        await d
        self.assertEqual(self.finished[-1], frozenset())

    async def test_stop(self):
        """
        stop() cancels the pending rescan and the periodic one, and closes
        the inotify descriptor.  (The watcher's every call to C{callLater}
        goes through C{recording}; trial also fails a test that leaves
        delayed calls or readers behind.)
        """
        self.patch(watch, "SETTLE", 60.0)
        self.patch(watch, "SETTLE_DONE", 60.0)
        recording = _Recording(reactor)
        self.start(reactor=recording)
        scheduled = recording.expect()
        self.write("f")
        await scheduled
        self.watcher.stop()
        self.assertEqual(len(recording.calls), 2)  # the periodic rescan, the settling one
        self.assertEqual([c for c in recording.calls if c.active()], [])
        self.assertEqual(
            [r for r in reactor.getReaders() if isinstance(r, inotify.INotify)], [])
        self.assertEqual(self.changes, [])

    async def test_watch_limit(self):
        """
        When the kernel refuses a watch on a directory that is there (the
        watch limit, ENOSPC), the watcher says so once, loudly, and falls
        back to rescanning often -- starting with one now.
        """
        add = watch._Notifier.add

        def limited(notifier, path):
            if os.path.basename(path) == "full":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return add(notifier, path)

        self.patch(watch._Notifier, "add", limited)
        self.start()
        d = self.rescan_for(None)
        os.makedirs(self.path("full/more"))
        await d
        self.assertEqual(self.watcher.mode, "polling")
        self.assertEqual(self.watcher.interval, watch.RESCAN_WITHOUT_INOTIFY)
        [warning] = warnings(self.logged)
        self.assertIn("max_user_watches", formatEvent(warning))

    async def test_unreadable_directory(self):
        """
        A directory the kernel will not let us watch (nor the scan read) is
        skipped, quietly; once its permissions change, it is watched.
        """
        add, locked = watch._Notifier.add, [True]

        def add_unless_locked(notifier, path):
            if os.path.basename(path) == "locked" and locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return add(notifier, path)

        self.patch(watch._Notifier, "add", add_unless_locked)
        self.start()
        d = self.rescan_for("locked")
        os.mkdir(self.path("locked"))
        await d
        self.assertEqual((self.watcher.mode, warnings(self.logged)), ("inotify", []))
        locked.clear()
        d = self.rescan_for("locked")
        os.chmod(self.path("locked"), 0o755)
        await d
        d = self.rescan_for("locked/f")
        self.write("locked/f")
        await d

    async def test_share_removed(self):
        """The share directory itself going away means polling, loudly."""
        self.start()
        d = self.rescan_for(None)
        os.rmdir(self.root)
        await d
        self.assertEqual(self.watcher.mode, "polling")
        self.assertEqual(len(warnings(self.logged)), 1)

    def test_share_missing(self):
        """A share directory that cannot be watched at all means polling, loudly."""
        os.rmdir(self.root)
        self.watcher = watch.ShareWatcher(reactor, self.root, self.rescanned)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)
        self.assertEqual(self.watcher.mode, "polling")
        self.assertEqual(len(warnings(self.logged)), 1)


class FallbackTests(SynchronousTestCase):
    """Where inotify cannot be had at all, the share is polled."""

    def test_no_inotify(self):
        def refuse(*args, **kwargs):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        self.patch(watch, "_Notifier", refuse)
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = task.Clock()
        rescans = []
        watcher = watch.ShareWatcher(clock, self.mktemp(), lambda: rescans.append(1))
        watcher.start()
        self.assertEqual((watcher.mode, watcher.interval),
                         ("polling", watch.RESCAN_WITHOUT_INOTIFY))
        self.assertEqual(len(warnings(logged)), 1)
        clock.advance(watch.RESCAN_WITHOUT_INOTIFY)
        self.assertEqual(rescans, [1])
        clock.advance(watch.RESCAN_WITHOUT_INOTIFY)
        self.assertEqual(rescans, [1, 1])
        self.assertEqual(len(warnings(logged)), 1)
        watcher.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
