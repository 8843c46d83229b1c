"""What a certificate must be to serve TLS to us: key strength, usages, signature algorithms.

Kept apart from `tlscheck` (which builds and judges paths) because these are per-certificate
rules with their own reasons and wording, and because they are cheap: they read attributes of
certificates that are already parsed, so they run on every verdict without a measurable cost.

The rules follow the CA/Browser Forum baseline (what cryptography's webpki policy enforces on
issuers, extended here to the leaf, which cryptography leaves unchecked), with the allowances an
X.509-SVID needs: no EKU at all is accepted (RFC 5280 4.2.1.12), as is anyExtendedKeyUsage and a
critical EKU; when an EKU is present it must include serverAuth, because we only ever judge
servers (an X.509-SVID carries both serverAuth and clientAuth).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy

from meshprobe.model import CertSummary

__all__ = [
    "CA_POLICY",
    "EE_POLICY",
    "MIN_RSA_BITS",
    "cert_label",
    "issuer_problems",
    "key_problem",
    "leaf_problems",
    "signature_problem",
]

MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_SERVER_EKUS = frozenset(
    {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)
# cryptography's webpki set (it names no public constant): what its verifier accepts on a path.
_SIGNATURE_ALGORITHMS = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)


def cert_label(s: CertSummary) -> str:
    """How a detail names a certificate: its role and subject (or first SAN when it has none)."""
    name = s.subject or next(iter(s.uris + s.dns_names + s.ip_addresses), "") or "(empty subject)"
    return f"{s.role.value} {name!r}"


def _eku_names(ekus: x509.ExtendedKeyUsage) -> str:
    return "[" + ", ".join(oid._name for oid in ekus) + "]"


def _ca_eku_permits_server(
    _policy: Policy, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
) -> None:
    # An EKU in a CA certificate constrains what it may issue (the nesting Go and BoringSSL
    # enforce): a CA limited to clientAuth cannot vouch for a server.
    if ext is not None and _SERVER_EKUS.isdisjoint(ext):
        raise ValueError(
            f"CA {cert.subject.rfc4514_string()!r} has extendedKeyUsage {_eku_names(ext)}, "
            "which does not permit serverAuth"
        )


# Why a client verifier with adjusted extension policies (see tlscheck):
# - `build_server_verifier` needs a DNS/IP subject to match, and an Istio/Linkerd workload leaf has
#   only a `spiffe://` URI SAN, so it can never pass; names are checked by `tlsnames` instead.
# - `build_client_verifier` matches no subject, but its webpki defaults demand the clientAuth EKU.
#   So the EE policy lets any EKU through the verifier and `leaf_problems` applies ours (serverAuth
#   or anyExtendedKeyUsage when an EKU is present), with a detail that names the usages. It also
#   tolerates a missing SAN (judged by `tlsnames` against what we expect) or AKI (SPIFFE leaves and
#   older servers vary). Everything else in the webpki EE defaults stays, notably that a leaf must
#   not assert basicConstraints.cA.
# - The CA policy stays webpki's (cA asserted, keyCertSign, path length, ...), so a leaf cannot
#   act as an issuer; only its EKU check is ours, because web intermediates often carry serverAuth
#   alone, and one limited to clientAuth must not vouch for a server.
EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ca_eku_permits_server
)


def key_problem(cert: x509.Certificate, label: str) -> str | None:
    """Why the certificate's public key is too weak or of a kind we do not accept."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"{label} has a public key that cannot be used: {exc}"
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            return f"{label} has a {bits}-bit RSA key; at least {MIN_RSA_BITS} required"
        if bits % 8:
            return f"{label} has a {bits}-bit RSA key; the modulus must be a whole number of bytes"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            return f"{label} has an EC key on {key.curve.name}; P-256, P-384 or P-521 required"
    elif isinstance(key, dsa.DSAPublicKey):
        return f"{label} has a DSA key; RSA or ECDSA required"
    return None


def signature_problem(cert: x509.Certificate, label: str) -> str | None:
    """Why the signature algorithm on the certificate is not one the verifier accepts."""
    oid = cert.signature_algorithm_oid
    if oid in _SIGNATURE_ALGORITHMS:
        return None
    return (
        f"{label} is signed with {oid._name}; accepted are RSA (PKCS#1 v1.5 or PSS) and ECDSA "
        "with SHA-256, SHA-384 or SHA-512"
    )


def _serial_problem(cert: x509.Certificate, label: str) -> str | None:
    if cert.serial_number <= 0:
        return f"{label} has serial number {cert.serial_number}; RFC 5280 requires a positive one"
    return None


def leaf_problems(cert: x509.Certificate, summary: CertSummary, label: str) -> list[str]:
    """Per-leaf rules: key, serverAuth usage, serial, SAN criticality. `cert.extensions` must
    already be known to parse."""
    problems = [p for p in (key_problem(cert, label), _serial_problem(cert, label)) if p]
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if _SERVER_EKUS.isdisjoint(eku):
            problems.append(
                f"{label} has extendedKeyUsage {_eku_names(eku)} without serverAuth: it is not "
                "a server certificate (X.509-SVIDs carry serverAuth and clientAuth)"
            )
    if not summary.subject and _present_but_not_critical(cert, x509.SubjectAlternativeName):
        problems.append(
            f"{label} has an empty subject and a non-critical subjectAltName "
            "(RFC 5280 4.2.1.6 requires it critical)"
        )
    return problems


def _present_but_not_critical(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    try:
        return not cert.extensions.get_extension_for_class(kind).critical
    except x509.ExtensionNotFound:
        return False


def issuer_problems(cert: x509.Certificate, label: str, *, anchor: bool) -> list[str]:
    """Per-issuer rules the verifier does not apply to every certificate it accepts. (No serial
    rule here: old roots with non-positive serials still anchor real chains.)"""
    problems = [p for p in (key_problem(cert, label),) if p]
    if not anchor and _present_but_not_critical(cert, x509.PolicyConstraints):
        problems.append(
            f"{label} has a non-critical policyConstraints extension "
            "(RFC 5280 4.2.1.11 requires it critical)"
        )
    return problems
