"""A server presenting a different, large chain on every handshake: memory stays bounded.

Each handshake gets a fresh leaf under an intermediate that carries 2,600 DNS SANs, so every chain
is ~84 KB, new to the verdict cache, and parses into ~230 KB of Python strings. Before the cache
was bounded by bytes and time, 250 such probes grew RSS by the full sum (every entry kept its DER
and its report until 4,096 were exceeded). The server is a real loopback listener; the chain is
switched per connection from the SNI callback to a freshly made context.
"""

from __future__ import annotations

import gc
import ssl
from pathlib import Path

from cryptography import x509

from meshprobe.demo import pki
from meshprobe.probes import ProbeEnv, run_probe
from tests import certkit
from tests.integration import faults
from tests.integration.faults import FaultServer, TestPki

PROBES = 250
SANS = 2600  # 32 bytes each: ~84 KB, under OpenSSL's 100 KB limit on a chain
RSS_BOUND = 40 * 2**20


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class RotatingChains:
    """A new ~88 KB chain for every handshake: a fresh leaf under one SAN-stuffed intermediate."""

    def __init__(self, root: pki.Issued) -> None:
        names = [x509.DNSName(f"padding-{i:05d}.rotating.example") for i in range(SANS)]
        self.intermediate = certkit.ca(
            root, "rotating intermediate", extensions=[(x509.SubjectAlternativeName(names), False)]
        )
        self.served = 0
        self.sizes: set[int] = set()

    def context(self) -> ssl.SSLContext:
        leaf = pki.make_leaf(
            self.intermediate, "echo", ip_addresses=["127.0.0.1"], uris=[faults.SPIFFE_ID]
        )
        self.served += 1
        self.sizes.add(sum(len(d) for d in certkit.der(leaf, self.intermediate)))
        return pki.server_ssl_context(leaf, [self.intermediate])


def rotating(chains: RotatingChains) -> ssl.SSLContext:
    """A listening context whose every connection switches to a fresh chain's context (OpenSSL
    calls the SNI callback even when the client sends no SNI, as for an IP address)."""

    def switch(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: object) -> None:
        conn.context = chains.context()

    listening = chains.context()
    listening.sni_callback = switch
    return listening


async def test_a_chain_rotating_server_leaves_memory_bounded(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    chains = RotatingChains(test_pki.root)
    cache = env.verdicts
    async with FaultServer(faults.hold, tls=rotating(chains)) as srv:
        target = faults.make_target(f"tls://127.0.0.1:{srv.port}", timeout=10.0)
        for _ in range(10):  # warm up the allocator, the session, the code paths
            result = await run_probe(target, env)
            assert result.success, result.detail
        gc.collect()
        before = rss()
        peak = 0
        for _ in range(PROBES):
            result = await run_probe(target, env)
            assert result.success, result.detail
            assert cache.size_bytes <= cache.max_bytes
            peak = max(peak, cache.size_bytes)
        gc.collect()
        grown = rss() - before
    assert chains.served == PROBES + 10 + 1  # and the listening context
    assert min(chains.sizes) > 80_000  # every chain is as large as the hostile one
    assert cache.misses >= PROBES  # every chain was new: nothing was served from the cache
    assert len(cache) >= 2 and peak > cache.max_bytes // 2  # the cache did fill, to its bound
    assert grown < RSS_BOUND, f"RSS grew {grown / 2**20:.1f} MiB over {PROBES} probes"
    print(
        f"\n{PROBES} probes of ~{min(chains.sizes) // 1000} KB chains: RSS +{grown / 2**20:.1f} "
        f"MiB, cache {len(cache)} entries, {peak / 2**20:.1f} MiB at most "
        f"(bound {cache.max_bytes / 2**20:.0f} MiB)"
    )
