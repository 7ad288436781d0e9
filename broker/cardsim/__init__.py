"""Virtual PIV and CAC smart cards (in-process, or in pcscd's vpcd reader via :mod:`.vpcd`)."""

from broker.cardsim.cac import CacCard
from broker.cardsim.card import CardStats, VirtualCard
from broker.cardsim.connection import CardRemovedError, InProcessConnection
from broker.cardsim.piv import KeySlot, PivCard, Slot

__all__ = ["CacCard", "CardRemovedError", "CardStats", "InProcessConnection", "KeySlot",
           "PivCard", "Slot", "VirtualCard"]
