"""Registration codes: format, check character, normalisation, rotation grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import registration
from broker.regions import RegionCatalogue, RegionCatalogueError
from broker.registration import ALPHABET, RegistrationCodeError, check_character, generate, parse

CATALOGUE = RegionCatalogue.load(Path(__file__).resolve().parents[2] / "config" /
                                 "regions.toml")


def test_generated_codes_parse_back() -> None:
    c = generate("SLgovw")
    assert parse(str(c), CATALOGUE) == c
    assert len(c.body) == 10 and c.lookup_key == str(c).upper()


def test_input_is_case_whitespace_and_hyphen_tolerant() -> None:
    c = generate("SLiad")
    messy = f"  {c.prefix.lower()} + {c.body[:5].lower()}-{c.body[5:]}\n"
    assert parse(messy, CATALOGUE) == c


def test_crockford_aliases_are_accepted() -> None:
    body9 = "0000011AB"
    code = f"SLiad+{body9}{check_character('SLiad', body9)}"
    assert parse(code.replace("0", "O").replace("1", "l"), CATALOGUE).body == \
        body9 + check_character("SLiad", body9)


@pytest.mark.parametrize("text", ["", "SLiad", "SLiad+", "SLiad+ABC", "SLiad+ABCDEFGHJKM",
                                  "+ABCDEFGHJK", "SL1ad+ABCDEFGHJK", "SLiad+ABCDEFGHJU",
                                  "a+b+c", "x" * 500])
def test_bad_shapes_are_malformed(text: str) -> None:
    with pytest.raises(RegistrationCodeError) as err:
        parse(text, CATALOGUE)
    assert err.value.code == "registration_code_malformed"


def test_unknown_prefix_is_malformed_with_a_catalogue() -> None:
    body9 = "ABCDEFGHJ"
    with pytest.raises(RegistrationCodeError):
        parse(f"SLzzz+{body9}{check_character('SLzzz', body9)}", CATALOGUE)


def test_code_of_one_region_does_not_check_under_another_prefix() -> None:
    c = generate("SLiad")
    with pytest.raises(RegistrationCodeError):
        parse(f"SLpdx+{c.body}", CATALOGUE)


@given(st.text(alphabet=ALPHABET, min_size=9, max_size=9), st.integers(0, 9),
       st.sampled_from(ALPHABET))
def test_every_single_substitution_is_detected(body9: str, pos: int, ch: str) -> None:
    body = body9 + check_character("SLgovw", body9)
    typo = body[:pos] + ch + body[pos + 1:]
    if typo != body:
        assert check_character("SLgovw", typo[:9]) != typo[9]


@given(st.text(alphabet=ALPHABET, min_size=9, max_size=9), st.integers(0, 8))
def test_every_adjacent_transposition_is_detected(body9: str, pos: int) -> None:
    body = body9 + check_character("SLgovw", body9)
    swapped = body[:pos] + body[pos + 1] + body[pos] + body[pos + 2:]
    if swapped != body:
        assert check_character("SLgovw", swapped[:9]) != swapped[9]


@given(st.text(max_size=60))
def test_parse_never_crashes(text: str) -> None:
    try:
        parse(text, CATALOGUE)
    except RegistrationCodeError:
        pass


T = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("state,revoked,rotated,now,expected", [
    ("active", None, None, T, "ok"),
    ("revoked", T, None, T, "revoked"),
    ("rotated", None, T, T + timedelta(hours=23), "ok"),
    ("rotated", None, T, T + timedelta(hours=24), "rotated_expired"),
])
def test_rotation_grace(state, revoked, rotated, now, expected) -> None:  # type: ignore[no-untyped-def]
    assert registration.is_usable(state, revoked, rotated, timedelta(hours=24), now) == expected


# ------------------------------------------------------------------ the catalogue file

def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "regions.toml"
    p.write_text(text)
    return p


GOOD = ('[region."r-1"]\nname = "R"\nprefix = "SLr"\nwsp = true\npcoip = true\n'
        'smart_card_pre_session = false\nsmart_card_in_session = true\n')


def test_operator_can_add_a_region_without_code(tmp_path: Path) -> None:
    cat = RegionCatalogue.load(write(tmp_path, GOOD))
    assert cat.get("r-1").smart_card_in_session and cat.by_prefix("slr").id == "r-1"


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("wsp = true", "wsp = 1"), "'wsp' must be true or false"),
    (GOOD + "colour = 'red'\n", "unknown key 'colour'"),
    (GOOD.replace('prefix = "SLr"\n', ""), "missing key 'prefix'"),
    (GOOD.replace("wsp = true", "wsp = false"), "smart cards need WSP"),
    (GOOD.replace('"SLr"', '"S1"'), "prefix"),
    (GOOD + GOOD.replace("r-1", "r-2").replace("SLr", "slr"), "already used"),
    ("[region\n", "not valid TOML"),
])
def test_bad_catalogue_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(RegionCatalogueError) as err:
        RegionCatalogue.load(write(tmp_path, text))
    assert needle in err.value.message


# ---------------------------------------------------------------------------- known answers

def spec_check_character(prefix: str, body9: str) -> str:
    """The check character from the rule as written (DESIGN §4, broker/registration.py's
    docstring), computed another way: polynomials over GF(2) as bit lists, multiplied
    carry-less and reduced by long division by x^5 + x^2 + 1."""
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # no I, L, O, U
    modulus = [1, 0, 0, 1, 0, 1]  # x^5 + x^2 + 1, highest power first

    def reduce(bits: list[int]) -> int:
        bits = bits[:]
        while len(bits) > 5:
            if bits[0]:
                bits[:6] = [b ^ m for b, m in zip(bits[:6], modulus, strict=True)]
            bits.pop(0)
        return int("".join(map(str, bits)) or "0", 2)

    def times_x_power(value: int, power: int) -> int:  # value · x^power, reduced
        return reduce([int(b) for b in format(value, "05b")] + [0] * power)

    values = [ord(c.lower()) % 32 for c in prefix] + [crockford.index(c) for c in body9]
    total = 0
    for position, value in enumerate(values, start=1):  # α^(i+1) for the i-th value
        total ^= times_x_power(value, position)
    return crockford[total]


# Worked by hand for SLiad+000000000: only the prefix counts. s,l,i,a,d → 19,12,9,1,4 (ord mod
# 32); with x^5 = x^2 + 1: 19·x = 3, 12·x^2 = 21, 9·x^3 = 2, 1·x^4 = 16, 4·x^5 = 20;
# 3 ^ 21 ^ 2 ^ 16 ^ 20 = 16 → "G".
KNOWN_CODES = [("SLiad", "000000000", "G"), ("SLgovw", "ABCDE1234", "D"),
               ("SLiad", "7ZZZZZZZZ", "X")]


@pytest.mark.parametrize("prefix,body9,check", KNOWN_CODES)
def test_known_registration_codes_have_their_check_character(prefix: str, body9: str,
                                                            check: str) -> None:
    assert spec_check_character(prefix, body9) == check  # the spec, computed independently
    assert check_character(prefix, body9) == check  # the product
    code = parse(f"{prefix}+{body9}{check}", CATALOGUE)
    assert (code.prefix, code.body) == (prefix, body9 + check)
    wrong = ALPHABET[(ALPHABET.index(check) + 1) % 32]
    with pytest.raises(RegistrationCodeError):
        parse(f"{prefix}+{body9}{wrong}", CATALOGUE)
