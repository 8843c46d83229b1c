"""Certificates, hashes and clients for the listener-security tests (TLS, mTLS, basic auth)."""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

from meshprobe.config.settings import load_settings_from_mapping
from meshprobe.daemon.hooks import Hooks
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki

SERVER_NAME = "meshprobe.test"
USER = "prometheus"
PASSWORD = "scrape-secret"


@dataclass(frozen=True)
class ListenerPki:
    """Files as a Secret mount would hold them: the server's chain and key, the CA that signed
    it (what scrapers trust), and a separate client CA with one client certificate."""

    dir: Path
    server_root: pki.Issued
    client_root: pki.Issued

    @property
    def cert_file(self) -> Path:
        return self.dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.dir / "tls.key"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def client_ca_file(self) -> Path:
        return self.dir / "client-ca.crt"

    @property
    def client_cert_file(self) -> Path:
        return self.dir / "client.crt"

    @property
    def client_key_file(self) -> Path:
        return self.dir / "client.key"

    def issue_server(self, root: pki.Issued | None = None) -> pki.Issued:
        """(Re)issue the server certificate into cert_file/key_file, as a rotation does."""
        leaf = pki.make_leaf(
            root or self.server_root,
            SERVER_NAME,
            dns_names=[SERVER_NAME],
            ip_addresses=["127.0.0.1"],
        )
        self.cert_file.write_bytes(leaf.cert_pem())
        self.key_file.write_bytes(leaf.key_pem())
        return leaf

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx

    def tls_section(self, **extra: Any) -> dict[str, Any]:
        return {"cert_file": str(self.cert_file), "key_file": str(self.key_file), **extra}


def make_listener_pki(directory: Path) -> ListenerPki:
    directory.mkdir(parents=True, exist_ok=True)
    made = ListenerPki(directory, pki.make_root("scrape server root"), pki.make_root("scrapers"))
    pki.write_bundle(made.ca_file, [made.server_root])
    pki.write_bundle(made.client_ca_file, [made.client_root])
    client = pki.make_leaf(made.client_root, "prometheus", dns_names=["prometheus.test"])
    made.client_cert_file.write_bytes(client.cert_pem())
    made.client_key_file.write_bytes(client.key_pem())
    made.issue_server()
    return made


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """Cost 4 keeps the tests fast; production hashes use 10 or more."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


@contextlib.asynccontextmanager
async def running_daemon(
    web: dict[str, Any] | None = None,
    *,
    web_config_path: Path | None = None,
    hooks: Hooks | None = None,
    **extra: Any,
) -> AsyncIterator[Daemon]:
    config: dict[str, Any] = {"cluster": "cluster1", "listen": "127.0.0.1:0", **extra}
    if web is not None:
        config["web"] = web
    daemon = Daemon(
        load_settings_from_mapping(config), web_config_path=web_config_path, hooks=hooks
    )
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def get(
    url: str,
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """One request on a fresh connection: (status, headers, body)."""
    headers = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()
