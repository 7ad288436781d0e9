"""Metrics that mean trouble: polling a starting WorkSpace is not a refusal, and the key
series exist at 0 from the start so rate() sees the first event."""

from __future__ import annotations

from prometheus_client import REGISTRY

from broker import metrics

LOGON = "/v1/workspaces/{workspace_id}/logon"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_workspace_not_ready_polling_is_not_a_refusal() -> None:
    before = value("broker_refusals_total", code="workspace_not_ready") or 0.0
    for _ in range(10):
        metrics.record_request("client", LOGON, "POST", 409, "workspace_not_ready", 0.01)
    assert (value("broker_refusals_total", code="workspace_not_ready") or 0.0) == before
    expired = value("broker_refusals_total", code="challenge_expired") or 0.0
    metrics.record_request("client", LOGON, "POST", 401, "challenge_expired", 0.01)
    assert value("broker_refusals_total", code="challenge_expired") == expired + 1


def test_key_series_start_at_zero() -> None:
    metrics.start_series_at_zero()
    for method in ("smart_card", "password"):
        for result in ("ok", "refused"):
            assert value("broker_logins_total", method=method, result=result) is not None
    for code in ("certificate_revoked", "certificate_revocation_unknown", "locked_out"):
        assert value("broker_refusals_total", code=code) is not None
    assert value("broker_challenges_issued_total", purpose="logon") is not None
    text = metrics.render()[0].decode()
    assert 'broker_refusals_total{code="certificate_revoked"}' in text


def test_refusal_classes_are_declared_once() -> None:
    from broker.codes import ACTIONABLE, NOT_YET, Code, RefusalClass, refusal_class

    assert refusal_class(Code.WORKSPACE_NOT_READY) is RefusalClass.NOT_YET
    for code in (Code.CERTIFICATE_REVOCATION_UNKNOWN, Code.DIRECTORY_UNAVAILABLE,
                 Code.CERTIFICATE_UNTRUSTED):
        assert refusal_class(code) is RefusalClass.ACTIONABLE
    for code in (Code.SIGNATURE_INVALID, Code.CHALLENGE_EXPIRED, Code.CERTIFICATE_REVOKED,
                 Code.LOCKED_OUT):
        assert refusal_class(code) is RefusalClass.USER
    assert not ACTIONABLE & NOT_YET
    assert metrics.NOT_REFUSALS == {"workspace_not_ready"}


def test_only_actionable_refusals_reach_the_alerted_counter() -> None:
    name = "broker_actionable_refusals_total"
    metrics.start_series_at_zero()
    for code in ("certificate_revocation_unknown", "directory_unavailable",
                 "certificate_untrusted"):
        assert value(name, code=code) is not None  # exported at 0 from the start
    assert value(name, code="signature_invalid") is None
    unknown = value(name, code="certificate_revocation_unknown") or 0.0
    down = value(name, code="directory_unavailable") or 0.0
    metrics.record_request("client", LOGIN, "POST", 401, "certificate_revocation_unknown", 0.01)
    metrics.record_request("client", LOGIN, "POST", 503, "directory_unavailable", 0.01)
    metrics.record_request("client", LOGIN, "POST", 401, "signature_invalid", 0.01)
    metrics.record_request("client", LOGON, "POST", 409, "workspace_not_ready", 0.01)
    assert value(name, code="certificate_revocation_unknown") == unknown + 1
    assert value(name, code="directory_unavailable") == down + 1  # a 503 still counts
    assert value(name, code="signature_invalid") is None
    assert value(name, code="workspace_not_ready") is None


LOGIN = "/v1/auth/challenges/{challenge_id}/response"
