"""TLS on the listener, with certificates that rotate under it.

cert-manager, Vault and mounted Secrets replace the certificate, key and client CA files while the
process runs, and Kubernetes does it by swapping a `..data` symlink (so mtimes and inotify on the
file miss it). We re-read the files on a short period and compare bytes, as `bundlewatch` does for
the trust bundle, and build a fresh `SSLContext` when they change. The listening socket keeps the
context it started with; an SNI callback (which OpenSSL calls on every handshake, SNI or not) hands
each new connection the newest context. A replacement that does not load keeps the previous one:
serving an old certificate until it is fixed beats refusing every scrape.

What the swap carries: the certificate chain, the key and the client CA store. The client auth
mode, TLS versions and cipher list are fixed per connection by the listener's first context, so
changing those takes a restart (the daemon says so on reload).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from meshprobe.config.errors import ConfigError, ConfigIssue
from meshprobe.config.web import GO_CIPHER_SUITES, TLSServerConfig

log = structlog.get_logger(__name__)

# How often the files are re-read: a rotated certificate is served within this.
FILES_PERIOD = 5.0

_VERIFY = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The settings a context swap cannot change for new connections (see the module docstring).
RESTART_ONLY = (
    "client_auth_type",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
)


@dataclass(frozen=True, slots=True)
class _Files:
    cert: bytes
    key: bytes
    client_ca: bytes | None


class ServerTLS:
    """The listener's TLS: `context` goes to the site once; `check()` follows the files."""

    def __init__(self, spec: TLSServerConfig, *, where: str = "web.tls_server_config") -> None:
        self._where = where
        self.spec = spec
        self._files = _read_files(spec, where)
        self._current = build_context(spec, self._files, where)
        self.context = self._current
        self.context.sni_callback = self._pick
        self.success = True

    def _pick(
        self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, ctx: ssl.SSLContext
    ) -> None:
        if ctx is not self._current:
            conn.context = self._current

    def check(self) -> bool | None:
        """Re-read the files: None when unchanged, True when a new context is in use, False when
        the new content did not load (the previous context stays)."""
        try:
            files = _read_files(self.spec, self._where)
            if files == self._files:
                self.success = True
                return None
            context = build_context(self.spec, files, self._where)
        except ConfigError as exc:
            if self.success:  # one line per failure, not per poll
                log.error(
                    "listener certificate rejected, keeping the previous one",
                    errors=[str(issue) for issue in exc.errors],
                )
            self.success = False
            return False
        self._files = files
        self._current = context
        self.success = True
        log.info("listener certificate reloaded", cert_file=self.spec.cert_file)
        return True

    def update(self, spec: TLSServerConfig) -> list[str]:
        """Adopt a reloaded spec (new file names, new contents); raises ConfigError and changes
        nothing when the files do not load. Returns the restart-only fields that were kept."""
        kept = [name for name in RESTART_ONLY if getattr(spec, name) != getattr(self.spec, name)]
        if "client_auth_type" in kept and spec.client_ca_file != self.spec.client_ca_file:
            # The running mode keeps the CA it verifies against (dropping it would refuse every
            # client certificate until the restart).
            kept.append("client_ca_file")
        spec = spec.model_copy(update={name: getattr(self.spec, name) for name in kept})
        files = _read_files(spec, self._where)
        context = build_context(spec, files, self._where)
        self.spec, self._files, self._current = spec, files, context
        self.success = True
        return [f"{self._where}.{name}" for name in kept]

    async def watch(
        self, period: float = FILES_PERIOD, on_check: Callable[[], None] | None = None
    ) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                self.check()
            except Exception:  # the watch must outlive any surprise; the old context stays
                log.exception("listener certificate check failed")
            if on_check is not None:
                on_check()


def build_context(spec: TLSServerConfig, files: _Files, where: str) -> ssl.SSLContext:
    """A server context from already-read file contents, after checking them with
    `cryptography` so a bad file gets a sentence instead of OpenSSL's `[SSL] PEM lib`."""
    _check_pair(spec, files, where)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[spec.min_version]
    ctx.maximum_version = _VERSIONS[spec.max_version]
    if spec.cipher_suites:
        ctx.set_ciphers(":".join(GO_CIPHER_SUITES[name] for name in spec.cipher_suites))
    if spec.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        # The password callback keeps OpenSSL from prompting on a terminal for an encrypted
        # key; `_check_pair` has already refused those with a clear reason.
        ctx.load_cert_chain(spec.cert_file, spec.key_file, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        raise _error(
            where, "cert_file", f"cannot load {spec.cert_file} with {spec.key_file}: {exc}"
        ) from None
    ctx.verify_mode = _VERIFY[spec.client_auth_type]
    if files.client_ca is not None:
        try:
            ctx.load_verify_locations(cadata=files.client_ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise _error(where, "client_ca_file", f"no usable CA certificate: {exc}") from None
    return ctx


def _read_files(spec: TLSServerConfig, where: str) -> _Files:
    def read(field: str, name: str) -> bytes:
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise _error(where, field, f"cannot read {name}: {exc.strerror or exc}") from None

    ca = read("client_ca_file", spec.client_ca_file) if spec.client_ca_file else None
    return _Files(read("cert_file", spec.cert_file), read("key_file", spec.key_file), ca)


def _check_pair(spec: TLSServerConfig, files: _Files, where: str) -> None:
    try:
        certs = x509.load_pem_x509_certificates(files.cert)
    except ValueError:
        raise _error(where, "cert_file", f"no PEM certificate in {spec.cert_file}") from None
    key = _load_key(files.key, spec.key_file, where)
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = (
        certs[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if ours != leaf:
        reason = f"the key in {spec.key_file} does not belong to the first certificate of the file"
        raise _error(where, "key_file", reason)
    if files.client_ca is not None:
        try:
            x509.load_pem_x509_certificates(files.client_ca)
        except ValueError:
            reason = f"no PEM certificate in {spec.client_ca_file}"
            raise _error(where, "client_ca_file", reason) from None


def _load_key(data: bytes, name: str, where: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        reason = f"the key in {name} is encrypted: meshprobe needs an unencrypted PEM key"
        raise _error(where, "key_file", reason) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # The message is the library's description of the format, never the key's bytes.
        raise _error(where, "key_file", f"no usable PEM private key in {name}: {exc}") from None


def _error(where: str, field: str, reason: str) -> ConfigError:
    return ConfigError([ConfigIssue(f"{where}.{field}", reason)])
