#!/usr/bin/env python3
"""APDUs and bytes per login: our thin client vs OpenSC's pkcs11-tool, on the same virtual card.

Both go through the real stack (pcscd + vpcd + the simulator); the simulator counts what
crosses the card edge. "Our client" is what a login does with the card: open it, list the
certificates, verify the PIN, sign the challenge. "pkcs11-tool" is
``pkcs11-tool --login --pin … --sign -m ECDSA-SHA256 --id 01`` (OpenSC's own probing included).

    python bench/card_apdus.py [--key-kind ec-p256|rsa-2048] [--runs 3]

Needs pcscd, vsmartcard-vpcd, OpenSC and pyscard (.ci/setup installs them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(card, action) -> tuple[int, int, int, float]:  # type: ignore[no-untyped-def]
    before = (card.stats.apdus, card.stats.bytes_in, card.stats.bytes_out)
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    return (card.stats.apdus - before[0], card.stats.bytes_in - before[1],
            card.stats.bytes_out - before[2], elapsed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key-kind", choices=["ec-p256", "ec-p384", "rsa-2048"], default="ec-p256")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()

    from broker.cardsim import PivCard
    from broker.client import transport
    from broker.client.card import open_card
    from broker.client.nss import find_opensc_module
    from broker.pki import issue
    from tests.support.pcsc import vpcd_cards

    pki = issue.make_demo_pki(args.key_kind)
    card = PivCard(key=pki.user.key, certificate=pki.user.cert)
    mech = {"ec-p256": "ECDSA-SHA256", "ec-p384": "ECDSA-SHA384",
            "rsa-2048": "SHA256-RSA-PKCS"}[args.key_kind]
    alg = {"ec-p256": "ecdsa-sha256", "ec-p384": "ecdsa-sha384",
           "rsa-2048": "rsa-pkcs1-sha256"}[args.key_kind]
    module = find_opensc_module()

    def ours() -> None:
        sc = open_card(transport.connect())
        chosen = sc.certificates()[0]
        sc.verify_pin("123456")
        sc.sign(chosen.slot_id, b"to be signed" * 8, alg)
        sc.connection.disconnect()

    def opensc() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            data.write_bytes(b"to be signed" * 8)
            proc = subprocess.run(["pkcs11-tool", "--module", module, "--login", "--pin",
                                   "123456", "--sign", "-m", mech, "--id", "01", "-i", str(data),
                                   "-o", str(Path(tmp) / "sig")], capture_output=True,
                                  timeout=120)
            if proc.returncode != 0:
                raise SystemExit(f"pkcs11-tool failed: {proc.stderr.decode()[:300]}")

    rows = {"our client": [], "pkcs11-tool": []}
    with vpcd_cards(card):
        for _ in range(args.runs):
            rows["our client"].append(measure(card, ours))
            rows["pkcs11-tool"].append(measure(card, opensc))
    print(f"key {args.key_kind}, {args.runs} run(s) each, counted by the simulated card")
    print(f"{'client':<14}{'APDUs':>8}{'bytes to card':>15}{'bytes from card':>17}{'ms':>9}")
    best = {}
    for name, samples in rows.items():
        apdus, b_in, b_out, secs = min(samples, key=lambda s: s[3])
        best[name] = apdus
        print(f"{name:<14}{apdus:>8}{b_in:>15}{b_out:>17}{secs * 1000:>9.1f}")
    print(f"ratio APDUs pkcs11-tool / our client: "
          f"{best['pkcs11-tool'] / max(best['our client'], 1):.1f}x")


if __name__ == "__main__":
    main()
