"""Virtual smart cards for tests, the demo and benchmarks (in-process or behind pcscd's vpcd)."""

from broker.cardsim.connection import CardRemovedError, InProcessConnection
from broker.cardsim.piv import KeySlot, PivCard, Slot

__all__ = ["CardRemovedError", "InProcessConnection", "KeySlot", "PivCard", "Slot"]
