"""Reasons a caseworker can trust, on hand-made households (issue #13).

Each reason is written from hand-set TreeSHAP contributions (`Explainer.reasons_from`),
so every number below is computed by hand: the year of the line an income is measured
against, a missing value that is not a reason, sizes in probability points, and
hardship types that a shown reason or a fired rule backs.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from features import build_features
from features.registry import BY_NAME, FEED_MISSING
from features.rules import evaluate_rules
from serving.explain import ExplainedReason, Explainer
from serving.scoring import backed_types, score, types_from_reasons
from tests.features.warehouse_fixture import Warehouse
from tests.serving.scoring_fixtures import AS_OF, feature_frame, train_artifact

T = Month.parse("2025-12")


@cache
def model() -> ModelArtifact:
    """Any artifact of the registry's features with the identity (sigmoid) calibrator:
    only its feature list and calibrator matter when contributions are set by hand."""
    return train_artifact(feature_frame(200), rounds=5)


@cache
def typed_model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25, with_types=True)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def household(**values: float) -> np.ndarray:
    """One encoded row: nothing happened, every optional feed delivered, plus `values`."""
    row = dict.fromkeys(model().feature_names, 0.0)
    row.update(income_per_capita=20_000.0, income_to_monitoring_line=2.6,
               income_check_age_months=6.0, housing_safety_level=1.0, household_size=3.0)
    row.update(values)
    return np.array([[row[n] for n in model().feature_names]], dtype=np.float64)


def contributions(bias: float, **by_feature: float) -> np.ndarray:
    """(1, features + 1) contributions: the named features' log-odds, the rest 0."""
    names = model().feature_names
    out = np.zeros((1, len(names) + 1))
    for name, c in by_feature.items():
        out[0, names.index(name)] = c
    out[0, -1] = bias
    return out


def reasons(values: np.ndarray, contrib: np.ndarray, max_reasons: int = 4,
            ) -> list[ExplainedReason]:
    return Explainer(model(), max_reasons=max_reasons).reasons_from(values, contrib)[0]


# -- 1. an amount against a policy line: the line of the record's own year ----------------

def _income_world(root: Path) -> Path:
    """Two households scored at 2025-12: one checked for 2025 (7,500 yuan), one whose
    latest check is for 2022 (6,843 yuan, the issue's alert 126)."""
    w = Warehouse(root)
    for hh, person in (("h2025", "p1"), ("h2022", "p2")):
        w.add("households", household_key=hh, head_person_key=person,
              reported_date="2022-01-05")
        w.add("persons", person_key=person, household_key=hh, reported_date="2022-01-05")
    w.add("income_checks", household_key="h2022", period_end="2022-12",
          per_capita_net_income_yuan=6843.0, reported_date="2023-02-10")
    w.add("income_checks", household_key="h2025", period_end="2024-12",
          per_capita_net_income_yuan=9000.0, reported_date="2025-02-10")
    w.add("income_checks", household_key="h2025", period_end="2025-06",
          per_capita_net_income_yuan=7500.0, reported_date="2025-08-10")
    return w.write()


def test_an_income_is_measured_against_the_line_of_its_checks_year(tmp_path: Path) -> None:
    settings = Settings(workers=1)
    assert (settings.monitoring_line(2022), settings.monitoring_line(2025)) == (6600, 7600)
    frame = build_features(_income_world(tmp_path), T, settings).set_index("household_key")
    ratio = frame["income_to_monitoring_line"]
    assert ratio["h2025"] == pytest.approx(7500 / 7600)  # 2025's line, not 2024's or 2022's
    assert ratio["h2022"] == pytest.approx(6843 / 6600)  # the check's year, not 2025's
    fired = evaluate_rules(frame.reset_index(), settings).set_index(frame.index)
    # The rule and the reason read the same ratio: below the line only in 2025.
    assert fired.loc["h2025", "R_INCOME_BELOW_LINE"]
    assert not fired.loc["h2022", "R_INCOME_BELOW_LINE"]
    names = model().feature_names
    for key, shown in (("h2025", "99%"), ("h2022", "104%")):
        values = frame.loc[[key], names].to_numpy(dtype=np.float64)
        top = reasons(values, contributions(-2.0, income_to_monitoring_line=1.0))[0]
        assert top.group_key == "income_level"
        assert f"核查年度监测范围的 {shown}" in top.text_zh, top.text_zh


# -- 2. a missing value is never a reason by itself ----------------------------------------

def test_a_missing_value_without_a_documented_meaning_is_passed_over() -> None:
    # The previous check is missing (one check only): the income change group pushes most,
    # but has nothing known to say, so the hospital stay is the first reason.
    values = household(income_per_capita_change=np.nan, income_per_capita_change_pct=np.nan,
                       medical_inpatient_days_12m=12.0)
    got = reasons(values, contributions(-2.0, income_per_capita_change=0.9,
                                        medical_inpatient_days_12m=0.4))
    assert [r.group_key for r in got] == ["medical_inpatient"]
    assert got[0].text_zh.startswith("近12个月住院 12 天")
    assert "无记录" not in got[0].text_zh


def test_a_documented_absence_says_what_is_known() -> None:
    values = household(housing_safety_level=np.nan, housing_assessment_age_months=np.nan)
    got = reasons(values, contributions(-2.0, housing_safety_level=0.6,
                                        housing_assessment_age_months=0.2))
    assert BY_NAME["housing_safety_level"].absent_zh == "住房从未做过安全鉴定"
    assert got[0].text_zh.startswith("住房从未做过安全鉴定〔")  # said once for two members


def test_an_absent_feed_is_not_a_documented_absence_and_not_a_reason() -> None:
    # The county's housing feed is missing: NaN says nothing about this house, and the
    # feed-absence flag itself is no reason either.
    flag = FEED_MISSING.name("housing")
    values = household(housing_safety_level=np.nan, housing_assessment_age_months=np.nan,
                       **{flag: 1.0}, disaster_loss_12m=15_000.0)
    got = reasons(values, contributions(-2.0, housing_safety_level=0.6, **{flag: 0.5},
                                        disaster_loss_12m=0.1))
    assert [r.group_key for r in got] == ["disaster_loss"]


def test_no_reason_of_a_scored_province_reads_no_record() -> None:
    frame = feature_frame(400, seed=5)
    frame.loc[:40, ["income_per_capita", "income_to_monitoring_line",
                    "income_per_capita_change", "employment_wage_change_3m"]] = np.nan
    out = score(frame, typed_model(), Settings(workers=1), AS_OF, explain_all=True)
    texts = [r.text_zh for rs in out["reasons"] for r in rs]
    assert len(texts) > 400
    assert not [t for t in texts if "无记录" in t or "数据缺失" in t]
    assert "feed_missing" not in {r.group_key for rs in out["reasons"] for r in rs}


# -- 3. sizes in probability points, summing sensibly ---------------------------------------

def test_sizes_are_probability_points_of_the_calibrated_risk() -> None:
    # bias -2.0; medical +1.0, housing +0.5, income -0.3 -> margin -0.8. The two risk-
    # raising groups add sigmoid(-0.8) - sigmoid(-2.3) = 21.89 points, shared 2:1.
    values = household(medical_oop_12m=30_000.0, housing_safety_level=4.0)
    contrib = contributions(-2.0, medical_oop_12m=1.0, housing_safety_level=0.5,
                            income_to_monitoring_line=-0.3)
    got = reasons(values, contrib)
    lifted = 100 * (sigmoid(-0.8) - sigmoid(-2.3))
    assert lifted == pytest.approx(21.89, abs=0.01)
    assert [r.group_key for r in got] == ["medical_oop", "housing_safety"]
    assert [r.contribution for r in got] == pytest.approx([lifted * 2 / 3, lifted / 3])
    assert got[0].text_zh.endswith("〔风险 +14.6 个百分点〕")
    assert got[1].text_zh.endswith("〔风险 +7.3 个百分点〕")
    assert sum(r.contribution for r in got) <= 100 * sigmoid(-0.8)  # never above the risk
    assert all(r.scale == "probability points" and "对数几率" not in r.text_zh for r in got)


def test_a_household_below_the_base_risk_is_sized_in_points_too() -> None:
    # bias 0 (base risk 50%); housing +0.2, income -1.2: risk 26.9%, below the base.
    values = household(housing_safety_level=3.0)
    got = reasons(values, contributions(0.0, housing_safety_level=0.2,
                                        income_to_monitoring_line=-1.2))
    expected = 100 * (sigmoid(-1.0) - sigmoid(-1.2))
    assert [r.contribution for r in got] == pytest.approx([expected])
    assert got[0].text_zh.endswith(f"〔风险 +{expected:.1f} 个百分点〕")


# -- 4. every hardship type is backed by a reason or a fired rule ---------------------------

def _medical_reason() -> list[ExplainedReason]:
    values = household(medical_oop_12m=30_000.0)
    return reasons(values, contributions(-2.0, medical_oop_12m=1.0))


def test_a_type_without_a_reason_or_rule_is_dropped_one_with_a_rule_kept() -> None:
    explainer = Explainer(model())
    medical = _medical_reason()
    assert types_from_reasons(medical, explainer) == ("illness",)
    # The per-type models say disaster and illness; only the medical reason is shown.
    assert backed_types(("disaster", "illness"), medical, (), explainer) == ("illness",)
    # R_DISASTER fired: disaster is backed by the rule and kept, in the models' order.
    assert backed_types(("disaster", "illness"), medical, ("disaster",), explainer) == (
        "disaster", "illness")
    # Nothing the models say is backed: the reasons' own types instead.
    assert backed_types(("education",), medical, (), explainer) == ("illness",)


def test_every_type_on_a_scored_alert_is_backed() -> None:
    frame = feature_frame(400, seed=3)
    out = score(frame, typed_model(), Settings(workers=1, rule_capacity_pct=100), AS_OF)
    explainer = Explainer(typed_model())
    alerts = out[out["alerted"]]
    assert len(alerts) > 10
    for row in alerts.itertuples():
        backing = {explainer.group_risk_type(r.group_key) for r in row.reasons}
        assert set(row.risk_types) <= backing | set(row.rule_risk_types), row.household_key
        assert tuple(row.departments) or not row.risk_types


def test_context_reasons_back_no_type() -> None:
    explainer = Explainer(model())
    values = household(village_shock_share_3m=0.4)
    context = reasons(values, contributions(-2.0, village_shock_share_3m=0.8))
    assert [r.group_key for r in context] == ["village_context"]
    assert types_from_reasons(context, explainer) == ()
    assert backed_types(("illness",), context, (), explainer) == ()


def test_the_helpers_agree_with_the_registry() -> None:
    explainer = Explainer(model())
    for group in explainer.groups:
        members = {BY_NAME[m].risk_type for m in explainer.members(group)}
        if group != "feed_missing":
            assert members == {explainer.group_risk_type(group)}, group
    assert explainer.group_risk_type("feed_missing") is None  # absent data: no hardship
