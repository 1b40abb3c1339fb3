"""Audited exports: the only place (with `doudi score --out`) that re-identifies households.

- `export_township`: the caseworker sheet of one township's new alerts
  (docs/caseworker-sheet.md): an Excel workbook, one worksheet per village, that is a
  work order (who, where, why, what to do first, by when) and a return form (verdict
  columns with drop-downs), and the same rows as a GBK CSV. Household numbers, the
  heads' names and phones come from the vault (audited), the head's ID number only
  masked, village names from the `divisions` feed. The exported alerts are dispatched
  and one export-audit row is written (who = settings.operator, when, township, how
  many households, the file paths).
- `write_operator_export`: every in-scope household's score for the operator, keyed by
  the original household number (CSV or Parquet by extension), audited per township.
- `export_new_alerts`: `doudi monthly`'s loop: every township with new alerts.

Files holding re-identified data are created 0600. Text is written as text, never as a
formula, and a bad character never fails an export (`doudi.safe_text`). Each export is
all or nothing (`serving.staging`): files staged privately, the audit row and the
dispatch committed in one transaction, then the files moved into place; a crashed
export is finished or deleted by the next run over its folder (`recover_exports`).
Errors name the alert id, never a household number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from doudi.contract import TOWNSHIP_DIGITS, township_of
from doudi.errors import UserError
from doudi.months import Month
from doudi.safe_text import csv_text, encode_gbk
from doudi.settings import Settings
from features.divisions import division_names
from ingest.vault import Identity, VaultCache, contact_details, reidentify
from serving.sheet import ALERT_ID, SHEET_COLUMNS, respond_by
from serving.staging import Recovered, Staging, recover
from serving.store import AlertStore, alerts_for_export
from serving.work_order import Contacts, WorkOrder, work_order
from serving.workbook import RenderError, write_workbook

# CSV fields a spreadsheet must keep verbatim (household number, ID, phone, alert id,
# month and date): written with a leading tab (`doudi.safe_text.csv_text`).
SHEET_VERBATIM = frozenset(c.header for c in SHEET_COLUMNS if c.verbatim)
# Cells doudi composes of lines: one per line in the workbook, `；`-joined in the CSV.
SHEET_MULTILINE = frozenset(c.header for c in SHEET_COLUMNS if c.multiline)
OPERATOR_COLUMNS = ["household_id", "as_of", "risk", "tier", "risk_types", "departments",
                    "reasons", "rule_triggers", "model_version"]


class ExportError(UserError):
    """An export failed; nothing of it is visible (or, after its commit, the next run
    finishes it). The message names alert ids and townships, never a household number."""


@dataclass(frozen=True)
class TownshipExport:
    township_code: str
    workbook: Path
    csv: Path
    households: int
    audit_id: int
    gbk_escaped: int = 0  # characters GBK lacks, written as escapes in the CSV


@dataclass(frozen=True)
class MonthlyExports:
    """`export_new_alerts`: the townships exported and staging folders recovered."""

    exports: list[TownshipExport] = field(default_factory=list)
    recovered: list[Recovered] = field(default_factory=list)


@dataclass
class ExportRun:
    """What every township's export in one run reads alike, read once: the vault's tables
    (`VaultCache`; each township's reads are still audited with its own purpose) and the
    division names of a month. One run only: it holds raw identifiers in memory."""

    settings: Settings
    vault: VaultCache = field(init=False)
    _divisions: dict[Month, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vault = VaultCache(self.settings.vault_dir)

    def division_names(self, month: Month) -> dict[str, str]:
        if month not in self._divisions:
            self._divisions[month] = division_names(self.settings.warehouse_dir, month)
        return self._divisions[month]


def _identities(keys: Iterable[str], settings: Settings, purpose: str,
                cache: VaultCache | None = None) -> dict[str, Identity]:
    return reidentify(keys, settings, purpose=purpose, cache=cache)


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


def _row_error(label: str, exc: Exception | str) -> ExportError:
    # The exception's own text may quote the value (openpyxl does): name the row only.
    kind = exc if isinstance(exc, str) else type(exc).__name__
    return ExportError(f"{label}: its row could not be written ({kind}); "
                       "nothing of this export was kept")


def _row_labels(sheet: pd.DataFrame) -> list[str]:
    if ALERT_ID.header in sheet.columns:
        return [f"alert {v}" for v in sheet[ALERT_ID.header]]
    return [f"row {i}" for i in range(2, len(sheet) + 2)]


def write_csv(sheet: pd.DataFrame, path: Path, *, encoding: str = "gbk",
              verbatim: Iterable[str] = SHEET_VERBATIM) -> int:
    """The sheet as CSV, every field text-as-text (`doudi.safe_text.csv_text`).

    GBK: characters it lacks are written as escapes (`\\U0001f600`); returns how many.
    """
    keep = [name in set(verbatim) for name in sheet.columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([csv_text(name) for name in sheet.columns])
    for label, row in zip(_row_labels(sheet), sheet.itertuples(index=False), strict=True):
        try:
            writer.writerow([_csv_field(v, k) for v, k in zip(row, keep, strict=True)])
        except Exception as exc:
            raise _row_error(label, exc) from None
    text = buffer.getvalue()
    if encoding == "gbk":
        data, escaped = encode_gbk(text)
    else:
        data, escaped = text.encode(encoding), 0
    with path.open("wb") as fh:
        fh.write(data)
    return escaped


def _csv_field(value: Any, verbatim: bool) -> Any:
    if isinstance(value, bool | int | float) and not isinstance(value, str):
        return value if value == value else ""
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _csv_field(value.item(), verbatim)
    return csv_text(value, verbatim=verbatim)


def known_townships(settings: Settings) -> list[str]:
    """Townships (first 9 digits of a village code) on the warehouse's households roster."""
    import duckdb

    from features.asof import partition_files

    files = partition_files(settings.warehouse_dir, "households", None, date(9999, 12, 31))
    if not files:
        return []
    paths = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT DISTINCT substr(village_code, 1, {TOWNSHIP_DIGITS}) "
                       f"FROM read_parquet({paths}, hive_partitioning=false, "
                       "union_by_name=true) ORDER BY 1").fetchall()
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


def recover_exports(store: AlertStore, folder: Path) -> Recovered:
    """Finish committed and delete abandoned exports a crash left in `folder`."""
    return recover(folder, store.export_committed)


def export_township(store: AlertStore, township_code: str, settings: Settings,
                    out_dir: Path, as_of: Month | None = None,
                    run: ExportRun | None = None) -> TownshipExport:
    """Write one township's new alerts (xlsx + GBK CSV), dispatch them, audit the export.

    `as_of` names the files' month (default: the newest alert's month). A code that is
    not a township on the roster is a UserError before anything is written. All or
    nothing: on any error no file is visible, no alert dispatched, no audit row written.
    `run`: reads shared by the townships of one run (`ExportRun`), else read here.
    """
    if not (len(township_code) == 9 and township_code.isdigit()):
        raise UserError(f"a township code has 9 digits, not {township_code!r}")
    recover_exports(store, out_dir)
    alerts, order, month = _township_rows(store, township_code, settings, as_of, run)
    keys = alerts["household_key"].astype(str).tolist()
    alert_ids = alerts["alert_id"].astype(int).tolist()

    stamp = store.now().strftime("%Y%m%dT%H%M%S")
    with Staging.create(out_dir) as stage:
        # The token's head keeps two exports of one second apart (and names the audit's files).
        stem = f"alerts_{township_code}_{month}_{stamp}_{stage.token[:6]}"
        workbook, csv_path = stage.final(f"{stem}.xlsx"), stage.final(f"{stem}.csv")
        pages = [(order.village_names[code], rows) for code, rows in order.villages()]
        try:
            write_workbook(pages, stage.file(workbook.name), order.title, month.end)
        except RenderError as exc:
            raise _row_error(exc.label, exc.cause_name) from None
        escaped = write_csv(flat_lines(order.sheet), stage.file(csv_path.name))
        stage.seal()
        audit_id = store.record_export(alert_ids, actor=settings.operator,
                                       township_code=township_code,
                                       file_path=f"{workbook};{csv_path}",
                                       export_token=stage.token)
        stage.committed = True
        _publish(stage, f"township {township_code} (audit #{audit_id})")
    return TownshipExport(township_code, workbook, csv_path, len(set(keys)), audit_id, escaped)


def flat_lines(sheet: pd.DataFrame) -> pd.DataFrame:
    """The CSV's rows: a multi-line cell's lines `；`-joined (one record per line)."""
    lines = [h for h in sheet.columns if h in SHEET_MULTILINE]
    return sheet.assign(**{h: [str(t).replace("\n", "；") for t in sheet[h]] for h in lines})


def _township_rows(store: AlertStore, township_code: str, settings: Settings,
                   as_of: Month | None, run: ExportRun | None = None,
                   ) -> tuple[pd.DataFrame, WorkOrder, Month]:
    """The township's new alerts, their work order (households re-identified from the
    vault: numbers, heads' ID numbers, names and phones) and the month that names the
    files."""
    alerts = alerts_for_export(store, township_code, max_reasons=settings.max_reasons)
    if alerts.empty:  # with alerts it is a township; without, it must be on the roster
        check_townships(settings, [township_code])
    # The query filters by township already; a sheet must never carry a neighbour's household.
    foreign = alerts["village_code"].astype(str).map(township_of) != township_code
    if foreign.any():
        raise RuntimeError(f"{int(foreign.sum())} alert(s) outside township {township_code}")
    keys = alerts["household_key"].astype(str).tolist()
    month = as_of or (Month.of(max(alerts["as_of"])) if len(alerts) else Month.today())
    contacts = _contacts(settings, township_code, month, keys,
                         None if run is None else run.vault)
    names = run.division_names(month) if run else division_names(settings.warehouse_dir, month)
    order = work_order(township_code, alerts, contacts, month=month,
                       respond_by=respond_by(store.now(), settings.response_days),
                       division_names=names,
                       first_step_table=settings.first_steps)
    return alerts, order, month


def _contacts(settings: Settings, township_code: str, month: Month,
              keys: list[str], cache: VaultCache | None = None) -> Contacts:
    """Everything the sheet shows from the vault: two audited reads (identifiers; names
    and phones), each logged with this purpose."""
    if not keys:
        return Contacts({})
    heads = head_person_keys(settings, township_code, month.end, keys)
    purpose = f"caseworker export township {township_code} as of {month}"
    found = _identities([*keys, *heads.values()], settings, purpose, cache)
    _require_all(keys, found, "household number")
    details = contact_details([*keys, *heads.values()], settings, purpose=purpose,
                              cache=cache)
    return Contacts(
        household_ids={k: found[k].identifier for k in keys},
        head_keys=heads,
        person_ids={p: found[p].identifier for p in heads.values() if p in found},
        names=details.names,
        phones=details.phones,
    )


def _publish(stage: Staging, what: str) -> None:
    try:
        stage.publish()
    except OSError as exc:
        raise ExportError(
            f"{what}: committed, but its files could not be moved into {stage.folder} "
            f"({exc.strerror or type(exc).__name__}); run the export again to finish it"
        ) from None


def monthly_export_dir(settings: Settings, as_of: Month) -> Path:
    return settings.home / "exports" / str(as_of)


def export_new_alerts(store: AlertStore, settings: Settings, as_of: Month) -> MonthlyExports:
    """`doudi monthly`'s exports: every township with new alerts, to `exports/<as_of>/`.

    First finishes or deletes what a crashed run left under `exports/` (any month).
    One township's failure does not stop the others; afterwards an ExportError names
    every failed township (rerunning retries exactly those: the others are dispatched).
    """
    from serving.store import list_alerts

    root = settings.home / "exports"
    recovered = [recover_exports(store, root)]
    if root.is_dir():
        recovered += [recover_exports(store, sub) for sub in sorted(root.iterdir())
                      if sub.is_dir() and not sub.is_symlink()]
    out_dir = monthly_export_dir(settings, as_of)
    new = list_alerts(store, status="new")
    done = MonthlyExports(recovered=recovered)
    failed: list[str] = []
    run = ExportRun(settings)
    for township in sorted(set(new["township_code"].astype(str))):
        try:
            done.exports.append(export_township(store, township, settings, out_dir, as_of,
                                                run))
        except UserError as exc:
            failed.append(f"township {township}: {exc}")
    if failed:
        raise ExportError(f"{len(failed)} of {len(failed) + len(done.exports)} township "
                          f"export(s) failed (the others are exported): {failed[0]}"
                          + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""))
    return done


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
    """Write the operator export (.csv or .parquet); returns rows. Audited per township.

    Staged beside `path`, audited, then renamed onto it: `path` is the whole new export
    or (after any failure) untouched. The CSV is UTF-8 with text-as-text fields (no
    formula; identifiers without a tab, so they match the departments' numbers);
    Parquet keeps the exact values (typed strings, read by programs, not spreadsheets).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"--out must end in .csv or .parquet, not {path.name!r}")
    keys = scored["household_key"].astype(str).tolist()
    as_of = scored["as_of"].iloc[0] if len(scored) else ""
    found = _identities(keys, settings, f"operator score export as of {as_of}")
    _require_all(keys, found, "household number")
    frame = operator_frame(scored, found)
    townships = scored["village_code"].astype(str).map(township_of).value_counts().sort_index()
    counts = [(str(code), int(count)) for code, count in townships.items()]
    recover_exports(store, path.parent)  # a crashed earlier --out lands before this one
    with Staging.create(path.parent) as stage:
        staged = stage.file(path.name)
        if suffix == ".csv":
            write_csv(frame, staged, encoding="utf-8", verbatim=())
        else:
            frame.to_parquet(staged, index=False)
        stage.seal()
        store.record_audits(counts, actor=settings.operator, file_path=path,
                            export_token=stage.token)
        stage.committed = True
        _publish(stage, f"operator export {path.name}")
    return len(frame)
