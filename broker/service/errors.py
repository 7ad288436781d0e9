"""The service layer's error type: a BrokerError with a stable code from shared/DESIGN.md."""

from __future__ import annotations

from broker.codes import Code
from broker.errors import BrokerError


class ServiceError(BrokerError):
    code = Code.INTERNAL_ERROR
