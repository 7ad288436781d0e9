"""The simulated WorkSpace backend's state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.store.models import WorkSpace
from broker.workspaces import SimulatedBackend, WorkSpaceState
from broker.workspaces.backend import WorkSpaceError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ws(state: str = "STOPPED") -> WorkSpace:
    return WorkSpace(id="w", directory_id="d", user_id=1, protocol="WSP",
                     running_mode="AUTO_STOP", state=state, state_changed_at=T0,
                     last_activity_at=T0)


def test_stopped_workspace_starts_after_the_start_delay() -> None:
    b, w = SimulatedBackend(start_delay_s=5), ws()
    b.start(w, T0)
    assert w.state == "STARTING"
    assert not b.refresh(w, T0 + timedelta(seconds=4))
    assert w.state == "STARTING"
    assert b.refresh(w, T0 + timedelta(seconds=5))
    assert w.state == "AVAILABLE" and w.transition_due_at is None


def test_zero_delay_starts_at_once() -> None:
    b, w = SimulatedBackend(start_delay_s=0), ws()
    b.start(w, T0)
    assert w.state == "AVAILABLE"


def test_available_workspace_stops_through_stopping() -> None:
    b, w = SimulatedBackend(stop_delay_s=2), ws("AVAILABLE")
    b.stop(w, T0)
    assert w.state == "STOPPING"
    b.refresh(w, T0 + timedelta(seconds=2))
    assert w.state == "STOPPED"


def test_start_is_idempotent_while_starting_or_available() -> None:
    b, w = SimulatedBackend(start_delay_s=5), ws()
    b.start(w, T0)
    due = w.transition_due_at
    b.start(w, T0 + timedelta(seconds=1))
    assert w.transition_due_at == due


@pytest.mark.parametrize("state", ["ERROR", "UNHEALTHY", "STOPPING"])
def test_broken_or_stopping_workspace_cannot_start(state: str) -> None:
    w = ws(state)
    w.transition_due_at = T0 + timedelta(hours=1) if state == "STOPPING" else None
    with pytest.raises(WorkSpaceError) as err:
        SimulatedBackend().start(w, T0)
    assert err.value.code == "workspace_unavailable"


def test_every_state_is_a_known_enum_value() -> None:
    assert {s.value for s in WorkSpaceState} >= {"STOPPED", "STARTING", "AVAILABLE", "STOPPING",
                                                "ERROR", "UNHEALTHY"}
