"""The storm helper (tests/support/storm.py) counts every answer, including the refusals that end
a round, so the fault tests can assert the allowed codes."""

from __future__ import annotations

from typing import Any

from tests.support.server import Response
from tests.support.storm import FAULT_ANSWERS, StormLog, one_round


def answer(status: int, code: str | None = None, **body: Any) -> Response:
    payload: dict[str, Any] = dict(body)
    if code:
        payload["error"] = {"code": code, "message": "m"}
    return Response(status, payload, {})


class ScriptedClient:
    """A SoftClient whose answers are given: one list per call."""

    def __init__(self, **answers: list[Response]) -> None:
        self.answers = answers
        self.api = self

    def _next(self, call: str) -> Response:
        return self.answers[call].pop(0)

    def challenge(self) -> Response:
        return self._next("challenge")

    def respond(self, body: Any, card: Any) -> Response:
        return self._next("response")

    def connect(self, token: str, workspace_id: str) -> Response:
        return self._next("connect")

    def logon(self, token: str, workspace_id: str, challenge: Any, card: Any) -> Response:
        return self._next("logon")

    def post(self, path: str, body: Any, token: str) -> Response:
        return self._next("heartbeat")

    def delete(self, path: str, token: str) -> Response:
        return self._next("end")


def test_a_refusal_that_ends_a_round_is_recorded_and_unexpected() -> None:
    log = StormLog()
    client = ScriptedClient(challenge=[answer(201, challenge_id="c1")],
                            response=[answer(503, "service_unavailable"),
                                      answer(200, auth_token="t")],
                            connect=[answer(403, "workspace_not_yours")])
    one_round(log, client, None, "ws", heartbeats=1)  # type: ignore[arg-type]
    assert [(a.call, a.status) for a in log.answers] == [
        ("challenge", 201), ("response", 503), ("response", 200), ("connect", 403)]
    assert [(a.call, a.status, a.code) for a in log.refusals] == [
        ("connect", 403, "workspace_not_yours")]
    assert [(a.call, a.code) for a in log.unexpected(FAULT_ANSWERS)] == [
        ("connect", "workspace_not_yours")]
    assert log.logins == ["c1"] and log.sessions == []


def test_a_full_round_has_nothing_unexpected() -> None:
    log = StormLog()
    client = ScriptedClient(challenge=[answer(201, challenge_id="c1")],
                            response=[answer(200, auth_token="t")],
                            connect=[answer(202, state="AVAILABLE",
                                            logon_challenge={"challenge_id": "l1"})],
                            logon=[answer(201, session={"id": "s1"})],
                            heartbeat=[answer(200, action="none")],
                            end=[answer(204)])
    one_round(log, client, None, "ws", heartbeats=1)  # type: ignore[arg-type]
    assert log.unexpected(FAULT_ANSWERS) == [] and log.refusals == []
    assert (log.logins, log.sessions, log.ended) == (["c1"], ["s1"], ["s1"])
