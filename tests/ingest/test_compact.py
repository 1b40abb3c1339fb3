"""Warehouse compaction (ingest/compact.py): a closed year's month partitions become one
year file per feed x county; features, labels and training tables read the same rows
before and after, while both are visible, after a crash, and after late deliveries.

A 120-household province, 2023-01..2025-03 (2023 and 2024 closed, 2025 open), ingested
with a fixed pseudonym key so that workspaces fed the same extracts hold the same rows.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import ingest
import ingest.store as store
from doudi.contract import FEED_NAMES
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import (
    data_files,
    fingerprint_through,
    latest_delivered_month,
    parse_year_file,
    year_file_name,
)
from features.asof import _read_listed, counties, partition_files, read_feed_as_of
from features.tables import build_features, first_roster_month, labels_table, training_table
from ingest.compact import compact_warehouse
from tests.features.warehouse_fixture import Warehouse
from tests.jobs.cli import doudi, refused

LATEST = Month.parse("2025-03")
# As-of months: early, mid-year and year ends of the compacted years, and the open year.
MONTHS = [Month.parse(m) for m in ("2023-12", "2024-06", "2024-12", "2025-02")]
LATE_FILE = "medical/medical_2024-08.csv"  # delivered after 2024 was compacted


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from province import simulate

    out = tmp_path_factory.mktemp("compact_world")
    simulate(out, settings=Settings(), households=120, months=27, start="2023-01", seed=5)
    early = out / "early"  # the extracts without the late file
    shutil.copytree(out / "raw", early)
    (early / LATE_FILE).unlink()
    return out


def workspace(home: Path) -> Settings:
    """Settings for `home` with a fixed pseudonym key (same extracts -> same rows)."""
    settings = Settings(home=home, workers=1)
    settings.key_file.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    settings.key_file.write_bytes(bytes(range(32)))
    settings.key_file.chmod(0o600)
    return settings


@pytest.fixture(scope="module")
def ingested(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Every extract ingested, never compacted: the reference (read-only)."""
    settings = workspace(tmp_path_factory.mktemp("reference"))
    ingest.ingest(world / "raw", settings)
    return settings


def copy_of(settings: Settings, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(settings.home, home)
    return Settings(home=home, workers=1)


def tables(settings: Settings, training: bool = False) -> dict[str, pd.DataFrame]:
    """Features at every test month, labels and (slower) the training table, whose months
    2023-01..2024-06 cover the compacted years month by month: what compaction must not
    change."""
    wh = settings.warehouse_dir
    out = {f"features {m}": build_features(wh, m, settings) for m in MONTHS}
    out["labels"] = labels_table(wh, MONTHS, settings, known_by=LATEST)
    if training:
        out["training"] = training_table(wh, LATEST, settings)
    return out


@pytest.fixture(scope="module")
def reference_tables(ingested: Settings) -> dict[str, pd.DataFrame]:
    return tables(ingested, training=True)


def assert_same_tables(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert got and got.keys() <= want.keys()
    for name, frame in got.items():
        assert len(frame), name  # a table that is empty proves nothing
        pd.testing.assert_frame_equal(frame, want[name], obj=name)


def snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every file under `home` (but the lock) with its size and modification time."""
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in home.rglob("*") if p.is_file() and p.name != ".ingest.lock"}


def all_rows(settings: Settings, feed_name: str) -> pd.DataFrame:
    """Every row of a feed table, in a canonical order (a multiset as a frame)."""
    files = [str(f.path) for f in data_files(settings.warehouse_dir, feed_name)]
    frame = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def groups(settings: Settings) -> dict[tuple[str, str, str], list[Path]]:
    """Data files per feed x county x year."""
    found: dict[tuple[str, str, str], list[Path]] = {}
    for feed_name in FEED_NAMES:
        for f in data_files(settings.warehouse_dir, feed_name):
            found.setdefault((feed_name, f.county, f.year), []).append(f.path)
    return found


# -- compaction keeps every table -----------------------------------------------------------
def test_compaction_keeps_features_labels_training_and_rows(
    ingested: Settings, reference_tables: dict[str, pd.DataFrame], tmp_path: Path,
) -> None:
    settings = copy_of(ingested, tmp_path)
    rows_before = {f: all_rows(settings, f) for f in FEED_NAMES}
    before = groups(settings)
    assert any(len(files) > 1 for (_, _, year), files in before.items() if year == "2024")

    report = compact_warehouse(settings)

    after = groups(settings)
    assert report.through == "2025-03" and report.rows > 0 and not report.dry_run
    assert report.files_before == sum(map(len, before.values()))
    assert report.files_after == sum(map(len, after.values())) < report.files_before
    assert sorted(report.years) == sorted(f"{feed}/county={c}/{y}" for (feed, c, y), files
                                          in before.items() if y < "2025" and len(files) > 1)
    for (feed_name, county, year), files in after.items():
        if year < "2025":  # closed: one file each
            assert len(files) == 1, (feed_name, county, year)
        else:  # open: untouched, same files
            assert files == before[(feed_name, county, year)]
    for feed_name in FEED_NAMES:  # rows before == rows after, as a multiset
        pd.testing.assert_frame_equal(all_rows(settings, feed_name), rows_before[feed_name])
    assert_same_tables(tables(settings, training=True), reference_tables)


def test_year_files_are_sorted_zstd_and_named_by_their_months(
    ingested: Settings, tmp_path: Path,
) -> None:
    settings = copy_of(ingested, tmp_path)
    compact_warehouse(settings)
    year_files = [f for feed in FEED_NAMES for f in data_files(settings.warehouse_dir, feed)
                  if f.compacted]
    assert year_files
    for f in year_files:
        table = pq.read_table(f.path)
        months = table["reported_month"].to_pylist()
        assert (f.first, f.last) == (min(months), max(months))  # the name tells the truth
        assert f.path.parent.name == f"reported_year={f.year}"
        dates = table["reported_date"].to_pylist()
        assert dates == sorted(dates)
        meta = pq.ParquetFile(f.path).metadata
        column = meta.row_group(0).column(table.schema.get_field_index("reported_date"))
        assert column.compression == "ZSTD" and column.statistics.has_min_max
        assert table.schema.equals(pq.read_schema(f.path))
    # no empty partition folder, no staging, no journal left behind
    warehouse = settings.warehouse_dir
    assert not [p for p in warehouse.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not list(settings.home.rglob(".staging")) and not (settings.home /
                                                              store.JOURNAL_DIR).exists()


def test_rerun_and_dry_run_change_nothing(ingested: Settings, tmp_path: Path) -> None:
    settings = copy_of(ingested, tmp_path)
    untouched = snapshot(settings.home)
    dry = compact_warehouse(settings, dry_run=True)
    assert snapshot(settings.home) == untouched
    assert dry.dry_run and dry.years and "would compact" in dry.to_text()

    done = compact_warehouse(settings)
    assert (done.files_after, done.rows, done.years) == (dry.files_after, dry.rows, dry.years)
    compacted = snapshot(settings.home)
    again = compact_warehouse(settings)
    assert snapshot(settings.home) == compacted  # same names, sizes and mtimes
    assert not again.years and again.files_before == again.files_after == done.files_after
    assert "nothing to compact" in again.line()


def test_through_limits_the_closed_years(ingested: Settings, tmp_path: Path) -> None:
    settings = copy_of(ingested, tmp_path)
    report = compact_warehouse(settings, through=Month.parse("2024-11"))  # 2024 still open
    assert report.years and all(label.endswith("/2023") for label in report.years)
    after = groups(settings)
    assert all(len(files) == 1 for (_, _, year), files in after.items() if year == "2023")
    assert any(len(files) > 1 for (_, _, year), files in after.items() if year == "2024")


# -- readers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compacted(ingested: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("compacted") / "home"
    shutil.copytree(ingested.home, home)
    settings = Settings(home=home, workers=1)
    compact_warehouse(settings)
    return settings


@hsettings(max_examples=25, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(month=st.integers(0, 26), feed_name=st.sampled_from(FEED_NAMES))
def test_any_as_of_month_reads_the_same_records(
    ingested: Settings, compacted: Settings, month: int, feed_name: str,
) -> None:
    """Point in time is exact: a year file holding later months adds no row at T."""
    as_of = Month.parse("2023-01") + month
    want = read_feed_as_of(ingested.warehouse_dir, feed_name, as_of)
    got = read_feed_as_of(compacted.warehouse_dir, feed_name, as_of)
    pd.testing.assert_frame_equal(got, want)


def test_layout_readers_on_a_compacted_warehouse(ingested: Settings, compacted: Settings) -> None:
    wh, ref = compacted.warehouse_dir, ingested.warehouse_dir
    assert latest_delivered_month(wh) == latest_delivered_month(ref) == LATEST
    assert counties(wh) == counties(ref)
    assert first_roster_month(wh) == first_roster_month(ref) == Month.parse("2023-01")
    # a mid-year month: the year file holding it is listed, no file of a later year is
    files = partition_files(wh, "medical", None, date(2024, 6, 30))
    assert any("reported_year=2024" in f for f in files)
    assert not any("2025" in Path(f).parent.name for f in files)
    from monitoring.notebook_data import NotebookContext, deliveries

    for month in (Month.parse("2024-06"), LATEST):  # rows per feed x county x month
        pd.testing.assert_frame_equal(deliveries(NotebookContext(compacted, month)),
                                      deliveries(NotebookContext(ingested, month)))


def test_year_file_names_parse_back() -> None:
    name = year_file_name(Month.parse("2024-02"), Month.parse("2024-11"), "20260101T000000Z-ab12cd")
    assert name == "months-2024-02-2024-11-20260101T000000Z-ab12cd.parquet"
    assert parse_year_file(name) == (Month.parse("2024-02"), Month.parse("2024-11"))
    for other in ("part-1.parquet", "months-2024-13-2024-12-x.parquet",
                  "months-2024-05-2024-02-x.parquet", "months-2023-05-2024-02-x.parquet",
                  "months-2024-02-2024-11-x.csv", "months-2024-022024-11-x.parquet"):
        assert parse_year_file(other) is None, other
    with pytest.raises(ValueError):
        year_file_name(Month.parse("2023-12"), Month.parse("2024-01"), "run")


def test_a_hand_made_warehouse_fully_compacted(tmp_path: Path) -> None:
    """latest delivered month, counties, first roster month and fingerprints from year
    files' names alone (hand-computed)."""
    settings = Settings(home=tmp_path / "home", workers=1)
    fixture = Warehouse(settings.warehouse_dir)
    for county, hh, months in (("620102", "h1", ("2023-02", "2023-07", "2024-03", "2024-05")),
                               ("620103", "h2", ("2023-05", "2023-06", "2024-11", "2024-12"))):
        for month in months:
            fixture.add("households", county=county, household_key=hh, head_person_key=f"p{hh}",
                        village_code=f"{county}001001", reported_date=f"{month}-10")
        fixture.write()
    wh = settings.warehouse_dir
    early = fingerprint_through(wh, Month.parse("2023-12"))
    before_2023 = fingerprint_through(wh, Month.parse("2022-12"))
    compact_warehouse(settings)
    names = sorted(f.path.name.rsplit("-", 2)[0] for f in data_files(wh, "households"))
    assert names == ["months-2023-02-2023-07", "months-2023-05-2023-06",
                     "months-2024-03-2024-05", "months-2024-11-2024-12"]
    assert all(f.compacted for f in data_files(wh, "households"))
    assert latest_delivered_month(wh) == Month.parse("2024-12")
    assert counties(wh) == ["620102", "620103"]
    assert first_roster_month(wh) == Month.parse("2023-02")
    assert not list(wh.glob("*/*/reported_month=*"))  # no empty month folders
    # fingerprints: 2023 year files count through 2023-xx, 2024's do not
    assert fingerprint_through(wh, Month.parse("2022-12")) == before_2023
    assert fingerprint_through(wh, Month.parse("2023-12")) != early
    through = {m: fingerprint_through(wh, Month.parse(m)) for m in ("2023-12", "2024-03",
                                                                   "2024-12")}

    def touch(county: str) -> None:  # a rewrite of the county's 2024 year file
        path = next(f.path for f in data_files(wh, "households", county) if f.year == "2024")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))

    touch("620103")  # months 2024-11..12: counts through 2024-12, not 2024-03
    assert fingerprint_through(wh, Month.parse("2023-12")) == through["2023-12"]
    assert fingerprint_through(wh, Month.parse("2024-03")) == through["2024-03"]
    assert fingerprint_through(wh, Month.parse("2024-12")) != through["2024-12"]
    touch("620102")  # months 2024-03..05: its first month <= 2024-03 counts
    assert fingerprint_through(wh, Month.parse("2024-03")) != through["2024-03"]


# -- ingest after compaction ----------------------------------------------------------------
def test_reingest_and_late_delivery_into_a_compacted_year(
    world: Path, reference_tables: dict[str, pd.DataFrame], tmp_path: Path,
) -> None:
    settings = workspace(tmp_path / "home")
    ingest.ingest(world / "early", settings)
    compact_warehouse(settings)
    compacted = snapshot(settings.home)

    again = ingest.ingest(world / "early", settings)  # the same extracts: nothing new
    assert again.accepted == 0 and all(f.skipped for f in again.files)
    # the same rows in different bytes (CRLF line ends): row hashes, kept in `_rowhash`
    # through compaction, recognise every row
    resent = tmp_path / "resent"
    shutil.copytree(world / "early", resent)
    original = (resent / "medical" / "medical_2024-02.csv").read_bytes()
    assert b"\r\n" not in original
    (resent / "medical" / "medical_2024-02.csv").write_bytes(original.replace(b"\n", b"\r\n"))
    duplicate = ingest.ingest(resent, settings)
    assert duplicate.accepted == 0 and duplicate.feeds["medical"].duplicates > 0
    changed = {k for k, v in snapshot(settings.home).items() if compacted.get(k) != v}
    assert not [k for k in changed if k.startswith("warehouse/") and "_manifest" not in k
                and "_rowhash" not in k]

    late = ingest.ingest(world / "raw", settings)  # the late file, into compacted 2024
    assert late.accepted > 0
    landed = [f for f in data_files(settings.warehouse_dir, "medical") if f.year == "2024"]
    assert {f.compacted for f in landed} == {True, False}
    assert {f.first for f in landed if not f.compacted} == {"2024-08"}
    assert_same_tables(tables(settings), reference_tables)  # read beside the year file

    merged = compact_warehouse(settings)
    assert merged.years and all(y.startswith("medical/") and y.endswith("/2024")
                                for y in merged.years)
    after = groups(settings)
    assert all(len(files) == 1 for (_, _, year), files in after.items() if year < "2025")
    assert_same_tables(tables(settings, training=True), reference_tables)


# -- crashes and the lock-free reader's race --------------------------------------------------
def test_failure_before_commit_leaves_the_warehouse_as_it_was(
    ingested: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = copy_of(ingested, tmp_path)
    untouched = snapshot(settings.home)

    def fail(self: store.Stager, manifest: dict[str, Any]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.Stager, "commit", fail)
    with pytest.raises(OSError, match="disk full"):
        compact_warehouse(settings)
    assert snapshot(settings.home) == untouched
    assert not list(settings.home.rglob(".staging"))


def test_old_and_new_both_visible_then_recover_finishes(
    ingested: Settings, reference_tables: dict[str, pd.DataFrame], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit moves year files in before removing month files: a reader in between
    sees both (exact duplicate rows) and reads the same tables. A run that dies there is
    finished by `recover`."""
    settings = copy_of(ingested, tmp_path)
    files_before = sum(map(len, groups(settings).values()))
    real_apply = store._apply

    def power_cut_after_moves(home: Path, journal: Path) -> None:
        plan = json.loads(journal.read_text(encoding="utf-8"))
        for src, dst in plan["moves"]:
            (home / dst).parent.mkdir(parents=True, exist_ok=True)
            (home / src).replace(home / dst)
        raise KeyboardInterrupt  # dies before any remove

    monkeypatch.setattr(store, "_apply", power_cut_after_moves)
    with pytest.raises(KeyboardInterrupt):
        compact_warehouse(settings)
    monkeypatch.setattr(store, "_apply", real_apply)
    both = groups(settings)
    assert sum(map(len, both.values())) > files_before  # year files added, none removed
    assert any(p.parent.name.startswith("reported_year=") for files in both.values()
               for p in files)
    assert list((settings.home / store.JOURNAL_DIR).glob("*.json"))
    assert_same_tables(tables(settings), reference_tables)

    store.recover(settings)
    assert not (settings.home / store.JOURNAL_DIR).exists()
    assert not list(settings.home.rglob(".staging"))
    after = groups(settings)
    assert all(len(files) == 1 for (_, _, year), files in after.items() if year < "2025")
    assert_same_tables(tables(settings), reference_tables)


def test_a_listed_file_gone_is_listed_again(ingested: Settings, tmp_path: Path) -> None:
    """A reader that listed month files just before a compaction committed reads again."""
    settings = copy_of(ingested, tmp_path)
    wh = settings.warehouse_dir
    upto = date(2024, 6, 30)
    want = read_feed_as_of(wh, "medical", Month.parse("2024-06"))
    stale = partition_files(wh, "medical", None, upto)
    compact_warehouse(settings)
    assert not all(Path(f).exists() for f in stale)
    listings = iter([stale, partition_files(wh, "medical", None, upto)])
    import duckdb

    def read(files: list[str]) -> pa.Table:
        paths = ", ".join(f"'{f}'" for f in files)
        with duckdb.connect() as con:
            return con.sql(f"SELECT count(*) AS n FROM read_parquet([{paths}]) "
                           f"WHERE reported_date <= DATE '{upto}'").to_arrow_table()

    table = _read_listed(lambda: next(listings), read)
    expected = read(partition_files(ingested.warehouse_dir, "medical", None, upto))
    assert table is not None and table["n"].to_pylist() == expected["n"].to_pylist()
    with pytest.raises(duckdb.Error):  # without the retry the stale listing fails
        read(stale)
    assert len(read_feed_as_of(wh, "medical", Month.parse("2024-06"))) == len(want)


# -- the command line -----------------------------------------------------------------------
def test_doudi_compact_command(ingested: Settings, tmp_path: Path) -> None:
    settings = copy_of(ingested, tmp_path)
    dry = doudi(settings.home, "compact", "--dry-run")
    assert dry.code == 0 and "would compact" in dry.out, dry.err
    done = doudi(settings.home, "compact", "--through", "2024-12")
    assert done.code == 0 and "compacted" in done.out, done.err
    assert all(len(files) == 1 for (_, _, year), files in groups(settings).items()
               if year < "2025")
    refused(doudi(settings.home, "compact", "--through", str(Month.today() + 1)),
            "--through", "future")
    refused(doudi(settings.home, "compact", "--through", "2025-04"), "latest delivered")
    refused(doudi(settings.home, "compact", "--through", "2024-6"), "--through")


def test_an_empty_workspace_has_nothing_to_compact(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", workers=1)
    report = compact_warehouse(settings)
    assert not report.years and report.files_before == report.files_after == 0
    assert "nothing to compact" in report.to_text()
    assert not settings.warehouse_dir.exists()
    refused(doudi(settings.home, "compact", "--through", "2024-12"), "empty")
