"""CRLs: the certificate revocation lists an admin uploads for a directory; add, list,
remove."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.admin.common import (
    DIR_404,
    DIRECTORY_PATH,
    READ,
    WRITE,
    list_rows,
    refused_as_service_error,
    remove_by_fingerprint,
)
from broker.admin.fields import CliSpec, ConsoleSpec, Field, out_field, time_field
from broker.admin.framework import Operation, Resource
from broker.codes import Code
from broker.pki.parsing import crl_fingerprint, read_crl
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.lookups import get_directory_row
from broker.store.models import Crl

#: A CRL whose nextUpdate is closer than this is warned about.
CRL_DUE_WARNING = timedelta(hours=24)


def crl_row(directory_id: str, crl: x509.CertificateRevocationList) -> Crl:
    return Crl(directory_id=directory_id, issuer=crl.issuer.rfc4514_string(),
               fingerprint=crl_fingerprint(crl), this_update=crl.last_update_utc,
               next_update=crl.next_update_utc, der=crl.public_bytes(serialization.Encoding.DER))


def add_crl(session: Session, directory_id: str, text: str, actor: str) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    with refused_as_service_error():
        crl = read_crl(text.encode())
    row = crl_row(directory_id, crl)
    if session.scalar(select(Crl.id).where(Crl.directory_id == directory_id,
                                           Crl.fingerprint == row.fingerprint)) is not None:
        raise ServiceError(Code.CONFLICT, "This CRL is already loaded.",
                           {"fingerprint": row.fingerprint})
    session.add(row)
    session.flush()
    audit.insert(session, "crl.add", "change", directory_id=directory_id, actor=actor,
                 crl_fingerprint=row.fingerprint, issuer=row.issuer)
    return CRLS.view(row)


CRLS: Resource = Resource(
    "crls", "CRL", "CRLs", "Certificate revocation lists of a directory.", Crl, tag="trust",
    title="Crl",
    fields=(
        Field("crl", str, "CRL", "A PEM CRL, or a DER CRL in base64.", update=False,
              output=False, in_file=False, limits={"min_length": 1, "max_length": 60000},
              cli=CliSpec(name="crl-file", positional=True, input="file_b64")),
        out_field("directory", str, "Directory", column="directory_id"),
        out_field("issuer", str, "Issuer", "The CRL issuer's DN.", list_column=True),
        out_field("fingerprint", str, "Fingerprint", "SHA-256 of the CRL (hex).", list_column=True),
        time_field("this_update", "This update", "When the CRL was issued.",
                   console=ConsoleSpec(column=True)),
        time_field("next_update", "Next update", "When the next CRL is due.",
              console=ConsoleSpec(column=True, warn_within=CRL_DUE_WARNING),
                   list_column=True),
        time_field("created_at", "Added", "When it was loaded."),
    ),
    operations=(
        Operation("list", "GET", f"{DIRECTORY_PATH}/crls", READ,
                  lambda s, ctx, c: list_rows(CRLS, s, ctx, c),
                  "List CRLs with this_update and next_update.", out="page", errors=DIR_404),
        Operation("add", "POST", f"{DIRECTORY_PATH}/crls", WRITE,
                  lambda s, ctx, c: add_crl(s, c.path["directory_id"], c.body["crl"], c.actor),
                  "Upload a CRL (PEM, or base64 DER).", status=201, body="create",
                  errors=(*DIR_404, Code.CRL_UNREADABLE, Code.CONFLICT), audit="crl.add",
                  message="CRL {fingerprint} added to {directory_id}"),
        Operation("remove", "DELETE", f"{DIRECTORY_PATH}/crls/{{fingerprint}}", WRITE,
                  remove_by_fingerprint(Crl, "CRL", "crl.remove", "crl_fingerprint"),
                  "Remove a CRL by SHA-256 fingerprint.", status=204, out=None,
                  errors=(*DIR_404, Code.RESOURCE_NOT_FOUND), audit="crl.remove",
                  message="CRL {fingerprint} removed from {directory_id}"),
    ),
)
