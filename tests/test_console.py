"""
Tests for L{p2ptwisted.console} (the manhole's prompt), L{p2ptwisted.progress}
(its live view of a fetch) and L{p2ptwisted.tables}, in memory: a
L{Console} behind Conch's terminal protocol on a string transport, typed
at key by key, on a fake clock.  (Logging in over real SSH is
L{tests.test_manhole}'s part.)
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from twisted.conch.insults import insults
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.console import Console
from p2ptwisted.progress import ProgressView
from p2ptwisted.tables import EntryTable, transfer_table

from .helpers import capture_logs

ESCAPES = re.compile(rb"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])")

TAB = b"\t"
CTRL_C = b"\x03"
CTRL_K = b"\x0b"
CTRL_R = b"\x12"
CTRL_U = b"\x15"
CTRL_W = b"\x17"


def catalog():
    return []


def catalog_of(peer):
    return []


class Session:
    """
    One console on a string transport: what it wrote, and keys to type.
    """

    def __init__(self, make_namespace):
        self.transport = StringTransport()
        self.terminal = insults.ServerProtocol(Console, make_namespace)
        self.terminal.makeConnection(self.transport)
        self.console = self.terminal.terminalProtocol

    def type(self, keys: bytes) -> None:
        self.terminal.dataReceived(keys)

    def output(self) -> str:
        return ESCAPES.sub(b"", self.transport.value()).decode("utf-8", "replace")

    def clear(self) -> None:
        self.transport.clear()

    def line(self) -> bytes:
        return b"".join(self.console.lineBuffer)

    def run(self, line: str) -> str:
        """
        Type C{line} and Enter; return what was written in answer.
        """
        self.clear()
        self.type(line.encode() + b"\r")
        return self.output()


class ConsoleTestCase(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.names = {"catalog": catalog, "catalog_of": catalog_of,
                      "node": SimpleNamespace(folder=1, fetcher=2)}

    def session(self) -> Session:
        return Session(lambda console: self.names)

    def warnings(self):
        return [line for line in self.logs() if "unhandled" in line.lower()]


class CompletionTests(ConsoleTestCase):
    def test_unique_name(self):
        """
        Tab completes a name that has one completion (rlcompleter adds the
        parenthesis of a function).
        """
        s = self.session()
        s.type(b"catalog_" + TAB)
        self.assertEqual(s.line(), b"catalog_of(")

    def test_attribute(self):
        s = self.session()
        s.type(b"x = node.fo" + TAB)
        self.assertEqual(s.line(), b"x = node.folder")

    def test_ambiguous_shows_candidates(self):
        """
        Tab on a word with several completions and no longer common
        prefix lists them below, then redraws the prompt and the line.
        """
        s = self.session()
        s.type(b"node.f" + TAB)
        self.assertEqual(s.line(), b"node.f")
        s.clear()
        s.type(TAB)
        out = s.output()
        self.assertIn("node.fetcher", out)
        self.assertIn("node.folder", out)
        self.assertTrue(out.rstrip().endswith(">>> node.f"), out)
        self.assertEqual(s.line(), b"node.f")

    def test_common_prefix(self):
        s = self.session()
        s.type(b"cata" + TAB)
        self.assertEqual(s.line(), b"catalog")

    def test_paths_inside_a_string(self):
        """
        Inside a string, Tab completes the shared paths the namespace's
        control knows (for fetch("...")), not Python names.
        """
        paths = ["docs", "docs/report.pdf", "docs/review.txt", "notes.txt"]
        self.names["control"] = SimpleNamespace(known_paths=lambda: paths)
        s = self.session()
        s.type(b'fetch("no' + TAB)
        self.assertEqual(s.line(), b'fetch("notes.txt')
        s.type(CTRL_U + b"x = 'docs/re" + TAB)
        self.assertEqual(s.line(), b"x = 'docs/re")
        s.clear()
        s.type(TAB)
        self.assertIn("docs/report.pdf  docs/review.txt", s.output())
        s.type(b"p" + TAB)
        self.assertEqual(s.line(), b"x = 'docs/report.pdf")
        s.type(CTRL_U + b'"it\\"s" + cata' + TAB)  # a closed string, then a name
        self.assertEqual(s.line(), b'"it\\"s" + catalog')

    def test_indentation(self):
        """
        Tab at the start of a line (or after a space) still indents.
        """
        s = self.session()
        s.type(TAB)
        self.assertEqual(s.line(), b"    ")

    def test_nothing_to_complete_rings(self):
        s = self.session()
        s.type(b"zzz")
        s.clear()
        s.type(TAB)
        self.assertEqual(s.line(), b"zzz")
        self.assertEqual(s.transport.value(), b"\a")


class KeyTests(ConsoleTestCase):
    def test_kill_word_line_and_end(self):
        """
        Ctrl-W kills the word before the cursor, Ctrl-K the rest of the
        line, Ctrl-U everything before the cursor; none is logged.
        """
        s = self.session()
        s.type(b"print(1)  two three")
        s.type(CTRL_W)
        self.assertEqual(s.line(), b"print(1)  two ")
        s.type(CTRL_W)
        self.assertEqual(s.line(), b"print(1)  ")
        s.type(b"\x1b[D\x1b[D\x1b[D")  # three times left
        s.type(CTRL_K)
        self.assertEqual(s.line(), b"print(1")
        s.type(CTRL_U)
        self.assertEqual(s.line(), b"")
        self.assertEqual(self.warnings(), [])

    def test_unknown_key_rings_the_bell(self):
        s = self.session()
        s.clear()
        s.type(b"\x14")  # Ctrl-T
        self.assertEqual(s.transport.value(), b"\a")
        self.assertEqual(self.warnings(), [])

    def test_reverse_search(self):
        """
        Ctrl-R finds the newest history line containing what is typed,
        Ctrl-R again an older one; Enter runs it.
        """
        s = self.session()
        s.run("a = 1")
        s.run("b = 22")
        s.run("c = 3")
        s.type(CTRL_R + b"= ")
        self.assertIn("(reverse-i-search)`= ': c = 3", s.output())
        s.type(CTRL_R)
        self.assertIn("(reverse-i-search)`= ': b = 22", s.output())
        out = s.run("")
        self.assertEqual(self.names.get("b"), None)  # the session's own copy
        self.assertIn(">>> b = 22", out)
        self.assertTrue(s.run("b").endswith("\r\n22\r\n>>> "))
        self.assertEqual(self.warnings(), [])

    def test_reverse_search_cancelled(self):
        s = self.session()
        s.run("a = 1")
        s.type(b"x")
        s.type(CTRL_R + b"a")
        s.type(CTRL_C)
        self.assertEqual(s.line(), b"x")


class SessionTests(ConsoleTestCase):
    def test_exit_and_quit_end_the_session(self):
        """
        exit(), quit() and sys.exit() end the session, and nothing is
        logged; exit alone says how to leave.
        """
        for line in ("exit()", "quit()", "import sys; sys.exit(3)", "raise SystemExit"):
            s = self.session()
            self.assertIn("Use exit() or Ctrl-D (i.e. EOF) to end the session", s.run("exit"))
            s.run(line)
            self.assertTrue(s.transport.disconnecting, line)
        self.assertEqual([l for l in self.logs() if "SystemExit" in l or "Unhandled" in l], [])

    def test_print_in_a_later_callback(self):
        """
        print in a callback that fires after its line returned writes into
        the session, not the node's log, and the prompt is redrawn.
        """
        d = Deferred()
        self.names["d"] = d
        s = self.session()
        s.run("d.addCallback(print)")
        s.type(b"par")
        s.clear()
        d.callback("/share/report.txt")
        out = s.output()
        self.assertIn("/share/report.txt", out)
        self.assertTrue(out.rstrip().endswith(">>> par"), out)
        self.assertEqual([l for l in self.logs() if "/share/report.txt" in l], [])

    def test_deferred_firing_during_a_command(self):
        """
        A shown Deferred that fires while a later command runs is reported
        in that command's output, in order, with one prompt after it.
        """
        self.names["d"] = Deferred()
        s = self.session()
        self.assertIn("<Deferred #0>", s.run("d"))
        out = s.run("d.callback(5); 7")
        # After the echo of the line: the Deferred's result, 7, one prompt.
        self.assertEqual(out.split("\r\n", 1)[1], "Deferred #0 called back: 5\r\n7\r\n>>> ")

    def test_sessions_have_their_own_namespace(self):
        one, two = self.session(), self.session()
        one.run("x = 1")
        self.assertIn("NameError: name 'x' is not defined", two.run("x"))
        self.assertTrue(one.run("x").endswith("\r\n1\r\n>>> "))


def _want(path="big.iso", size=1000, got=0, state="running"):
    return SimpleNamespace(path=path, entry=SimpleNamespace(size=size), state=state,
                           got=got, peer="ab" * 32,
                           finished_at=None, done=Deferred())


class ProgressTests(ConsoleTestCase):
    def test_live_line_until_done(self):
        """
        A progress line, redrawn in place with bytes, percent, rate and
        time left, until the fetch ends; then a last line and the prompt.
        Typing meanwhile is ignored.
        """
        clock = Clock()
        s = self.session()
        want = _want(size=10_000)
        s.clear()
        ProgressView(s.console, clock, want).start()
        self.assertIn("big.iso: running, 0 B of 9.8 KiB (0%)", s.output())
        for got in (1000, 2000, 3000):
            want.got = got
            clock.advance(0.5)
        out = s.output()
        self.assertIn("\r", out)
        self.assertIn("big.iso: running, 2.9 KiB of 9.8 KiB (30%), 2.0 KiB/s, 4s left,"
                      " from abababababab", out)
        self.assertNotIn(">>>", out)
        s.type(b"zz")
        self.assertEqual(s.line(), b"")
        want.got, want.state = 10_000, "done"
        s.clear()
        clock.advance(0.5)
        out = s.output()
        self.assertIn("big.iso: done, 9.8 KiB (watched for 2s)", out)
        self.assertTrue(out.endswith(">>> "), out)
        self.assertIsNone(s.console.view)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_ctrl_c_stops_the_view_not_the_fetch(self):
        clock = Clock()
        s = self.session()
        want = _want()
        ProgressView(s.console, clock, want).start()
        s.clear()
        s.type(CTRL_C)
        out = s.output()
        self.assertIn("^C: stopped watching; the fetch goes on", out)
        self.assertTrue(out.endswith(">>> "), out)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(want.state, "running")
        self.assertIn("\r\n2\r\n", s.run("1 + 1"))

    def test_session_ends_while_watching(self):
        clock = Clock()
        s = self.session()
        ProgressView(s.console, clock, _want()).start()
        s.clear()
        s.terminal.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(s.transport.value(), b"")  # nothing drawn after the end


class TableTests(SynchronousTestCase):
    def test_transfers_one_line_each(self):
        """
        A list of transfers prints as a header and one line per transfer;
        it is still a list of the transfer objects.
        """
        wants = [_want(f"file{i}.bin", size=2048, got=1024) for i in range(100)]
        wants[0].state, wants[0].finished_at = "done", 90.0
        table = transfer_table(wants, 100.0)
        lines = repr(table).split("\n")
        self.assertEqual(len(lines), 101)
        self.assertEqual(lines[0].split(), ["path", "state", "bytes", "from", "finished"])
        self.assertEqual(lines[1].split(), ["file0.bin", "done", "1.0", "KiB", "of", "2.0",
                                            "KiB", "(50%)", "abababababab", "10s", "ago"])
        self.assertIs(table[5], wants[5])
        self.assertEqual(repr(transfer_table([], 0.0)), "(no transfers)")

    def test_entries_one_line_each(self):
        entry = SimpleNamespace(path="docs/a.txt", kind="file", size=5, mtime_ns=0,
                                modified_by="cd" * 32, hash="ef" * 32)
        lines = repr(EntryTable([entry])).split("\n")
        self.assertEqual(lines[1].split(), ["docs/a.txt", "file", "5", "B", "1970-01-01",
                                            "00:00:00", "cdcdcdcdcdcd", "efefefefefef"])
