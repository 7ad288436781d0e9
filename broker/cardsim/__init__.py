"""Virtual PIV, CAC and OpenPGP smart cards (in-process, or in vpcd's reader via :mod:`.vpcd`)."""

from broker.cardsim.cac import CacCard
from broker.cardsim.card import CardStats, VirtualCard
from broker.cardsim.connection import CardRemovedError, InProcessConnection
from broker.cardsim.openpgp import OpenPgpCard
from broker.cardsim.piv import KeySlot, PivCard, Slot

__all__ = ["CacCard", "CardRemovedError", "CardStats", "InProcessConnection", "KeySlot",
           "OpenPgpCard", "PivCard", "Slot", "VirtualCard"]
