"""File-level problems: a UserError naming the file and the problem; nothing written."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

import ingest
from doudi.errors import UserError
from jobs.cli import main
from tests.ingest.ingest_world import (
    PEOPLE,
    csv_text,
    delivery,
    file_snapshot,
    workspace,
    write_delivery,
)


def _expect_error(tmp_path: Path, raw: Path, *fragments: str) -> str:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "first"), settings)  # a warehouse to protect
    before = file_snapshot(settings.home)
    with pytest.raises(UserError) as caught:
        ingest.ingest(raw, settings)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert file_snapshot(settings.home) == before
    with pytest.raises(UserError):
        ingest.validate(raw, settings)
    return message


def test_missing_required_feed_folder(tmp_path: Path) -> None:
    rows = delivery()
    del rows["persons"]
    raw = write_delivery(tmp_path / "raw", rows, tag="2024-02")
    _expect_error(tmp_path, raw, "required feed 'persons' is missing", "no persons/ folder")


def test_required_feed_folder_without_data_files(tmp_path: Path) -> None:
    rows = delivery()
    del rows["monitoring_events"]
    raw = write_delivery(tmp_path / "raw", rows, tag="2024-02")
    (raw / "monitoring_events").mkdir()
    (raw / "monitoring_events" / "readme.txt").write_text("nothing this month")
    _expect_error(tmp_path, raw, "required feed 'monitoring_events' is missing",
                  "has no *.csv, *.csv.gz or *.parquet files")


def test_missing_required_column(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    text = csv_text("persons", delivery()["persons"]).replace(",status,", ",state,")
    (raw / "persons" / "persons-2024-02.csv").write_text(text)
    _expect_error(tmp_path, raw, "persons/persons-2024-02.csv",
                  "missing required column(s) 'status' (户籍状态)")


def test_column_given_twice(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    lines = csv_text("households", delivery()["households"]).splitlines()
    lines = [lines[0] + ",户编号"] + [line + ",dup" for line in lines[1:]]
    (raw / "households" / "households-2024-02.csv").write_text("\n".join(lines) + "\n")
    _expect_error(tmp_path, raw, "households/households-2024-02.csv",
                  "column 'household_id' appears twice")


def test_unreadable_parquet(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    (raw / "medical" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    _expect_error(tmp_path, raw, "medical/broken.parquet", "unreadable Parquet file")


def test_undecodable_text(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    data = csv_text("medical", delivery()["medical"]).encode() + b"\xff\xfe\xff,\xff\n"
    (raw / "medical" / "medical-2024-02.csv").write_bytes(data)
    _expect_error(tmp_path, raw, "medical/medical-2024-02.csv", "undecodable text")


def test_malformed_row_names_the_row_but_not_its_values(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    lines = csv_text("persons", delivery()["persons"]).splitlines()
    lines[3] += ",surplus,fields"
    (raw / "persons" / "persons-2024-02.csv").write_text("\n".join(lines) + "\n")
    message = _expect_error(tmp_path, raw, "persons/persons-2024-02.csv", "malformed CSV",
                            "data row 3 has 11 fields, expected 9")
    assert not any(pid in message for people in PEOPLE.values() for pid in people)


def test_empty_file(tmp_path: Path) -> None:
    raw = write_delivery(tmp_path / "raw", tag="2024-02")
    (raw / "medical" / "empty.csv").write_bytes(b"")
    _expect_error(tmp_path, raw, "medical/empty.csv", "empty file")


def _doudi(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the real CLI entry point in-process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["doudi", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))
    assert _doudi(monkeypatch, "ingest", str(tmp_path / "nowhere")) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err

    rows = delivery()
    rows["medical"].append(dict(rows["medical"][0], insured="perhaps"))
    raw = write_delivery(tmp_path / "raw", rows)
    assert _doudi(monkeypatch, "validate", str(raw), "--format", "json") == 1
    digest = hashlib.sha256((raw / "medical" / "medical-2024-01.csv").read_bytes()).hexdigest()
    assert capsys.readouterr().out.strip() == (
        f'{{"feed": "medical", "file": "medical/medical-2024-01.csv#{digest[:12]}", "row": 7, '
        '"column": "insured", "rule": "bad_bool", "message": "not a boolean (true/false, 1/0, '
        '是/否)"}')
    assert not (tmp_path / "ws" / "warehouse").exists()

    assert _doudi(monkeypatch, "ingest", "--quiet", str(raw)) == 0
    assert (tmp_path / "ws" / "warehouse" / "_manifest.json").exists()
