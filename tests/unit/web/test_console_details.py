"""Audit details in the console read as text: no \\u0027-style escapes, still HTML-escaped."""

from __future__ import annotations

from types import SimpleNamespace

from broker.admin.fields import ConsoleSpec
from broker.web.console import ConsoleApp


def test_details_render_without_json_escapes() -> None:
    env = ConsoleApp(None).env  # type: ignore[arg-type]
    cell = env.get_template("_macros.html").module.cell  # type: ignore[attr-defined]
    field = SimpleNamespace(path="details", name="details", console=ConsoleSpec())
    row = {"details": {"reasons": ["no CRL for 'CN=Issuing CA'"],
                       "verification": {"why": "O'Brien <script>"}}}
    html = str(cell(field, row))
    assert "\\u0027" not in html and "\\u003c" not in html
    assert "&#39;CN=Issuing CA&#39;" in html or "'CN=Issuing CA'" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
