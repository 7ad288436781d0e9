"""Passwords, tokens and audit events handle secrets the way the design requires."""

from __future__ import annotations

import pytest

from broker.service.passwords import hash_password, verify_password
from broker.service.tokens import hashes_match, new_token, token_hash


def test_password_round_trip_and_wrong_password() -> None:
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct" not in h
    assert verify_password("correct horse", h)
    assert not verify_password("correct hors", h)


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password("x") != hash_password("x")


@pytest.mark.parametrize("stored", [None, "", "plain", "scrypt$x$y", "scrypt$14$8$1$!!$!!"])
def test_missing_or_malformed_hash_never_matches(stored: str | None) -> None:
    assert not verify_password("anything", stored)


def test_tokens_are_random_and_only_their_hash_is_comparable() -> None:
    a, b = new_token("sbt"), new_token("sbt")
    assert a != b and a.startswith("sbt_") and len(a) > 40
    assert hashes_match(a, token_hash(a)) and not hashes_match(b, token_hash(a))


def test_audit_refuses_secret_detail_keys() -> None:
    from broker.service import audit

    class NoSession:
        def add(self, _: object) -> None:
            raise AssertionError("must not be written")

    with pytest.raises(ValueError, match="secrets"):
        audit.insert(NoSession(), "x", "refused", pin="123456")  # type: ignore[arg-type]


def test_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # `broker admin sessions terminate -REB…` read the id as an option: a CI run hit one.
    from broker.service import tokens

    drawn = iter(["-REBKOEQiIYivLJr", "_x-REBKOEQiIYivL"])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(drawn))
    assert tokens.new_id(12) == "_x-REBKOEQiIYivL"
