"""``broker admin export``: directories as declarative-file documents (the declarative
directory file that :mod:`broker.service.directories` applies), trust material as PEM
files beside it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import kinds
from broker.admin.directories import DIRECTORIES
from broker.admin.users import USERS
from broker.admin.workspaces import WORKSPACES
from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import CodeState
from broker.service.directories import rows_of
from broker.store import models as db


def export_directory(session: Session, directory_id: str, pki_dir: Path,
                     relative_to: Path, *, codes: bool = True) -> dict[str, Any]:
    """The directory as a declarative-file document; trust material written as PEM files.

    ``codes``: the active registration codes themselves (live: whoever holds the file can
    register clients), else only how many there are (an apply then keeps the directory's own
    codes and issues new ones only where it has fewer)."""
    d = session.get(db.Directory, directory_id)
    if d is None:
        raise BrokerError(Code.DIRECTORY_UNKNOWN, f"no directory {directory_id!r}",
                          {"directory_id": directory_id})
    pki_dir.mkdir(parents=True, exist_ok=True)

    def write_pem(name: str, data: bytes) -> str:
        target = pki_dir / name
        target.write_bytes(data)
        try:
            return str(target.relative_to(relative_to))
        except ValueError:
            return str(target)

    doc: dict[str, Any] = {**DIRECTORIES.file_entry(d), "trust_anchors": [],
                           "intermediates": [], "crls": []}
    ldap = doc.pop("ldap", None) or {}
    if ldap.get("url"):  # a local directory's file has no [directory.ldap] table
        doc["ldap"] = {k: v for k, v in ldap.items() if v is not None}
    for t in rows_of(session, db.TrustCertificate, d.id):
        cert = x509.load_der_x509_certificate(t.der)
        key = "trust_anchors" if t.kind == kinds.TrustKind.ANCHOR else "intermediates"
        doc[key].append(write_pem(f"{t.kind}-{t.fingerprint[:16]}.pem",
                                  cert.public_bytes(serialization.Encoding.PEM)))
    for c in rows_of(session, db.Crl, d.id):
        crl = x509.load_der_x509_crl(c.der)
        doc["crls"].append(write_pem(f"crl-{c.fingerprint[:16]}.pem",
                                     crl.public_bytes(serialization.Encoding.PEM)))
    active = list(session.scalars(select(db.RegistrationCode.code).where(
        db.RegistrationCode.directory_id == d.id, db.RegistrationCode.state == CodeState.ACTIVE)
        .order_by(db.RegistrationCode.id)))
    doc["registration_codes"] = active if codes else len(active)
    doc["user"] = []
    # An LDAP directory's user rows are only names (its WorkSpaces' owners): not exported.
    for u in rows_of(session, db.User, d.id) if not d.ldap_url else ():
        entry = {k: v for k, v in USERS.file_entry(u).items() if v not in (None, False)}
        if d.password_login and u.password_hash:
            # The file format allows passwords only where login uses them.
            entry["password_hash"] = u.password_hash
        doc["user"].append(entry)
    # TOML has no null: a value not stated (a WorkSpace's os) is left out, as in the file.
    doc["workspace"] = [{k: v for k, v in WORKSPACES.file_entry(w).items() if v is not None}
                        for w in rows_of(session, db.WorkSpace, d.id)]
    return doc


def export_text(docs: list[dict[str, Any]]) -> str:
    import tomli_w

    header = (f"# Exported by smartcard-broker on {datetime.now(UTC).isoformat(timespec='seconds')}"
              "\n# Apply with: broker admin apply THIS_FILE.toml\n\n")
    return header + tomli_w.dumps({"directory": docs})
