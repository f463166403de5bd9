"""
What Tab completes at the manhole's prompt (L{p2ptwisted.console}): names
and attributes from the session's namespace, and whether the cursor is
inside a string (where shared paths are offered instead).  No terminal
here: plain functions on text.
"""

from __future__ import annotations

import rlcompleter
from typing import Dict, List, Optional


def completions(word: str, namespace: Dict[str, object]) -> List[str]:
    """
    What C{word} (a name, or a dotted name) may complete to in
    C{namespace}, sorted, without duplicates; private names only when
    C{word} asks for them (after a C{_}).
    """
    completer = rlcompleter.Completer(namespace)
    found = []
    for state in range(10_000):
        try:
            match = completer.complete(word, state)
        except Exception:
            break  # evaluating the dotted prefix raised: nothing to offer
        if match is None:
            break
        found.append(match)
    last = word.rsplit(".", 1)[-1]
    if not last.startswith("_"):
        found = [m for m in found if not m.rsplit(".", 1)[-1].startswith("_")]
    return sorted(set(found))


def open_string(text: str) -> Optional[str]:
    """
    What follows an unclosed quote at the end of C{text} (a line of
    Python), or C{None} if the cursor is not inside a string.
    """
    quote, start, i = None, 0, 0
    while i < len(text):
        c = text[i]
        if quote is not None:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote, start = c, i + 1
        elif c == "#":
            return None
        i += 1
    return text[start:] if quote is not None else None


def common_prefix(words: List[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]
