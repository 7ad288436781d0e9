"""Every stable error code of the HTTP APIs, with its HTTP status and a default sentence.

One closed set (shared/DESIGN.md §5–6): service and PKI code raise ``Code`` members, never
strings (a test fails on a literal), and the web layer takes the status from the member. A
``Code`` is a ``str``, so stored audit reasons and JSON bodies are unchanged.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    status: int
    message: str

    def __new__(cls, value: str, status: int, message: str) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.message = message
        return member

    # generic request handling
    MALFORMED_REQUEST = "malformed_request", 400, "The request is malformed."
    REQUEST_TIMEOUT = "request_timeout", 408, "The request did not arrive in time."
    REQUEST_TOO_LARGE = "request_too_large", 413, "The request body is too large."
    HEADERS_TOO_LARGE = "headers_too_large", 431, "The request headers are too large."
    NOT_FOUND = "not_found", 404, "No such API path."
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "That method is not allowed on this path."
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415,
                              "The request body must be application/json.")
    RATE_LIMITED = "rate_limited", 429, "Too many requests; try again later."
    INTERNAL_ERROR = "internal_error", 500, "The broker hit an unexpected error."
    SERVICE_UNAVAILABLE = ("service_unavailable", 503,
                           "The broker cannot reach a dependency; try again shortly.")
    # registration codes
    REGISTRATION_CODE_MALFORMED = ("registration_code_malformed", 400,
                                   "That is not a registration code.")
    REGISTRATION_CODE_UNKNOWN = ("registration_code_unknown", 404,
                                 "This registration code is not known.")
    REGISTRATION_CODE_REVOKED = ("registration_code_revoked", 410,
                                 "This registration code is no longer valid.")
    # smart-card policy
    SMART_CARD_NOT_ALLOWED = ("smart_card_not_allowed", 403,
                              "Smart-card login is not allowed here.")
    SMART_CARD_REQUIRES_WSP = ("smart_card_requires_wsp", 403,
                               "Smart cards work only with WorkSpaces streamed over WSP.")
    IN_SESSION_NOT_ALLOWED = ("in_session_not_allowed", 403,
                              "In-session smart-card use is not allowed for this session.")
    PASSWORD_LOGIN_DISABLED = ("password_login_disabled", 403,
                               "This directory does not allow password login.")
    # challenges and certificates
    CHALLENGE_UNKNOWN = "challenge_unknown", 401, "There is no such challenge."
    CHALLENGE_EXPIRED = "challenge_expired", 401, "This challenge has expired."
    CHALLENGE_USED = "challenge_used", 401, "This challenge has already been answered."
    SIGNATURE_INVALID = "signature_invalid", 401, "The signature does not verify."
    CERTIFICATE_UNTRUSTED = ("certificate_untrusted", 401,
                             "The certificate does not chain to a trusted CA.")
    CERTIFICATE_EXPIRED = "certificate_expired", 401, "The certificate has expired."
    CERTIFICATE_NOT_YET_VALID = ("certificate_not_yet_valid", 401,
                                 "The certificate is not valid yet.")
    CERTIFICATE_REVOKED = "certificate_revoked", 401, "The certificate has been revoked."
    CERTIFICATE_REVOCATION_UNKNOWN = ("certificate_revocation_unknown", 401,
                                      "The certificate's revocation status is unknown.")
    CERTIFICATE_NOT_FOR_CLIENT_AUTH = ("certificate_not_for_client_auth", 401,
                                       "The certificate is not for client authentication.")
    CERTIFICATE_WEAK_ALGORITHM = ("certificate_weak_algorithm", 401,
                                  "The certificate uses a weak algorithm or key.")
    CERTIFICATE_MALFORMED = "certificate_malformed", 401, "The certificate is malformed."
    CERTIFICATE_POLICY_MISMATCH = ("certificate_policy_mismatch", 401,
                                   "The certificate path does not carry a policy this "
                                   "directory requires.")
    CERTIFICATE_MISMATCH = ("certificate_mismatch", 401,
                            "Sign with the certificate of the login.")
    CHAIN_TOO_LONG = "chain_too_long", 401, "The certificate chain is too long."
    USER_NOT_FOUND = "user_not_found", 401, "No enabled user matches this certificate."
    USER_AMBIGUOUS = "user_ambiguous", 401, "More than one user matches this certificate."
    USER_DISABLED = "user_disabled", 401, "This user is disabled."
    # directories backed by LDAP / Active Directory (DESIGN §11)
    ACCOUNT_DISABLED = ("account_disabled", 401,
                        "The directory says this account is disabled.")
    ACCOUNT_EXPIRED = "account_expired", 401, "The directory says this account has expired."
    NOT_IN_REQUIRED_GROUP = ("not_in_required_group", 401,
                             "This account is not in a group this directory requires.")
    DIRECTORY_UNAVAILABLE = ("directory_unavailable", 503,
                             "The directory server cannot be reached; try again shortly.")
    INVALID_CREDENTIALS = ("invalid_credentials", 401, "The user name or password is wrong.")
    LOCKED_OUT = "locked_out", 429, "Too many failed attempts; try again later."
    # tokens
    AUTH_REQUIRED = "auth_required", 401, "This call needs the auth token from login."
    AUTH_TOKEN_INVALID = "auth_token_invalid", 401, "The auth token is not valid."
    AUTH_TOKEN_EXPIRED = "auth_token_expired", 401, "The auth token has expired."
    ADMIN_TOKEN_INVALID = ("admin_token_invalid", 401,
                           "The admin token is missing, unknown or revoked.")
    ADMIN_SCOPE_INSUFFICIENT = ("admin_scope_insufficient", 403,
                                "This admin token may only read.")
    # WorkSpaces and sessions
    WORKSPACE_NOT_YOURS = "workspace_not_yours", 403, "This WorkSpace belongs to another user."
    WORKSPACE_UNKNOWN = "workspace_unknown", 404, "There is no such WorkSpace."
    WORKSPACE_UNAVAILABLE = ("workspace_unavailable", 409,
                             "The WorkSpace cannot be connected to now.")
    WORKSPACE_NOT_READY = "workspace_not_ready", 409, "The WorkSpace is still starting."
    SESSION_UNKNOWN = "session_unknown", 404, "There is no such session."
    SESSION_ENDED = "session_ended", 410, "This session has ended."
    # admin resources
    DIRECTORY_UNKNOWN = "directory_unknown", 404, "There is no such directory."
    RESOURCE_NOT_FOUND = "resource_not_found", 404, "There is no such resource."
    CONFLICT = "conflict", 409, "That conflicts with an existing resource."
    VALIDATION_FAILED = "validation_failed", 400, "The input is not valid."
    CERTIFICATE_NOT_CA = "certificate_not_ca", 400, "The certificate is not a CA certificate."
    CERTIFICATE_PROFILE_INVALID = ("certificate_profile_invalid", 400,
                                   "The CA certificate breaks RFC 5280.")
    CERTIFICATE_UNREADABLE = ("certificate_unreadable", 400,
                              "The certificate cannot be read.")
    CRL_UNREADABLE = "crl_unreadable", 400, "The CRL cannot be read."
    # the process itself (CLI and start-up; never an API answer)
    CONFIG_INVALID = "config_invalid", 500, "The broker's configuration is invalid."
    SERVER_CONFIG_INVALID = ("server_config_invalid", 500,
                             "The server cannot start with this configuration.")
    KEY_FILE_INVALID = ("key_file_invalid", 500,
                        "The key sealing the signing keys cannot be used.")
    UNSAFE_PATH = ("unsafe_path", 500,
                   "The file cannot be written there without other users reaching it.")


#: Codes of the process itself (configuration, start-up): they never reach an API client.
PROCESS_CODES = frozenset({Code.CONFIG_INVALID, Code.SERVER_CONFIG_INVALID,
                           Code.KEY_FILE_INVALID, Code.UNSAFE_PATH})


# --------------------------------------------------------------------------- what a refusal means
# The one classification of refusals (metrics, alerts and docs read it from here):
#  * not yet   — "ask again shortly" (a client polling a starting WorkSpace): normal traffic,
#                never counted as a refusal;
#  * actionable — the broker, its PKI set-up or a directory is wrong or unreachable: a person
#                (operator, PKI or directory admin) must act, and a spike of them pages;
#  * user      — every other code: the person at the card made a mistake or the rules worked
#                as meant (wrong PIN → bad signature, expired challenge, revoked card, lockout).

#: Answers that mean "not yet, ask again": never a refusal.
NOT_YET = frozenset({Code.WORKSPACE_NOT_READY})

#: Refusals a person must act on (the refusal-spike alert counts only these).
ACTIONABLE = frozenset({
    # the PKI set-up: a missing intermediate or trust anchor, revocation that cannot be
    # checked (no CRL, OCSP down), a policy or profile the directory's CAs do not meet
    Code.CERTIFICATE_UNTRUSTED, Code.CERTIFICATE_REVOCATION_UNKNOWN,
    Code.CERTIFICATE_POLICY_MISMATCH, Code.CHAIN_TOO_LONG, Code.CERTIFICATE_NOT_FOR_CLIENT_AUTH,
    Code.CERTIFICATE_WEAK_ALGORITHM,
    # the directory's data or server
    Code.USER_AMBIGUOUS, Code.DIRECTORY_UNAVAILABLE, Code.SMART_CARD_REQUIRES_WSP,
    Code.WORKSPACE_UNAVAILABLE,
    # the broker itself
    Code.SERVICE_UNAVAILABLE, Code.INTERNAL_ERROR,
})


class RefusalClass(enum.StrEnum):
    """What a refusal code means for the people running the broker."""

    NOT_YET = "not_yet"
    USER = "user"
    ACTIONABLE = "actionable"


def refusal_class(code: str) -> RefusalClass:
    """The class of one refusal code (unknown strings are the user's side)."""
    if code in NOT_YET:
        return RefusalClass.NOT_YET
    if code in ACTIONABLE:
        return RefusalClass.ACTIONABLE
    return RefusalClass.USER
