"""Request bodies: strict JSON with bounded depth and numbers, never an unexpected exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import BrokerError
from broker.web.http import MAX_JSON_DEPTH, BadRequest, int_param, loads_strict


@pytest.mark.parametrize("raw", [
    b"[" * 30000, b'{"a":' * 10000 + b"1" + b"}" * 10000, b"9" * 5000, b"-" + b"1" * 40,
    b"1e999", b"NaN", b"[Infinity]", b'{"a": 1, "a": 2}', b"\xff", b"{", b"",
    b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
])
def test_hostile_bodies_are_malformed_requests(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        loads_strict(raw)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    assert loads_strict(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 32}


def test_depth_at_the_limit_is_fine() -> None:
    raw = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert loads_strict(raw) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_a_broker_error(raw: bytes) -> None:
    try:
        loads_strict(raw)
    except BrokerError:
        pass


# Text without the control characters a request may not hold (all but tab, LF, CR).
_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters=(
    {chr(c) for c in range(32)} - set("\t\n\r")))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                    | st.text(_TEXT, max_size=5),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(_TEXT, max_size=3), kids, max_size=3),
                    max_leaves=20))
def test_ordinary_json_round_trips(value: object) -> None:
    assert loads_strict(json.dumps(value).encode()) == value


@pytest.mark.parametrize("raw", [b'{"a": "x\\u0000y"}', b'{"a\\u0000": 1}',
                                 b'[["\\u001b[31m"]]', b'{"a": {"b": ["\\u0007"]}}'])
def test_control_characters_in_any_string_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="control character"):
        loads_strict(raw)


def test_tab_newline_and_carriage_return_are_text() -> None:
    assert loads_strict(b'{"pem": "a\\n\\tb\\r\\n"}') == {"pem": "a\n\tb\r\n"}


@pytest.mark.parametrize("text", ["99999999999999999999", "-1", "1e3", "", "٣"])
def test_integer_query_parameters_are_range_checked(text: str) -> None:
    with pytest.raises(BadRequest):
        int_param(text, "offset", low=0, high=1_000_000)
