"""Hand-made extracts for the ingest tests: a tiny valid delivery plus file writers."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from doudi.contract import feed
from doudi.idnumber import make_id
from doudi.settings import Settings
from doudi.warehouse import table_schema

Row = dict[str, str]

HOUSEHOLDS = [
    # household_id, village_code
    ("H0001", "620102001001"),
    ("H0002", "620102001002"),
    ("H0003", "620103002001"),
]
# person_id per household: head (man) and spouse (woman)
PEOPLE = {
    "H0001": [make_id("620102", date(1970, 3, 4), 11), make_id("620102", date(1972, 5, 6), 12)],
    "H0002": [make_id("620102", date(1965, 1, 2), 31), make_id("620102", date(1990, 7, 8), 32)],
    "H0003": [make_id("620103", date(1980, 12, 31), 51), make_id("620103", date(2008, 2, 29),
                                                                   52)],
}


def households() -> list[Row]:
    return [
        {
            "household_id": hid, "village_code": village, "head_person_id": PEOPLE[hid][0],
            "poverty_history": "former_poor" if i % 2 == 0 else "ordinary",
            "lifted_year": "2019" if i % 2 == 0 else "", "relocated": "false",
            "reported_date": "2024-01-05",
        }
        for i, (hid, village) in enumerate(HOUSEHOLDS)
    ]


def persons() -> list[Row]:
    rows = []
    for hid, people in PEOPLE.items():
        for j, pid in enumerate(people):
            rows.append({
                "person_id": pid, "household_id": hid, "relation": "head" if j == 0 else "spouse",
                "sex": "M" if j == 0 else "F",
                "birth_date": f"{pid[6:10]}-{pid[10:12]}-{pid[12:14]}",
                "ethnicity": "汉族", "status": "living", "status_date": "2024-01-01",
                "reported_date": "2024-01-05",
            })
    return rows


def monitoring_events() -> list[Row]:
    return [{
        "household_id": "H0002", "event_date": "2024-01-10", "event": "identified",
        "category": "marginal", "risk_types": "illness;education", "source": "grassroots_visit",
        "reported_date": "2024-01-15",
    }]


def medical() -> list[Row]:
    return [
        {
            "person_id": pid, "month": "2024-01", "insured": "true", "outpatient_visits": "2",
            "inpatient_days": "0", "total_cost_yuan": "120.50", "reimbursed_yuan": "60.25",
            "out_of_pocket_yuan": "60.25", "serious_illness": "", "reported_date": "2024-02-10",
        }
        for people in PEOPLE.values() for pid in people
    ]


def delivery() -> dict[str, list[Row]]:
    return {"households": households(), "persons": persons(),
            "monitoring_events": monitoring_events(), "medical": medical()}


def csv_text(feed_name: str, rows: list[Row], *, chinese: bool = False,
             extra: dict[str, list[str]] | None = None) -> str:
    spec = feed(feed_name)
    # vault-only columns (names, phones) only when some row has one
    names = [c.name for c in spec.contract_columns
             if not c.vault_only or any(c.name in r for r in rows)]
    header = [spec.column(n).alias if chinese else n for n in names]
    extra = extra or {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header + list(extra))
    for i, row in enumerate(rows):
        writer.writerow([row.get(n, "") for n in names] + [v[i] for v in extra.values()])
    return out.getvalue()


def write_csv(path: Path, feed_name: str, rows: list[Row], *, encoding: str = "utf-8",
              chinese: bool = False, gz: bool = False,
              extra: dict[str, list[str]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = csv_text(feed_name, rows, chinese=chinese, extra=extra).encode(encoding)
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, feed_name: str, table: pa.Table | list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, list):
        names = feed(feed_name).column_names
        table = pa.table({n: pa.array([r.get(n) or None for r in table], pa.string())
                          for n in names})
    pq.write_table(table, path)
    return path


def write_delivery(raw: Path, rows: dict[str, list[Row]] | None = None, *,
                   tag: str = "2024-01", **kwargs: object) -> Path:
    """One CSV per feed under raw/<feed>/<feed>-<tag>.csv."""
    for name, feed_rows in (rows or delivery()).items():
        write_csv(raw / name / f"{name}-{tag}.csv", name, feed_rows, **kwargs)  # type: ignore[arg-type]
    return raw


# -- reading results back --------------------------------------------------
def workspace(tmp_path: Path, name: str = "ws") -> Settings:
    return Settings(home=tmp_path / name, pseudonym_key_file=None)


def warehouse_table(settings: Settings, feed_name: str) -> pa.Table:
    folder = settings.warehouse_dir / feed_name
    schema = table_schema(feed_name)
    if not folder.is_dir():
        return schema.empty_table()
    return ds.dataset(str(folder), format="parquet", schema=schema).to_table()


def quarantine_table(settings: Settings) -> pa.Table:
    files = sorted(str(p) for p in settings.quarantine_dir.glob("*/*.parquet"))
    if not files:
        return pa.table({"feed": [], "source_file": [], "source_row": [], "column": [],
                         "rule": []})
    return pa.concat_tables([pq.read_table(f) for f in files])


def plain(ref: str) -> str:
    """A file reference without its `#<sha256 prefix>` (`ingest.names.file_ref`)."""
    return ref.split("#", 1)[0]


def plains(refs: list[str]) -> list[str]:
    return [plain(r) for r in refs]


def quarantined(settings: Settings) -> set[tuple[str, str, int, str, str]]:
    """(feed, file, row, column, rule) of every quarantine record (file without hash)."""
    t = quarantine_table(settings)
    return set(zip(t["feed"].to_pylist(), plains(t["source_file"].to_pylist()),
                   t["source_row"].to_pylist(), t["column"].to_pylist(), t["rule"].to_pylist(),
                   strict=True))


def file_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (for "unchanged" assertions)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def agriculture_rows() -> list[Row]:
    return [
        {"household_id": hid, "year": "2024", "cultivated_land_mu": "3.5",
         "livestock_units": "1", "cooperative_member": "false",
         "industry_support_yuan": "0", "reported_date": "2024-01-20"}
        for hid, _ in HOUSEHOLDS
    ]


def readable_contents(root: Path, *, skip: tuple[str, ...] = ()) -> str:
    """All text under `root` as a reader would see it: Parquet decoded, other files as text.

    Top-level folders named in `skip` are left out.
    """
    parts = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.relative_to(root).parts[0] in skip:
            continue
        if p.suffix == ".parquet":
            parts.append(str(pq.read_table(p).to_pylist()))
        else:
            parts.append(p.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def disability_rows() -> list[Row]:
    return [{"person_id": PEOPLE["H0001"][1], "certified_date": "2023-06-01",
             "disability_type": "physical", "grade": "2", "living_subsidy": "true",
             "care_subsidy": "false", "reported_date": "2024-01-20"}]


def income_rows() -> list[Row]:
    return [{"household_id": hid, "period_end": "2023-12", "per_capita_net_income_yuan": "8000",
             "wage_income_yuan": "20000", "operating_income_yuan": "3000",
             "property_income_yuan": "0", "transfer_income_yuan": "1000",
             "rigid_expenditure_yuan": "", "reported_date": "2024-01-25"}
            for hid, _ in HOUSEHOLDS]


def division_rows() -> list[Row]:
    return [{"code": "620102", "name": "城关区", "reported_date": "2024-01-02"},
            {"code": "620102001", "name": "城关镇", "reported_date": "2024-01-02"},
            {"code": "620102001001", "name": "兴隆村", "reported_date": "2024-01-02"}]
