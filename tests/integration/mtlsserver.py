"""A STRICT-mTLS server on loopback, the way a mesh workload's inbound proxy behaves: it demands a
client certificate under its root, refuses anything else with a real TLS alert, and tells the test
which client identity each accepted connection presented.

Blocking sockets in threads on purpose: OpenSSL then writes its alert on the socket inside the
failed handshake, as Envoy and haproxy do, while asyncio's server transport drops the connection
without flushing it, which no real mesh proxy does.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from collections.abc import Sequence
from types import TracebackType

from cryptography import x509

from meshprobe.demo import pki

__all__ = ["MTLSServer", "client_identity"]


def client_identity(der: bytes | None) -> str | None:
    """The SPIFFE ID (else the subject) of the certificate a client presented."""
    if der is None:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.subject.rfc4514_string()
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else cert.subject.rfc4514_string()


class MTLSServer:
    """Serves `leaf` (+ `chain`), requires a client certificate from `client_root`; answers one
    HTTP request with 200 when there is one, else waits for the client to close. Each accepted
    client's identity goes to `accepted`, each refused handshake's error to `refused`."""

    def __init__(
        self,
        leaf: pki.Issued,
        chain: Sequence[pki.Issued],
        client_root: pki.Issued,
        *,
        host: str = "127.0.0.1",
        version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
        body: bytes = b"ok",
    ) -> None:
        self.context = pki.server_ssl_context(leaf, chain)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata=client_root.cert_pem().decode())
        self.context.maximum_version = version
        self.body = body
        self.accepted: queue.Queue[str | None] = queue.Queue()
        self.refused: queue.Queue[str] = queue.Queue()
        self._listener = socket.create_server((host, 0))
        self.host, self.port = host, self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False

    def __enter__(self) -> MTLSServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._closing = True
        with contextlib.suppress(OSError):  # wakes the accepting thread; close alone does not
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.refused.put(str(exc))
                return
            with self._lock:  # wrap_socket detached `conn`: shutting it down is `tls`'s now
                self._conns.discard(conn)
                self._conns.add(tls)
                conn = tls
            self.accepted.put(client_identity(tls.getpeercert(binary_form=True)))
            try:
                data = tls.recv(4096)
                if data.startswith((b"GET ", b"HEAD ")):
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n"
                    tls.sendall(head.encode() + b"Connection: close\r\n\r\n" + self.body)
                    tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            finally:
                tls.close()
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def url(self, scheme: str = "https") -> str:
        return f"{scheme}://{self.host}:{self.port}/"
