"""The thin client's login flow: registration code → smart card → PIN → WorkSpace → session.

It drives the broker's client API (shared/DESIGN.md §5) exactly as the software client in the
tests does, with the card behind the ``SmartCard`` facade (broker.client.card) and the user
behind a :class:`Screens` object — the terminal in ``broker-client login``, a script in the demo,
a fake in unit tests. The PIN goes from the screen to the card and nowhere else.

TLS: the broker's certificate is verified against a CA file when one is given, otherwise pinned
by its SHA-256 fingerprint on first use (``register``) and checked on every later connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization

from broker.errors import BrokerError


def client_version() -> str:
    """This client's own version (the installed smartcard-broker package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smartcard-broker")
    except PackageNotFoundError:
        return "0+unknown"


CLIENT_VERSION = client_version()


class FlowError(BrokerError):
    code = "client_error"


class ApiError(BrokerError):
    """An error answer from the broker, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(code, message, details)
        self.status = status


#: Refusals whose broker message speaks to administrators (PKI internals): what the card user
#: reads instead, with the code for the help desk; the detail stays in the broker's audit.
FOR_CARD_USERS = {
    "certificate_revocation_unknown": "the broker cannot check whether your certificate is "
                                      "revoked; contact your administrator",
}


def for_people(exc: BrokerError) -> str:
    """The one line a person reads for ``exc``."""
    plain = FOR_CARD_USERS.get(exc.code) if isinstance(exc, ApiError) else None
    return f"{plain} ({exc.code})" if plain else exc.message


@dataclass
class BrokerEndpoint:
    host: str
    port: int
    cafile: str | None = None
    pin_sha256: str | None = None
    timeout: float = 30.0

    @classmethod
    def parse(cls, address: str, **kw: Any) -> BrokerEndpoint:
        text = address.removeprefix("https://").rstrip("/")
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise FlowError("client_error", f"broker address must be HOST:PORT, not {address!r}")
        return cls(host.strip("[]"), int(port), **kw)


def fetch_certificate_pin(host: str, port: int, timeout: float = 10.0) -> str:
    """The SHA-256 of the broker's TLS certificate (for trust on first use)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise FlowError("broker_unreachable", f"cannot reach the broker at {host}:{port}: "
                                              f"{exc}") from None
    assert der is not None
    return hashlib.sha256(der).hexdigest()


class BrokerApi:
    """JSON over HTTPS to one broker, with CA verification or a certificate pin."""

    def __init__(self, endpoint: BrokerEndpoint) -> None:
        self.endpoint = endpoint
        self.token: str | None = None

    def _context(self) -> ssl.SSLContext:
        if self.endpoint.cafile:
            return ssl.create_default_context(cafile=self.endpoint.cafile)
        if not self.endpoint.pin_sha256:
            return ssl.create_default_context()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # replaced by the pin check below
        return ctx

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> tuple[int, Any]:
        ep = self.endpoint
        conn = http.client.HTTPSConnection(ep.host, ep.port, context=self._context(),
                                           timeout=ep.timeout)
        headers = {"content-type": "application/json", "accept": "application/json",
                   "user-agent": f"broker-client/{CLIENT_VERSION}"}
        bearer = token or self.token
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        try:
            conn.connect()
            if ep.pin_sha256 and not ep.cafile:
                der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
                got = hashlib.sha256(der or b"").hexdigest()
                if not hmac.compare_digest(got, ep.pin_sha256.lower()):
                    raise FlowError("broker_pin_mismatch",
                                    "the broker's TLS certificate is not the one registered "
                                    f"(pinned {ep.pin_sha256[:16]}…, got {got[:16]}…)")
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise FlowError("broker_unreachable",
                            f"cannot reach the broker at {ep.host}:{ep.port}: {exc}") from None
        finally:
            conn.close()
        data: Any = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                raise FlowError("broker_bad_answer", f"the broker answered {resp.status} with "
                                                     "something that is not JSON") from None
        if resp.status >= 400:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise ApiError(resp.status, err.get("code", "http_error"),
                           err.get("message", f"HTTP {resp.status}"), err.get("details", {}))
        return resp.status, data


def not_offered_because(reasons: Sequence[str], region: str) -> str:
    """Why smart-card login is not offered, in a card user's words."""
    if {"client_platform_unsupported", "client_arch_unsupported",
            "client_version_unsupported"} & set(reasons):
        return ("smart-card login needs the WorkSpaces Windows client 3.1.1 or later on 64-bit "
                "Windows; from this computer, log in with a password (--username) if your "
                "administrator allows it")
    if "region_pre_session_unavailable" in reasons:
        return (f"smart-card login is not available in {region} (only in AWS GovCloud "
                "US-West); log in with a password (--username) if your administrator allows it")
    return ("this directory does not offer smart-card login; ask your WorkSpaces "
            "administrator")


# --------------------------------------------------------------------------- the user

class Screens(Protocol):
    """What the flow shows and asks; each method is one screen of the WorkSpaces client."""

    def show(self, title: str, text: str = "") -> None: ...

    def choose_certificate(self, options: Sequence[Any]) -> Any: ...

    def ask_pin(self, prompt: str) -> str: ...

    def choose_workspace(self, workspaces: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


class CardAccess(Protocol):
    """How the flow reaches the card: count the cards present, open the single one."""

    def count(self) -> int: ...

    def wait_for_card(self, timeout: float,
                      countdown: Callable[[float], None] | None = None) -> None: ...

    def open(self) -> Any: ...


@dataclass
class LoginResult:
    user: dict[str, Any]
    auth_token: str
    workspaces: list[dict[str, Any]]
    session: dict[str, Any] | None = None
    steps: list[str] = field(default_factory=list)
    card: Any = None
    certificate_slot: str | None = None
    certificate_sha256: str | None = None
    method: str = "smart_card"

    def close(self) -> None:
        """Release the card connection (before pcscd may go away, so nothing is left for the
        garbage collector to disconnect at exit)."""
        card, self.card = self.card, None
        if card is not None:
            card.connection.disconnect()


_PLATFORMS = {"win32": "windows", "cygwin": "windows", "darwin": "macos"}
_ARCHES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "i686": "x86", "i386": "x86"}
# What the WorkSpaces Windows client reports; the demo and tests present themselves as it.
WINDOWS_CLIENT = {"platform": "windows", "arch": "x86_64", "version": "3.1.1"}


def real_client_info() -> dict[str, str]:
    """The platform, architecture and version this client really runs as (a Linux machine is
    "linux": the broker then offers it password login only, and its sessions no in-session
    card use, as the rules say)."""
    import platform
    import sys

    plat = _PLATFORMS.get(sys.platform, sys.platform.rstrip("0123456789") or "unknown")
    arch = platform.machine().lower() or "unknown"
    return {"platform": plat, "arch": _ARCHES.get(arch, arch), "version": CLIENT_VERSION}


def parse_client_spec(text: str) -> dict[str, str]:
    """``PLATFORM/ARCH/VERSION`` (e.g. ``windows/x86_64/3.1.1``) → the client object the
    broker's API takes; FlowError for anything else."""
    parts = [p.strip() for p in text.split("/")]
    if len(parts) != 3 or not all(parts) or any(len(p) > 32 for p in parts):
        raise FlowError("client_error", f"--as-client must be PLATFORM/ARCH/VERSION, e.g. "
                                        f"windows/x86_64/3.1.1 (got {text!r})")
    return {"platform": parts[0], "arch": parts[1], "version": parts[2]}


def describe_client(info: dict[str, str]) -> str:
    return f"{info['platform']}/{info['arch']}/{info['version']}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign_challenge(card: Any, slot: str, cert: Any, challenge: dict[str, Any]) -> tuple[str, str]:
    """Sign a challenge's to_be_signed on the card; returns (signature b64, algorithm)."""
    algorithm = card.default_algorithm(cert)
    offered = challenge.get("signature_algorithms") or [algorithm]
    if algorithm not in offered:
        raise FlowError("card_not_supported", f"the broker does not accept {algorithm} "
                                              f"(it offers {', '.join(offered)})")
    tbs = base64.b64decode(challenge["to_be_signed"])
    return b64(card.sign(slot, tbs, algorithm)), algorithm


class LoginFlow:
    """One login through the broker, screen by screen."""

    def __init__(self, api: BrokerApi, registration_code: str, cards: CardAccess,
                 screens: Screens, client_info: dict[str, str] | None = None,
                 poll_interval: float = 1.0, max_wait: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.code = registration_code
        self.cards = cards
        self.screens = screens
        self.client = dict(client_info or real_client_info())
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.clock = clock
        self.last_end_reason: str | None = None

    def register(self) -> dict[str, Any]:
        _, reg = self.api.call("POST", "/v1/registrations",
                               {"registration_code": self.code, "client": self.client})
        return reg

    def login(self, card_wait: float = 60.0) -> LoginResult:
        reg = self.register()
        directory = reg["directory"]["name"]
        if "smart_card" not in reg["login_methods"]:
            reasons = list(reg["smart_card"].get("reasons", []))
            raise FlowError("smart_card_not_offered",
                            f"{directory}: {not_offered_because(reasons, reg['region'])} "
                            f"({', '.join(reasons) or 'not enabled'})")
        self.screens.show("Insert your smart card", f"{directory} ({reg['region']})")
        if self.cards.count() == 0:
            names: list[str] = getattr(self.cards, "reader_names", list)()
            where = ", ".join(f'"{n}"' for n in names) or "a reader (none is connected)"

            def countdown(left: float) -> None:
                self.screens.show("Insert your smart card",
                                  f"insert it in {where}: {left:.0f} s left")

            self.cards.wait_for_card(card_wait, countdown)
        count = self.cards.count()
        try:
            _, challenge = self.api.call("POST", "/v1/auth/challenges", {
                "registration_code": self.code, "client": self.client, "card_count": count,
                "purpose": "pre_session"})
        except ApiError as exc:
            if "multiple_cards" in exc.details.get("reasons", []):
                names = list(getattr(self.cards, "readers_with_card", list)())
                listed = ", ".join(f'"{n}"' for n in names)
                raise FlowError("multiple_cards",
                                f"{count} smart cards are inserted ({listed}): remove all but "
                                "one, or choose one with --reader"
                                + (f' (e.g. --reader "{names[0]}")' if names else "")) from None
            raise
        card = self.cards.open()
        options = card.filter_by_issuers(card.certificates(), challenge["accepted_issuers"])
        if not options:
            raise FlowError("no_certificate", "the card holds no certificate this directory "
                                              "accepts")
        chosen = self.screens.choose_certificate(options)
        self.screens.show("Smart Card", f"Certificate: {chosen.label}")
        card.verify_pin(self.screens.ask_pin("Enter your PIN"))
        signature, algorithm = sign_challenge(card, chosen.slot_id, chosen.certificate,
                                              challenge)
        cert_der = chosen.certificate.public_bytes(serialization.Encoding.DER)
        _, result = self.api.call(
            "POST", f"/v1/auth/challenges/{challenge['challenge_id']}/response",
            {"certificate": b64(cert_der),
             "chain": [], "signature": signature, "algorithm": algorithm})
        return self._signed_in(result, card=card, certificate_slot=chosen.slot_id,
                               certificate_sha256=hashlib.sha256(cert_der).hexdigest())

    def password_login(self, username: str, password: str) -> LoginResult:
        """Log in with the directory's password login (where it is offered)."""
        reg = self.register()
        if "password" not in reg["login_methods"]:
            raise FlowError("password_not_offered", f"{reg['directory']['name']}: password "
                                                    "login is not offered here.")
        # The client is stated (DESIGN §5): it decides the session's in-session card use.
        _, result = self.api.call("POST", "/v1/auth/password", {
            "registration_code": self.code, "username": username, "password": password,
            "client": self.client})
        return self._signed_in(result, method="password")

    def _signed_in(self, result: dict[str, Any], **kw: Any) -> LoginResult:
        """Keep the auth token for later calls and show the "Signed in" screen."""
        self.api.token = result["auth_token"]
        self.screens.show("Signed in", f"{result['user']['username']}: "
                                       f"{len(result['workspaces'])} WorkSpace(s)")
        return LoginResult(result["user"], result["auth_token"], result["workspaces"], **kw)

    def connect(self, login: LoginResult, workspace_id: str | None = None) -> dict[str, Any]:
        """Connect to a WorkSpace. After a card login the broker always asks for the PIN again
        ("Starting WorkSpace", a logon challenge signed by the same card), and a stopped
        WorkSpace starts meanwhile; after a password login an available WorkSpace answers at
        once and a stopped one is waited for."""
        if workspace_id is None:
            # A card login can never use a PCoIP WorkSpace: say so in the picker.
            card = login.method == "smart_card"
            ws = self.screens.choose_workspace(
                [{**w, "usable": not (card and w.get("protocol") == "PCoIP")}
                 for w in login.workspaces])
        else:
            matches = [w for w in login.workspaces if w["id"] == workspace_id]
            if not matches:
                raise FlowError("workspace_unknown", f"no WorkSpace {workspace_id!r}")
            ws = matches[0]
        status, body = self.api.call("POST", f"/v1/workspaces/{ws['id']}/connect", {})
        if status == 201:
            login.session = body["session"]
            return body["session"]
        starting = body.get("state") != "AVAILABLE"
        self.screens.show("Starting WorkSpace", f"{ws['name']} is starting" if starting
                          else f"{ws['name']} is available")
        challenge = body.get("logon_challenge")
        if challenge is None and login.method == "password":
            return self._wait_started(login, ws["id"])
        if challenge is None:
            raise FlowError("client_error", "the broker asked for no logon challenge")
        card = login.card
        if login.certificate_slot is None:
            raise FlowError("client_error", "log in with the card before connecting")
        cert = next(c.certificate for c in card.certificates()
                    if c.slot_id == login.certificate_slot)
        card.verify_pin(self.screens.ask_pin("Enter your PIN again"))
        signature, algorithm = sign_challenge(card, login.certificate_slot, cert, challenge)
        deadline = self.clock() + self.max_wait
        while True:
            try:
                _, result = self.api.call("POST", f"/v1/workspaces/{ws['id']}/logon", {
                    "challenge_id": challenge["challenge_id"], "signature": signature,
                    "algorithm": algorithm})
                login.session = result["session"]
                return result["session"]
            except ApiError as exc:
                if exc.code != "workspace_not_ready" or self.clock() > deadline:
                    raise
            time.sleep(self.poll_interval)

    def _wait_started(self, login: LoginResult, workspace_id: str) -> dict[str, Any]:
        """A password login to a starting WorkSpace: connect again until it is available."""
        deadline = self.clock() + self.max_wait
        while self.clock() <= deadline:
            time.sleep(self.poll_interval)
            status, body = self.api.call("POST", f"/v1/workspaces/{workspace_id}/connect", {})
            if status == 201:
                login.session = body["session"]
                return body["session"]
        raise FlowError("workspace_not_ready", "the WorkSpace did not start in time")

    def end_session(self, session: dict[str, Any]) -> None:
        """DELETE the session (Bearer: this login's token)."""
        self.api.call("DELETE", f"/v1/sessions/{session['id']}")

    def heartbeat(self, session: dict[str, Any], card_present: bool) -> str:
        """The broker's action; why it ended the session, if it did, is then in
        ``last_end_reason`` (e.g. "admin")."""
        _, body = self.api.call("POST", f"/v1/sessions/{session['id']}/heartbeat",
                                {"card_present": card_present})
        self.last_end_reason = body.get("reason") if isinstance(body, dict) else None
        return str(body["action"])


# --------------------------------------------------------------------------- stored settings

def settings_path() -> Path:
    import os

    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "smartcard-broker" / "client.json"


def save_registration(broker: str, code: str, pin_sha256: str | None, cafile: str | None,
                      path: Path | None = None, as_client: str | None = None,
                      directory: dict[str, Any] | None = None) -> Path:
    """Write the registration (mode 0600); ``directory`` ({id, name, region}) is what the
    broker answered, kept to show what a later ``register --change`` replaces."""
    from broker.private_files import write_private

    p = path or settings_path()
    # The registration code is a credential: 0600 from the first byte, never a readable moment.
    write_private(p, json.dumps({"broker": broker, "registration_code": code,
                                 "tls_pin_sha256": pin_sha256, "cafile": cafile,
                                 "as_client": as_client, "directory": directory},
                                indent=2).encode())
    return p


def load_registration(path: Path | None = None) -> dict[str, Any]:
    p = path or settings_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FlowError("not_registered", "no registration yet: run `broker-client register "
                                          "CODE --broker HOST:PORT` first") from None
    except ValueError:
        raise FlowError("client_error", f"{p} is not valid JSON; register again") from None
    if not isinstance(data, dict) or "broker" not in data:
        raise FlowError("client_error", f"{p} is incomplete; register again")
    return data
