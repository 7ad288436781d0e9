"""The one table from stable error codes to HTTP statuses, and the JSON error body.

Every error response is ``{"error": {"code", "message", "details"}}`` (shared/DESIGN.md §5).
A code missing from the table is a bug; it is answered as 500 ``internal_error`` and logged.
"""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError

STATUS: dict[str, int] = {
    # generic request handling
    "malformed_request": 400,
    "request_too_large": 413,
    "not_found": 404,
    "method_not_allowed": 405,
    "unsupported_media_type": 415,
    "request_timeout": 408,
    "headers_too_large": 431,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
    # registration codes
    "registration_code_malformed": 400,
    "registration_code_unknown": 404,
    "registration_code_revoked": 410,
    # smart-card policy
    "smart_card_not_allowed": 403,
    "smart_card_requires_wsp": 403,
    "in_session_not_allowed": 403,
    "password_login_disabled": 403,
    # challenges and certificates
    "challenge_unknown": 401,
    "challenge_expired": 401,
    "challenge_used": 401,
    "signature_invalid": 401,
    "certificate_untrusted": 401,
    "certificate_expired": 401,
    "certificate_not_yet_valid": 401,
    "certificate_revoked": 401,
    "certificate_revocation_unknown": 401,
    "certificate_not_for_client_auth": 401,
    "certificate_weak_algorithm": 401,
    "certificate_malformed": 401,
    "certificate_mismatch": 401,
    "chain_too_long": 401,
    "user_not_found": 401,
    "user_ambiguous": 401,
    "user_disabled": 401,
    "invalid_credentials": 401,
    "locked_out": 429,
    # tokens
    "auth_required": 401,
    "auth_token_invalid": 401,
    "auth_token_expired": 401,
    "admin_token_invalid": 401,
    "admin_scope_insufficient": 403,
    # WorkSpaces and sessions
    "workspace_not_yours": 403,
    "workspace_unknown": 404,
    "workspace_unavailable": 409,
    "workspace_not_ready": 409,
    "session_unknown": 404,
    "session_ended": 410,
    # admin resources
    "directory_unknown": 404,
    "resource_not_found": 404,
    "conflict": 409,
    "validation_failed": 400,
    "certificate_not_ca": 400,
    "certificate_unreadable": 400,
    "crl_unreadable": 400,
}


def status_for(code: str) -> int:
    return STATUS.get(code, 500)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def body_for(exc: BrokerError) -> dict[str, Any]:
    code = exc.code if exc.code in STATUS else "internal_error"
    if code == "internal_error":
        return error_body(code, "The broker hit an unexpected error.")
    return error_body(code, exc.message, exc.details)
