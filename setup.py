"""Build hook: ship the top-level config/ and migrations/ folders as package data.

They stay canonical at the top of the repository (operators and Alembic users expect them
there); a wheel gets a copy under broker/_shipped/ made at build time, never by hand.
See broker/shipped.py for how the broker finds them at run time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG_FILES = ("broker.toml", "regions.toml", "demo.toml")


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders directly
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "broker" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)
        (target / "config").mkdir(parents=True)
        for name in CONFIG_FILES:
            shutil.copy2(root / "config" / name, target / "config" / name)
        shutil.copytree(root / "migrations", target / "migrations",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithShippedFiles})
