"""ISO/IEC 7816-4 status words: the one table the card client and the card simulator share.

Sharing the standard's numbers and names cannot make the two sides share a misunderstanding of
PIV or CAC; everything above the status word stays written twice on purpose.
"""

from __future__ import annotations

import enum


class SW(enum.IntEnum):
    """Status words (SW1 SW2) the client acts on and the simulated cards answer."""

    OK = 0x9000
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00

    def bytes(self) -> bytes:
        return int(self).to_bytes(2, "big")
