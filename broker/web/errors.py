"""The one table from stable error codes to HTTP statuses, and the JSON error body.

Every error response is ``{"error": {"code", "message", "details"}}`` (shared/DESIGN.md §5).
A code missing from the table is a bug; it is answered as 500 ``internal_error`` and logged.
"""

from __future__ import annotations

from typing import Any

from broker.codes import PROCESS_CODES, Code
from broker.errors import BrokerError

#: Stable code → HTTP status, from the one closed set in :mod:`broker.codes`.
STATUS: dict[str, int] = {code.value: code.status for code in Code
                          if code not in PROCESS_CODES}


def status_for(code: str) -> int:
    return STATUS.get(code, 500)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def body_for(exc: BrokerError) -> dict[str, Any]:
    code = exc.code if exc.code in STATUS else "internal_error"
    if code == "internal_error":
        return error_body(code, "The broker hit an unexpected error.")
    return error_body(code, exc.message, exc.details)
