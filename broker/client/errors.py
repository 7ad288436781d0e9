"""Card errors: one BrokerError subclass per thing a caller can act on."""

from __future__ import annotations

from broker.errors import BrokerError


class CardError(BrokerError):
    code = "card_error"


class ApduError(CardError):
    code = "card_apdu_error"

    def __init__(self, sw: int, what: str = "command") -> None:
        super().__init__(message=f"The card refused the {what} (status {sw:04X}).",
                         details={"sw": f"{sw:04X}"})
        self.sw = sw


class InvalidPinError(CardError):
    code = "card_pin_invalid"

    def __init__(self, attempts_remaining: int) -> None:
        super().__init__(message=f"Wrong PIN: {attempts_remaining} attempt(s) left before the "
                                 "card blocks.", details={"attempts_remaining": attempts_remaining})
        self.attempts_remaining = attempts_remaining


class PinBlockedError(CardError):
    code = "card_pin_blocked"

    def __init__(self) -> None:
        super().__init__(message="The PIN is blocked: unblock the card with the PUK or ask your "
                                 "security officer.")


class MalformedResponseError(CardError):
    code = "card_malformed_response"


class NoReaderError(CardError):
    code = "card_no_reader"


class NoCardError(CardError):
    code = "card_absent"


class CardRemovedError(CardError):
    code = "card_removed"


class SharingViolationError(CardError):
    code = "card_busy"
