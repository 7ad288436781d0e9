"""In-session browsers: register OpenSC's PKCS#11 module in the user's NSS databases.

Does exactly what the WorkSpaces guide tells Linux users to run,
``modutil -dbdir sql:$HOME/.pki/nssdb/ -add "OpenSC" -libfile <opensc-pkcs11.so>`` (with
``-force`` so no prompt waits for Enter), idempotently, creating the database with
``certutil -N --empty-password`` when it is absent, and says what modutil says on success
(``Module "OpenSC" added to database.``). Firefox on Linux keeps its own NSS database in each
profile: :func:`firefox_profiles` finds them from ``profiles.ini``. The guide asks to close
Chrome first: :func:`holders` names the processes that have a database open, and a database
in use is refused unless forced. It also merges the Firefox enterprise policy
(``SecurityDevices``) admins use to pre-enable the module.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.client.errors import CardError

MODULE_NAME = "OpenSC"
TOOL_TIMEOUT_S = 60
# Debian/Ubuntu multiarch first, then the Fedora/RHEL and generic locations
CANDIDATES = ("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
              "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
              "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so",
              "/usr/lib64/opensc-pkcs11.so", "/usr/lib64/pkcs11/opensc-pkcs11.so",
              "/lib64/opensc-pkcs11.so", "/usr/lib/opensc-pkcs11.so",
              "/usr/lib/pkcs11/opensc-pkcs11.so", "/usr/local/lib/opensc-pkcs11.so")


#: What modutil prints when it added the module (the guide tells the user to look for it).
ADDED_LINE = f'Module "{MODULE_NAME}" added to database.'


class NssSetupError(CardError):
    code = "nss_setup_failed"


@dataclass(frozen=True)
class NssResult:
    dbdir: Path
    module_path: str
    added: bool  # False: it was already registered

    def __str__(self) -> str:
        if self.added:
            return f"{ADDED_LINE}\n   (database {self.dbdir}, library {self.module_path})"
        return f'Module "{MODULE_NAME}" is already registered in database {self.dbdir}.'


def firefox_profiles(home: Path | None = None) -> list[Path]:
    """The profile folders named by Firefox's ``profiles.ini`` (the classic location and the
    snap's), each an NSS database of its own; folders that do not exist are left out."""
    base = home or Path.home()
    found: list[Path] = []
    for root in (base / ".mozilla" / "firefox",
                 base / "snap" / "firefox" / "common" / ".mozilla" / "firefox"):
        ini = root / "profiles.ini"
        if not ini.is_file():
            continue
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(ini, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise NssSetupError(message=f"{ini} cannot be read: {exc}") from None
        for section in parser.sections():
            if not section.startswith("Profile") or not parser.has_option(section, "Path"):
                continue
            path = Path(parser.get(section, "Path"))
            if parser.get(section, "IsRelative", fallback="1").strip() != "0":
                path = root / path
            if path.is_dir() and path not in found:
                found.append(path)
    return found


def holders(dbdir: Path, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, command name) of every process with a file of ``dbdir`` open, as far as
    ``/proc`` lets this user see (a browser holds its NSS database open while it runs)."""
    db = dbdir.resolve()
    found: list[tuple[int, str]] = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue  # gone, or another user's
        if any(Path(t).parent == db for t in targets if t.startswith("/")):
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                name = "?"
            found.append((int(entry.name), name))
    return found


def refuse_if_in_use(dbdir: Path) -> None:
    """NssSetupError(nss_database_in_use) when a process has ``dbdir`` open."""
    if not dbdir.exists():
        return
    users = holders(dbdir)
    if users:
        names = ", ".join(f"{name} (pid {pid})" for pid, name in users)
        raise NssSetupError("nss_database_in_use",
                            f"{dbdir} is in use by {names}: close the browser (Chrome, "
                            "Firefox) and run this again, or use --force.")


def default_dbdir() -> Path:
    return Path.home() / ".pki" / "nssdb"


def find_opensc_module(candidates: tuple[str, ...] = CANDIDATES) -> str:
    """The first opensc-pkcs11.so found; CardError(opensc_missing) otherwise."""
    for path in candidates:
        if Path(path).is_file():
            return path
    raise CardError("opensc_missing", "opensc-pkcs11.so not found: install OpenSC "
                                      "(apt-get install opensc / dnf install opensc)")


def _tool(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        raise CardError("nss_tools_missing",
                        f"{name} not found: install the NSS tools "
                        "(apt-get install libnss3-tools / dnf install nss-tools)")
    return tool


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    # NSS tools read nothing from stdin with -force, but never let one wait on a terminal
    env = dict(os.environ, NSS_DEFAULT_DB_TYPE="sql")
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise NssSetupError(message=f"{Path(args[0]).name} did not finish in "
                                    f"{TOOL_TIMEOUT_S} s.") from None


def ensure_database(dbdir: Path) -> None:
    """Create an NSS sql: database (empty password) in ``dbdir`` unless one is there."""
    dbdir.mkdir(parents=True, exist_ok=True)
    if (dbdir / "cert9.db").exists():
        return
    proc = _run([_tool("certutil"), "-N", "-d", f"sql:{dbdir}", "--empty-password"])
    if proc.returncode != 0:
        raise NssSetupError(message=f"certutil could not create {dbdir}: "
                                    f"{proc.stderr.strip()[:200]}")


def registered_modules(dbdir: Path) -> list[str]:
    """Names of the PKCS#11 modules in the database (``modutil -list``)."""
    proc = _run([_tool("modutil"), "-dbdir", f"sql:{dbdir}", "-list"])
    if proc.returncode != 0:
        raise NssSetupError(message=f"modutil -list failed: {proc.stderr.strip()[:200]}")
    return re.findall(r"^\s*\d+\.\s+(.+?)\s*$", proc.stdout, flags=re.MULTILINE)


def register_opensc(dbdir: Path | None = None, module_path: str | None = None,
                    force: bool = True) -> NssResult:
    """Add OpenSC to ``dbdir`` (default ~/.pki/nssdb); a second run changes nothing. With
    ``force`` False a database that a process holds open is refused (nss_database_in_use)."""
    db = (dbdir or default_dbdir()).expanduser().resolve()
    module = module_path or find_opensc_module()
    if not Path(module).is_file():
        raise CardError("opensc_missing", f"{module} does not exist.")
    if not force:
        refuse_if_in_use(db)
    ensure_database(db)
    if MODULE_NAME in registered_modules(db):
        return NssResult(db, module, added=False)
    proc = _run([_tool("modutil"), "-dbdir", f"sql:{db}", "-add", MODULE_NAME, "-libfile",
                 module, "-force"])
    if proc.returncode != 0:
        raise NssSetupError(message=f"modutil -add failed: "
                                    f"{(proc.stderr or proc.stdout).strip()[:200]}")
    return NssResult(db, module, added=True)


def write_firefox_policy(path: Path, module_path: str) -> None:
    """Merge ``policies.SecurityDevices.Add.OpenSC`` into a Firefox policies.json, keeping
    every other policy; CardError(policy_invalid) when the file is not a JSON object."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise CardError("policy_invalid", f"{path} is not valid JSON; fix or move it.") \
                from None
    policies = data.setdefault("policies", {}) if isinstance(data, dict) else None
    devices = policies.setdefault("SecurityDevices", {}) if isinstance(policies, dict) else None
    add = devices.setdefault("Add", {}) if isinstance(devices, dict) else None
    if not isinstance(add, dict):
        raise CardError("policy_invalid", f"{path} does not have the policies.json shape.")
    add[MODULE_NAME] = module_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
