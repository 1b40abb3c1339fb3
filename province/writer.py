"""Writing each reported month's rows as real extracts look: mixed formats and quirks.

One file per feed and reported month (`raw/<feed>/<feed>_<YYYY-MM>.<ext>`), in a
format drawn per file: UTF-8 CSV (with or without BOM), GB18030 CSV with Chinese
headers and enum terms, gzip CSV, Parquet with native or string types. Every
contract column is written, the identity-vault ones (`persons.name`,
`households.contact_phone`) included; some files also carry name/phone columns the
contract does not list for that feed. A small share of exact duplicates and of
deliberately broken rows (one defect each) is mixed in: data errors are listed in
`truth/bad_rows.csv`; rows ingest does not reject are listed apart, those reported
before their event (kept with a counted warning) in `truth/warning_rows.csv`, those
of a household never on the roster (held in ingest's `pending/`) in
`truth/pending_rows.csv`.
"""

from __future__ import annotations

import gzip
import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from doudi import contract
from doudi.contract import Column, Kind
from province import timeutil
from province.params import WorldParams
from province.records import VOCAB, Batch, size, take
from province.state import NULL
from province.world import Registry

BOOL_SPELLINGS = (("false", "true"), ("0", "1"), ("否", "是"))
FORMATS = ("csv_utf8", "csv_bom", "csv_gbk", "csv_gz", "parquet_native", "parquet_strings")
FORMAT_WEIGHTS = (0.28, 0.1, 0.27, 0.15, 0.12, 0.08)
BAD_ROW_FEEDS = (
    "households",
    "persons",
    "medical",
    "employment",
    "education",
    "housing",
    "disasters",
    "income_checks",
    "divisions",
)
# Planted defects ingest does not reject (ingest/checks.py, docs/ingest-rules.md), so
# they are not bad rows: a row reported before its event is kept with a counted
# warning; a row whose household is not on the roster waits in pending/ for it.
WARNING_REASONS = frozenset({"reported_before_event"})
PENDING_REASONS = frozenset({"unknown_household"})
# Free-text columns that get a control character as a planted defect.
CONTROL_CHAR_COLUMNS = frozenset(
    {("persons", "name"), ("households", "contact_phone"), ("divisions", "name")}
)
# Control characters a CSV reader keeps inside a value (no line breaks, no tab).
CONTROL_CHARS = [chr(c) for c in (*range(0x01, 0x09), *range(0x0E, 0x1C), 0x1F, 0x7F)]
# name/phone columns a real extract carries beyond the contract's (unknown extras)
EXTRA_COLUMN_FEEDS = ("households", "persons")
EXTRA_ALIASES = {"name": "姓名", "contact_phone": "联系电话"}


@dataclass(frozen=True)
class FileStyle:
    fmt: str
    chinese: bool  # Chinese headers and enum terms (GB18030 files)
    bools: tuple[str, str]
    extras: bool  # name / phone columns a real extract carries

    @property
    def is_csv(self) -> bool:
        return self.fmt.startswith("csv")

    @property
    def extension(self) -> str:
        return {"csv_gz": "csv.gz", "parquet_native": "parquet", "parquet_strings": "parquet"}.get(
            self.fmt, "csv"
        )


@dataclass(frozen=True)
class Outage:
    """An optional feed not delivered for one county over a stretch of months."""

    feed: str
    county: int
    first_month: int
    last_month: int


@dataclass
class BadRow:
    feed: str
    file: str
    row: int
    column: str
    reason: str


@dataclass
class Writer:
    raw_dir: Path
    registry: Registry
    params: WorldParams
    rng: np.random.Generator
    outages: list[Outage]
    roster_day: int
    bad_rows: list[BadRow] = field(default_factory=list)
    warning_rows: list[BadRow] = field(default_factory=list)
    pending_rows: list[BadRow] = field(default_factory=list)
    rows_written: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    files: int = 0

    def __post_init__(self) -> None:
        reg = self.registry
        self._person_ids = pa.array(reg.person_ids).cast(pa.string())
        self._household_ids = pa.array(reg.household_ids).cast(pa.string())
        self._village_codes = pa.array(reg.village_codes.astype(str))
        self._names = reg.names
        self._phones = reg.phones
        # the text of STR columns held as indexes in the batches
        self._texts: dict[tuple[str, str], pa.Array] = {
            key: pa.array(list(words), pa.string()) for key, words in VOCAB.items()
        }
        self._texts[("divisions", "code")] = pa.array(reg.divisions.codes.tolist(), pa.string())
        self._texts[("divisions", "name")] = pa.array(reg.divisions.names, pa.string())
        self._sorted_ids = np.sort(reg.person_ids)
        self._fresh_ids: set[str] = set()
        self._risk_text = _risk_type_texts()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="province-writer")
        self._saving: list[Future[None]] = []

    # --- public ----------------------------------------------------------------
    def write_month(self, month: int, batches: dict[str, Batch]) -> dict[str, Batch]:
        """Write every feed's rows reported in `month`; return the clean rows kept."""
        kept: dict[str, Batch] = {}
        for feed_name in contract.FEED_NAMES:
            batch = batches.get(feed_name)
            if not batch:
                continue
            batch = self._drop_outages(feed_name, batch, month)
            if not size(batch):
                continue
            kept[feed_name] = batch
            self._write_file(feed_name, month, batch)
        return kept

    # --- internals ---------------------------------------------------------------
    def _drop_outages(self, feed_name: str, batch: Batch, month: int) -> Batch:
        spec = contract.feed(feed_name)
        for outage in self.outages:
            if outage.feed != feed_name:
                continue
            in_window = outage.first_month <= month <= outage.last_month
            event = batch[spec.event_column] if spec.event_column else None
            event_in = (
                (event >= outage.first_month) & (event <= outage.last_month)
                if event is not None
                else np.zeros(size(batch), dtype=bool)
            )
            lost = (batch["_county"] == outage.county) & (in_window | event_in)
            batch = take(batch, np.flatnonzero(~lost))
        return batch

    def _style(self) -> FileStyle:
        fmt = FORMATS[int(self.rng.choice(len(FORMATS), p=FORMAT_WEIGHTS))]
        chinese = fmt == "csv_gbk"
        bools = BOOL_SPELLINGS[2] if chinese else BOOL_SPELLINGS[int(self.rng.integers(0, 2))]
        return FileStyle(fmt, chinese, bools, extras=bool(self.rng.random() < 0.5))

    def _write_file(
        self, feed_name: str, month: int, batch: Batch, style: FileStyle | None = None
    ) -> None:
        """One feed's rows of one reported month as one file (`style` drawn unless given)."""
        spec = contract.feed(feed_name)
        style = style or self._style()
        table = self._table(feed_name, batch, style)
        rel = f"{feed_name}/{feed_name}_{timeutil.month_text(month)}.{style.extension}"
        n_clean = table.num_rows
        table, n_dup = self._plant_rows(feed_name, rel, table, style)
        self.rows_written[feed_name] = self.rows_written.get(feed_name, 0) + n_clean
        self.duplicates[feed_name] = self.duplicates.get(feed_name, 0) + n_dup
        # encoding, compression and disk writes release the GIL: overlap them with the
        # simulation on a second core; a short queue bounds the memory held
        while len(self._saving) >= 4:
            self._saving.pop(0).result()
        self._saving.append(self._pool.submit(self._save, self.raw_dir / rel, table, style, spec))
        self.files += 1

    def _table(self, feed_name: str, batch: Batch, style: FileStyle) -> pa.Table:
        """Every contract column of the feed as the file's style writes it, plus (some files)
        an extra column the contract does not list there."""
        typed = style.fmt == "parquet_native"
        columns = {
            c.name: self._vault_column(feed_name, c.name, batch)
            if c.vault_only
            else self._column(feed_name, c, batch[c.name], style, typed)
            for c in contract.feed(feed_name).contract_columns
        }
        if style.extras and feed_name in EXTRA_COLUMN_FEEDS:
            # the head's name on the roster, the household's phone on the registry
            if feed_name == "households":
                head = pa.array(np.maximum(batch["head_person_id"], 0))
                columns["name"] = self._names.take(head)
            else:
                columns["contact_phone"] = self._phones.take(pa.array(batch["household_id"]))
        return pa.table(columns)

    def _plant_rows(
        self, feed_name: str, rel: str, table: pa.Table, style: FileStyle
    ) -> tuple[pa.Table, int]:
        """Exact duplicates, and (CSV files of some feeds) rows with one defect each, scattered
        through the file; the defective rows are listed. Returns (table, duplicates)."""
        n_clean = table.num_rows
        n_dup = int(self.rng.binomial(n_clean, self.params.duplicate_share))
        extra: list[pa.Table] = []
        if n_dup:
            extra.append(
                table.take(pa.array(self.rng.choice(table.num_rows, n_dup, replace=False)))
            )
        bad: list[tuple[str, str]] = []
        if style.is_csv and feed_name in BAD_ROW_FEEDS:
            n_bad = int(self.rng.binomial(n_clean, self.params.bad_row_share))
            bad_table, bad = self._bad_rows(feed_name, table, n_bad, style)
            if bad:
                extra.append(bad_table)
        if not extra:
            return table, n_dup
        table = pa.concat_tables([table, *extra])
        order = self.rng.permutation(table.num_rows)
        table = table.take(pa.array(order))
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        first_bad = n_clean + n_dup
        for k, (column, reason) in enumerate(bad):
            listed = (
                self.warning_rows
                if reason in WARNING_REASONS
                else self.pending_rows
                if reason in PENDING_REASONS
                else self.bad_rows
            )
            listed.append(BadRow(feed_name, rel, int(position[first_bad + k]) + 1, column, reason))
        return table, n_dup

    def close(self) -> None:
        """Wait for every queued file (re-raising any write error)."""
        for future in self._saving:
            future.result()
        self._saving.clear()
        self._pool.shutdown()

    def _save(self, path: Path, table: pa.Table, style: FileStyle, spec: contract.Feed) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not style.is_csv:
            pq.write_table(table, path, compression="zstd")
            return
        if style.chinese:
            aliases = EXTRA_ALIASES | {c.name: c.alias for c in spec.contract_columns}
            table = table.rename_columns([aliases[c] for c in table.column_names])
        buffer = io.BytesIO()
        quoting = "needed" if style.fmt != "csv_bom" else "none"
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(quoting_style=quoting))
        data = buffer.getvalue()
        if style.fmt == "csv_gbk":
            data = data.decode("utf-8").encode("gb18030")
        elif style.fmt == "csv_bom":
            data = b"\xef\xbb\xbf" + data
        elif style.fmt == "csv_gz":
            data = gzip.compress(data, compresslevel=1, mtime=0)
        path.write_bytes(data)

    def _vault_column(self, feed_name: str, column: str, batch: Batch) -> pa.Array:
        """A name or phone column: looked up by the row's person or household."""
        if (feed_name, column) == ("persons", "name"):
            return self._names.take(pa.array(batch["person_id"]))
        if (feed_name, column) == ("households", "contact_phone"):
            return self._phones.take(pa.array(batch["household_id"]))
        raise AssertionError(f"no values for the vault column {feed_name}.{column}")

    def _column(
        self, feed_name: str, col: Column, values: np.ndarray, style: FileStyle, typed: bool
    ) -> pa.Array:
        """One column as Arrow: typed (native Parquet) or as the text an extract holds."""
        kind = col.kind
        if kind == Kind.ID:
            return self._person_ids.take(pa.array(values))
        if kind == Kind.VILLAGE:
            return self._village_codes.take(pa.array(values))
        if col.name == "household_id":
            return self._household_ids.take(pa.array(values))
        if kind == Kind.STR:
            return self._texts[(feed_name, col.name)].take(pa.array(values, mask=values < 0))
        if kind == Kind.ENUM:
            assert col.enum is not None
            terms = [(zh if style.chinese and zh else code) for code, zh in col.enum.items()]
            return pa.array(terms).take(pa.array(values, mask=values < 0))
        if kind == Kind.ENUM_LIST:
            return self._risk_text[int(style.chinese)].take(pa.array(values))
        if kind == Kind.DATE:
            days = pa.array(values.astype(np.int32), type=pa.date32(), mask=values == NULL)
            return days if typed else pc.cast(days, pa.string())
        if kind == Kind.MONTH:
            base = int(values.min())
            texts = pa.array([timeutil.month_text(m) for m in range(base, int(values.max()) + 1)])
            return texts.take(pa.array(values - base))
        if kind == Kind.INT:
            ints = pa.array(values, mask=values == NULL, type=pa.int64())
            return ints if typed else pc.cast(ints, pa.string())
        if kind in (Kind.MONEY, Kind.FLOAT):
            floats = pa.array(np.round(values, 2) + 0.0, mask=np.isnan(values))
            return floats if typed else pc.cast(floats, pa.string())
        if kind == Kind.BOOL:
            if typed:
                return pa.array(values == 1, mask=values < 0)
            return pa.array(list(style.bools)).take(
                pa.array(np.maximum(values, 0), mask=values < 0)
            )
        raise AssertionError(f"unhandled kind {kind}")

    # --- deliberately bad rows ---------------------------------------------------
    def _bad_rows(
        self, feed_name: str, table: pa.Table, n_bad: int, style: FileStyle
    ) -> tuple[pa.Table, list[tuple[str, str]]]:
        """`n_bad` extra rows, each a copy of a clean row with exactly one defect."""
        spec = contract.feed(feed_name)
        if n_bad == 0 or table.num_rows == 0:
            return table.slice(0, 0), []
        rows = table.to_pylist() if table.num_rows <= 4 * n_bad else None
        sources = self.rng.choice(table.num_rows, min(n_bad, table.num_rows), replace=False)
        picked = (
            table.take(pa.array(sources)).to_pylist()
            if rows is None
            else [rows[i] for i in sources]
        )
        defects = _defects(spec)
        out_rows: list[dict[str, object]] = []
        listed: list[tuple[str, str]] = []
        for row in picked:
            for _ in range(5):  # a row may not suit the drawn defect; try another
                column, reason = defects[int(self.rng.integers(0, len(defects)))]
                changed = self._break(spec, dict(row), column, reason, style)
                if changed is not None:
                    out_rows.append(changed)
                    listed.append((column, reason))
                    break
        if not out_rows:
            return table.slice(0, 0), []
        string_schema = pa.schema([pa.field(f.name, pa.string()) for f in table.schema])
        return pa.Table.from_pylist(out_rows, schema=string_schema), listed

    def _break(
        self,
        spec: contract.Feed,
        row: dict[str, object],
        column: str,
        reason: str,
        style: FileStyle,
    ) -> dict[str, object] | None:
        value = row.get(column)
        rng = self.rng
        if reason == "id_check_char":
            text = str(value)
            wrong = [ch for ch in "0123456789X" if ch != text[17]]
            row[column] = text[:17] + wrong[int(rng.integers(0, len(wrong)))]
        elif reason == "negative_money":
            if value in (None, ""):
                return None
            row[column] = f"-{float(str(value)) + round(float(rng.uniform(1, 500)), 2):.2f}"
        elif reason == "control_character":
            text = "" if value is None else str(value)
            if not text:
                return None
            at = int(rng.integers(1, len(text) + 1))
            char = CONTROL_CHARS[int(rng.integers(0, len(CONTROL_CHARS)))]
            row[column] = text[:at] + char + text[at:]
        elif reason == "bad_division_code":
            row[column] = str(value)[:7]  # 7 digits: neither county, township nor village
        elif reason == "unknown_enum":
            row[column] = "unknown" if not style.chinese else "未知类别"
        elif reason == "bad_date":
            row[column] = "2023-13" if spec.column(column).kind == Kind.MONTH else "2023-02-30"
        elif reason == "reported_before_event":
            assert spec.event_column is not None
            event = str(row[spec.event_column])
            first = np.datetime64(event + "-01" if len(event) == 7 else event, "D").astype(int)
            new_day = int(first) - int(rng.integers(1, 20))
            if new_day < self.roster_day:  # would break the roster-first guarantee
                return None
            row["reported_date"] = str(np.datetime64(new_day, "D"))
        elif reason == "unknown_household":
            row[column] = f"X{rng.integers(10**9, 10**10)}"
            person = self._fresh_person_id(str(row["person_id"]))
            row["person_id"] = person
        return row

    def _fresh_person_id(self, like: str) -> str:
        from doudi.idnumber import make_id

        base = np.datetime64(f"{like[6:10]}-{like[10:12]}-{like[12:14]}", "D")
        for _ in range(1000):
            seq = int(self.rng.integers(0, 1000))
            candidate = make_id(like[:6], base.astype(object), seq)
            encoded = candidate.encode()
            at = int(np.searchsorted(self._sorted_ids, encoded))
            taken = at < len(self._sorted_ids) and self._sorted_ids[at] == encoded
            if not taken and candidate not in self._fresh_ids:
                self._fresh_ids.add(candidate)
                return candidate
        raise RuntimeError("could not draw an unused ID number")


def _defects(spec: contract.Feed) -> list[tuple[str, str]]:
    """(column, rule) pairs this feed can carry."""
    out: list[tuple[str, str]] = []
    for col in spec.contract_columns:
        if (spec.name, col.name) in CONTROL_CHAR_COLUMNS:
            out.append((col.name, "control_character"))
        if col.pattern == contract.DIVISION_CODE_PATTERN:
            out.append((col.name, "bad_division_code"))
        if col.kind == Kind.ID:
            out.append((col.name, "id_check_char"))
        elif col.kind == Kind.MONEY and not col.signed:
            out.append((col.name, "negative_money"))
        elif col.kind == Kind.ENUM:
            out.append((col.name, "unknown_enum"))
    date_col = spec.event_column if spec.event_column else "reported_date"
    if spec.column(date_col).kind in (Kind.DATE, Kind.MONTH):
        out.append((date_col, "bad_date"))
    if (
        spec.event_column
        and spec.name != "persons"
        and spec.column(spec.event_column).kind in (Kind.DATE, Kind.MONTH)
    ):
        out.append(("reported_date", "reported_before_event"))
    if spec.name == "persons":
        out.append(("household_id", "unknown_household"))
    return out


def _risk_type_texts() -> tuple[pa.Array, pa.Array]:
    """';'-joined risk types for every bit mask, in codes and in Chinese terms."""
    codes = list(contract.RISK_TYPES)
    english, chinese = [], []
    for mask in range(1 << len(codes)):
        chosen = [k for k in range(len(codes)) if mask >> k & 1]
        english.append(";".join(codes[k] for k in chosen))
        chinese.append(";".join(contract.RISK_TYPES[codes[k]] or codes[k] for k in chosen))
    return pa.array(english), pa.array(chinese)
