"""
What a user would pick instead of p2ptwisted, run on the same bytes in the
same rounds (benchmarks/transfer.py): a raw socket copy, curl from Python's
http.server, and the rsync daemon.  Each writes its copy to disk and fsyncs
it before its time stops, as a p2pshare node does before a file counts as
there.

curl and rsync come from the system (Debian: ``apt-get install -y curl
rsync``); a missing one is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Optional

RAW_RECEIVER = r"""
import os, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 20)
view = memoryview(buf)
with open(sys.argv[1], "wb") as f:
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        f.write(view[:n])
    f.flush()
    os.fsync(f.fileno())
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fsync_tree(path: str) -> None:
    """
    fsync every file under C{path} (or C{path} itself), and the directories.
    """
    if os.path.isfile(path):
        paths = [path]
    else:
        paths = [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
        paths += [d for d, _, _ in os.walk(path)]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def raw_copy(path: str, workdir: str) -> float:
    """
    Seconds to copy C{path} over loopback: sendfile -> recv_into -> disk.
    """
    out = os.path.join(workdir, "raw.out")
    receiver = subprocess.Popen([sys.executable, "-c", RAW_RECEIVER, out],
                                stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        s.sendfile(f)
    receiver.wait()
    elapsed = time.perf_counter() - start
    os.unlink(out)
    return elapsed


class HttpServer:
    """
    ``python -m http.server`` serving C{directory} on loopback; L{fetch}
    runs curl (plaintext, nothing verified).
    """

    def __init__(self, directory: str):
        self.reason = "" if shutil.which("curl") else "curl not installed (apt-get install -y curl)"
        self.proc: Optional[subprocess.Popen] = None
        if self.reason:
            return
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port)

    def fetch(self, name: str, dest: str) -> float:
        start = time.perf_counter()
        subprocess.run(["curl", "-sf", "-o", dest, f"http://127.0.0.1:{self.port}/{name}"],
                       check=True)
        fsync_tree(dest)
        elapsed = time.perf_counter() - start
        os.unlink(dest)
        return elapsed

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


class RsyncDaemon:
    """
    ``rsync --daemon`` on loopback with read-only modules; L{fetch} runs
    ``rsync -a --fsync`` into an empty directory (plaintext; rsync checks
    what it moved against its own checksum).
    """

    def __init__(self, workdir: str, modules: dict):
        self.reason = ("" if shutil.which("rsync")
                       else "rsync not installed (apt-get install -y rsync)")
        self.proc: Optional[subprocess.Popen] = None
        if self.reason:
            return
        self.port = free_port()
        conf = os.path.join(workdir, "rsyncd.conf")
        with open(conf, "w") as f:
            f.write("use chroot = no\nread only = yes\n")
            f.write(f"pid file = {os.path.join(workdir, 'rsyncd.pid')}\n")
            for name, path in modules.items():
                f.write(f"[{name}]\npath = {path}\n")
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={self.port}",
             "--address=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port)

    def fetch(self, source: str, dest: str) -> float:
        """
        Seconds to copy C{source} ("module/path") to the new C{dest}.
        """
        start = time.perf_counter()
        subprocess.run(["rsync", "-a", "--fsync", f"rsync://127.0.0.1:{self.port}/{source}",
                        dest], check=True)
        fsync_tree(dest)
        elapsed = time.perf_counter() - start
        shutil.rmtree(dest) if os.path.isdir(dest) else os.unlink(dest)
        return elapsed

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
