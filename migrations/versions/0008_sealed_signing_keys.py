"""signing keys sealed at rest

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:10:00

The ES256 private keys in ``signing_keys.private_pem`` were plain PEM: anyone able to read the
database (a backup, a SQLite file another local user can read) could forge session tickets.
The upgrade seals every plain key with AES-256-GCM under the key outside the database
(``keys.encryption_key_file``, see broker.keys_at_rest), handed in by ``broker migrate`` as
``config.attributes["sealing_key"]``; the downgrade opens them again. No schema change: a
sealed value starts with ``sbk1:``, a plain one with ``-----BEGIN``, and the broker reads both.

Without a sealing key (``broker.store.migrate.upgrade`` called with none) an upgrade of a
database holding plain keys stops and says so rather than leave them plain behind the
operator's back; a downgrade holding sealed keys likewise.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_keys = sa.table("signing_keys", sa.column("kid", sa.String),
                 sa.column("private_pem", sa.LargeBinary))


def _rows() -> list[tuple[str, bytes]]:
    return [(kid, bytes(pem)) for kid, pem in
            op.get_bind().execute(sa.select(_keys.c.kid, _keys.c.private_pem)).all()]


def _sealing_key(needed_for: int, what: str) -> bytes:
    key = context.config.attributes.get("sealing_key")
    if key is None and needed_for:
        raise RuntimeError(f"{needed_for} signing key(s) to {what} and no sealing key: run "
                           "`broker migrate` (it reads keys.encryption_key_file)")
    return key  # type: ignore[no-any-return]


def upgrade() -> None:
    from broker.keys_at_rest import is_sealed, seal

    plain = [(kid, pem) for kid, pem in _rows() if not is_sealed(pem)]
    key = _sealing_key(len(plain), "encrypt")
    for kid, pem in plain:
        op.get_bind().execute(_keys.update().where(_keys.c.kid == kid)
                              .values(private_pem=seal(key, kid, pem)))


def downgrade() -> None:
    from broker.keys_at_rest import is_sealed, unseal

    sealed = [(kid, pem) for kid, pem in _rows() if is_sealed(pem)]
    key = _sealing_key(len(sealed), "decrypt")
    for kid, pem in sealed:
        op.get_bind().execute(_keys.update().where(_keys.c.kid == kid)
                              .values(private_pem=unseal(key, kid, pem)))
