"""
How fast TLS can move a big file on this machine at best, against a raw
socket copy in the same rounds: the ceiling for issue 13's "1 GiB over TLS
at 0.85 of the raw copy".

Two processes on loopback, as two nodes would be: the sender reads the
file in 1 MiB pieces and sends them, the receiver receives into a 1 MiB
buffer, writes what it got and syncs the file at the end.  "raw" is
benchmarks/transfer.py's raw copy (plain sockets, ``sendfile``); "ssl" is
the standard library's ``ssl`` module on blocking sockets, TLS 1.3, so
that encryption runs in C with the GIL released and nothing else (no
framing, no hashing, no reactor) costs anything.  Whatever
p2ptwisted does on top, its TLS figure cannot beat this one's ratio::

    .venv/bin/python benchmarks/tls_ceiling.py            # --size-mib, --runs, --workdir

(Kernel TLS, which would take encryption out of the processes, needs a
kernel built with CONFIG_TLS; the benchmark says whether this one has it.)
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import socket
import ssl
import statistics
import tempfile
import time

from baselines import raw_copy

CHUNK = 1 << 20
MB = 1e6


def make_cert(directory: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    paths = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(paths[0], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def receive(listener: socket.socket, cert, dest: str) -> None:
    """
    The TLS side of L{baselines.RAW_RECEIVER}: each read written as it
    comes, the file synced at the end.
    """
    conn, _ = listener.accept()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(*cert)
    ctx.num_tickets = 0  # the sender never reads: unread tickets would reset the close
    conn = ctx.wrap_socket(conn, server_side=True)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(dest, "wb") as f:
        while n := conn.recv_into(buffer):
            f.write(view[:n])
        f.flush()
        os.fsync(f.fileno())
    conn.close()


def send(port: int, cert, source: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cert[0])
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls, open(source, "rb") as f:
        buffer = bytearray(CHUNK)
        while n := f.readinto(buffer):
            tls.sendall(memoryview(buffer)[:n])


def tls_copy(cert, source: str, workdir: str) -> float:
    """
    Seconds to copy C{source} over loopback with TLS, timed as
    L{baselines.raw_copy} times the raw copy: until the receiver has
    synced the file and exited.
    """
    dest = os.path.join(workdir, "tls.out")
    listener = socket.create_server(("127.0.0.1", 0))
    receiver = multiprocessing.Process(target=receive, args=(listener, cert, dest))
    receiver.start()
    start = time.perf_counter()
    sender = multiprocessing.Process(target=send, args=(listener.getsockname()[1], cert, source))
    sender.start()
    receiver.join()
    elapsed = time.perf_counter() - start
    sender.join()
    listener.close()
    if os.path.getsize(dest) != os.path.getsize(source):
        raise SystemExit("the TLS copy is not the whole file")
    os.unlink(dest)
    return elapsed


def kernel_tls() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            ulps = f.read().split()
    except OSError:
        ulps = []
    return ("kernel TLS: available" if "tls" in ulps or os.path.exists("/proc/net/tls_stat")
            else "kernel TLS: not in this kernel (no 'tls' upper-layer protocol)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default="/dev/shm")
    args = parser.parse_args(argv)
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        cert = make_cert(work)
        source = os.path.join(work, "source.bin")
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        copies = {"raw": lambda: raw_copy(source, work),
                  "ssl": lambda: tls_copy(cert, source, work)}
        rates = {"raw": [], "ssl": []}
        ratios = []
        for r in range(args.runs):
            order = ["raw", "ssl"] if r % 2 == 0 else ["ssl", "raw"]
            got = {}
            for mode in order:
                os.sync()
                got[mode] = size / copies[mode]() / MB
            for mode, rate in got.items():
                rates[mode].append(rate)
            ratios.append(got["ssl"] / got["raw"])
            print(f"  round {r + 1}: raw {got['raw']:.0f} MB/s, ssl {got['ssl']:.0f} MB/s"
                  f" ({ratios[-1]:.2f})", flush=True)
    print(f"median of {args.runs} rounds, {args.size_mib} MiB: raw"
          f" {statistics.median(rates['raw']):.0f} MB/s; stdlib ssl (TLS 1.3)"
          f" {statistics.median(rates['ssl']):.0f} MB/s, {statistics.median(ratios):.2f}"
          " of the raw copy")
    print(kernel_tls())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
