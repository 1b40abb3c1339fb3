"""Every file the generator writes conforms to the contract, except the listed bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from doudi import contract
from doudi.idnumber import id_facts, id_problem
from tests.province.extract_reader import (
    find_pending,
    find_violations,
    find_warnings,
    load_pending_rows,
    load_warning_rows,
)


@pytest.fixture(scope="module")
def extract(small_extract):  # type: ignore[no-untyped-def]
    return small_extract


def test_layout_has_all_feeds_and_truth_outside_raw(small_world: Path) -> None:
    raw = small_world / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(contract.FEED_NAMES)
    for path in raw.rglob("*"):
        if path.is_file():
            assert path.name.startswith(path.parent.name + "_"), path
            assert path.name.endswith((".csv", ".csv.gz", ".parquet")), path
    assert not (raw / "truth").exists()
    for name in (
        "labels.parquet",
        "oracle.parquet",
        "summary.json",
        "bad_rows.csv",
        "warning_rows.csv",
        "pending_rows.csv",
    ):
        assert (small_world / "truth" / name).is_file()


def test_formats_are_mixed(small_world: Path) -> None:
    raw = small_world / "raw"
    suffixes = {p.name.split(".", 1)[1] for p in raw.rglob("*") if p.is_file()}
    assert suffixes == {"csv", "csv.gz", "parquet"}
    csv_bytes = [p.read_bytes() for p in raw.rglob("*.csv")]
    assert any(b.startswith(b"\xef\xbb\xbf") for b in csv_bytes)  # BOM
    assert any(_is_gbk_only(b) for b in csv_bytes)  # GB18030 with Chinese headers


def _is_gbk_only(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "户编号".encode("gb18030") in data or "身份证号".encode("gb18030") in data
    return False


def test_bad_rows_listed_exactly(extract) -> None:  # type: ignore[no-untyped-def]
    files, bad, _ = extract
    found = find_violations(files)
    assert bad, "the generator should inject some bad rows"
    assert found == bad
    reasons = {b[4] for b in bad}
    assert {"id_check_char", "negative_money", "unknown_enum", "bad_date"} <= reasons


def test_rows_ingest_keeps_are_listed_apart_from_bad_rows(
    small_world: Path,
    extract,  # type: ignore[no-untyped-def]
) -> None:
    """Ingest keeps a row reported before its event (a counted warning) and holds a row
    of an unknown household in pending/: the generator lists such rows in
    warning_rows.csv and pending_rows.csv, never in bad_rows.csv."""
    files, bad, _ = extract
    warned = load_warning_rows(small_world / "truth")
    pending = load_pending_rows(small_world / "truth")
    assert warned, "the generator should plant some rows reported before their event"
    assert {w[4] for w in warned} == {"reported_before_event"}
    assert {p[4] for p in pending} <= {"unknown_household"}
    assert not {b[4] for b in bad} & {"reported_before_event", "unknown_household"}
    assert find_warnings(files) == warned
    assert find_pending(files) == pending
    summary = json.loads((small_world / "truth" / "summary.json").read_text())
    assert summary["warning_rows"] == len(warned)
    assert summary["pending_rows"] == len(pending)


def test_bad_rows_are_not_duplicates(extract) -> None:  # type: ignore[no-untyped-def]
    files, bad, _ = extract
    by_file = {f.rel: f.frame for f in files}
    for _, rel, row, _, _ in bad:
        frame = by_file[rel]
        bad_row = tuple(frame.iloc[row - 1])
        assert sum(tuple(r) == bad_row for r in frame.itertuples(index=False)) == 1


def test_headers_known_and_extras_only_sensitive(extract) -> None:  # type: ignore[no-untyped-def]
    files, _, _ = extract
    extras = set()
    for f in files:
        # every contract column, the optional name/phone ones included
        contract_names = {c.name for c in contract.feed(f.feed).contract_columns}
        assert contract_names <= set(f.frame.columns), f.rel
        extras |= set(f.extra_columns)
    assert extras and extras <= contract.SENSITIVE_EXTRA_COLUMNS


def test_duplicates_counted(small_world: Path, extract) -> None:  # type: ignore[no-untyped-def]
    files, _, _ = extract
    summary = json.loads((small_world / "truth" / "summary.json").read_text())
    dupes = {f.feed: 0 for f in files}
    for f in files:
        dupes[f.feed] += int(f.frame.duplicated().sum())
    assert {k: v for k, v in dupes.items() if v} == summary["duplicates_per_feed"]


def test_referential_guarantees(extract) -> None:  # type: ignore[no-untyped-def]
    _, _, clean = extract
    persons = clean["persons"]
    first_person = persons.groupby("person_id")["reported_date"].min()
    roster = clean["households"].groupby("household_id")["reported_date"].min()
    assert set(persons["household_id"]) <= set(roster.index)
    for feed, frame in clean.items():
        spec = contract.feed(feed)
        if spec.person_level and feed != "persons":
            known = frame["person_id"].map(first_person)
            assert known.notna().all(), feed
            assert (known <= frame["reported_date"]).all(), feed
        if "household_id" in frame and feed != "households":
            known = frame["household_id"].map(roster)
            assert known.notna().all(), feed
            assert (known <= frame["reported_date"]).all(), feed


def test_id_numbers_agree_with_sex_and_birth(extract) -> None:  # type: ignore[no-untyped-def]
    _, _, clean = extract
    persons = clean["persons"]
    assert persons["person_id"].map(id_problem).isna().all()
    sex = persons["sex"].map(contract.feed("persons").column("sex").enum_lookup().get)
    facts = persons["person_id"].map(id_facts)
    given = sex.notna()
    assert (facts[given].map(lambda f: f.sex) == sex[given]).all()
    born = persons["birth_date"] != ""
    assert (
        facts[born].map(lambda f: f.birth_date.isoformat()) == persons.loc[born, "birth_date"]
    ).all()
    assert persons["person_id"].str[:2].eq("62").mean() > 0.9  # born in Gansu


def test_county_outage_leaves_a_gap(small_world: Path, extract) -> None:  # type: ignore[no-untyped-def]
    _, _, clean = extract
    world = json.loads((small_world / "truth" / "world.json").read_text())
    persons = clean["persons"].drop_duplicates("person_id").set_index("person_id")["household_id"]
    for outage in world["outages"]:
        frame = clean[outage["feed"]]
        county = frame["person_id"].map(persons).str[:6]
        inside = (frame["month"] >= outage["first_month"]) & (
            frame["month"] <= outage["last_month"]
        )
        assert not (inside & (county == outage["county"])).any()
        assert (inside & (county != outage["county"])).any()  # other counties delivered
        assert (~inside & (county == outage["county"])).any()  # the county delivered otherwise


def test_corrections_supersede_with_later_reports(extract) -> None:  # type: ignore[no-untyped-def]
    _, _, clean = extract
    medical = clean["medical"]
    versions = medical.groupby(["person_id", "month"])["reported_date"].nunique()
    assert (versions > 1).any()
    spells = clean["social_assistance"]
    closed = spells[spells["end_date"] != ""]
    assert len(closed)


def test_money_has_two_decimals_at_most(extract) -> None:  # type: ignore[no-untyped-def]
    _, _, clean = extract
    for feed, frame in clean.items():
        for col in contract.feed(feed).columns:
            if col.kind == contract.Kind.MONEY:
                values = frame[col.name][frame[col.name] != ""]
                assert values.str.match(r"^-?\d+(\.\d{1,2})?$").all(), (feed, col.name)
    assert isinstance(pd.__version__, str)
