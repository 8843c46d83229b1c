"""Our own client certificate, for probing as a mesh client (STRICT mTLS workloads, gateways).

Mesh certificates live hours, not months: Istio rewrites its `OUTPUT_CERTS` files in place every
few hours, a Kubernetes Secret mount swaps a `..data` symlink, cert-manager renews at two thirds
of the lifetime. So the pair is looked at before every probe that uses it (two `stat` calls, a
few microseconds) and re-read when either file changed, or after `RECHECK` seconds in any case
(a rewrite within one mtime tick at the same size must not go unseen for ever).

The policy is the trust bundle's, the same code (`bundlesource.KeepLastGood`): a pair that does
not parse (a half-written key) or does not match (the certificate rotated, the key not yet) keeps
the pair in use, logged once per reason and visible as `reload_success = False`; the next change
is tried again. A pair that was never good leaves the probe without a certificate, and the probe
says so.

OpenSSL loads a certificate and key only from a file. The validated bytes are handed to it through
an anonymous in-memory file (`memfd_create`), never a file on disk: what OpenSSL loads is exactly
what we checked, however the files change meanwhile, and no copy of the key touches a disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from meshprobe.model import CertRole
from meshprobe.trust.bundlesource import KeepLastGood
from meshprobe.trust.names import identity_of, summarize
from meshprobe.trust.pem import read_pem_file, shown

__all__ = ["RECHECK", "ClientCertificates", "ClientPair", "ClientSource", "load_pair"]

RECHECK = 30.0  # seconds after which the files are re-read even when `stat` shows no change
_MAX_BYTES = 1024 * 1024  # a leaf, a few intermediates and a key; anything bigger is a wrong file

_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


@dataclass(frozen=True, slots=True)
class ClientPair:
    """A checked certificate chain and key: what the probes present."""

    cert_file: str
    key_file: str
    chain_pem: bytes = field(repr=False)  # leaf first, then intermediates, as PEM
    key_pem: bytes = field(repr=False)
    identity: str  # the leaf's SPIFFE ID, else its first DNS name, else its subject
    not_before: float
    not_after: float
    fingerprint_sha256: str  # of the leaf: tells pairs apart in logs and context caches

    def load_into(self, context: ssl.SSLContext) -> None:
        """Give OpenSSL the pair without writing the key to disk (see the module docstring)."""
        with _anonymous_file(self.chain_pem + b"\n" + self.key_pem) as path:
            context.load_cert_chain(path)


@contextlib.contextmanager
def _anonymous_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from: an in-memory file on Linux, else a private temporary
    file removed right after use."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("meshprobe-client-cert", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="meshprobe-client-")
    try:
        os.write(fd, data)
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def load_pair(cert_file: str, key_file: str) -> ClientPair:
    """Read and check a pair; ValueError says what is wrong, naming the file, never its bytes."""
    chain_pem, key_pem = _read(cert_file, key_file)
    return parse_pair(cert_file, key_file, chain_pem, key_pem)


def _read(cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    return read_pem_file(cert_file, limit=_MAX_BYTES), read_pem_file(key_file, limit=_MAX_BYTES)


def parse_pair(cert_file: str, key_file: str, chain_pem: bytes, key_pem: bytes) -> ClientPair:
    """Check a pair read from `cert_file` and `key_file` (named in errors, never quoted)."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ValueError(f"{shown(cert_file)}: no readable PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A half-written file, an encrypted key or no key at all: the library's message may quote
        # the content, so only the file is named.
        raise ValueError(f"{shown(key_file)}: no readable unencrypted PEM private key") from None
    if not isinstance(key, _KEY_TYPES):
        raise ValueError(f"{shown(key_file)}: a {type(key).__name__} cannot sign a handshake")
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ValueError(
            f"{shown(key_file)} is not the key of the certificate in {shown(cert_file)}"
            " (one of them was replaced and the other not yet?)"
        )
    return ClientPair(
        cert_file=cert_file,
        key_file=key_file,
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        identity=identity_of(leaf, summarize(leaf, CertRole.LEAF)) or leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint_sha256=hashlib.sha256(leaf.public_bytes(der)).hexdigest(),
    )


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def _describe(pair: ClientPair) -> dict[str, object]:
    return {
        "identity": pair.identity,
        "fingerprint_sha256": pair.fingerprint_sha256,
        "not_after": int(pair.not_after),
    }


class ClientSource:
    """One configured pair of files under the trust bundle's keep-last-good policy."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.pair: ClientPair | None = None  # the pair in use; None until one was good
        self.checked_at = -1e18  # monotonic time of the last read
        self._seen: tuple[object, ...] | None = None  # the files' stat signatures then
        self._policy: KeepLastGood[ClientPair] = KeepLastGood(
            source=shown(cert_file),
            adopt=self._use,
            what="client certificate",
            kept="the pair in use",
            describe=_describe,
            source_key="cert_file",
        )

    @property
    def reload_success(self) -> bool:
        """The files on disk hold the pair in use."""
        return self._policy.success

    @property
    def error(self) -> str | None:
        """Why the files on disk are not in use."""
        return self._policy.rejected

    def current(self, now: float | None = None) -> ClientPair | None:
        """The pair to present now, re-read first when the files changed."""
        now = time.monotonic() if now is None else now
        seen = (_signature(self.cert_file), _signature(self.key_file))
        if seen != self._seen or now - self.checked_at >= RECHECK:
            self._seen, self.checked_at = seen, now
            self._reload()
        return self.pair

    def _use(self, pair: ClientPair) -> None:
        self.pair = pair

    def _reload(self) -> None:
        policy = self._policy
        try:
            chain_pem, key_pem = _read(self.cert_file, self.key_file)
        except ValueError as exc:
            policy.reject(str(exc))
            return
        content = chain_pem + b"\0" + key_pem
        if policy.in_use(content):
            policy.keep()
            return
        try:
            pair = parse_pair(self.cert_file, self.key_file, chain_pem, key_pem)
        except ValueError as exc:
            policy.reject(str(exc))
            return
        policy.adopt(content, pair)


class ClientCertificates:
    """Every pair the targets name, one source per pair of files, shared by all its targets."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], ClientSource] = {}

    def source(self, cert_file: str, key_file: str) -> ClientSource:
        key = (cert_file, key_file)
        found = self._sources.get(key)
        if found is None:
            found = self._sources[key] = ClientSource(cert_file, key_file)
        return found

    def retain(self, pairs: set[tuple[str, str]]) -> None:
        """Forget the sources no target names any more (their series go with them)."""
        for key in list(self._sources):
            if key not in pairs:
                del self._sources[key]

    def __iter__(self) -> Iterator[ClientSource]:
        return iter(list(self._sources.values()))
