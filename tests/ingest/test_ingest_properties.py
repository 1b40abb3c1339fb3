"""Property tests: the vectorised checks agree with plain scalar definitions, and no row
is ever lost (each ends in the warehouse, the quarantine or the duplicate count)."""

from __future__ import annotations

import re
import tempfile
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingest
from doudi.contract import Column, Kind
from doudi.idnumber import check_char
from ingest.checks import parse_date, parse_id, parse_money
from tests.ingest.ingest_world import (
    delivery,
    quarantine_table,
    warehouse_table,
    workspace,
    write_delivery,
)

TODAY = date(2026, 11, 28)
_ID_COL = Column("person_id", "身份证号", Kind.ID)


@st.composite
def id_like(draw: st.DrawFn) -> str:
    """Mostly well-formed ID numbers, some with a correct check character, some broken."""
    region = draw(st.sampled_from(["620102", "110105", "012345", "62010"]))
    year = draw(st.integers(1850, 2030))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    seq = draw(st.integers(0, 999))
    body = f"{region}{year:04d}{month:02d}{day:02d}{seq:03d}"
    last = draw(st.one_of(st.just("right"), st.sampled_from(list("0123456789Xx"))))
    if last == "right" and len(body) == 17 and body.isdigit():
        return body + check_char(body)
    return body + (last if last != "right" else "0")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(id_like(), st.text(max_size=20)), min_size=1, max_size=30))
def test_id_checks_agree_with_the_scalar_rules(values: list[str]) -> None:
    latest = np.full(len(values), (TODAY - date(1970, 1, 1)).days)
    parsed, _ = parse_id(_ID_COL, pa.array(values, pa.string()), latest)
    rule_of = {v.rule: v.mask for v in parsed.violations}
    warned = {v.rule: v.mask for v in parsed.warnings}
    for i, value in enumerate(values):
        text = value.strip(" ").upper()  # spaces only: other whitespace is part of the value
        expected = None if text == "" else _contract_id_problem(text)
        got = next((rule for rule, mask in rule_of.items() if mask[i]), None)
        assert got == expected, value
        early = expected is None and text != "" and text[6:10] < "1890"
        assert bool(warned["id_birth_before_1890"][i]) == early, value
        assert bool(warned["id_region_zero"][i]) == (
            expected is None and text != "" and text[0] == "0"), value


def _contract_id_problem(text: str) -> str | None:
    """The contract's rules, scalar: 18 characters (17 digits, then 0-9 or X), a birth date
    that is a calendar date not after the report, the check character. (A region starting
    with 0 and a birth before 1890 are only warnings.)"""
    if not re.fullmatch(r"[0-9]{17}[0-9X]", text):
        return "id_format"
    try:
        birth = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return "id_birth_date"
    if birth > TODAY:
        return "id_birth_date"
    return None if check_char(text[:17]) == text[17] else "id_check_char"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(
    st.decimals(min_value=-10**7, max_value=10**7, allow_nan=False, places=3).map(str),
    st.sampled_from(["", "1e3", "abc", "1.", ".5", "-0", "+2.50", "1,000"])), min_size=1,
    max_size=20))
def test_money_rules_agree_with_decimal_arithmetic(values: list[str]) -> None:
    col = Column("cost", "费用", Kind.MONEY)
    parsed = parse_money(col, pa.array(values, pa.string()))
    rule_of = {v.rule: v.mask for v in parsed.violations}
    for i, value in enumerate(values):
        got = next((rule for rule, mask in rule_of.items() if mask[i]), None)
        is_plain = value.lstrip("+-").replace(".", "", 1).isdigit() and value not in ("",)
        if value == "":
            expected = None
        elif not is_plain:
            expected = "bad_number"
        else:
            try:
                amount = Decimal(value)
            except InvalidOperation:  # pragma: no cover - excluded by is_plain
                expected = "bad_number"
            else:
                if amount < 0:
                    expected = "negative_money"
                elif amount != amount.quantize(Decimal("0.01")):
                    expected = "too_many_decimals"
                else:
                    expected = None
        assert got == expected, value


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9999), st.integers(0, 14), st.integers(0, 33)),
                min_size=1, max_size=20))
def test_dates_are_exactly_the_calendar_dates(parts: list[tuple[int, int, int]]) -> None:
    texts = [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in parts]
    parsed = parse_date(Column("d", "日", Kind.DATE), pa.array(texts), month=False)
    for text, value in zip(texts, parsed.values.to_pylist(), strict=True):
        try:
            expected = date.fromisoformat(text)
        except ValueError:
            expected = None
        assert value == expected, text


# -- no row is lost ------------------------------------------------------------
BREAKS = [("insured", "maybe"), ("total_cost_yuan", "-3"), ("month", "2024-00"),
          ("person_id", "123"), ("reported_date", "2024-02-30"), ("outpatient_visits", ""),
          ("serious_illness", "\t=1+1"), ("inpatient_days", "-1")]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-1, len(BREAKS) - 1)), min_size=1,
                max_size=25))
def test_every_row_ends_in_exactly_one_place(picks: list[tuple[int, int]]) -> None:
    base = delivery()
    medical = []
    for source, broken in picks:  # repeats of the same (source, break) are exact duplicates
        row = dict(base["medical"][source])
        if broken >= 0:
            column, value = BREAKS[broken]
            row[column] = value
        medical.append(row)
    base["medical"] = medical
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_delivery(Path(tmp) / "raw", base)
        settings_ = workspace(Path(tmp))
        report = ingest.ingest(raw, settings_)
        stored = warehouse_table(settings_, "medical").num_rows
        quarantine = quarantine_table(settings_)
        rows_in_quarantine = len({
            (f, r) for f, r, feed in zip(quarantine["source_file"].to_pylist(),
                                         quarantine["source_row"].to_pylist(),
                                         quarantine["feed"].to_pylist(), strict=True)
            if feed == "medical"})
    summary = report.feeds["medical"]
    assert stored == summary.accepted
    assert rows_in_quarantine == summary.quarantined
    assert stored + rows_in_quarantine + summary.duplicates == len(medical)
    clean = {(s, b) for s, b in picks if b < 0}
    broken = [(s, b) for s, b in picks if b >= 0]
    assert stored == len(clean)
    assert rows_in_quarantine == len(broken)
