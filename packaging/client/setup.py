"""The client-only distribution, smartcard-broker-client: ``broker-client`` and the modules it
imports (listed in MODULES), taken from the repository's broker/ at build time.

Extras can only add to a distribution, so a client without the server stack is a distribution
of its own. It has the same version as smartcard-broker; install one or the other (the full
smartcard-broker already contains broker-client).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: setuptools wants a relative source folder; the repository root, seen from here.
SOURCE = os.path.relpath(ROOT, HERE)


def listed() -> list[str]:
    return [line.strip() for line in (HERE / "MODULES").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def wanted(module: str) -> bool:
    for entry in listed():
        if entry.endswith(".*") and module.startswith(entry[:-1]):
            return True
        if module == entry or module == entry + ".__init__":
            return True
    return False


class ClientModulesOnly(build_py):
    """Only the listed modules of each package (broker/ itself holds the server's too)."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        return [m for m in super().find_package_modules(package, package_dir)
                if wanted(f"{m[0]}.{m[1]}")]


main = configparser.ConfigParser()
main.read(ROOT / "setup.cfg")

setup(
    name="smartcard-broker-client",
    version=main["metadata"]["version"],
    description="broker-client alone: smart-card login to a smartcard-broker, without the "
                "server stack",
    license=main["metadata"]["license"],
    python_requires=main["options"]["python_requires"],
    package_dir={"": SOURCE},
    packages=["broker", "broker.client", "broker.cardsim"],
    install_requires=["click>=8.1", "cryptography>=42", "joserfc>=1.0"],
    # the same card extra as smartcard-broker's (pyscard, and python-pkcs11 for other cards)
    extras_require={"card": main["options.extras_require"]["card"].split()},
    entry_points={"console_scripts": ["broker-client = broker.client.cli:main"]},
    cmdclass={"build_py": ClientModulesOnly},
)
