"""``broker-client card-sim {piv|cac|openpgp}``: a virtual card in vpcd's reader until stopped.

With no ``--key``/``--cert`` it issues a demo chain (root → issuing CA → user) and writes the
user certificate, the issuing CA and the root as PEM to ``--out``. Keys never leave the process
except a demo key written to ``--out`` as ``user.key.pem`` (it is a throwaway test key).
"""

from __future__ import annotations

import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.cardsim.cac import CacCard
from broker.cardsim.card import VirtualCard
from broker.cardsim.openpgp import OpenPgpCard
from broker.cardsim.piv import KeySlot, PivCard
from broker.cardsim.vpcd import DEFAULT_PORT, VpcdLink

KEY_KINDS = ("rsa-2048", "ec-p256", "ec-p384")


def parse_endpoint(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); click.BadParameter when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _load_key_and_cert(key_path: Path, cert_path: Path) -> tuple[Any, x509.Certificate]:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        raise click.BadParameter("the certificate does not belong to the key", param_hint="--cert")
    return key, cert


def _demo_slots(kind: str, key_kind: str, out: Path, card_uuid: uuid.UUID) -> list[KeySlot]:
    try:  # the broker's PKI code: absent from the client-only distribution
        from broker.pki import issue
    except ImportError:
        raise click.UsageError(
            "issuing the demo certificates needs the full smartcard-broker package (this is "
            "the client-only install); pass --key and --cert instead.") from None

    root = issue.make_root("Card-Sim Demo Root CA", key_kind)
    inter = issue.make_intermediate(root, "Card-Sim Demo Issuing CA", key_kind)
    user = issue.make_user_cert(inter, "demo.user", key_kind, upn="demo.user@corp.example",
                                email="demo.user@corp.example",
                                fasc_n=bytes.fromhex("d4e739da739ced39ce739d836858210842108421"
                                                     "c84210c3eb"),
                                card_uuid=str(card_uuid))
    out.mkdir(parents=True, exist_ok=True)
    (out / "user.pem").write_bytes(user.cert_pem())
    (out / "user.key.pem").write_bytes(user.key_pem())
    (out / "ca.pem").write_bytes(inter.cert_pem())
    (out / "root.pem").write_bytes(root.cert_pem())
    (out / "chain.pem").write_bytes(inter.cert_pem() + root.cert_pem())
    slots = [KeySlot(user.key, user.cert)]
    if kind == "cac":  # a CAC carries signature and encryption certificates too
        for cn in ("demo.user (signature)", "demo.user (encryption)"):
            extra = issue.make_user_cert(inter, cn, key_kind, email="demo.user@corp.example",
                                         eku=("email-protection",))
            slots.append(KeySlot(extra.key, extra.cert))
    return slots


@click.command("card-sim")
@click.argument("kind", type=click.Choice(["piv", "cac", "openpgp"]))
@click.option("--pin", default="123456", show_default=True, help="PIN (6-8 digits).")
@click.option("--puk", default="12345678", show_default=True,
              help="PUK (8 digits); the admin PIN (PW3) of an openpgp card.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key for the authentication slot (with --cert).")
@click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate for --key.")
@click.option("--key-kind", type=click.Choice(KEY_KINDS), default=None,
              help="Demo key type [default: ec-p256 for piv, rsa-2048 for cac].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the demo certificates go [default: a new temporary folder].")
@click.option("--vpcd", "vpcd", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True,
              help="vpcd endpoint HOST:PORT (35963 = 'Virtual PCD 00 00', 35964 = '00 01').")
@click.option("--dual", is_flag=True, help="cac only: also carry a PIV applet (same keys).")
def card_sim(kind: str, pin: str, puk: str, key_path: Path | None, cert_path: Path | None,
             key_kind: str | None, out: Path | None, vpcd: str, dual: bool) -> None:
    """Put a virtual PIV, CAC or OpenPGP card into pcscd's vpcd reader until Ctrl-C / SIGTERM.

    The OpenPGP card stands for the cards that are neither PIV nor CAC: broker-client uses it
    through OpenSC's PKCS#11 module (unless --strict-card-types)."""
    if (key_path is None) != (cert_path is None):
        raise click.UsageError("give --key and --cert together, or neither")
    if not (pin.isdigit() and 6 <= len(pin) <= 8):
        raise click.BadParameter("the PIN is 6 to 8 digits", param_hint="--pin")
    if not (puk.isdigit() and len(puk) == 8):
        raise click.BadParameter("the PUK is 8 digits", param_hint="--puk")
    host, port = parse_endpoint(vpcd)
    card_uuid = uuid.uuid4()
    if key_path is not None and cert_path is not None:
        key, cert = _load_key_and_cert(key_path, cert_path)
        slots = [KeySlot(key, cert)]
    else:
        kind_of_key = key_kind or ("rsa-2048" if kind == "cac" else "ec-p256")
        folder = out or Path(tempfile.mkdtemp(prefix="card-sim-"))
        slots = _demo_slots(kind, kind_of_key, folder, card_uuid)
        click.echo(f"demo certificates in {folder}: user.pem, ca.pem, root.pem, chain.pem")
    if kind == "cac" and not all(isinstance(s.key, rsa.RSAPrivateKey) for s in slots):
        click.echo("note: OpenSC's CAC driver signs with RSA keys only; EC works with "
                   "broker-client alone", err=True)
    card: VirtualCard
    if kind == "piv":
        card = PivCard(slots[0].key, slots[0].certificate, pin=pin, puk=puk,
                       card_uuid=card_uuid.bytes)
    elif kind == "openpgp":
        assert slots[0].certificate is not None
        card = OpenPgpCard(slots[0].key, slots[0].certificate, pin=pin, admin_pin=puk)
    else:
        card = CacCard(*slots[:3], pin=pin, puk=puk, dual=dual, card_uuid=card_uuid.bytes)
    shown = slots[0].certificate
    assert shown is not None
    click.echo(f"{kind.upper()} card: {shown.subject.rfc4514_string()} "
               f"(SHA-256 {shown.fingerprint(hashes.SHA256()).hex()[:16]}…)")

    def on_state(connected: bool) -> None:
        if connected:
            click.echo(f"connected: card inserted in reader '{link.reader}' "
                       f"(vpcd {host}:{port})")
        elif not done.is_set():
            click.echo("disconnected from vpcd; retrying until pcscd is back")

    link = VpcdLink(card, host, port, on_state=on_state)
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT,
                                                                    signal.SIGTERM)}
    click.echo(f"waiting for vpcd at {host}:{port} (reader '{link.reader}'); Ctrl-C stops")
    link.start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        link.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        click.echo(f"stopped ({card.stats.apdus} APDUs, {card.stats.bytes_in} bytes in, "
                   f"{card.stats.bytes_out} bytes out)")
