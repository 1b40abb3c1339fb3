"""The departments' rule triggers on hand-made feature rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from doudi.contract import RISK_TYPES
from doudi.settings import Settings
from features.registry import FEATURES
from features.rules import (
    BY_CODE,
    RULES,
    baseline_rule_scores,
    evaluate_rules,
    rule_score,
    rule_texts,
)

SETTINGS = Settings(monitoring_lines={2024: 7300.0, 2026: 7900.0})


def rows(*overrides: dict[str, Any], as_of: str = "2026-06-30") -> pd.DataFrame:
    """Neutral households (nothing happened, income well above the line) plus overrides."""
    base: dict[str, Any] = {s.name: 0.0 for s in FEATURES}
    base.update(income_per_capita=20_000.0, income_to_monitoring_line=2.5,
                income_after_rigid_to_monitoring_line=2.4, housing_safety_level=1.0,
                household_size=3.0, labour_capable_adults=2.0, members_aged_6_11=1.0)
    frame = pd.DataFrame([{**base, **o} for o in overrides])
    frame.insert(0, "as_of", pd.Timestamp(as_of))
    frame.insert(0, "household_key", [f"h{i}" for i in range(len(frame))])
    return frame


def fired(frame: pd.DataFrame, code: str) -> list[bool]:
    return evaluate_rules(frame, SETTINGS)[code].tolist()


def test_neutral_household_fires_nothing() -> None:
    out = evaluate_rules(rows({}), SETTINGS)
    assert out["rule_triggers"].tolist() == [()]
    assert out["rule_score"].tolist() == [0.0]


def test_inpatient_out_of_pocket_lines_depend_on_former_poor() -> None:
    frame = rows(
        {"former_poor": 1, "medical_oop_12m": 5_000, "medical_inpatient_days_12m": 4},
        {"former_poor": 1, "medical_oop_12m": 4_999, "medical_inpatient_days_12m": 4},
        {"former_poor": 0, "medical_oop_12m": 19_999, "medical_inpatient_days_12m": 4},
        {"former_poor": 0, "medical_oop_12m": 20_000, "medical_inpatient_days_12m": 4},
        {"former_poor": 1, "medical_oop_12m": 30_000, "medical_inpatient_days_12m": 0},
        {"former_poor": 1, "medical_oop_12m": np.nan, "medical_inpatient_days_12m": 4},
    )
    assert fired(frame, "R_MED_OOP") == [True, False, False, True, False, False]


def test_income_below_the_line_of_the_checks_own_year() -> None:
    """The ratio to the line of the check's year decides (features/builders.py), whatever
    the as-of month: a 2022 income of 6,843 is 104% of 2022's 6,600 even in 2026."""
    frame = rows({"income_to_monitoring_line": 0.999, "income_per_capita": 6_000},
                 {"income_to_monitoring_line": 6_843 / 6_600, "income_per_capita": 6_843},
                 {"income_to_monitoring_line": np.nan, "income_per_capita": np.nan})
    assert fired(frame, "R_INCOME_BELOW_LINE") == [True, False, False]
    assert evaluate_rules(frame.drop(columns="as_of"), SETTINGS)[
        "R_INCOME_BELOW_LINE"].tolist() == [True, False, False]  # training's bare X


def test_rigid_expenditure_rule_only_for_those_it_pushes_below() -> None:
    frame = rows({"income_after_rigid_to_monitoring_line": 0.8},
                 {"income_after_rigid_to_monitoring_line": 0.8,
                  "income_to_monitoring_line": 0.9, "income_per_capita": 7_000})
    assert fired(frame, "R_RIGID_BELOW_LINE") == [True, False]
    assert fired(frame, "R_INCOME_BELOW_LINE") == [False, True]


def test_d_grade_house_and_disaster() -> None:
    frame = rows({"housing_safety_level": 4}, {"housing_safety_level": 3},
                 {"housing_safety_level": np.nan}, {"disaster_loss_12m": 10_000},
                 {"disaster_house_damage_12m": 2})
    assert fired(frame, "R_HOUSE_D") == [True, False, False, False, False]
    assert fired(frame, "R_DISASTER") == [False, False, False, True, True]


def test_compulsory_education_dropout_needs_a_child_of_compulsory_age() -> None:
    frame = rows({"education_dropouts_12m": 1},
                 {"education_dropouts_12m": 1, "members_aged_6_11": 0},
                 {"education_dropouts_12m": 1, "members_aged_6_11": 0, "members_aged_12_14": 1})
    assert fired(frame, "R_EDU_DROPOUT") == [True, False, True]


def test_triggers_types_and_weighted_score() -> None:
    frame = rows({"housing_safety_level": 4, "education_dropouts_12m": 2,
                  "medical_uninsured_members": 1}, {})
    out = evaluate_rules(frame, SETTINGS)
    assert out.loc[0, "rule_triggers"] == ("R_HOUSE_D", "R_EDU_DROPOUT", "R_UNINSURED")
    assert out.loc[0, "rule_risk_types"] == ("housing", "education", "illness")
    expected = (BY_CODE["R_HOUSE_D"].weight + BY_CODE["R_EDU_DROPOUT"].weight
                + BY_CODE["R_UNINSURED"].weight)
    assert out["rule_score"].tolist() == [expected, 0.0]
    assert rule_score(frame, SETTINGS).tolist() == [expected, 0.0]
    assert out.index.equals(frame.index)


def test_training_baseline_callable_scores_bare_features() -> None:
    frame = rows({"housing_safety_level": 4}, {})
    X = frame[[s.name for s in FEATURES]]
    scores = baseline_rule_scores(SETTINGS)["rules_all"](X)
    assert scores.shape == (2,) and scores[0] > scores[1] == 0


def test_every_rule_is_described() -> None:
    assert len({r.code for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.risk_type in RISK_TYPES
        assert rule.text_zh and not rule.text_zh.isascii()
    assert rule_texts(["R_HOUSE_D"]) == ["住房安全鉴定为D级危房"]


def test_missing_feature_column_is_named() -> None:
    with pytest.raises(ValueError, match="housing_safety_level"):
        evaluate_rules(rows({}).drop(columns="housing_safety_level"), SETTINGS)
