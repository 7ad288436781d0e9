"""The web layer's modules stay under 600 lines each (the console was one of 776)."""

from __future__ import annotations

from pathlib import Path

WEB = Path(__file__).resolve().parents[3] / "broker" / "web"


def test_every_web_module_is_under_600_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in WEB.glob("*.py")}
    assert "console.py" in sizes and "console_pages.py" in sizes
    assert {name: n for name, n in sizes.items() if n >= 600} == {}
