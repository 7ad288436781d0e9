#!/usr/bin/env python3
"""Certificate chains verified per second, beside the raw signature-verify rate of OpenSSL.

For a root → issuing CA → user chain it times ``verify_certificate`` (the exact function the
login path uses) with revocation off, with an uploaded CRL, and with OCSP answered from the
cache, and measures ``openssl speed -seconds N <alg>`` for the same key type in the same run.
The ratio chains/s ÷ raw verifies/s shows how much of the budget is path building and policy
rather than signature arithmetic (a chain needs two signature checks). Each case runs
"first time" (a card never seen before, under CAs already seen: every call verifies a different,
freshly issued leaf, so the whole path is validated — path building, OpenSSL, the RFC 5280
engine, profile, revocation — while what only depends on the CAs and CRLs is remembered per
fingerprint) and "cached" (the same card again: the verdict cache a directory's TrustStore
keeps). Times are CPU time per path, medians over rounds, so a busy machine skews them less.

Before/after figures (README "Performance") come from running this same file against the tree
before issue 13's single engine pass and per-fingerprint memo, right after this one, so both sit
beside the same `openssl speed` figure.

Issue 27: "no revocation, first time" takes the native fast path (cryptography's Rust verifier,
broker.pki.chain._native_result); "…, engines only" is the same with it off (OpenSSL and the RFC
5280 engine), and the last line compares the first-time cost with the 0.6 CPU-ms goal.

    python bench/pki_verify.py [--key-kind ec-p256|rsa-2048] [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def openssl_verify_rate(key_kind: str, seconds: int) -> float | None:
    alg = {"ec-p256": "ecdsap256", "ec-p384": "ecdsap384", "rsa-2048": "rsa2048"}[key_kind]
    try:
        out = subprocess.run(["openssl", "speed", "-seconds", str(seconds), alg],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if re.match(r"^\s*(\d+ bits? )?(ecdsa|rsa)", line.strip()) and "/s" not in line:
            nums = re.findall(r"([\d.]+)", line)
            if len(nums) >= 4:
                return float(nums[-1])  # verify/s is the last column
    return None


def rate(fn, seconds: float, rounds: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Calls per CPU second of this process: the median of ``rounds`` rounds of ``seconds /
    rounds`` each. CPU time, not wall time: on a shared machine other processes' load inflates
    wall time far more than the verifier's own cost (openssl speed reports CPU time too)."""
    rates = []
    for _ in range(rounds):
        n, start = 0, time.process_time()
        while time.process_time() - start < seconds / rounds:
            fn()
            n += 1
        rates.append(n / (time.process_time() - start))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key-kind", choices=["ec-p256", "ec-p384", "rsa-2048"], default="ec-p256")
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from broker.pki import (
        RevocationCache,
        RevocationSettings,
        TrustStore,
        issue,
        verify_certificate,
    )

    root = issue.make_root("Bench Root", args.key_kind)
    inter = issue.make_intermediate(root, "Bench Issuing", args.key_kind)
    user = issue.make_user_cert(inter, "Bench User", args.key_kind, upn="u@bench.example",
                                ocsp_url="http://127.0.0.1:9/ocsp")
    leaf = user.cert_der()
    # Fresh cards for the first-time cases, each verified once (issued before timing starts).
    # Enough for ~400 first-time paths/s; should a fast machine use them all, they are reused,
    # which only makes the first-time figures look better, never worse.
    fresh = itertools.cycle([issue.make_user_cert(inter, f"Bench User {i}", args.key_kind,
                                                  upn="u@bench.example").cert_der()
                             for i in range(int(800 * args.seconds))])

    def stores(crls: list) -> dict[str, TrustStore]:  # type: ignore[type-arg]
        # "first time": no verdict cache, and a new leaf per call; "cached": the verdict cache
        # (VerificationCache) a login broker keeps per directory, the same card again.
        return {"first time": TrustStore([root.cert], [inter.cert], list(crls), verdicts=None),
                "cached": TrustStore([root.cert], [inter.cert], list(crls))}

    plain = stores([])
    with_crl = stores([issue.make_crl(inter, [12345]), issue.make_crl(root, [])])
    now = dt.datetime.now(dt.UTC)
    resp = (ocsp.OCSPResponseBuilder()
            .add_response(cert=user.cert, issuer=inter.cert, algorithm=hashes.SHA1(),
                          cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now,
                          next_update=now + dt.timedelta(hours=1), revocation_time=None,
                          revocation_reason=None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, inter.cert)
            .sign(inter.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    cache = RevocationCache()
    ocsp_on = RevocationSettings(crl=False, ocsp=True, fail_mode="hard")
    hits = {"n": 0}

    def fetch(url, body, content_type, timeout):  # type: ignore[no-untyped-def]
        hits["n"] += 1
        if "ocsp" in url:
            return resp
        raise OSError("no CRL server in this benchmark")

    store_for_ocsp = stores([issue.make_crl(root, [])])
    verify_certificate(leaf, [], store_for_ocsp["first time"], revocation=ocsp_on, fetch=fetch,
                       cache=cache)
    def card(mode: str) -> bytes:
        return next(fresh) if mode == "first time" else leaf

    cases = {}
    for mode in ("first time", "cached"):
        cases[f"no revocation, {mode}"] = (
            lambda m=mode: verify_certificate(card(m), [], plain[m],
                                              revocation=RevocationSettings(crl=False)))
        cases[f"uploaded CRL, {mode}"] = (
            lambda m=mode: verify_certificate(card(m), [], with_crl[m]))
    # Issue 27: the same first-time path with the native fast path off (OpenSSL and the RFC
    # 5280 engine), to show what cryptography's Rust verifier saves.
    from broker.pki import chain as chain_module

    def engines_only() -> object:
        chain_module.NATIVE_FAST_PATH = False
        try:
            return verify_certificate(card("first time"), [], plain["first time"],
                                      revocation=RevocationSettings(crl=False))
        finally:
            chain_module.NATIVE_FAST_PATH = True

    cases["no revocation, first time, engines only"] = engines_only
    # OCSP answers are per certificate: the cached answer belongs to the one bench card.
    cases["OCSP cache hit, same card, no verdict cache"] = (
        lambda: verify_certificate(leaf, [], store_for_ocsp["first time"], revocation=ocsp_on,
                                   fetch=fetch, cache=cache))
    cases["OCSP cache hit, cached"] = (
        lambda: verify_certificate(leaf, [], store_for_ocsp["cached"], revocation=ocsp_on,
                                   fetch=fetch, cache=cache))
    raw = openssl_verify_rate(args.key_kind, max(1, int(args.seconds)))
    print(f"key {args.key_kind}; chain root → issuing → user; {args.seconds:.0f} s per case")
    print(f"openssl speed {args.key_kind} verify/s: {raw:.0f}" if raw else
          "openssl speed: not available")
    print(f"{'case':<46}{'chains/s':>10}{'ms/path':>9}{'ratio to raw verify':>22}")
    ms: dict[str, float] = {}
    for name, fn in cases.items():
        r = rate(fn, args.seconds)
        ms[name] = 1000 / r
        ratio = f"{r / raw:.4f}" if raw else "-"
        print(f"{name:<46}{r:>10.0f}{1000 / r:>9.2f}{ratio:>22}")
    for kind in ("no revocation", "uploaded CRL"):
        print(f"{kind}: first time costs {ms[f'{kind}, first time'] / ms[f'{kind}, cached']:.1f}"
              " × a cached verdict")
    print(f"OCSP fetches during the cached runs: {hits['n'] - 1}")
    first = ms["no revocation, first time"]
    print(f"native fast path: first time {first:.2f} CPU-ms vs "
          f"{ms['no revocation, first time, engines only']:.2f} with the engines only "
          f"({ms['no revocation, first time, engines only'] / first:.1f}×)")
    goal = 0.6
    raw_ms = f"; = {first / (1000 / raw):.1f} raw signature verifies" if raw else ""
    print(f"issue 27 goal: first-time path without required policies ≤ {goal} CPU-ms: "
          f"{first:.2f} ms ({first / goal:.2f} of the budget{raw_ms}) → "
          f"{'met' if first <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
