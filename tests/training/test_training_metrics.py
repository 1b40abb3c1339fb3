"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import metrics


def test_ece_equal_frequency_bins_hand_computed() -> None:
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9]
    # bins {0.1,0.2}: |0-0.15|; {0.3,0.4}: |0.5-0.35|; {0.5,0.9}: |1-0.7|; each weight 1/3
    assert metrics.expected_calibration_error(y, p, n_bins=3) == pytest.approx(0.2)
    curve = metrics.calibration_curve(y, p, n_bins=3)
    assert curve["n"].tolist() == [2, 2, 2]
    assert curve["mean_predicted"].tolist() == pytest.approx([0.15, 0.35, 0.7])
    assert curve["observed_rate"].tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_ece_bins_are_equal_frequency_not_equal_width() -> None:
    # 40 rows all below 0.1: equal-width bins would put them in one bin; we get 20 of 2.
    p = np.linspace(0.01, 0.09, 40)
    y = np.zeros(40)
    curve = metrics.calibration_curve(y, p, n_bins=20)
    assert len(curve) == 20 and set(curve["n"]) == {2}
    assert metrics.expected_calibration_error(y, p) == pytest.approx(p.mean())


def test_precision_and_recall_at_k_hand_computed() -> None:
    p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    y = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert metrics.precision_at_k(y, p, 20) == pytest.approx(0.5)
    assert metrics.recall_at_k(y, p, 20) == pytest.approx(1 / 3)
    assert metrics.precision_at_k(y, p, 30) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(y, p, 30) == pytest.approx(2 / 3)
    assert metrics.precision_at_k(y, p, 5) == 1.0  # ceil(0.5) = 1 row flagged


def test_top_k_ties_break_by_row_order() -> None:
    assert metrics.top_k_mask([0.5, 0.5, 0.5, 0.5], 50).tolist() == [True, True, False, False]
    assert metrics.top_k_count(1000, 5) == 50
    assert metrics.top_k_count(3, 5) == 1
    with pytest.raises(ValueError):
        metrics.top_k_count(10, 0)


def test_top_k_by_period_flags_within_each_month() -> None:
    p = [0.9, 0.1, 0.2, 0.3]
    period = ["2024-01", "2024-01", "2024-02", "2024-02"]
    assert metrics.top_k_mask_by_period(p, period, 50).tolist() == [True, False, False, True]


def test_lead_time_hand_computed() -> None:
    months = pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30",
                             "2024-05-31", "2024-06-30"])
    rows = pd.DataFrame({
        "hh": ["A"] * 5 + ["B"] * 6 + ["C"] * 2 + ["D"] * 3,
        "t": list(months[:5]) + list(months) + list(months[:2]) + list(months[:3]),
        "flag": [*[0, 1, 0, 1, 0], *[0, 0, 0, 0, 0, 1], *[1, 1], *[0, 0, 1]],
    })
    identified = pd.Series({"A": pd.Timestamp("2024-05-31"), "B": pd.Timestamp("2024-04-30"),
                            "D": pd.Timestamp("2024-03-31")})
    leads = metrics.lead_times(rows["hh"], rows["t"], rows["flag"], identified)
    # A: first flag Feb, identified May -> 3; B: only flagged after identification -> NaN;
    # D: flagged in its identification month -> 0; C was never identified -> absent.
    assert leads["A"] == 3 and leads["D"] == 0 and math.isnan(leads["B"])
    assert "C" not in leads.index
    summary = metrics.lead_time_summary(leads)
    assert (summary.identified, summary.flagged_before) == (3, 2)
    assert summary.share_flagged_before == pytest.approx(2 / 3)
    assert summary.median_months == pytest.approx(1.5)


def test_identification_month_from_horizon_labels() -> None:
    t = pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31", "2024-01-31"])
    ident = metrics.identification_from_labels(["A", "A", "A", "B"], t, [0, 1, 1, 0])
    assert ident.to_dict() == {"A": 2024 * 12 + 3}  # April 2024 as a month ordinal
    assert metrics.month_ordinal(pd.Series(pd.to_datetime(["2024-04-30"])))[0] == 2024 * 12 + 3


def test_calibration_slope_recovers_known_miscalibration() -> None:
    rng = np.random.default_rng(0)
    logit = rng.normal(-2, 1.5, 40_000)
    p_true = 1 / (1 + np.exp(-logit))
    y = (rng.random(len(p_true)) < p_true).astype(int)
    slope, intercept = metrics.calibration_slope(y, p_true)
    assert slope == pytest.approx(1.0, abs=0.06) and intercept == pytest.approx(0, abs=0.1)
    overconfident = 1 / (1 + np.exp(-2 * logit))
    assert metrics.calibration_slope(y, overconfident)[0] == pytest.approx(0.5, abs=0.04)


def test_ranking_metrics_with_one_class_are_nan() -> None:
    assert math.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.pr_auc([0, 0], [0.1, 0.2]))
    assert metrics.brier([1, 0], [0.75, 0.25]) == pytest.approx(0.0625)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=200),
       st.integers(1, 30))
def test_ece_is_bounded_and_zero_for_perfect_bins(rows: list[tuple[bool, float]],
                                                  n_bins: int) -> None:
    y = np.array([r[0] for r in rows], dtype=float)
    p = np.array([r[1] for r in rows])
    ece = metrics.expected_calibration_error(y, p, n_bins)
    assert 0 <= ece <= 1
    # Predicting each row's own label is perfectly calibrated in every bin.
    assert metrics.expected_calibration_error(y, y, n_bins) == pytest.approx(0, abs=1e-12)
