"""Hostile input at ingest and at the workspace's files (issue #11).

File names as a side channel, NUL bytes, header-only files, 128 kB fields, symbolic
links, loose permissions on the key and the vault, rows that arrive before their
household or person, and the cadence of silent feeds. Real files, real CLI.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import stat
import sys
import unicodedata
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest
from doudi.contract import FEED_NAMES
from doudi.errors import UserError
from doudi.idnumber import make_id
from doudi.settings import DEFAULT_FEED_CADENCE, Settings
from ingest import pending
from ingest.names import file_ref, printable, safe_name
from ingest.vault import reidentify
from jobs.cli import main
from tests.ingest.ingest_world import (
    PEOPLE,
    csv_text,
    delivery,
    file_snapshot,
    quarantined,
    warehouse_table,
    workspace,
    write_csv,
    write_delivery,
    write_parquet,
)

# an ID number that belongs to nobody in the data: it may appear nowhere doudi writes
OUTSIDER = make_id("110101", date(1990, 1, 1), 5)
ESCAPE = "\x1b]0;owned\x07\x1b[31m"
REF = re.compile(r"^[a-z_]+/[A-Za-z0-9._\-*/\u3400-\u4dbf\u4e00-\u9fff~]+#[0-9a-f]{12}$")


def _doudi(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["doudi", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def _everything_written(home: Path) -> bytes:
    """Everything under the workspace as text: Parquet decoded (its values), other files
    as they are."""
    import pyarrow.parquet as pq

    parts = []
    for p in sorted(home.rglob("*")):
        if p.is_file() and p.parent.name != "secrets":  # the key: 32 random bytes
            parts.append(str(pq.read_table(p).to_pylist()).encode() if p.suffix == ".parquet"
                         else p.read_bytes())
    return b"\n".join(parts)


# -- file names are side channels -------------------------------------------------------
def test_an_id_number_in_a_file_name_reaches_no_file_and_no_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = delivery()
    rows["medical"].append(dict(rows["medical"][0], insured="perhaps"))  # one quarantined
    raw = tmp_path / "raw"
    for name, feed_rows in rows.items():
        write_csv(raw / name / f"{name}-2024-01.csv", name, feed_rows)
    (raw / "medical" / "medical-2024-01.csv").rename(
        raw / "medical" / f"{OUTSIDER}张三{ESCAPE}.csv")
    stray = raw / "persons" / f"138-1234-5678 {OUTSIDER[:6]} {OUTSIDER[6:]}"
    stray.mkdir()
    (stray / "notes.txt").write_text("not data\n")
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))

    assert _doudi(monkeypatch, "validate", str(raw), "--allow-unknown") == 1
    assert _doudi(monkeypatch, "validate", str(raw), "--allow-unknown", "--format",
                  "json") == 1
    assert _doudi(monkeypatch, "ingest", str(raw), "--allow-unknown") == 0
    assert _doudi(monkeypatch, "ingest", str(raw)) == 2  # the unknown folder: named, masked
    out = capsys.readouterr()
    terminal = out.out + out.err
    home = tmp_path / "ws"
    written = _everything_written(home)
    for secret in (OUTSIDER, OUTSIDER[:6] + " " + OUTSIDER[6:], "138-1234-5678"):
        assert secret not in terminal
        assert secret.encode() not in written
    assert "\x1b" not in terminal and "\x07" not in terminal
    assert b"\x1b" not in written and b"\x07" not in written

    medical = warehouse_table(Settings(home=home), "medical")
    refs = set(medical["source_file"].to_pylist())
    digest = hashlib.sha256((raw / "medical" / f"{OUTSIDER}张三{ESCAPE}.csv").read_bytes())
    (ref,) = refs
    assert REF.match(ref), ref
    assert ref.startswith("medical/******************张三") and ref.endswith(
        "#" + digest.hexdigest()[:12])
    assert ref in terminal  # the operator is told which file, in the same words
    manifest = json.loads((home / "warehouse" / "_manifest.json").read_text())
    assert {e["file"] for e in manifest["files"].values()} >= refs
    assert (medical["source_row"].to_pylist(), len(quarantined(Settings(home=home)))) == (
        [1, 2, 3, 4, 5, 6], 1)


def test_a_file_level_error_names_the_file_masked_with_its_hash(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw")
    bad = raw / "medical" / f"claims-{OUTSIDER}.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    with pytest.raises(UserError) as caught:
        ingest.validate(raw, workspace(tmp_path))
    message = str(caught.value)
    assert OUTSIDER not in message and "\n" not in message
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    assert message == (f"medical/claims-******************.parquet#{digest[:12]}: "
                       "unreadable Parquet file (ArrowInvalid)")


def test_reports_and_manifest_are_private(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    report = ingest.ingest(write_delivery(tmp_path / "raw"), settings)
    assert stat.S_IMODE(settings.reports_dir.stat().st_mode) == 0o700
    for path in [*map(Path, report.report_paths), settings.warehouse_dir / "_manifest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for area in ("vault", "quarantine", "pending"):
        assert stat.S_IMODE((settings.home / area).stat().st_mode) == 0o700, area


def test_an_older_manifest_is_scrubbed_when_it_is_rewritten(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    path = settings.warehouse_dir / "_manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["files"].values():  # as written before names were scrubbed
        entry["file"] = f"persons/{OUTSIDER}.csv"
    path.write_text(json.dumps(manifest))
    ingest.ingest(write_delivery(tmp_path / "feb", tag="2024-02"), settings)
    assert OUTSIDER not in path.read_text()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_names_hold_only_safe_characters_and_no_long_number(text: str) -> None:
    name = safe_name(text)
    assert re.fullmatch(r"[A-Za-z0-9._\-*/~\u3400-\u4dbf\u4e00-\u9fff]+", name), name
    assert not re.search(r"[0-9]{6}", name)
    assert safe_name(name) == name  # idempotent: a reference survives being scrubbed again
    shown = printable(text)  # what a terminal may show: no control or invisible character
    assert all(c == " " or unicodedata.category(c)[0] not in "CZ" for c in shown), shown


def test_masking_keeps_what_the_operator_needs() -> None:
    assert safe_name("medical/医保结算-2024-06.csv") == "medical/医保结算-2024-06.csv"
    assert safe_name("medical/m 20240131.csv") == "medical/m_********.csv"
    assert safe_name(f"persons/{OUTSIDER[:17]}x.csv") == "persons/" + "*" * 18 + ".csv"
    assert safe_name("persons/tel 138 1234 5678.csv") == "persons/tel_" + "*" * 13 + ".csv"
    assert safe_name("medical/\x1b[31mred.csv") == "medical/__31mred.csv"
    assert file_ref("medical/a.csv", "ab" * 32) == "medical/a.csv#" + "ab" * 6
    assert printable("/data/\x1b[2J/x") == "/data/\\x1b[2J/x"
    assert len(safe_name("medical/" + "a" * 500 + ".csv")) == 160


# -- smaller items ----------------------------------------------------------------------
def test_nul_bytes_are_quarantined_from_csv_and_parquet(tmp_path: Path) -> None:
    rows = delivery()
    rows["persons"][1]["ethnicity"] = "汉\x00族"
    raw = write_delivery(tmp_path / "raw", rows)
    parquet_rows = [dict(r) for r in delivery()["persons"][2:3]]
    parquet_rows[0]["household_id"] = "H00\x0003"
    write_parquet(raw / "persons" / "more.parquet", "persons", parquet_rows)
    settings = workspace(tmp_path)
    ingest.ingest(raw, settings)
    got = {(f.split("#")[0], row, column, rule) for f_, f, row, column, rule in
           quarantined(settings) if f_ == "persons"}
    assert got == {("persons/persons-2024-01.csv", 2, "ethnicity", "control_character"),
                   ("persons/more.parquet", 1, "household_id", "control_character")}
    persons = warehouse_table(settings, "persons")
    assert not any("\x00" in str(v) for c in persons.columns for v in c.to_pylist())


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_only_file_without_final_line_break_is_an_empty_delivery(
    tmp_path: Path, gz: bool
) -> None:
    raw = write_delivery(tmp_path / "raw")
    header = csv_text("employment", []).rstrip("\n").encode()
    name = "employment/none.csv" + (".gz" if gz else "")
    (raw / "employment").mkdir()
    (raw / name).write_bytes(gzip.compress(header) if gz else header)
    report = ingest.ingest(raw, workspace(tmp_path))
    assert (report.feeds["employment"].files, report.feeds["employment"].rows) == (1, 0)


def test_a_128_kb_header_field_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_delivery(tmp_path / "raw")
    lines = csv_text("medical", delivery()["medical"]).splitlines()
    lines = [lines[0] + "," + "x" * (128 << 10)] + [line + ",1" for line in lines[1:]]
    (raw / "medical" / "medical-2024-01.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))
    assert _doudi(monkeypatch, "validate", str(raw)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the header row is longer than 65,536 bytes" in err


def test_128_kb_values_are_quarantined_or_kept_never_a_traceback(tmp_path: Path) -> None:
    rows = delivery()
    rows["persons"][0]["household_id"] = "H" * (128 << 10)
    rows["persons"][1]["ethnicity"] = "族" * (128 << 10)  # a str: odd, not wrong
    settings = workspace(tmp_path)
    report = ingest.ingest(write_delivery(tmp_path / "raw", rows), settings)
    persons = report.feeds["persons"]
    assert (persons.quarantined, persons.accepted) == (1, 5)
    assert persons.violations == {"bad_household_id": 1}
    assert persons.warnings["implausible_value"] == 1
    assert len(report.to_json()) < 20_000  # counts, never the value


# -- symbolic links ---------------------------------------------------------------------
def test_a_link_out_of_the_raw_folder_is_refused_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = write_csv(tmp_path / "elsewhere" / "employment.csv", "employment", [{
        "person_id": PEOPLE["H0001"][0], "month": "2024-01", "status": "migrant",
        "reported_date": "2024-02-01"}])
    raw = write_delivery(tmp_path / "raw")
    (raw / "employment").mkdir()
    (raw / "employment" / "e.csv").symlink_to(outside)
    (raw / "divisions").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))
    settings = Settings(home=tmp_path / "ws")

    capsys.readouterr()
    assert _doudi(monkeypatch, "ingest", str(raw)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "employment/e.csv: symbolic link to a place outside RAW_DIR (refused" in err
    assert "divisions/: symbolic link to a place outside RAW_DIR" in err
    assert not settings.warehouse_dir.exists()

    report = ingest.ingest(raw, settings, allow_unknown=True)  # listed, still not followed
    assert report.feeds["employment"].rows == 0
    assert warehouse_table(settings, "employment").num_rows == 0
    assert any(p.startswith("employment/e.csv: symbolic link") for p in report.unknown_paths)


def test_links_inside_are_followed_and_broken_links_and_loops_listed(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw")
    store = raw / "medical" / "2024"
    store.mkdir()
    (raw / "medical" / "medical-2024-01.csv").rename(store / "m.csv")
    (raw / "medical" / "current").symlink_to(store, target_is_directory=True)
    (raw / "medical" / "gone.csv").symlink_to(raw / "medical" / "nowhere.csv")
    (store / "again").symlink_to(raw / "medical", target_is_directory=True)
    settings = workspace(tmp_path)

    with pytest.raises(UserError, match=r"medical/gone.csv: broken symbolic link"):
        ingest.validate(raw, settings)
    report = ingest.ingest(raw, settings, allow_unknown=True)

    assert "medical/current/ -> medical/2024" in report.linked_paths
    assert "medical/gone.csv: broken symbolic link (not read)" in report.unknown_paths
    assert any("symbolic link loop" in p for p in report.unknown_paths)
    assert report.feeds["medical"].accepted == 6  # read once; the linked copy is the same
    assert report.feeds["medical"].files_skipped == 1
    assert "symbolic links inside the raw folder, followed" in report.to_text()


# -- permissions of the key, the vault and the quarantine -------------------------------
@pytest.mark.parametrize(("what", "mode", "fix"), [
    ("key", 0o644, "chmod 600"), ("key", 0o640, "chmod 600"),
    ("vault", 0o755, "chmod 700"), ("quarantine", 0o750, "chmod 700"),
    ("pending", 0o755, "chmod 700"),
])
def test_loose_permissions_are_refused_with_the_chmod_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    what: str, mode: int, fix: str,
) -> None:
    settings = workspace(tmp_path)
    rows = delivery()
    rows["medical"].append(dict(rows["medical"][0], insured="perhaps"))  # a quarantine
    ingest.ingest(write_delivery(tmp_path / "jan", rows), settings)
    path = settings.key_file if what == "key" else settings.home / what
    path.chmod(mode)
    before = file_snapshot(settings.home)
    raw = write_delivery(tmp_path / "feb", tag="2024-02")
    monkeypatch.setenv("DOUDI_HOME", str(settings.home))
    capsys.readouterr()
    for command in ("ingest", "validate"):
        assert _doudi(monkeypatch, command, str(raw)) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert err.rstrip().endswith(f"run: {fix} {path}"), err
        assert f"(mode {mode:04o})" in err
    assert file_snapshot(settings.home) == before
    if what == "vault":
        with pytest.raises(UserError, match="chmod 700"):
            reidentify(["p_x"], settings, purpose="export")
    path.chmod(0o600 if what == "key" else 0o700)
    assert ingest.ingest(raw, settings).files  # the same delivery again, now allowed


def test_a_read_only_key_is_fine(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    settings.key_file.chmod(0o400)
    rows = delivery()
    rows["medical"] = [dict(r, month="2024-02", reported_date="2024-03-10")
                       for r in rows["medical"]]
    assert ingest.ingest(write_delivery(tmp_path / "feb", rows, tag="2024-02"),
                         settings).accepted == 6


# -- rows that arrive before their household or person ----------------------------------
H3 = "H0003"


def _early_medical() -> dict[str, list[dict[str, str]]]:
    """January's delivery without household H0003 (and its people): their medical rows
    (reported 2024-02-10) arrive a month before their roster row."""
    rows = delivery()
    rows["households"] = [r for r in rows["households"] if r["household_id"] != H3]
    rows["persons"] = [r for r in rows["persons"] if r["household_id"] != H3]
    return rows


def _late_roster() -> dict[str, list[dict[str, str]]]:
    rows = delivery()
    return {
        "households": [dict(r, reported_date="2024-03-05") for r in rows["households"]
                       if r["household_id"] == H3],
        "persons": [dict(r, reported_date="2024-03-05") for r in rows["persons"]
                    if r["household_id"] == H3],
        "monitoring_events": rows["monitoring_events"],  # required feed: same rows again
        "medical": [],
    }


def test_medical_rows_before_their_person_wait_and_are_placed_later(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    first = ingest.ingest(write_delivery(tmp_path / "feb", _early_medical()), settings)
    medical = first.feeds["medical"]
    assert (medical.accepted, medical.pending, medical.quarantined) == (4, 2, 0)
    assert quarantined(settings) == set()
    assert warehouse_table(settings, "medical").num_rows == 4
    waiting = pending.read(settings, "medical")
    assert waiting.num_rows == 2 and "person_id" not in waiting.column_names
    assert all(k.startswith("p_") for k in waiting["person_key"].to_pylist())
    assert stat.S_IMODE(pending.parts(settings, "medical")[0].stat().st_mode) == 0o600

    second = ingest.ingest(write_delivery(tmp_path / "mar", _late_roster(), tag="2024-03"),
                           settings)
    assert (second.feeds["medical"].placed, second.placed) == (2, 2)
    assert pending.parts(settings, "medical") == []
    table = warehouse_table(settings, "medical")
    assert table.num_rows == 6
    late = table.filter(pc.equal(table["county_code"], "620103"))
    # point in time: a placed row keeps its own reported date (and partition)
    assert set(late["reported_date"].to_pylist()) == {date(2024, 2, 10)}
    assert set(late["reported_month"].to_pylist()) == {"2024-02"}
    assert sorted((settings.warehouse_dir / "medical" / "county=620103").iterdir())[0].name \
        == "reported_month=2024-02"

    third = ingest.ingest(write_delivery(tmp_path / "mar2", _late_roster(), tag="2024-03b"),
                          settings)
    assert third.placed == 0 and warehouse_table(settings, "medical").num_rows == 6


def test_a_person_and_their_rows_wait_for_the_household_together(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    rows = _early_medical()
    rows["persons"] = delivery()["persons"]  # H0003's people come, their household not
    first = ingest.ingest(write_delivery(tmp_path / "feb", rows), settings)
    assert (first.feeds["persons"].pending, first.feeds["medical"].pending) == (2, 2)
    late = _late_roster()
    late["persons"] = []
    second = ingest.ingest(write_delivery(tmp_path / "mar", late, tag="2024-03"), settings)
    assert (second.feeds["persons"].placed, second.feeds["medical"].placed) == (2, 2)
    assert first.pending == 4 and second.pending == 0
    assert warehouse_table(settings, "persons").num_rows == 6


def test_a_crash_while_placing_leaves_the_rows_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import store

    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "feb", _early_medical()), settings)
    before = file_snapshot(settings.home)
    raw = write_delivery(tmp_path / "mar", _late_roster(), tag="2024-03")

    def crash(self: store.Stager, manifest: dict[str, object]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.Stager, "commit", crash)
    with pytest.raises(OSError):
        ingest.ingest(raw, settings)
    assert file_snapshot(settings.home) == before
    monkeypatch.undo()
    assert ingest.ingest(raw, settings).placed == 2


def test_rows_waiting_too_long_are_reported_loudly(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ws", pending_alert_months=2)
    rows = delivery()
    stranger = make_id("620102", date(1985, 6, 1), 77)
    rows["medical"].append(dict(rows["medical"][0], person_id=stranger))
    first = ingest.ingest(write_delivery(tmp_path / "feb", rows), settings)
    assert first.pending == 1 and first.pending_overdue == 0
    later = delivery()
    later["medical"] = [dict(r, month="2024-03", reported_date="2024-04-10")
                        for r in later["medical"]]
    second = ingest.ingest(write_delivery(tmp_path / "apr", later, tag="2024-04"), settings)
    assert second.feeds["medical"].pending_total == 1 and second.pending_overdue == 1
    warning = second.overdue_warning()
    assert warning and warning.startswith("WARNING: 1 row(s) have waited 2 delivered month")
    assert warning in second.feed_table()[-1] and warning in second.to_text()
    assert stranger not in second.to_json()


# -- silent feeds ------------------------------------------------------------------------
def test_only_feeds_expected_monthly_are_silent(tmp_path: Path) -> None:
    assert set(DEFAULT_FEED_CADENCE) == set(FEED_NAMES)
    rows = delivery()
    rows["housing"] = [{"household_id": "H0001", "assessed_date": "2023-12-01",
                        "safety_grade": "B", "renovation_funded": "false",
                        "reported_date": "2023-12-20"}]
    report = ingest.ingest(write_delivery(tmp_path / "raw", rows), workspace(tmp_path))
    # January 2024: households/persons/monitoring_events report in January, medical in
    # February; employment and social_assistance (monthly) delivered nothing
    assert report.silent_feeds("2024-01") == ["medical", "employment", "social_assistance"]
    assert "housing" in report.silent_feeds("2024-01", expected_only=False)
    housing_monthly = Settings(home=tmp_path / "ws2", feed_cadence={"housing": "monthly"})
    again = ingest.validate(write_delivery(tmp_path / "raw2", rows), housing_monthly)
    assert "housing" in again.silent_feeds("2024-01")
    with pytest.raises(ValueError, match="feed_cadence"):
        Settings(feed_cadence={"housing": "weekly"})
    with pytest.raises(ValueError, match="unknown feed"):
        Settings(feed_cadence={"medicall": "monthly"})


def test_monthly_prints_a_warning_only_for_expected_feeds(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from doudi.months import Month
    from jobs.commands.monthly_cmd import MonthlySummary, _print

    summary = MonthlySummary(
        as_of=Month.parse("2024-01", what="as_of"), files_ingested=1, rows_added=1,
        rows_quarantined=0, trained="-", model_version="-", scored=0, alerts_created=0,
        alerts_skipped={}, silent_feeds=["employment"])
    _print(summary)
    out = capsys.readouterr().out
    assert "WARNING: employment: expected monthly, no new rows reported in 2024-01" in out
    assert out.count("WARNING") == 1


def test_pending_folder_holds_no_raw_identifier(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    rows = _early_medical()
    rows["persons"] = [dict(r, name="王小明") for r in delivery()["persons"]]
    ingest.ingest(write_delivery(tmp_path / "feb", rows), settings)
    written = _everything_written(settings.home / "pending").decode("utf-8", "replace")
    assert written
    for pid in PEOPLE[H3]:
        assert pid not in written
    assert H3 not in written and "王小明" not in written
    assert list((settings.home / "pending").iterdir())


def test_arrow_types_of_pending_match_the_warehouse() -> None:
    for name in FEED_NAMES:
        schema = pending.schema(name)
        assert "county_code" not in schema.names
        assert schema.field(pending.ROW_HASH).type == pa.uint64()
