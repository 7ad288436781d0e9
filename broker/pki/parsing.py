"""Reading certificates and CRLs (pure): the strict parsers of the login path (DER or PEM,
bounded, names read at once) and the lenient readers of what an admin uploads or a directory
file names (a PEM bundle, or one DER object raw or in base64), with the fingerprints and the CA
check both need. Every failure is a PkiError with a stable code.
"""

from __future__ import annotations

import base64
import binascii
import re

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from broker.codes import Code
from broker.pki import profile
from broker.pki.errors import MALFORMED_DER, PkiError

MAX_CERT_BYTES = 64 * 1024


def _signed_structure(data: bytes) -> bool:
    """``data`` (PEM or DER) frames an ASN.1 SIGNED{...} sequence: tbs, algorithm, signature.

    Tells a well-formed object the parser refuses (an invalid certificate: exit 1, a refusal)
    from bytes that are no certificate or CRL at all (unusable input).
    """
    der = bytes(data)
    if der.lstrip().startswith(b"-----BEGIN"):
        m = re.search(rb"-----BEGIN [A-Z0-9 ]+-----(.*?)-----END", der, re.S)
        try:
            der = base64.b64decode(b"".join(m.group(1).split()), validate=True) if m else b""
        except binascii.Error:
            return False
    try:
        seq = asn1_core.Sequence.load(der, strict=True)
        return len(seq) == 3 and all(seq[i].contents is not None for i in range(3))
    except (ValueError, TypeError, IndexError):
        return False


def parse_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from DER or PEM bytes; PkiError certificate_malformed otherwise."""
    if isinstance(data, x509.Certificate):
        return data
    if not isinstance(data, bytes | bytearray) or not data:
        raise PkiError(Code.CERTIFICATE_MALFORMED, "No certificate was given.")
    if len(data) > MAX_CERT_BYTES:
        raise PkiError(Code.CERTIFICATE_MALFORMED, "The certificate is too large.")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(bytes(data))
        else:
            cert = x509.load_der_x509_certificate(bytes(data))
        # cryptography parses names lazily; read them now so a bad one fails here, once
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        return cert
    except MALFORMED_DER as exc:
        raise PkiError(Code.CERTIFICATE_MALFORMED, f"The certificate cannot be parsed: "
                                                f"{str(exc)[:120]}",
                       {"well_formed": _signed_structure(bytes(data))}) from None


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or one DER certificate)."""
    if bytes(data).lstrip().startswith(b"-----BEGIN") or b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(bytes(data))
        except MALFORMED_DER as exc:
            raise PkiError(Code.CERTIFICATE_MALFORMED, f"No readable PEM certificate: "
                                                    f"{str(exc)[:120]}") from None
    return [parse_certificate(data)]


def load_crl(data: bytes | x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    if isinstance(data, x509.CertificateRevocationList):
        return data
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(bytes(data))
        return x509.load_der_x509_crl(bytes(data))
    except MALFORMED_DER as exc:
        raise PkiError(Code.CERTIFICATE_MALFORMED, f"The CRL cannot be parsed: "
                                                f"{str(exc)[:120]}",
                       {"well_formed": _signed_structure(bytes(data))}) from None


# --------------------------------------------------------------------------- uploads

def _maybe_base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return data  # raw DER


def read_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or one DER certificate, raw or base64);
    certificate_unreadable when there is none."""
    data = data.strip()
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(_maybe_base64(data))]
    except ValueError:
        raise PkiError(Code.CERTIFICATE_UNREADABLE,
                       "The upload is not a PEM certificate (or base64 DER).") from None
    if not certs:
        raise PkiError(Code.CERTIFICATE_UNREADABLE, "The upload holds no certificate.")
    return certs


def read_crl(data: bytes) -> x509.CertificateRevocationList:
    """A PEM CRL, or a DER CRL (raw or base64); crl_unreadable otherwise."""
    data = data.strip()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(_maybe_base64(data))
    except ValueError:
        raise PkiError(Code.CRL_UNREADABLE,
                       "The upload is not a PEM CRL (or base64 DER CRL).") from None


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA=true (a missing or malformed extension is not a CA)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return bool(bc.ca)


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER (hex)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def crl_fingerprint(crl: x509.CertificateRevocationList) -> str:
    """SHA-256 of the CRL's DER (hex)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(crl.public_bytes(serialization.Encoding.DER))
    return digest.finalize().hex()


def check_ca_upload(cert: x509.Certificate,
                    options: profile.ProfileOptions = profile.STRICT) -> list[str]:
    """Judge a CA certificate an admin uploads with the PKI profile
    (:func:`broker.pki.profile.check_ca_upload`): certificate_not_ca when it is no CA,
    certificate_profile_invalid naming every RFC 5280 MUST it breaks; else the SHOULDs it
    misses and the MUSTs the directory's profile ``options`` relax (accepted, shown as
    warnings)."""
    details = {"fingerprint": cert_fingerprint(cert), "subject": cert.subject.rfc4514_string()}
    if not is_ca(cert):
        raise PkiError(Code.CERTIFICATE_NOT_CA,
                       "The certificate is not a CA certificate (basicConstraints "
                       "CA=true is required for trust anchors and intermediates).", details)
    errors, warnings = profile.check_ca_upload(cert.public_bytes(serialization.Encoding.DER),
                                               options)
    if errors:
        raise PkiError(Code.CERTIFICATE_PROFILE_INVALID,
                       "The CA certificate breaks RFC 5280: " + " ".join(errors),
                       {**details, "reasons": errors})
    return warnings
