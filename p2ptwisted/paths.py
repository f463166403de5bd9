# -*- test-case-name: tests.test_cli -*-
"""
Where a node keeps its share and its state by default.

Both C{twistd p2pshare} (L{p2ptwisted.tap}) and the C{p2pshare} command-line
client (L{p2ptwisted.cli}) need the answer, and they must agree: the client
finds a running node's web address and API key in its state directory.  So
the rule lives here once, in a module that imports nothing heavy, because
the client should start fast.
"""

from __future__ import annotations

import os
from typing import Optional

DEFAULT_SHARE = "~/P2PShare"
STATE_SUBDIR = ".p2pshare"


def state_dir(state: Optional[str], share: str = DEFAULT_SHARE) -> str:
    """
    The absolute state directory of a node run with C{--state state} (or
    none) and C{--share share}: C{state} itself, or C{SHARE/.p2pshare}.
    """
    if state:
        return os.path.abspath(os.path.expanduser(state))
    return os.path.join(os.path.abspath(os.path.expanduser(share)), STATE_SUBDIR)
