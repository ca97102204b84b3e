"""How status.py shows its sections: one self-contained HTML page, or aligned text for a terminal.

A section (see status.section) holds plain strings: the title, facts
``(element id, label, value, level)``, a table ``(id, headers, [(row id, cells)])``
whose cells are a string or ``(string, level)``, a note, and an SVG chart
from charts.py (already escaped). Everything else is escaped here, once: the
values come from files on the server. Levels (``ok``, ``warn``, ``bad``) are
the green, amber and red badges. Stdlib only, installed beside status.py.
"""

import html

GENERATOR = "montaiguillon status.py"
ANSI = {"ok": "32", "warn": "33", "bad": "31"}
CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#1f2328}
h1{font-size:1.4rem;margin:0}header p{color:#59636e;margin:.2rem 0 1rem}
section{border:1px solid #d1d9e0;border-radius:6px;padding:.6rem 1rem;margin:0 0 1rem}
h2{font-size:1.1rem;margin:.2rem 0 .5rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0 0 .5rem}dt{color:#59636e}dd{margin:0}
table{border-collapse:collapse;width:100%;margin:.3rem 0}th,td{text-align:left;padding:.15rem .5rem .15rem 0}
th{color:#59636e;font-weight:normal;border-bottom:1px solid #d1d9e0}td{font-variant-numeric:tabular-nums}
.badge{border-radius:1em;padding:0 .6em;color:#fff;white-space:nowrap}
.badge.ok{background:#1a7f37}.badge.warn{background:#9a6700}.badge.bad{background:#cf222e}
.no-data{color:#59636e;font-style:italic}
svg.chart{width:100%;height:8rem}.axis{stroke:#d1d9e0}.scale{font-size:11px;fill:#59636e}
.trend{fill:none;stroke:#8c959f;stroke-width:1.5}
.ok{fill:#1a7f37}.warn{fill:#bf8700}.bad{fill:#cf222e}.none{fill:#8c959f}
"""


def html_value(value, level):
    escaped = html.escape(value)
    return f'<span class="badge {level}">{escaped}</span>' if level else escaped


def html_table(key, headers, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row_id, cells in rows:
        tds = "".join(f"<td>{html_value(*c) if isinstance(c, tuple) else html.escape(c)}</td>" for c in cells)
        body.append(f'<tr id="{html.escape(row_id)}">{tds}</tr>' if row_id else f"<tr>{tds}</tr>")
    return f'<table id="{html.escape(key)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def html_section(sec):
    parts = [f'<section id="{html.escape(sec["key"])}">', f"<h2>{html.escape(sec['title'])}</h2>"]
    if sec["note"]:
        parts.append(f'<p class="no-data">{html.escape(sec["note"])}</p>')
    if sec["facts"]:
        items = (
            f'<dt>{html.escape(label)}</dt><dd id="{html.escape(key)}">{html_value(value, level)}</dd>'
            for key, label, value, level in sec["facts"]
        )
        parts.append(f"<dl>{''.join(items)}</dl>")
    if sec["table"]:
        parts.append(html_table(*sec["table"]))
    if sec["chart"]:
        parts.append(f'<figure class="chart">{sec["chart"]}</figure>')
    parts.append("</section>")
    return "\n".join(parts)


def html_page(sections, title, generated):
    """The whole page: ``generated`` is ``(ISO 8601 time, the same for a person)``."""
    stamp, shown = generated
    body = "\n".join(html_section(sec) for sec in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{GENERATOR}">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{html.escape(title)}</h1>
<p id="generated-at">generated <time datetime="{html.escape(stamp)}">{html.escape(shown)}</time></p></header>
<main>
{body}
</main>
</body>
</html>
"""


def plain(value):
    """A value from a file, safe for a terminal: control characters (escape sequences, newlines) shown as ?."""
    return "".join(c if c.isprintable() else "?" for c in value)


def paint(value, level, colour, width=0):
    padded = plain(value).ljust(width)
    return f"\033[{ANSI[level]}m{padded}\033[0m" if colour and level in ANSI else padded


def text_table(headers, rows, colour):
    cells = [[(c, None) if isinstance(c, str) else c for c in row] for _row_id, row in rows]
    widths = [max(len(plain(h)), *(len(plain(r[i][0])) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        line = "  ".join(paint(v, lvl, colour, w) for (v, lvl), w in zip(row, widths, strict=True))
        lines.append(f"  {line}".rstrip())
    return lines


def text_page(sections, title, generated, colour=False):
    """The same facts for a terminal: ``colour`` (ANSI) only when it is one."""
    lines = [f"{plain(title)}  (generated {generated[1]})"]
    for sec in sections:
        lines += ["", sec["title"]]
        if sec["note"]:
            lines.append(f"  {plain(sec['note'])}")
        width = max((len(plain(label)) for _key, label, _value, _level in sec["facts"]), default=0)
        lines += [f"  {plain(label).ljust(width)}  {paint(v, lvl, colour)}" for _key, label, v, lvl in sec["facts"]]
        if sec["table"]:
            lines += text_table(sec["table"][1], sec["table"][2], colour)
    return "\n".join(lines) + "\n"
