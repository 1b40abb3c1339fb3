"""The departments' deterministic rule triggers (规则预警), computed from a feature frame.

Each `Rule` is a policy trigger a department already applies by hand: a code, the
Chinese sentence a caseworker sees, the hardship type (`doudi.contract.RISK_TYPES`)
it speaks to and the registry features it reads. Thresholds are named constants
(the income rules: the registry's ratios to the monitoring line of the check's own
year, `settings.monitoring_line`). A rule fires only on data it can see: a missing
value (NaN) never fires a rule.

Used twice: training compares the model with `rule_score` (the policy baseline
ranking) and serving attaches fired rules to alerts (`source` rules / both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.settings import Settings
from features.registry import BY_NAME, MEDICAL_OOP

# -- thresholds ------------------------------------------------------------------------
# 医疗: out-of-pocket cost over 12 months (the window of the departments' annual ledgers)
# with at least one hospital stay. Former-poor households get the lower line of the
# 防止返贫 guidance; everyone else the higher "catastrophic expense" line.
OOP_WINDOW_MONTHS = 12
OOP_FEATURE = MEDICAL_OOP.name(OOP_WINDOW_MONTHS)
INPATIENT_OOP_FORMER_POOR_YUAN = 5_000.0
INPATIENT_OOP_OTHER_YUAN = 20_000.0
# 住房: grade D (4) is "dangerous house, whole"; C/D both count as 危房 in the registry.
HOUSING_GRADE_D = 4.0
# 灾害: direct losses of a year at which emergency management checks the household.
DISASTER_LOSS_YUAN = 10_000.0
# 灾害: worst house damage "severe" (2) or "collapsed" (3).
DISASTER_SEVERE_HOUSE_DAMAGE = 2.0
# 就业: member-months registered unemployed in 12 months (long-term unemployment). A
# wage-drop rule was left out: recent months' wages are often not yet reported, so the
# 3-month wage change overstates falls.
LONG_UNEMPLOYED_MONTHS = 6.0
# 刚性支出: income net of rigid expenditure below the line (ratio to the line).
BELOW_LINE_RATIO = 1.0

RuleFn = Callable[[pd.DataFrame, Settings], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """One deterministic trigger. `weight` orders households in the baseline ranking."""

    code: str
    text_zh: str
    risk_type: str
    features: tuple[str, ...]
    weight: float
    fires: RuleFn


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _inpatient_oop(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    oop = _col(frame, OOP_FEATURE)
    stayed = _col(frame, "medical_inpatient_days_12m") > 0
    former_poor = _col(frame, "former_poor") == 1
    line = np.where(former_poor, INPATIENT_OOP_FORMER_POOR_YUAN, INPATIENT_OOP_OTHER_YUAN)
    return stayed & (oop >= line)


def _income_below_line(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    # The income of a check is measured against the line of the check's own year (the
    # registry's ratio, settings.monitoring_line of its period_end), never the as-of year's:
    # a 2022 income against the 2025 line would fire where the reason says "104%".
    return _col(frame, "income_to_monitoring_line") < BELOW_LINE_RATIO


def _income_after_rigid_below_line(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    after = _col(frame, "income_after_rigid_to_monitoring_line")
    before = _col(frame, "income_to_monitoring_line")
    # Only the households the rigid expenditure pushes below the line: the plain
    # below-line rule already speaks for the others.
    return (after < BELOW_LINE_RATIO) & ~(before < BELOW_LINE_RATIO)


def _house_grade_d(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    return _col(frame, "housing_safety_level") >= HOUSING_GRADE_D


def _compulsory_dropout(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    # The education feed does not say which level a dropout left; a dropout in a
    # household with children of compulsory age (6-14) is taken as compulsory.
    dropouts = _col(frame, "education_dropouts_12m") >= 1
    compulsory_age = (_col(frame, "members_aged_6_11") + _col(frame, "members_aged_12_14")) >= 1
    return dropouts & compulsory_age


def _disaster_loss(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    loss = _col(frame, "disaster_loss_12m") >= DISASTER_LOSS_YUAN
    house = _col(frame, "disaster_house_damage_12m") >= DISASTER_SEVERE_HOUSE_DAMAGE
    return loss | house


def _severe_disability_unsubsidised(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    severe = _col(frame, "disabled_members_grade_1_2") >= 1
    return severe & (_col(frame, "disability_subsidised_members") == 0)


def _no_labour_no_dibao(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    return (_col(frame, "no_labour_capable_adult") == 1) & (
        _col(frame, "assistance_dibao_now") == 0)


def _long_unemployed(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    return _col(frame, "employment_unemployed_months_12m") >= LONG_UNEMPLOYED_MONTHS


def _uninsured(frame: pd.DataFrame, _settings: Settings) -> np.ndarray:
    return _col(frame, "medical_uninsured_members") >= 1


RULES: tuple[Rule, ...] = (
    Rule("R_MED_OOP",
         f"近{OOP_WINDOW_MONTHS}个月住院自付医疗费用超过标准"
         f"（脱贫户 {INPATIENT_OOP_FORMER_POOR_YUAN:,.0f} 元，其他户 "
         f"{INPATIENT_OOP_OTHER_YUAN:,.0f} 元）",
         "illness", (OOP_FEATURE, "medical_inpatient_days_12m", "former_poor"), 3.0,
         _inpatient_oop),
    Rule("R_INCOME_BELOW_LINE", "最近核查人均纯收入低于核查年度防止返贫监测范围", "other",
         ("income_to_monitoring_line",), 3.0, _income_below_line),
    Rule("R_RIGID_BELOW_LINE", "扣除刚性支出后人均收入低于核查年度监测范围", "other",
         ("income_after_rigid_to_monitoring_line", "income_to_monitoring_line"), 2.0,
         _income_after_rigid_below_line),
    Rule("R_HOUSE_D", "住房安全鉴定为D级危房", "housing", ("housing_safety_level",), 3.0,
         _house_grade_d),
    Rule("R_EDU_DROPOUT", "义务教育阶段子女辍学", "education",
         ("education_dropouts_12m", "members_aged_6_11", "members_aged_12_14"), 3.0,
         _compulsory_dropout),
    Rule("R_DISASTER",
         f"近12个月受灾损失 {DISASTER_LOSS_YUAN:,.0f} 元以上或房屋严重损毁", "disaster",
         ("disaster_loss_12m", "disaster_house_damage_12m"), 2.0, _disaster_loss),
    Rule("R_DISABILITY_NO_SUBSIDY", "有一、二级重度残疾人但未享受残疾人两项补贴", "disability",
         ("disabled_members_grade_1_2", "disability_subsidised_members"), 2.0,
         _severe_disability_unsubsidised),
    Rule("R_NO_LABOUR", "家中无劳动力且未享受低保", "labor_shortage",
         ("no_labour_capable_adult", "assistance_dibao_now"), 2.0, _no_labour_no_dibao),
    Rule("R_LONG_UNEMPLOYED",
         f"近12个月家庭成员累计登记失业 {LONG_UNEMPLOYED_MONTHS:.0f} 人月以上",
         "unstable_employment", ("employment_unemployed_months_12m",), 1.0, _long_unemployed),
    Rule("R_UNINSURED", "有家庭成员未参加基本医疗保险", "illness",
         ("medical_uninsured_members",), 1.0, _uninsured),
)
BY_CODE: Mapping[str, Rule] = {r.code: r for r in RULES}


def _check(rules: tuple[Rule, ...]) -> None:
    """Fail at import when a rule names an unknown feature or hardship type."""
    for rule in rules:
        if rule.risk_type not in RISK_TYPES:
            raise ValueError(f"rule {rule.code}: unknown risk type {rule.risk_type!r}")
        unknown = [f for f in rule.features if f not in BY_NAME]
        if unknown:
            raise ValueError(f"rule {rule.code}: features not in the registry: {unknown}")


_check(RULES)


def evaluate_rules(
    frame: pd.DataFrame, settings: Settings, rules: tuple[Rule, ...] = RULES
) -> pd.DataFrame:
    """Fired rules per row of a feature frame (same order and index).

    Columns: one bool column per rule code, `rule_triggers` (tuple of fired codes),
    `rule_risk_types` (tuple of their hardship types, no repeats) and `rule_score`
    (sum of fired rules' weights: the baseline ranking).
    """
    needed = sorted({f for r in rules for f in r.features})
    lacking = [c for c in needed if c not in frame.columns]
    if lacking:
        raise ValueError(f"feature frame lacks column(s) the rules read: {', '.join(lacking)}")
    fired = np.column_stack([np.asarray(r.fires(frame, settings), dtype=bool) for r in rules]) \
        if rules else np.zeros((len(frame), 0), dtype=bool)
    weights = np.array([r.weight for r in rules], dtype=np.float64)
    codes = [r.code for r in rules]
    types = [r.risk_type for r in rules]
    triggers: list[tuple[str, ...]] = [()] * len(frame)
    risk_types: list[tuple[str, ...]] = [()] * len(frame)
    # Few households fire a rule: only their rows need the Python loop.
    for i in np.flatnonzero(fired.any(axis=1)).tolist():
        idx = np.flatnonzero(fired[i]).tolist()
        triggers[i] = tuple(codes[j] for j in idx)
        risk_types[i] = tuple(dict.fromkeys(types[j] for j in idx))
    out = pd.DataFrame(fired, columns=codes, index=frame.index)
    out["rule_triggers"] = pd.Series(triggers, index=frame.index, dtype=object)
    out["rule_risk_types"] = pd.Series(risk_types, index=frame.index, dtype=object)
    out["rule_score"] = fired.astype(np.float64) @ weights
    return out


def rule_score(frame: pd.DataFrame, settings: Settings) -> np.ndarray:
    """The policy baseline's score per row (higher = more rules, weighted)."""
    return evaluate_rules(frame, settings)["rule_score"].to_numpy()


def baseline_rule_scores(settings: Settings) -> dict[str, Callable[[pd.DataFrame], np.ndarray]]:
    """Rule baselines for `training.core.fit_evaluate(rule_scores=...)` (callables on X).

    X there holds the features only (no `as_of`), which every rule can do without.
    """
    def score_all(X: pd.DataFrame) -> np.ndarray:
        return rule_score(X, settings)

    return {"rules_all": score_all}


def rule_texts(codes: tuple[str, ...] | list[str]) -> list[str]:
    """Chinese sentences of fired rule codes (for alerts and exports)."""
    return [BY_CODE[c].text_zh for c in codes]
