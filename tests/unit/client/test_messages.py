"""What a card user reads: readers named, plain refusals, a picker that shows names and marks
PCoIP, usage errors before any PIN is read, and an admin-ended session that says so."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

import broker.client.transport as transport
from broker.client import cli as client_cli
from broker.client.errors import NoReaderError
from broker.client.flow import ApiError, FlowError, LoginFlow, LoginResult

REG = {"directory": {"id": "corp", "name": "Corp"}, "region": "us-gov-west-1",
       "login_methods": ["smart_card"], "smart_card": {"reasons": []}}


class Api:
    """Answers the flow's calls from a table; a refusal is an ApiError as BrokerApi raises."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, token: str | None = None
             ) -> tuple[int, Any]:
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return 200, answer


class Screens:
    def __init__(self) -> None:
        self.shown: list[str] = []

    def show(self, title: str, text: str = "") -> None:
        self.shown.append(f"{title}: {text}")


class Cards:
    def __init__(self, counts: list[int], names: list[str], with_card: list[str]) -> None:
        self.counts, self.names, self.with_card = counts, names, with_card

    def count(self) -> int:
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    def wait_for_card(self, timeout: float, countdown: Any = None) -> None:
        if countdown is not None:
            countdown(timeout)

    def reader_names(self) -> list[str]:
        return self.names

    def readers_with_card(self) -> list[str]:
        return self.with_card

    def open(self) -> Any:
        raise AssertionError("not reached in these tests")


def flow(api: Api, cards: Cards, screens: Screens | None = None) -> LoginFlow:
    return LoginFlow(api, "SLgovw+X", cards, screens or Screens(),  # type: ignore[arg-type]
                     client_info={"platform": "windows", "arch": "x86_64", "version": "3.1.1"})


def test_two_cards_name_the_readers_and_suggest_reader() -> None:
    refused = ApiError(403, "smart_card_not_allowed", "Smart-card login is not allowed here: "
                       "multiple_cards", {"reasons": ["multiple_cards"]})
    f = flow(Api({"/v1/registrations": REG, "/v1/auth/challenges": refused}),
             Cards([2], ["Reader A", "Reader B"], ["Reader A", "Reader B"]))
    with pytest.raises(FlowError) as err:
        f.login()
    assert err.value.code == "multiple_cards"
    assert '"Reader A", "Reader B"' in err.value.message
    assert '--reader "Reader A"' in err.value.message


def test_waiting_for_a_card_counts_down_with_the_reader_names() -> None:
    screens = Screens()
    refused = ApiError(403, "smart_card_not_allowed", "no", {"reasons": ["no_card"]})
    f = flow(Api({"/v1/registrations": REG, "/v1/auth/challenges": refused}),
             Cards([0, 0], ["Reader A"], []), screens)
    with pytest.raises(ApiError):
        f.login(card_wait=60)
    assert any('"Reader A": 60 s left' in line for line in screens.shown), screens.shown


def test_unknown_reader_lists_the_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "_system_readers", lambda: ["Reader A", "Reader B"])
    with pytest.raises(NoReaderError) as err:
        transport.card_count("Reader C")
    assert "'Reader C'" in err.value.message
    assert '"Reader A", "Reader B"' in err.value.message


def test_linux_client_is_told_in_plain_words() -> None:
    reg = {**REG, "login_methods": ["password"],
           "smart_card": {"reasons": ["client_platform_unsupported"]}}
    f = flow(Api({"/v1/registrations": reg}), Cards([1], [], []))
    with pytest.raises(FlowError) as err:
        f.login()
    assert "Windows client 3.1.1 or later on 64-bit Windows" in err.value.message
    assert "registration code" not in err.value.message


def test_picker_shows_names_marks_pcoip_and_defaults_to_a_usable_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    workspaces = [{"id": "ws-1", "name": "Design PCoIP", "protocol": "PCoIP",
                   "running_mode": "AUTO_STOP", "state": "STOPPED"},
                  {"id": "ws-2", "name": "Daily desk", "protocol": "WSP",
                   "running_mode": "ALWAYS_ON", "state": "AVAILABLE"}]
    chosen: list[dict[str, Any]] = []
    screens = client_cli.TerminalScreens(False, None)
    pick = screens.choose_workspace

    def choose(ws: list[dict[str, Any]]) -> dict[str, Any]:
        chosen.append(pick(ws))
        raise click.Abort  # stop before connecting

    monkeypatch.setattr(screens, "choose_workspace", choose)
    f = flow(Api({}), Cards([1], [], []))
    f.screens = screens
    runner = CliRunner()
    with runner.isolation(input="\n") as streams:
        err = streams[1]
        with pytest.raises(click.Abort):
            f.connect(LoginResult({}, "t", workspaces, method="smart_card"))
        text = err.getvalue().decode()
    assert chosen[0]["id"] == "ws-2", "Enter picks the first WorkSpace a card login can use"
    assert "Design PCoIP [ws-1]" in text and "password login only" in text
    assert "Daily desk [ws-2]" in text and "[2]" in text


def test_pin_stdin_without_workspace_is_a_usage_error_before_reading_the_pin() -> None:
    result = CliRunner().invoke(client_cli.main, ["login", "--pin-stdin"], input="123456\n")
    assert result.exit_code == 2
    assert "--workspace" in result.output and "Aborted" not in result.output


def test_an_admin_ended_session_says_why_and_exits_non_zero(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Held:
        last_end_reason: str | None = None

        def heartbeat(self, session: dict[str, Any], present: bool) -> str:
            self.last_end_reason = "admin"
            return "disconnect"

    monkeypatch.setattr(transport, "card_count", lambda reader=None: 1)
    runner = CliRunner()
    with runner.isolation() as streams:
        err = streams[1]
        with pytest.raises(SystemExit) as ended:
            client_cli.hold_session(Held(), {"id": "s1"}, None, 0.01)
        text = err.getvalue().decode()
    assert ended.value.code == 1
    assert "session ended by the broker: an administrator ended it (admin)" in text


def test_register_shows_the_fingerprint_it_pins_and_asks(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Any) -> None:
    import broker.client.flow as flow_module

    pin = "ab" * 32
    monkeypatch.setattr(flow_module, "fetch_certificate_pin", lambda host, port: pin)
    monkeypatch.setattr(LoginFlow, "register", lambda self: {
        **REG, "login_methods": ["smart_card"], "smart_card": {"reasons": [], "in_session": True}})
    args = ["register", "SLgovw+X", "--broker", "127.0.0.1:8443", "--as-client",
            "windows/x86_64/3.1.1", "--config", str(tmp_path / "c.json")]
    refused = CliRunner().invoke(client_cli.main, args, input="n\n")
    assert refused.exit_code == 1 and not (tmp_path / "c.json").exists()
    assert "AB:AB:AB" in refused.output and "--yes" in refused.output
    no_tty = CliRunner().invoke(client_cli.main, args, input="")
    assert no_tty.exit_code == 1 and "Aborted" not in no_tty.output
    accepted = CliRunner().invoke(client_cli.main, args, input="y\n")
    assert accepted.exit_code == 0 and (tmp_path / "c.json").exists(), accepted.output
    (tmp_path / "c.json").unlink()
    assert CliRunner().invoke(client_cli.main, [*args, "--yes"]).exit_code == 0
    assert (tmp_path / "c.json").exists()
