"""pam-setup's file edits, the session file, pam-auth's PIN reading and assertion checks."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.client import pam_setup as ps
from broker.client import session_file
from broker.client.access import PcscCards
from broker.client.cli import main
from broker.client.flow import parse_client_spec, real_client_info
from broker.client.pam import PamRequest, Refusal, read_authtok, trusted_endpoint, verify_assertion

SUDO = ("#%PAM-1.0\nsession required pam_limits.so\n@include common-auth\n"
        "@include common-account\n")


def setup(tmp_path: Path, *extra: str) -> str:
    out = CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(tmp_path), "--broker",
                                    "broker.example:8443", "--pin-sha256", "ab" * 32,
                                    "--program", "/usr/bin/broker-client", *extra])
    assert out.exit_code == 0, out.output
    return out.output


def test_pam_setup_puts_the_rule_before_the_auth_stack_and_keeps_a_backup(tmp_path: Path) -> None:
    (tmp_path / "sudo").write_text(SUDO)
    setup(tmp_path, "--service", "sudo", "--session-file", "/run/sb/%u.json")
    text = (tmp_path / "sudo").read_text()
    rule = [ln for ln in text.splitlines() if ln.startswith("auth ")]
    assert rule == ["auth sufficient pam_exec.so seteuid expose_authtok quiet "
                    "/usr/bin/broker-client pam-auth --purpose sudo --session-file "
                    "/run/sb/%u.json --broker broker.example:8443 --pin-sha256 " + "ab" * 32]
    assert text.index("pam_exec.so") < text.index("@include common-auth")
    assert (tmp_path / "sudo.smartcard-broker.bak").read_text() == SUDO


def test_pam_setup_is_idempotent_and_remove_restores_the_file(tmp_path: Path) -> None:
    (tmp_path / "sudo").write_text(SUDO)
    setup(tmp_path, "--service", "sudo")
    first = (tmp_path / "sudo").read_text()
    assert "unchanged" in setup(tmp_path, "--service", "sudo")
    assert (tmp_path / "sudo").read_text() == first
    out = CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(tmp_path), "--service",
                                    "sudo", "--remove"])
    assert out.exit_code == 0 and "removed" in out.output
    assert (tmp_path / "sudo").read_text() == SUDO


def test_pam_setup_creates_missing_services_and_remove_deletes_them(tmp_path: Path) -> None:
    assert "created" in setup(tmp_path)
    for service in ("sudo", "sudo-i"):
        text = (tmp_path / service).read_text()
        assert "pam_exec.so" in text and "@include common-auth" in text
    CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(tmp_path), "--remove"])
    assert not (tmp_path / "sudo").exists() and not (tmp_path / "sudo-i").exists()


def test_pam_setup_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = setup(tmp_path, "--dry-run")
    assert "+auth sufficient pam_exec.so" in out and not list(tmp_path.iterdir())


def test_pam_setup_refuses_paths_pam_cannot_hold() -> None:
    with pytest.raises(ps.PamSetupError):
        ps.PamExecLine("/usr/bin/broker-client", "/tmp/my session.json").render()


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775])
def test_pam_setup_refuses_a_log_in_a_folder_others_may_write(tmp_path: Path, mode: int) -> None:
    """pam_exec appends to the log as root: in /tmp (or any folder others may write) another
    user could put a symbolic link there first and have root write through it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    out = CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(tmp_path), "--broker",
                                    "broker.example:8443", "--pin-sha256", "ab" * 32,
                                    "--program", "/usr/bin/broker-client",
                                    "--log", str(shared / "pam-auth.log")])
    assert out.exit_code == 1
    assert "is writable by other users" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "sudo").exists()


def test_pam_setup_takes_a_log_in_a_private_folder(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    setup(tmp_path, "--log", str(logs / "pam-auth.log"))
    assert f"log={logs / 'pam-auth.log'}" in (tmp_path / "sudo").read_text()


def test_pam_auth_requires_an_issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session file without the broker id would let any key in the broker's JWKS answer:
    refused before the broker is asked."""
    path = tmp_path / "s.json"
    session_file.write_active(path, broker="https://127.0.0.1:9", ca_file=None,
                              pin_sha256="ab", issuer=None, session={"id": "sid"},
                              auth_token="tok-SECRET-1", user="erin", directory=None,
                              auth_method="password", certificate_sha256=None)
    monkeypatch.setenv("PAM_USER", "erin")
    out = CliRunner().invoke(main, ["pam-auth", "--session-file", str(path), "--broker",
                                    "127.0.0.1:9", "--pin-sha256", "ab"], input="123456\0")
    assert out.exit_code == 1
    assert "reason=session_file_invalid: the session file names no issuer" in out.output
    with pytest.raises(Refusal):
        verify_assertion(assertion(), JWKS, issuer="", user="erin", purpose="sudo",
                         session_id="sid")


def test_session_file_is_private_and_ending_drops_the_token(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    session_file.write_active(path, broker="https://b:1", ca_file=None, pin_sha256="ab",
                              issuer="broker-1", session={"id": "sid", "workspace_id": "ws",
                                                          "gateway": {"protocol": "WSP"}},
                              auth_token="secret-token", user="erin", directory="east",
                              auth_method="password", certificate_sha256=None)
    assert path.stat().st_mode & 0o777 == 0o600
    sf = session_file.load(path, allowed_owners={path.stat().st_uid})
    assert sf.user == "erin" and sf.state == "active"
    session_file.mark_ended(path, "client")
    ended = json.loads(path.read_text())
    assert ended["state"] == "ended" and "secret-token" not in path.read_text()


def test_session_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": 1, "state": "ended"}))
    path.chmod(0o644)
    with pytest.raises(session_file.SessionFileError, match="must be 600"):
        session_file.load(path, allowed_owners={path.stat().st_uid})


def test_a_session_file_naming_another_broker_is_refused(tmp_path: Path) -> None:
    sf = session_file.SessionFile(tmp_path / "s", {"broker": "https://evil:1"}, 1000)
    with pytest.raises(Refusal) as err:
        trusted_endpoint(PamRequest(tmp_path / "s", broker="good:8443", pin_sha256="ab"), sf)
    assert err.value.code == "broker_untrusted"


@pytest.mark.parametrize("raw, pin", [(b"123456\0", "123456"), (b"123456\n", "123456"),
                                      (b"", ""), (b"\0", "")])
def test_read_authtok(raw: bytes, pin: str) -> None:
    assert read_authtok(raw) == pin


KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
JWKS = {"keys": [KEY.as_dict(private=False)]}


def assertion(**claims: object) -> str:
    now = int(time.time())
    base = {"iss": "broker-1", "aud": "in-session:sudo", "sub": "erin", "purpose": "sudo",
            "sid": "sid", "iat": now, "exp": now + 120}
    base.update(claims)
    return jwt.encode({"alg": "ES256", "kid": "k1"}, base, KEY)


def check(token: str) -> dict[str, object]:
    return verify_assertion(token, JWKS, issuer="broker-1", user="erin", purpose="sudo",
                            session_id="sid")


def test_a_good_assertion_verifies() -> None:
    assert check(assertion())["sub"] == "erin"


@pytest.mark.parametrize("claims", [{"sub": "bob"}, {"aud": "workspaces-gateway"},
                                    {"purpose": "browser"}, {"iss": "other"}, {"sid": "x"},
                                    {"exp": int(time.time()) - 1}])
def test_a_wrong_claim_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(Refusal) as err:
        check(assertion(**claims))
    assert err.value.code == "assertion_invalid"


def test_an_assertion_signed_by_another_key_is_refused() -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    token = jwt.encode({"alg": "ES256", "kid": "k1"}, {"sub": "erin"}, other)
    with pytest.raises(Refusal):
        check(token)


def active_session(path: Path, broker: str) -> None:
    """A password session of erin's at ``broker``, with a recognisable token."""
    session_file.write_active(path, broker=broker, ca_file=None, pin_sha256="ab", issuer="b",
                              session={"id": "sid"}, auth_token="tok-SECRET-1", user="erin",
                              directory=None, auth_method="password", certificate_sha256=None)


def test_pam_auth_refuses_another_pam_user_in_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.json"
    active_session(path, "https://127.0.0.1:9")
    monkeypatch.setenv("PAM_USER", "mallory")
    out = CliRunner().invoke(main, ["pam-auth", "--session-file", str(path)], input="123456\0")
    assert out.exit_code == 1
    assert out.output.strip() == ("pam-auth: refused user=mallory purpose=sudo "
                                  "reason=user_mismatch: PAM_USER is not the session's user")


class SilentBroker:
    """A loopback listener that accepts connections and never answers a byte.

    Each accepted connection is read until the client hangs up (recorded in ``hung_up``) or
    until ``guard_s`` passes (recorded in ``outwaited``: the client never gave up on its own).
    """

    def __init__(self, guard_s: float = 30.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.guard_s = guard_s
        self.accepted = 0
        self.hung_up = 0
        self.outwaited = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(self.guard_s)
            with conn:
                try:
                    while conn.recv(4096):
                        pass  # the ClientHello: read, never answered
                    self.hung_up += 1
                except (TimeoutError, OSError):
                    self.outwaited += 1

    def settled(self) -> tuple[int, int, int]:
        """(accepted, hung_up, outwaited) once every accepted connection has ended."""
        deadline = time.monotonic() + self.guard_s + 5
        while self.hung_up + self.outwaited < self.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.accepted, self.hung_up, self.outwaited

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    server = SilentBroker()
    yield server
    server.close()


def test_pam_auth_unreachable_broker_is_a_refusal_in_bounded_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_broker: SilentBroker) -> None:
    path = tmp_path / "s.json"
    address = f"127.0.0.1:{silent_broker.port}"
    active_session(path, "https://127.0.0.1:9")
    monkeypatch.setenv("PAM_USER", "erin")
    out = CliRunner().invoke(main, ["pam-auth", "--session-file", str(path), "--broker",
                                    address, "--pin-sha256", "ab", "--timeout", "1"],
                             input="123456\0")
    assert out.exit_code == 1
    assert "reason=broker_untrusted" in out.output  # the file names another broker
    assert silent_broker.accepted == 0, "an untrusted broker is not contacted at all"
    active_session(path, f"https://{address}")
    out = CliRunner().invoke(main, ["pam-auth", "--session-file", str(path), "--broker",
                                    address, "--pin-sha256", "ab", "--timeout", "1"],
                             input="123456\0")
    assert out.exit_code == 1
    assert "reason=broker_unreachable" in out.output and "123456" not in out.output
    assert "tok-SECRET-1" not in out.output
    # Bounded: the client gave up on the silent broker by itself (its 1 s timeout), rather than
    # waiting until the listener's 30 s guard closed the connection under it.
    assert silent_broker.settled() == (1, 1, 0)


def test_client_identity_is_real_unless_told() -> None:
    info = real_client_info()
    assert info["platform"] == "linux" and info["version"] != "3.1.1"
    assert parse_client_spec("windows/x86_64/3.1.1") == {"platform": "windows",
                                                         "arch": "x86_64", "version": "3.1.1"}


def test_version_option() -> None:
    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("broker-client ")


# The RHEL family's layout (RHEL 8/9, Fedora, Amazon Linux; authselect owns system-auth and
# password-auth as symlinks into /etc/authselect), as the sudo package and authselect ship it.
RHEL_SUDO = ("#%PAM-1.0\n"
             "auth       include      system-auth\n"
             "account    include      system-auth\n"
             "password   include      system-auth\n"
             "session    optional     pam_keyinit.so revoke\n"
             "session    required     pam_limits.so\n"
             "session    include      system-auth\n")
RHEL_SUDO_I = ("#%PAM-1.0\n"
               "auth       include      sudo\n"
               "account    include      sudo\n"
               "password   include      sudo\n"
               "session    optional     pam_keyinit.so force revoke\n"
               "session    include      sudo\n")
AUTHSELECT_SYSTEM_AUTH = (
    "# Generated by authselect\n# Do not modify this file manually.\n\n"
    "auth        required                                     pam_env.so\n"
    "auth        required                                     pam_faildelay.so delay=2000000\n"
    "auth        sufficient                                   pam_unix.so nullok\n"
    "auth        required                                     pam_deny.so\n")


def rhel_pam_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    authselect = tmp_path / "etc" / "authselect"
    authselect.mkdir(parents=True)
    monkeypatch.setattr(ps, "AUTHSELECT_DIR", authselect)
    pam = tmp_path / "etc" / "pam.d"
    pam.mkdir()
    for name in ("system-auth", "password-auth"):
        (authselect / name).write_text(AUTHSELECT_SYSTEM_AUTH)
        (pam / name).symlink_to(authselect / name)
    (pam / "sudo").write_text(RHEL_SUDO)
    (pam / "sudo-i").write_text(RHEL_SUDO_I)
    return pam


def test_the_layout_is_told_by_what_is_in_the_pam_folder(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert ps.detect_stack(rhel_pam_dir(tmp_path, monkeypatch)) is ps.Stack.RHEL
    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / "common-auth").write_text("auth [success=1 default=ignore] pam_unix.so nullok\n")
    assert ps.detect_stack(debian) is ps.Stack.DEBIAN


def test_rhel_sudo_gets_the_rule_before_system_auth_and_sudo_i_is_covered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sudo-i includes sudo on the RHEL family: one block, so one card prompt per sudo -i;
    authselect's files are never touched."""
    pam = rhel_pam_dir(tmp_path, monkeypatch)
    out = setup(pam)
    assert "PAM layout: rhel (detected)" in out
    assert f"{pam / 'sudo'}: updated" in out
    assert f"{pam / 'sudo-i'}: unchanged (covered by sudo)" in out
    lines = (pam / "sudo").read_text().splitlines()
    rule = next(i for i, ln in enumerate(lines) if "pam_exec.so" in ln)
    assert lines[rule + 2] == "auth       include      system-auth", "before the auth stack"
    assert (pam / "sudo").read_text().replace(ps.block(ps.PamExecLine(
        "/usr/bin/broker-client", None, "sudo", "broker.example:8443", None, "ab" * 32)),
        "") == RHEL_SUDO, "the rest of the file is as it was"
    assert (pam / "sudo-i").read_text() == RHEL_SUDO_I
    assert (pam / "system-auth").is_symlink()
    assert (pam / "system-auth").read_text() == AUTHSELECT_SYSTEM_AUTH
    assert "unchanged" in setup(pam) and "updated" not in setup(pam)
    out = CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(pam), "--remove"])
    assert out.exit_code == 0 and (pam / "sudo").read_text() == RHEL_SUDO


def test_authselect_owned_files_are_refused(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pam = rhel_pam_dir(tmp_path, monkeypatch)
    for service in ("system-auth", "password-auth"):
        out = CliRunner().invoke(main, ["pam-setup", "--pam-dir", str(pam), "--broker",
                                        "b.example:1", "--pin-sha256", "ab" * 32,
                                        "--program", "/usr/bin/broker-client", "--service",
                                        service])
        assert out.exit_code == 1 and "authselect" in out.output
    (pam / "custom").symlink_to(tmp_path / "etc" / "authselect" / "system-auth")
    with pytest.raises(ps.PamSetupError):
        ps.service_path(pam, "custom")
    assert (pam / "system-auth").read_text() == AUTHSELECT_SYSTEM_AUTH


def test_stack_rhel_creates_missing_services_with_the_rhel_stack(tmp_path: Path) -> None:
    out = setup(tmp_path, "--stack", "rhel")
    assert "PAM layout: rhel\n" in out
    sudo = (tmp_path / "sudo").read_text()
    assert sudo.endswith(RHEL_SUDO.removeprefix("#%PAM-1.0\n"))
    assert sudo.index("pam_exec.so") < sudo.index("include      system-auth")
    assert not (tmp_path / "sudo-i").exists(), "sudo-i would only include sudo"
    debian = tmp_path / "d"
    debian.mkdir()
    setup(debian, "--stack", "debian")
    assert "@include common-auth" in (debian / "sudo-i").read_text()


def test_pam_setup_writes_strict_card_types_into_the_rule(tmp_path: Path) -> None:
    """An administrator who allows only PIV and CAC cards gets the flag in the pam_exec line;
    without it the rule lets pam-auth use other cards through PKCS#11."""
    (tmp_path / "sudo").write_text(SUDO)
    setup(tmp_path, "--service", "sudo", "--strict-card-types")
    assert " pam-auth --purpose sudo " in (tmp_path / "sudo").read_text()
    assert "--strict-card-types" in (tmp_path / "sudo").read_text()
    setup(tmp_path, "--service", "sudo")  # written again without it: the flag goes away
    assert "--strict-card-types" not in (tmp_path / "sudo").read_text()


def test_pam_auth_passes_strict_card_types_to_the_card_access(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import broker.client.pam as pam_module

    seen: list[bool] = []

    def refuse_after_looking(req: PamRequest, user: str, pin: str, cards: PcscCards) -> None:
        seen.append(cards.strict_card_types)
        raise Refusal("card_not_supported", "only PIV and CAC cards")

    monkeypatch.setattr(pam_module, "authenticate", refuse_after_looking)
    monkeypatch.setenv("PAM_USER", "erin")
    for extra in ([], ["--strict-card-types"]):
        out = CliRunner().invoke(main, ["pam-auth", "--session-file", str(tmp_path / "s.json"),
                                        *extra], input="123456\0")
        assert out.exit_code == 1 and "reason=card_not_supported" in out.output
    assert seen == [False, True]
