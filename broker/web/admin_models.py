"""Request bodies of the admin API as strict pydantic models (unknown fields are refused).

Create models carry every required field; patch models make every field optional and the use
case changes only the fields the request named (``model_fields_set``). The same models feed the
OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
CertmapRule = Literal["upn", "email", "subject", "fingerprint"]
RemovalAction = Literal["none", "lock", "disconnect"]
FailMode = Literal["soft", "hard"]
Protocol = Literal["WSP", "PCoIP"]
RunningMode = Literal["ALWAYS_ON", "AUTO_STOP"]
WorkSpaceState = Literal["PENDING", "AVAILABLE", "STARTING", "STOPPING", "STOPPED", "ERROR",
                         "UNHEALTHY"]
Pem = Annotated[str, Field(min_length=1, max_length=60000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _unique(rules: list[str] | None) -> list[str] | None:
    if rules is not None and len(set(rules)) != len(rules):
        raise ValueError("certmap rules must not repeat")
    return rules


class SmartCardSettings(Strict):
    pre_session: bool = False
    in_session: bool = False
    removal_action: RemovalAction = "lock"


class SmartCardPatch(Strict):
    pre_session: bool | None = None
    in_session: bool | None = None
    removal_action: RemovalAction | None = None


class RevocationSettings(Strict):
    crl: bool = True
    ocsp: bool = False
    fail_mode: FailMode = "soft"


class RevocationPatch(Strict):
    crl: bool | None = None
    ocsp: bool | None = None
    fail_mode: FailMode | None = None


class DirectoryCreate(Strict):
    id: Id
    name: Name
    region: Annotated[str, Field(min_length=1, max_length=32)]
    password_login: bool = False
    smart_card: SmartCardSettings = SmartCardSettings()
    revocation: RevocationSettings = RevocationSettings()
    certmap: Annotated[list[CertmapRule], Field(min_length=1, max_length=4)] = ["upn", "email"]

    _certmap = field_validator("certmap")(_unique)


class DirectoryPatch(Strict):
    name: Name | None = None
    region: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    password_login: bool | None = None
    smart_card: SmartCardPatch | None = None
    revocation: RevocationPatch | None = None
    certmap: Annotated[list[CertmapRule], Field(min_length=1, max_length=4)] | None = None

    _certmap = field_validator("certmap")(_unique)


class TrustUpload(Strict):
    #: One or more PEM certificates (or one base64 DER certificate).
    pem: Pem
    #: anchor or intermediate; by default a self-issued certificate is an anchor.
    kind: Literal["anchor", "intermediate"] | None = None


class CrlUpload(Strict):
    #: A PEM CRL, or a DER CRL in base64.
    crl: Pem


class UserCreate(Strict):
    username: Name
    upn: Annotated[str, Field(max_length=320)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    subject: Annotated[str, Field(max_length=2000)] | None = None
    cert_fingerprint: Fingerprint | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    disabled: bool = False


class UserPatch(Strict):
    upn: Annotated[str, Field(max_length=320)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    subject: Annotated[str, Field(max_length=2000)] | None = None
    cert_fingerprint: Fingerprint | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    disabled: bool | None = None


class WorkSpaceCreate(Strict):
    id: Id
    directory: Id
    user: Name
    name: Annotated[str, Field(max_length=200)] | None = None
    bundle: Annotated[str, Field(min_length=1, max_length=100)] = "standard"
    protocol: Protocol
    running_mode: RunningMode = "AUTO_STOP"
    state: WorkSpaceState = "STOPPED"


class WorkSpacePatch(Strict):
    user: Name | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    bundle: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    protocol: Protocol | None = None
    running_mode: RunningMode | None = None
    #: Set a state directly (e.g. recover from ERROR); start/stop are the usual way.
    state: WorkSpaceState | None = None


class CodeIssue(Strict):
    count: Annotated[int, Field(ge=1, le=100)] = 1


class CodeRef(Strict):
    code: Annotated[str, Field(min_length=1, max_length=64)]


#: Patch fields that may be set to null (cleared), per model; any other null is refused.
NULLABLE_PATCH_FIELDS: dict[str, set[str]] = {
    "UserPatch": {"upn", "email", "subject", "cert_fingerprint", "password"},
    "WorkSpacePatch": {"name"},
}


# --------------------------------------------------------------------------- responses
# What the admin API answers, for the OpenAPI document; the tests validate real responses
# against these, so the views in broker.service.admin and the document cannot drift apart.

class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


Time = str | None


class DirectoryOut(Out):
    id: str
    name: str
    region: str
    password_login: bool
    smart_card: SmartCardSettings
    revocation: RevocationSettings
    certmap: list[CertmapRule]
    created_at: Time
    updated_at: Time


class TrustOut(Out):
    directory: str
    kind: Literal["anchor", "intermediate"]
    subject: str
    fingerprint: str
    not_after: Time
    created_at: Time


class CrlOut(Out):
    directory: str
    issuer: str
    fingerprint: str
    this_update: Time
    next_update: Time
    created_at: Time


class UserOut(Out):
    directory: str
    username: str
    upn: str | None
    email: str | None
    subject: str | None
    cert_fingerprint: str | None
    has_password: bool
    disabled: bool
    created_at: Time


class WorkSpaceOut(Out):
    id: str
    directory: str
    user: str | None
    name: str
    bundle: str
    protocol: Protocol
    running_mode: RunningMode
    state: WorkSpaceState
    state_changed_at: Time
    transition_due_at: Time
    created_at: Time


class CodeOut(Out):
    code: str
    directory: str
    state: Literal["active", "rotated", "revoked"]
    created_at: Time
    rotated_at: Time
    revoked_at: Time


class SessionOut(Out):
    id: str
    directory: str
    workspace: str
    user_id: int
    auth_method: str
    protocol: str
    state: Literal["active", "locked", "ended"]
    pending_action: str | None
    end_reason: str | None
    cert_fingerprint: str | None
    smart_card_redirection: bool
    last_heartbeat_at: Time
    expires_at: Time
    created_at: Time
    ended_at: Time


class AuditEventOut(Out):
    id: int
    at: Time
    kind: str
    outcome: str
    reason: str | None
    directory: str | None
    username: str | None
    actor: str | None
    client_address: str | None
    cert_fingerprint: str | None
    details: dict[str, Any] | None


def _items(model: type[Out]) -> type[Out]:
    cls = create_model(f"{model.__name__[:-3]}Items", __base__=Out,
                       items=(list[model], ...))  # type: ignore[valid-type]
    return cls


def _page(model: type[Out]) -> type[Out]:
    cls = create_model(f"{model.__name__[:-3]}Page", __base__=Out,
                       items=(list[model], ...),  # type: ignore[valid-type]
                       next_cursor=(str | None, ...))
    return cls


DirectoryPage = _page(DirectoryOut)
TrustPage = _page(TrustOut)
TrustItems = _items(TrustOut)
CrlPage = _page(CrlOut)
UserPage = _page(UserOut)
WorkSpacePage = _page(WorkSpaceOut)
CodePage = _page(CodeOut)
CodeItems = _items(CodeOut)
SessionPage = _page(SessionOut)
AuditEventPage = _page(AuditEventOut)
