"""Files that ship with the broker: the region catalogue, the documented broker.toml, the demo
directory file and the Alembic migrations.

The repository keeps them in its top-level ``config/`` and ``migrations/`` folders (the canonical
copies). A wheel carries them as package data under ``broker/_shipped/`` (copied there at build
time by ``setup.py``), so an installed broker finds them without a checkout; a checkout or an
editable install reads the top-level folders directly. There is never a second copy to maintain.
"""

from __future__ import annotations

from pathlib import Path

from broker.codes import Code
from broker.errors import BrokerError

_PACKAGE = Path(__file__).resolve().parent
#: Where a wheel puts the shipped files (see setup.py).
PACKAGED = _PACKAGE / "_shipped"
#: The repository root, when running from a checkout or an editable install.
CHECKOUT = _PACKAGE.parent

#: Top-level folders (and, for config/, the files) that are shipped.
SHIPPED_CONFIG_FILES = ("broker.toml", "regions.toml", "demo.toml")
SHIPPED_FOLDERS = ("config", "migrations")


class ShippedFileMissing(BrokerError):
    code = Code.CONFIG_INVALID


def shipped_path(folder: str, name: str = "") -> Path:
    """The path of a shipped file or folder (``shipped_path("config", "regions.toml")``).

    Raises ShippedFileMissing when neither the package nor a checkout has it (a broken install).
    """
    for root in (PACKAGED, CHECKOUT):
        candidate = root / folder / name if name else root / folder
        if candidate.exists():
            return candidate
    raise ShippedFileMissing(
        message=f"broken installation: {folder}/{name} is neither in the package ({PACKAGED}) "
                f"nor in a checkout ({CHECKOUT}); reinstall smartcard-broker")


def migrations_dir() -> Path:
    return shipped_path("migrations")


def default_catalogue() -> Path:
    return shipped_path("config", "regions.toml")
