"""
The package's metadata lives in pyproject.toml (PEP 621).  This file stays
for tools and habits that still look for it (C{pip install -e .} with
C{editable_mode=compat}, see the README, works either way).
"""

from setuptools import setup

setup()
