"""
C{python -m p2ptwisted.cli}: the same as the C{p2pshare} console script.
"""

from p2ptwisted.cli import run

run()
