from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from broker.cardsim import InProcessConnection, PivCard
from broker.client import transport
from broker.client.cli import main
from broker.client.errors import NoReaderError


class NamedConnection(InProcessConnection):
    reader = "Test Reader 00"


def test_card_info_json_shows_reader_kind_chuid_certificates_and_tries(
        monkeypatch: pytest.MonkeyPatch, piv_card: PivCard) -> None:
    monkeypatch.setattr(transport, "connect", lambda reader=None: NamedConnection(piv_card))
    out = CliRunner().invoke(main, ["card", "info", "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert info["reader"] == "Test Reader 00" and info["kind"] == "piv"
    assert info["pin_tries_left"] == 3 and len(info["fasc_n"]) == 50
    assert [c["slot"] for c in info["certificates"]] == ["9a", "9c", "9d", "9e"]
    assert info["certificates"][0]["issuer"] == "CN=Client Test CA"


def test_card_info_text(monkeypatch: pytest.MonkeyPatch, piv_card: PivCard) -> None:
    monkeypatch.setattr(transport, "connect", lambda reader=None: NamedConnection(piv_card))
    out = CliRunner().invoke(main, ["card", "info"])
    assert out.exit_code == 0
    assert "kind: piv" in out.output and "[9a] PIV Authentication" in out.output


def test_errors_are_one_line_and_exit_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reader(reader: str | None = None) -> None:
        raise NoReaderError(message="The PC/SC service (pcscd) is not running.")

    monkeypatch.setattr(transport, "connect", no_reader)
    out = CliRunner().invoke(main, ["card", "info"])
    assert out.exit_code == 1
    assert out.output.strip() == "error: The PC/SC service (pcscd) is not running."


def test_unexpected_exceptions_are_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(reader: str | None = None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(transport, "connect", boom)
    out = CliRunner().invoke(main, ["card", "info"])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "Traceback" not in out.output


def test_card_sim_is_mounted_from_the_simulator() -> None:
    out = CliRunner().invoke(main, ["card-sim", "--help"])
    assert out.exit_code == 0 and "vpcd" in out.output
