"""
p2ptwisted: a peer-to-peer file-sharing node built on Twisted.

Run it with C{twistd -n p2pshare}; see the README.
"""

__version__ = "0.1.0.dev0"
