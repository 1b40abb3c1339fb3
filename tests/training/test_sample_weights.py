"""Sample weights through training: a negative-down-sampled table whose kept negatives carry
1/r must give the full population's probabilities and figures (docs/training.md,
"Down-sampled, weighted training tables")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import calibration as calib
from training import metrics
from training.core import FitResult, TrainConfig, data_fingerprint, fit_evaluate
from training.fairness import fairness_report
from training.synthetic import feature_columns, make_panel

FAST = {"num_threads": 1, "learning_rate": 0.1, "n_estimators": 200,
        "early_stopping_rounds": 20, "min_child_samples": 20}

# Six rows, scores descending; the negatives stand for 5 rows each (r = 0.2).
P6 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
Y6 = np.array([1, 0, 0, 1, 0, 0])
W6 = np.array([1.0, 5.0, 5.0, 1.0, 5.0, 5.0])  # total 22, positive weight 2


# -- hand-computed fixtures ----------------------------------------------------------------

def test_weighted_top_k_mask_takes_rows_until_their_weight_reaches_k_percent() -> None:
    # 30% of 22 = 6.6: cumulative weights 1, 6, 11 -> the third row reaches it.
    assert metrics.top_k_mask(P6, 30, W6).tolist() == [True, True, True, False, False, False]
    assert metrics.top_k_mask(P6, 30).tolist() == [True, True, False, False, False, False]
    # 50% of 22 = 11 is reached exactly at the third row: no fourth row, scaled or not.
    for scale in (1.0, 0.1, 3.0, 1e-6):
        assert metrics.top_k_mask(P6, 50, W6 * scale).sum() == 3
    # The first row alone already holds 1/22 > 1%; at least one row is always flagged.
    assert metrics.top_k_mask(P6, 1, W6).tolist() == [True] + [False] * 5
    # Row order of the input does not matter: the mask follows the scores.
    order = np.array([3, 0, 5, 1, 4, 2])
    assert metrics.top_k_mask(P6[order], 30, W6[order]).tolist() == [
        False, True, False, True, False, True]


def test_weighted_precision_recall_at_k_by_hand() -> None:
    # Top 30% (weight 11): one positive (weight 1) and two negatives (weight 5 each).
    assert metrics.precision_at_k(Y6, P6, 30, W6) == pytest.approx(1 / 11)
    assert metrics.recall_at_k(Y6, P6, 30, W6) == pytest.approx(1 / 2)
    assert metrics.precision_at_k(Y6, P6, 30) == pytest.approx(1 / 2)  # the 2 top rows


def test_weighted_pr_auc_by_hand() -> None:
    # Thresholds down the scores: recall 1/2 at precision 1 (first row), recall 1 at the
    # fourth row with precision 2 / (2 + 10) = 1/6: AP = 1/2 * 1 + 1/2 * 1/6 = 7/12.
    assert metrics.pr_auc(Y6, P6, W6) == pytest.approx(7 / 12)
    assert metrics.pr_auc(Y6, P6) == pytest.approx(1 / 2 * 1 + 1 / 2 * 2 / 4)


def test_roc_auc_ignores_weights_constant_within_a_class() -> None:
    # Every (positive, negative) pair gets the same weight: ROC-AUC cannot move, which is
    # why PR-AUC, precision@k and calibration are what the weights fix.
    assert metrics.roc_auc(Y6, P6, W6) == pytest.approx(metrics.roc_auc(Y6, P6)) == 0.75
    # Weights that differ inside a class do move it: the 0.8 negative now stands for 20.
    w = np.array([1.0, 20.0, 1.0, 1.0, 1.0, 1.0])
    # Positive 0.9 beats all 23 negative weight, positive 0.6 beats the 0.5 and 0.4 rows.
    assert metrics.roc_auc(Y6, P6, w) == pytest.approx((23 + 2) / (2 * 23))


def test_weighted_brier_and_calibration_bins_by_hand() -> None:
    assert metrics.brier(Y6, P6, W6) == pytest.approx(
        float(np.sum(W6 * (P6 - Y6) ** 2) / 22))
    # Two bins of weight 11 each: (0.4, 0.5, 0.6) and (0.7, 0.8, 0.9).
    curve = metrics.calibration_curve(Y6, P6, 2, W6)
    assert curve["n"].tolist() == [11.0, 11.0] and curve["rows"].tolist() == [3, 3]
    assert curve["mean_predicted"].tolist() == pytest.approx([5.1 / 11, 8.4 / 11])
    assert curve["observed_rate"].tolist() == pytest.approx([1 / 11, 1 / 11])
    assert metrics.expected_calibration_error(Y6, P6, 2, W6) == pytest.approx(
        0.5 * 4.1 / 11 + 0.5 * 7.4 / 11)


def test_bad_weights_are_refused_in_one_line() -> None:
    bad_weights: list[list[Any]] = [[1, 1, 1, 1, 1, -1], [1, 1, 1, 1, 1, np.nan],
                                    [1, 1, 1, 1, 1, np.inf], [1, 1, 1], ["a"] * 6]
    for bad in bad_weights:
        with pytest.raises(ValueError) as err:
            metrics.precision_at_k(Y6, P6, 30, bad)
        assert "\n" not in str(err.value)


# -- Hypothesis: invariants ------------------------------------------------------------------

scores = st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
                  | st.floats(0, 1, allow_nan=False), min_size=1, max_size=60)
k_values = st.floats(0.01, 100, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(p=scores, k=k_values, n_periods=st.integers(1, 4))
def test_all_ones_weights_flag_what_the_unweighted_top_k_flags(
        p: list[float], k: float, n_periods: int) -> None:
    ones = np.ones(len(p))
    assert np.array_equal(metrics.top_k_mask(p, k, ones), metrics.top_k_mask(p, k))
    period = np.arange(len(p)) % n_periods
    assert np.array_equal(metrics.top_k_mask_by_period(p, period, k, ones),
                          metrics.top_k_mask_by_period(p, period, k))


@settings(max_examples=200, deadline=None)
@given(p=scores, k=k_values, c=st.floats(1e-3, 1e3), data=st.data())
def test_top_k_is_invariant_to_scaling_the_weights(p: list[float], k: float, c: float,
                                                   data: st.DataObject) -> None:
    w = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, 5.0]) | st.floats(0.01, 100),
                                    min_size=len(p), max_size=len(p))))
    assert np.array_equal(metrics.top_k_mask(p, k, w), metrics.top_k_mask(p, k, w * c))


def _seeded(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels drawn from them and weights (1 for positives, 1..10 for negatives)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.6, n)
    y = (rng.random(n) < p).astype(float)
    y[:2] = [0.0, 1.0]  # both classes
    w = np.where(y == 1, 1.0, rng.integers(1, 11, n).astype(float))
    return p, y, w


def _same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-7, abs=1e-10, nan_ok=True), key


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 300), k=k_values,
       c=st.floats(1e-3, 1e3))
def test_weighted_metrics_are_invariant_to_scaling_the_weights(seed: int, n: int, k: float,
                                                               c: float) -> None:
    p, y, w = _seeded(seed, n)
    scaled = metrics.binary_summary(y, p, k, 5, w=w * c)
    plain = metrics.binary_summary(y, p, k, 5, w=w)
    # `represented` counts the population, so it scales; every metric must not.
    assert scaled.pop("represented") == pytest.approx(c * plain.pop("represented"))
    assert scaled.pop("represented_positives") == pytest.approx(
        c * plain.pop("represented_positives"))
    _same(scaled, plain)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 200))
def test_integer_weights_equal_repeated_rows(seed: int, n: int) -> None:
    """A row of weight 3 is three identical rows: for the threshold-free metrics and for
    every calibrator fit."""
    p, y, w = _seeded(seed, n)
    reps = w.astype(int)
    p_rep, y_rep = np.repeat(p, reps), np.repeat(y, reps)
    for name in ("roc_auc", "pr_auc", "brier"):
        assert getattr(metrics, name)(y, p, w) == pytest.approx(
            getattr(metrics, name)(y_rep, p_rep)), name
    margin, margin_rep = np.log(p / (1 - p)) * 1.3 - 0.4, np.log(p_rep / (1 - p_rep)) * 1.3 - 0.4
    grid = np.linspace(margin.min() - 3, margin.max() + 3, 101)
    for method in ("platt", "isotonic_logit", "isotonic"):
        weighted = calib.fit_calibrator(method, margin, y, w)
        repeated = calib.fit_calibrator(method, margin_rep, y_rep)
        assert weighted.method == repeated.method
        np.testing.assert_allclose(weighted.apply(grid), repeated.apply(grid), rtol=1e-6,
                                   atol=1e-9, err_msg=method)


def test_weighted_calibrators_recover_the_population_rate() -> None:
    """Negatives kept with probability 0.2 and weighted 5: the calibrated mean is the
    population's rate; unweighted it is the sample's."""
    rng = np.random.default_rng(3)
    margin = rng.normal(-3.5, 1.2, 100_000)
    y = (rng.random(len(margin)) < 1 / (1 + np.exp(-margin))).astype(float)
    keep = (y == 1) | (rng.random(len(y)) < 0.2)
    m, yk = margin[keep], y[keep]
    w = np.where(yk == 1, 1.0, 5.0)
    population = y.mean()
    for method in ("platt", "isotonic_logit"):
        weighted = calib.fit_calibrator(method, m, yk, w)
        assert np.average(weighted.apply(m), weights=w) == pytest.approx(population, rel=0.02)
        unweighted = calib.fit_calibrator(method, m, yk)
        assert unweighted.apply(m).mean() == pytest.approx(yk.mean(), rel=0.02)
        assert yk.mean() > 3 * population  # so the two are far apart


def test_fairness_rates_are_weight_sums() -> None:
    groups = pd.DataFrame({"g": ["a", "a", "b", "b", "a", "b"]})
    report = fairness_report(Y6, P6, groups, k_pct=30, w=W6, min_size=1, min_positives=0)
    table = report.table.set_index("group")
    # Flags: the weighted top 30% (rows 0-2). Group a = rows 0, 1, 4 (weights 1, 5, 5).
    assert table.loc["a", "n"] == 3 and table.loc["a", "represented"] == 11
    assert table.loc["a", "prevalence"] == pytest.approx(1 / 11)
    assert table.loc["a", "precision"] == pytest.approx(1 / 6)
    assert table.loc["b", "flag_rate"] == pytest.approx(5 / 11)  # row 2 of rows 2, 3, 5
    assert table.loc["a", "flagged_share"] == pytest.approx(6 / 11)
    plain = fairness_report(Y6, P6, groups, k_pct=30, min_size=1, min_positives=0).table
    ones = fairness_report(Y6, P6, groups, k_pct=30, w=np.ones(6), min_size=1,
                           min_positives=0).table
    pd.testing.assert_frame_equal(plain, ones[plain.columns])


# -- fit_evaluate -------------------------------------------------------------------------------

def _small_panel() -> pd.DataFrame:
    return make_panel(1500, 8, n_features=8, positive_rate=0.05, seed=1)


def _fit_small(panel: pd.DataFrame, weight: pd.Series | None) -> FitResult:
    return fit_evaluate(
        panel[feature_columns(panel)], panel["label"], panel["as_of"],
        config=TrainConfig(**FAST), groups=panel[["group_county", "group_elderly_head"]],
        household=panel["household_key"], type_labels=panel.filter(like="label_"),
        rule_scores={"x000": panel["x000"].fillna(-9)}, weight=weight)


def test_all_ones_weights_give_the_unweighted_run() -> None:
    panel = _small_panel()
    plain = _fit_small(panel, None)
    ones = _fit_small(panel, pd.Series(np.ones(len(panel))))
    extra = {"represented", "represented_positives"}  # reported only when weighted
    assert set(ones.test_metrics) - set(plain.test_metrics) == extra
    for key, value in plain.test_metrics.items():
        assert ones.test_metrics[key] == value or (math.isnan(value) and math.isnan(
            ones.test_metrics[key])), key
    assert ones.test_metrics["represented"] == plain.test_metrics["n"]
    np.testing.assert_array_equal(ones.test_probability, plain.test_probability)
    assert (ones.artifact.booster.model_to_string()
            == plain.artifact.booster.model_to_string())
    assert ones.artifact.calibrator.to_json() == plain.artifact.calibrator.to_json()
    pd.testing.assert_frame_equal(ones.comparison[plain.comparison.columns], plain.comparison)
    pd.testing.assert_frame_equal(ones.fold_metrics[plain.fold_metrics.columns],
                                  plain.fold_metrics)
    assert ones.fairness is not None and plain.fairness is not None
    pd.testing.assert_frame_equal(ones.fairness.table[plain.fairness.table.columns],
                                  plain.fairness.table)
    pd.testing.assert_frame_equal(ones.calibration_curve[plain.calibration_curve.columns],
                                  plain.calibration_curve, check_dtype=False)
    assert ones.lead_time == plain.lead_time
    pd.testing.assert_frame_equal(ones.type_metrics, plain.type_metrics)
    assert ones.data == plain.data and ones.fingerprint == plain.fingerprint
    assert plain.test_weight is None and ones.test_weight is not None


def test_fit_evaluate_refuses_bad_weights_in_one_line() -> None:
    panel = _small_panel()
    X, y, t = panel[feature_columns(panel)], panel["label"], panel["as_of"]
    n = len(panel)
    for bad in (pd.Series(np.r_[np.ones(n - 1), -1.0]), pd.Series(np.r_[np.ones(n - 1), np.nan]),
                pd.Series(np.ones(n - 1)), pd.Series(np.zeros(n)), pd.Series(["x"] * n)):
        with pytest.raises(ValueError) as err:
            fit_evaluate(X, y, t, config=TrainConfig(**FAST), weight=bad)
        assert "weight" in str(err.value) and "\n" not in str(err.value)


def test_fingerprint_includes_the_weights() -> None:
    panel = _small_panel()
    X, y, t = panel[feature_columns(panel)], panel["label"], panel["as_of"]
    negative_weight = (y == 0).to_numpy()
    at_rate = {r: pd.Series(np.where(negative_weight, 1 / r, 1.0)) for r in (0.2, 0.25)}
    plain = data_fingerprint(X, y, t)
    assert data_fingerprint(X, y, t, weight=pd.Series(np.ones(len(y)))) == plain
    assert data_fingerprint(X, y, t, weight=at_rate[0.2]) != plain
    assert data_fingerprint(X, y, t, weight=at_rate[0.2]) != data_fingerprint(
        X, y, t, weight=at_rate[0.25])
    assert data_fingerprint(X, y, t, weight=at_rate[0.2]) == data_fingerprint(
        X, y, t, weight=at_rate[0.2])


# -- a down-sampled panel against its full table ------------------------------------------------
# 5,000 households x 12 months (60,000 rows, ~3% positives); negatives kept with probability
# R = 0.2 by a hash of (household, month), as the feature engine does. Tolerances are about
# bias + 3 SD of the differences measured over 11 hash salts (this one among them; test
# block: 5,000 rows, 146 positives), quoted where they are used.

R = 0.2
SAMPLED_CONFIG = {"num_threads": 1, "learning_rate": 0.1, "n_estimators": 300,
                  "early_stopping_rounds": 30, "min_child_samples": 50}


def _fit(frame: pd.DataFrame, weight: pd.Series | None) -> FitResult:
    return fit_evaluate(frame[feature_columns(frame)], frame["label"], frame["as_of"],
                        config=TrainConfig(**SAMPLED_CONFIG),
                        household=frame["household_key"], weight=weight)


@dataclass(frozen=True)
class Sampled:
    full: FitResult  # the whole table
    weighted: FitResult  # the down-sampled table, kept negatives weighted 1/R
    unweighted: FitResult  # the same sample without its weights
    base_rate: float  # the full table's positive rate in the test block


@pytest.fixture(scope="module")
def sampled() -> Sampled:
    panel = make_panel(5000, 12, n_features=10, positive_rate=0.03, seed=7)
    hashed = pd.util.hash_pandas_object(panel[["household_key", "as_of"]], index=False,
                                        hash_key="doudi-sample-000").to_numpy()
    keep = (panel["label"] == 1).to_numpy() | (hashed % 1_000_000 / 1e6 < R)
    sample = panel[keep].reset_index(drop=True)
    weight = pd.Series(np.where(sample["label"] == 1, 1.0, 1 / R))
    full = _fit(panel, None)
    return Sampled(full, _fit(sample, weight), _fit(sample, None),
                   float(panel["label"].to_numpy()[full.test_mask].mean()))


def test_weights_keep_the_calibrated_probability_at_the_population_rate(
        sampled: Sampled) -> None:
    full, weighted, unweighted = sampled.full, sampled.weighted, sampled.unweighted
    base_rate = sampled.base_rate
    assert weighted.test_weight is not None
    weighted_mean = float(np.average(weighted.test_probability, weights=weighted.test_weight))
    # Measured: weighted mean - base rate 0.0042 +- 0.0022 (the full table's own model is
    # 0.0032 above: out-of-time drift), weighted - full model's mean 0.0010 +- 0.0022.
    assert abs(weighted_mean - base_rate) < 0.011
    assert abs(weighted_mean - full.test_metrics["mean_predicted"]) < 0.0075
    assert weighted.test_metrics["mean_predicted"] == pytest.approx(weighted_mean)
    # Without the weights the model is calibrated to the sample (~14% positives), not the
    # population (~3%): about five times too high.
    assert unweighted.test_probability.mean() > 3 * base_rate
    assert abs(unweighted.test_probability.mean() - base_rate) > 0.08
    # The booster itself, before calibration (which could hide an unweighted booster): its
    # raw sigmoid's mean on the test block (measured over 4 salts: weighted 0.033-0.035,
    # unweighted 0.13-0.14, full table 0.031).
    raw = {name: float(r.fold_metrics.query("scorer == 'lightgbm_raw' and is_test")
                       .iloc[0]["mean_predicted"])
           for name, r in (("full", full), ("w", weighted), ("u", unweighted))}
    assert abs(raw["w"] - raw["full"]) < 0.008
    assert raw["u"] > 3 * base_rate
    # The logistic baseline's sample_weight does the same for it (measured: weighted - full
    # 0.0003 +- 0.0016).
    logistic = {name: float(r.comparison.set_index("scorer")["mean_predicted"].loc["logistic"])
                for name, r in (("full", full), ("w", weighted), ("u", unweighted))}
    assert abs(logistic["w"] - logistic["full"]) < 0.0055
    assert logistic["u"] > 3 * base_rate
    # What the model card reads: rows kept, population represented.
    assert weighted.data is not None and full.data is not None
    assert weighted.data.rows < 0.3 * full.data.rows
    assert weighted.data.represented_rows == pytest.approx(full.data.rows, rel=0.02)
    assert weighted.data.represented_positives == full.data.positives


def test_weighted_ranking_metrics_estimate_the_full_tables(sampled: Sampled) -> None:
    f, w, u = (r.test_metrics for r in (sampled.full, sampled.weighted, sampled.unweighted))
    # Measured (weighted fit - full fit): ROC-AUC +0.004 +- 0.0075, PR-AUC +0.002 +- 0.022,
    # precision@5% -0.016 +- 0.020. Most of it is the test block's own sampling: the full
    # model's scores on 50 samples of its test block gave PR-AUC +- 0.021, precision +- 0.011.
    assert abs(w["roc_auc"] - f["roc_auc"]) < 0.027
    assert abs(w["pr_auc"] - f["pr_auc"]) < 0.07
    assert abs(w["precision_at_k"] - f["precision_at_k"]) < 0.076
    assert w["represented"] == pytest.approx(f["n"], rel=0.03)
    # Unweighted the sample's PR-AUC and precision describe a world with 5x the positives.
    assert u["pr_auc"] - f["pr_auc"] > 0.2
    assert u["precision_at_k"] - f["precision_at_k"] > 0.25


def test_the_gate_judges_a_sampled_test_block_by_its_weights() -> None:
    """Calibrated on the roll, a negative-down-sampled block looks miscalibrated unweighted
    (its kept rows are richer in positives); with its weights the gate sees the roll."""
    from training.gate import GateConfig, _ece_check, _top_band_check

    rng = np.random.default_rng(5)
    p = np.clip(rng.beta(0.6, 14.0, 40_000), 1e-4, 0.95)
    y = (rng.random(len(p)) < p).astype(np.float64)
    keep = (y == 1) | (rng.random(len(p)) < 0.2)
    ps, ys = p[keep], y[keep]
    w = np.where(ys == 1, 1.0, 5.0)
    config = GateConfig(max_ece_excess=0.02, top_band_ratio=(0.8, 1.25))
    assert not _top_band_check(ys, ps, config, 5.0)[0]
    assert _top_band_check(ys, ps, config, 5.0, w)[0]
    assert not _ece_check(ys, ps, config, 20)[0]
    assert _ece_check(ys, ps, config, 20, w)[0]
    # constant weights are no weights
    assert _top_band_check(ys, ps, config, 5.0, np.full(len(ys), 3.0))[1] == \
        _top_band_check(ys, ps, config, 5.0)[1]
