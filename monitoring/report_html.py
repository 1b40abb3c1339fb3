"""The report's HTML pieces: escaped tables, figures as divs, markdown, the page.

Every value shown goes through `doudi.safe_text.html_text` (a division name or a reason
is text, never markup); figures are plotly divs that share one inlined plotly.js, so the
page opens without a network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from doudi.safe_text import html_text, visible

# Fonts that hold Chinese glyphs, in order: Linux (WenQuanYi, Noto), Windows, macOS.
FONT_FAMILY = ("'WenQuanYi Zen Hei', 'Noto Sans CJK SC', 'Microsoft YaHei', 'PingFang SC', "
               "sans-serif")

CSS = """
body { font-family: %(font)s; margin: 0 auto; max-width: 1280px; padding: 0 24px 48px;
       color: #1f2933; line-height: 1.5; }
h1 { font-size: 26px; margin: 24px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 4px; padding-top: 8px; border-top: 2px solid #d9e2ec; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.en { color: #627d98; font-weight: normal; font-size: 0.8em; margin-left: 0.4em; }
.note { color: #52606d; font-size: 13px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.kpi { border: 1px solid #d9e2ec; border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.kpi b { display: block; font-size: 22px; }
.kpi.alarm { border-color: #e12d39; background: #ffe3e3; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 12px; }
th, td { border: 1px solid #d9e2ec; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.flag { background: #ffe3e3; }
.scroll { max-height: 420px; overflow: auto; display: inline-block; max-width: 100%%; }
nav ol { columns: 2; font-size: 14px; }
.card { border: 1px solid #d9e2ec; border-radius: 6px; padding: 4px 18px; background: #fbfcfd; }
.figure { width: 100%%; }
"""


@dataclass(frozen=True)
class Column:
    """One table column: the frame's column, its Chinese and English headers, a format."""

    name: str
    zh: str
    en: str = ""
    fmt: Callable[[Any], str] | None = None


def number(value: Any, digits: int = 0) -> str:
    """A number with thousands separators; empty for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):,.{digits}f}"


def ratio(value: Any) -> str:
    return number(value, 2)


def percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * float(value):.1f}%"


def heading(zh: str, en: str, *, level: int = 2, anchor: str = "") -> str:
    ident = f' id="{html_text(anchor)}"' if anchor else ""
    return (f"<h{level}{ident}>{html_text(zh)}<span class=\"en\">{html_text(en)}</span>"
            f"</h{level}>")


def paragraph(text: str, *, css: str = "note") -> str:
    return f'<p class="{css}">{html_text(text)}</p>'


def table(frame: pd.DataFrame, columns: Sequence[Column], *,
          flagged: Callable[[pd.Series, str], bool] | None = None, scroll: bool = False) -> str:
    """An HTML table of `frame`'s `columns`, every cell escaped. `flagged(row, column)`
    marks cells to highlight (e.g. a disparity outside the fairness band)."""
    head = "".join(
        f"<th>{html_text(c.zh)}" + (f"<br><span class=\"en\">{html_text(c.en)}</span>"
                                     if c.en else "") + "</th>"
        for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            value = row.get(c.name)
            shown = c.fmt(value) if c.fmt else visible(value)
            css = ["num"] if c.fmt else []
            if flagged is not None and flagged(row, c.name):
                css.append("flag")
            attr = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(shown, quote=True)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    markup = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{markup}</div>' if scroll else markup


def figure(fig: Any) -> str:
    """A plotly figure as a div (plotly.js comes once, in the page's head)."""
    import plotly.io as pio

    fig.update_layout(font={"family": FONT_FAMILY}, template="plotly_white",
                      margin={"t": 60, "l": 60, "r": 30, "b": 60})
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False,
                      config={"displaylogo": False, "responsive": True})
    return f'<div class="figure">{div}</div>'


def label(value: Any) -> str:
    """Text for a figure label: plotly reads labels as a small HTML subset and shows
    entities as characters, so escaped text is shown as it is, never as markup."""
    return html_text(value)


def markdown(text: str) -> str:
    """Markdown (the model card) as HTML; raw HTML in it is shown as text, not run."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    return str(renderer.render(visible_lines(text)))


def visible_lines(text: str) -> str:
    """`visible` per line: control characters escaped, the line breaks kept."""
    return "\n".join(visible(line) for line in text.split("\n"))


def page(title: str, subtitle: str, body: Sequence[str]) -> str:
    """The whole document: plotly.js inlined once in the head, then the sections."""
    from plotly.offline import get_plotlyjs

    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network: scripts and styles are inline; nothing may be fetched from elsewhere.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:\">",
        f"<title>{html_text(title)}</title>",
        f"<style>{CSS % {'font': FONT_FAMILY}}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html_text(title)}</h1>",
        paragraph(subtitle),
        *body,
        "</body></html>",
    ])
