"""Bar charts of outcomes per minute, drawn on the server as SVG (no script, no inline style:
colours come from the stylesheet's classes, light and dark)."""

from __future__ import annotations

from markupsafe import Markup, escape

from app.ui.reads import Minutes

WIDTH, HEIGHT, TOP = 720, 140, 10


def bars(minutes: Minutes, *, label: str) -> Markup:
    """Succeeded jobs up, failed attempts (retried and dead-lettered) stacked on them."""
    grouped = minutes.counts
    ok, retried, failed = grouped["succeeded"], grouped["retried"], grouped["failed"]
    totals = [a + b + c for a, b, c in zip(ok, retried, failed, strict=True)]
    peak = max(totals, default=0) or 1
    width = WIDTH / max(1, len(totals))
    scale = (HEIGHT - TOP) / peak
    parts = []
    for n, (a, b, c) in enumerate(zip(ok, retried, failed, strict=True)):
        x = n * width
        y = float(HEIGHT)
        for value, css in ((a, "ok"), (b, "retried"), (c, "failed")):
            if value:
                h = max(1.0, value * scale)
                y -= h
                parts.append(
                    f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{max(1.0, width - 1):.1f}" height="{h:.1f}"/>'
                )
    summary = (
        f"{label}: {minutes.total('succeeded')} succeeded, {minutes.total('retried')} attempts failed and retried, "
        f"{minutes.total('failed')} failed for good; the highest bar is {max(totals, default=0)}"
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(summary)}"><title>{escape(summary)}</title>'
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>{"".join(parts)}</svg>'
    )
