"""The PKI layer's error: a stable reason code (shared/DESIGN.md §5), a sentence, details."""

from __future__ import annotations

from cryptography import x509

from broker.codes import Code
from broker.errors import BrokerError


class PkiError(BrokerError):
    code = Code.CERTIFICATE_UNTRUSTED


REASONS = (
    "certificate_untrusted", "certificate_expired", "certificate_not_yet_valid",
    "certificate_revoked", "certificate_revocation_unknown", "certificate_not_for_client_auth",
    "certificate_weak_algorithm", "chain_too_long", "certificate_malformed", "signature_invalid",
    "certificate_policy_mismatch",
    "user_not_found", "user_ambiguous",
)

# What cryptography raises for malformed DER, often lazily on first access to a field: not all
# of it derives from ValueError (a name attribute of the wrong ASN.1 type is a TypeError).
MALFORMED_DER: tuple[type[Exception], ...] = (
    ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType)
NO_USABLE_EXTENSION: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *MALFORMED_DER)
