#!/usr/bin/env python3
"""Certificate chains verified per second, beside the raw signature-verify rate of OpenSSL.

For a root → issuing CA → user chain it times ``verify_certificate`` (the exact function the
login path uses) with revocation off, with an uploaded CRL, and with OCSP answered from the
cache, and measures ``openssl speed -seconds N <alg>`` for the same key type in the same run.
The ratio chains/s ÷ raw verifies/s shows how much of the budget is path building and policy
rather than signature arithmetic (a chain needs two signature checks). Each case runs
"uncached" (the whole path validated: path building, OpenSSL, the RFC 5280 engine, profile,
revocation) and "cached" (the per-fingerprint verdict cache a directory's TrustStore keeps:
what a repeat login costs).

    python bench/pki_verify.py [--key-kind ec-p256|rsa-2048] [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
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


def rate(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


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
    def stores(crls: list) -> dict[str, TrustStore]:  # type: ignore[type-arg]
        # "uncached": every call validates the whole path; "cached": the per-fingerprint
        # verdict cache (VerificationCache) a login broker keeps per directory.
        return {"uncached": TrustStore([root.cert], [inter.cert], list(crls), verdicts=None),
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
    verify_certificate(leaf, [], store_for_ocsp["uncached"], revocation=ocsp_on, fetch=fetch,
                       cache=cache)
    cases = {}
    for mode in ("uncached", "cached"):
        cases[f"no revocation, {mode}"] = (
            lambda m=mode: verify_certificate(leaf, [], plain[m],
                                              revocation=RevocationSettings(crl=False)))
        cases[f"uploaded CRL, {mode}"] = (
            lambda m=mode: verify_certificate(leaf, [], with_crl[m]))
        cases[f"OCSP cache hit, {mode}"] = (
            lambda m=mode: verify_certificate(leaf, [], store_for_ocsp[m], revocation=ocsp_on,
                                              fetch=fetch, cache=cache))
    raw = openssl_verify_rate(args.key_kind, max(1, int(args.seconds)))
    print(f"key {args.key_kind}; chain root → issuing → user; {args.seconds:.0f} s per case")
    print(f"openssl speed {args.key_kind} verify/s: {raw:.0f}" if raw else
          "openssl speed: not available")
    print(f"{'case':<30}{'chains/s':>10}{'ms/path':>9}{'ratio to raw verify':>22}")
    for name, fn in cases.items():
        r = rate(fn, args.seconds)
        ratio = f"{r / raw:.4f}" if raw else "-"
        print(f"{name:<30}{r:>10.0f}{1000 / r:>9.2f}{ratio:>22}")
    print(f"OCSP fetches during the cached runs: {hits['n'] - 1}")


if __name__ == "__main__":
    main()
