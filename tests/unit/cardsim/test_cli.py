"""card-sim's argument handling (the running link is covered by the integration tests)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker.cardsim.cli import card_sim, parse_endpoint


def test_endpoint_parses_host_and_port() -> None:
    assert parse_endpoint("127.0.0.1:35964") == ("127.0.0.1", 35964)


@pytest.mark.parametrize("value", ["localhost", ":1", "h:0", "h:x", "h:70000"])
def test_bad_endpoints_are_usage_errors(value: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_endpoint(value)


@pytest.mark.parametrize(("args", "message"), [
    (["piv", "--pin", "12"], "6 to 8 digits"),
    (["piv", "--puk", "1234"], "8 digits"),
    (["cac", "--vpcd", "nohost"], "HOST:PORT"),
])
def test_bad_options_exit_2_with_a_reason(args: list[str], message: str) -> None:
    result = CliRunner().invoke(card_sim, args)
    assert result.exit_code == 2 and message in result.output


def test_key_without_cert_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("")
    result = CliRunner().invoke(card_sim, ["piv", "--key", str(tmp_path / "k.pem")])
    assert result.exit_code == 2 and "--key and --cert together" in result.output
