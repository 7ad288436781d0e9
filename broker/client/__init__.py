"""The thin client's card side and broker flow.

Layers, bottom up: ``transport`` (PC/SC via pyscard, the only module importing it), ``apdu``,
``tlv``, ``piv`` / ``cac`` (sessions on a duck-typed connection: ``atr``, ``transmit``,
``disconnect``), ``card`` (``open_card`` → ``SmartCard``: PIV, CAC or dual), ``nss`` (OpenSC in
the NSS database), ``flow`` (the broker API) and ``cli`` (``broker-client``).
"""
