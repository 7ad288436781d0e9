"""Real directory servers on loopback for the LDAP tests: OpenLDAP's slapd and a Samba AD DC.

* :class:`Slapd` — Debian's slapd from a generated ``slapd.conf`` in a temporary folder, on its
  own loopback ports (``ldap://`` with StartTLS and ``ldaps://``), with its own TLS CA, the
  ``memberof`` overlay, and a service account. The generic flavour's server.
* :class:`SambaDc` — ``samba-tool domain provision`` into a temporary prefix with its own
  ``smb.conf`` and ``samba -i`` running only its LDAP server, bound to one 127.x address of its
  own (``interfaces = 127.a.b.c/8``, ``bind interfaces only``): Samba's LDAP ports are fixed
  (389/636), so the address is what keeps parallel runs apart. Its TLS certificate comes from
  our CA with the address in the SAN, so clients check the hostname as in production.

Both are seeded through python-ldap (an administrator connection); tests add the entries they
need (users with ``userCertificate;binary``, ``altSecurityIdentities``…) through :meth:`admin`.
No traffic leaves loopback.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.harness import free_port
from broker.pki import issue

SLAPD = "/usr/sbin/slapd"
SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"


def server_cert(ca: issue.Issued, host: str, *, names: Sequence[str] = ()) -> issue.Issued:
    """A TLS server certificate from ``ca`` for ``host`` (an IP address or a DNS name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, hashes.SHA256()))
    return issue.Issued(cert, key)


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path,
               deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {host}:{port}: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class _Server:
    base: Path
    ca: issue.Issued
    host: str
    base_dn: str
    admin_dn: str
    admin_password: str
    svc_dn: str
    svc_password: str
    ldap_port: int = 389
    ldaps_port: int = 636
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.base / "ca.pem"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.host}:{self.ldap_port}"

    def write_secret(self, path: Path, password: str | None = None) -> Path:
        path.write_text((password or self.svc_password) + "\n")
        path.chmod(0o600)
        return path

    def admin(self) -> Any:
        """A python-ldap connection bound as the administrator (over LDAPS)."""
        import ldap

        conn = ldap.initialize(self.ldaps_url)
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(self.ca_file))
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.simple_bind_s(self.admin_dn, self.admin_password)
        return conn

    def add(self, dn: str, attrs: dict[str, Any]) -> None:
        import ldap.modlist

        conn = self.admin()
        try:
            conn.add_s(dn, ldap.modlist.addModlist(_encode(attrs)))
        finally:
            conn.unbind_s()

    def modify(self, dn: str, attrs: dict[str, Any]) -> None:
        import ldap

        conn = self.admin()
        try:
            conn.modify_s(dn, [(ldap.MOD_REPLACE, k, v) for k, v in _encode(attrs).items()])
        finally:
            conn.unbind_s()

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


def _encode(attrs: dict[str, Any]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for k, v in attrs.items():
        values = v if isinstance(v, list) else [v]
        out[k] = [x if isinstance(x, bytes) else str(x).encode() for x in values]
    return out


@dataclass
class Slapd(_Server):
    """OpenLDAP slapd (generic flavour): ``dc=corp,dc=example``, people under ou=people.
    ``log_stats``: slapd logs each operation (``SRCH base=…`` per search) to ``slapd.log``, so
    a bench can count the searches the server answered."""

    log_stats: bool = False

    def start(self) -> Slapd:
        (self.base / "db").mkdir(parents=True, exist_ok=True)
        cert = server_cert(self.ca, self.host)
        self.ca_file.write_bytes(self.ca.cert_pem())
        (self.base / "server.pem").write_bytes(cert.cert_pem())
        (self.base / "server.key").write_bytes(cert.key_pem())
        conf = self.base / "slapd.conf"
        conf.write_text(f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {self.base}/slapd.pid
argsfile {self.base}/slapd.args
TLSCACertificateFile {self.base}/ca.pem
TLSCertificateFile {self.base}/server.pem
TLSCertificateKeyFile {self.base}/server.key
database mdb
maxsize 16777216
suffix "{self.base_dn}"
rootdn "{self.admin_dn}"
rootpw {self.admin_password}
directory {self.base}/db
overlay memberof
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
""")
        log = self.base / "slapd.log"
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        with log.open("wb") as out:
            self.proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d",
                                          "256" if self.log_stats else "0"],
                                         stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.host, self.ldaps_port, self.proc, log)
        self.add(self.base_dn, {"objectClass": ["dcObject", "organization"], "dc": "corp",
                                "o": "Corp"})
        for ou in ("people", "groups", "services"):
            self.add(f"ou={ou},{self.base_dn}", {"objectClass": "organizationalUnit", "ou": ou})
        self.add(self.svc_dn, {"objectClass": ["inetOrgPerson"], "cn": "svc-broker",
                               "sn": "service", "userPassword": self.svc_password})
        return self

    def person(self, uid: str, *, mail: str | None = None, password: str | None = None,
               cert_der: bytes | None = None, **extra: Any) -> str:
        dn = f"uid={uid},ou=people,{self.base_dn}"
        attrs: dict[str, Any] = {"objectClass": ["inetOrgPerson"], "uid": uid, "cn": uid,
                                 "sn": uid, **extra}
        if mail:
            attrs["mail"] = mail
        if password:
            attrs["userPassword"] = password
        if cert_der:
            attrs["userCertificate;binary"] = cert_der
        self.add(dn, attrs)
        return dn

    def group(self, cn: str, members: Sequence[str]) -> str:
        dn = f"cn={cn},ou=groups,{self.base_dn}"
        self.add(dn, {"objectClass": "groupOfNames", "cn": cn, "member": list(members)})
        return dn


def start_slapd(base: Path, *, log_stats: bool = False) -> Slapd:
    ca = issue.make_root("LDAP Test CA")
    return Slapd(base, ca, "127.0.0.1", "dc=corp,dc=example", "cn=admin,dc=corp,dc=example",
                 "admin-secret", "cn=svc-broker,ou=services,dc=corp,dc=example",
                 "svc secret", free_port(), free_port(), log_stats=log_stats).start()


# --------------------------------------------------------------------------- Samba AD DC

#: 100 ns intervals between 1601-01-01 and 1970-01-01 (AD's accountExpires epoch).
_AD_EPOCH_OFFSET = 116444736000000000
UF_ACCOUNTDISABLE = 0x2
UF_NORMAL_ACCOUNT = 0x200


def ad_time(when: dt.datetime) -> int:
    return int(when.timestamp() * 10_000_000) + _AD_EPOCH_OFFSET


@dataclass
class SambaDc(_Server):
    """A Samba AD DC for ``corp.example`` (``DC=corp,DC=example``), LDAP only."""

    def start(self) -> SambaDc:
        prefix = self.base / "dc"
        if prefix.exists():
            shutil.rmtree(prefix)
        env = {**os.environ, "LANG": "C"}
        subprocess.run([
            SAMBA_TOOL, "domain", "provision", "--realm=CORP.EXAMPLE", "--domain=CORP",
            "--server-role=dc", "--dns-backend=NONE", f"--adminpass={self.admin_password}",
            f"--targetdir={prefix}", "--host-name=dc1",
            f"--option=interfaces={self.host}/8", "--option=bind interfaces only=yes",
            "--option=server services=ldap", f"--option=log file={self.base}/samba.log"],
            check=True, capture_output=True, env=env, timeout=300)
        cert = server_cert(self.ca, self.host, names=["dc1.corp.example"])
        tls = prefix / "tls"
        tls.mkdir()
        self.ca_file.write_bytes(self.ca.cert_pem())
        (tls / "cert.pem").write_bytes(cert.cert_pem())
        (tls / "key.pem").write_bytes(cert.key_pem())
        (tls / "key.pem").chmod(0o600)
        (tls / "ca.pem").write_bytes(self.ca.cert_pem())
        log = self.base / "samba.out"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [SAMBA, "-i", "-M", "single", "-s", str(prefix / "etc" / "smb.conf"),
                 f"--option=tls certfile={tls / 'cert.pem'}",
                 f"--option=tls keyfile={tls / 'key.pem'}",
                 f"--option=tls cafile={tls / 'ca.pem'}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait_port(self.host, self.ldaps_port, self.proc, log)
        deadline = time.monotonic() + 60
        while True:  # the port opens before the directory answers binds
            try:
                self.admin().unbind_s()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.user("svc-broker", password=self.svc_password)
        return self

    def user(self, name: str, *, password: str | None = None, upn: str | None = None,
             mail: str | None = None, disabled: bool = False,
             expires: dt.datetime | None = None, alt_security_identities: Sequence[str] = (),
             cert_der: bytes | None = None) -> str:
        dn = f"CN={name},CN=Users,{self.base_dn}"
        attrs: dict[str, Any] = {
            "objectClass": ["top", "person", "organizationalPerson", "user"],
            "cn": name, "sAMAccountName": name,
            "userPrincipalName": upn or f"{name}@corp.example"}
        if mail:
            attrs["mail"] = mail
        if alt_security_identities:
            attrs["altSecurityIdentities"] = list(alt_security_identities)
        if cert_der:
            attrs["userCertificate"] = cert_der
        self.add(dn, attrs)
        state: dict[str, Any] = {"unicodePwd": f'"{password or "Us3r!" + name}"'.encode(
            "utf-16-le"), "userAccountControl": str(
                UF_NORMAL_ACCOUNT | (UF_ACCOUNTDISABLE if disabled else 0))}
        if expires is not None:
            state["accountExpires"] = str(ad_time(expires))
        self.modify(dn, state)
        return dn

    def group(self, name: str, members: Sequence[str]) -> str:
        dn = f"CN={name},CN=Users,{self.base_dn}"
        self.add(dn, {"objectClass": ["top", "group"], "cn": name, "sAMAccountName": name,
                      **({"member": list(members)} if members else {})})
        return dn

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
        super().stop()


def samba_address() -> str:
    """A 127.x address of this process's own: Samba's ports are fixed, the address is not."""
    pid = os.getpid()
    return f"127.{25 + pid % 200}.{(pid // 200) % 250 + 1}.{pid % 250 + 2}"


def start_samba(base: Path) -> SambaDc:
    ca = issue.make_root("Samba Test CA")
    return SambaDc(base, ca, samba_address(), "DC=corp,DC=example",
                   "CN=Administrator,CN=Users,DC=corp,DC=example", "Adm1n!Passw0rd-test",
                   "CN=svc-broker,CN=Users,DC=corp,DC=example", "Svc!Passw0rd-broker").start()
