"""WorkSpace backends: the interface the broker drives and a simulated backend."""

from broker.workspaces.backend import (
    RunningMode,
    SimulatedBackend,
    WorkSpaceBackend,
    WorkSpaceState,
    backend_from_settings,
    request_start,
    request_stop,
)

__all__ = ["RunningMode", "SimulatedBackend", "WorkSpaceBackend", "WorkSpaceState",
           "backend_from_settings", "request_start", "request_stop"]
