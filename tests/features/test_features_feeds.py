"""Hand-computed features for every feed on a tiny warehouse (T = 2024-06-30).

Household h1 (4 members) has something in every feed, including late-reported
rows (reported after T: ignored) and corrected rows (a later version wins);
h2 (1 member) has almost nothing; h3's roster row arrives after T and h4's
only member moved out, so neither is a row at T.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from doudi.months import Month
from doudi.settings import Settings
from features import build_features, feature_names
from tests.features.warehouse_fixture import Warehouse

T = Month.parse("2024-06")
OTHER_COUNTY = "620103"


def build_world(root: Path) -> Path:
    w = Warehouse(root)
    hh = "households"
    w.add(hh, household_key="h1", head_person_key="p1", poverty_history="former_poor",
          lifted_year=2020, relocated=True, reported_date="2023-01-05")
    w.add(hh, household_key="h2", head_person_key="p6", relocated=None,
          reported_date="2023-01-05")
    w.add(hh, household_key="h3", head_person_key="p8", reported_date="2024-07-02")  # late
    w.add(hh, household_key="h4", head_person_key="p7", reported_date="2023-01-05")
    p = "persons"
    w.add(p, person_key="p1", household_key="h1", birth_date="1980-03-10",
          reported_date="2023-01-05")
    w.add(p, person_key="p2", household_key="h1", relation="spouse", sex="F",
          birth_date="1982-02-02", reported_date="2023-01-05")
    w.add(p, person_key="p3", household_key="h1", relation="child", birth_date="2008-09-01",
          reported_date="2023-01-05")
    w.add(p, person_key="p4", household_key="h1", relation="parent", sex="F",
          birth_date="1950-01-01", reported_date="2023-01-05")
    w.add(p, person_key="p5", household_key="h1", relation="parent", birth_date="1948-01-01",
          reported_date="2023-01-05")
    w.add(p, person_key="p5", household_key="h1", relation="parent", birth_date="1948-01-01",
          status="deceased", status_date="2024-03-10", reported_date="2024-03-15")
    w.add(p, person_key="p9", household_key="h1", relation="child", birth_date="2000-01-01",
          reported_date="2023-01-05")
    w.add(p, person_key="p9", household_key="h1", relation="child", birth_date="2000-01-01",
          status="moved_out", status_date="2024-01-10", reported_date="2024-01-15")
    w.add(p, person_key="p6", household_key="h2", sex="F", birth_date="1958-07-01",
          ethnicity="回族", reported_date="2023-01-05")
    w.add(p, person_key="p7", household_key="h4", reported_date="2023-01-05")
    w.add(p, person_key="p7", household_key="h4", status="moved_out", status_date="2024-05-01",
          reported_date="2024-05-03")
    w.add(p, person_key="p8", household_key="h3", reported_date="2023-01-05")
    # h5: the roster still names p10 as head after p10 died; p11 is now recorded as head.
    w.add(hh, household_key="h5", head_person_key="p10", reported_date="2023-01-05")
    w.add(p, person_key="p10", household_key="h5", status="deceased", status_date="2024-04-02",
          reported_date="2024-04-05")
    w.add(p, person_key="p11", household_key="h5", sex="F", birth_date="1990-06-30",
          reported_date="2024-04-05")

    m = "medical"
    w.add(m, person_key="p1", month="2024-06", out_of_pocket_yuan=100.0, total_cost_yuan=500.0,
          reimbursed_yuan=400.0, inpatient_days=2, reported_date="2024-06-20")
    w.add(m, person_key="p1", month="2024-04", out_of_pocket_yuan=200.0, total_cost_yuan=900.0,
          reimbursed_yuan=700.0, reported_date="2024-05-01")
    # correction of p1's April claim: this version wins
    w.add(m, person_key="p1", month="2024-04", out_of_pocket_yuan=250.0,
          total_cost_yuan=1000.0, reimbursed_yuan=750.0, inpatient_days=5,
          outpatient_visits=3, reported_date="2024-06-01")
    w.add(m, person_key="p2", month="2024-01", out_of_pocket_yuan=1000.0,
          total_cost_yuan=2000.0, reimbursed_yuan=1000.0, serious_illness="E11",
          reported_date="2024-02-10")
    w.add(m, person_key="p2", month="2023-06", out_of_pocket_yuan=5000.0,
          total_cost_yuan=5000.0, reported_date="2023-07-01")  # outside 12 months
    w.add(m, person_key="p4", month="2024-06", out_of_pocket_yuan=70.0, total_cost_yuan=70.0,
          reported_date="2024-07-05")  # reported after T
    w.add(m, person_key="p6", month="2024-05", insured=False, out_of_pocket_yuan=50.0,
          total_cost_yuan=50.0, reported_date="2024-06-05")

    e = "employment"
    for month, wage in (("2024-06", 4000.0), ("2024-05", 4000.0), ("2024-04", 4000.0)):
        w.add(e, person_key="p1", month=month, status="migrant", monthly_wage_yuan=wage,
              social_insurance_paid=True, reported_date=f"{month}-28")
    for month in ("2024-03", "2024-02", "2024-01"):
        w.add(e, person_key="p1", month=month, status="employed_local", monthly_wage_yuan=3000.0,
              reported_date=f"{month}-28")
    w.add(e, person_key="p2", month="2024-02", status="employed_local", monthly_wage_yuan=2000.0,
          social_insurance_paid=True, reported_date="2024-02-28")
    for month in ("2024-05", "2024-06"):
        w.add(e, person_key="p2", month=month, status="unemployed", social_insurance_paid=False,
              reported_date=f"{month}-28")
    w.add(e, person_key="p6", month="2024-06", status="public_welfare_post",
          reported_date="2024-06-28")

    ed = "education"
    w.add(ed, person_key="p3", term="2023-09", stage="senior_secondary", tuition_yuan=1500.0,
          aid_yuan=500.0, reported_date="2023-09-20")
    w.add(ed, person_key="p3", term="2024-03", stage="senior_secondary", tuition_yuan=1500.0,
          aid_yuan=1000.0, reported_date="2024-03-15")

    w.add("housing", household_key="h1", assessed_date="2022-05-10", safety_grade="B",
          reported_date="2022-05-20")
    w.add("housing", household_key="h1", assessed_date="2024-02-01", safety_grade="D",
          renovation_funded=True, reported_date="2024-02-10")

    d = "disability"
    w.add(d, person_key="p4", certified_date="2015-06-01", grade=3, reported_date="2015-06-10")
    # correction of p4's certificate: grade 2 with care subsidy
    w.add(d, person_key="p4", certified_date="2015-06-01", grade=2, care_subsidy=True,
          reported_date="2024-04-01")
    w.add(d, person_key="p1", certified_date="2024-03-01", disability_type="visual", grade=1,
          reported_date="2024-03-05")

    ds = "disasters"
    w.add(ds, household_key="h1", event_date="2024-05-20", loss_yuan=3000.0,
          house_damage="minor", reported_date="2024-05-25")
    w.add(ds, household_key="h1", event_date="2024-05-20", loss_yuan=5000.0,
          house_damage="severe", reported_date="2024-06-10")  # revised loss
    w.add(ds, household_key="h1", event_date="2023-09-01", hazard="hail", loss_yuan=1000.0,
          reported_date="2023-09-05")
    w.add(ds, household_key="h2", event_date="2023-05-01", hazard="drought", loss_yuan=800.0,
          reported_date="2023-05-10")  # 13 months before T

    sa = "social_assistance"
    w.add(sa, household_key="h1", program="dibao", start_date="2023-01-01",
          monthly_amount_yuan=300.0, reported_date="2023-01-10")
    w.add(sa, household_key="h1", program="dibao", start_date="2023-01-01",
          end_date="2024-04-30", monthly_amount_yuan=300.0, reported_date="2024-05-05")
    w.add(sa, household_key="h1", program="temporary", start_date="2024-02-15",
          end_date="2024-02-15", monthly_amount_yuan=2000.0, reported_date="2024-02-20")
    w.add(sa, household_key="h2", program="dibao_marginal", start_date="2024-03-01",
          monthly_amount_yuan=150.0, reported_date="2024-03-05")

    ic = "income_checks"
    w.add(ic, household_key="h1", period_end="2022-12", per_capita_net_income_yuan=8000.0,
          wage_income_yuan=32000.0, reported_date="2023-02-10")
    w.add(ic, household_key="h1", period_end="2023-12", per_capita_net_income_yuan=6000.0,
          wage_income_yuan=15000.0, operating_income_yuan=5000.0, transfer_income_yuan=4000.0,
          rigid_expenditure_yuan=6000.0, reported_date="2024-02-15")
    w.add(ic, household_key="h1", period_end="2023-12", per_capita_net_income_yuan=5000.0,
          wage_income_yuan=15000.0, reported_date="2024-07-10")  # correction after T

    ag = "agriculture"
    w.add(ag, household_key="h1", year=2022, cultivated_land_mu=5.0, livestock_units=3.0,
          reported_date="2023-01-10")
    w.add(ag, household_key="h1", year=2023, cultivated_land_mu=5.0, livestock_units=1.0,
          cooperative_member=True, industry_support_yuan=1000.0, reported_date="2024-01-10")

    w.add("assets", person_key="p1", record_date="2023-05-01", asset_type="vehicle",
          value_yuan=80000.0, reported_date="2023-05-05")
    w.add("assets", person_key="p6", record_date="2024-07-01", asset_type="urban_housing",
          reported_date="2024-07-05")  # after T

    me = "monitoring_events"
    w.add(me, household_key="h2", event_date="2022-03-01", event="identified",
          reported_date="2022-03-05")
    w.add(me, household_key="h2", event_date="2023-06-15", event="risk_eliminated",
          reported_date="2023-06-20")

    # A second county: only the required feeds, plus medical rows too old to count as a
    # delivery in the last 3 months.
    w.add(hh, county=OTHER_COUNTY, household_key="g1", head_person_key="q1",
          village_code="620103001001", reported_date="2023-01-05")
    w.add(p, county=OTHER_COUNTY, person_key="q1", household_key="g1",
          reported_date="2023-01-05")
    w.add(m, county=OTHER_COUNTY, person_key="q1", month="2024-02", out_of_pocket_yuan=10.0,
          reported_date="2024-03-01")
    return w.write()


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = build_world(tmp_path_factory.mktemp("wh"))
    return build_features(root, T, Settings(workers=1)).set_index("household_key")


EXPECTED_H1 = {
    "household_size": 4, "members_aged_0_5": 0, "members_aged_6_11": 0,
    "members_aged_12_14": 0, "members_aged_15_17": 1, "members_aged_65_plus": 1,
    "labour_capable_adults": 1,  # p1 holds a grade-1 certificate
    "dependency_ratio": 1.0, "no_labour_capable_adult": 0, "head_age": 44, "head_female": 0,
    "deaths_12m": 1, "departures_12m": 1, "former_poor": 1, "years_since_lifted": 4,
    "relocated": 1,
    "medical_oop_1m": 100, "medical_oop_3m": 350, "medical_oop_6m": 1350,
    "medical_oop_12m": 1350, "medical_oop_1m_per_capita": 25, "medical_oop_3m_per_capita": 87.5,
    "medical_oop_6m_per_capita": 337.5, "medical_oop_12m_per_capita": 337.5,
    "medical_oop_12m_income_share": 1350 / 24000, "medical_total_cost_12m": 3500,
    "medical_reimbursed_share_12m": 2150 / 3500, "medical_inpatient_days_3m": 7,
    "medical_inpatient_days_12m": 7, "medical_outpatient_visits_12m": 3,
    "medical_serious_illness_members": 1, "medical_uninsured_members": 0,
    "employment_employed_share": 0.5, "employment_migrant_share": 0.5,
    "employment_unemployed_members": 1, "employment_public_welfare_post_members": 0,
    "employment_unemployed_months_12m": 2, "employment_wage_3m": 4000,
    "employment_wage_change_3m": (4000 - 11000 / 3) / (11000 / 3),
    "employment_social_insurance_stopped": 1,
    "education_enrolled_members": 1, "education_senior_or_higher_members": 1,
    "education_net_tuition_12m": 1500, "education_dropouts_12m": 0,
    "housing_safety_level": 4, "housing_dangerous": 1, "housing_assessment_age_months": 4,
    "housing_renovation_funded": 1,
    "disabled_members": 2, "disabled_members_grade_1_2": 2, "disabled_members_grade_3_4": 0,
    "disabled_members_physical": 1, "disabled_members_visual": 1,
    "disabled_members_mental": 0, "disability_certified_12m": 1,
    "disability_subsidised_members": 1,
    "disaster_loss_3m": 5000, "disaster_loss_12m": 6000, "disaster_events_12m": 2,
    "disaster_house_damage_12m": 2,
    "assistance_dibao_now": 0, "assistance_dibao_marginal_now": 0,
    "assistance_monthly_amount_now": 0, "assistance_temporary_12m": 2000,
    "assistance_spells_ended_6m": 1,
    "income_per_capita": 6000, "income_to_monitoring_line": 6000 / 7000,
    "income_after_rigid_to_monitoring_line": (6000 - 6000 / 4) / 7000,
    "income_per_capita_change": -2000, "income_per_capita_change_pct": -0.25,
    "income_rigid_expenditure_ratio": 0.25, "income_wage_share": 0.625,
    "income_check_age_months": 6,
    "agri_cultivated_land_mu": 5, "agri_livestock_units": 1, "agri_livestock_change": -2,
    "agri_cooperative_member": 1, "agri_industry_support_yuan": 1000,
    "assets_vehicle": 1, "assets_urban_housing": 0, "assets_value": 80000,
    "monitoring_times_identified": 0, "monitoring_months_since_eliminated": math.nan,
    "village_shock_share_3m": 2 / 3, "village_identified_share_12m": 0,
    "county_unemployed_share_3m": 1 / 3, "county_unemployed_share_change": 1 / 3,
    "county_disaster_loss_3m_per_household": 5000 / 3,
    "group_head_ethnic_minority": 0, "group_head_elderly": 0, "group_disabled_member": 1,
    "group_former_poor": 1, "group_relocated": 1,
}

EXPECTED_H2 = {
    "household_size": 1, "members_aged_65_plus": 1, "head_age": 65, "head_female": 1,
    "dependency_ratio": math.nan, "no_labour_capable_adult": 1, "relocated": math.nan,
    "years_since_lifted": math.nan,
    "medical_oop_3m": 50, "medical_uninsured_members": 1, "medical_reimbursed_share_12m": 0,
    "medical_oop_12m_income_share": math.nan,
    "employment_employed_share": math.nan, "employment_public_welfare_post_members": 1,
    "employment_wage_change_3m": math.nan,
    "education_enrolled_members": 0, "housing_safety_level": math.nan, "housing_dangerous": 0,
    "housing_assessment_age_months": math.nan, "disabled_members": 0,
    "disaster_loss_12m": 0, "disaster_events_12m": 0,
    "assistance_dibao_marginal_now": 1, "assistance_monthly_amount_now": 150,
    "income_per_capita": math.nan, "income_to_monitoring_line": math.nan,
    "agri_livestock_units": math.nan, "assets_urban_housing": 0,
    "monitoring_times_identified": 1, "monitoring_months_since_eliminated": 12,
    "village_shock_share_3m": 2 / 3,
    "group_head_ethnic_minority": 1, "group_head_elderly": 1, "group_disabled_member": 0,
    "group_former_poor": 0, "group_relocated": math.nan,
}


def _check(row: pd.Series, expected: dict[str, float]) -> None:
    wrong = {k: (row[k], v) for k, v in expected.items()
             if not (math.isnan(v) and math.isnan(row[k])) and row[k] != pytest.approx(v)}
    assert not wrong, f"got (actual, expected): {wrong}"


def test_roster_rows_known_at_t(frame: pd.DataFrame) -> None:
    # h3's roster row is reported after T; h4's only member moved out.
    assert sorted(frame.index) == ["g1", "h1", "h2", "h5"]
    assert str(frame.loc["h1", "as_of"].date()) == "2024-06-30"
    assert frame.loc["h1", "village_code"] == "620102001001"


def test_household_with_every_feed(frame: pd.DataFrame) -> None:
    _check(frame.loc["h1"], EXPECTED_H1)


def test_household_with_little_data_zero_versus_nan(frame: pd.DataFrame) -> None:
    _check(frame.loc["h2"], EXPECTED_H2)


def test_head_falls_back_to_the_member_recorded_as_head(frame: pd.DataFrame) -> None:
    assert frame.loc["h5", "head_age"] == 34  # born 1990-06-30, T = 2024-06-30
    assert frame.loc["h5", "head_female"] == 1 and frame.loc["h5", "deaths_12m"] == 1


def test_delivered_feeds_are_not_flagged_missing(frame: pd.DataFrame) -> None:
    flags = [c for c in feature_names() if c.endswith("_feed_missing")]
    assert (frame.loc[["h1", "h2"], flags] == 0).all().all()


def test_absent_feed_for_a_county_is_missing_not_zero(frame: pd.DataFrame) -> None:
    g1 = frame.loc["g1"]
    # medical rows exist for the county, but none for the last 4 months: absent.
    assert g1["medical_feed_missing"] == 1
    assert math.isnan(g1["medical_oop_12m"])
    assert math.isnan(g1["medical_uninsured_members"])
    assert g1["employment_feed_missing"] == 1 and math.isnan(g1["employment_wage_3m"])
    assert g1["housing_feed_missing"] == 1 and math.isnan(g1["housing_dangerous"])
    assert math.isnan(g1["group_disabled_member"])
    # required feeds are still there
    assert g1["household_size"] == 1 and g1["monitoring_times_identified"] == 0


def test_workers_and_single_county_give_the_same_rows(tmp_path: Path) -> None:
    root = build_world(tmp_path)
    one = build_features(root, T, Settings(workers=1))
    two = build_features(root, T, Settings(workers=2))
    pd.testing.assert_frame_equal(one, two)
    only = build_features(root, T, Settings(workers=1), county="620102")
    assert sorted(only["household_key"]) == ["h1", "h2", "h5"]
