"""Scoring one household with fresh records (`serving.fresh.score_fresh`) on the small
generated province, ingested for real: the same answer as the month's scoring when no row
is added, a hospital bill that counts, refusals that name feed, row, column and rule
(never a value), and a workspace left exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from features import scoring_table
from features.asof import read_feed_as_of
from serving import routing
from serving.api_models import BadRequestError, NotFoundError
from serving.fresh import (
    CountyCache,
    FreshRowsError,
    RowProblem,
    _county_table,
    county_frames,
    score_fresh,
)
from serving.scoring import SCORE_COLUMNS, score
from tests.serving.scoring_fixtures import feature_frame, train_artifact

MONTH = Month.parse("2025-06")  # the small world's last month
END = MONTH.end
VERSION = "fresh-test/1"


@dataclass(frozen=True)
class World:
    settings: Settings
    table: pd.DataFrame  # the month's scoring table
    artifact: ModelArtifact
    scored: pd.DataFrame  # `score` of the month
    household_id: dict[str, str]  # household pseudonym -> raw household number (vault)
    person_id: dict[str, str]  # person pseudonym -> raw ID number (vault)
    members: pd.DataFrame  # persons as of T: person_key, household_key, status


@pytest.fixture(scope="module")
def world(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The small world ingested into its own workspace; a model that reads medical costs,
    housing and income (the scoring fixtures' synthetic one, with hardship-type models)."""
    import ingest
    from ingest import vault

    home = tmp_path_factory.mktemp("fresh_home")
    settings = Settings(home=home, workers=1)
    ingest.ingest(small_world / "raw", settings)
    table = scoring_table(settings.warehouse_dir, MONTH, settings)
    artifact = train_artifact(feature_frame(), with_types=True)
    scored = score(table, artifact, settings, END, model_version=VERSION)
    homes = vault.read_table(settings.vault_dir, vault.HOUSEHOLDS).to_pandas()
    people = vault.read_table(settings.vault_dir, vault.PERSONS).to_pandas()
    members = read_feed_as_of(settings.warehouse_dir, "persons", MONTH,
                              columns=["person_key", "household_key", "status"])
    return World(settings, table, artifact, scored,
                 dict(zip(homes["household_key"], homes["household_id"], strict=True)),
                 dict(zip(people["person_key"], people["person_id"], strict=True)),
                 members)


def _fresh(world: World, household: str, rows: dict[str, Any] | None,
           **kwargs: Any) -> Any:
    return score_fresh(world.settings, MONTH, household, rows, artifact=world.artifact,
                       model_version=VERSION, month_table=world.table, **kwargs)


def _quiet_household(world: World, n: int = 0) -> str:
    """A household not alerted this month, with a living member we can bill."""
    quiet = world.scored[~world.scored["alerted"]].sort_values("rank", ascending=False)
    living = set(world.members.loc[world.members["status"] == "living", "household_key"])
    return [h for h in quiet["household_key"] if h in living][n]


def _member(world: World, household: str) -> str:
    rows = world.members[(world.members["household_key"] == household)
                         & (world.members["status"] == "living")]
    return str(rows["person_key"].iloc[0])


def _raw_values(world: World) -> list[str]:
    return [*world.household_id.values(), *world.person_id.values()]


def _no_raw_value(text: str, world: World, extra: tuple[str, ...] = ()) -> None:
    leaked = [v for v in (*_raw_values(world), *extra) if v in text]
    assert not leaked, f"{len(leaked)} raw value(s) in the answer"


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b)


# -- (a) no new rows: the month's scoring -------------------------------------------------
def test_county_rebuilt_from_frames_is_the_scoring_tables(world: World) -> None:
    """The features `score_fresh` builds (the county as `load_county` reads it) are the
    month's scoring table, county by county, to the last bit."""
    warehouse = world.settings.warehouse_dir
    counties = sorted(world.table["county_code"].unique())
    assert len(counties) >= 2
    for county in counties:
        built = _county_table(county_frames(warehouse, county, END), county, END,
                              world.settings)
        expected = world.table[world.table["county_code"] == county].reset_index(drop=True)
        pd.testing.assert_frame_equal(built, expected, check_exact=True)


@pytest.mark.parametrize("rows", [None, {}, {"medical": [], "income_checks": []}])
def test_without_rows_the_answer_is_the_months(world: World, rows: Any) -> None:
    alerted = world.scored[world.scored["alerted"]].sort_values("rank")
    everyone = score(world.table, world.artifact, world.settings, END, model_version=VERSION,
                     explain_all=True)
    for household in (alerted["household_key"].iloc[0], _quiet_household(world)):
        got = _fresh(world, household, rows)
        expected = world.scored[world.scored["household_key"] == household].iloc[0]
        for column in SCORE_COLUMNS:
            if column != "reasons":
                assert _same(got.scored[column], expected[column]), column
        assert got.in_scope == len(world.scored)
        assert got.alerted == int(world.scored["alerted"].sum())
        # reasons: the alert's own, or computed now exactly as for everyone on request
        explained = everyone[everyone["household_key"] == household].iloc[0]["reasons"]
        assert got.reasons == explained and got.reasons
        assert got.rows_added == {} and got.warnings == ()


# -- (b) a hospital bill ---------------------------------------------------------------------
def test_a_big_hospital_bill_raises_medical_costs_and_the_risk(world: World) -> None:
    household = _quiet_household(world)
    person = _member(world, household)
    before = world.table[world.table["household_key"] == household].iloc[0]
    claims = read_feed_as_of(world.settings.warehouse_dir, "medical", MONTH)
    same = claims[(claims["person_key"] == person)
                  & (claims["month"] == pd.Timestamp("2025-06-01"))]
    replaced_oop = float(same["out_of_pocket_yuan"].sum())  # a version of that claim, if any
    replaced_days = float(same["inpatient_days"].sum())
    bill = {  # Chinese headers, JSON numbers and text, reported after the month's end
        "身份证号": world.person_id[person], "结算月份": "2025-06", "是否参保": "是",
        "门诊次数": 1, "住院天数": 20, "医疗总费用": 80000, "报销金额": "30000.00",
        "个人自付": 50000.0, "大病慢病": "", "上报日期": "2025-07-08",
    }
    got = _fresh(world, household, {"medical": [bill]})
    added = 50_000.0 - replaced_oop
    for window in ("3m", "6m", "12m"):
        assert got.features[f"medical_oop_{window}"] == pytest.approx(
            before[f"medical_oop_{window}"] + added)
    assert got.features["medical_inpatient_days_3m"] == pytest.approx(
        before["medical_inpatient_days_3m"] + 20 - replaced_days)
    expected = world.scored[world.scored["household_key"] == household].iloc[0]
    assert got.scored["risk"] > expected["risk"] + 0.2
    assert got.scored["rank"] < expected["rank"] and not expected["alerted"]
    assert got.scored["alerted"] and got.scored["tier"] != "none"
    assert "illness" in got.scored["risk_types"]
    assert set(routing.departments_for(["illness"])) <= set(got.scored["departments"])
    assert got.reasons and got.rows_added == {"medical": 1}
    assert got.features["household_key"] == household
    _no_raw_value(repr(got), world)


def test_rows_count_as_the_newest_version_of_their_record(world: World) -> None:
    """Two requests billing the same claim: the amount sent is the one counted, whatever
    the warehouse holds for that person and month."""
    household = _quiet_household(world, 1)
    person = _member(world, household)
    bill = {"person_id": world.person_id[person], "month": "2025-05", "insured": True,
            "outpatient_visits": 0, "inpatient_days": 3, "total_cost_yuan": 9000,
            "reimbursed_yuan": 3000, "out_of_pocket_yuan": 6000,
            "reported_date": "2025-05-20"}
    small = _fresh(world, household, {"medical": [{**bill, "out_of_pocket_yuan": 10}]})
    big = _fresh(world, household, {"medical": [{**bill, "inpatient_days": " 3"}]})
    assert big.features["medical_oop_12m"] - small.features["medical_oop_12m"] == \
        pytest.approx(6000 - 10)
    # ingest's warning rules: noted, the row kept (read without the spaces)
    assert _where(big.warnings) == {("medical", 0, "inpatient_days", "surrounding_spaces")}
    assert big.features["medical_inpatient_days_12m"] == small.features[
        "medical_inpatient_days_12m"]


# -- (c) invalid rows --------------------------------------------------------------------------
def _refused(world: World, household: str, rows: dict[str, Any]) -> FreshRowsError:
    with pytest.raises(FreshRowsError) as caught:
        _fresh(world, household, rows)
    err = caught.value
    assert isinstance(err, BadRequestError) and err.status == 400
    return err


def _where(problems: tuple[RowProblem, ...]) -> set[tuple[str, int | None, str | None, str]]:
    return {(p.feed, p.row, p.column, p.rule) for p in problems}


def test_invalid_rows_are_refused_by_feed_row_column_and_rule(world: World) -> None:
    household = _quiet_household(world)
    raw_id = world.person_id[_member(world, household)]
    wrong_check = raw_id[:17] + ("0" if raw_id[17] != "0" else "1")
    good = {"person_id": raw_id, "month": "2025-06", "insured": "true",
            "outpatient_visits": "1", "inpatient_days": "0", "total_cost_yuan": "10",
            "reimbursed_yuan": "5", "out_of_pocket_yuan": "5", "reported_date": "2025-06-20"}
    rows = {
        "medical": [
            {**good, "out_of_pocket_yuan": "-5"},
            {**good, "person_id": wrong_check, "month": "2025-13"},
            {**good, "reimbursed_yuan": "1.005", "insured": "maybe"},
        ],
        "employment": [{"person_id": raw_id, "month": "2025-06", "status": {"x": 1},
                        "reported_date": "2025-06-30", raw_id: "1"}],
        "persons": [{"person_id": raw_id, "household_id": world.household_id[household],
                     "status": "living", "status_date": "2020-01-01",
                     "reported_date": "2025-06-02"}],
        "divisions": [{"code": "620102", "name": "x", "reported_date": "2025-06-01"}],
    }
    err = _refused(world, household, rows)
    assert {
        ("medical", 0, "out_of_pocket_yuan", "negative_money"),
        ("medical", 1, "person_id", "id_check_char"),
        ("medical", 1, "month", "bad_date"),
        ("medical", 2, "reimbursed_yuan", "too_many_decimals"),
        ("medical", 2, "insured", "bad_bool"),
        ("employment", 0, "status", "not_a_scalar"),
        ("employment", 0, "*" * 18, "unknown_column"),  # named, masked like ingest does
        ("persons", 0, "relation", "missing_column"),
        ("divisions", None, None, "not_household_data"),
    } <= _where(err.problems)
    message = str(err)
    assert "medical[0].out_of_pocket_yuan: negative_money" in message
    _no_raw_value(message + repr(err.problems), world, (wrong_check, "2025-13", "1.005"))


def test_events_after_the_month_are_refused(world: World) -> None:
    household = _quiet_household(world)
    raw_id = world.person_id[_member(world, household)]
    rows = {
        "medical": [{"person_id": raw_id, "month": "2025-07", "insured": "true",
                     "outpatient_visits": "1", "inpatient_days": "0", "total_cost_yuan": "10",
                     "reimbursed_yuan": "5", "out_of_pocket_yuan": "5",
                     "reported_date": "2025-07-20"}],
        "income_checks": [{"household_id": world.household_id[household],
                           "period_end": "2025-06", "per_capita_net_income_yuan": "100",
                           "wage_income_yuan": "0", "operating_income_yuan": "0",
                           "property_income_yuan": "0", "transfer_income_yuan": "0",
                           "reported_date": "2025-07-02"}],  # reported later: fine
    }
    err = _refused(world, household, rows)
    assert _where(err.problems) == {("medical", 0, "month", "after_as_of")}


# -- (d) rows of another household ---------------------------------------------------------
def test_rows_of_another_household_are_refused(world: World) -> None:
    household = _quiet_household(world)
    other = _quiet_household(world, 1)
    county = str(world.table.loc[world.table["household_key"] == household,
                                 "county_code"].iloc[0])
    elsewhere = next(c for c in world.table["county_code"].unique() if c != county)
    check = {"household_id": world.household_id[other], "period_end": "2025-06",
             "per_capita_net_income_yuan": "100", "wage_income_yuan": "0",
             "operating_income_yuan": "0", "property_income_yuan": "0",
             "transfer_income_yuan": "0", "reported_date": "2025-06-30"}
    bill = {"person_id": world.person_id[_member(world, other)], "month": "2025-06",
            "insured": "true", "outpatient_visits": "1", "inpatient_days": "0",
            "total_cost_yuan": "10", "reimbursed_yuan": "5", "out_of_pocket_yuan": "5",
            "reported_date": "2025-06-30"}
    moved = {"household_id": world.household_id[household],
             "village_code": elsewhere + "001001",
             "head_person_id": world.person_id[_member(world, household)],
             "poverty_history": "ordinary", "reported_date": "2025-06-30"}
    err = _refused(world, household, {
        "income_checks": [{**check, "household_id": world.household_id[household]}, check],
        "medical": [bill], "households": [moved]})
    assert _where(err.problems) == {
        ("income_checks", 1, "household_id", "other_household"),
        ("medical", 0, "person_id", "not_a_member"),
        ("households", 0, "village_code", "other_county"),
    }
    _no_raw_value(str(err) + repr(err.problems), world)


def test_a_person_moving_in_counts_for_the_household(world: World) -> None:
    """A persons row of the request places someone in the household: their bill counts."""
    household, other = _quiet_household(world), _quiet_household(world, 1)
    mover = world.person_id[_member(world, other)]
    move = {"person_id": mover, "household_id": world.household_id[household],
            "relation": "other", "status": "moved_in", "status_date": "2025-06-10",
            "reported_date": "2025-06-12"}
    bill = {"person_id": mover, "month": "2025-06", "insured": "true",
            "outpatient_visits": "1", "inpatient_days": "0", "total_cost_yuan": "900",
            "reimbursed_yuan": "0", "out_of_pocket_yuan": "900", "reported_date": "2025-06-30"}
    got = _fresh(world, household, {"persons": [move], "medical": [bill]})
    before = world.table[world.table["household_key"] == household].iloc[0]
    assert got.features["household_size"] == before["household_size"] + 1
    assert got.features["medical_oop_3m"] >= before["medical_oop_3m"] + 900


def test_keys_months_and_scope(world: World) -> None:
    household = _quiet_household(world)
    raw_id = world.person_id[_member(world, household)]
    with pytest.raises(BadRequestError) as caught:
        _fresh(world, raw_id, {})
    _no_raw_value(str(caught.value), world)
    with pytest.raises(NotFoundError):
        _fresh(world, "h_" + "0" * 20, {})
    with pytest.raises(BadRequestError):
        score_fresh(world.settings, Month.today() + 1, household, {}, artifact=world.artifact,
                    model_version=VERSION)
    identified = {"household_id": world.household_id[household], "event_date": "2025-06-15",
                  "event": "identified", "category": "marginal", "risk_types": "illness",
                  "source": "grassroots_visit", "reported_date": "2025-06-16"}
    with pytest.raises(NotFoundError, match="not in scope"):
        _fresh(world, household, {"monitoring_events": [identified]})


# -- (e) nothing written -----------------------------------------------------------------------
def _listing(home: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files]:
            st = Path(root, name).stat()
            out[str(Path(root, name).relative_to(home))] = (st.st_size, st.st_mtime_ns)
    return out


def test_the_workspace_is_left_as_it_was(world: World) -> None:
    home = world.settings.home
    before = _listing(home)
    assert before and not (home / "alerts.db").exists()
    household = _quiet_household(world)
    raw_id = world.person_id[_member(world, household)]
    bill = {"person_id": raw_id, "month": "2025-06",
            "insured": "true", "outpatient_visits": "1", "inpatient_days": "9",
            "total_cost_yuan": "90000", "reimbursed_yuan": "0", "out_of_pocket_yuan": "90000",
            "reported_date": "2025-07-01"}
    named = {"person_id": raw_id, "household_id": world.household_id[household],
             "relation": "head", "status": "living", "status_date": "2025-06-01",
             "姓名": "张三", "reported_date": "2025-07-01"}  # a vault-only column
    got = _fresh(world, household, {"medical": [bill], "persons": [named]})
    assert "张三" not in repr(got)
    _fresh(world, household, {})
    score_fresh(world.settings, MONTH, household, {"medical": [bill]},
                artifact=world.artifact, model_version=VERSION)  # builds its own table
    with pytest.raises(FreshRowsError):
        _fresh(world, household, {"medical": [{**bill, "month": "bad"}]})
    assert _listing(home) == before
    assert not (home / "alerts.db").exists()


# -- the county cache --------------------------------------------------------------------------
@pytest.fixture
def touched(world: World) -> Iterator[Path]:
    """One of the county's partition files, its mtime restored afterwards."""
    household = _quiet_household(world)
    county = str(world.table.loc[world.table["household_key"] == household,
                                 "county_code"].iloc[0])
    path = next((world.settings.warehouse_dir / "medical" / f"county={county}").rglob(
        "*.parquet"))
    st = path.stat()
    yield path
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_cache_reads_a_county_once_until_it_changes(world: World, touched: Path) -> None:
    household = _quiet_household(world)
    cache = CountyCache()
    first = _fresh(world, household, {}, cache=cache)
    again = _fresh(world, household, {}, cache=cache)
    assert cache.reads == 1 and again.scored["risk"] == first.scored["risk"]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # an ingest
    _fresh(world, household, {}, cache=cache)
    assert cache.reads == 2


def test_the_reading_is_the_warehouse_as_of_the_month(world: World) -> None:
    """Rows reported after T are not in the county's frames (point in time)."""
    county = str(world.table["county_code"].iloc[0])
    frames = county_frames(world.settings.warehouse_dir, county, date(2024, 6, 30))
    assert all((f["reported_date"] <= pd.Timestamp("2024-06-30")).all()
               for f in frames.values() if len(f))
