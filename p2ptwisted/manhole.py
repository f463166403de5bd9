# -*- test-case-name: tests.test_manhole -*-
"""
The SSH manhole: a Python prompt inside the running node, for operators.

Imported only when C{--manhole} is given (it pulls in Conch and
cryptography).  Safe by construction: SSH only, public-key authentication
only (from an authorized_keys file; never passwords, never /etc/passwd),
loopback unless the operator names another interface, and a host key that
only its owner can read.

Who comes and goes is logged at info level, one line each: a login (user
name, key fingerprint as C{ssh-keygen -l} shows it, address), a refused
key, and the end of a session; an ordinary logout is not an error.  The
prompt itself is L{p2ptwisted.console.Console}; each session has its own
namespace.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Dict, List, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.application import strports
from twisted.conch import manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys, transport, userauth
from twisted.conch.ssh.common import getNS
from twisted.cred import portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.error import ProcessDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from p2ptwisted import wire
from p2ptwisted.console import Console

#: The host key's file name in the state directory.
HOST_KEY_FILE = "manhole_host_key"

log = Logger()


class ManholeError(Exception):
    """
    The manhole cannot be started; the message says what to do.
    """


@implementer(IAuthorizedKeysDB)
class _KeysForAnyName:
    """
    The keys of one authorized_keys file, whatever user name the client
    gives: the file says who may log in, the name means nothing here.
    """

    def __init__(self, authorized: List[keys.Key]):
        self.authorized = authorized

    def getAuthorizedKeys(self, username):
        return self.authorized


class _Nowhere:
    """
    A transport that discards what it is given.
    """

    def write(self, data):
        pass

    def writeSequence(self, data):
        pass

    def loseConnection(self):
        pass


class _Session(manhole_ssh.TerminalSession):
    """
    Conch's terminal session, made polite about what it cannot do: a
    client that ends its input (a piped script) or resizes its window gets
    what it expects instead of an error in the node's log, and one asking
    for a command or a shell without a terminal is told to use C{ssh -t}.
    """

    _pty = False
    _channel = None

    def getPty(self, term, windowSize, attrs):
        self._pty = True
        manhole_ssh.TerminalSession.getPty(self, term, windowSize, attrs)

    def openShell(self, proto):
        self._channel = proto
        if not self._pty:
            self._refuse(proto)
            return
        # The session ends as a shell does: with exit status 0 (else ssh
        # exits 255, as if the connection had failed).
        proto.loseConnection = lambda: proto.processEnded(Failure(ProcessDone(0)))
        manhole_ssh.TerminalSession.openShell(self, proto)

    def execCommand(self, proto, command):
        self._refuse(proto)

    def _refuse(self, proto):
        # Whatever the client still sends goes nowhere (Conch insists the
        # channel's process side has a transport).
        proto.makeConnection(_Nowhere())
        proto.write(b"p2pshare manhole: this is an interactive Python prompt; log in with"
                    b" a terminal (ssh -t ...) and type at the >>> prompt.\r\n")
        proto.loseConnection()

    def windowChanged(self, newWindowSize):
        pass

    def eofReceived(self):
        # End of input ends the session, as Ctrl-D at the prompt does.
        if self._channel is not None:
            self._channel.loseConnection()


def fingerprint(blob: bytes) -> str:
    """
    A public key's fingerprint as C{ssh-keygen -l} prints it
    (C{SHA256:...}), or a note that the key could not be read.
    """
    try:
        key = keys.Key.fromString(blob)
    except (keys.BadKeyError, ValueError, TypeError):
        return "(unreadable key)"
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")


def _address(ssh_transport) -> str:
    peer = ssh_transport.transport.getPeer()
    return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


class _UserAuth(userauth.SSHUserAuthServer):
    """
    Conch's user authentication, with a log line for each login and each
    refused key (Conch logs them at debug level only).
    """

    def auth_publickey(self, packet: bytes):
        try:
            blob = getNS(packet[1:], 2)[1]
        except Exception:
            blob = b""
        user = wire.safe_text((self.user or b"").decode("utf-8", "replace"), 64)
        address = _address(self.transport)

        def accepted(result):
            self.transport.who = (user, fingerprint(blob), address)
            log.info("manhole login by {user} with key {fingerprint} from {address}",
                     user=user, fingerprint=fingerprint(blob), address=address)
            return result

        def refused(failure):
            if failure.check(UnauthorizedLogin):
                log.info("manhole refused key {fingerprint} for {user} from {address}:"
                         " {why}", fingerprint=fingerprint(blob), user=user, address=address,
                         why=failure.getErrorMessage())
            return failure

        return userauth.SSHUserAuthServer.auth_publickey(self, packet).addCallbacks(
            accepted, refused)


class _Transport(transport.SSHServerTransport):
    """
    Conch's server transport: a client that says goodbye normally is not
    an error in the node's log, and the end of a session is one line.
    """

    who = None

    def receiveError(self, reasonCode, description):
        if reasonCode == transport.DISCONNECT_BY_APPLICATION:
            return  # "disconnected by user": an ordinary logout
        log.info("manhole client disconnected: {why} (code {code})",
                 why=wire.safe_text(description.decode("utf-8", "replace"), 200),
                 code=reasonCode)

    def connectionLost(self, reason=None):
        transport.SSHServerTransport.connectionLost(self, reason)
        if self.who is not None:
            user, key, address = self.who
            log.info("manhole session of {user} (key {fingerprint}) from {address} ended",
                     user=user, fingerprint=key, address=address)


def load_authorized_keys(path: str) -> List[keys.Key]:
    try:
        with open(path, "rb") as f:
            found = list(readAuthorizedKeyFile(f))
    except OSError as e:
        raise ManholeError(f"cannot read --manhole-keys {path}: {e.strerror}") from None
    if not found:
        raise ManholeError(
            f"{path} holds no usable public keys: add a line such as the contents of"
            " ~/.ssh/id_ed25519.pub"
        )
    return found


def host_key(state_dir: str) -> keys.Key:
    """
    The manhole's host key: ed25519, generated once into the state
    directory with mode 0600, then reused (so clients can pin it).
    """
    path = os.path.join(state_dir, HOST_KEY_FILE)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warn("manhole host key {path} was readable by others; made it 0600", path=path)
        return keys.Key.fromFile(path)
    key = Ed25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    log.info("created manhole host key {path}", path=path)
    return keys.Key.fromFile(path)


def make_manhole_service(description: str, keys_file: str, state_dir: str,
                         namespace: Dict[str, object], reactor):
    """
    A service offering the manhole over SSH on the server endpoint
    C{description}.  Each session starts with its own copy of
    C{namespace} (from C{namespace["control"].session_namespace} when there
    is one, so that C{watch()} draws in that session).
    """
    checker = SSHPublicKeyChecker(_KeysForAnyName(load_authorized_keys(keys_file)))
    realm = manhole_ssh.TerminalRealm()
    realm.sessionFactory = _Session
    control = namespace.get("control")
    make_namespace = getattr(control, "session_namespace", lambda console: namespace)
    # (Conch calls it to make each session's protocol: any factory will do)
    make_protocol: Any = lambda: insults.ServerProtocol(Console, make_namespace)  # noqa: E731
    realm.chainedProtocolFactory = make_protocol
    factory = manhole_ssh.ConchFactory(portal.Portal(cast(Any, realm), [checker]))
    factory.protocol = _Transport
    factory.services = {**factory.services, b"ssh-userauth": _UserAuth}
    key = host_key(state_dir)
    # Fresh dicts: ConchFactory's are class attributes, shared by all.
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}  # type: ignore[dict-item]
    service = strports.service(description, factory, reactor=reactor)
    service.setName("manhole")
    return service
