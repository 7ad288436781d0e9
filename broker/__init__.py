"""smartcard-broker: a protocol-aware session broker for PIV/CAC smart-card login."""

__version__ = "0.1.0"
