"""Fitting probability calibrators on out-of-time raw margins (applying them lives in the artifact).

Every method maps the LightGBM raw margin (log-odds) to a probability, and the ones training
chooses are STRICTLY increasing, so calibration never ties households the margin separates
(serving ranks by the margin anyway; the calibrated risk is what is shown and thresholded):
isotonic_logit = isotonic regression's blocks, interpolated in log-odds between block centres,
  linear log-odds tails (see `fit_isotonic_logit`);
Platt = sigmoid(a * margin + b), fitted by unpenalised logistic regression.
The legacy `isotonic` step-linear map is kept for reference and explicit use only: its flat
steps tied 2,666 demo households into 23 risks and cost 0.02 ROC-AUC.

Every fit takes optional sample weights `w` (rows standing for w population rows, e.g. 1/r
for negatives kept with probability r): the calibrator then maps margins to the
population's probability, not the down-sampled table's.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression

from doudi.model_artifact import Calibrator
from training import metrics

CalibrationMethod = Literal["isotonic_logit", "platt", "identity", "isotonic"]
# Chosen out of time among these (all strictly increasing); the rest are reported for reference.
ELIGIBLE: tuple[CalibrationMethod, ...] = ("isotonic_logit", "platt")
# Smallest log-odds slope anywhere (per margin unit): keeps neighbouring knots apart by more
# than float resolution. Tail slopes come from Platt, clipped to [TAIL_MIN, TAIL_MAX].
MIN_SLOPE = 1e-3
TAIL_MIN, TAIL_MAX = 0.05, 3.0
# Block rates are shrunk towards the Platt curve with this many pseudo-observations, so a
# block without positives (or without negatives) gets a finite log-odds.
PRIOR_WEIGHT = 1.0
# Knot probabilities stay inside [P_FLOOR, P_CEIL] (log-odds -13.8 .. 9.2). The ceiling is
# lower because floats are coarse near 1: a log-odds beyond ~30 rounds to a tie at 1.0.
P_FLOOR, P_CEIL = 1e-6, 1 - 1e-4


def fit_platt(margin: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Calibrator:
    """Platt scaling. (Weighted) logistic regression of y on the margin, via the
    calibration-slope fit."""
    w = metrics.check_weights(w, len(np.asarray(y)))
    # calibration_slope regresses y on logit(p); passing p = sigmoid(margin) makes that the margin.
    p = 1.0 / (1.0 + np.exp(-np.clip(margin, -30, 30)))
    a, b = metrics.calibration_slope(y, p, eps=1e-13, w=w)
    if math.isnan(a) or a <= 0:
        # A non-increasing fit (no signal, or an inverted one) would tie or reverse ranks.
        return Calibrator("identity")
    if a > TAIL_MAX:
        # Separable data send the unpenalised slope to infinity, and the probabilities to
        # exact 0/1 ties; cap it and refit the intercept to the observed rate.
        a = TAIL_MAX
        rate = float(np.mean(y)) if w is None else float(np.average(y, weights=w))
        b = _intercept_given_slope(np.asarray(margin, dtype=np.float64), rate, a, w)
    return Calibrator("platt", a=a, b=b)


def _intercept_given_slope(margin: np.ndarray, rate: float, a: float,
                           w: np.ndarray | None = None) -> float:
    """b with (weighted) mean(sigmoid(a * margin + b)) == rate (the intercept's score
    equation)."""
    lo, hi = -60.0, 60.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.average(_sigmoid(a * margin + mid), weights=w) > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def fit_isotonic(margin: np.ndarray, y: np.ndarray, max_points: int = 2000,
                 w: np.ndarray | None = None) -> Calibrator:
    """LEGACY step-linear isotonic map (ties households; reference and explicit use only)."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(np.asarray(margin, dtype=np.float64), np.asarray(y, dtype=np.float64),
            sample_weight=metrics.check_weights(w, len(np.asarray(y))))
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    yy = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if len(x) > max_points:
        # Keep the step corners evenly along the curve; interpolation stays monotone.
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, yy = x[keep], yy[keep]
    if len(x) < 2:
        return Calibrator("identity")
    return Calibrator("isotonic", x=tuple(x.tolist()), y=tuple(yy.tolist()))


def fit_isotonic_logit(margin: np.ndarray, y: np.ndarray, max_points: int = 2000,
                       w: np.ndarray | None = None) -> Calibrator:
    """Isotonic regression made strictly increasing: interpolate its blocks in log-odds.

    Weighted (`w`), every count below is a sum of weights: a block's rate and mean margin
    are weighted means, and the pseudo-observation weighs as one population row.

    1. Pool-adjacent-violators on (margin, y) gives blocks of consecutive margins with
       non-decreasing positive rates.
    2. Each block becomes one knot: x = the block's mean margin, rate = its positive rate
       shrunk towards the Platt curve at x by PRIOR_WEIGHT pseudo-observations (finite
       log-odds for all-0 or all-1 blocks), clipped to [P_FLOOR, 1 - P_FLOOR].
    3. Knot log-odds are forced up by at least MIN_SLOPE per margin unit (a no-op unless
       shrinkage made two knots equal), so the map is strictly increasing between knots.
    4. Beyond the end knots the log-odds continue with the Platt slope (clipped), not flat.
    """
    m = np.asarray(margin, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    weights = metrics.check_weights(w, len(yy))
    if weights is not None:
        # Rows standing for nobody carry no evidence (and would make empty blocks).
        m, yy, weights = m[weights > 0], yy[weights > 0], weights[weights > 0]
    platt = fit_platt(m, yy, weights)
    slope = platt.a if platt.method == "platt" and math.isfinite(platt.a) else 1.0
    tail = float(np.clip(slope, TAIL_MIN, TAIL_MAX))
    if len(m) < 2 or np.ptp(m) == 0:
        return platt if platt.method == "platt" and platt.a > 0 else Calibrator("identity")
    order = np.argsort(m, kind="stable")
    m, yy = m[order], yy[order]
    fitted = IsotonicRegression(increasing=True).fit_transform(
        m, yy, sample_weight=None if weights is None else weights[order])
    # A block: a run of equal fitted values (PAVA pools violators into one value).
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
    if weights is None:
        counts = np.diff(np.r_[starts, len(m)])
        x = np.add.reduceat(m, starts) / counts
        positives = np.add.reduceat(yy, starts)
        total: float = len(m)
    else:
        ww = weights[order]
        counts = np.add.reduceat(ww, starts)
        x = np.add.reduceat(ww * m, starts) / counts
        positives = np.add.reduceat(ww * yy, starts)
        total = float(ww.sum())
    if len(x) > max_points:
        # Merge neighbouring blocks into max_points groups of near-equal size (weight).
        group = np.minimum(((np.cumsum(counts) - 1) * max_points // total).astype(np.int64),
                           max_points - 1)
        sums = np.bincount(group, weights=x * counts)
        counts_g = np.bincount(group, weights=counts)
        positives = np.bincount(group, weights=positives)[counts_g > 0]
        x = (sums[counts_g > 0] / counts_g[counts_g > 0])
        counts = counts_g[counts_g > 0]
    keep = np.r_[True, np.diff(x) > 0]  # float rounding of block means (pathological data)
    x, counts, positives = x[keep], counts[keep], positives[keep]
    prior = platt.apply(x) if platt.method == "platt" else _sigmoid(x)
    rate = (positives + PRIOR_WEIGHT * prior) / (counts + PRIOR_WEIGHT)
    rate = np.clip(rate, P_FLOOR, P_CEIL)
    z = np.log(rate / (1 - rate))
    for i in range(1, len(z)):  # strictly increasing, by at least MIN_SLOPE per margin unit
        z[i] = max(z[i], z[i - 1] + MIN_SLOPE * (x[i] - x[i - 1]),
                   float(np.nextafter(z[i - 1], np.inf)))
    cal = Calibrator("isotonic_logit", x=tuple(x.tolist()), z=tuple(z.tolist()),
                     slope_low=tail, slope_high=tail)
    cal.check()
    return cal


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def fit_calibrator(method: CalibrationMethod, margin: np.ndarray, y: np.ndarray,
                   w: np.ndarray | None = None) -> Calibrator:
    """Fit `method` on (margin, y), weighted by `w` when given."""
    if method == "isotonic_logit":
        return fit_isotonic_logit(margin, y, w=w)
    if method == "isotonic":
        return fit_isotonic(margin, y, w=w)
    if method == "platt":
        return fit_platt(margin, y, w)
    return Calibrator("identity")


def choose_calibration(
    fit_margin: np.ndarray, fit_y: np.ndarray, eval_margin: np.ndarray, eval_y: np.ndarray,
    n_bins: int = 20, fit_w: np.ndarray | None = None, eval_w: np.ndarray | None = None,
) -> tuple[CalibrationMethod, dict[str, dict[str, float]]]:
    """Fit each method on earlier out-of-time margins, score on a later period (each
    weighted by its own weights when given).

    Chooses the lowest Brier score among the strictly increasing methods (ELIGIBLE); ECE
    breaks exact ties. ROC-AUC is reported too: it equals the margin's for every eligible
    method, and shows what the legacy step map's ties cost.
    """
    scores: dict[str, dict[str, float]] = {}
    for method in ("isotonic_logit", "platt", "identity", "isotonic"):
        cal = fit_calibrator(method, fit_margin, fit_y, fit_w)
        p = cal.apply(eval_margin)
        scores[method] = {
            "brier": metrics.brier(eval_y, p, eval_w),
            "ece": metrics.expected_calibration_error(eval_y, p, n_bins, eval_w),
            "roc_auc": metrics.roc_auc(eval_y, p, eval_w),
        }
    # "identity" (the raw LightGBM probability) and the legacy step map are reported only.
    best = min(ELIGIBLE, key=lambda m: (scores[m]["brier"], scores[m]["ece"]))
    return best, scores
