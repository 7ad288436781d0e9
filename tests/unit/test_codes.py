"""Error codes are one closed set: the service code raises Code members, never strings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from broker.codes import PROCESS_CODES, Code
from broker.web.errors import STATUS

BROKER = Path(__file__).resolve().parents[2] / "broker"
#: The card client and simulator speak to a person and a card, not to the HTTP API: their
#: CLI error codes are their own.
OWN_CODES = ("client", "cardsim")


CODE_SHAPED = re.compile(r"^[a-z]+(?:_[a-z0-9]+)+$")


def _is_code(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and \
        bool(CODE_SHAPED.match(node.value))


def literal_codes_in(source: str, where: str = "") -> list[str]:
    """``Error("some_code", …)`` calls and class-level ``code = "some_code"`` in ``source``."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            if (name.endswith("Error") or name == "BadRequest") and _is_code(node.args[0]):
                found.append(f"{where}:{node.lineno} {node.args[0].value}")  # type: ignore[attr-defined]
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                targets = (item.targets if isinstance(item, ast.Assign) else
                           [item.target] if isinstance(item, ast.AnnAssign) else [])
                if any(getattr(t, "id", None) == "code" for t in targets) and \
                        _is_code(item.value):  # type: ignore[union-attr]
                    found.append(f"{where}:{item.lineno} {item.value.value}")  # type: ignore[union-attr]
    return found


def literal_codes() -> list[str]:
    found = []
    for path in sorted(BROKER.rglob("*.py")):
        if path.relative_to(BROKER).parts[0] in OWN_CODES:
            continue
        found += literal_codes_in(path.read_text(), str(path.relative_to(BROKER)))
    return found


def test_no_error_is_raised_with_a_literal_code() -> None:
    assert literal_codes() == []


def test_the_scan_finds_a_literal() -> None:
    """Positive control: the same scan flags literal codes, and not ordinary messages."""
    source = ('class E(BrokerError):\n    code = "crl_unreadable"\n'
              'raise ServiceError("challenge_usd", "typo")\n'
              'raise ValueError("parameters out of range")\n'
              'raise ServiceError(Code.CHALLENGE_USED, "fine")\n')
    assert literal_codes_in(source) == [":2 crl_unreadable", ":3 challenge_usd"]


def test_every_code_has_a_status_and_a_sentence() -> None:
    for code in Code:
        assert 400 <= code.status < 600 and code.message.endswith(".")
        if code not in PROCESS_CODES:
            assert STATUS[code.value] == code.status
    assert Code("locked_out") is Code.LOCKED_OUT and Code.LOCKED_OUT == "locked_out"
