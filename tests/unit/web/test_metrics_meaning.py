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
