"""Nothing is skipped in silence: unknown entries, per-feed counts, silent feeds, the
optional `divisions` feed, and names/phones that live only in the vault. Issue #10."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import ingest
from doudi.contract import FEED_NAMES
from doudi.errors import UserError
from ingest.pseudonyms import pseudonym
from ingest.reading import not_a_data_file, not_a_feed
from ingest.vault import contact_details
from jobs.cli import main
from tests.ingest.ingest_world import (
    PEOPLE,
    delivery,
    division_rows,
    file_snapshot,
    readable_contents,
    warehouse_table,
    workspace,
    write_csv,
    write_delivery,
)


def test_suggestions_name_the_closest_feed_or_suffix() -> None:
    assert not_a_feed("medcal", True) == "medcal/: not a feed; did you mean medical/?"
    assert not_a_feed("Persons", True) == "Persons/: not a feed; did you mean persons/?"
    assert not_a_feed("photos", True).startswith("photos/: not a feed (feeds: households,")
    assert not_a_feed("persons.csv", False) == (
        "persons.csv: a file outside the feed folders; did you mean to put it in persons/?")
    data = "(*.csv, *.csv.gz, *.parquet)"
    assert not_a_data_file("persons/x.cvs") == (
        f"persons/x.cvs: not a data file {data}; did you mean .csv?")
    assert not_a_data_file("medical/m_2024.01.parq") == (
        f"medical/m_2024.01.parq: not a data file {data}; did you mean .parquet?")
    assert not_a_data_file("medical/notes.docx") == f"medical/notes.docx: not a data file {data}"


def _with_strays(raw: Path) -> Path:
    (raw / "medcal").mkdir()
    (raw / "medcal" / "m.csv").write_text("x\n")
    (raw / "persons" / "x.cvs").write_text("x\n")
    (raw / ".DS_Store").write_bytes(b"\0")
    (raw / "persons" / "._persons-2024-01.csv").write_bytes(b"\0\5")  # macOS resource fork
    (raw / "medical" / "Thumbs.db").write_bytes(b"\0")
    (raw / "medical" / ".cache").mkdir()  # a hidden folder is not descended into
    (raw / "medical" / ".cache" / "medical-old.csv").write_text("not read\n")
    return raw


def test_unknown_entries_are_an_error_naming_each(tmp_path: Path) -> None:
    raw = _with_strays(write_delivery(tmp_path / "raw"))
    settings = workspace(tmp_path)
    for run in (ingest.ingest, ingest.validate):
        with pytest.raises(UserError) as caught:
            run(raw, settings)
        message = str(caught.value)
        assert "\n" not in message
        assert "2 unknown entries" in message
        assert "medcal/: not a feed; did you mean medical/?" in message
        assert "persons/x.cvs: not a data file (*.csv, *.csv.gz, *.parquet); did you mean .csv?" \
            in message
        assert "--allow-unknown" in message and "DS_Store" not in message
    assert file_snapshot(settings.home) == {}


def test_allow_unknown_reads_the_feeds_and_lists_the_rest(tmp_path: Path) -> None:
    raw = _with_strays(write_delivery(tmp_path / "raw"))
    settings = workspace(tmp_path)
    report = ingest.ingest(raw, settings, allow_unknown=True)
    assert report.accepted == sum(len(r) for r in delivery().values())
    assert report.unknown_paths == ["medcal/: not a feed; did you mean medical/?",
                                    "persons/x.cvs: not a data file (*.csv, *.csv.gz, "
                                    "*.parquet); did you mean .csv?"]
    assert report.hidden_paths == [".DS_Store", "medical/.cache/", "medical/Thumbs.db",
                                   "persons/._persons-2024-01.csv"]  # listed, not read
    text = report.to_text()
    assert "WARNING: unknown entries, not read (--allow-unknown):" in text
    assert "hidden or system files, not read: .DS_Store" in text
    saved = json.loads(Path(report.report_paths[0]).read_text(encoding="utf-8"))
    assert saved["unknown_paths"] == report.unknown_paths


def test_a_missing_required_feed_mentions_the_misspelt_folder(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw")
    (raw / "persons").rename(raw / "person")
    with pytest.raises(UserError, match=r"required feed 'persons' is missing: .*"
                       r"person/: not a feed; did you mean persons/\?"):
        ingest.validate(raw, workspace(tmp_path))


def test_per_feed_counts_skips_and_silent_feeds(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    raw = write_delivery(tmp_path / "raw")
    first = ingest.ingest(raw, settings)
    medical = first.feeds["medical"]
    assert (medical.files, medical.files_skipped, medical.rows, medical.accepted) == (1, 0, 6, 6)
    assert set(first.feeds) == set(FEED_NAMES)  # every feed, delivered or not
    # households, persons reported 2024-01; monitoring 2024-01-15; medical 2024-02-10
    assert first.silent_feeds("2024-01", expected_only=False) == [
        n for n in FEED_NAMES if n not in ("households", "persons", "monitoring_events")]
    # only feeds expected monthly (Settings.feed_cadence) are silent by default
    assert first.silent_feeds("2024-01") == ["medical", "employment", "social_assistance"]
    assert "medical" not in first.silent_feeds("2024-02-29")  # a date or Month's str
    # next month: only medical is new; the rest is the same files again
    feb = delivery()["medical"]
    for r in feb:
        r.update(month="2024-02", reported_date="2024-03-05")
    write_csv(raw / "medical" / "medical-2024-02.csv", "medical", feb)
    again = ingest.ingest(raw, settings)
    assert (again.feeds["medical"].files, again.feeds["medical"].files_skipped) == (1, 1)
    assert (again.feeds["households"].files, again.feeds["households"].files_skipped) == (0, 1)
    assert again.silent_feeds("2024-03", expected_only=False) == [
        n for n in FEED_NAMES if n != "medical"]
    text = again.to_text()
    assert "skipped" in text and "skipped households/" not in text  # a count, not a line each
    assert "files read: 1; skipped: 4 already ingested, 0 same content" in text
    table = again.feed_table()
    assert table[0].split() == ["feed", "files", "new", "skipped", "rows", "new", "accepted",
                                "quarantined", "pending", "duplicates", "placed", "warnings"]
    assert [line.split()[0] for line in table[1:]] == list(FEED_NAMES)
    assert table[1 + FEED_NAMES.index("medical")].split()[1:6] == ["1", "1", "6", "6", "0"]


def _doudi(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["doudi", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_cli_unknown_entries_exit_2_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))
    raw = _with_strays(write_delivery(tmp_path / "raw"))
    assert _doudi(monkeypatch, "validate", str(raw)) == 2
    assert "did you mean medical/?" in capsys.readouterr().err
    assert _doudi(monkeypatch, "ingest", str(raw)) == 2
    assert _doudi(monkeypatch, "validate", "--allow-unknown", str(raw)) == 0
    assert _doudi(monkeypatch, "ingest", "--allow-unknown", str(raw)) == 0
    out = capsys.readouterr().out
    assert "medcal/: not a feed" in out and "households" in out
    assert _doudi(monkeypatch, "ingest", "--allow-unknown", str(raw)) == 0
    out = capsys.readouterr().out
    assert "skipped: 4 already ingested" in out and "skipped medical/" not in out


def test_divisions_are_validated_stored_and_counted(tmp_path: Path) -> None:
    rows = delivery()
    rows["divisions"] = division_rows()
    rows["divisions"].append({"code": "620102001", "name": "城关街道",
                              "reported_date": "2024-03-01"})  # renamed: a new row
    settings = workspace(tmp_path)
    report = ingest.ingest(write_delivery(tmp_path / "raw", rows), settings)
    assert report.feeds["divisions"].accepted == 4
    assert "divisions" not in report.missing_optional_feeds
    table = warehouse_table(settings, "divisions").sort_by("source_row")
    assert table["name"].to_pylist() == ["城关区", "城关镇", "兴隆村", "城关街道"]
    assert set(table["county_code"].to_pylist()) == {"620102"}


def test_names_and_phones_live_only_in_the_vault(tmp_path: Path) -> None:
    rows = delivery()
    for i, r in enumerate(rows["persons"]):
        r["name"] = f"名{i}"
    for i, r in enumerate(rows["households"]):
        r["contact_phone"] = f"1391234500{i}"
    raw = write_delivery(tmp_path / "raw", rows, chinese=True)  # 姓名, 联系电话 headers
    assert "联系电话" in (raw / "households" / "households-2024-01.csv").read_text()
    settings = workspace(tmp_path)
    ingest.ingest(raw, settings)
    # a later persons row renames the first person; a row without a name keeps the old one
    mar = {"persons": [dict(delivery()["persons"][0], status="living",
                            status_date="2024-03-01", reported_date="2024-03-02", name="新名"),
                       dict(delivery()["persons"][1], status_date="2024-03-01",
                            reported_date="2024-03-02")],
           "households": [dict(delivery()["households"][0], contact_phone="13800000000",
                               reported_date="2024-03-02")],
           "monitoring_events": delivery()["monitoring_events"]}
    ingest.ingest(write_delivery(tmp_path / "mar", mar, tag="2024-03"), settings)

    assert "name" not in warehouse_table(settings, "persons").column_names
    assert "contact_phone" not in warehouse_table(settings, "households").column_names
    outside = readable_contents(settings.home, skip=("vault",))
    assert "13912345000" not in outside and "名0" not in outside and "新名" not in outside
    key = settings.key_file.read_bytes()
    first, second = (pseudonym(key, "person", PEOPLE["H0001"][i]) for i in (0, 1))
    home = pseudonym(key, "household", "H0001")
    other = pseudonym(key, "household", "H0002")
    found = contact_details([first, second, home, other, "p_nobody"], settings,
                            purpose="caseworker sheet test")
    assert found.names == {first: "新名", second: "名1"}
    assert found.phones == {home: "13800000000", other: "13912345001"}
    audit = (settings.vault_dir / "audit.jsonl").read_text().splitlines()
    record = json.loads(audit[-1])
    assert (record["read"], record["pseudonyms_asked"], record["pseudonyms_found"]) == (
        "names_and_phones", 5, 4)
    assert "新名" not in audit[-1] and "138" not in audit[-1]
    for part in (settings.vault_dir / "person_names").glob("*.parquet"):
        assert oct(part.stat().st_mode)[-3:] == "600"
        assert pq.read_schema(part).names == ["person_key", "name", "status_date",
                                              "reported_date"]


def test_contact_details_need_a_purpose(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="purpose"):
        contact_details(["p_x"], workspace(tmp_path), purpose="")
