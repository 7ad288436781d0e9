"""The WorkSpace lifecycle: a backend interface and a simulated backend with real state.

States follow the WorkSpaces service: STOPPED → STARTING → AVAILABLE → STOPPING → STOPPED, plus
ERROR and UNHEALTHY (which refuse connections until an admin acts). Every state lives on the
WorkSpace row, with ``transition_due_at`` for a transition in progress, so a WorkSpace started by
one broker process is seen as STARTING — and then AVAILABLE — by any other, and survives a
restart: :meth:`SimulatedBackend.refresh` completes due transitions whenever a row is read, and
the sweeper does the same for rows nobody reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import WorkSpaceState
from broker.store.models import WorkSpace


class WorkSpaceError(BrokerError):
    """A WorkSpace backend refusal (stable code, e.g. workspace_unavailable)."""


class Lifecycle(Protocol):
    """The fields of a WorkSpace a backend reads and moves: an ORM :class:`WorkSpace`, or the
    values of a row read on the Core hot path (the caller writes back what changed)."""

    id: str
    state: WorkSpaceState
    state_changed_at: datetime
    transition_due_at: datetime | None
    last_activity_at: datetime


class WorkSpaceBackend(Protocol):
    """What the broker needs from whatever runs WorkSpaces."""

    def refresh(self, ws: Lifecycle, now: datetime) -> bool:
        """Complete a due transition; True when the state changed."""

    def start(self, ws: Lifecycle, now: datetime) -> None:
        """Begin starting a STOPPED WorkSpace (no-op when starting or available)."""

    def stop(self, ws: Lifecycle, now: datetime) -> None:
        """Begin stopping an AVAILABLE WorkSpace (no-op when stopping or stopped)."""

    def endpoint(self, ws: Lifecycle) -> tuple[str, int]:
        """Where the streaming gateway reaches this WorkSpace."""


class SimulatedBackend:
    """A backend whose transitions take configurable time, all state on the row."""

    def __init__(self, start_delay_s: float = 5.0, stop_delay_s: float = 2.0,
                 gateway: tuple[str, int] = ("gateway.workspaces.example", 4195)) -> None:
        self.start_delay = timedelta(seconds=start_delay_s)
        self.stop_delay = timedelta(seconds=stop_delay_s)
        self.gateway = gateway

    def _set(self, ws: Lifecycle, state: WorkSpaceState, now: datetime,
             due: datetime | None = None) -> None:
        ws.state = state
        ws.state_changed_at = now
        ws.transition_due_at = due

    def refresh(self, ws: Lifecycle, now: datetime) -> bool:
        due = ws.transition_due_at
        if due is None or due > now:
            return False
        if ws.state == WorkSpaceState.STARTING:
            self._set(ws, WorkSpaceState.AVAILABLE, due)
            ws.last_activity_at = due
            return True
        if ws.state == WorkSpaceState.STOPPING:
            self._set(ws, WorkSpaceState.STOPPED, due)
            return True
        ws.transition_due_at = None
        return False

    def start(self, ws: Lifecycle, now: datetime) -> None:
        self.refresh(ws, now)
        state = WorkSpaceState(ws.state)
        if state in (WorkSpaceState.STARTING, WorkSpaceState.AVAILABLE):
            return
        if state == WorkSpaceState.STOPPED:
            self._set(ws, WorkSpaceState.STARTING, now, now + self.start_delay)
            self.refresh(ws, now)  # a zero delay starts at once
            return
        raise WorkSpaceError(Code.WORKSPACE_UNAVAILABLE,
                           f"The WorkSpace is {state.value} and cannot be started now.",
                           {"state": state.value})

    def stop(self, ws: Lifecycle, now: datetime) -> None:
        self.refresh(ws, now)
        state = WorkSpaceState(ws.state)
        if state in (WorkSpaceState.STOPPING, WorkSpaceState.STOPPED):
            return
        if state == WorkSpaceState.AVAILABLE:
            self._set(ws, WorkSpaceState.STOPPING, now, now + self.stop_delay)
            self.refresh(ws, now)
            return
        raise WorkSpaceError(Code.WORKSPACE_UNAVAILABLE,
                           f"The WorkSpace is {state.value} and cannot be stopped now.",
                           {"state": state.value})

    def endpoint(self, ws: Lifecycle) -> tuple[str, int]:
        return self.gateway


def backend_from_settings(settings: object) -> SimulatedBackend:
    """The configured backend (today: the simulated one) from broker Settings."""
    ws = settings.workspaces  # type: ignore[attr-defined]
    sess = settings.sessions  # type: ignore[attr-defined]
    return SimulatedBackend(ws.start_delay_s, ws.stop_delay_s,
                            (sess.gateway_host, sess.gateway_port))


def request_start(session: object, ws: WorkSpace, now: datetime, settings: object) -> None:
    """Start ``ws`` (an admin action or a connect); the caller's transaction persists it."""
    backend_from_settings(settings).start(ws, now)


def request_stop(session: object, ws: WorkSpace, now: datetime, settings: object) -> None:
    backend_from_settings(settings).stop(ws, now)
