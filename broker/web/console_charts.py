"""How the console shows times, deadlines and its SVG charts (rendered inline, so they read
without JavaScript and need no inline script or style)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _deadline_class(value: Any, warn_within: timedelta) -> str:
    """past / soon / ok for a declared deadline field (``Field.console.warn_within``)."""
    if not value:
        return ""
    at = datetime.fromisoformat(str(value))
    now = datetime.now(UTC)
    if at <= now:
        return "past"
    return "soon" if at - now < warn_within else "ok"



OUTCOME_COLOURS = {"success": "#2e7d32", "refused": "#c62828", "error": "#6a1b9a"}


def login_chart(series: dict[str, Any], width: int = 720, height: int = 220
                ) -> dict[str, Any]:
    """Geometry of a stacked bar chart of logins per hour by outcome (rendered as inline SVG,
    so it reads without JavaScript and needs no inline script or style)."""
    buckets = series["buckets"]
    counts = series["counts"]
    totals = [sum(counts[o][i] for o in counts) for i in range(len(buckets))]
    top = max([1, *totals])
    left, bottom, plot_h = 36, 24, height - 40
    step = (width - left - 8) / max(1, len(buckets))
    bars = []
    for i, bucket in enumerate(buckets):
        y = height - bottom
        for outcome, values in counts.items():
            n = values[i]
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            bars.append({"x": round(left + i * step + 1, 1), "y": round(y, 1),
                         "w": round(max(step - 2, 1), 1), "h": round(h, 1),
                         "fill": OUTCOME_COLOURS.get(outcome, "#555"), "outcome": outcome,
                         "count": n, "hour": bucket,
                         "label": f"{_when(bucket)}: {n} {outcome}"})
    ticks = [{"x": round(left + i * step, 1), "label": _when(b)[11:16]}
             for i, b in enumerate(buckets) if i % 4 == 0]
    return {"width": width, "height": height, "bars": bars, "top": top, "ticks": ticks,
            "axis_y": height - bottom, "left": left,
            "legend": [{"outcome": o, "fill": OUTCOME_COLOURS.get(o, "#555"),
                        "total": sum(v)} for o, v in counts.items()],
            "total": sum(totals)}


def reason_bars(reasons: list[tuple[str, int]], width: int = 320) -> dict[str, Any]:
    """Horizontal bars: refusals by reason code."""
    top = max([1, *(n for _, n in reasons)])
    rows = [{"reason": r, "count": n, "y": 8 + i * 26, "w": round(120 * n / top, 1)}
            for i, (r, n) in enumerate(reasons[:12])]
    return {"width": width, "height": 16 + 26 * max(1, len(rows)), "rows": rows}


def as_markup(text: str) -> Markup:
    return Markup(text)
