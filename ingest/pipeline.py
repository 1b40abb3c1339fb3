"""The ingest run: raw extract -> checked, pseudonymised, partitioned warehouse.

Feeds are processed households -> persons -> the rest, so the roster and the
person register are complete before anything refers to them. Each file streams
batch by batch through: contract checks -> pseudonyms -> referential checks ->
quarantine of bad rows -> exact-duplicate removal -> partition buffers.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from doudi.contract import FEEDS, Feed, feed
from doudi.errors import UserError
from doudi.permissions import check_private_dir
from doudi.settings import Settings
from doudi.warehouse import feed_dir, table_schema, warehouse_name
from ingest import pending, vault
from ingest.checks import RULE_MESSAGES, ParsedBatch, Violation, parse_batch, to_mask
from ingest.dedup import RowHashIndex, mix_in, row_hashes
from ingest.names import file_ref, printable, safe_label
from ingest.pseudonyms import (
    KIND_OF_COLUMN,
    HouseholdIndex,
    PersonIndex,
    Pseudonymiser,
    check_key_file,
    load_key,
)
from ingest.reading import (
    Discovery,
    Header,
    RawBatch,
    SourceFile,
    discover,
    iter_batches,
    read_header,
    sha256_of,
)
from ingest.report import (
    FeedSummary,
    FileSummary,
    IngestReport,
    Rejection,
    RunReport,
    UnknownColumn,
    ValidationReport,
)
from ingest.store import (
    PartitionWriter,
    Stager,
    load_manifest,
    new_run_id,
    recover,
    workspace_lock,
)

# progress(description, bytes done, bytes in total)
Progress = Callable[[str, int, int], None]

_QUARANTINE_SCHEMA = pa.schema(
    [
        ("feed", pa.string()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("column", pa.string()),
        ("rule", pa.string()),
        ("message", pa.string()),
        ("original_values", pa.string()),  # JSON object: header as written -> value
        ("run_id", pa.string()),
    ]
)


def processing_order() -> list[Feed]:
    """Roster first, then the person register, then everything that refers to them."""
    first = ["households", "persons"]
    return [f for f in FEEDS if f.name in first] + [f for f in FEEDS if f.name not in first]


def _latest(table: pa.Table, key: str, order: list[str]) -> pa.Table:
    """The last row per `key` after sorting by `order`."""
    frame = table.select([key, *order]).to_pandas()
    latest = frame.sort_values(order, kind="stable").drop_duplicates(key, keep="last")
    return table.take(pa.array(latest.index.to_numpy()))


def _scatter(size: int, at: pa.Array, values: pa.Array) -> pa.Array:
    """A string array of `size` holding values[i] at position at[i] (null elsewhere)."""
    at = at.combine_chunks() if isinstance(at, pa.ChunkedArray) else at
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    known = to_mask(pc.and_(pc.is_valid(at), pc.is_valid(values)))
    out = np.full(size, None, dtype=object)
    out[at.to_numpy(zero_copy_only=False)[known].astype(np.int64)] = values.to_numpy(
        zero_copy_only=False)[known]
    return pa.array(out, pa.string())


@dataclass
class Registers:
    """Latest roster and person rows; they set the county in `homes` and `people`."""

    people: PersonIndex
    homes: HouseholdIndex
    _households: list[pa.Table] = field(default_factory=list)
    _persons: list[pa.Table] = field(default_factory=list)

    @classmethod
    def from_warehouse(cls, settings: Settings, people: PersonIndex, homes: HouseholdIndex
                       ) -> Registers:
        regs = cls(people, homes)
        regs._households.append(_read_existing(settings, "households",
                                               ["household_key", "county_code", "reported_date"]))
        regs._persons.append(_read_existing(settings, "persons",
                                            ["person_key", "household_key", "status_date",
                                             "reported_date"]))
        regs.settle_households()
        regs.settle_persons()
        return regs

    def add_households(self, table: pa.Table) -> None:
        self._households.append(table.select(["household_key", "county_code", "reported_date"]))

    def add_persons(self, table: pa.Table) -> None:
        self._persons.append(
            table.select(["person_key", "household_key", "status_date", "reported_date"])
        )

    def settle_households(self) -> None:
        """Each household's county: that of its latest roster row."""
        latest = _latest(pa.concat_tables(self._households), "household_key", ["reported_date"])
        at = pc.index_in(latest["household_key"], value_set=self.homes.alias)
        self.homes.county = _scatter(len(self.homes.alias), at, latest["county_code"])
        self._households = [latest]

    def settle_persons(self) -> None:
        """Each person's county: that of the household of their latest state."""
        latest = _latest(pa.concat_tables(self._persons), "person_key",
                         ["status_date", "reported_date"])
        home = pc.index_in(latest["household_key"], value_set=self.homes.alias)
        counties = pc.take(self.homes.county, home)
        at = pc.index_in(latest["person_key"], value_set=self.people.alias)
        self.people.county = _scatter(len(self.people.alias), at, counties)
        self._persons = [latest]


def _read_existing(settings: Settings, feed_name: str, columns: list[str]) -> pa.Table:
    folder = feed_dir(settings.warehouse_dir, feed_name)
    schema = table_schema(feed_name)
    if not folder.is_dir():
        return schema.empty_table().select(columns)
    return ds.dataset(str(folder), format="parquet", schema=schema).to_table(columns=columns)


def _month_numbers(dates: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Months since 1970-01 of a date32 column (no nulls)."""
    if isinstance(dates, pa.ChunkedArray):
        dates = dates.combine_chunks()
    days = dates.cast(pa.int32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    return days.astype("datetime64[M]").astype(np.int64)


def _month_texts(dates: pa.Array) -> pa.Array:
    """'YYYY-MM' of each date: formatted once per distinct month, then gathered."""
    distinct, inverse = np.unique(_month_numbers(dates), return_inverse=True)
    texts = [str(np.datetime64(int(m), "M")) for m in distinct]
    return pa.array(texts, pa.string()).take(pa.array(inverse.astype(np.int64)))


def _mask_to(values: pa.Array, keep: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))


@dataclass
class _Run:
    settings: Settings
    raw_dir: Path
    report: RunReport
    stager: Stager | None
    pseudonyms: Pseudonymiser
    registers: Registers
    today: date
    quarantine: list[pa.Table] = field(default_factory=list)
    new_villages: list[pa.Table] = field(default_factory=list)
    # vault-only values (names, phones) of stored rows, per vault table
    vault_values: dict[str, list[pa.Table]] = field(default_factory=dict)
    # rows waiting for their household/person, per feed: what waits after this run
    # (earlier runs' rows not placed, and new ones), and whether the feed's pending part
    # files must be rewritten (some were placed, or some are new)
    waiting: dict[str, list[pa.Table]] = field(default_factory=dict)
    waiting_hashes: dict[str, set[int]] = field(default_factory=dict)
    waiting_changed: set[str] = field(default_factory=set)

    # -- one batch ---------------------------------------------------------
    def batch(
        self, spec: Feed, source: SourceFile, header: Header, raw: RawBatch,
        writer: PartitionWriter, index: RowHashIndex, summary: FeedSummary, file: FileSummary,
    ) -> None:
        n = raw.num_rows
        parsed = parse_batch(spec, raw.columns, n, today=self.today)
        candidates = ~parsed.bad_rows(n)
        keys: dict[str, pa.Array] = {}
        positions: dict[str, Any] = {}
        for name in spec.column_names:
            if KIND_OF_COLUMN.get(name) == "person":
                code = np.where(candidates, parsed.id_digits[name].code, -1)
                keys[name], positions[name] = self.pseudonyms.persons(parsed.values[name], code)
            elif KIND_OF_COLUMN.get(name) == "household":
                keys[name], positions[name] = self.pseudonyms.households(
                    _mask_to(parsed.values[name], candidates))
        county = self._county(spec, parsed, positions, candidates)
        accepted = candidates & to_mask(pc.is_valid(county))
        bad = ~candidates
        self._quarantine(spec, source, header, raw, parsed.violations, bad)

        file.rows += n
        file.quarantined += int(bad.sum())
        summary.rows += n
        summary.quarantined += int(bad.sum())
        for v in parsed.violations:
            summary.violations[v.rule] += int(v.mask.sum())
        for w in parsed.warnings:  # warnings of kept rows only: the others are errors
            summary.warnings[w.rule] += int((w.mask & candidates).sum())
        if not candidates.any():
            return
        table = self._warehouse_rows(spec, source, raw, parsed, keys, county, candidates,
                                     summary)
        contract_columns = [warehouse_name(c) for c in spec.column_names]
        # ID numbers hash by their exact int64 identity: no string hashing per row
        exact = {warehouse_name(name): parsed.id_digits[name].code[candidates].view(np.uint64)
                 for name in spec.column_names if KIND_OF_COLUMN.get(name) == "person"}
        hashes = row_hashes(table, contract_columns, exact=exact)
        vault_only = {c.name: parsed.values[c.name].filter(pa.array(candidates))
                      for c in spec.vault_columns}
        for values in vault_only.values():  # rows differing only in a name are not duplicates
            hashes = mix_in(hashes, values)
        # over the candidate rows: stored now, or (household/person not known yet) waiting
        stored = accepted[candidates]
        if (~stored).any():
            kept = self._wait(spec, table.filter(pa.array(~stored)), hashes[~stored])
            file.pending += kept.num_rows
            summary.pending += kept.num_rows
            duplicates = int((~stored).sum()) - kept.num_rows
            file.duplicates += duplicates
            summary.duplicates += duplicates
            for name, values in vault_only.items():  # pending/ holds pseudonyms only
                chosen = values.filter(pa.array(~stored)).take(kept["_position"])
                self._vault_values(spec, name, chosen, kept)
        if not stored.any():
            return
        table = table.filter(pa.array(stored)).cast(table_schema(spec.name))
        keep = index.first_sightings(hashes[stored], _month_numbers(table["reported_date"]))
        duplicates = int((~keep).sum())
        file.duplicates += duplicates
        summary.duplicates += duplicates
        table = table.filter(pa.array(keep))
        file.accepted += table.num_rows
        summary.accepted += table.num_rows
        self._store(spec, table, writer, summary)
        for name, values in vault_only.items():
            self._vault_values(spec, name, values.filter(pa.array(stored)).filter(
                pa.array(keep)), table)

    def _store(self, spec: Feed, table: pa.Table, writer: PartitionWriter,
               summary: FeedSummary) -> None:
        """Rows (warehouse schema, deduplicated) into the partition writer and registers."""
        for pair in pc.value_counts(table["reported_month"]).to_pylist():
            summary.accepted_by_month[pair["values"]] += pair["counts"]
        writer.add(table)
        if spec.name == "households":
            self.registers.add_households(table)
            self.new_villages.append(
                pa.table({"household_key": table["household_key"],
                          "village_code": table["village_code"],
                          "reported_date": table["reported_date"]})
            )
        elif spec.name == "persons":
            self.registers.add_persons(table)

    # -- rows waiting for their household or person ------------------------------------
    def _wait(self, spec: Feed, rows: pa.Table, hashes: np.ndarray) -> pa.Table:
        """Keep `rows` (no county yet) waiting, except copies of rows already waiting.
        Returns the rows kept, with `_position` (their index in `rows`)."""
        seen = self.waiting_hashes.setdefault(spec.name, set())
        _, first = np.unique(hashes, return_index=True)
        first = np.sort(first)
        fresh = np.array([i for i in first.tolist() if int(hashes[i]) not in seen],
                         dtype=np.int64)
        if not len(fresh):
            return rows.slice(0, 0).append_column("_position", pa.array([], pa.int64()))
        seen.update(int(h) for h in hashes[fresh])
        kept = rows.take(pa.array(fresh)).drop_columns(["county_code"])
        kept = kept.append_column(pending.ROW_HASH, pa.array(hashes[fresh], pa.uint64()))
        kept = kept.append_column(pending.SINCE,
                                  pa.array([self.report.run_id] * len(fresh), pa.string()))
        self.waiting.setdefault(spec.name, []).append(
            kept.select(pending.schema(spec.name).names).cast(pending.schema(spec.name)))
        self.waiting_changed.add(spec.name)
        return kept.append_column("_position", pa.array(fresh, pa.int64()))

    def place(self, spec: Feed, writer: PartitionWriter, index: RowHashIndex,
              summary: FeedSummary) -> None:
        """Earlier runs' waiting rows of `spec` whose household/person is known now: into
        the warehouse under their own reported_date (deduplicated like any row)."""
        earlier = pending.read(self.settings, spec.name)
        self.waiting_hashes[spec.name] = set(
            earlier[pending.ROW_HASH].to_numpy(zero_copy_only=False).tolist())
        if not earlier.num_rows:
            return
        if spec.person_level and spec.name != "persons":
            at = pc.index_in(earlier["person_key"], value_set=self.pseudonyms.people.alias)
            county = pc.take(self.pseudonyms.people.county, at)
        else:
            at = pc.index_in(earlier["household_key"], value_set=self.pseudonyms.homes.alias)
            county = pc.take(self.pseudonyms.homes.county, at)
        known = to_mask(pc.is_valid(county))
        self.waiting.setdefault(spec.name, []).append(earlier.filter(pa.array(~known)))
        if not known.any():
            return
        self.waiting_changed.add(spec.name)
        rows = earlier.filter(pa.array(known))
        hashes = rows[pending.ROW_HASH].to_numpy(zero_copy_only=False).astype(np.uint64)
        rows = rows.append_column("county_code", county.filter(pa.array(known)))
        rows = rows.select(table_schema(spec.name).names).cast(table_schema(spec.name))
        keep = index.first_sightings(hashes, _month_numbers(rows["reported_date"]))
        summary.duplicates += int((~keep).sum())
        placed = rows.filter(pa.array(keep))
        summary.placed += placed.num_rows
        self._store(spec, placed, writer, summary)

    def _vault_values(self, spec: Feed, column: str, values: pa.Array, table: pa.Table) -> None:
        """Remember the stored rows' vault-only values (with their version dates)."""
        present = pc.is_valid(values)
        if not pc.any(present).as_py():
            return
        vault_name = vault.VAULT_COLUMNS[(spec.name, column)]
        schema = vault.SCHEMAS[vault_name]
        rows = table.filter(present)
        columns = {f.name: rows[f.name] for f in schema if f.name != column}
        columns[column] = values.filter(present)
        self.vault_values.setdefault(vault_name, []).append(
            pa.table(columns).select(schema.names).cast(schema))

    def _county(
        self, spec: Feed, parsed: ParsedBatch, positions: dict[str, Any],
        candidates: np.ndarray,
    ) -> pa.Array:
        """County of each candidate row; null where the household/person is unknown (the
        row then waits: `ingest.pending`)."""
        if spec.name == "households":
            return _mask_to(pc.utf8_slice_codeunits(parsed.values["village_code"], 0, 6),
                            candidates)
        if spec.name == "divisions":  # a division's code starts with its county's
            return _mask_to(pc.utf8_slice_codeunits(parsed.values["code"], 0, 6), candidates)
        if spec.person_level and spec.name != "persons":
            people = self.pseudonyms.people
            county = people.lookup(people.county, positions["person_id"])
        else:
            county = pc.take(self.pseudonyms.homes.county, positions["household_id"])
        return _mask_to(county, candidates)

    def _warehouse_rows(
        self, spec: Feed, source: SourceFile, raw: RawBatch, parsed: ParsedBatch,
        keys: dict[str, pa.Array], county: pa.Array, rows_mask: np.ndarray,
        summary: FeedSummary,
    ) -> pa.Table:
        """The rows of `rows_mask` as warehouse columns (not cast: a waiting row has no
        county yet)."""
        keep = pa.array(rows_mask)
        columns: dict[str, pa.Array] = {}
        for name in spec.column_names:
            values = keys[name] if name in keys else parsed.values[name]
            columns[warehouse_name(name)] = values.filter(keep)
        if spec.name == "persons":
            self._facts_from_id(parsed, rows_mask, columns, summary)
        reported = columns["reported_date"]
        columns["county_code"] = county.filter(keep)
        columns["reported_month"] = _month_texts(reported)
        rows = np.flatnonzero(rows_mask) + raw.first_row
        columns["source_file"] = pa.array([source.ref] * len(rows), pa.string())
        columns["source_row"] = pa.array(rows, pa.int64())
        schema = table_schema(spec.name)
        return pa.table({f.name: columns[f.name].cast(f.type) for f in schema})

    @staticmethod
    def _facts_from_id(
        parsed: ParsedBatch, accepted: np.ndarray, columns: dict[str, pa.Array],
        summary: FeedSummary,
    ) -> None:
        """Sex and birth date of the ID number replace the columns; disagreements counted."""
        facts = parsed.id_digits["person_id"]
        sex = np.where(facts.male[accepted], "M", "F")
        birth = pa.array(facts.birth_days[accepted].astype(np.int32), type=pa.date32())
        given_sex = columns["sex"]
        given_birth = columns["birth_date"]
        summary.sex_disagreements += int(
            to_mask(pc.and_(pc.is_valid(given_sex), pc.not_equal(given_sex, pa.array(sex)))).sum()
        )
        summary.birth_date_disagreements += int(
            to_mask(pc.and_(pc.is_valid(given_birth), pc.not_equal(given_birth, birth))).sum()
        )
        columns["sex"] = pa.array(sex, pa.string())
        columns["birth_date"] = birth

    def _quarantine(
        self, spec: Feed, source: SourceFile, header: Header, raw: RawBatch,
        violations: list[Violation], bad: np.ndarray,
    ) -> None:
        if not bad.any():
            return
        bad_rows = np.flatnonzero(bad)
        # original values as written, keyed by the file's own headers (bad rows only)
        written = pa.table({header.source_names[c]: a for c, a in raw.columns.items()})
        originals = [
            json.dumps(row, ensure_ascii=False, default=str)
            for row in written.take(pa.array(bad_rows)).to_pylist()
        ]
        original_of = dict(zip(bad_rows.tolist(), originals, strict=True))
        records: dict[str, list[Any]] = {name: [] for name in _QUARANTINE_SCHEMA.names}
        for v in violations:
            for i in np.flatnonzero(v.mask).tolist():
                records["feed"].append(spec.name)
                records["source_file"].append(source.ref)
                records["source_row"].append(raw.first_row + i)
                records["column"].append(v.column)
                records["rule"].append(v.rule)
                records["message"].append(RULE_MESSAGES.get(v.rule, v.rule))
                records["original_values"].append(original_of[i])
                records["run_id"].append(self.report.run_id)
        table = pa.table(records, schema=_QUARANTINE_SCHEMA)
        self.quarantine.append(table)
        if isinstance(self.report, ValidationReport):
            self.report.rejections += [
                Rejection(f, s, r, c, rule, m)
                for f, s, r, c, rule, m in zip(
                    records["feed"], records["source_file"], records["source_row"],
                    records["column"], records["rule"], records["message"], strict=True,
                )
            ]


def _skip_reason(manifest: dict[str, Any], digest: str, seen: dict[str, str]) -> str | None:
    entry = manifest["files"].get(digest)
    if entry is not None:
        return f"already ingested (same content as {entry['file']}, run {entry['run_id']})"
    if digest in seen:
        return f"same content as {seen[digest]} in this delivery"
    return None


def _has_data(settings: Settings) -> bool:
    return bool(load_manifest(settings)["files"])


def check_workspace(settings: Settings) -> None:
    """Before anything is read: the key is 0600 (or 0400) and the user's, and the folders
    holding raw identifiers or waiting rows are 0700 and the user's (`doudi.permissions`)."""
    check_key_file(settings.key_file)
    for folder in (settings.vault_dir, settings.quarantine_dir,
                   pending.pending_dir(settings)):
        check_private_dir(folder)


def run(
    raw_dir: Path, settings: Settings, *, write: bool, progress: Progress | None = None,
    allow_unknown: bool = False,
) -> RunReport:
    """Ingest (`write`) or only validate the extract in `raw_dir`. Entries of `raw_dir`
    that are not feed folders or data files are an error unless `allow_unknown`."""
    check_workspace(settings)
    raw_dir = raw_dir.expanduser().resolve()
    discovery = discover(raw_dir, allow_unknown=allow_unknown)
    if write:
        with workspace_lock(settings):
            recover(settings)
            return _execute(raw_dir, discovery, settings, write=True, progress=progress)
    return _execute(raw_dir, discovery, settings, write=False, progress=progress)


def _execute(
    raw_dir: Path, discovery: Discovery, settings: Settings, *, write: bool,
    progress: Progress | None,
) -> RunReport:
    run_id = new_run_id()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    report: RunReport = (IngestReport if write else ValidationReport)(
        run_id=run_id, raw_dir=printable(str(raw_dir)), dry_run=not write, started_at=started,
        missing_optional_feeds=discovery.missing_optional, unknown_paths=discovery.unknown,
        hidden_paths=discovery.hidden, linked_paths=discovery.links,
        expected_monthly=[f.name for f in FEEDS if settings.feed_cadence.get(f.name) == "monthly"],
        pending_alert_months=settings.pending_alert_months,
    )
    for spec in processing_order():
        report.feeds[spec.name] = FeedSummary(spec.name)
    manifest = load_manifest(settings)

    # 1. which files are new, and can every new one be read? (file-level errors first)
    todo: list[tuple[SourceFile, Header, FileSummary]] = []
    seen: dict[str, str] = {}
    for found in discovery.files:
        digest = sha256_of(found)
        source = replace(found, sha256=digest)  # from here on it is named by `source.ref`
        file = FileSummary(source.feed, source.ref, digest,
                           "parquet" if source.is_parquet else "csv")
        report.files.append(file)
        file.skipped = _skip_reason(manifest, digest, seen)
        seen.setdefault(digest, source.ref)
        if file.skipped:
            report.feeds[source.feed].files_skipped += 1
            continue
        header = read_header(source, feed(source.feed))
        file.encoding = header.encoding
        report.unknown_columns += [
            UnknownColumn(source.feed, source.ref, safe_label(c), c in header.sensitive_unknown)
            for c in header.unknown
        ]
        todo.append((source, header, file))

    # 2. key, registers, staging
    key = load_key(settings.key_file, create=write)
    if key is None:
        if _has_data(settings):
            raise UserError(f"{printable(str(settings.key_file), mask=False)}: pseudonym key "
                            "missing, but the warehouse "
                            "holds data; restore the key from its backup")
        key = secrets.token_bytes(32)  # validation of a first delivery: nothing to join to
    stager = Stager(settings, run_id) if write else None
    try:
        people = vault.read_table(settings.vault_dir, vault.PERSONS)
        homes = vault.read_table(settings.vault_dir, vault.HOUSEHOLDS)
        pseudonyms = Pseudonymiser(
            key,
            people=(people["person_id"].combine_chunks(), people["person_key"].combine_chunks()),
            households=(homes["household_id"].combine_chunks(),
                        homes["household_key"].combine_chunks()),
        )
        state = _Run(settings, raw_dir, report, stager, pseudonyms,
                     Registers.from_warehouse(settings, pseudonyms.people, pseudonyms.homes),
                     date.today())
        total = sum(s.size for s, _, _ in todo)
        done = 0
        months = set(pending.stored_months(settings.warehouse_dir))  # the data's clock
        for spec in processing_order():
            summary = report.feeds[spec.name]
            files = [t for t in todo if t[0].feed == spec.name]
            summary.files = len(files)
            writer = PartitionWriter(stager, spec.name, table_schema(spec.name))
            index = RowHashIndex(settings.warehouse_dir, spec.name)
            # registers are complete for this feed's referents: place what waited for them
            state.place(spec, writer, index, summary)
            for source, header, file in files:
                if progress:
                    progress(source.ref, done, total)
                for raw in iter_batches(source, header):
                    state.batch(spec, source, header, raw, writer, index, summary, file)
                done += source.size
            writer.flush()
            if spec.name == "households":
                state.registers.settle_households()
            elif spec.name == "persons":
                state.registers.settle_persons()
            staged = index.staged_tables()
            months |= {pending.month_number(m) for m in staged}
            if stager is not None:
                stager.write_many("warehouse", [
                    (f"_rowhash/{spec.name}/reported_month={month}/part-{run_id}.parquet", hashes)
                    for month, hashes in staged.items()
                ])
        _count_waiting(state, months)
        if progress:
            progress("done", total, total)
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        if stager is None:
            return report
        _stage_side_tables(state, stager, settings)
        assert isinstance(report, IngestReport)
        report.report_paths = [str(settings.reports_dir / f"ingest-{run_id}.{ext}")
                               for ext in ("json", "txt")]
        stager.write_text("reports", f"ingest-{run_id}.json", report.to_json())
        stager.write_text("reports", f"ingest-{run_id}.txt", report.to_text())
        stager.commit(_updated_manifest(manifest, report, raw_dir))
    except BaseException:
        if stager is not None:
            stager.abort()
        raise
    return report


def _count_waiting(state: _Run, months: set[int]) -> None:
    """Rows waiting after the run, per feed, and those waiting `pending_alert_months`
    delivered months or more (counted from the latest reported month stored)."""
    tables = {name: pa.concat_tables(parts) for name, parts in state.waiting.items() if parts}
    for table in tables.values():
        if table.num_rows:
            months |= {pending.month_number(m)
                       for m in pc.unique(table["reported_month"]).to_pylist()}
    if not months:
        return
    clock = max(months)
    for name, table in tables.items():
        summary = state.report.feeds[name]
        summary.pending_total = table.num_rows
        ages = pending.ages(table, clock)
        summary.pending_overdue = int((ages >= state.settings.pending_alert_months).sum())


def _stage_side_tables(state: _Run, stager: Stager, settings: Settings) -> None:
    """Quarantine, pending and vault parts of this run (all inside 0700 folders)."""
    run_id = stager.run_id
    for feed_name in sorted(state.waiting_changed):
        # one part file holds what waits now; the earlier parts go in the same commit
        for old in pending.parts(settings, feed_name):
            stager.remove_on_commit(old)
        table = pa.concat_tables(state.waiting[feed_name])
        if table.num_rows:
            stager.write_parquet("pending", f"{feed_name}/part-{run_id}.parquet", table)
    if state.quarantine:
        table = pa.concat_tables(state.quarantine)
        for feed_name in pc.unique(table["feed"]).to_pylist():
            stager.write_parquet(
                "quarantine", f"{feed_name}/part-{run_id}.parquet",
                table.filter(pc.equal(table["feed"], feed_name)),
            )
    issued = state.pseudonyms.take_issued()
    for kind, name, columns in (("person", vault.PERSONS, ("person_key", "person_id")),
                                ("household", vault.HOUSEHOLDS,
                                 ("household_key", "household_id"))):
        if issued[kind]:
            keys, identifiers = zip(*issued[kind], strict=True)
            stager.write_parquet("vault", f"{name}/part-{run_id}.parquet", pa.table(
                {columns[0]: pa.array(keys, pa.string()),
                 columns[1]: pa.array(identifiers, pa.string())}))
    for vault_name, parts in state.vault_values.items():
        table = vault.latest_per_value(vault_name, pa.concat_tables(parts))
        stager.write_parquet("vault", f"{vault_name}/part-{run_id}.parquet", table)
    if state.new_villages:
        villages = pa.concat_tables(state.new_villages)
        first = villages.group_by(["household_key", "village_code"]).aggregate(
            [("reported_date", "min")])
        pair = pc.binary_join_element_wise(first["household_key"], first["village_code"], "|")
        fresh = first.filter(pc.invert(pc.is_in(
            pair, value_set=vault.known_village_pairs(settings.vault_dir))))
        if fresh.num_rows:
            stager.write_parquet("vault", f"{vault.VILLAGES}/part-{run_id}.parquet", pa.table({
                "household_key": fresh["household_key"],
                "village_code": fresh["village_code"],
                "reported_date": fresh["reported_date_min"],
            }, schema=vault.SCHEMAS[vault.VILLAGES]))


def _updated_manifest(manifest: dict[str, Any], report: RunReport, raw_dir: Path) -> dict[str, Any]:
    # entries of runs before file names were scrubbed are scrubbed as they are rewritten
    files = {digest: {**entry, "file": _scrubbed(entry["file"], digest)}
             for digest, entry in manifest["files"].items()}
    for f in report.files:
        if f.skipped is None:
            files[f.sha256] = {
                "feed": f.feed, "file": f.file, "rows": f.rows, "accepted": f.accepted,
                "quarantined": f.quarantined, "pending": f.pending,
                "duplicates": f.duplicates, "encoding": f.encoding, "run_id": report.run_id,
                "ingested_at": report.finished_at,
            }
    runs = [{**r, "raw_dir": printable(r["raw_dir"])} for r in manifest.get("runs", [])]
    runs.append({
        "run_id": report.run_id, "raw_dir": report.raw_dir, "finished_at": report.finished_at,
        "files_read": sum(1 for f in report.files if f.skipped is None),
        "files_skipped": sum(1 for f in report.files if f.skipped is not None),
        "rows_accepted": report.accepted, "rows_quarantined": report.quarantined,
        "rows_pending": report.pending, "rows_placed": report.placed,
    })
    return {"version": 1, "files": files, "runs": runs}


def _scrubbed(name: str, digest: str) -> str:
    """A manifest entry's file reference (an older entry holds the name as given)."""
    ref = file_ref("", digest)
    return name if name.endswith(ref) else file_ref(name, digest)
