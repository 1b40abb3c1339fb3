"""Calibration fitted out of time: monotone, and it repairs a miscalibrated score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import calibration, metrics


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
