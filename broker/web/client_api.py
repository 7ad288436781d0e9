"""The client API (/v1): registration, smart-card and password login, WorkSpaces, sessions.

Route functions only translate HTTP to use cases: each declares who may call it, parses a strict
body, runs the use case in the thread pool (``ctx.call``) and returns ``(status, body)``; errors
are BrokerErrors whose code the web layer maps to a status. Routes that name a session,
WorkSpace or challenge of a login declare ``Access.AUTH_TOKEN``; the use case receives the
token's principal and answers 404 for anything its user does not own.
"""

from __future__ import annotations

from typing import Any

from klein import Klein

from broker.service import auth, in_session, login, registrations, sessions, tickets
from broker.service.auth import ClientPrincipal
from broker.service.context import BrokerContext
from broker.web.http import Access, JsonApi, client_address, read_model, read_optional_model
from broker.web.models import (
    ChallengeRequest,
    ChallengeResponse,
    ConnectRequest,
    HeartbeatRequest,
    InSessionChallengeRequest,
    InSessionResponse,
    LogonRequest,
    PasswordLogin,
    RegistrationRequest,
)


def build_client_api(ctx: BrokerContext) -> JsonApi:
    async def authenticate(presented: str | None, access: Access) -> ClientPrincipal:
        return await ctx.call(auth.client_principal, ctx, presented)

    api = JsonApi("client", Klein(), authenticate)
    route = api.route

    @route("/v1/registrations", "POST", access=Access.ANONYMOUS)
    async def register(request: Any) -> tuple[int, Any]:
        body = read_model(request, RegistrationRequest)
        client = registrations.ClientSpec(body.client.platform, body.client.arch,
                                          body.client.version)
        result = await ctx.call(registrations.register, ctx, body.registration_code, client,
                                client_address(request))
        return 200, result

    @route("/v1/auth/challenges", "POST", access=Access.ANONYMOUS)
    async def challenge(request: Any) -> tuple[int, Any]:
        body = read_model(request, ChallengeRequest)
        client = registrations.ClientSpec(body.client.platform, body.client.arch,
                                          body.client.version)
        result = await ctx.call(login.issue_login_challenge, ctx, body.registration_code,
                                client, body.card_count, client_address(request))
        return 201, result

    @route("/v1/auth/challenges/{challenge_id}/response", "POST", access=Access.ANONYMOUS)
    async def respond(request: Any, challenge_id: str) -> tuple[int, Any]:
        body = read_model(request, ChallengeResponse)
        result = await ctx.call(login.respond_to_challenge, ctx, challenge_id, body.certificate,
                                list(body.chain), body.signature, body.algorithm,
                                client_address(request))
        return 200, result

    @route("/v1/auth/password", "POST", access=Access.ANONYMOUS)
    async def password(request: Any) -> tuple[int, Any]:
        body = read_model(request, PasswordLogin)
        client = None if body.client is None else registrations.ClientSpec(
            body.client.platform, body.client.arch, body.client.version)
        result = await ctx.call(login.password_login, ctx, body.registration_code,
                                body.username, body.password, client_address(request), client)
        return 200, result

    @route("/v1/workspaces/{workspace_id}/connect", "POST", access=Access.AUTH_TOKEN)
    async def connect(request: Any, workspace_id: str,
                      principal: ClientPrincipal) -> tuple[int, Any]:
        read_optional_model(request, ConnectRequest)
        result = await ctx.call(sessions.connect, ctx, principal, workspace_id,
                                client_address(request))
        # A session at once is created (201); a start or a logon challenge is accepted (202).
        return (201 if isinstance(result, sessions.Opened) else 202), result.body

    @route("/v1/workspaces/{workspace_id}/logon", "POST", access=Access.AUTH_TOKEN)
    async def logon(request: Any, workspace_id: str, principal: ClientPrincipal) -> tuple[int, Any]:
        body = read_model(request, LogonRequest)
        result = await ctx.call(sessions.logon, ctx, principal, workspace_id,
                                body.challenge_id, body.signature, body.algorithm,
                                client_address(request))
        return 201, result

    @route("/v1/sessions/{session_id}/heartbeat", "POST", access=Access.AUTH_TOKEN)
    async def heartbeat(request: Any, session_id: str,
                        principal: ClientPrincipal) -> tuple[int, Any]:
        body = read_model(request, HeartbeatRequest)
        return 200, await ctx.call(sessions.heartbeat, ctx, principal, session_id,
                                   body.card_present)

    @route("/v1/sessions/{session_id}", "DELETE", access=Access.AUTH_TOKEN)
    async def end(request: Any, session_id: str, principal: ClientPrincipal) -> tuple[int, Any]:
        await ctx.call(sessions.end_session, ctx, principal, session_id)
        return 204, None

    @route("/v1/sessions/{session_id}/in-session/challenges", "POST", access=Access.AUTH_TOKEN)
    async def in_session_challenge(request: Any, session_id: str,
                                   principal: ClientPrincipal) -> tuple[int, Any]:
        body = read_model(request, InSessionChallengeRequest)
        return 201, await ctx.call(in_session.in_session_challenge, ctx, principal, session_id,
                                   body.purpose, client_address(request))

    @route("/v1/sessions/{session_id}/in-session/challenges/{challenge_id}/response", "POST",
           access=Access.AUTH_TOKEN)
    async def in_session_response(request: Any, session_id: str, challenge_id: str,
                                  principal: ClientPrincipal) -> tuple[int, Any]:
        body = read_model(request, InSessionResponse)
        return 200, await ctx.call(in_session.in_session_response, ctx, principal, session_id,
                                   challenge_id, body.signature, body.algorithm,
                                   body.certificate, list(body.chain), client_address(request))

    @route("/v1/jwks.json", "GET", access=Access.ANONYMOUS)
    async def jwks(request: Any) -> tuple[int, Any]:
        def work(session: Any) -> Any:
            ctx.keyring.current(session, ctx.now())  # never publish an empty set
            return tickets.jwks(session, ctx.now())
        return 200, await ctx.call(ctx.db.transaction, work)

    return api
