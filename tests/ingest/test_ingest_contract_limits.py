"""Rows at each limit the contract states: accepted on one side, quarantined on the other;
what the contract does not forbid is kept (and counted when odd). Issue #10."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

import ingest
from doudi.contract import FEEDS
from doudi.idnumber import make_id
from ingest import rules_doc
from ingest.checks import RULE_MESSAGES, RULES, WARNING_RULES, Action
from tests.ingest.ingest_world import (
    PEOPLE,
    Row,
    delivery,
    disability_rows,
    division_rows,
    income_rows,
    warehouse_table,
    workspace,
    write_delivery,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "DATA_CONTRACT.md"
OLD_MAN = make_id("620102", date(1885, 5, 1), 13)  # born before 1890: odd, not impossible
REGION_ZERO = make_id("012345", date(1980, 1, 1), 15)

# (feed, row to copy, changes, rule or None when accepted without a rule)
ACCEPTED: list[tuple[str, int, Row]] = [
    ("households", 0, {"household_id": "A" * 30 + "-_", "reported_date": "2024-01-06"}),
    ("households", 0, {"household_id": "9", "reported_date": "2024-01-06"}),
    ("disability", 0, {"grade": "1"}),
    ("disability", 0, {"grade": "4", "certified_date": "2023-07-01"}),
    ("medical", 0, {"inpatient_days": "45"}),
    ("medical", 1, {"inpatient_days": "0", "total_cost_yuan": "0.01"}),
    ("medical", 2, {"serious_illness": "=2+2"}),  # text may start with = + - @
    ("medical", 3, {"serious_illness": "@SUM(A1)", "outpatient_visits": "3.0"}),
    ("income_checks", 0, {"operating_income_yuan": "-500.25",
                          "per_capita_net_income_yuan": "-12.50"}),
    ("divisions", 0, {"code": "620103", "name": "七里河区"}),
]
REJECTED: list[tuple[str, int, Row, str]] = [
    ("households", 0, {"household_id": "A" * 33}, "bad_household_id"),
    ("households", 0, {"household_id": "H.0001"}, "bad_household_id"),
    ("disability", 0, {"grade": "0"}, "out_of_range"),
    ("disability", 0, {"grade": "5"}, "out_of_range"),
    ("medical", 0, {"inpatient_days": "-1"}, "out_of_range"),
    ("medical", 1, {"total_cost_yuan": "0.001"}, "too_many_decimals"),
    ("medical", 2, {"serious_illness": "\t=2+2"}, "control_character"),
    ("medical", 3, {"serious_illness": "=2+2\x1f"}, "control_character"),
    ("income_checks", 0, {"property_income_yuan": "-1"}, "negative_money"),
    ("divisions", 0, {"code": "6201020"}, "bad_division_code"),
    ("divisions", 0, {"code": "62010200100a"}, "bad_division_code"),
    ("divisions", 0, {"name": ""}, "missing_value"),
]
WARNED: list[tuple[str, int, Row, str]] = [
    ("households", 1, {"lifted_year": "1999", "reported_date": "2024-01-07"},
     "implausible_value"),
    ("persons", 0, {"person_id": OLD_MAN, "relation": "parent", "status": "deceased"},
     "id_birth_before_1890"),
    ("persons", 0, {"person_id": REGION_ZERO, "relation": "child"}, "id_region_zero"),
    ("persons", 1, {"status_date": "2024-01-06", "status": "moved_out"},
     "reported_before_event"),
    ("medical", 4, {"outpatient_visits": "-2"}, "implausible_value"),
    ("medical", 5, {"outpatient_visits": " 7"}, "surrounding_spaces"),
]


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[ingest.ValidationReport, dict[tuple[str, int], str]]:
    """One delivery with every limit case appended; validated once. Returns the report
    and (feed, data row) -> case label."""
    rows = delivery()
    rows.update(disability=disability_rows(), income_checks=income_rows(),
                divisions=division_rows())
    where: dict[tuple[str, int], str] = {}
    cases = [(f, r, c, "accepted") for f, r, c in ACCEPTED] + REJECTED + WARNED
    for feed_name, row, changes, label in cases:
        rows[feed_name].append(dict(rows[feed_name][row], **changes))
        where[(feed_name, len(rows[feed_name]))] = f"{label}:{changes}"
    tmp = tmp_path_factory.mktemp("limits")
    return ingest.validate(write_delivery(tmp / "raw", rows), workspace(tmp)), where


def _rules_of(report: ingest.ValidationReport, feed_name: str, row: int) -> set[str]:
    file = f"{feed_name}/{feed_name}-2024-01.csv"
    return {r.rule for r in report.rejections
            if (r.feed, r.file.split("#")[0], r.row) == (feed_name, file, row)}


def test_rows_at_the_limits(limits: tuple[ingest.ValidationReport, dict[tuple[str, int], str]]
                            ) -> None:
    report, where = limits
    for (feed_name, row), label in where.items():
        rule = label.split(":", 1)[0]
        expected = {rule} if rule in RULE_MESSAGES and rule not in WARNING_RULES else set()
        assert _rules_of(report, feed_name, row) == expected, label
    assert len(report.rejections) == len(REJECTED)


def test_warnings_keep_the_row_and_are_counted(
    limits: tuple[ingest.ValidationReport, dict[tuple[str, int], str]],
) -> None:
    report, _ = limits
    expected: dict[tuple[str, str], int] = {}
    for feed_name, _, _, rule in WARNED:
        expected[(feed_name, rule)] = expected.get((feed_name, rule), 0) + 1
    got = {(name, rule): n for name, s in report.feeds.items() for rule, n in s.warnings.items()}
    assert got == expected
    clean = {name: len(r) for name, r in delivery().items()}
    clean.update(disability=1, income_checks=3, divisions=3)
    for name, s in report.feeds.items():
        kept = sum(1 for f, *_ in ACCEPTED + WARNED if f == name)
        assert s.accepted + s.duplicates == clean.get(name, 0) + kept, name
    assert "warnings (rows kept; feed, rule, cells):" in report.to_text()


def test_values_are_stored_as_written(tmp_path: Path) -> None:
    rows = delivery()
    rows["medical"][0]["serious_illness"] = "=2+2"
    rows["medical"][1]["serious_illness"] = "-1"
    rows["medical"][2]["serious_illness"] = " +86 "  # spaces around: read without them
    rows["medical"][3]["inpatient_days"] = "45"
    settings = workspace(tmp_path)
    report = ingest.ingest(write_delivery(tmp_path / "raw", rows), settings)
    medical = warehouse_table(settings, "medical").sort_by("source_row")
    assert medical["serious_illness"].to_pylist()[:3] == ["=2+2", "-1", "+86"]
    assert medical["inpatient_days"].to_pylist()[3] == 45
    assert report.feeds["medical"].warnings == {"surrounding_spaces": 1}


def test_every_quarantine_rule_quotes_the_contract() -> None:
    text = " ".join(SHARED.read_text(encoding="utf-8").split())
    for rule in RULES:
        if rule.action is Action.QUARANTINE:
            assert rule.quote or rule.basis, rule.code
            assert not rule.quote or rule.quote in text, rule.code
        else:
            assert rule.note, rule.code  # a warning says why it only warns


def test_rules_doc_is_up_to_date() -> None:
    assert rules_doc.DOC.read_text(encoding="utf-8") == rules_doc.render(), (
        "run: python -m ingest.rules_doc")


def test_every_rule_code_in_the_code_is_registered() -> None:
    source = "".join(p.read_text(encoding="utf-8")
                     for p in Path(ingest.__file__).parent.glob("*.py"))
    used = set(re.findall(r'Violation\([^,]+, "(\w+)"', source))
    used |= set(re.findall(r'rule, column = "(\w+)"', source))
    assert used <= set(RULE_MESSAGES), used - set(RULE_MESSAGES)
    assert {"unknown_household", "unknown_person"} <= set(RULE_MESSAGES)
    assert all(any(r.where and r.where(f, c) for r in RULES if r.code == "control_character")
               for f in FEEDS for c in f.contract_columns)


def test_people_used_by_the_cases_exist() -> None:
    assert PEOPLE["H0001"][1] == disability_rows()[0]["person_id"]
