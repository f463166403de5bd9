# -*- test-case-name: tests.test_logbudget -*-
"""
Keeping a hostile host from flooding the log.

Every refusal or drop deserves one clear line, but a host that opens a
thousand bad connections must not write a thousand lines: each remote host
gets a budget of lines that refills slowly, and lines over budget are
counted and reported with the next line that gets through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import attrs
from twisted.internet.interfaces import IReactorTime

#: Lines a host may cause at once, and how many seconds refill one.
BURST = 20
REFILL = 3.0

#: Hosts remembered; the least recently seen are forgotten first.
MAX_HOSTS = 1024


@attrs.define
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


@attrs.define
class LogBudget:
    clock: IReactorTime
    burst: int = BURST
    refill: float = REFILL
    _hosts: "OrderedDict[str, _Bucket]" = attrs.field(factory=OrderedDict)

    def emit(self, host: Optional[str], emit, format: str, **fields) -> None:
        """
        Log C{format} with C{emit} (a L{Logger} method) if C{host}'s budget
        allows; a line after suppressed ones says how many were held back.
        """
        suppressed = self.spend(host)
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines about this host suppressed)"
        emit(format, suppressed=suppressed, **fields)

    def spend(self, host: Optional[str]) -> Optional[int]:
        """
        Ask to log one line about C{host}.

        @return: C{None} if the line should be suppressed; otherwise how many
            lines about this host were suppressed since the last one logged
            (0 usually), to be mentioned in this one.
        """
        now = self.clock.seconds()
        key = host or "?"
        bucket = self._hosts.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=self.burst, stamp=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) / self.refill)
        bucket.stamp = now
        self._hosts[key] = bucket
        while len(self._hosts) > MAX_HOSTS:
            self._hosts.popitem(last=False)
        if bucket.tokens < 1:
            bucket.suppressed += 1
            return None
        bucket.tokens -= 1
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return suppressed
