"""The simulator engineer's PC/SC fixtures (pcscd + vpcd + flock), reused as they are."""

from tests.integration.card.conftest import pcsc_stack, vpcd_card, vpcd_lock  # noqa: F401
