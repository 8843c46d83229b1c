"""A mesh PKI for the unit tests of the verdict code: a root, an intermediate under it, and the
root as the trust bundle (module scope: EC keys make it cheap, and no test mutates it)."""

from __future__ import annotations

import pytest

from meshprobe.demo import pki
from meshprobe.trust.anchors import TrustAnchors


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_root("mesh root")


@pytest.fixture(scope="module")
def inter(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, "cluster1 intermediate")


@pytest.fixture(scope="module")
def anchors(root: pki.Issued) -> TrustAnchors:
    return TrustAnchors.from_pem(root.cert_pem(), source="test-bundle")
