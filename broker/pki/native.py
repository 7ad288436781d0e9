"""cryptography's Rust path validator (``cryptography.x509.verification``) on the broker's inputs.

It builds and checks a path natively (signatures, validity, basic constraints, path length,
name constraints, key usage, a strict RFC 5280 / CA/B profile) in a few tenths of a
millisecond. The broker uses it twice: as the stricter second opinion of the differential test
(tests/unit/pki/test_differential.py), and as the fast path of a first-time verification where
its policy is the directory's (broker.pki.chain).

Purpose "client-auth" and "any" are both run with the EKU left to the broker (which accepts
clientAuth, smart-card logon, anyExtendedKeyUsage or no EKU at all; cryptography's default
demands clientAuth): the EE policy lets extendedKeyUsage be present with any value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = ["VerificationError", "native_chain", "native_store", "verifier"]

# RFC 5280 requires subjectAltName only when the subject is empty (§4.2.1.6; the broker's
# profile checks that): a client certificate may have none, unlike a Web PKI server's.
_EE_POLICY = (ExtensionPolicy.webpki_defaults_ee()
              .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
              .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None))
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
# cryptography's max_chain_depth is a u8 and counts intermediates as the broker does.
MAX_NATIVE_DEPTH = 255


def native_store(anchors: Sequence[x509.Certificate]) -> Store:
    return Store(list(anchors))


def verifier(store: Store, at: dt.datetime, max_depth: int) -> ClientVerifier:
    return (PolicyBuilder().store(store).time(at.astimezone(dt.UTC).replace(tzinfo=None))
            .max_chain_depth(min(max_depth, MAX_NATIVE_DEPTH))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier())


def native_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate],
                 anchors: Sequence[x509.Certificate] | Store, at: dt.datetime,
                 max_depth: int = 6) -> list[x509.Certificate]:
    """The path cryptography builds (leaf → … → anchor); raises VerificationError."""
    store = anchors if isinstance(anchors, Store) else native_store(anchors)
    return list(verifier(store, at, max_depth).verify(leaf, list(untrusted)).chain)
