# -*- test-case-name: tests.test_tls -*-
"""
TLS between nodes: both ends present their self-signed certificates, and
each end pins the other's by hash instead of trusting a CA.

Certificate chains mean nothing between self-signed nodes, so the TLS
layer accepts any certificate that the peer proves it holds the key for
(the handshake's signature does that), and requires that there is one.
Who the peer is -- and whether it is welcome -- is then decided from the
certificate's hash: by the protocol, which checks it against the id in
HELLO, and by the node, which checks it against C{--allow} and against
the id it expected at a dialled address.
"""

from __future__ import annotations

from typing import Any, Optional

import hashlib

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from p2ptwisted.identity import Identity

#: TLS 1.2 ciphers, if a peer's OpenSSL offers no 1.3: forward secrecy and
#: AEAD only.  (TLS 1.3 suites are all of that kind already.)
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"

#: TLS 1.3 suites, fastest first on machines with AES instructions (both
#: ends are ours, so our preference decides).
TLS13_CIPHERSUITES = (b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                      b"TLS_CHACHA20_POLY1305_SHA256")


def _accept_any(connection, certificate, error, depth, ok) -> bool:
    # Self-signed by design; the hash is checked after the handshake.
    return True


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class PeerTLS:
    """
    Makes the OpenSSL connections for both directions from one context:
    our certificate and key, TLS 1.2 or later, a certificate required from
    the peer, and no session resumption (a resumed session would skip the
    certificate we pin).
    """

    def __init__(self, identity: Identity):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate(identity.certificate)
        context.use_privatekey(identity.key)
        context.check_privatekey()
        context.set_cipher_list(TLS12_CIPHERS)
        if hasattr(context, "set_tls13_ciphersuites"):
            context.set_tls13_ciphersuites(TLS13_CIPHERSUITES)
        context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def wrap(identity: Identity, factory, is_client: bool, clock) -> TLSMemoryBIOFactory:
    """
    C{factory} behind TLS, as the dialling (C{is_client}) or accepting side.
    """
    # (PeerTLS provides the connection-creator interfaces, through zope)
    creator: Any = PeerTLS(identity)
    wrapper = TLSMemoryBIOFactory(creator, is_client, factory, clock=clock)
    wrapper.noisy = False  # no "PeerFactory (TLS) starting on ..." per port
    return wrapper


def peer_id(transport) -> Optional[str]:
    """
    The node id proven by the certificate the peer presented on a TLS
    transport, or C{None} if it presented none.

    The DER bytes are hashed as OpenSSL holds them, without parsing them
    again: a peer may present any certificate OpenSSL accepts, and a
    stricter parser's complaint must not become a traceback.
    """
    certificate = transport.getPeerCertificate()
    if certificate is None:
        return None
    return hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)).hexdigest()


def describe_tls_error(failure) -> str:
    """
    A TLS failure as one short line: OpenSSL's reasons, without the tuple
    noise, plus a hint for the common mistake of mixing TLS and --no-tls.
    """
    error = failure.value
    reasons = []
    for item in getattr(error, "args", ())[:1]:
        if isinstance(item, list):
            reasons = [entry[-1] for entry in item if isinstance(entry, tuple) and entry]
    text = "; ".join(r for r in reasons if r) or str(error) or type(error).__name__
    if any(hint in text for hint in ("wrong version number", "packet length too long",
                                     "http request", "record layer failure")):
        text += " (is the peer running with --no-tls?)"
    return text
