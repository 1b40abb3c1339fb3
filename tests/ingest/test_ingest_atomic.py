"""Incremental, idempotent and atomic: reruns add nothing, failures leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

import ingest
from ingest import store
from tests.ingest.ingest_world import (
    PEOPLE,
    delivery,
    file_snapshot,
    plain,
    quarantined,
    readable_contents,
    warehouse_table,
    workspace,
    write_csv,
    write_delivery,
)


def _february() -> dict[str, list[dict[str, str]]]:
    rows = delivery()
    rows["households"] = []
    rows["persons"] = []
    rows["monitoring_events"] = [dict(rows["monitoring_events"][0], event="risk_eliminated",
                                      event_date="2024-02-20", reported_date="2024-02-25")]
    for r in rows["medical"]:
        r.update(month="2024-02", reported_date="2024-03-10")
    return rows


def test_rerun_adds_nothing_and_next_month_appends(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    raw = write_delivery(tmp_path / "raw")
    ingest.ingest(raw, settings)
    before = file_snapshot(settings.warehouse_dir / "medical")

    again = ingest.ingest(raw, settings)

    assert file_snapshot(settings.warehouse_dir / "medical") == before
    assert all(f.skipped for f in again.files)
    assert again.accepted == 0

    write_delivery(raw, _february(), tag="2024-02")  # same folder, next month's files added
    feb = ingest.ingest(raw, settings)

    assert [plain(f.file) for f in feb.files if not f.skipped] == [
        "households/households-2024-02.csv", "persons/persons-2024-02.csv",
        "medical/medical-2024-02.csv", "monitoring_events/monitoring_events-2024-02.csv"]
    assert warehouse_table(settings, "medical").num_rows == 12
    assert warehouse_table(settings, "monitoring_events").num_rows == 2
    assert set(before) < set(file_snapshot(settings.warehouse_dir / "medical"))
    manifest = json.loads((settings.warehouse_dir / "_manifest.json").read_text())
    assert len(manifest["files"]) == 8
    assert len(manifest["runs"]) == 3


def test_redelivered_rows_are_duplicates_and_corrections_are_versions(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    rows = delivery()
    redelivered = rows["medical"][:3]
    correction = dict(rows["medical"][3], total_cost_yuan="130.50", reported_date="2024-02-20")
    inside_dup = dict(rows["medical"][4], reported_date="2024-02-21")
    # a different file (new content hash) holding old rows, a correction and a repeat
    write_csv(tmp_path / "late" / "medical" / "late.csv", "medical",
              [*redelivered, correction, inside_dup, inside_dup])
    for name in ("households", "monitoring_events"):  # same bytes as before: skipped
        write_csv(tmp_path / "late" / name / f"{name}-2024-01.csv", name, rows[name])
    # the same persons rows in another order: a new file, every row a duplicate
    write_csv(tmp_path / "late" / "persons" / "persons.csv", "persons", rows["persons"][::-1])

    report = ingest.ingest(tmp_path / "late", settings)

    assert report.feeds["medical"].duplicates == 4  # 3 re-delivered + 1 repeated in the file
    assert report.feeds["medical"].accepted == 2
    assert report.feeds["persons"].duplicates == 6
    assert report.feeds["persons"].accepted == 0
    assert [plain(f.file) for f in report.files if f.skipped] == [
        "households/households-2024-01.csv", "monitoring_events/monitoring_events-2024-01.csv"]
    medical = warehouse_table(settings, "medical")
    assert medical.num_rows == 8
    person = medical.filter(pc.starts_with(medical["source_file"], "medical/late.csv#")
                            ).to_pylist()
    assert sorted(r["total_cost_yuan"] for r in person) == [120.5, 130.5]


class BoomError(RuntimeError):
    pass


def test_a_fault_mid_run_leaves_the_workspace_unchanged_and_a_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    raw = write_delivery(tmp_path / "raw", _february(), tag="2024-02")
    before = file_snapshot(settings.home)
    real_flush = store.PartitionWriter.flush
    calls = {"n": 0}

    def failing_flush(self: store.PartitionWriter) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the first feed is staged, then the writer breaks
            raise BoomError("disk full")
        real_flush(self)

    monkeypatch.setattr(store.PartitionWriter, "flush", failing_flush)
    with pytest.raises(BoomError):
        ingest.ingest(raw, settings)
    assert file_snapshot(settings.home) == before

    monkeypatch.setattr(store.PartitionWriter, "flush", real_flush)
    ingest.ingest(raw, settings)
    assert warehouse_table(settings, "medical").num_rows == 12
    assert warehouse_table(settings, "monitoring_events").num_rows == 2


def test_a_crash_during_the_renames_is_rolled_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = workspace(tmp_path)
    raw = write_delivery(tmp_path / "raw")
    real_apply = store._apply

    def crash(home: Path, journal: Path) -> None:
        raise BoomError("power cut after the journal was written")

    monkeypatch.setattr(store, "_apply", crash)
    with pytest.raises(BoomError):
        ingest.ingest(raw, settings)
    assert not (settings.warehouse_dir / "_manifest.json").exists()

    monkeypatch.setattr(store, "_apply", real_apply)
    rerun = ingest.ingest(raw, settings)  # recovery finishes the first run; nothing left to do

    assert all(f.skipped for f in rerun.files)
    assert warehouse_table(settings, "medical").num_rows == 6
    assert not list(settings.home.rglob(".staging"))


def test_no_raw_identifier_outside_vault_and_quarantine(tmp_path: Path) -> None:
    rows = delivery()
    rows["persons"].append(dict(rows["persons"][0], relation="cousin"))  # one quarantined row
    raw = write_delivery(tmp_path / "raw", rows)
    settings = workspace(tmp_path)

    report = ingest.ingest(raw, settings)

    assert quarantined(settings)
    outside = readable_contents(settings.home, skip=("vault", "quarantine"))
    outside += report.to_json() + report.to_text()
    secrets_ = [pid for people in PEOPLE.values() for pid in people]
    secrets_ += [r["household_id"] for r in rows["households"]]
    for secret in secrets_:
        assert secret not in outside
    vault_text = readable_contents(settings.vault_dir)
    assert all(secret in vault_text for secret in secrets_)
