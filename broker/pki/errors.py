"""The PKI layer's error: a stable reason code (shared/DESIGN.md §5), a sentence, details."""

from __future__ import annotations

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
