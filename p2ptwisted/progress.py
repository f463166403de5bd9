# -*- test-case-name: tests.test_console -*-
"""
A live view of one fetch in a manhole session: C{watch(...)} at the
prompt.

One line, redrawn in place twice a second (bytes, percent, rate, time
left, peer), until the fetch ends -- then a last line says how -- or the
operator presses Ctrl-C, which stops the view and never the fetch.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional, Tuple

from twisted.internet.task import LoopingCall

from p2ptwisted import wire
from p2ptwisted.tables import human, progress_line

#: Seconds between redraws.
INTERVAL = 0.5

#: Samples the rate is averaged over (INTERVAL apart: five seconds).
RATE_SAMPLES = 10


def finished(want) -> bool:
    return want.state == "done" or want.state.startswith("failed")


class ProgressView:
    """
    Draws C{want}'s progress in C{console} (a L{p2ptwisted.console.Console})
    on C{clock} until it ends or is stopped.
    """

    def __init__(self, console, clock, want) -> None:
        self.console = console
        self.clock = clock
        self.want = want
        self.started_at = clock.seconds()
        self._samples: Deque[Tuple[float, int]] = deque(maxlen=RATE_SAMPLES)
        self._loop: Optional[LoopingCall] = None

    def _got(self) -> int:
        return self.want.got

    def _rate(self) -> Optional[float]:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def _draw(self, text: str) -> None:
        terminal = self.console.terminal
        terminal.write(b"\r")
        terminal.eraseLine()
        terminal.write(text.encode("utf-8"))

    def start(self) -> None:
        self.console.take_over(self)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(INTERVAL, now=True)

    def _tick(self) -> None:
        if self.console.terminal is None:
            self.stop()
            return
        self._samples.append((self.clock.seconds(), self._got()))
        if finished(self.want):
            self._end(self._last_line())
        else:
            self._draw(progress_line(self.want, self._rate()))

    def _last_line(self) -> str:
        path = wire.safe_text(self.want.path, 60)
        if self.want.state != "done":
            return f"{path}: {self.want.state}"
        seconds = max(self.clock.seconds() - self.started_at, 0.0)
        return f"{path}: done, {human(self.want.entry.size)} (watched for {seconds:.0f}s)"

    def _end(self, line: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._draw(line)
        self.console.terminal.nextLine()
        self.console.give_back(self)

    def stop(self, interrupted: bool = False) -> None:
        """
        Stop drawing (Ctrl-C, or the session ended); the fetch goes on.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.console.terminal is None or self.console.view is not self:
            return
        if interrupted:
            self.console.terminal.nextLine()
            self.console.terminal.write(b"^C: stopped watching; the fetch goes on")
            self.console.terminal.nextLine()
        self.console.give_back(self)

    def interject(self, text: str) -> None:
        """
        Output from elsewhere (a Deferred firing): above the progress line.
        """
        self._draw(text.rstrip("\n"))
        self.console.terminal.nextLine()
        self._draw(progress_line(self.want, self._rate()))
