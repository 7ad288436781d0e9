"""Card errors: one BrokerError subclass per thing a caller can act on, each with a stable code."""

from __future__ import annotations

from broker.errors import BrokerError


class CardError(BrokerError):
    """Any failure on the card side (reader, card, protocol); ``code`` says which."""

    code = "card_error"


class ApduError(CardError):
    """The card answered a command with a status word other than 9000."""

    code = "card_apdu_error"

    def __init__(self, sw: int, what: str = "command") -> None:
        super().__init__(message=f"The card refused the {what} (status {sw:04X}).",
                         details={"sw": f"{sw:04X}"})
        self.sw = sw


class InvalidPinError(CardError):
    """Wrong PIN; ``attempts_remaining`` tries are left before the card blocks it."""

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


class InvalidPukError(CardError):
    """Wrong PUK; ``attempts_remaining`` tries are left before the PUK blocks for good."""

    code = "card_puk_invalid"

    def __init__(self, attempts_remaining: int) -> None:
        super().__init__(message=f"Wrong PUK: {attempts_remaining} attempt(s) left before the "
                                 "PUK blocks.", details={"attempts_remaining": attempts_remaining})
        self.attempts_remaining = attempts_remaining


class PukBlockedError(CardError):
    code = "card_puk_blocked"

    def __init__(self) -> None:
        super().__init__(message="The PUK is blocked: the card must be re-issued by your "
                                 "security officer.")


class PinRequiredError(CardError):
    """The card wants the PIN verified before this operation."""

    code = "card_pin_required"

    def __init__(self) -> None:
        super().__init__(message="The card needs the PIN before it signs.")


class PinFormatError(CardError):
    code = "card_pin_format"


class MalformedResponseError(CardError):
    code = "card_malformed_response"


class NotSupportedError(CardError):
    """The card, key or algorithm is not one this client can use."""

    code = "card_not_supported"


class NoReaderError(CardError):
    code = "card_no_reader"


class NoCardError(CardError):
    code = "card_absent"


class MultipleCardsError(CardError):
    code = "card_multiple"

    def __init__(self) -> None:
        super().__init__(message="Only one smart card at a time: remove the others.")


class CardRemovedError(CardError):
    code = "card_removed"


class SharingViolationError(CardError):
    code = "card_busy"


class CardStackMissingError(CardError):
    code = "card_stack_missing"
