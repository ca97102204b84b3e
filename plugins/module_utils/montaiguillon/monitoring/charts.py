"""Small inline SVG charts for the status page (status.py): stdlib only, no JavaScript.

Each chart is one ``<svg>`` element sized by the page's CSS. A mark's class is
its level (``ok``, ``warn``, ``bad``), which the page colours; its ``<title>``
is the tooltip a browser shows on hover. Every text that goes into the markup
is escaped here: callers pass plain strings.
"""

from html import escape

WIDTH, HEIGHT, TOP, GAP = 600, 120, 14, 2
LEVELS = ("ok", "warn", "bad")


def _level(level):
    return level if level in LEVELS else "none"


def _frame(label, unit, top, marks):
    """The ``<svg>`` around ``marks`` with its accessible name and the value of its top line."""
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}"'
        f' xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
        f'<line class="axis" x1="0" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>'
        f'<text class="scale" x="2" y="{TOP - 3}">{escape(_number(top))} {escape(unit)}</text>'
        f"{''.join(marks)}</svg>"
    )


def _number(value):
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _height(value, top):
    return (HEIGHT - TOP) * value / top if top > 0 else 0


def bars(items, label, unit):
    """A bar chart, oldest left: ``items`` is ``[(value, level, tooltip)]``; "" when there is none."""
    items = [item for item in items if item[0] >= 0]
    if not items:
        return ""
    top = max(value for value, _level_name, _tip in items) or 1
    width = WIDTH / len(items)
    marks = []
    for index, (value, level, tip) in enumerate(items):
        height = max(_height(value, top), 1)
        marks.append(
            f'<rect class="bar {_level(level)}" x="{index * width + GAP / 2:.1f}" y="{HEIGHT - height:.1f}"'
            f' width="{max(width - GAP, 1):.1f}" height="{height:.1f}"><title>{escape(tip)}</title></rect>'
        )
    return _frame(label, unit, top, marks)


def line(points, label, unit):
    """Points joined by a line, placed by time: ``points`` is ``[(when, value, level, tooltip)]``, "" when none."""
    points = sorted((p for p in points if p[1] >= 0), key=lambda p: p[0])
    if not points:
        return ""
    top = max(p[1] for p in points) or 1
    first, span = points[0][0], (points[-1][0] - points[0][0]) or 1
    margin = 8

    def place(when, value):
        x = WIDTH / 2 if len(points) == 1 else margin + (WIDTH - 2 * margin) * (when - first) / span
        return x, HEIGHT - max(_height(value, top), 1)

    coords = [place(when, value) for when, value, _level_name, _tip in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    marks = [f'<polyline class="trend" points="{path}"/>']
    for (x, y), (_when, _value, level, tip) in zip(coords, points, strict=True):
        circle = f'<circle class="point {_level(level)}" cx="{x:.1f}" cy="{y:.1f}" r="4">'
        marks.append(f"{circle}<title>{escape(tip)}</title></circle>")
    return _frame(label, unit, top, marks)
