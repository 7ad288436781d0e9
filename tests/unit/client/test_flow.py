from __future__ import annotations

from broker.cardsim import InProcessConnection
from broker.client.card import open_card
from broker.client.flow import LoginResult


def test_closing_a_login_releases_the_card_once(piv_conn: InProcessConnection) -> None:
    """The demo and `login` close the card before pcscd may go: nothing is left for pyscard's
    __del__ to disconnect at interpreter exit."""
    result = LoginResult({}, "token", [], card=open_card(piv_conn))
    result.close()
    assert not piv_conn.connected and result.card is None
    result.close()  # a second close is a no-op
