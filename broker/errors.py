"""The one error shape every layer shares: a stable code, a sentence, and details.

Each layer subclasses :class:`BrokerError` (``PkiError``, ``PolicyError``, ``ServiceError``,
``CardError`` …). The stable codes are the ones in shared/DESIGN.md; the web layer maps a code to
an HTTP status in one table (``broker.web.errors``). Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any

from broker.codes import Code


class BrokerError(Exception):
    """An expected failure with a stable machine-readable ``code`` and a human ``message``."""

    code: str = Code.INTERNAL_ERROR

    def __init__(self, code: str | None = None, message: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        if code is not None:
            self.code = code
        default = getattr(self.code, "message", None) or \
            self.code.replace("_", " ").capitalize() + "."
        self.message = message or default
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{self.code}: {self.message}")

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}
