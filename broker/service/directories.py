"""Declarative directory files: `broker admin apply FILE.toml` and `broker admin export`.

Operators keep directories in version control (shared/DESIGN.md §6). Applying a file creates or
updates everything it names in ONE transaction: applying the same file twice changes nothing, and
a bad file changes nothing and raises :class:`DirectoryFileError` naming the key and its line.
Nothing absent from the file is deleted: removal is an explicit admin operation, so a partial
file can never drop users, WorkSpaces or trust material by accident.

A WorkSpace's ``state`` is its initial state: re-applying a file never stops or starts a
WorkSpace that is already known.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from cryptography import x509
from pydantic import BaseModel, Field, ValidationError, create_model
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from broker import kinds
from broker.admin.common import region_suggestion
from broker.admin.crls import crl_row
from broker.admin.directories import DIRECTORIES, check_region_move, directory_warnings
from broker.admin.fields import Strict
from broker.admin.trust import trust_row
from broker.admin.users import USERS, user_values
from broker.admin.workspaces import WORKSPACES, end_smart_card_sessions, workspace_values
from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import CodeState
from broker.pki.parsing import check_ca_upload, read_certificates, read_crl
from broker.pki.settings import profile_options
from broker.service import audit, coverage
from broker.service.ldapdir import check_settings
from broker.service.lookups import username_of
from broker.service.passwords import hash_password, verify_password
from broker.store import models as db


class DirectoryFileError(BrokerError):
    code = Code.VALIDATION_FAILED


#: The file's entries are the resources' declared fields (one declaration: a field added to a
#: resource is a key of the file, of export, of the API and of the CLI at once), plus what only
#: a file has: paths of trust material, codes to keep, and the directory's users and WorkSpaces.
UserSpec = USERS.file_model()
WorkSpaceSpec = WORKSPACES.file_model()
DirectorySpec = DIRECTORIES.file_model(
    trust_anchors=(list[str], []), intermediates=(list[str], []), crls=(list[str], []),
    registration_codes=(Annotated[int, Field(ge=0, le=100)] | list[str], 1),
    user=(list[UserSpec], []),  # type: ignore[valid-type]
    workspace=(list[WorkSpaceSpec], []))  # type: ignore[valid-type]
DirectoryFile: type[BaseModel] = create_model(
    "DirectoryFile", __base__=Strict, directory=(list[DirectorySpec], ...))  # type: ignore[valid-type]


# --------------------------------------------------------------------------- errors with lines

def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of the key at ``loc`` (e.g. ('directory', 0, 'user', 1, 'upn'))."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    header = ""
    while i < len(loc):
        part = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(part, str) and isinstance(nxt, int):
            header = f"{header}.{part}" if header else part
            pattern = re.compile(r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]")
            hits = [n for n in range(start, end) if pattern.match(lines[n])]
            if nxt >= len(hits):
                return hits[-1] + 1 if hits else None
            start = hits[nxt]
            following = [n for n in range(start + 1, end)
                         if re.match(r"^\s*\[", lines[n]) and not lines[n].strip().startswith(
                             f"[[{header}.")]
            end = following[0] if following else end
            i += 2
            continue
        if isinstance(part, str):
            key = re.compile(r"(^|[\s{,])" + re.escape(part) + r"\s*=")
            for n in range(start, end):
                if key.search(lines[n]):
                    return n + 1
            return start + 1 if start < len(lines) else None
        i += 1
    return start + 1 if lines else None


def _fail(path: Path, text: str, loc: tuple[Any, ...], message: str) -> DirectoryFileError:
    key = ".".join(str(p) for p in loc)
    line = _line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    return DirectoryFileError(message=f"{where}: {key}: {message}",
                              details={"file": str(path), "key": key, "line": line})


# --------------------------------------------------------------------------- loading

@dataclass
class TrustMaterial:
    anchors: list[x509.Certificate] = field(default_factory=list)
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    #: What the CA profile check says the certificates should do better (accepted).
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass
class LoadedFile:
    path: Path
    text: str
    #: The validated ``[[directory]]`` entries as plain data (declared defaults filled in).
    directories: list[dict[str, Any]]
    trust: dict[str, TrustMaterial]


def load_file(path: Path, known_regions: set[str]) -> LoadedFile:
    """Parse and validate a directory file; DirectoryFileError naming key and line otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DirectoryFileError(message=f"cannot read {path}: {exc.strerror or exc}",
                                 details={"file": str(path)}) from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise DirectoryFileError(message=f"{path}: not UTF-8 text",
                                 details={"file": str(path)}) from None
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryFileError(message=f"{path}: not valid TOML: {exc}",
                                 details={"file": str(path)}) from None
    try:
        docs: list[dict[str, Any]] = DirectoryFile.model_validate(data).model_dump()["directory"]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p in ("int", "str", "list[str]") or p.startswith(("function-", "literal[")))))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise _fail(path, text, loc, msg.removeprefix("Value error, ")) from None

    seen_dirs: set[str] = set()
    seen_ws: set[str] = set()
    trust: dict[str, TrustMaterial] = {}
    for di, d in enumerate(docs):
        here = ("directory", di)
        if d["id"] in seen_dirs:
            raise _fail(path, text, (*here, "id"), f"directory {d['id']!r} appears twice")
        seen_dirs.add(d["id"])
        if d["region"] not in known_regions:
            raise _fail(path, text, (*here, "region"),
                        f"unknown region {d['region']!r} (not in the region catalogue)"
                        f"{region_suggestion(d['region'], known_regions)}")
        usernames: set[str] = set()
        for ui, u in enumerate(d["user"]):
            if u["username"] in usernames:
                raise _fail(path, text, (*here, "user", ui, "username"),
                            f"user {u['username']!r} appears twice")
            usernames.add(u["username"])
            if (u["password"] or u["password_hash"]) and not d["password_login"]:
                raise _fail(path, text, (*here, "user", ui, "password"),
                            "a password is only allowed where password_login = true")
            if u["password"] and u["password_hash"]:
                raise _fail(path, text, (*here, "user", ui, "password"),
                            "give password or password_hash, not both")
        for wi, w in enumerate(d["workspace"]):
            if w["id"] in seen_ws:
                raise _fail(path, text, (*here, "workspace", wi, "id"),
                            f"WorkSpace {w['id']!r} appears twice")
            seen_ws.add(w["id"])
            if w["user"] not in usernames and not (d.get("ldap") or {}).get("url"):
                raise _fail(path, text, (*here, "workspace", wi, "user"),
                            f"no user {w['user']!r} in this directory")
        ldap = d.get("ldap") or {}
        for key in ("ca_file", "bind_password_file"):  # relative to the file, like anchors
            if ldap.get(key):
                ldap[key] = str(_resolve(path, ldap[key]))
        material = TrustMaterial()
        options = profile_options(partial(_file_value, d))
        for key, target in (("trust_anchors", material.anchors),
                            ("intermediates", material.intermediates)):
            for ref in d[key]:
                for cert in _read(path, text, (*here, key), ref, read_certificates,
                                  "holds no readable certificate"):
                    try:
                        material.warnings += [
                            {"code": "ca_profile", "field": key,
                             "message": f"{ref}: {warning}"}
                            for warning in check_ca_upload(cert, options)]
                    except BrokerError as exc:
                        raise DirectoryFileError(
                            exc.code, f"{path}: {'.'.join(map(str, (*here, key)))}: {ref} holds "
                            f"{cert.subject.rfc4514_string()!r}: {exc.message}",
                            {"file": str(path), "key": f"directory.{di}.{key}"}) from None
                    target.append(cert)
        for ref in d["crls"]:
            material.crls.append(_read(path, text, (*here, "crls"), ref, read_crl,
                                       "is not a CRL"))
        trust[d["id"]] = material
    return LoadedFile(path, text, docs, trust)


def _resolve(path: Path, ref: str) -> Path:
    p = Path(ref).expanduser()
    return p if p.is_absolute() else path.parent / p


def _read(path: Path, text: str, loc: tuple[Any, ...], ref: str, parse: Any, what: str) -> Any:
    try:
        return parse(_resolve(path, ref).read_bytes())
    except OSError as exc:
        raise _fail(path, text, loc, f"cannot read {ref}: {exc.strerror or exc}") from None
    except BrokerError:
        raise _fail(path, text, loc, f"{ref} {what}") from None


# --------------------------------------------------------------------------- applying

@dataclass
class ApplyResult:
    directories: list[dict[str, Any]]
    changes: int

    def as_json(self) -> dict[str, Any]:
        return {"directories": self.directories}


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "[]"
    return str(value)


def _diff(prefix: str, changes: list[tuple[str, Any, Any]], *, secret: bool = False
          ) -> list[str]:
    return [f"{prefix}.{path}: " + ("changed" if secret else f"{_show(old)} → {_show(new)}")
            for path, old, new in changes]


def _file_value(d: dict[str, Any], name: str) -> Any:
    """A directory setting of a file entry, or its declared default."""
    return d.get(name, DIRECTORIES.field(name).default)


def new_codes_text(count: int) -> str:
    """What a dry run says instead of codes that do not exist yet."""
    return f"{count} new code{'' if count == 1 else 's'} (issued on apply)"


def apply_loaded(session: Session, loaded: LoadedFile, *, catalogue: Any, actor: str,
                 now: datetime | None = None, prune: bool = False,
                 dry_run: bool = False) -> ApplyResult:
    """Create or update everything in ``loaded`` inside the caller's transaction.

    With ``prune``, what a directory of the file no longer lists (users, WorkSpaces, trust
    certificates, CRLs, and active codes where the file lists fixed codes) is removed; other
    directories are never touched. Each directory's entry says what changed (``changed``) and
    which settings cannot take effect in its region (``warnings``, policy reason codes), and
    how many codes this apply generated (``new_registration_codes``). With ``dry_run`` (the
    caller rolls back) generated codes are left out of the result: the real apply issues
    other ones, and a code shown by a dry run must never be mailed to anyone."""
    now = now or db.utcnow()
    out: list[dict[str, Any]] = []
    total = 0
    for di, d in enumerate(loaded.directories):
        active = select(db.RegistrationCode.code).where(
            db.RegistrationCode.directory_id == d["id"],
            db.RegistrationCode.state == CodeState.ACTIVE)
        before = set(session.scalars(active))
        changes = _apply_directory(session, loaded, di, d, catalogue, now, prune)
        session.flush()
        if changes:
            audit.insert(session, "directory.apply", "change", directory_id=d["id"],
                         actor=actor, changes=changes[:200], change_count=len(changes),
                         pruned=prune)
        total += len(changes)
        codes = list(session.scalars(active.order_by(db.RegistrationCode.id)))
        generated = ({c for c in codes if c not in before}
                     if isinstance(d["registration_codes"], int) else set())
        count = len(changes)
        if dry_run and generated:
            codes = [c for c in codes if c not in generated]
            changes = [c for c in changes if not _ISSUED.fullmatch(c)]
            changes.append("registration codes: " + new_codes_text(len(generated)))
        warnings = directory_warnings(catalogue, d["region"],
                                            d["smart_card"]["pre_session"],
                                            d["smart_card"]["in_session"], d["password_login"])
        warnings += loaded.trust[d["id"]].warnings
        warnings += coverage.directory_gaps(session, d["id"], now)
        out.append({"id": d["id"], "region": d["region"], "registration_codes": codes,
                    "new_registration_codes": len(generated),
                    "changes": count, "changed": changes, "warnings": warnings})
    return ApplyResult(out, total)


def rows_of(session: Session, model: Any, did: str) -> list[Any]:
    """Every row of ``model`` in directory ``did``, oldest first."""
    return list(session.scalars(select(model).where(model.directory_id == did)
                                .order_by(model.id)))


def _apply_directory(session: Session, loaded: LoadedFile, di: int, d: dict[str, Any],
                     catalogue: Any, now: datetime, prune: bool) -> list[str]:
    def fail(loc: tuple[Any, ...], message: str) -> DirectoryFileError:
        return _fail(loaded.path, loaded.text, ("directory", di, *loc), message)

    did = d["id"]
    changes: list[str] = []
    ldap = d.get("ldap") or {}
    if ldap.get("url") and d.get("user"):
        raise fail(("user",), "the users of an LDAP directory live in its LDAP server; "
                   "remove the [[directory.user]] entries")
    values = DIRECTORIES.values(d, [f for f in DIRECTORIES.fields
                                    if f.in_file and f.create and f.name != "id"])
    row = session.get(db.Directory, did)
    if row is None:
        row = db.Directory(id=did, created_at=now, updated_at=now, **values)
        session.add(row)
        changes.append(f"directory {did} created")
    else:
        try:
            check_region_move(session, row, d["region"])
        except BrokerError as exc:
            raise fail(("region",), exc.message) from None
        diff = DIRECTORIES.changes(row, values)
        if diff:
            DIRECTORIES.assign(row, values)
            row.updated_at = now
            changes += _diff(f"directory {did}", diff)
    problem = check_settings(row)
    if problem is not None:
        raise fail(tuple(problem[0].split(".")), problem[1])
    session.flush()

    material = loaded.trust[did]
    trusted = {t.fingerprint: t for t in session.scalars(
        select(db.TrustCertificate).where(db.TrustCertificate.directory_id == did))}
    listed: set[str] = set()
    for kind, certs in ((kinds.TrustKind.ANCHOR, material.anchors),
                        (kinds.TrustKind.INTERMEDIATE, material.intermediates)):
        for cert in certs:
            t = trust_row(did, cert, kind)
            listed.add(t.fingerprint)
            if t.fingerprint not in trusted:
                trusted[t.fingerprint] = t
                session.add(t)
                changes.append(f"{kind} {t.fingerprint[:16]} added ({t.subject})")
    crls = {c.fingerprint: c for c in rows_of(session, db.Crl, did)}
    listed_crls: set[str] = set()
    for crl in material.crls:
        c = crl_row(did, crl)
        listed_crls.add(c.fingerprint)
        if c.fingerprint not in crls:
            crls[c.fingerprint] = c
            session.add(c)
            changes.append(f"crl {c.fingerprint[:16]} added ({c.issuer})")
    if prune:
        for fp, t in trusted.items():
            if fp not in listed and t.id is not None:
                session.delete(t)
                changes.append(f"{t.kind} {fp[:16]} removed ({t.subject})")
        for fp, c in crls.items():
            if fp not in listed_crls and c.id is not None:
                session.delete(c)
                changes.append(f"crl {fp[:16]} removed ({c.issuer})")

    changes += _apply_users(session, did, d["user"], prune)
    session.flush()
    changes += _apply_workspaces(session, did, d["workspace"], now, prune, fail)
    changes += _apply_codes(session, did, d, catalogue, now, prune, fail)
    return changes


def _apply_users(session: Session, did: str, specs: list[dict[str, Any]], prune: bool
                 ) -> list[str]:
    changes: list[str] = []
    users = {u.username: u for u in rows_of(session, db.User, did)}
    for u in specs:
        name = u["username"]
        values = user_values(u)
        values.pop("password_hash", None)
        urow = users.get(name)
        if urow is None:
            urow = db.User(directory_id=did, username=name, **values)
            session.add(urow)
            users[name] = urow
            changes.append(f"user {name} created")
        else:
            changes += _diff(f"user {name}", USERS.changes(urow, values))
            USERS.assign(urow, values)
        if u["password"] is not None and not verify_password(u["password"], urow.password_hash):
            urow.password_hash = hash_password(u["password"])
            changes.append(f"user {name}.password: changed")
        elif u["password_hash"] is not None and urow.password_hash != u["password_hash"]:
            urow.password_hash = u["password_hash"]
            changes.append(f"user {name}.password: changed")
    if prune:
        keep = {u["username"] for u in specs}
        for name, urow in users.items():
            if name not in keep:
                session.execute(delete(db.User).where(db.User.id == urow.id))
                session.expunge(urow)
                changes.append(f"user {name} removed (with their WorkSpaces)")
    return changes


def _apply_workspaces(session: Session, did: str, specs: list[dict[str, Any]], now: datetime,
                      prune: bool, fail: Any) -> list[str]:
    changes: list[str] = []
    owners = {u.username: u.id for u in session.scalars(
        select(db.User).where(db.User.directory_id == did))}
    for wi, w in enumerate(specs):
        wrow = session.get(db.WorkSpace, w["id"])
        if wrow is not None and wrow.directory_id != did:
            raise fail(("workspace", wi, "id"),
                       f"WorkSpace {w['id']!r} belongs to directory {wrow.directory_id!r}")
        if w["user"] not in owners:  # an LDAP user (checked by check_ldap_owners): its name row
            from broker.service.trust import name_row

            owners[w["user"]] = name_row(session.connection(), did, w["user"])
        values = {"user_id": owners[w["user"]], **workspace_values(wrow, w)}
        if wrow is None:
            # A WorkSpace's state is its initial state: re-applying never starts or stops one.
            session.add(db.WorkSpace(id=w["id"], directory_id=did, state=w["state"],
                                  state_changed_at=now, last_activity_at=now, created_at=now,
                                  **values))
            changes.append(f"workspace {w['id']} created")
            continue
        to_pcoip = (wrow.protocol != kinds.Protocol.PCOIP
                    and w["protocol"] == kinds.Protocol.PCOIP)
        diff = WORKSPACES.changes(wrow, values)
        changes += _diff(f"workspace {w['id']}", [
            ("user", username_of(session, old), w["user"]) if path == "user_id"
            else (path, old, new) for path, old, new in diff])
        WORKSPACES.assign(wrow, values)
        if to_pcoip:
            # Smart cards never for PCoIP: live card sessions end now (DESIGN §1).
            ended = end_smart_card_sessions(session, wrow, now, "protocol_changed")
            if ended:
                changes.append(f"workspace {w['id']}: {len(ended)} smart-card session(s) ended")
    if prune:
        keep = {w["id"] for w in specs}
        for wrow in rows_of(session, db.WorkSpace, did):
            if wrow.id not in keep:
                session.delete(wrow)
                changes.append(f"workspace {wrow.id} removed")
    return changes


#: The change line of a generated code (its last characters would be made up in a dry run).
_ISSUED = re.compile(r"registration code …\S+ issued")


def _apply_codes(session: Session, did: str, d: dict[str, Any], catalogue: Any, now: datetime,
                 prune: bool, fail: Any) -> list[str]:
    from broker import registration

    changes: list[str] = []
    codes = list(session.scalars(select(db.RegistrationCode).where(
        db.RegistrationCode.directory_id == did, db.RegistrationCode.state == CodeState.ACTIVE)
        .order_by(db.RegistrationCode.id)))
    entry = catalogue.get(d["region"])
    wanted = d["registration_codes"]
    if isinstance(wanted, int):
        while len(codes) < wanted:
            code = str(registration.generate(entry.prefix)).upper()
            rc = db.RegistrationCode(code=code, directory_id=did, state=CodeState.ACTIVE,
                                     created_at=now)
            session.add(rc)
            codes.append(rc)
            changes.append(f"registration code …{code[-4:]} issued")
        return changes
    keys: set[str] = set()
    for ci, text in enumerate(wanted):
        try:
            parsed = registration.parse(text, catalogue)
        except BrokerError as exc:
            raise fail(("registration_codes", ci), exc.message) from None
        if parsed.prefix.lower() != entry.prefix.lower():
            raise fail(("registration_codes", ci), f"code {text!r} has the prefix of another "
                       f"region (expected {entry.prefix})")
        key = parsed.lookup_key
        keys.add(key)
        existing = session.scalar(select(db.RegistrationCode)
                                  .where(db.RegistrationCode.code == key))
        if existing is None:
            session.add(db.RegistrationCode(code=key, directory_id=did, state=CodeState.ACTIVE,
                                         created_at=now))
            changes.append(f"registration code …{key[-4:]} added")
        elif existing.directory_id != did:
            raise fail(("registration_codes", ci), f"code {text!r} belongs to another directory")
        elif existing.state != CodeState.ACTIVE:
            raise fail(("registration_codes", ci), f"code {text!r} was {existing.state}; "
                       "issue a new one")
    if prune:
        for rc in codes:
            if rc.code not in keys:
                rc.state, rc.revoked_at = kinds.CodeState.REVOKED, now
                changes.append(f"registration code …{rc.code[-4:]} revoked")
    return changes


# --------------------------------------------------------------------------- export

def check_ldap_owners(loaded: LoadedFile, ldap: Any) -> None:
    """Every WorkSpace owner of an LDAP directory in the file must exist in its LDAP server
    (one search per name, before the apply's transaction); DirectoryFileError otherwise."""
    from types import SimpleNamespace

    from broker.service.ldapdir import settings_of

    for di, d in enumerate(loaded.directories):
        conf = d.get("ldap") or {}
        if not conf.get("url") or not d["workspace"]:
            continue
        row = SimpleNamespace(id=d["id"], **{f"ldap_{k}": v for k, v in conf.items()})
        s = settings_of(row)
        assert s is not None
        for wi, w in enumerate(d["workspace"]):
            try:
                dn = ldap.find_name(s, w["user"])
            except BrokerError as exc:
                raise _fail(loaded.path, loaded.text, ("directory", di, "workspace", wi, "user"),
                            exc.message) from None
            if dn is None:
                raise _fail(loaded.path, loaded.text, ("directory", di, "workspace", wi, "user"),
                            f"the LDAP directory holds no user {w['user']!r} "
                            f"({s.user_name_attribute})")
