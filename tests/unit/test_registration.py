"""Registration codes: PREFIX+BODY, a check character that catches every single typo and every
adjacent swap, forgiving input, and the rotation grace period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BrokerError
from broker.regions import RegionCatalogue
from broker.registration import (
    ALPHABET,
    RegistrationCode,
    RegistrationCodeError,
    check_character,
    generate,
    is_usable,
    parse,
)

CATALOGUE = RegionCatalogue.load(Path(__file__).resolve().parents[2] / "config" /
                                 "regions.toml")
PREFIXES = [e.prefix for e in CATALOGUE]
body9s = st.text(alphabet=ALPHABET, min_size=9, max_size=9)


def code_for(prefix: str, body9: str) -> str:
    return f"{prefix}+{body9}{check_character(prefix, body9)}"


def is_valid(prefix: str, body: str) -> bool:
    try:
        parse(f"{prefix}+{body}")
    except RegistrationCodeError:
        return False
    return True


def test_alphabet_is_crockford_base32() -> None:
    assert ALPHABET == "0123456789ABCDEFGHJKMNPQRSTVWXYZ" and len(set(ALPHABET)) == 32


@pytest.mark.parametrize("prefix", PREFIXES)
def test_generated_code_for_every_region_parses_back_to_itself(prefix: str) -> None:
    code = generate(prefix)
    assert len(code.body) == 10 and all(c in ALPHABET for c in code.body)
    assert parse(str(code), CATALOGUE) == code


def test_generated_codes_are_random() -> None:
    assert len({generate("SLiad").body for _ in range(50)}) == 50


def test_generate_refuses_a_prefix_that_is_not_letters() -> None:
    with pytest.raises(ValueError):
        generate("SL-1")


def test_canonical_form_keeps_catalogue_casing_and_upper_body() -> None:
    text = code_for("SLgovw", "abcdefghj".upper())
    code = parse(text.lower(), CATALOGUE)
    assert code.prefix == "SLgovw" and str(code) == text
    assert code.lookup_key == text.upper()


def test_lookup_key_is_the_same_however_the_code_was_typed() -> None:
    text = code_for("SLiad", "0123456789"[:9])
    keys = {parse(t, CATALOGUE).lookup_key for t in (text, text.lower(), text.upper())}
    assert keys == {text.upper()}


def test_whitespace_anywhere_and_hyphens_in_the_body_are_ignored() -> None:
    text = code_for("SLiad", "ABCDEFGHJ")
    prefix, body = text.split("+")
    messy = f" \t{prefix[:2]} {prefix[2:]} +\n{body[:3]}-{body[3:6]}--{body[6:]} "
    assert parse(messy, CATALOGUE) == parse(text, CATALOGUE)


def test_crockford_aliases_o_i_l_read_as_digits() -> None:
    text = code_for("SLiad", "000111ABC")
    prefix, body = text.split("+")
    typed = prefix + "+" + body[:3].replace("0", "O") + "IlL" + body[6:]
    assert parse(typed, CATALOGUE) == parse(text, CATALOGUE)


@pytest.mark.parametrize("text", [
    "", "   ", "SLiad", "SLiad+", "+ABCDEFGHJK", "SLiad+ABC", "SLiad+ABCDEFGHJKM",
    "SLiad++ABCDEFGHJK", "SLiad+ABCD+EFGHJK", "SL1ad+ABCDEFGHJK", "S+ABCDEFGHJK",
    "SLiad+ABCDEFGHJU", "SLiad+ABCDEFGH*K", "SL-iad+ABCDEFGHJK", "x" * 10_000,
    "SLiad+ÀBCDEFGHJK"])
def test_bad_shape_is_malformed(text: str) -> None:
    with pytest.raises(RegistrationCodeError) as info:
        parse(text)
    assert info.value.code == "registration_code_malformed"
    assert isinstance(info.value, BrokerError) and info.value.message.endswith(".")


def test_wrong_check_character_is_malformed_with_a_typo_sentence() -> None:
    good = code_for("SLiad", "ABCDEFGHJ")
    wrong = ALPHABET[(ALPHABET.index(good[-1]) + 1) % 32]
    with pytest.raises(RegistrationCodeError, match="typo"):
        parse(good[:-1] + wrong, CATALOGUE)


def test_unknown_prefix_with_a_catalogue_is_malformed_not_unknown() -> None:
    """A prefix no region has cannot be a code we issued: it is a typo (400), not 404."""
    text = code_for("SLzzz", "ABCDEFGHJ")
    assert parse(text) == RegistrationCode("SLzzz", text.split("+")[1])  # shape is fine
    with pytest.raises(RegistrationCodeError, match="no known region") as info:
        parse(text, CATALOGUE)
    assert info.value.code == "registration_code_malformed"


def test_the_prefix_is_covered_by_the_check_character() -> None:
    """A code moved to another region's prefix fails its check."""
    body = code_for("SLiad", "ABCDEFGHJ").split("+")[1]
    assert not is_valid("SLpdx", body)


def test_check_character_ignores_prefix_case() -> None:
    assert check_character("SLgovw", "ABCDEFGHJ") == check_character("slGOVW", "ABCDEFGHJ")


@given(prefix=st.sampled_from(PREFIXES), body9=body9s)
def test_every_single_character_substitution_in_the_body_is_caught(prefix: str,
                                                                   body9: str) -> None:
    body = code_for(prefix, body9).split("+")[1]
    assert is_valid(prefix, body)
    for i in range(len(body)):
        for c in ALPHABET:
            if c != body[i]:
                assert not is_valid(prefix, body[:i] + c + body[i + 1:]), (body, i, c)


@given(prefix=st.sampled_from(PREFIXES), body9=body9s)
def test_every_adjacent_transposition_in_the_body_is_caught(prefix: str, body9: str) -> None:
    body = code_for(prefix, body9).split("+")[1]
    for i in range(len(body) - 1):
        if body[i] != body[i + 1]:
            swapped = body[:i] + body[i + 1] + body[i] + body[i + 2:]
            assert not is_valid(prefix, swapped), (body, i)


@pytest.mark.parametrize("prefix", ["SLiad", "SLgovw", "ab", "abcdefghijkl"])
def test_check_catches_all_substitutions_and_swaps_exhaustively_by_linearity(
        prefix: str) -> None:
    """The check is linear over GF(32), so it is enough to prove it for every difference
    at every position once: a non-zero difference never sums to zero."""
    zero = "0" * 9
    base = check_character(prefix, zero)
    for i in range(9):
        for c in ALPHABET[1:]:
            body9 = zero[:i] + c + zero[i + 1:]
            assert check_character(prefix, body9) != base  # substitution at i
            if i < 8:  # swap at (i, i+1): the zero body with c moved one place right
                moved = zero[:i + 1] + c + zero[i + 2:]
                assert check_character(prefix, moved) != check_character(prefix, body9)
    for c in ALPHABET:  # swap of the last data character with the check character
        body9 = zero[:8] + c
        check = check_character(prefix, body9)
        if c != check:
            assert not is_valid(prefix, zero[:8] + check + c)


@given(st.text(max_size=300))
def test_parse_of_arbitrary_text_never_raises_anything_but_malformed(text: str) -> None:
    try:
        parse(text, CATALOGUE)
    except RegistrationCodeError as exc:
        assert exc.code == "registration_code_malformed"


NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
GRACE = timedelta(hours=24)


@pytest.mark.parametrize("state,revoked_at,rotated_at,expected", [
    ("active", None, None, "ok"),
    ("revoked", None, None, "revoked"),
    ("active", NOW - timedelta(seconds=1), None, "revoked"),
    ("rotated", NOW - timedelta(hours=1), NOW - timedelta(hours=2), "revoked"),
    ("rotated", None, NOW - timedelta(hours=1), "ok"),
    ("rotated", None, NOW - GRACE + timedelta(seconds=1), "ok"),
    ("rotated", None, NOW - GRACE, "rotated_expired"),
    ("rotated", None, NOW - timedelta(days=30), "rotated_expired"),
    ("rotated", None, None, "rotated_expired"),
    ("active", None, NOW - timedelta(days=2), "rotated_expired"),
])
def test_rotated_codes_work_for_the_grace_period_then_read_as_revoked(
        state: str, revoked_at: datetime | None, rotated_at: datetime | None,
        expected: str) -> None:
    assert is_usable(state, revoked_at, rotated_at, GRACE, NOW) == expected


def test_zero_grace_ends_a_rotated_code_at_once() -> None:
    assert is_usable("rotated", None, NOW, timedelta(0), NOW) == "rotated_expired"


def test_registration_code_is_frozen() -> None:
    code = generate("SLiad")
    with pytest.raises(AttributeError):
        code.body = "0" * 10  # type: ignore[misc]


def test_registration_module_imports_nothing_from_twisted_sqlalchemy_or_http() -> None:
    import subprocess
    import sys

    code = ("import sys, broker.registration; bad = [m for m in sys.modules if m.split('.')[0]"
            " in ('twisted', 'sqlalchemy', 'klein', 'treq')]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
