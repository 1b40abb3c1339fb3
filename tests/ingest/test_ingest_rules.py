"""Every row rule on a hand-made delivery: the bad row is quarantined, the rest ingested."""

from __future__ import annotations

import json
import stat
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest

import ingest
from doudi.idnumber import check_char, make_id
from ingest import ValidationReport
from ingest.checks import RULES
from tests.ingest.ingest_world import (
    PEOPLE,
    agriculture_rows,
    delivery,
    plain,
    quarantine_table,
    quarantined,
    warehouse_table,
    workspace,
    write_delivery,
)

HEAD_1 = PEOPLE["H0001"][0]
BAD_CHECK = HEAD_1[:17] + ("0" if HEAD_1[17] != "0" else "1")
BODY_BAD_BIRTH = "620102" + "19701340" + "011"  # month 13
BAD_BIRTH = BODY_BAD_BIRTH + check_char(BODY_BAD_BIRTH)
UNBORN_BODY = "620102" + "20300101" + "011"  # born after the row was reported
UNBORN = UNBORN_BODY + check_char(UNBORN_BODY)
STRANGER = make_id("620102", date(1985, 6, 1), 77)

# (feed, 0-based row, column, bad value, rule, reported column)
CASES = [
    ("persons", 0, "person_id", "62010219700304001", "id_format", "person_id"),
    ("persons", 0, "person_id", BAD_CHECK, "id_check_char", "person_id"),
    ("persons", 0, "person_id", BAD_BIRTH, "id_birth_date", "person_id"),
    ("persons", 0, "person_id", UNBORN, "id_birth_date", "person_id"),
    ("persons", 1, "relation", "cousin", "unknown_enum", "relation"),
    ("persons", 2, "status_date", "2024-02-30", "bad_date", "status_date"),
    ("persons", 2, "status_date", "2024/01/01", "bad_date", "status_date"),
    ("persons", 3, "status", "", "missing_value", "status"),
    ("persons", 5, "household_id", "H" * 33, "bad_household_id", "household_id"),
    ("persons", 5, "household_id", "H 0001", "bad_household_id", "household_id"),
    ("persons", 5, "ethnicity", "汉\x7f族", "control_character", "ethnicity"),
    ("households", 1, "village_code", "62010200100", "bad_village_code", "village_code"),
    ("households", 2, "household_id", "户0003", "bad_household_id", "household_id"),
    ("households", 2, "head_person_id", "\t" + PEOPLE["H0003"][0], "control_character",
     "head_person_id"),
    ("households", 0, "relocated", "maybe", "bad_bool", "relocated"),
    ("households", 0, "head_person_id", BAD_CHECK, "id_check_char", "head_person_id"),
    ("medical", 0, "outpatient_visits", "two", "bad_number", "outpatient_visits"),
    ("medical", 1, "total_cost_yuan", "-1.00", "negative_money", "total_cost_yuan"),
    ("medical", 2, "reimbursed_yuan", "60.251", "too_many_decimals", "reimbursed_yuan"),
    ("medical", 3, "inpatient_days", "-1", "out_of_range", "inpatient_days"),
    ("medical", 4, "month", "2024-13", "bad_date", "month"),
    ("medical", 5, "serious_illness", "\t=2+2", "control_character", "serious_illness"),
    ("medical", 5, "serious_illness", "a\nb", "control_character", "serious_illness"),
    ("medical", 1, "insured", "yes", "bad_bool", "insured"),
    ("monitoring_events", 0, "risk_types", "illness;cold", "unknown_enum", "risk_types"),
    ("monitoring_events", 0, "risk_types", ";", "missing_value", "risk_types"),
    ("agriculture", 1, "cultivated_land_mu", "2.5\x00", "control_character",
     "cultivated_land_mu"),
]


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[ValidationReport, list[int]]:
    """One delivery holding every case as a broken copy of a good row, appended (so nothing
    else depends on it), validated once; returns the report and each case's data row."""
    rows = delivery()
    rows["agriculture"] = agriculture_rows()
    case_rows = []
    for feed_name, row, column, value, _, _ in CASES:
        rows[feed_name].append(dict(rows[feed_name][row], **{column: value}))
        case_rows.append(len(rows[feed_name]))
    tmp = tmp_path_factory.mktemp("all_cases")
    raw = write_delivery(tmp / "raw", rows)
    # validate runs the very pipeline ingest runs, minus the writes (ingest: tests below)
    return ingest.validate(raw, workspace(tmp)), case_rows


@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_rejects_exactly_its_row(
    all_cases: tuple[ValidationReport, list[int]], case: int
) -> None:
    report, case_rows = all_cases
    feed_name, _, _, _, rule, reported = CASES[case]
    file = f"{feed_name}/{feed_name}-2024-01.csv"
    found = {(r.column, r.rule) for r in report.rejections
             if (r.feed, plain(r.file), r.row) == (feed_name, file, case_rows[case])}
    assert found == {(reported, rule)}


def test_only_the_broken_rows_are_rejected(all_cases: tuple[ValidationReport, list[int]]) -> None:
    report, _ = all_cases
    assert len(report.rejections) == len(CASES)
    clean = {name: len(rows) for name, rows in delivery().items()}
    clean["agriculture"] = len(agriculture_rows())
    assert {name: s.accepted for name, s in report.feeds.items() if s.rows} == clean
    for name in clean:
        assert sum(s.violations.total() for n, s in report.feeds.items() if n == name) == sum(
            1 for c in CASES if c[0] == name)


def test_a_person_whose_only_row_is_bad_leaves_their_other_rows_waiting(
    tmp_path: Path,
) -> None:
    rows = delivery()
    rows["persons"][0]["status_date"] = "2024-02-30"
    raw = write_delivery(tmp_path / "raw", rows)
    settings = workspace(tmp_path)

    report = ingest.ingest(raw, settings)

    assert quarantined(settings) == {
        ("persons", "persons/persons-2024-01.csv", 1, "status_date", "bad_date"),
    }
    assert (report.feeds["medical"].pending, report.feeds["medical"].accepted) == (1, 5)


# rows whose household or person is not known (yet): (feed, row, column, value, rule)
WAITING = [
    ("persons", 4, "household_id", "H9999", "unknown_household"),
    ("medical", 0, "person_id", STRANGER, "unknown_person"),
    ("monitoring_events", 0, "household_id", "H7777", "unknown_household"),
]


def test_rows_without_a_known_referent_wait_and_are_not_rejected(tmp_path: Path) -> None:
    rows = delivery()
    for feed_name, row, column, value, _ in WAITING:
        rows[feed_name].append(dict(rows[feed_name][row], **{column: value}))
    settings = workspace(tmp_path)
    report = ingest.validate(write_delivery(tmp_path / "raw", rows), settings)
    assert report.rejections == []
    assert {name: s.pending for name, s in report.feeds.items() if s.pending} == {
        "persons": 1, "medical": 1, "monitoring_events": 1}
    assert all(r.action.value == "pending" for r in RULES
               if r.code in {"unknown_household", "unknown_person"})


def test_chinese_terms_and_spellings_are_normalised(tmp_path: Path) -> None:
    rows = delivery()
    rows["monitoring_events"][0].update(
        {"event": "纳入监测", "category": "边缘易致贫户", "risk_types": "因学; 因病",
         "source": "干部排查"})
    rows["households"][0]["relocated"] = "是"
    rows["households"][1]["relocated"] = "0"
    rows["medical"][0]["insured"] = "否"
    rows["medical"][1]["total_cost_yuan"] = "120.500"  # trailing zeros are not decimals
    raw = write_delivery(tmp_path / "raw", rows)
    settings = workspace(tmp_path)

    ingest.ingest(raw, settings)

    assert quarantined(settings) == set()
    events = warehouse_table(settings, "monitoring_events").to_pylist()[0]
    assert (events["event"], events["category"], events["risk_types"], events["source"]) == (
        "identified", "marginal", "illness;education", "grassroots_visit")
    households = warehouse_table(settings, "households").sort_by("source_row")
    assert households["relocated"].to_pylist() == [True, False, False]
    medical = warehouse_table(settings, "medical").sort_by("source_row")
    assert medical["insured"].to_pylist()[:2] == [False, True]
    assert medical["total_cost_yuan"].to_pylist()[1] == pytest.approx(120.5)


def test_quarantine_keeps_original_values_and_is_private(tmp_path: Path) -> None:
    rows = delivery()
    rows["persons"][0]["person_id"] = BAD_CHECK
    raw = write_delivery(tmp_path / "raw", rows)
    settings = workspace(tmp_path)

    ingest.ingest(raw, settings)

    table = quarantine_table(settings)
    table = table.filter(pc.equal(table["feed"], "persons"))
    original = json.loads(table["original_values"][0].as_py())
    assert original["person_id"] == BAD_CHECK
    assert original["relation"] == "head"
    assert table["message"][0].as_py() and BAD_CHECK not in table["message"][0].as_py()
    for private in (settings.quarantine_dir, settings.vault_dir):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600


def test_sex_and_birth_date_come_from_the_id_and_disagreements_are_counted(
    tmp_path: Path,
) -> None:
    rows = delivery()
    rows["persons"][0]["sex"] = "F"  # the ID says M
    rows["persons"][1]["birth_date"] = "1999-01-01"
    rows["persons"][2]["sex"] = ""
    rows["persons"][2]["birth_date"] = ""
    raw = write_delivery(tmp_path / "raw", rows)
    settings = workspace(tmp_path)

    report = ingest.ingest(raw, settings)

    persons = warehouse_table(settings, "persons").sort_by("source_row")
    assert persons["sex"].to_pylist() == ["M", "F", "M", "F", "M", "F"]
    assert persons["birth_date"][1].as_py() == date(1972, 5, 6)
    assert persons["birth_date"][2].as_py() == date(1965, 1, 2)
    assert report.feeds["persons"].sex_disagreements == 1
    assert report.feeds["persons"].birth_date_disagreements == 1


def test_referential_checks_use_what_was_ingested_before(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    feb = delivery()
    for r in feb["medical"]:
        r.update(month="2024-02", reported_date="2024-03-10")
    feb["persons"] = [dict(feb["persons"][0], status_date="2024-02-01",
                           reported_date="2024-02-03")]
    feb["households"] = [dict(feb["households"][0], reported_date="2024-02-03")]
    feb["monitoring_events"] = []

    ingest.ingest(write_delivery(tmp_path / "feb", feb, tag="2024-02"), settings)

    assert quarantined(settings) == set()
    medical = warehouse_table(settings, "medical")
    assert medical.num_rows == 12
    assert sorted(pc.unique(medical["county_code"]).to_pylist()) == ["620102", "620103"]
