# -*- test-case-name: tests.test_identity -*-
"""
A node's identity: a self-signed certificate and its key, kept in the
state directory, and the node id derived from the certificate.

The id is the SHA-256 of the certificate's DER encoding, so a peer can
check it with nothing but the certificate the TLS layer saw: an id cannot
be claimed without the key that goes with it.  It is the same number
C{openssl x509 -noout -fingerprint -sha256 -in STATE/node.crt} prints, so
an operator can check an id with standard tools.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from typing import List

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2ptwisted.state import StateError
from p2ptwisted.wire import NODE_ID_BYTES

KEY_FILE = "node.key"
CERT_FILE = "node.crt"

_HEX = frozenset("0123456789abcdef")


@attrs.frozen
class Identity:
    """
    A node's certificate, its private key, and the id they give it.
    """

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    node_id: str


def certificate_id(certificate: x509.Certificate) -> str:
    """
    The node id a certificate proves: SHA-256 of its DER form, in hex.
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def format_id(node_id: str) -> str:
    """
    An id in the form people read aloud and compare: sixteen groups of
    four hex digits, C{3f2a-9c1e-...}.  The log lines' short ids are the
    first twelve digits of it.
    """
    return "-".join(node_id[i : i + 4] for i in range(0, len(node_id), 4))


def parse_id(text: str) -> str:
    """
    Read an id typed by a person, in any usual spelling: plain hex, our
    dashed groups, or openssl's colon-separated upper-case fingerprint.

    @raise ValueError: with a message fit to show the user.
    """
    cleaned = "".join(c for c in text.strip().lower() if c not in "-: ")
    if len(cleaned) != 2 * NODE_ID_BYTES or not set(cleaned) <= _HEX:
        raise ValueError(
            f"{text!r} is not a node id (64 hex digits, as the node prints at start-up;"
            " dashes, colons and spaces are ignored)"
        )
    return cleaned


def read_trust_file(path: str) -> List[str]:
    """
    The ids listed in a trust file: one per line, each optionally followed
    by a label (the rest of the line); blank lines and C{#} comments are
    skipped.

    @raise ValueError: naming the file and line of anything that is not an id.
    """
    ids = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            first = text.split()[0]
            try:
                ids.append(parse_id(first))
            except ValueError as e:
                raise ValueError(f"{path}, line {number}: {e}") from None
    return ids


def _write_private(path: str, data: bytes) -> None:
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2pshare node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        # RFC 5280's "no well-defined expiration date": the id must not
        # change, and peers pin the certificate rather than trust a date.
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59,
                                           tzinfo=datetime.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def load_or_create_identity(state_dir: str) -> Identity:
    """
    Load the node's key and certificate, creating them on first start.

    The key is written at mode 0600 (and put back to 0600 if someone
    loosened it); each file is written to a temporary name and renamed,
    so a crash never leaves half an identity.

    @raise StateError: if the files exist but cannot be used.
    """
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    key_path = os.path.join(state_dir, KEY_FILE)
    cert_path = os.path.join(state_dir, CERT_FILE)
    try:
        if not os.path.exists(key_path):
            key = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_path, key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
            if os.path.exists(cert_path):
                os.unlink(cert_path)  # it belonged to a key that is gone
        else:
            if os.stat(key_path).st_mode & 0o077:
                os.chmod(key_path, 0o600)
            with open(key_path, "rb") as f:
                loaded = serialization.load_pem_private_key(f.read(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError("not an elliptic-curve key")
            key = loaded
        if not os.path.exists(cert_path):
            certificate = _new_certificate(key)
            _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        else:
            with open(cert_path, "rb") as f:
                certificate = x509.load_pem_x509_certificate(f.read())
            public = certificate.public_key()
            if (not isinstance(public, ec.EllipticCurvePublicKey)
                    or public.public_numbers() != key.public_key().public_numbers()):
                raise ValueError(f"{CERT_FILE} does not belong to {KEY_FILE}")
    except Exception as e:  # OSError, ValueError, TypeError (encrypted), UnsupportedAlgorithm
        raise StateError(
            f"cannot use the identity in {state_dir}: {e}; move {KEY_FILE} and"
            f" {CERT_FILE} away to start as a new node"
        ) from None
    return Identity(key=key, certificate=certificate, node_id=certificate_id(certificate))
