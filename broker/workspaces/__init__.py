"""WorkSpace backends: the interface the broker drives and a simulated backend."""

from broker.kinds import RunningMode, WorkSpaceState
from broker.workspaces.backend import (
    SimulatedBackend,
    WorkSpaceBackend,
    backend_from_settings,
    request_start,
    request_stop,
)

__all__ = ["RunningMode", "SimulatedBackend", "WorkSpaceBackend", "WorkSpaceState",
           "backend_from_settings", "request_start", "request_stop"]
