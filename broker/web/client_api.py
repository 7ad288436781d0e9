"""The client API (/v1): registration, smart-card and password login, WorkSpaces, sessions.

Route functions only translate HTTP to use cases: they parse a strict body, run the use case in
the thread pool (``ctx.call``) and return ``(status, body)``; errors are BrokerErrors whose code
the web layer maps to a status.
"""

from __future__ import annotations

from typing import Any

from klein import Klein

from broker.service import login, registrations, sessions, tickets
from broker.service.context import BrokerContext
from broker.web.http import client_address, json_route, read_model
from broker.web.models import (
    ChallengeRequest,
    ChallengeResponse,
    HeartbeatRequest,
    InSessionChallengeRequest,
    InSessionResponse,
    LogonRequest,
    PasswordLogin,
    RegistrationRequest,
)


def bearer(request: Any) -> str | None:
    header = request.getHeader(b"authorization")
    if header and header[:7].lower() == b"bearer ":
        return header[7:].strip().decode("ascii", "replace")
    return None


def build_client_app(ctx: BrokerContext) -> Klein:
    app = Klein()

    @app.route("/v1/registrations", methods=["POST"])
    @json_route("client", "/v1/registrations")
    async def register(request: Any) -> tuple[int, Any]:
        body = read_model(request, RegistrationRequest)
        client = registrations.ClientSpec(body.client.platform, body.client.arch,
                                          body.client.version)
        result = await ctx.call(registrations.register, ctx, body.registration_code, client,
                                client_address(request))
        return 200, result

    @app.route("/v1/auth/challenges", methods=["POST"])
    @json_route("client", "/v1/auth/challenges")
    async def challenge(request: Any) -> tuple[int, Any]:
        body = read_model(request, ChallengeRequest)
        client = registrations.ClientSpec(body.client.platform, body.client.arch,
                                          body.client.version)
        result = await ctx.call(login.issue_login_challenge, ctx, body.registration_code,
                                client, body.card_count, client_address(request))
        return 201, result

    @app.route("/v1/auth/challenges/<challenge_id>/response", methods=["POST"])
    @json_route("client", "/v1/auth/challenges/{id}/response")
    async def respond(request: Any, challenge_id: str) -> tuple[int, Any]:
        body = read_model(request, ChallengeResponse)
        result = await ctx.call(login.respond_to_challenge, ctx, challenge_id, body.certificate,
                                list(body.chain), body.signature, body.algorithm,
                                client_address(request))
        return 200, result

    @app.route("/v1/auth/password", methods=["POST"])
    @json_route("client", "/v1/auth/password")
    async def password(request: Any) -> tuple[int, Any]:
        body = read_model(request, PasswordLogin)
        result = await ctx.call(login.password_login, ctx, body.registration_code,
                                body.username, body.password, client_address(request))
        return 200, result

    @app.route("/v1/workspaces/<workspace_id>/connect", methods=["POST"])
    @json_route("client", "/v1/workspaces/{id}/connect")
    async def connect(request: Any, workspace_id: str) -> tuple[int, Any]:
        return await ctx.call(sessions.connect, ctx, bearer(request), workspace_id,
                              client_address(request))

    @app.route("/v1/workspaces/<workspace_id>/logon", methods=["POST"])
    @json_route("client", "/v1/workspaces/{id}/logon")
    async def logon(request: Any, workspace_id: str) -> tuple[int, Any]:
        body = read_model(request, LogonRequest)
        result = await ctx.call(sessions.logon, ctx, bearer(request), workspace_id,
                                body.challenge_id, body.signature, body.algorithm,
                                client_address(request))
        return 201, result

    @app.route("/v1/sessions/<session_id>/heartbeat", methods=["POST"])
    @json_route("client", "/v1/sessions/{id}/heartbeat")
    async def heartbeat(request: Any, session_id: str) -> tuple[int, Any]:
        body = read_model(request, HeartbeatRequest)
        return 200, await ctx.call(sessions.heartbeat, ctx, session_id, body.card_present)

    @app.route("/v1/sessions/<session_id>", methods=["DELETE"])
    @json_route("client", "/v1/sessions/{id}")
    async def end(request: Any, session_id: str) -> tuple[int, Any]:
        await ctx.call(sessions.end_session, ctx, session_id)
        return 204, None

    @app.route("/v1/sessions/<session_id>/in-session/challenges", methods=["POST"])
    @json_route("client", "/v1/sessions/{id}/in-session/challenges")
    async def in_session_challenge(request: Any, session_id: str) -> tuple[int, Any]:
        body = read_model(request, InSessionChallengeRequest)
        return 201, await ctx.call(sessions.in_session_challenge, ctx, session_id,
                                   body.purpose, client_address(request))

    @app.route("/v1/sessions/<session_id>/in-session/challenges/<challenge_id>/response",
               methods=["POST"])
    @json_route("client", "/v1/sessions/{id}/in-session/challenges/{cid}/response")
    async def in_session_response(request: Any, session_id: str,
                                  challenge_id: str) -> tuple[int, Any]:
        body = read_model(request, InSessionResponse)
        return 200, await ctx.call(sessions.in_session_response, ctx, session_id, challenge_id,
                                   body.signature, body.algorithm, body.certificate,
                                   client_address(request))

    @app.route("/v1/jwks.json", methods=["GET"])
    @json_route("client", "/v1/jwks.json")
    async def jwks(request: Any) -> tuple[int, Any]:
        def work(session: Any) -> Any:
            sessions.keyring(ctx).current(session, ctx.now())  # never publish an empty set
            return tickets.jwks(session, ctx.now())
        return 200, await ctx.call(ctx.db.transaction, work)

    return app
