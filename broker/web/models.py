"""Request bodies of the client API as strict pydantic models (unknown fields are refused).

The same models feed the OpenAPI document, so the code and the document cannot disagree.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: No control character (C0 or DEL) in an identifier, code or user name: refused with 400
#: malformed_request before any database work.
NO_CONTROLS = r"^[^\x00-\x1f\x7f]*$"
Short = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROLS)]
B64 = Annotated[str, Field(min_length=1, max_length=32768)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClientModel(Strict):
    platform: Short
    arch: Short
    version: Annotated[str, Field(max_length=64)]


class RegistrationRequest(Strict):
    registration_code: Short
    client: ClientModel


class ChallengeRequest(Strict):
    registration_code: Short
    client: ClientModel
    card_count: Annotated[int, Field(ge=0, le=64)]
    purpose: Literal["pre_session"] = "pre_session"


class ChallengeResponse(Strict):
    certificate: B64
    chain: Annotated[list[B64], Field(max_length=10)] = []
    signature: Annotated[str, Field(min_length=1, max_length=2048)]
    algorithm: Short


class PasswordLogin(Strict):
    registration_code: Short
    username: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROLS)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    #: Optional (older clients do not send it): absent means an unknown client, whose
    #: sessions get no smart-card redirection and no in-session challenges.
    client: ClientModel | None = None


class ConnectRequest(Strict):
    """POST /v1/workspaces/{id}/connect takes no fields (an empty body or {})."""


class LogonRequest(Strict):
    challenge_id: Short
    signature: Annotated[str, Field(min_length=1, max_length=2048)]
    algorithm: Short | None = None


class HeartbeatRequest(Strict):
    card_present: bool


class InSessionChallengeRequest(Strict):
    purpose: Literal["sudo", "browser", "other"]


class InSessionResponse(Strict):
    """The pre-session response body; certificate and algorithm default to the login's."""

    certificate: B64 | None = None
    chain: Annotated[list[B64], Field(max_length=10)] = []
    signature: Annotated[str, Field(min_length=1, max_length=2048)]
    algorithm: Short | None = None
