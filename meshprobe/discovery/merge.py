"""Static and discovered targets and peers, merged into the one set the scheduler reconciles.

Static configuration wins: a discovered target equal in (name, target_cluster, url) to a static
one is the same edge and is dropped; one that would share a static target's labels (name,
cluster, probe) with another URL is dropped too, because two edges cannot feed one series. The
merge is deterministic (static order, then discovered sorted), so an unchanged input gives equal
targets and the scheduler keeps their loops.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshprobe.model import Peer, Target


def merge_targets(
    static: Iterable[Target], discovered: Iterable[Target]
) -> tuple[list[Target], list[str]]:
    """Returns the merged targets and one line per dropped conflicting target."""
    out: list[Target] = []
    by_identity: set[tuple[str, str, str]] = set()
    by_key: dict[tuple[str, str, str], Target] = {}
    conflicts: list[str] = []
    for target in [*static, *discovered]:
        identity = (target.name, target.cluster, target.url)
        if identity in by_identity:
            continue
        holder = by_key.get(target.key)
        if holder is not None:
            conflicts.append(
                f"{target.discovery} target {target.name} ({target.cluster}, {target.url}) has the "
                f"labels of {holder.discovery} target {holder.url}: skipped"
            )
            continue
        by_identity.add(identity)
        by_key[target.key] = target
        out.append(target)
    return out, conflicts


def merge_peers(
    static: Iterable[Peer], discovered: Iterable[Peer], *, own_cluster: str
) -> list[Peer]:
    """One peer per cluster, the configured one first; never ourselves."""
    out: dict[str, Peer] = {}
    for peer in [*static, *discovered]:
        if peer.cluster != own_cluster:
            out.setdefault(peer.cluster, peer)
    return list(out.values())
