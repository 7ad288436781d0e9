"""Trust: the anchors and intermediate CA certificates of a directory; add (each judged with
the PKI profile, broker.pki.parsing.check_ca_upload), list, remove."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from broker import kinds
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
from broker.admin.pagination import Filter
from broker.codes import Code
from broker.pki import profile
from broker.pki.parsing import cert_fingerprint, check_ca_upload, read_certificates
from broker.pki.settings import row_profile_options
from broker.service import audit
from broker.service.coverage import directory_gaps
from broker.service.errors import ServiceError
from broker.service.lookups import get_directory_row
from broker.store.models import Directory, TrustCertificate

#: Trust anchors and intermediates expiring sooner than this are warned about.
CA_EXPIRY_WARNING = timedelta(days=30)


def _ca_warnings(t: TrustCertificate, ctx: Any) -> list[str]:
    session = object_session(t)
    d = session.get(Directory, t.directory_id) if session is not None else None
    out = profile.check_ca_upload(t.der, row_profile_options(d))[1]
    if session is not None and t.kind == kinds.TrustKind.INTERMEDIATE:
        subject = f"CA {t.subject}:"
        out += [g["message"] for g in directory_gaps(session, t.directory_id,
                                                     datetime.now(UTC))
                if subject in g["message"]]
    return out


def trust_row(directory_id: str, cert: x509.Certificate, kind: str | None) -> TrustCertificate:
    return TrustCertificate(
        directory_id=directory_id,
        kind=kind or ("anchor" if cert.issuer == cert.subject else "intermediate"),
        subject=cert.subject.rfc4514_string(), fingerprint=cert_fingerprint(cert),
        not_after=cert.not_valid_after_utc, der=cert.public_bytes(serialization.Encoding.DER))


def add_trust(session: Session, directory_id: str, pem: str, kind: str | None,
              actor: str) -> list[dict[str, Any]]:
    """Add the CA certificate(s) in ``pem`` as anchors or intermediates.

    certificate_unreadable when it does not parse, certificate_not_ca when one lacks
    basicConstraints CA=true, conflict when one is already there.
    """
    options = row_profile_options(get_directory_row(session, directory_id))
    added: list[TrustCertificate] = []
    with refused_as_service_error():
        certs = read_certificates(pem.encode())
        for cert in certs:
            check_ca_upload(cert, options)
    for cert in certs:
        row = trust_row(directory_id, cert, kind)
        exists = session.scalar(select(TrustCertificate.id).where(
            TrustCertificate.directory_id == directory_id,
            TrustCertificate.fingerprint == row.fingerprint))
        if exists is not None or row.fingerprint in {r.fingerprint for r in added}:
            raise ServiceError(Code.CONFLICT,
                               "This certificate is already trusted by the directory.",
                               {"fingerprint": row.fingerprint})
        session.add(row)
        added.append(row)
    session.flush()
    for row in added:
        audit.insert(session, "trust.add", "change", directory_id=directory_id, actor=actor,
                     cert_fingerprint=row.fingerprint, trust_kind=row.kind)
    return [TRUST.view(r) for r in added]


TRUST: Resource = Resource(
    "trust", "trust certificate", "Trust", "Trust anchors and intermediate CA certificates of "
    "a directory.", TrustCertificate, tag="trust", title="Trust",
    fields=(
        Field("pem", str, "Certificates", "One or more PEM certificates (or one base64 DER "
              "certificate).", update=False, output=False, in_file=False,
              limits={"min_length": 1, "max_length": 60000},
              cli=CliSpec(name="pem-file", positional=True, input="file")),
        Field("kind", str, "Kind", "anchor or intermediate; by default a self-issued "
              "certificate is an anchor, others intermediates.",
              choices=kinds.values(kinds.TrustKind),
              nullable=True, default=None, update=False, in_file=False, list_column=True),
        out_field("directory", str, "Directory", column="directory_id"),
        out_field("subject", str, "Subject", "The certificate's subject DN.", list_column=True),
        out_field("fingerprint", str, "Fingerprint", "SHA-256 of the certificate (hex).",
             list_column=True),
        time_field("not_after", "Expires", "End of the certificate's validity.",
              console=ConsoleSpec(column=True, warn_within=CA_EXPIRY_WARNING)),
        out_field("warnings", list[str], "Warnings", "RFC 5280 recommendations this CA "
             "certificate does not follow (accepted, shown).", read=_ca_warnings),
        time_field("created_at", "Added", "When it was added."),
    ),
    operations=(
        Operation("list", "GET", f"{DIRECTORY_PATH}/trust", READ,
                  lambda s, ctx, c: list_rows(TRUST, s, ctx, c),
                  "List trust anchors and intermediates.", out="page", errors=DIR_404,
                  filters=(Filter("kind", "anchor or intermediate.",
                                  choices=kinds.values(kinds.TrustKind),
                                  column=TrustCertificate.kind),)),
        Operation("add", "POST", f"{DIRECTORY_PATH}/trust", WRITE,
                  lambda s, ctx, c: add_trust(s, c.path["directory_id"], c.body["pem"],
                                              c.body.get("kind"), c.actor),
                  "Add CA certificates (PEM) as trust anchors or intermediates.", status=201,
                  body="create", out="items",
                  errors=(*DIR_404, Code.CERTIFICATE_UNREADABLE, Code.CERTIFICATE_NOT_CA,
                          Code.CERTIFICATE_PROFILE_INVALID, Code.CONFLICT),
                  audit="trust.add"),
        Operation("remove", "DELETE", f"{DIRECTORY_PATH}/trust/{{fingerprint}}", WRITE,
                  remove_by_fingerprint(TrustCertificate, "trusted certificate", "trust.remove",
                                         "cert_fingerprint"),
                  "Remove a trusted certificate by SHA-256 fingerprint.", status=204, out=None,
                  errors=(*DIR_404, Code.RESOURCE_NOT_FOUND), audit="trust.remove",
                  message="certificate {fingerprint} removed from {directory_id}"),
    ),
)
