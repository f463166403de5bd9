# -*- test-case-name: tests.test_stalls -*-
"""
Noticing downloads that stopped: the fetcher's timer.

Every L{STALL_CHECK} seconds, a download that has had no data for the
node's stall timeout is handed back to the fetcher (which asks another
source), and a connection whose running downloads have all been quiet,
and that has sent no frame at all, for L{PROBE_AFTER} seconds is asked
whether it still works (PING): one that does not answer within
L{PROBE_TIMEOUT} is dropped, so a dead network path is noticed within
fifteen seconds instead of the idle timeout's ninety.  The fetcher then
moves its downloads on as for any connection that closed (to another
source, or over a new connection within ten more seconds).

A connection is used only through C{quiet_for}, C{probing} and
C{check_alive} (L{p2ptwisted.liveness}).

The same look at every download also tells the operator how a big one is
going: a line with its share done, rate and time left every
L{PROGRESS_EVERY} seconds (a small one is over before it matters; the
folder's "in step" line sums them all up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2ptwisted import wire

if TYPE_CHECKING:
    from p2ptwisted.downloads import Want

#: Seconds between checks.
STALL_CHECK = 2.0

#: A connection whose downloads have had no data, and that has sent no
#: frame at all, for this long is asked whether it still works (PING) ...
PROBE_AFTER = 10.0

#: ... and dropped if it does not answer within this many seconds.
PROBE_TIMEOUT = 5.0

#: Downloads of files this big get progress lines, this many seconds apart.
PROGRESS_MIN = 64 * 1024 * 1024
PROGRESS_EVERY = 10.0


def progress_line(download, now: float) -> str:
    """
    How far a download is: share done, bytes, rate since it started (or
    resumed), time left at that rate.
    """
    size = download.entry.size
    have = download.offset
    rate = download.received / max(now - download.started_at, 1e-6)
    left = f"about {(size - have) / rate:.0f}s left" if rate > 0 else "no data yet"
    return (f"{100 * have // max(size, 1)}% ({have} of {size} bytes),"
            f" {rate / 2**20:.1f} MiB/s, {left}")


class StallWatch:
    """
    @param active: the fetcher's downloads in flight (its C{Want}s).
    @param stalled: C{(want, seconds without data) -> None}, for each
        download past the stall timeout.
    @param checked: called after each check.
    """

    log = Logger()

    def __init__(self, clock, stall_timeout: float, active: Callable[[], list],
                 stalled: Callable[[Want, float], None], checked: Callable[[], None]):
        self.clock = clock
        self.stall_timeout = stall_timeout
        self.active = active
        self.stalled = stalled
        self.checked = checked
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._loop.start(STALL_CHECK, now=False)

    def check(self) -> None:
        now = self.clock.seconds()
        quiet: Dict[Any, float] = {}  # by connection
        for want in list(self.active()):
            download = want.download
            if want.state != "running" or download is None:
                continue
            idle = now - download.last_activity
            self._progress(want, download, now)
            if idle >= self.stall_timeout:
                self.stalled(want, idle)
            else:
                quiet[download.peer] = min(idle, quiet.get(download.peer, idle))
        for proto, idle in quiet.items():
            if min(idle, proto.quiet_for()) >= PROBE_AFTER and not proto.probing:
                proto.check_alive(PROBE_TIMEOUT, "while its downloads had stalled")
        self.checked()

    def _progress(self, want, download, now: float) -> None:
        if download.entry.size < PROGRESS_MIN:
            return
        last = want.progress_at
        if last is None or last < download.started_at:
            want.progress_at = download.started_at  # (a new attempt: count from it)
        elif now - last >= PROGRESS_EVERY:
            want.progress_at = now
            self.log.info("fetching {path} from {peer}: {progress}",
                          path=wire.safe_text(download.entry.path),
                          peer=download.peer.describe(), progress=progress_line(download, now))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
