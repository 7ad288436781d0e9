"""`broker pki verify`: verify a certificate with exactly the verifier the login path uses.

Exit status: 0 valid, 1 invalid (reason printed, or ``{"valid": false, "reason": …}`` with
--json), 2 usage error or unreadable input. Never a traceback, whatever the input.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from broker.pki.chain import TrustStore, verify_certificate
from broker.pki.errors import PkiError
from broker.pki.parsing import load_crl, load_pem_certificates
from broker.pki.policies import PolicyInputs
from broker.pki.profile import RELAXES, ProfileOptions
from broker.pki.revocation import RevocationSettings

MAX_INPUT = 4 * 1024 * 1024
MAX_DEPTH = 255


def _exit(code: int, as_json: bool, payload: dict[str, Any], text: str) -> NoReturn:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(text, err=code != 0)
    sys.exit(code)


def _read(path: str, as_json: bool) -> bytes:
    try:
        p = Path(path)
        if p.stat().st_size > MAX_INPUT:
            raise OSError(f"larger than {MAX_INPUT} bytes")
        return p.read_bytes()
    except OSError as exc:
        why = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        _exit(2, as_json, {"valid": False, "reason": "unreadable_input", "message": why},
              f"error: {why}")


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """Details as JSON: anything unusual becomes its string form."""
    return json.loads(json.dumps(details, default=str))


def _no_fetch(url: str, body: bytes | None, content_type: str | None, timeout: float) -> bytes:
    """The CLI checks only the CRLs it is given: no network."""
    from broker.pki.revocation import FetchError

    raise FetchError(f"not fetched: {url}")


@click.group()
def pki() -> None:
    """Certificate tools."""


@pki.command("verify")
@click.argument("leaf")
@click.option("--trust", "trust_paths", multiple=True, required=True,
              help="PEM file of trust anchors (repeatable).")
@click.option("--untrusted", "untrusted_paths", multiple=True,
              help="PEM file of intermediate certificates (repeatable).")
@click.option("--crl", "crl_paths", multiple=True, help="CRL file, PEM or DER (repeatable).")
@click.option("--at", "at_text", help="Validation time, ISO 8601 (default: now).")
@click.option("--purpose", type=click.Choice(["client-auth", "any"]), default="client-auth",
              show_default=True)
@click.option("--max-depth", type=click.IntRange(0, MAX_DEPTH), default=6, show_default=True,
              help="How many intermediate CAs may stand between LEAF and the trust anchor "
                   "(0-255; the leaf and the anchor are not counted, as in cryptography's "
                   "max_chain_depth).")
@click.option("--policy", "policies", multiple=True, metavar="OID",
              help="Initial policy set: a certificate policy the path must end in (repeatable; "
                   "e.g. 2.16.840.1.101.3.2.1.3.13). Implies --explicit-policy.")
@click.option("--explicit-policy", is_flag=True,
              help="initial-explicit-policy: the path must end with a valid policy.")
@click.option("--inhibit-policy-mapping", is_flag=True,
              help="initial-policy-mapping-inhibit: no policy mapping (bridge CAs) allowed.")
@click.option("--inhibit-any-policy", is_flag=True,
              help="initial-any-policy-inhibit: anyPolicy in CA certificates is not honoured.")
@click.option("--relax", "relax", multiple=True, type=click.Choice(sorted(RELAXES)),
              help="Turn on a directory profile relaxation of the same name (repeatable; "
                   "default: the strict RFC 5280 profile).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(leaf: str, trust_paths: tuple[str, ...], untrusted_paths: tuple[str, ...],
           crl_paths: tuple[str, ...], at_text: str | None, purpose: str, max_depth: int,
           policies: tuple[str, ...], explicit_policy: bool, inhibit_policy_mapping: bool,
           inhibit_any_policy: bool, relax: tuple[str, ...], as_json: bool) -> None:
    """Verify LEAF (PEM or DER) against --trust anchors.

    Exit 0 valid, 1 invalid (the reason code is printed), 2 unusable input or usage.
    """
    try:
        policy = PolicyInputs.of(policies, explicit=explicit_policy,
                                 mapping_inhibit=inhibit_policy_mapping,
                                 any_policy_inhibit=inhibit_any_policy)
    except PkiError as exc:
        _exit(2, as_json, {"valid": False, "reason": "usage", "message": exc.message},
              f"error: --policy: {exc.message}")
    at = None
    if at_text:
        try:
            at = dt.datetime.fromisoformat(at_text.replace("Z", "+00:00"))
        except ValueError:
            _exit(2, as_json, {"valid": False, "reason": "usage",
                               "message": f"--at is not an ISO 8601 time: {at_text!r}"},
                  f"error: --at is not an ISO 8601 time: {at_text!r}")
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
    try:
        leaf_data = _read(leaf, as_json)
        leaf_certs = load_pem_certificates(leaf_data)
        anchors = [c for p in trust_paths for c in load_pem_certificates(_read(p, as_json))]
        untrusted = [c for p in untrusted_paths
                     for c in load_pem_certificates(_read(p, as_json))]
        crls = [load_crl(_read(p, as_json)) for p in crl_paths]
    except PkiError as exc:
        # Well-formed DER that the parser refuses is an invalid certificate (exit 1);
        # only input that is not a certificate or CRL at all is unusable (exit 2).
        if exc.details.get("well_formed"):
            _exit(1, as_json, {"valid": False, "reason": exc.code, "message": exc.message},
                  f"invalid: {exc.code}: {exc.message}")
        _exit(2, as_json, {"valid": False, "reason": exc.code, "message": exc.message},
              f"error: {exc.message}")
    # A leaf file holding a bundle: the first certificate is the leaf, the rest intermediates.
    leaf_cert, extra = leaf_certs[0], leaf_certs[1:]
    # --untrusted files are the operator's, like a directory's intermediates: not the card's
    # chain, whose length a login bounds (MAX_CHAIN), so a --max-depth 255 path can be given.
    store = TrustStore(anchors, untrusted, crls)
    try:
        result = verify_certificate(leaf_cert, extra, store, at=at, purpose=purpose,
                                    max_depth=max_depth,
                                    # Certificates without a given CRL are reported, not failed.
                                    revocation=RevocationSettings(crl=bool(crls), ocsp=False,
                                                                  fail_mode="soft"),
                                    fetch=_no_fetch, policy=policy,
                                    profile_options=ProfileOptions(**dict.fromkeys(relax, True)))
    except PkiError as exc:
        _exit(1, as_json, {"valid": False, "reason": exc.code, "message": exc.message,
                           "details": _plain(exc.details)},
              f"invalid: {exc.code}: {exc.message}")
    except (ValueError, TypeError) as exc:  # e.g. a key type OpenSSL cannot load
        _exit(1, as_json, {"valid": False, "reason": "certificate_malformed",
                           "message": str(exc)[:200]},
              f"invalid: certificate_malformed: {str(exc)[:200]}")
    payload = {"valid": True, "subject": result.identity.subject,
               "chain": [c.subject.rfc4514_string() for c in result.chain],
               "revocation": result.revocation_status,
               "revocation_not_established": result.soft_fail_reasons,
               "policies": result.policies,
               "evidence": result.evidence(),
               "identity": result.identity.as_dict()}
    text = "valid: " + " → ".join(c.subject.rfc4514_string() for c in result.chain)
    if result.revocation_status == "soft_fail":
        # Soft-fail accepts, but the reader must see that revocation was not established.
        text += ("\nwarning: revocation status NOT established (soft-fail, accepted anyway): "
                 + "; ".join(result.soft_fail_reasons))
    elif result.revocation_status == "not_checked":
        text += "\nrevocation: not checked (no CRL given)"
    else:
        text += f"\nrevocation: {result.revocation_status}"
    if result.policies:
        text += "\npolicies: " + ", ".join(result.policies)
    for warning in result.profile_warnings:
        text += f"\nwarning: {warning}"
    _exit(0, as_json, payload, text)
