from setuptools import find_packages, setup

setup(
    name="p2ptwisted",
    version="0.1.0.dev0",
    description="A peer-to-peer file-sharing node built as a Twisted plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # twisted.plugins has no __init__.py (it must not have one), so
    # find_packages cannot see it: list it by hand.
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"p2ptwisted": ["newsfragments/*"]},
    install_requires=["twisted[conch,tls]>=24.7", "attrs>=22.2", "blake3>=0.4", "pathspec>=0.12"],
    extras_require={
        "test": ["hypothesis>=6.0"],
        "dev": ["hypothesis>=6.0", "towncrier>=23.6"],
    },
)
