"""The simulator engineer's PC/SC fixtures (pcscd + vpcd + flock), reused as they are."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.card.conftest import pcsc_stack, vpcd_card, vpcd_lock  # noqa: F401

# vpcd notices a closed card socket only at its next presence poll (~0.44 s); a card connecting
# before that is not seen by pcscd. The previous holder of the vpcd lock (this or another test
# run) may just have pulled its card, so let vpcd settle on both sides of every test.
VPCD_SETTLE_S = 1.0


@pytest.fixture(autouse=True)
def vpcd_settled(vpcd_lock: None) -> Iterator[None]:  # noqa: F811
    time.sleep(VPCD_SETTLE_S)
    yield
    time.sleep(VPCD_SETTLE_S)
