"""Fairness on a hand-made case: every number below was computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from training.fairness import fairness_report

# rows 0-5 group A, rows 6-9 group B; top 30% of 10 rows = rows 0, 1, 6 are flagged.
P = [0.95, 0.9, 0.1, 0.2, 0.3, 0.15, 0.85, 0.05, 0.12, 0.11]
Y = [1, 0, 1, 0, 0, 0, 1, 1, 0, 0]
GROUPS = pd.DataFrame({"g": ["A"] * 6 + ["B"] * 4})


def _row(table: pd.DataFrame, group: str) -> pd.Series:
    return table[table["group"] == group].iloc[0]


def test_group_rates_and_disparities_against_largest_group() -> None:
    report = fairness_report(Y, P, GROUPS, k_pct=30, tau=0.8, min_size=5, min_positives=1)
    a, b = _row(report.table, "A"), _row(report.table, "B")
    # A: tp=1 fp=1 fn=1 tn=3;  B: tp=1 fp=0 fn=1 tn=2
    assert (a["n"], a["positives"], a["flagged"]) == (6, 2, 2)
    assert a["flag_rate"] == pytest.approx(1 / 3) and a["flagged_share"] == pytest.approx(2 / 3)
    assert (a["precision"], a["recall"], a["fnr"], a["fdr"]) == (0.5, 0.5, 0.5, 0.5)
    assert a["fpr"] == pytest.approx(0.25)
    assert (b["flag_rate"], b["precision"], b["recall"], b["fpr"], b["fdr"]) == (
        0.25, 1.0, 0.5, 0.0, 0.0)
    assert bool(a["is_reference"]) and b["reference_group"] == "A"
    assert b["flag_rate_disparity"] == pytest.approx(0.75) and b["flag_rate_flag"]
    assert b["precision_disparity"] == pytest.approx(2.0) and b["precision_flag"]
    assert b["recall_disparity"] == pytest.approx(1.0) and not b["recall_flag"]
    assert b["fpr_disparity"] == 0.0 and b["fpr_flag"]
    assert not a[[c for c in report.table.columns if c.endswith("_flag")]].any()
    assert list(report.flagged["group"]) == ["B"]
    # B has 4 rows < min_size 5: reported, with a warning.
    assert bool(b["small_group"]) and not bool(a["small_group"])
    assert len(report.warnings) == 1 and "g=B" in report.warnings[0]


def test_configured_reference_and_undefined_ratios() -> None:
    report = fairness_report(Y, P, GROUPS, k_pct=30, reference={"g": "B"}, min_size=1,
                             min_positives=1)
    a = _row(report.table, "A")
    assert a["precision_disparity"] == pytest.approx(0.5) and a["precision_flag"]
    # B's FPR is 0: the ratio is undefined, reported as NaN and not flagged.
    assert math.isnan(a["fpr_disparity"]) and not a["fpr_flag"]
    assert report.warnings == []


def test_missing_group_values_form_their_own_group() -> None:
    groups = pd.DataFrame({"g": ["A"] * 6 + [None] * 4})
    report = fairness_report(Y, P, groups, k_pct=30, min_size=1, min_positives=0)
    assert set(report.table["group"]) == {"A", "missing"}
    with pytest.raises(ValueError, match="reference group"):
        fairness_report(Y, P, GROUPS, reference={"g": "Z"})
