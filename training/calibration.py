"""Fitting probability calibrators on out-of-time raw margins (applying them lives in the artifact).

Both methods map the LightGBM raw margin (log-odds) to a probability:
isotonic = a monotone step-linear map (sklearn IsotonicRegression, thresholds kept as JSON);
Platt = sigmoid(a * margin + b), fitted by unpenalised logistic regression.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression

from doudi.model_artifact import Calibrator
from training import metrics

CalibrationMethod = Literal["isotonic", "platt", "identity"]


def fit_platt(margin: np.ndarray, y: np.ndarray) -> Calibrator:
    """Platt scaling. Logistic regression of y on the margin, via the calibration-slope fit."""
    # calibration_slope regresses y on logit(p); passing p = sigmoid(margin) makes that the margin.
    p = 1.0 / (1.0 + np.exp(-np.clip(margin, -30, 30)))
    a, b = metrics.calibration_slope(y, p, eps=1e-13)
    if math.isnan(a):
        return Calibrator("identity")
    return Calibrator("platt", a=a, b=b)


def fit_isotonic(margin: np.ndarray, y: np.ndarray, max_points: int = 2000) -> Calibrator:
    """Isotonic regression on the margin; thresholds thinned to at most `max_points` knots."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(np.asarray(margin, dtype=np.float64), np.asarray(y, dtype=np.float64))
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    yy = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if len(x) > max_points:
        # Keep the step corners evenly along the curve; interpolation stays monotone.
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, yy = x[keep], yy[keep]
    if len(x) < 2:
        return Calibrator("identity")
    return Calibrator("isotonic", x=tuple(x.tolist()), y=tuple(yy.tolist()))


def fit_calibrator(method: CalibrationMethod, margin: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "isotonic":
        return fit_isotonic(margin, y)
    if method == "platt":
        return fit_platt(margin, y)
    return Calibrator("identity")


def choose_calibration(
    fit_margin: np.ndarray, fit_y: np.ndarray, eval_margin: np.ndarray, eval_y: np.ndarray,
    n_bins: int = 20,
) -> tuple[CalibrationMethod, dict[str, dict[str, float]]]:
    """Fit each method on earlier out-of-time margins, score on a later period.

    Chooses the lowest Brier score; ECE is reported alongside (and breaks exact ties).
    """
    scores: dict[str, dict[str, float]] = {}
    for method in ("isotonic", "platt", "identity"):
        cal = fit_calibrator(method, fit_margin, fit_y)
        p = cal.apply(eval_margin)
        scores[method] = {
            "brier": metrics.brier(eval_y, p),
            "ece": metrics.expected_calibration_error(eval_y, p, n_bins),
        }
    # "identity" (the raw LightGBM probability) is reported for reference, not chosen.
    best = min(("isotonic", "platt"), key=lambda m: (scores[m]["brier"], scores[m]["ece"]))
    return best, scores  # type: ignore[return-value]
