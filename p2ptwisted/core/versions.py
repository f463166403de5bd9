# -*- test-case-name: tests.test_versions -*-
"""
Version vectors: which of two versions of a path has seen the other.

A version is a set of counters, one per node that ever changed the path
(keyed by the node's short id, the first 16 hex digits of its node id).
A node that changes a path bumps its own counter to
C{max(counter + 1, now)} (seconds since the epoch, passed in), as
Syncthing does, so counters stay close to wall time and a bound on how
far ahead of now a counter may be (L{check_counters}) stops a peer from
making its versions win forever.

Comparing two vectors gives L{Order}: C{EQUAL}, C{GREATER} (we have seen
everything the other has, and more), C{LESSER}, or C{CONCURRENT} (each has
seen a change the other has not: a conflict).
"""

from __future__ import annotations

import enum
from typing import Dict, Tuple

import attrs

#: Counters one vector may hold; a vector with more is refused.  Every node
#: that ever changed a path has one, so this is also the most nodes that can
#: have edited one path.
MAX_COUNTERS = 256

#: Seconds a counter may be ahead of the receiver's clock.  A node bumps its
#: counter to at least "now", and by one per change beyond it, so an honest
#: counter is ahead only by clock skew plus a burst of edits; a year covers
#: both with room, and keeps every counter far below 2**53.
MAX_AHEAD = 366 * 24 * 3600

#: The largest counter anyone could ever hold (JSON-safe integers).
MAX_COUNTER = 2**53 - 1

#: Hex digits of a node id that name it in a vector.
SHORT_ID_DIGITS = 16


class Order(enum.Enum):
    EQUAL = "equal"
    GREATER = "greater"
    LESSER = "lesser"
    CONCURRENT = "concurrent"


class VersionError(ValueError):
    """
    A vector is out of bounds: too many counters, or a counter too large.
    """


def short_id(node_id: str) -> str:
    """
    The short form of a node id used in vectors (64 bits, as Syncthing).
    """
    return node_id[:SHORT_ID_DIGITS]


def _sorted_counters(value) -> Tuple[Tuple[str, int], ...]:
    return tuple(sorted((str(k), int(v)) for k, v in dict(value).items() if int(v) > 0))


@attrs.frozen
class Vector:
    """
    A version vector: sorted C{(short id, counter)} pairs, no zero counters.
    """

    counters: Tuple[Tuple[str, int], ...] = attrs.field(default=(), converter=_sorted_counters)

    def as_dict(self) -> Dict[str, int]:
        return dict(self.counters)

    def counter(self, who: str) -> int:
        for key, value in self.counters:
            if key == who:
                return value
        return 0

    def highest(self) -> int:
        return max((v for _, v in self.counters), default=0)

    def bump(self, who: str, now: int) -> "Vector":
        """
        This version, changed by C{who} at C{now} (whole seconds).
        """
        counters = self.as_dict()
        counters[who] = max(counters.get(who, 0) + 1, int(now))
        return Vector(counters)

    def merge(self, other: "Vector") -> "Vector":
        """
        The smallest vector that has seen both: the larger of each counter.
        """
        counters = self.as_dict()
        for key, value in other.counters:
            if value > counters.get(key, 0):
                counters[key] = value
        return Vector(counters)

    def compare(self, other: "Vector") -> Order:
        # A merge walk over the two sorted tuples: no dictionaries, since
        # the planner compares vectors for every path it plans.
        a, b = self.counters, other.counters
        if a == b:
            return Order.EQUAL
        greater = lesser = False
        i = j = 0
        while i < len(a) and j < len(b):
            (ka, va), (kb, vb) = a[i], b[j]
            if ka == kb:
                greater |= va > vb
                lesser |= va < vb
                i += 1
                j += 1
            elif ka < kb:
                greater = True  # only we have this counter (never zero)
                i += 1
            else:
                lesser = True
                j += 1
        greater |= i < len(a)
        lesser |= j < len(b)
        if greater and lesser:
            return Order.CONCURRENT
        if greater:
            return Order.GREATER
        if lesser:
            return Order.LESSER
        return Order.EQUAL

    def dominates(self, other: "Vector") -> bool:
        """
        Whether this version has seen everything C{other} has, and more.
        """
        return self.compare(other) is Order.GREATER

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k[:7]}:{v}" for k, v in self.counters) + "}"


def check_counters(vector: Vector, now: int) -> None:
    """
    Refuse a vector a peer sent us if it could make a version win forever
    or cost us unbounded memory.

    @raise VersionError: naming the problem.
    """
    if len(vector.counters) > MAX_COUNTERS:
        raise VersionError(f"version has {len(vector.counters)} counters (at most {MAX_COUNTERS})")
    limit = min(MAX_COUNTER, int(now) + MAX_AHEAD)
    for key, value in vector.counters:
        if value > limit:
            raise VersionError(f"version counter {value} of {key} is too far ahead (limit {limit})")
