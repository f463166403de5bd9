"""
The twistd dropin for C{twistd p2pshare}.

It imports nothing heavy: C{twistd --help} imports every dropin, and
L{ServiceMaker} loads L{p2ptwisted.tap} only when the subcommand is used.
There must be no C{__init__.py} anywhere under C{twisted/}.
"""

from twisted.application.service import ServiceMaker

p2pshare = ServiceMaker(
    "p2pshare",
    "p2ptwisted.tap",
    "A peer-to-peer file-sharing node (p2ptwisted)",
    "p2pshare",
)
