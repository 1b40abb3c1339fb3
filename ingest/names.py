"""Names from outside (file and folder names, header names, the raw folder's path) made
safe to store and to print.

A file name is a side channel: a department may name a file after a person
(`620102197003041234.csv`) or put terminal escape codes in it. Nothing ingest writes
or prints carries such a name as it is:

- `safe_name`: NFKC, then every run of 6+ digits and every ID-number-like or
  phone-like token (11+ digits, single spaces or `-` allowed between them) masked
  with `*`, then every character but ASCII letters, digits, `.`, `-`, `_` and CJK
  ideographs replaced by `_`; long names are cut in the middle. `/` separates path
  parts. The result is what the warehouse (`source_file`), the quarantine, the
  manifest, the reports and every message name.
- `file_ref`: `safe_name(relative path)` + `#` + the first 12 hex of the file's
  sha256, so two files whose names mask alike stay apart and the operator can find
  the file (`sha256sum RAW_DIR/medical/* | grep ^<12 hex>`).
- `printable`: for text the operator typed (the raw folder's path): the same
  masking, and control or invisible characters shown as `\\xNN` / `\\uNNNN` escapes.
"""

from __future__ import annotations

import re
import unicodedata

from doudi.safe_text import escape_char

REF_HEX = 12
NAME_LIMIT = 160  # characters of a safe name (a path) before it is cut in the middle
LABEL_LIMIT = 64  # characters of a header name quoted in a report

# an ID number (17 digits + check character), a phone, or any run of 11+ digits
# written with single spaces or dashes between groups
_LONG_NUMBER = re.compile(r"[0-9](?:[ -]?[0-9]){9,}(?:[ -]?[0-9Xx])")
_DIGIT_RUN = re.compile(r"[0-9]{6,}")
# what survives: ASCII letters and digits, `.`, `-`, `_`, CJK ideographs, and the
# marks this module adds itself (`*` masked digits, `~` a cut)
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-*~\u3400-\u4dbf\u4e00-\u9fff]")


def _mask(text: str) -> str:
    text = _LONG_NUMBER.sub(lambda m: "*" * len(m.group()), text)
    return _DIGIT_RUN.sub(lambda m: "*" * len(m.group()), text)


def _cut(text: str, limit: int) -> str:
    """`text` cut in the middle to `limit` characters (the end, e.g. a suffix, stays)."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 1] + "~" + text[-tail:]


def safe_part(text: str) -> str:
    """One name (no `/`): masked, unsafe characters replaced by `_`."""
    return _UNSAFE.sub("_", _mask(unicodedata.normalize("NFKC", text))) or "_"


def safe_name(relative: str, *, limit: int = NAME_LIMIT) -> str:
    """A relative path (`/`-separated) with every part made safe; at most `limit` chars."""
    return _cut("/".join(safe_part(p) for p in relative.split("/")), limit)


def safe_label(text: str) -> str:
    """A header name as a report may quote it (safe, at most LABEL_LIMIT characters)."""
    return _cut(safe_part(text), LABEL_LIMIT)


def file_ref(relative: str, sha256: str) -> str:
    """What names a raw file everywhere ingest writes or prints."""
    name = safe_name(relative)
    return f"{name}#{sha256[:REF_HEX]}" if sha256 else name


def printable(text: str, *, mask: bool = True) -> str:
    """Text for a terminal or a report: control, format and other invisible characters
    escaped (no escape code reaches the terminal); digits masked unless `mask` is False
    (the workspace's own paths, which a `chmod` line must name exactly)."""
    masked = _mask(unicodedata.normalize("NFKC", text)) if mask else text
    return "".join(escape_char(c) if unicodedata.category(c)[0] in "CZ" and c != " " else c
                   for c in masked)
