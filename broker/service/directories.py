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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import BrokerError
from broker.service import audit
from broker.service.passwords import hash_password, verify_password
from broker.store.models import (
    Crl,
    Directory,
    RegistrationCode,
    TrustCertificate,
    User,
    WorkSpace,
    utcnow,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CertmapRule = Literal["upn", "email", "subject", "fingerprint"]
WorkSpaceState = Literal["PENDING", "AVAILABLE", "STARTING", "STOPPING", "STOPPED", "ERROR",
                         "UNHEALTHY"]


class DirectoryFileError(BrokerError):
    code = "validation_failed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SmartCardSpec(_Strict):
    pre_session: bool = False
    in_session: bool = False
    removal_action: Literal["none", "lock", "disconnect"] = "lock"


class RevocationSpec(_Strict):
    crl: bool = True
    ocsp: bool = False
    fail_mode: Literal["soft", "hard"] = "soft"


class UserSpec(_Strict):
    username: Annotated[str, Field(min_length=1, max_length=200)]
    upn: str | None = None
    email: str | None = None
    subject: str | None = None
    cert_fingerprint: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    password_hash: Annotated[str, Field(pattern=r"^scrypt\$")] | None = None
    disabled: bool = False


class WorkSpaceSpec(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    user: str
    name: str | None = None
    bundle: str = "standard"
    protocol: Literal["WSP", "PCoIP"]
    running_mode: Literal["ALWAYS_ON", "AUTO_STOP"] = "AUTO_STOP"
    state: WorkSpaceState = "STOPPED"


class DirectorySpec(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    region: str
    password_login: bool = False
    smart_card: SmartCardSpec = SmartCardSpec()
    revocation: RevocationSpec = RevocationSpec()
    trust_anchors: list[str] = []
    intermediates: list[str] = []
    crls: list[str] = []
    certmap: list[CertmapRule] = ["upn", "email"]
    registration_codes: Annotated[int, Field(ge=0, le=100)] | list[str] = 1
    user: list[UserSpec] = []
    workspace: list[WorkSpaceSpec] = []

    @field_validator("certmap")
    @classmethod
    def _certmap_unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("certmap rules must not repeat")
        return v


class DirectoryFile(_Strict):
    directory: list[DirectorySpec]


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


@dataclass
class LoadedFile:
    path: Path
    text: str
    spec: DirectoryFile
    trust: dict[str, TrustMaterial]


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or one DER certificate); ValueError when none."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


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
        spec = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in
                                                  ("int", "list[str]", "function-after")))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise _fail(path, text, loc, msg) from None

    seen_dirs: set[str] = set()
    seen_ws: set[str] = set()
    trust: dict[str, TrustMaterial] = {}
    for di, d in enumerate(spec.directory):
        here = ("directory", di)
        if d.id in seen_dirs:
            raise _fail(path, text, (*here, "id"), f"directory {d.id!r} appears twice")
        seen_dirs.add(d.id)
        if d.region not in known_regions:
            raise _fail(path, text, (*here, "region"),
                        f"unknown region {d.region!r} (not in the region catalogue)")
        usernames: set[str] = set()
        for ui, u in enumerate(d.user):
            if u.username in usernames:
                raise _fail(path, text, (*here, "user", ui, "username"),
                            f"user {u.username!r} appears twice")
            usernames.add(u.username)
            if (u.password or u.password_hash) and not d.password_login:
                raise _fail(path, text, (*here, "user", ui, "password"),
                            "a password is only allowed where password_login = true")
            if u.password and u.password_hash:
                raise _fail(path, text, (*here, "user", ui, "password"),
                            "give password or password_hash, not both")
        for wi, w in enumerate(d.workspace):
            if w.id in seen_ws:
                raise _fail(path, text, (*here, "workspace", wi, "id"),
                            f"WorkSpace {w.id!r} appears twice")
            seen_ws.add(w.id)
            if w.user not in usernames:
                raise _fail(path, text, (*here, "workspace", wi, "user"),
                            f"no user {w.user!r} in this directory")
        material = TrustMaterial()
        for key, target in (("trust_anchors", material.anchors),
                            ("intermediates", material.intermediates)):
            for ref in getattr(d, key):
                certs = _read_certs(path, text, (*here, key), ref)
                for cert in certs:
                    if not is_ca(cert):
                        raise DirectoryFileError(
                            "certificate_not_ca",
                            f"{path}: {'.'.join(map(str, (*here, key)))}: {ref} holds "
                            f"{cert.subject.rfc4514_string()!r}, which is not a CA certificate",
                            {"file": str(path), "key": f"directory.{di}.{key}"})
                target.extend(certs)
        for ref in d.crls:
            try:
                material.crls.append(load_crl(_resolve(path, ref).read_bytes()))
            except OSError as exc:
                raise _fail(path, text, (*here, "crls"),
                            f"cannot read {ref}: {exc.strerror or exc}") from None
            except ValueError:
                raise _fail(path, text, (*here, "crls"), f"{ref} is not a CRL") from None
        trust[d.id] = material
    return LoadedFile(path, text, spec, trust)


def _resolve(path: Path, ref: str) -> Path:
    p = Path(ref).expanduser()
    return p if p.is_absolute() else path.parent / p


def _read_certs(path: Path, text: str, loc: tuple[Any, ...], ref: str) -> list[x509.Certificate]:
    try:
        return load_certificates(_resolve(path, ref).read_bytes())
    except OSError as exc:
        raise _fail(path, text, loc, f"cannot read {ref}: {exc.strerror or exc}") from None
    except ValueError:
        raise _fail(path, text, loc, f"{ref} holds no readable certificate") from None


# --------------------------------------------------------------------------- applying

@dataclass
class ApplyResult:
    directories: list[dict[str, Any]]
    changes: int

    def as_json(self) -> dict[str, Any]:
        return {"directories": self.directories}


def apply_loaded(session: Session, loaded: LoadedFile, *, catalogue: Any, actor: str,
                 now: datetime | None = None) -> ApplyResult:
    """Create or update everything in ``loaded`` inside the caller's transaction."""
    from broker import registration

    now = now or utcnow()
    out: list[dict[str, Any]] = []
    total = 0
    fields: dict[str, Any]
    for di, d in enumerate(loaded.spec.directory):
        changes: list[str] = []
        row = session.get(Directory, d.id)
        values = dict(name=d.name, region=d.region, password_login=d.password_login,
                      sc_pre_session=d.smart_card.pre_session,
                      sc_in_session=d.smart_card.in_session,
                      removal_action=d.smart_card.removal_action,
                      revocation_crl=d.revocation.crl, revocation_ocsp=d.revocation.ocsp,
                      revocation_fail_mode=d.revocation.fail_mode, certmap=list(d.certmap))
        if row is None:
            row = Directory(id=d.id, **values)
            session.add(row)
            changes.append("directory created")
        else:
            if row.region != d.region and session.scalar(select(RegistrationCode.id).where(
                    RegistrationCode.directory_id == d.id,
                    RegistrationCode.state == "active").limit(1)) is not None:
                # A code's prefix names its region: moving would strand every issued code.
                raise _fail(loaded.path, loaded.text, ("directory", di, "region"),
                            f"directory {d.id!r} has active registration codes for "
                            f"{row.region}; revoke them before moving it to {d.region}")
            for k, v in values.items():
                if getattr(row, k) != v:
                    setattr(row, k, v)
                    changes.append(f"directory.{k}")
        session.flush()

        material = loaded.trust[d.id]
        known = {t.fingerprint for t in session.scalars(
            select(TrustCertificate).where(TrustCertificate.directory_id == d.id))}
        for kind, certs in (("anchor", material.anchors), ("intermediate", material.intermediates)):
            for cert in certs:
                fp = fingerprint(cert)
                if fp in known:
                    continue
                known.add(fp)
                session.add(TrustCertificate(
                    directory_id=d.id, kind=kind, subject=cert.subject.rfc4514_string(),
                    fingerprint=fp, not_after=cert.not_valid_after_utc,
                    der=cert.public_bytes(serialization.Encoding.DER)))
                changes.append(f"{kind} {fp[:16]} added")
        known_crls = {c.fingerprint for c in session.scalars(
            select(Crl).where(Crl.directory_id == d.id))}
        for crl in material.crls:
            der = crl.public_bytes(serialization.Encoding.DER)
            digest = hashes.Hash(hashes.SHA256())
            digest.update(der)
            fph = digest.finalize().hex()
            if fph in known_crls:
                continue
            known_crls.add(fph)
            session.add(Crl(directory_id=d.id, issuer=crl.issuer.rfc4514_string(),
                            fingerprint=fph, this_update=crl.last_update_utc,
                            next_update=crl.next_update_utc, der=der))
            changes.append(f"crl {fph[:16]} added")

        users = {u.username: u for u in session.scalars(
            select(User).where(User.directory_id == d.id))}
        for u in d.user:
            urow = users.get(u.username)
            fields = dict(upn=u.upn, email=u.email, subject=u.subject,
                          cert_fingerprint=u.cert_fingerprint.lower() if u.cert_fingerprint
                          else None, disabled=u.disabled)
            if urow is None:
                urow = User(directory_id=d.id, username=u.username, **fields)
                session.add(urow)
                users[u.username] = urow
                changes.append(f"user {u.username} created")
            else:
                for k, v in fields.items():
                    if getattr(urow, k) != v:
                        setattr(urow, k, v)
                        changes.append(f"user {u.username}.{k}")
            if u.password is not None and not verify_password(u.password, urow.password_hash):
                urow.password_hash = hash_password(u.password)
                changes.append(f"user {u.username}.password")
            elif u.password_hash is not None and urow.password_hash != u.password_hash:
                urow.password_hash = u.password_hash
                changes.append(f"user {u.username}.password")
        session.flush()

        for wi, w in enumerate(d.workspace):
            wrow = session.get(WorkSpace, w.id)
            owner = users[w.user]
            if wrow is not None and wrow.directory_id != d.id:
                raise _fail(loaded.path, loaded.text, ("directory", di, "workspace", wi, "id"),
                            f"WorkSpace {w.id!r} belongs to directory {wrow.directory_id!r}")
            fields = dict(user_id=owner.id, name=w.name or w.id, bundle=w.bundle,
                          protocol=w.protocol, running_mode=w.running_mode)
            if wrow is None:
                session.add(WorkSpace(id=w.id, directory_id=d.id, state=w.state,
                                      state_changed_at=now, last_activity_at=now, **fields))
                changes.append(f"workspace {w.id} created")
            else:
                to_pcoip = wrow.protocol != "PCoIP" and w.protocol == "PCoIP"
                for k, v in fields.items():
                    if getattr(wrow, k) != v:
                        setattr(wrow, k, v)
                        changes.append(f"workspace {w.id}.{k}")
                if to_pcoip:
                    from broker.service.admin import end_smart_card_sessions

                    # Smart cards never for PCoIP: live card sessions end now (DESIGN §1).
                    end_smart_card_sessions(session, wrow, now, "protocol_changed")

        codes = list(session.scalars(select(RegistrationCode).where(
            RegistrationCode.directory_id == d.id, RegistrationCode.state == "active")
            .order_by(RegistrationCode.id)))
        entry = catalogue.get(d.region)
        if isinstance(d.registration_codes, int):
            while len(codes) < d.registration_codes:
                code = str(registration.generate(entry.prefix)).upper()
                rc = RegistrationCode(code=code, directory_id=d.id, state="active",
                                      created_at=now)
                session.add(rc)
                codes.append(rc)
                changes.append("registration code issued")
        else:
            for ci, text in enumerate(d.registration_codes):
                try:
                    parsed = registration.parse(text, catalogue)
                except BrokerError as exc:
                    raise _fail(loaded.path, loaded.text,
                                ("directory", di, "registration_codes", ci),
                                exc.message) from None
                if parsed.prefix.lower() != entry.prefix.lower():
                    raise _fail(loaded.path, loaded.text,
                                ("directory", di, "registration_codes", ci),
                                f"code {text!r} has the prefix of another region "
                                f"(expected {entry.prefix})")
                key = parsed.lookup_key
                existing = session.scalar(select(RegistrationCode).where(
                    RegistrationCode.code == key))
                if existing is None:
                    rc = RegistrationCode(code=key, directory_id=d.id, state="active",
                                          created_at=now)
                    session.add(rc)
                    codes.append(rc)
                    changes.append("registration code added")
                elif existing.directory_id != d.id:
                    raise _fail(loaded.path, loaded.text,
                                ("directory", di, "registration_codes", ci),
                                f"code {text!r} belongs to another directory")
                elif existing.state != "active":
                    raise _fail(loaded.path, loaded.text,
                                ("directory", di, "registration_codes", ci),
                                f"code {text!r} was {existing.state}; issue a new one")
        session.flush()
        if changes:
            audit.record(session, "directory.apply", "change", directory_id=d.id, actor=actor,
                         changes=changes[:200], change_count=len(changes))
        total += len(changes)
        out.append({"id": d.id, "region": d.region,
                    "registration_codes": [c.code for c in codes if c.state == "active"],
                    "changes": len(changes)})
    return ApplyResult(out, total)


# --------------------------------------------------------------------------- export

def export_directory(session: Session, directory_id: str, pki_dir: Path,
                     relative_to: Path) -> dict[str, Any]:
    """The directory as a declarative-file document; trust material written as PEM files."""
    d = session.get(Directory, directory_id)
    if d is None:
        raise BrokerError("directory_unknown", f"no directory {directory_id!r}",
                          {"directory_id": directory_id})
    pki_dir.mkdir(parents=True, exist_ok=True)

    def write_pem(name: str, data: bytes) -> str:
        target = pki_dir / name
        target.write_bytes(data)
        try:
            return str(target.relative_to(relative_to))
        except ValueError:
            return str(target)

    doc: dict[str, Any] = {
        "id": d.id, "name": d.name, "region": d.region, "password_login": d.password_login,
        "smart_card": {"pre_session": d.sc_pre_session, "in_session": d.sc_in_session,
                       "removal_action": d.removal_action},
        "revocation": {"crl": d.revocation_crl, "ocsp": d.revocation_ocsp,
                       "fail_mode": d.revocation_fail_mode},
        "certmap": list(d.certmap), "trust_anchors": [], "intermediates": [], "crls": [],
    }
    for t in session.scalars(select(TrustCertificate).where(
            TrustCertificate.directory_id == d.id).order_by(TrustCertificate.id)):
        cert = x509.load_der_x509_certificate(t.der)
        key = "trust_anchors" if t.kind == "anchor" else "intermediates"
        doc[key].append(write_pem(f"{t.kind}-{t.fingerprint[:16]}.pem",
                                  cert.public_bytes(serialization.Encoding.PEM)))
    for c in session.scalars(select(Crl).where(Crl.directory_id == d.id).order_by(Crl.id)):
        crl = x509.load_der_x509_crl(c.der)
        doc["crls"].append(write_pem(f"crl-{c.fingerprint[:16]}.pem",
                                     crl.public_bytes(serialization.Encoding.PEM)))
    doc["registration_codes"] = [c.code for c in session.scalars(select(RegistrationCode).where(
        RegistrationCode.directory_id == d.id, RegistrationCode.state == "active")
        .order_by(RegistrationCode.id))]
    users = list(session.scalars(select(User).where(User.directory_id == d.id)
                                 .order_by(User.id)))
    by_id = {u.id: u.username for u in users}
    doc["user"] = []
    for u in users:
        entry: dict[str, Any] = {"username": u.username}
        keys = ["upn", "email", "subject", "cert_fingerprint"]
        if d.password_login:  # the file format allows passwords only where login uses them
            keys.append("password_hash")
        for k in keys:
            if getattr(u, k):
                entry[k] = getattr(u, k)
        if u.disabled:
            entry["disabled"] = True
        doc["user"].append(entry)
    doc["workspace"] = [
        {"id": w.id, "user": by_id[w.user_id], "name": w.name, "bundle": w.bundle,
         "protocol": w.protocol, "running_mode": w.running_mode, "state": w.state}
        for w in session.scalars(select(WorkSpace).where(WorkSpace.directory_id == d.id)
                                 .order_by(WorkSpace.id))]
    return doc


def export_text(docs: list[dict[str, Any]]) -> str:
    import tomli_w

    header = (f"# Exported by smartcard-broker on {datetime.now(UTC).isoformat(timespec='seconds')}"
              "\n# Apply with: broker admin apply THIS_FILE.toml\n\n")
    return header + tomli_w.dumps({"directory": docs})
