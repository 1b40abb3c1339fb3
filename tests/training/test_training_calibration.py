"""Calibration fitted out of time: strictly increasing, it repairs a miscalibrated score, and
the gate refuses a calibrator that ties or reorders households."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doudi.model_artifact import Calibrator
from doudi.registry import Workspace
from training import calibration, gate, metrics, report, tracking
from training.core import TrainConfig, fit_evaluate
from training.synthetic import feature_columns, make_panel


def _miscalibrated(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Raw margins whose sigmoid is far too confident: true log-odds = 0.5 * margin - 2."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.5 * margin - 2)))).astype(float)
    return margin, y


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_improves_ece_out_of_sample(method: str) -> None:
    fit_m, fit_y = _miscalibrated(0)
    new_m, new_y = _miscalibrated(1)  # a later period from the same process
    raw_ece = metrics.expected_calibration_error(new_y, 1 / (1 + np.exp(-new_m)))
    cal = calibration.fit_calibrator(method, fit_m, fit_y)  # type: ignore[arg-type]
    cal_ece = metrics.expected_calibration_error(new_y, cal.apply(new_m))
    assert raw_ece > 0.1
    assert cal_ece < 0.02 < raw_ece / 5


def test_platt_recovers_the_true_map() -> None:
    margin, y = _miscalibrated(2, 50_000)
    cal = calibration.fit_platt(margin, y)
    assert cal.a == pytest.approx(0.5, abs=0.05) and cal.b == pytest.approx(-2.0, abs=0.1)


def test_choice_prefers_a_method_that_beats_raw() -> None:
    fit_m, fit_y = _miscalibrated(3)
    new_m, new_y = _miscalibrated(4)
    method, scores = calibration.choose_calibration(fit_m, fit_y, new_m, new_y)
    assert method in ("isotonic", "platt")
    assert scores[method]["brier"] < scores["identity"]["brier"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.floats(-50, 50), min_size=2, max_size=50))
def test_isotonic_map_is_monotone(seed: int, probes: list[float]) -> None:
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 3, 500)
    y = (rng.random(500) < 1 / (1 + np.exp(-margin))).astype(float)
    cal = calibration.fit_isotonic(margin, y, max_points=25)
    assert np.all(np.diff(cal.y) >= 0) and np.all(np.diff(cal.x) >= 0)
    out = cal.apply(np.sort(np.array(probes)))
    assert np.all(np.diff(out) >= -1e-15) and np.all((out >= 0) & (out <= 1))


# -- strictly increasing calibration (issue #10: calibration never creates ties) -------------

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _steppy(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Tree-like margins (a few hundred distinct values) with a 3% base rate."""
    rng = np.random.default_rng(seed)
    margin = np.round(rng.normal(-4, 1.2, n), 2)
    y = (rng.random(n) < _sigmoid(0.9 * margin + 0.2)).astype(float)
    return margin, y


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(30, 3000), centre=st.floats(-6, 1),
       spread=st.floats(0.05, 2), slope=st.floats(-0.5, 2.5), method=st.sampled_from(
           ["isotonic_logit", "platt", "auto"]), probes=st.lists(st.floats(0, 1), max_size=40))
def test_any_fitted_calibrator_is_strictly_increasing_inside_0_1(
        seed: int, n: int, centre: float, spread: float, slope: float, method: str,
        probes: list[float]) -> None:
    rng = np.random.default_rng(seed)
    margin = centre + spread * rng.standard_normal(n)
    y = (rng.random(n) < _sigmoid(slope * (margin - centre) - 2)).astype(float)
    if method == "auto":
        half = n // 2
        method, _ = calibration.choose_calibration(margin[:half], y[:half], margin[half:],
                                                   y[half:])
    cal = calibration.fit_calibrator(method, margin, y)  # type: ignore[arg-type]
    # A realistic range: the fitted margins and 3 log-odds beyond them, 0.001 apart at most.
    lo, hi = margin.min() - 3, margin.max() + 3
    grid = np.unique(np.r_[np.linspace(lo, hi, 20_001), lo + (hi - lo) * np.array(probes),
                           margin])
    grid = grid[np.r_[True, np.diff(grid) > 1e-6]]  # distinct beyond float resolution
    out = cal.apply(grid)
    assert np.all(np.diff(out) > 0), cal.method
    assert np.all((out > 0) & (out < 1))
    again = type(cal).from_json(cal.to_json())  # the artifact's JSON keeps it exactly
    np.testing.assert_array_equal(again.apply(grid), out)


def test_isotonic_logit_apply_hand_computed() -> None:
    cal = Calibrator("isotonic_logit", x=(0.0, 1.0), z=(-2.0, 0.0), slope_low=0.5,
                     slope_high=2.0)
    got = cal.apply(np.array([-2.0, 0.0, 0.5, 1.0, 3.0]))
    # below: -2 + 0.5*(-2) = -3; inside: linear; above: 0 + 2*(3-1) = 4
    np.testing.assert_allclose(got, _sigmoid(np.array([-3.0, -2.0, -1.0, 0.0, 4.0])),
                               rtol=1e-15)
    assert Calibrator.from_json(cal.to_json()) == cal


def test_legacy_isotonic_json_still_loads_and_applies() -> None:
    legacy = Calibrator.from_json({"method": "isotonic", "x": [-1, 1], "y": [0.1, 0.3]})
    np.testing.assert_allclose(legacy.apply(np.array([-2.0, 0.0, 2.0])), [0.1, 0.2, 0.3])


@pytest.mark.parametrize("bad", [
    {"z": [0.0, 0.0]},  # flat: would tie
    {"x": [1.0, 0.0]},
    {"slope_low": 0.0},
])
def test_a_non_increasing_isotonic_logit_is_refused_on_load(bad: dict) -> None:
    d = {"method": "isotonic_logit", "x": [0.0, 1.0], "z": [-1.0, 0.0], "slope_low": 1.0,
         "slope_high": 1.0, **bad}
    with pytest.raises(ValueError, match="isotonic_logit"):
        Calibrator.from_json(d)


def test_isotonic_logit_knots_are_the_pava_blocks() -> None:
    # PAVA on y = 0,1,0,1 pools the middle two: blocks {0}: 0/1, {1,2}: 1/2, {3}: 1/1.
    margin, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.0, 1.0])
    cal = calibration.fit_isotonic_logit(margin, y)
    assert cal.x == (0.0, 1.5, 3.0)
    platt = calibration.fit_platt(margin, y)
    prior = platt.apply(np.array(cal.x)) if platt.method == "platt" else _sigmoid(
        np.array(cal.x))
    # Each block's rate is shrunk towards the Platt curve by one pseudo-observation.
    expected = (np.array([0.0, 1.0, 1.0]) + prior) / (np.array([1.0, 2.0, 1.0]) + 1)
    np.testing.assert_allclose(_sigmoid(np.array(cal.z)), expected, rtol=1e-12)


def test_no_ties_where_the_step_map_tied() -> None:
    fit_m, fit_y = _steppy(0)
    new_m, new_y = _steppy(1)
    step = calibration.fit_isotonic(fit_m, fit_y)
    smooth = calibration.fit_isotonic_logit(fit_m, fit_y)
    distinct = len(np.unique(new_m))
    assert len(np.unique(step.apply(new_m))) < distinct / 3  # the legacy steps tie
    assert len(np.unique(smooth.apply(new_m))) == distinct
    assert metrics.roc_auc(new_y, smooth.apply(new_m)) == metrics.roc_auc(new_y, new_m)
    assert metrics.roc_auc(new_y, step.apply(new_m)) < metrics.roc_auc(new_y, new_m)
    # ... and it calibrates about as well as the steps out of sample.
    ece = {n: metrics.expected_calibration_error(new_y, c.apply(new_m))
           for n, c in (("step", step), ("smooth", smooth))}
    assert ece["smooth"] < ece["step"] + 0.005, ece


def test_choice_is_among_strictly_increasing_maps_only() -> None:
    fit_m, fit_y = _steppy(2)
    new_m, new_y = _steppy(3)
    method, scores = calibration.choose_calibration(fit_m, fit_y, new_m, new_y)
    assert method in calibration.ELIGIBLE == ("isotonic_logit", "platt")
    assert set(scores) == {"isotonic_logit", "platt", "identity", "isotonic"}
    for m in calibration.ELIGIBLE:
        assert scores[m]["roc_auc"] == pytest.approx(metrics.roc_auc(new_y, new_m), abs=1e-12)


# -- the gate refuses a calibrator that lowers ranking metrics ------------------------------

def _recorded(margin: np.ndarray, y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """What fit_evaluate records for the test block: after (plain) and before (margin_)."""
    out = metrics.binary_summary(y, prob, 5.0)
    out.update({f"margin_{k}": v for k, v in metrics.ranking_summary(y, margin, 5.0).items()})
    return out


def _gate(recorded: dict[str, float], prob: np.ndarray, y: np.ndarray) -> gate.GateDecision:
    # Baselines at chance: only the calibration check can refuse (the floor is
    # tests/hostile/test_gate_floor.py's).
    chance = {"roc_auc": 0.5, "pr_auc": float(y.mean())}
    return gate.decide(prob, y, pd.Series(np.zeros(len(y))), recorded, None, None, None,
                       gate.GateConfig(), 5.0, baselines={"rules": chance, "logistic": chance})


def test_gate_refuses_a_rank_destroying_step_calibrator() -> None:
    margin, y = _steppy(4, 5000)
    # A deliberately rank-destroying calibrator: three flat steps.
    step = Calibrator("isotonic", x=(-5.0, -4.99, -3.0, -2.99), y=(0.01, 0.03, 0.03, 0.1))
    decision = _gate(_recorded(margin, y, step.apply(margin)), step.apply(margin), y)
    assert not decision.promote and decision.window == "first-version"
    refusal = [r for r in decision.reasons if r.startswith("calibration lowers roc_auc")]
    assert len(refusal) == 1 and "kept as challenger" in refusal[0]

    smooth = calibration.fit_isotonic_logit(margin, y)
    recorded = _recorded(margin, y, smooth.apply(margin))
    assert recorded["roc_auc"] == pytest.approx(recorded["margin_roc_auc"], abs=1e-9)
    assert recorded["precision_at_k"] == recorded["margin_precision_at_k"]
    decision = _gate(recorded, smooth.apply(margin), y)
    assert decision.promote, decision.reasons
    assert any(r.startswith("calibration keeps precision_at_k") for r in decision.reasons)


def test_track_run_keeps_a_step_calibrated_version_challenger(
        mlflow_store: tuple[str, str]) -> None:
    """End to end: the legacy step map ties test households, so the version is refused."""
    panel = make_panel(n_households=600, n_months=9, n_features=6, positive_rate=0.08, seed=5)
    X, y, t = panel[feature_columns(panel)], panel["label"], panel["as_of"]
    config = TrainConfig(num_threads=1, learning_rate=0.1, n_estimators=60,
                         early_stopping_rounds=10, min_child_samples=20,
                         logistic_baseline=False, calibration="isotonic")
    result = fit_evaluate(X, y, t, config=config)
    m = result.test_metrics
    assert m["roc_auc"] < m["margin_roc_auc"] - 1e-9  # the steps cost ranking
    outcome = tracking.track_run(result, X, y, t, as_of="2023-09-30",
                                 workspace=Workspace.from_key(b"k" * 32),
                                 tracking_uri=mlflow_store[0],
                                 artifact_location=mlflow_store[1])
    assert outcome.gate is not None and not outcome.gate.promote
    assert outcome.aliases == ["challenger"]
    card = report.model_card(result, "2023-09-30", outcome.gate, model_name="m")
    assert "## Calibration: before and after (test block)" in card
    assert "kept as challenger" in card and "calibration lowers roc_auc" in card
    run_metrics = tracking._metrics(result)
    assert run_metrics["test_margin_roc_auc"] == m["margin_roc_auc"]
    assert run_metrics["test_roc_auc"] < run_metrics["test_margin_roc_auc"]
