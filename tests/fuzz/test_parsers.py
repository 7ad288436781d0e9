"""Every parser of outside input, fed random and mutated bytes: it answers or raises its own
layer's error, never anything else. Bounded for CI; bench/fuzz_parsers.py is the long run.

Inputs that once crashed a parser live in tests/fuzz/crashes/<target>-<what>.hex and are
replayed here forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import targets

CRASHES = Path(__file__).parent / "crashes"
SEEDS = targets.seeds()
CI = settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes replaced, inserted, deleted, or cut off."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            data[at:at] = data[draw(st.integers(0, len(data))):][:64]
    return bytes(data)


def inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(SEEDS[name]))


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_the_valid_seed_parses(name: str) -> None:
    assert targets.run(name, SEEDS[name]) is True, f"{name}: its parser refuses the seed"


# An empty TLV list, TL buffer or command series is valid; every other parser refuses nothing.
EMPTY_IS_VALID = {"ber_tlv", "cac_tl_buffer", "card_commands"}


@pytest.mark.parametrize("name", sorted(set(targets.TARGETS) - EMPTY_IS_VALID))
def test_an_empty_input_is_refused(name: str) -> None:
    """The other half: a target that accepts everything tells nothing."""
    assert targets.run(name, b"") is False


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_arbitrary_input_raises_only_the_layers_error(name: str) -> None:
    @CI
    @given(inputs(name))
    def fuzz(data: bytes) -> None:
        targets.run(name, data)

    fuzz()


@pytest.mark.parametrize("path", sorted(CRASHES.glob("*.hex")), ids=lambda p: p.stem)
def test_input_that_once_crashed_a_parser(path: Path) -> None:
    name = path.stem.split("-", 1)[0]
    targets.run(name, bytes.fromhex(path.read_text().strip()))


@pytest.mark.parametrize("body", [b"[" * 5000, b"[" * 17 + b"]" * 17,
                                  b'{"card_count": ' + b"9" * 5000 + b"}",
                                  b'{"card_count": NaN}', b'{"card_count": 1e99999}'])
def test_json_nesting_and_number_size_are_limited(body: bytes) -> None:
    from broker.web.http import BadRequest, read_json

    with pytest.raises(BadRequest):
        read_json(targets._Request(body))  # type: ignore[arg-type]
