# -*- test-case-name: tests.test_console -*-
"""
The manhole's prompt, made to behave as a Python user expects.

Conch's L{manhole.ColoredManhole} is a fine REPL over a terminal, but Tab
inserts spaces, C{exit()} raises C{SystemExit} into the SSH connection (a
40-line "Unhandled Error" in the node's log), readline's Ctrl-U, Ctrl-W
and Ctrl-R are logged as node warnings, and C{print} in a callback that
fires later writes to the node's log instead of the session.  L{Console}
fixes each: Tab completes names and attributes over the session's
namespace, and inside a string the shared paths (candidates shown when
ambiguous), Ctrl-U, Ctrl-W and Ctrl-K
kill text, Ctrl-R searches the history, any other unknown key rings the
bell, C{exit()} and C{quit()} end the session, and the session's
C{print} writes into the session whenever it is called.

Each session has its own namespace (a copy of the node's names): what one
operator assigns is not seen by another.
"""

from __future__ import annotations

import builtins
import re
from typing import Callable, Dict, List, Optional

from twisted.conch import manhole

from p2ptwisted.completion import common_prefix, completions, open_string

#: The bytes of the keys handled here.
CTRL_G = b"\x07"
CTRL_K = b"\x0b"
CTRL_R = b"\x12"
CTRL_U = b"\x15"
CTRL_W = b"\x17"

#: The word Tab completes: a dotted name ending at the cursor.
_WORD = re.compile(r"[A-Za-z_][\w.]*$|$")

#: Completions shown at most when Tab is ambiguous.
MAX_SHOWN = 60


class _Quitter:
    """
    C{exit} and C{quit} in a session: calling one ends the session (and
    nothing else: never the node, never its stdin).
    """

    def __init__(self, name: str, console: "Console"):
        self.name = name
        self._console = console

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to end the session"

    def __call__(self, code=None) -> None:
        self._console.close_session()


class Console(manhole.ColoredManhole):
    """
    One operator's session at the prompt.

    @param make_namespace: C{console -> dict}, the names this session
        starts with (given the console, so names such as C{watch} can draw
        in this session).
    """

    namespace: Dict[str, object]  # type: ignore[assignment]  # (None in Manhole)

    def __init__(self, make_namespace: Callable[["Console"], Dict[str, object]]):
        manhole.ColoredManhole.__init__(self)
        self.namespace = dict(make_namespace(self))
        self.namespace.update(print=self.print, exit=_Quitter("exit", self),
                              quit=_Quitter("quit", self))
        self._closing = False
        self._running = False
        #: The live view that holds the terminal (see L{take_over}), if any.
        self.view = None
        #: Reverse search: the text searched for, or None when not searching.
        self._search: Optional[str] = None
        self._search_from = 0

    def connectionMade(self):
        manhole.ColoredManhole.connectionMade(self)
        self.keyHandlers.update({
            self.terminal.TAB: self.handle_TAB,
            CTRL_U: self.handle_KILL_LINE,
            CTRL_W: self.handle_KILL_WORD,
            CTRL_K: self.handle_KILL_END,
            CTRL_R: self.handle_SEARCH,
        })

    def connectionLost(self, reason):
        view, self.view = self.view, None
        if view is not None:
            view.stop()  # stops its timer; draws nothing (no longer ours)
        manhole.ColoredManhole.connectionLost(self, reason)

    # -- running lines -----------------------------------------------------

    def lineReceived(self, line):
        self._running = True
        try:
            more = self.interpreter.push(line)
        except SystemExit:
            # sys.exit() or raise SystemExit: end the session, as in Python.
            self.interpreter.resetBuffer()
            more = False
            self._closing = True
        finally:
            self._running = False
        self.pn = bool(more)
        if self._closing:
            self.terminal.loseConnection()
            return
        if self.view is not None:
            return  # the live view draws the prompt when it ends
        if self._needsNewline():
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])

    def close_session(self) -> None:
        """
        End this session: at once if called from a later callback, or once
        the line being run returns.
        """
        if self._running:
            self._closing = True
        elif self.terminal is not None:
            self.terminal.loseConnection()

    def print(self, *values, sep=" ", end="\n", file=None, flush=False) -> None:
        """
        The session's C{print}: into this session, also from a callback
        that fires after the line that set it up has returned.
        """
        if file is not None:
            builtins.print(*values, sep=sep, end=end, file=file, flush=flush)
            return
        text = (sep if sep is not None else " ").join(map(str, values))
        text += end if end is not None else "\n"
        if self.terminal is None:
            return  # the session has ended: nobody to tell
        if self._running:
            self.addOutput(text)
        elif self.view is not None:
            self.view.interject(text)
        else:
            self.addOutput(text, True)

    def addOutput(self, data, isAsync=None):
        if not isAsync or self._running:
            # During a command (a Deferred that fires at once, say): in
            # the command's output, in order.
            self.terminal.write(data)
            if isAsync and self._needsNewline():
                self.terminal.nextLine()
            return
        if self.view is not None:
            self.view.interject(data if isinstance(data, str) else data.decode("utf-8"))
            return
        # Output between commands (a Deferred firing): above the input
        # line, which is then drawn again as it was.  (Conch's own version
        # fails on a non-empty input line: it hands the line back as a
        # list where bytes are expected.)
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        self.terminal.write(data)
        if self._needsNewline():
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.drawLine()

    # -- live views --------------------------------------------------------

    def take_over(self, view) -> None:
        """
        Let C{view} own the terminal until it calls L{give_back}; Ctrl-C
        (or Ctrl-D) meanwhile stops it.
        """
        if self.view is not None:
            self.view.stop()
        self.view = view

    def give_back(self, view) -> None:
        if self.view is not view:
            return
        self.view = None
        if self.terminal is None:
            return
        if self._needsNewline():
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.drawLine()

    def drawLine(self) -> None:
        self.terminal.write(b"".join(self.lineBuffer))
        back = len(self.lineBuffer) - self.lineBufferIndex
        if back:
            self.terminal.cursorBackward(back)

    # -- keys ----------------------------------------------------------------

    def keystrokeReceived(self, keyID, modifier):
        if self.view is not None:
            if keyID in (manhole.CTRL_C, manhole.CTRL_D):
                self.view.stop(interrupted=True)
            return  # a live view ignores typing
        if self._search is not None:
            self._search_key(keyID)
            return
        handler = self.keyHandlers.get(keyID)
        if handler is not None:
            handler()
        elif keyID in self._printableChars:
            self.characterReceived(keyID, False)
        else:
            self.terminal.write(b"\a")  # an unknown key: the bell, not a log line

    def _replace_line(self, text: bytes, cursor: Optional[int] = None) -> None:
        """
        Make the input line C{text}, the cursor at C{cursor} (the end by
        default), and redraw it.
        """
        self.handle_HOME()
        self.terminal.eraseToLineEnd()
        self.lineBuffer = [text[i:i + 1] for i in range(len(text))]
        self.lineBufferIndex = len(self.lineBuffer)
        self.terminal.write(text)
        if cursor is not None and cursor < len(self.lineBuffer):
            self.terminal.cursorBackward(len(self.lineBuffer) - cursor)
            self.lineBufferIndex = cursor

    def handle_KILL_LINE(self) -> None:
        before, after = self.currentLineBuffer()
        self._replace_line(after, 0)

    def handle_KILL_END(self) -> None:
        before, after = self.currentLineBuffer()
        self._replace_line(before)

    def handle_KILL_WORD(self) -> None:
        before, after = self.currentLineBuffer()
        kept = re.sub(rb"\S*\s*$", b"", before, count=1) if before.strip() else b""
        self._replace_line(kept + after, len(kept))

    def handle_TAB(self) -> None:
        before, after = self.currentLineBuffer()
        text = before.decode("utf-8", "replace")
        quoted = open_string(text)
        if quoted is not None:
            word, found = quoted, self._paths(quoted)
        else:
            found_word = _WORD.search(text)  # (the pattern matches the empty end)
            word = found_word.group() if found_word is not None else ""
            if not word:
                manhole.ColoredManhole.handle_TAB(self)  # indentation, as before
                return
            found = completions(word, self.namespace)
        if not found:
            self.terminal.write(b"\a")
            return
        common = common_prefix(found)
        if len(common) > len(word):
            self._insert(common[len(word):].encode("utf-8"))
        elif len(found) > 1:
            self._show(found)
        else:
            self.terminal.write(b"\a")

    def _insert(self, data: bytes) -> None:
        for i in range(len(data)):
            self.characterReceived(data[i:i + 1], i < len(data) - 1)

    def _paths(self, prefix: str) -> List[str]:
        """
        The shared paths (ours and our peers') that start with C{prefix}:
        Tab inside a string completes what fetch(), watch() and cancel()
        take.
        """
        known = getattr(self.namespace.get("control"), "known_paths", None)
        if known is None:
            return []
        return [p for p in known() if p.startswith(prefix)]

    def _show(self, found: List[str]) -> None:
        shown = found[:MAX_SHOWN]
        width = max(len(c) for c in shown) + 2
        columns = max(1, (self.width - 1) // width)
        rows = ["".join(c.ljust(width) for c in shown[i:i + columns]).rstrip()
                for i in range(0, len(shown), columns)]
        if len(found) > len(shown):
            rows.append(f"... and {len(found) - len(shown)} more")
        self.terminal.nextLine()
        self.terminal.write("\n".join(rows).encode("utf-8"))
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.drawLine()

    # -- reverse history search (Ctrl-R) ---------------------------------------

    def handle_SEARCH(self) -> None:
        self._search, self._search_from = "", len(self.historyLines)
        self._draw_search(b"")

    def _search_key(self, keyID) -> None:
        assert self._search is not None  # (only called while searching)
        if keyID == CTRL_R:
            self._find(self._search_from - 1)
        elif keyID == self.terminal.BACKSPACE:
            self._search = self._search[:-1]
            self._find(len(self.historyLines) - 1)
        elif isinstance(keyID, bytes) and keyID in self._printableChars and keyID not in b"\r\n":
            self._search += keyID.decode()
            self._find(min(self._search_from, len(self.historyLines) - 1))
        else:
            match = self._match()
            self._search = None
            self._erase_search()
            self.terminal.write(self.ps[self.pn])
            if keyID in (manhole.CTRL_C, CTRL_G):
                self.drawLine()
                return
            self.lineBuffer, self.lineBufferIndex = [], 0
            self._replace_line(match)
            if keyID in (b"\r", b"\n"):
                self.handle_RETURN()

    def _match(self) -> bytes:
        if self._search and 0 <= self._search_from < len(self.historyLines):
            return self.historyLines[self._search_from]
        return b"".join(self.lineBuffer)

    def _find(self, start: int) -> None:
        needle = (self._search or "").encode()
        for i in range(start, -1, -1):
            if needle in self.historyLines[i]:
                self._search_from = i
                break
        else:
            self.terminal.write(b"\a")
        self._draw_search(self._match())

    def _erase_search(self) -> None:
        self.terminal.eraseLine()
        self.terminal.write(b"\r")

    def _draw_search(self, match: bytes) -> None:
        self._erase_search()
        self.terminal.write(f"(reverse-i-search)`{self._search}': ".encode() + match)
