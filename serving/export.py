"""Audited exports: the only place (with `doudi score --out`) that re-identifies households.

- `export_township`: the caseworker sheet of one township's new alerts, as an Excel
  workbook readable on a phone (few columns, wrapped Chinese text, frozen header) and
  a GBK CSV. Household numbers come from the vault, the head's ID number only masked.
  The exported alerts are dispatched and one export-audit row is written (who =
  settings.operator, when, township, how many households, the file paths).
- `write_operator_export`: every in-scope household's score for the operator, keyed by
  the original household number (CSV or Parquet by extension), audited per township.

Files holding re-identified data are created 0600.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.errors import UserError
from doudi.idnumber import mask_id
from doudi.months import Month
from doudi.settings import Settings
from ingest.vault import Identity, reidentify
from serving.store import AlertStore, alerts_for_export
from serving.store.models import ExportAudit

TIER_ZH = {"red": "红色", "orange": "橙色", "yellow": "黄色", "none": ""}
# Caseworker sheet: header -> column width (characters); reasons get the room.
SHEET_COLUMNS: dict[str, int] = {
    "户编号": 20,
    "村代码": 14,
    "分层": 6,
    "风险类型": 14,
    "预警原因": 60,
    "帮扶部门": 14,
    "户主身份证号": 20,
    "预警编号": 10,
}
OPERATOR_COLUMNS = ["household_id", "as_of", "risk", "tier", "risk_types", "departments",
                    "reasons", "rule_triggers", "model_version"]


@dataclass(frozen=True)
class TownshipExport:
    township_code: str
    workbook: Path
    csv: Path
    households: int
    audit_id: int


def _private_file(path: Path) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)


def _identities(keys: Iterable[str], settings: Settings, purpose: str) -> dict[str, Identity]:
    return reidentify(keys, settings, purpose=purpose)


def _require_all(keys: Sequence[str], found: dict[str, Identity], what: str) -> None:
    lacking = [k for k in keys if k not in found]
    if lacking:
        raise UserError(f"the vault has no {what} for {len(lacking)} of {len(keys)} "
                        "household(s); re-run ingest for their deliveries before exporting")


def head_person_keys(settings: Settings, township_code: str, as_of: date,
                     household_keys: Iterable[str]) -> dict[str, str]:
    """household_key -> head_person_key from the warehouse roster known at `as_of`."""
    from features.asof import read_feed_as_of

    roster = read_feed_as_of(settings.warehouse_dir, "households", as_of,
                             county=township_code[:6],
                             columns=["household_key", "head_person_key"])
    wanted = set(household_keys)
    roster = roster[roster["household_key"].isin(wanted)]
    return dict(zip(roster["household_key"].astype(str), roster["head_person_key"].astype(str),
                    strict=True))


def township_sheet(alerts: pd.DataFrame, households: dict[str, Identity],
                   heads: dict[str, str], people: dict[str, Identity]) -> pd.DataFrame:
    """The caseworker sheet (Chinese headers) from `alerts_for_export` rows."""
    def reasons(row: pd.Series) -> str:
        texts = [row[f"reason_{r}"] for r in range(1, 5)
                 if isinstance(row.get(f"reason_{r}"), str) and row[f"reason_{r}"]]
        return "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))

    def masked_head(key: str) -> str:
        person = heads.get(key)
        identity = people.get(person) if person else None
        return mask_id(identity.identifier) if identity else ""

    keys = alerts["household_key"].astype(str).tolist()
    return pd.DataFrame({
        "户编号": [households[k].identifier for k in keys],
        "村代码": alerts["village_code"].astype(str).tolist(),
        "分层": [TIER_ZH.get(t, t) for t in alerts["tier"]],
        "风险类型": ["、".join(RISK_TYPES[t] for t in str(v).split(";") if t)
                 for v in alerts["risk_types"]],
        "预警原因": [reasons(row) for _, row in alerts.iterrows()],
        "帮扶部门": alerts["departments_zh"].fillna("").astype(str).tolist(),
        "户主身份证号": [masked_head(k) for k in keys],
        "预警编号": alerts["alert_id"].astype(int).tolist(),
    }, columns=list(SHEET_COLUMNS))


def write_workbook(sheet: pd.DataFrame, path: Path, title: str) -> None:
    """A phone-readable workbook: wrapped text, frozen header row, set column widths."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    ws = book.active
    ws.title = title[:31]
    ws.append(list(sheet.columns))
    for row in sheet.itertuples(index=False):
        ws.append(list(row))
    wrap = Alignment(wrap_text=True, vertical="top")
    for cells in ws.iter_rows():
        for cell in cells:
            cell.alignment = wrap
            cell.font = Font(size=12, bold=cell.row == 1)
    for i, width in enumerate(SHEET_COLUMNS.values(), 1):
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    ws.page_setup.fitToWidth = 1
    _private_file(path)
    book.save(path)


def known_townships(settings: Settings) -> list[str]:
    """Townships (first 9 digits of a village code) on the warehouse's households roster."""
    import duckdb

    from features.asof import partition_files

    files = partition_files(settings.warehouse_dir, "households", None, date(9999, 12, 31))
    if not files:
        return []
    paths = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT DISTINCT substr(village_code, 1, 9) FROM read_parquet({paths}, "
                       "hive_partitioning=false, union_by_name=true) ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows if r[0]]


def check_townships(settings: Settings, codes: Sequence[str]) -> None:
    """A one-line UserError for the first code that is malformed or not on the roster."""
    known: list[str] | None = None
    for code in codes:
        if not (len(code) == 9 and code.isdigit()):
            raise UserError(f"--township {code!r}: a township code has 9 digits")
        known = known_townships(settings) if known is None else known
        if code not in known:
            shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
            raise UserError(
                f"--township {code}: no such township on the roster"
                + (f" (known: {shown}; {len(known)} in all)" if known
                   else " (the warehouse has no households yet: run `doudi ingest`)")
            )


def export_township(store: AlertStore, township_code: str, settings: Settings,
                    out_dir: Path, as_of: Month | None = None) -> TownshipExport:
    """Write one township's new alerts (xlsx + GBK CSV), dispatch them, audit the export.

    `as_of` names the files' month (default: the newest alert's month). A code that is
    not a township on the roster is a UserError before anything is written.
    """
    if not (len(township_code) == 9 and township_code.isdigit()):
        raise UserError(f"a township code has 9 digits, not {township_code!r}")
    alerts = alerts_for_export(store, township_code)
    if alerts.empty:  # with alerts it is a township; without, it must be on the roster
        check_townships(settings, [township_code])
    # The query filters by township already; a sheet must never carry a neighbour's household.
    foreign = alerts["village_code"].astype(str).str[:9] != township_code
    if foreign.any():
        raise RuntimeError(f"{int(foreign.sum())} alert(s) outside township {township_code}")
    keys = alerts["household_key"].astype(str).tolist()
    month = as_of or (Month.of(max(alerts["as_of"])) if len(alerts) else Month.today())
    heads = head_person_keys(settings, township_code, month.end, keys) if keys else {}
    purpose = f"caseworker export township {township_code} as of {month}"
    found = _identities([*keys, *heads.values()], settings, purpose) if keys else {}
    _require_all(keys, found, "household number")
    sheet = township_sheet(alerts, found, heads, found)

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = store.now().strftime("%Y%m%dT%H%M%S")
    stem = f"alerts_{township_code}_{month}_{stamp}"
    workbook, csv = out_dir / f"{stem}.xlsx", out_dir / f"{stem}.csv"
    write_workbook(sheet, workbook, f"{township_code} 预警")
    _private_file(csv)
    flat = sheet.assign(预警原因=[str(t).replace("\n", "；") for t in sheet["预警原因"]])
    flat.to_csv(csv, index=False, encoding="gbk")
    audit_id = store.record_export(alerts["alert_id"].astype(int).tolist(),
                                   actor=settings.operator, township_code=township_code,
                                   file_path=f"{workbook};{csv}")
    return TownshipExport(township_code, workbook, csv, len(set(keys)), audit_id)


def operator_frame(scored: pd.DataFrame, households: dict[str, Identity]) -> pd.DataFrame:
    """`score` output keyed by the original household number (one row per household)."""
    keys = scored["household_key"].astype(str).tolist()
    return pd.DataFrame({
        "household_id": [households[k].identifier for k in keys],
        "as_of": scored["as_of"].astype(str).tolist(),
        "risk": scored["risk"].to_numpy(),
        "tier": scored["tier"].astype(str).tolist(),
        "risk_types": [";".join(t) for t in scored["risk_types"]],
        "departments": [";".join(d) for d in scored["departments"]],
        "reasons": ["；".join(r.text_zh for r in rs) for rs in scored["reasons"]],
        "rule_triggers": [";".join(t) for t in scored["rule_triggers"]],
        "model_version": scored["model_version"].astype(str).tolist(),
    }, columns=OPERATOR_COLUMNS)


def write_operator_export(scored: pd.DataFrame, path: Path, settings: Settings,
                          store: AlertStore) -> int:
    """Write the operator export (.csv or .parquet); returns rows. Audited per township."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"--out must end in .csv or .parquet, not {path.name!r}")
    keys = scored["household_key"].astype(str).tolist()
    as_of = scored["as_of"].iloc[0] if len(scored) else ""
    found = _identities(keys, settings, f"operator score export as of {as_of}")
    _require_all(keys, found, "household number")
    frame = operator_frame(scored, found)
    path.parent.mkdir(parents=True, exist_ok=True)
    _private_file(path)
    if suffix == ".csv":
        frame.to_csv(path, index=False, encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)
    townships = scored["village_code"].astype(str).str[:9].value_counts().sort_index()
    counts = [(str(code), int(count)) for code, count in townships.items()]
    record_operator_audit(store, settings.operator, counts, path)
    return len(frame)


def record_operator_audit(store: AlertStore, actor: str,
                          township_counts: Iterable[tuple[str, int]], path: Path) -> list[int]:
    """One export-audit row per township of an operator export (nothing is dispatched)."""
    now = store.now()
    with store.transaction() as session:
        rows = [ExportAudit(actor=actor, at=now, township_code=str(code),
                            household_count=int(count), file_path=str(path))
                for code, count in township_counts]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]
