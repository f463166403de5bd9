"""
A node's identity: certificate and key in the state directory, the id
derived from the certificate, the ways people write ids, trust files, and
the record of ids met.
"""

import hashlib
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.identity import (
    CERT_FILE,
    KEY_FILE,
    certificate_id,
    format_id,
    load_or_create_identity,
    parse_id,
    read_trust_file,
)
from p2ptwisted.knownids import KnownIds
from p2ptwisted.state import StateError


class IdentityTests(SynchronousTestCase):
    def test_created_once_and_kept(self):
        """
        The first start creates a key (mode 0600) and a certificate; later
        starts load the same ones, so the id never changes.
        """
        state = self.mktemp()
        first = load_or_create_identity(state)
        mode = stat.S_IMODE(os.stat(os.path.join(state, KEY_FILE)).st_mode)
        self.assertEqual(mode, 0o600)
        second = load_or_create_identity(state)
        self.assertEqual(first.node_id, second.node_id)
        self.assertNotEqual(first.node_id, load_or_create_identity(self.mktemp()).node_id)

    def test_id_is_sha256_of_certificate(self):
        """
        The id is the SHA-256 of the certificate's DER form: what
        C{openssl x509 -fingerprint -sha256} prints for STATE/node.crt.
        """
        state = self.mktemp()
        identity = load_or_create_identity(state)
        with open(os.path.join(state, CERT_FILE), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        der = cert.public_bytes(serialization.Encoding.DER)
        self.assertEqual(identity.node_id, hashlib.sha256(der).hexdigest())
        self.assertEqual(certificate_id(cert), identity.node_id)
        self.assertEqual(len(identity.node_id), 64)

    def test_loosened_key_mode_restored(self):
        state = self.mktemp()
        load_or_create_identity(state)
        key = os.path.join(state, KEY_FILE)
        os.chmod(key, 0o644)
        load_or_create_identity(state)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)

    def test_unusable_key_is_a_clear_error(self):
        """
        A damaged key file stops start-up with a message saying what to do,
        rather than quietly making a new identity.
        """
        state = self.mktemp()
        load_or_create_identity(state)
        with open(os.path.join(state, KEY_FILE), "wb") as f:
            f.write(b"not a key")
        e = self.assertRaises(StateError, load_or_create_identity, state)
        self.assertIn("move node.key and node.crt away", str(e))

    def test_certificate_of_another_key_is_refused(self):
        state, other = self.mktemp(), self.mktemp()
        load_or_create_identity(state)
        load_or_create_identity(other)
        with open(os.path.join(other, CERT_FILE), "rb") as src, \
                open(os.path.join(state, CERT_FILE), "wb") as dst:
            dst.write(src.read())
        e = self.assertRaises(StateError, load_or_create_identity, state)
        self.assertIn("does not belong", str(e))

    def test_missing_certificate_is_remade_for_the_same_key(self):
        """
        A lost certificate is made again from the key; the id changes (it
        is the certificate's hash), but the key, and so the node, is kept.
        """
        state = self.mktemp()
        first = load_or_create_identity(state)
        os.unlink(os.path.join(state, CERT_FILE))
        second = load_or_create_identity(state)
        self.assertEqual(
            first.key.public_key().public_numbers(), second.key.public_key().public_numbers()
        )


class SpellingTests(SynchronousTestCase):
    node_id = hashlib.sha256(b"x").hexdigest()

    def test_readable_form(self):
        text = format_id(self.node_id)
        self.assertEqual(len(text.split("-")), 16)
        self.assertTrue(all(len(group) == 4 for group in text.split("-")))
        self.assertTrue(self.node_id.startswith(text[:4]))

    def test_all_spellings_parse(self):
        """
        Plain hex, the dashed form, and openssl's colon-separated
        upper-case fingerprint all name the same id.
        """
        openssl = ":".join(self.node_id[i:i + 2] for i in range(0, 64, 2)).upper()
        for text in (self.node_id, format_id(self.node_id), openssl,
                     f"  {self.node_id.upper()}\n"):
            self.assertEqual(parse_id(text), self.node_id)

    def test_not_an_id(self):
        for text in ("", "abc", self.node_id[:-1], self.node_id + "0", "g" * 64):
            self.assertRaises(ValueError, parse_id, text)

    def test_trust_file(self):
        """
        One id per line, optional label, comments and blank lines skipped;
        a bad line is reported with its number.
        """
        other = hashlib.sha256(b"y").hexdigest()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"# our machines\n\n{format_id(self.node_id)} laptop\n{other}  # nas\n")
        self.assertEqual(read_trust_file(path), [self.node_id, other])
        with open(path, "a") as f:
            f.write("nonsense\n")
        e = self.assertRaises(ValueError, read_trust_file, path)
        self.assertIn("line 5", str(e))


class KnownIdsTests(SynchronousTestCase):
    def test_new_once_and_remembered(self):
        state = self.mktemp()
        os.makedirs(state)
        a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
        known = KnownIds(state)
        known.load()
        self.assertTrue(known.add(a))
        self.assertFalse(known.add(a))
        again = KnownIds(state)
        again.load()
        self.assertFalse(again.add(a))
        self.assertTrue(again.add(b))

    def test_bounded(self):
        """
        A stranger inventing ids cannot grow the file without bound: past
        the limit, new ids are still reported new but not stored.
        """
        state = self.mktemp()
        os.makedirs(state)
        known = KnownIds(state, limit=3)
        ids = [hashlib.sha256(bytes([i])).hexdigest() for i in range(10)]
        self.assertEqual([known.add(i) for i in ids], [True] * 10)
        with open(known.path) as f:
            self.assertEqual(len(f.read().split()), 3)

    def test_torn_line_ignored(self):
        state = self.mktemp()
        os.makedirs(state)
        a = hashlib.sha256(b"a").hexdigest()
        with open(os.path.join(state, "known-ids"), "w") as f:
            f.write(a + "\n" + a[:20])
        known = KnownIds(state)
        known.load()
        self.assertEqual(known.ids, {a})
