"""Text as text: values doudi writes into spreadsheets, CSV files and HTML never act.

Every value a department delivered (a household number, a name, a village name) is
data. Whatever doudi writes must show it as it is, never run it (a cell `=HYPERLINK(...)`
or `+cmd|' /C calc'!A0`), and never fail on it (a control character, an emoji in a GBK
file, a 128 kB value). One module decides how, for every writer:

- `visible`: control, format and other invisible characters (C0/C1 controls, DEL,
  bidirectional overrides, zero-width characters, surrogates, U+FFFE/U+FFFF, line and
  paragraph separators) become a visible escape: `\\x01`, `\\u202e`. Ingest refuses
  control characters since the contract says so, but a vault filled before may hold them.
- `xlsx_cell`: sets an openpyxl cell; text becomes a typed string cell (`t="inlineStr"`),
  so a leading `=` or an error code like `#N/A` stays text; numbers stay numbers. Text
  longer than Excel's 32,767-character cell limit is cut with a visible marker.
- `csv_text`: the OWASP rule. A value whose first non-blank character is `=`, `+`, `-`,
  `@` (or their full-width forms, or tab, CR, LF) gets a leading apostrophe, which
  Excel, WPS and LibreOffice then show as part of the text. With `verbatim=True` (an
  identifier column: household number, village code) any other non-empty value gets a
  leading tab, the usual convention that makes Excel/WPS keep it as text: a 16-digit
  household number keeps all its digits (no `6.20122E+15`, no rounding after 15
  digits), `0012` keeps its zeros and `2026-06` does not become a date. Never `="..."`:
  that is a formula.
- `encode_gbk`: the CSV stays GBK (what every Chinese Windows tool reads, and what a
  strict GBK reader can decode); a character GBK lacks (an emoji, a rare character)
  becomes its escape `\\U0001f600` and is counted, instead of failing the whole file.
- `html_text`: `visible` then HTML-escaped (`<`, `>`, `&`, quotes).
"""

from __future__ import annotations

import html
import numbers
import unicodedata
from typing import Any

# Excel's limit for one cell's text; longer text is cut with a visible marker.
XLSX_CELL_LIMIT = 32_767
CUT_MARKER = "…[截断]"
# OWASP "CSV injection": characters that make a spreadsheet read a field as a formula.
FORMULA_START = frozenset("=+-@\t\r\n＝＋－＠")
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NONCHARACTERS = frozenset({0xFFFE, 0xFFFF})


def escape_char(char: str) -> str:
    """`\\x01`, `\\u202e`, `\\U0001f600`: a character written as its code, visibly."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _is_invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE or ord(char) in _NONCHARACTERS


def as_text(value: Any) -> str:
    """`None` and NaN as the empty string, anything else as `str`."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else str(value)


def visible(value: Any) -> str:
    """The value as text with every invisible or control character escaped (`\\x01`)."""
    text = as_text(value)
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(escape_char(c) if _is_invisible(c) else c for c in text)


def xlsx_text(value: Any, *, multiline: bool = False) -> str:
    """Text for one spreadsheet cell: visible, at most `XLSX_CELL_LIMIT` characters.

    `multiline`: a cell doudi composed of lines (reasons): its line breaks stay.
    """
    if multiline:
        text = "\n".join(visible(line) for line in as_text(value).split("\n"))
    else:
        text = visible(value)
    if len(text) > XLSX_CELL_LIMIT:
        text = text[: XLSX_CELL_LIMIT - len(CUT_MARKER)] + CUT_MARKER
    return text


def xlsx_cell(cell: Any, value: Any, *, multiline: bool = False) -> None:
    """Set an openpyxl cell: numbers as numbers, everything else as a typed string cell.

    openpyxl turns a string starting with `=` into a formula and `#N/A` into an error
    cell; forcing the data type back to "s" writes it as an inline string instead.
    """
    if isinstance(value, bool):
        cell.value = value
    elif isinstance(value, numbers.Integral):
        cell.value = int(value)
    elif isinstance(value, numbers.Real) and value == value:  # NaN is no number: empty
        cell.value = float(value)
    else:
        text = xlsx_text(value, multiline=multiline)
        cell.value = text or None
        if text:
            cell.data_type = "s"


def csv_text(value: Any, *, verbatim: bool = False) -> str:
    """One CSV field that a spreadsheet shows as text (see the module docstring)."""
    text = visible(value)
    stripped = text.lstrip(" \u3000")
    if stripped and stripped[0] in FORMULA_START:
        return "'" + text
    if verbatim and text:
        return "\t" + text
    return text


def encode_gbk(text: str) -> tuple[bytes, int]:
    """`text` in GBK; characters GBK lacks become `\\U0001f600`. Returns (bytes, count)."""
    try:
        return text.encode("gbk"), 0
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    replaced = 0
    for char in text:
        try:
            char.encode("gbk")
        except UnicodeEncodeError:
            out.append(escape_char(char))
            replaced += 1
        else:
            out.append(char)
    return "".join(out).encode("gbk"), replaced


def html_text(value: Any) -> str:
    """Text for an HTML page: visible, then escaped (`<`, `>`, `&`, quotes)."""
    return html.escape(visible(value), quote=True)
