"""In-session browsers: register OpenSC's PKCS#11 module in the user's NSS database.

Does exactly what the WorkSpaces guide tells Linux users to run,
``modutil -dbdir sql:$HOME/.pki/nssdb/ -add "OpenSC" -libfile <opensc-pkcs11.so>``, idempotently,
and writes the Firefox enterprise policy (``SecurityDevices``) admins use to pre-enable it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from broker.client.errors import CardError

MODULE_NAME = "OpenSC"
CANDIDATES = ("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
              "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so", "/usr/lib64/opensc-pkcs11.so",
              "/lib64/opensc-pkcs11.so", "/usr/lib/opensc-pkcs11.so",
              "/usr/lib/pkcs11/opensc-pkcs11.so")


def find_opensc_module() -> str:
    for path in CANDIDATES:
        if Path(path).exists():
            return path
    raise CardError("opensc_missing", "opensc-pkcs11.so not found: install OpenSC "
                                      "(apt-get install opensc / dnf install opensc)")


def _modutil() -> str:
    tool = shutil.which("modutil")
    if tool is None:
        raise CardError("nss_tools_missing", "modutil not found: install the NSS tools "
                                             "(apt-get install libnss3-tools / nss-tools)")
    return tool


def register_opensc(dbdir: Path | None = None, module_path: str | None = None) -> str:
    """Add the OpenSC module to ``dbdir`` (default ~/.pki/nssdb); a second run changes nothing."""
    db = (dbdir or Path.home() / ".pki" / "nssdb").expanduser()
    module = module_path or find_opensc_module()
    modutil = _modutil()
    db.mkdir(parents=True, exist_ok=True)
    if not (db / "cert9.db").exists():
        certutil = shutil.which("certutil")
        if certutil is None:
            raise CardError("nss_tools_missing", "certutil not found: install the NSS tools")
        subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                       capture_output=True, timeout=60)
    listing = subprocess.run([modutil, "-dbdir", f"sql:{db}", "-list"], capture_output=True,
                             text=True, timeout=60)
    if f"Name: {MODULE_NAME}" in listing.stdout or f". {MODULE_NAME}" in listing.stdout:
        return f'Module "{MODULE_NAME}" is already in {db}.'
    proc = subprocess.run([modutil, "-dbdir", f"sql:{db}", "-add", MODULE_NAME, "-libfile",
                           module, "-force"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CardError("nss_setup_failed", f"modutil failed: {proc.stderr.strip()[:200]}")
    return f'Module "{MODULE_NAME}" added to database {db}.'


def write_firefox_policy(path: Path, module_path: str) -> None:
    """Merge SecurityDevices.Add.OpenSC into a Firefox policies.json without clobbering it."""
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise CardError("policy_invalid", f"{path} is not valid JSON; fix or move it") \
                from None
    policies = data.setdefault("policies", {})
    devices = policies.setdefault("SecurityDevices", {})
    devices.setdefault("Add", {})[MODULE_NAME] = module_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
