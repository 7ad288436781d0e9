"""PKI verification for smart-card logins: chains, revocation, identity, signatures (pure)."""

from broker.pki.chain import TrustStore, verify_certificate
from broker.pki.errors import PkiError
from broker.pki.parsing import load_pem_certificates, parse_certificate
from broker.pki.revocation import RevocationCache, RevocationSettings
from broker.pki.verdicts import VerificationCache, VerificationResult

__all__ = ["PkiError", "RevocationCache", "RevocationSettings", "TrustStore",
           "VerificationCache", "VerificationResult", "load_pem_certificates", "parse_certificate",
           "verify_certificate"]
