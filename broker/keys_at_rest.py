"""The key that encrypts the ticket-signing keys in the database (keys at rest).

The ES256 private keys live in the ``signing_keys`` table so every broker process signs with
the same key; a copy of the database (a backup, a SQLite file another local user can read, a
PostgreSQL dump) must not be enough to forge session tickets. Each private key is therefore
stored sealed with AES-256-GCM (``cryptography``), its key id as associated data, under a
32-byte key kept *outside* the database:

* ``keys.encryption_key_file`` (or ``BROKER_KEYS_ENCRYPTION_KEY_FILE``): a file holding the key
  in base64 — every node of a cluster needs the same file;
* otherwise ``<state folder>/keys/signing-keys.key``, generated at the first start (folder 0700,
  file 0600 whatever the umask).

A sealed value is ``sbk1:`` + 12-byte nonce + ciphertext. A value that is still a PEM (from
before revision 0008 encrypted them) is read as it is.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from broker.codes import Code
from broker.errors import BrokerError

if TYPE_CHECKING:
    from broker.config import Settings

MAGIC = b"sbk1:"
KEY_BYTES = 32
DEFAULT_NAME = Path("keys") / "signing-keys.key"


class KeyFileError(BrokerError):
    code = Code.KEY_FILE_INVALID


def key_file_path(settings: Settings) -> tuple[Path, bool]:
    """(the key file, whether it was configured)."""
    if settings.keys.encryption_key_file:
        return settings.path(settings.keys.encryption_key_file), True
    return settings.state_path / DEFAULT_NAME, False


def read_key(path: Path) -> bytes:
    """The key in ``path``; KeyFileError with one line when it is missing or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyFileError(message=f"keys.encryption_key_file {path}: {exc.strerror}") \
            from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise KeyFileError(message=f"keys.encryption_key_file {path}: not a regular file")
        raw = f.read(4096)
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(message=f"keys.encryption_key_file {path}: must hold {KEY_BYTES} "
                                   "random bytes in base64 (e.g. `head -c 32 /dev/urandom | "
                                   "base64`)")
    return key


def load_key(settings: Settings, *, create: bool = True) -> bytes:
    """The encryption key: the configured file, or the state folder's (made when missing and
    ``create``). A configured file is never created: its absence is an error."""
    from broker.private_files import create_private

    path, configured = key_file_path(settings)
    if not configured and create and not path.exists():
        encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n"
        create_private(path, encoded)  # O_EXCL: a concurrent first start keeps the winner's
    return read_key(path)


def seal(key: bytes, kid: str, pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, pem, kid.encode())


def is_sealed(value: bytes) -> bool:
    return bytes(value).startswith(MAGIC)


def unseal(key: bytes, kid: str, value: bytes) -> bytes:
    """The PEM of a stored private key (a legacy plain PEM as it is)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    value = bytes(value)
    if not is_sealed(value):
        if value.startswith(b"-----BEGIN"):
            return value
        raise KeyFileError(message=f"signing key {kid}: stored in an unknown form")
    body = value[len(MAGIC):]
    try:
        return AESGCM(key).decrypt(body[:12], body[12:], kid.encode())
    except (InvalidTag, ValueError):
        raise KeyFileError(message=f"signing key {kid} does not decrypt with this broker's "
                                   "keys.encryption_key_file: every node needs the same key "
                                   "file") from None
