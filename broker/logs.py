"""Structured logs: one JSON object per line (or plain text), Twisted's log routed through.

Fields passed with ``extra=`` (request_id, route, status …) appear as keys in JSON and as
``key=value`` pairs in text. Never pass a PIN, a token, a nonce or a private key: log a
fingerprint instead. Twisted's own chatter (its access log, "Site starting on …") is dropped
below warning level: the broker logs one line per request and per start-up fact itself.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from broker.config import LOG_LEVELS

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extra_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value …`` — the same fields as the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger and route Twisted's logger into it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS.get(level.lower(), "INFO"))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        STDLibLogObserver,
        globalLogBeginner,
    )

    # Twisted logs its access log and port start/stop at info: only its warnings and errors
    # (unhandled errors in Deferreds, TLS failures) reach our stream.
    only_warnings = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(STDLibLogObserver(name="twisted"),  # type: ignore[arg-type]
                                    [only_warnings])  # type: ignore[list-item]
    globalLogBeginner.beginLoggingTo([observer],  # type: ignore[list-item]
                                     redirectStandardIO=False, discardBuffer=True)
