"""``broker-client pam-setup``: put (or take out) the pam-auth line in /etc/pam.d/SERVICE.

The line goes in a marked block before the service's first ``auth`` rule (or ``@include
common-auth``), so the card is asked first and the usual stack stays as it was::

    # BEGIN smartcard-broker pam-auth (written by broker-client pam-setup; remove with --remove)
    auth sufficient pam_exec.so seteuid expose_authtok quiet /usr/bin/broker-client pam-auth …
    # END smartcard-broker pam-auth

``seteuid`` runs pam-auth as root, so the user cannot trace or alter it; ``expose_authtok``
hands it the typed PIN on stdin; ``sufficient`` lets the usual stack (the password) follow when
the card says no — use ``--control required`` to make the card the only way.

Idempotent: the same arguments twice change nothing. Before the first change to a file its
original is kept as ``SERVICE.smartcard-broker.bak``. A service file that does not exist is
created with its distribution's stack after the block, and marked so that ``--remove`` deletes
it; otherwise ``--remove`` takes the block out and leaves the rest byte for byte.

Two families of stacks (:class:`Stack`), told apart by what is in the PAM folder or chosen with
``--stack``: Debian's (``@include common-auth``) and the RHEL family's — RHEL, Fedora, Amazon
Linux, the desktops of the WorkSpaces guide — whose services ``include system-auth`` (or
``password-auth``), files that authselect owns (symlinks into /etc/authselect) and rewrites:
pam-setup never writes those, only the services that include them. On the RHEL family ``sudo-i``
includes ``sudo``: a service whose auth stack already includes one that gets the block is left
alone ("covered"), so the card is never asked twice for one sudo.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from broker.errors import BrokerError

BEGIN = "# BEGIN smartcard-broker pam-auth"
END = "# END smartcard-broker pam-auth"
CREATED = "# created by broker-client pam-setup"
BACKUP_SUFFIX = ".smartcard-broker.bak"
DEFAULT_SERVICES = ("sudo", "sudo-i")
CONTROLS = ("sufficient", "required", "requisite")
# Debian's /etc/pam.d/sudo stack, for a service file that is not there yet.
DEFAULT_STACK = ("@include common-auth\n@include common-account\n"
                 "@include common-session-noninteractive\n")
# The RHEL family's /etc/pam.d/sudo and sudo-i (sudo package of RHEL 8/9, Fedora, Amazon Linux).
RHEL_STACKS = {
    "sudo": ("auth       include      system-auth\n"
             "account    include      system-auth\n"
             "password   include      system-auth\n"
             "session    optional     pam_keyinit.so revoke\n"
             "session    required     pam_limits.so\n"
             "session    include      system-auth\n"),
    "sudo-i": ("auth       include      sudo\n"
               "account    include      sudo\n"
               "password   include      sudo\n"
               "session    optional     pam_keyinit.so force revoke\n"
               "session    include      sudo\n"),
}
#: Files authselect generates and owns on the RHEL family (never written here).
AUTHSELECT_OWNED = ("system-auth", "password-auth", "smartcard-auth", "fingerprint-auth",
                    "postlogin")
AUTHSELECT_DIR = Path("/etc/authselect")
_SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIRST_AUTH = re.compile(r"^\s*(-?auth\s|@include\s+common-auth\b)", re.MULTILINE)
_AUTH_INCLUDES = re.compile(r"^\s*(?:-?auth\s+(?:include|substack)\s+(\S+)|@include\s+(\S+))",
                            re.MULTILINE)


class Stack(enum.StrEnum):
    """Which distribution family's PAM layout the machine has."""

    DEBIAN = "debian"
    RHEL = "rhel"

    def default_stack(self, service: str) -> str:
        """The stack of a service file created because it was missing."""
        if self is Stack.RHEL:
            return RHEL_STACKS.get(service, RHEL_STACKS["sudo"])
        return DEFAULT_STACK


def detect_stack(pam_dir: Path) -> Stack:
    """Debian when the folder has ``common-auth``, the RHEL family when it has
    ``system-auth`` or ``password-auth`` (authselect's layout), else Debian."""
    if (pam_dir / "common-auth").exists():
        return Stack.DEBIAN
    if any((pam_dir / name).exists() or (pam_dir / name).is_symlink()
           for name in ("system-auth", "password-auth")):
        return Stack.RHEL
    return Stack.DEBIAN


def auth_includes(text: str) -> set[str]:
    """The services an auth stack includes (``auth include X``, ``auth substack X``,
    ``@include X``), comments aside."""
    lines = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return {a or b for a, b in _AUTH_INCLUDES.findall(lines)}


class PamSetupError(BrokerError):
    code = "pam_setup_invalid"


def check_log_path(log: str) -> None:
    """PamSetupError unless pam_exec (root) can append to ``log`` without following another
    user's link: an absolute path whose folder exists and no other user may write — not even
    a sticky one like /tmp, where anyone can put a symbolic link under the name first — and
    whose ancestors are not writable by others unless sticky; an existing ``log`` must be a
    regular file."""
    import os
    import stat

    path = Path(log)
    if not path.is_absolute():
        raise PamSetupError(message=f"--log {log}: give an absolute path")
    try:
        st = os.stat(path.parent)
    except OSError:
        raise PamSetupError(message=f"--log {log}: the folder {path.parent} does not "
                                    "exist") from None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PamSetupError(message=f"--log {log}: the folder {path.parent} is writable by "
                                    f"other users (mode {st.st_mode & 0o7777:o}); root would "
                                    "follow their links there — choose a folder like "
                                    "/var/log")
    for ancestor in path.parent.parents:
        mode = os.stat(ancestor).st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
            raise PamSetupError(message=f"--log {log}: {ancestor} is writable by other users")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise PamSetupError(message=f"--log {log}: exists and is not a regular file")


@dataclass(frozen=True)
class PamExecLine:
    """The pam_exec rule that runs ``broker-client pam-auth`` with its settings."""

    program: str
    session_file: str | None = None
    purpose: str = "sudo"
    broker: str | None = None
    cafile: str | None = None
    pin_sha256: str | None = None
    control: str = "sufficient"
    log: str | None = None  # pam_exec's log=FILE: pam-auth's refusal lines also go there
    strict_card_types: bool = False  # pam-auth refuses cards that are neither PIV nor CAC

    def render(self) -> str:
        args = [self.program, "pam-auth", "--purpose", self.purpose]
        for flag, value in (("--session-file", self.session_file), ("--broker", self.broker),
                            ("--cafile", self.cafile), ("--pin-sha256", self.pin_sha256)):
            if value:
                args += [flag, value]
        if self.strict_card_types:
            args.append("--strict-card-types")
        options = ["seteuid", "expose_authtok", "quiet"] + ([f"log={self.log}"] if self.log
                                                             else [])
        for a in args + options:
            # PAM splits module arguments on white space; brackets would hide them from pam_exec
            if not a or any(c.isspace() for c in a) or any(c in a for c in "[]"):
                raise PamSetupError(message=f"a PAM line cannot hold {a!r} (spaces or brackets)")
        if self.control not in CONTROLS:
            raise PamSetupError(message=f"--control must be one of {', '.join(CONTROLS)}")
        return f"auth {self.control} pam_exec.so {' '.join(options)} {' '.join(args)}"


def block(line: PamExecLine) -> str:
    return (f"{BEGIN} (written by broker-client pam-setup; remove with --remove)\n"
            f"{line.render()}\n{END}\n")


def _without_block(text: str) -> str:
    start = text.find(BEGIN)
    if start < 0:
        return text
    end = text.find(END, start)
    if end < 0:
        raise PamSetupError(message="the file has our BEGIN marker without its END; fix it by "
                                    "hand")
    stop = text.find("\n", end)
    return text[:start] + (text[stop + 1:] if stop >= 0 else "")


def configured(existing: str | None, line: PamExecLine, stack: str = DEFAULT_STACK) -> str:
    """The service file's text with our block (replacing an older one); a missing file gets
    ``stack`` after the block."""
    if existing is None:
        return f"#%PAM-1.0\n{CREATED}\n{block(line)}{stack}"
    text = _without_block(existing)
    m = _FIRST_AUTH.search(text)
    at = m.start() if m else len(text)
    if at == len(text) and text and not text.endswith("\n"):
        text += "\n"
        at = len(text)
    return text[:at] + block(line) + text[at:]


def removed(existing: str) -> str | None:
    """The text without our block; None when the file was ours alone (delete it)."""
    if CREATED in existing:
        return None
    return _without_block(existing)


def service_path(pam_dir: Path, service: str) -> Path:
    if not _SERVICE_RE.fullmatch(service):
        raise PamSetupError(message=f"{service!r} is not a PAM service name")
    path = pam_dir / service
    target = Path(os.path.realpath(path)) if path.is_symlink() else None
    if service in AUTHSELECT_OWNED or (target is not None and AUTHSELECT_DIR in target.parents):
        raise PamSetupError(message=f"{path} is authselect's (RHEL family): it rewrites that "
                                    "file. Configure the services that include it (sudo, "
                                    "sudo-i), or make a custom authselect profile.")
    return path


@dataclass(frozen=True)
class Change:
    path: Path
    action: str  # "unchanged", "created", "updated", "removed", "deleted"
    before: str | None
    after: str | None


def plan(pam_dir: Path, service: str, line: PamExecLine | None,
         stack: Stack = Stack.DEBIAN, others: tuple[str, ...] = ()) -> Change:
    """What setting up (``line``) or removing (None) would do to one service file.

    ``others`` are the services configured beside it: one whose auth stack includes any of
    them is covered by that one's block and gets none of its own ("covered")."""
    path = service_path(pam_dir, service)
    before = path.read_text() if path.exists() else None
    if line is None:
        if before is None or BEGIN not in before:
            return Change(path, "unchanged", before, before)
        after = removed(before)
        return Change(path, "deleted" if after is None else "removed", before, after)
    text = before if before is not None else stack.default_stack(service)
    covering = sorted(auth_includes(_without_block(text)) & (set(others) - {service}))
    if covering:
        after = _without_block(before) if before is not None else None
        if before is not None and after == before:
            return Change(path, f"unchanged (covered by {', '.join(covering)})", before, after)
        if before is None:  # nothing to write: the file would only include the other one
            return Change(path, f"unchanged (covered by {', '.join(covering)})", None, None)
        return Change(path, f"removed (covered by {', '.join(covering)})", before, after)
    after = configured(before, line, stack.default_stack(service))
    if after == before:
        return Change(path, "unchanged", before, after)
    return Change(path, "created" if before is None else "updated", before, after)


def apply(change: Change) -> None:
    """Write one planned change (backing up the original before the first change)."""
    path = change.path
    if change.action.startswith("unchanged"):
        return
    if change.action == "deleted":
        path.unlink()
        return
    assert change.after is not None
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if change.before is not None and BEGIN not in change.before and not backup.exists():
        shutil.copy2(path, backup)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    from broker.private_files import write_private

    write_private(path, change.after.encode(), mode=mode)


def diff(change: Change) -> str:
    import difflib

    return "".join(difflib.unified_diff(
        (change.before or "").splitlines(keepends=True),
        (change.after or "").splitlines(keepends=True),
        fromfile=str(change.path) if change.before is not None else "/dev/null",
        tofile=str(change.path) if change.after is not None else "/dev/null"))
