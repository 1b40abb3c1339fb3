"""Generate the feed tables of `docs/data-contract.md` from `doudi.contract`.

`python -m doudi.contract_doc` rewrites the generated block of the doc in place;
a test fails when the committed doc is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from doudi.contract import FEEDS, Column, Kind

BEGIN = "<!-- BEGIN GENERATED FEEDS (python -m doudi.contract_doc) -->"
END = "<!-- END GENERATED FEEDS -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "data-contract.md"

_KIND_TEXT = {
    Kind.ID: "ID number (18 chars)",
    Kind.STR: "text",
    Kind.VILLAGE: "12-digit village code",
    Kind.ENUM: "code",
    Kind.ENUM_LIST: "codes, `;`-separated",
    Kind.DATE: "date `YYYY-MM-DD`",
    Kind.MONTH: "month `YYYY-MM`",
    Kind.INT: "integer",
    Kind.FLOAT: "number",
    Kind.MONEY: "yuan",
    Kind.BOOL: "true/false, 1/0, 是/否",
}


def _values(c: Column) -> str:
    parts: list[str] = []
    if c.enum:
        parts.append(", ".join(f"`{k}`" + (f" {zh}" if zh else "") for k, zh in c.enum.items()))
    if c.kind is Kind.MONEY:
        parts.append("may be negative" if c.signed else ">= 0")
    if c.min_value is not None or c.max_value is not None:
        lo = "" if c.min_value is None else f"{c.min_value:g}"
        hi = "" if c.max_value is None else f"{c.max_value:g}"
        parts.append(f"range {lo}..{hi}")
    if c.pattern_text:
        parts.append(c.pattern_text)
    if c.vault_only:
        parts.append("**sensitive**: kept only in the identity vault, never in the warehouse")
    elif c.sensitive:
        parts.append("**sensitive**: pseudonymised at ingest")
    return "; ".join(parts)


def render() -> str:
    out: list[str] = [BEGIN, ""]
    for f in FEEDS:
        need = "required" if f.required else "optional"
        out.append(f"### `{f.name}` — {f.title_zh} ({f.department}), {need}")
        out.append("")
        key = ", ".join(f"`{k}`" for k in f.key)
        out.append(f"One row per {f.grain}. Record key: {key}.")
        if f.event_column:
            out.append(f"`reported_date` may not precede `{f.event_column}`.")
        if f.notes:
            out.append(f.notes)
        out.append("")
        out.append("| column | Chinese header | type | empty allowed | values |")
        out.append("|---|---|---|---|---|")
        for c in f.contract_columns:
            empty = "yes" if c.nullable else "no"
            kind = _KIND_TEXT[c.kind]
            out.append(f"| `{c.name}` | {c.alias} | {kind} | {empty} | {_values(c)} |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def updated(text: str) -> str:
    """`text` with its generated block replaced by the current one."""
    head, sep, rest = text.partition(BEGIN)
    if not sep:
        raise ValueError(f"{DOC} has no {BEGIN!r} marker")
    _, sep2, tail = rest.partition(END)
    if not sep2:
        raise ValueError(f"{DOC} has no {END!r} marker")
    return head + render() + tail


def main() -> None:
    DOC.write_text(updated(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"updated {DOC}\n")


if __name__ == "__main__":
    main()
