"""Evaluation metrics as pure functions of labels and scores (hand-testable, no model needed).

Conventions: `y` is 0/1, `p` a score (probability for Brier/ECE/slope; any monotone score
for the ranking metrics). "Top k%" flags the ceil(k/100 * n) highest scores; ties are
broken by row order so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

ArrayLike = np.ndarray | pd.Series | list[float] | list[int]


def _arrays(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.shape != p_arr.shape or y_arr.ndim != 1:
        raise ValueError(f"y and p must be 1-D of equal length, got {y_arr.shape}, {p_arr.shape}")
    return y_arr, p_arr


def _both_classes(y: np.ndarray) -> bool:
    return bool(len(y) and 0 < y.sum() < len(y))


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """ROC-AUC; NaN when only one class is present."""
    y_arr, p_arr = _arrays(y, p)
    return float(roc_auc_score(y_arr, p_arr)) if _both_classes(y_arr) else math.nan


def pr_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives."""
    y_arr, p_arr = _arrays(y, p)
    return float(average_precision_score(y_arr, p_arr)) if y_arr.sum() > 0 else math.nan


def top_k_count(n: int, k_pct: float) -> int:
    """How many rows "top k%" flags out of n (at least one when n > 0)."""
    if not 0 < k_pct <= 100:
        raise ValueError(f"k_pct must be in (0, 100], got {k_pct}")
    return min(n, max(1, math.ceil(n * k_pct / 100.0 - 1e-9))) if n else 0


def top_k_mask(p: ArrayLike, k_pct: float) -> np.ndarray:
    """Boolean mask of the top k% scores (stable: earlier rows win ties)."""
    p_arr = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p_arr, kind="stable")
    mask = np.zeros(len(p_arr), dtype=bool)
    mask[order[: top_k_count(len(p_arr), k_pct)]] = True
    return mask


def top_k_mask_by_period(p: ArrayLike, period: ArrayLike | pd.Series, k_pct: float
                         ) -> np.ndarray:
    """Top k% within each period (how caseworkers see a monthly list)."""
    p_arr = np.asarray(p, dtype=np.float64)
    codes = pd.factorize(pd.Series(np.asarray(period)))[0]
    mask = np.zeros(len(p_arr), dtype=bool)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        mask[rows] = top_k_mask(p_arr[rows], k_pct)
    return mask


def precision_at_k(y: ArrayLike, p: ArrayLike, k_pct: float) -> float:
    y_arr, p_arr = _arrays(y, p)
    flagged = top_k_mask(p_arr, k_pct)
    return float(y_arr[flagged].mean()) if flagged.any() else math.nan


def recall_at_k(y: ArrayLike, p: ArrayLike, k_pct: float) -> float:
    y_arr, p_arr = _arrays(y, p)
    positives = y_arr.sum()
    return float(y_arr[top_k_mask(p_arr, k_pct)].sum() / positives) if positives else math.nan


def brier(y: ArrayLike, p: ArrayLike) -> float:
    y_arr, p_arr = _arrays(y, p)
    return float(np.mean((p_arr - y_arr) ** 2)) if len(y_arr) else math.nan


def calibration_curve(y: ArrayLike, p: ArrayLike, n_bins: int = 20) -> pd.DataFrame:
    """Equal-frequency bins: rows sorted by p (stable) and split into n_bins near-equal runs.

    Columns: bin, n, mean_predicted, observed_rate, p_min, p_max.
    """
    y_arr, p_arr = _arrays(y, p)
    order = np.argsort(p_arr, kind="stable")
    rows = []
    for b, idx in enumerate(np.array_split(order, min(n_bins, max(len(order), 1)))):
        if len(idx) == 0:
            continue
        rows.append({"bin": b, "n": len(idx), "mean_predicted": float(p_arr[idx].mean()),
                     "observed_rate": float(y_arr[idx].mean()),
                     "p_min": float(p_arr[idx].min()), "p_max": float(p_arr[idx].max())})
    return pd.DataFrame(rows, columns=["bin", "n", "mean_predicted", "observed_rate",
                                       "p_min", "p_max"])


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 20) -> float:
    """ECE over equal-frequency bins: sum_b n_b/N * |observed_rate_b - mean_predicted_b|."""
    curve = calibration_curve(y, p, n_bins)
    if curve.empty:
        return math.nan
    weights = curve["n"] / curve["n"].sum()
    return float((weights * (curve["observed_rate"] - curve["mean_predicted"]).abs()).sum())


def calibration_slope(y: ArrayLike, p: ArrayLike, eps: float = 1e-6) -> tuple[float, float]:
    """(slope, intercept) of an unpenalised logistic regression of y on logit(p).

    A slope of 1 and intercept of 0 is perfect; slope < 1 means over-confident scores.
    Fitted by Newton-Raphson on two parameters (no regularisation, unlike sklearn's default).
    """
    y_arr, p_arr = _arrays(y, p)
    if not _both_classes(y_arr):
        return math.nan, math.nan
    p_clip = np.clip(p_arr, eps, 1 - eps)
    z = np.log(p_clip / (1 - p_clip))
    design = np.column_stack([np.ones_like(z), z])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(y_arr * eta - np.logaddexp(0.0, eta)))

    beta = np.array([0.0, 1.0])
    current = loglik(beta)
    for _ in range(100):
        mu = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -700, 700)))
        w = np.clip(mu * (1 - mu), 1e-12, None)
        grad = design.T @ (y_arr - mu)
        hess = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return math.nan, math.nan
        # Step halving keeps Newton from overshooting on well-separated data.
        for _halving in range(30):
            candidate = loglik(beta + step)
            if candidate >= current - 1e-12:
                break
            step = step / 2
        beta, current = beta + step, candidate
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[1]), float(beta[0])


def month_ordinal(time: pd.Series | np.ndarray) -> np.ndarray:
    """Months as integers (year*12 + month) for datetimes; numeric periods pass through."""
    series = pd.Series(time)
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(series.dtype, pd.PeriodDtype):
        if isinstance(series.dtype, pd.PeriodDtype):
            series = series.dt.to_timestamp()
        return (series.dt.year * 12 + series.dt.month - 1).to_numpy(dtype=np.int64)
    return series.to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class LeadTime:
    """How early households were flagged before they were identified."""

    identified: int  # households identified (with an identification time)
    flagged_before: int  # ... of which flagged at or before identification
    share_flagged_before: float
    median_months: float  # median lead over households flagged before identification
    mean_months: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lead_times(
    household: ArrayLike | pd.Series,
    time: pd.Series | np.ndarray,
    flagged: ArrayLike,
    identified_at: Mapping[Any, Any] | pd.Series,
) -> pd.Series:
    """Per identified household: identification time minus its first flag time (months).

    Only flags at or before identification count; households identified but never flagged
    before get NaN. `time` and `identified_at` use the same unit (datetimes become months).
    """
    ident = pd.Series(identified_at)
    ident_ord = pd.Series(month_ordinal(ident.to_numpy()), index=ident.index)
    frame = pd.DataFrame({"household": np.asarray(household), "t": month_ordinal(np.asarray(time)),
                          "flagged": np.asarray(flagged, dtype=bool)})
    frame = frame[frame["flagged"] & frame["household"].isin(ident_ord.index)]
    frame = frame[frame["t"].to_numpy() <= ident_ord.reindex(frame["household"]).to_numpy()]
    first_flag = frame.groupby("household")["t"].min()
    return (ident_ord - first_flag.reindex(ident_ord.index)).rename("lead_months")


def lead_time_summary(leads: pd.Series) -> LeadTime:
    hit = leads.dropna()
    n = len(leads)
    return LeadTime(
        identified=n,
        flagged_before=len(hit),
        share_flagged_before=float(len(hit) / n) if n else math.nan,
        median_months=float(hit.median()) if len(hit) else math.nan,
        mean_months=float(hit.mean()) if len(hit) else math.nan,
    )


def identification_from_labels(
    household: ArrayLike | pd.Series, time: pd.Series | np.ndarray, y: ArrayLike
) -> pd.Series:
    """Approximate identification month from horizon labels: last positive as-of + 1 month.

    A label at as-of T is 1 iff identification falls in (T, T+H], and identified households
    leave scope, so the last positive as-of is the month before identification.
    """
    frame = pd.DataFrame({"household": np.asarray(household), "t": month_ordinal(np.asarray(time)),
                          "y": np.asarray(y)})
    return frame[frame["y"] == 1].groupby("household")["t"].max() + 1


RANKING_METRICS = ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k")


def ranking_summary(y: ArrayLike, score: ArrayLike, k_pct: float) -> dict[str, float]:
    """The ranking metrics of any score (e.g. the raw margin): RANKING_METRICS."""
    y_arr, s_arr = _arrays(y, score)
    return {
        "roc_auc": roc_auc(y_arr, s_arr),
        "pr_auc": pr_auc(y_arr, s_arr),
        "precision_at_k": precision_at_k(y_arr, s_arr, k_pct) if len(y_arr) else math.nan,
        "recall_at_k": recall_at_k(y_arr, s_arr, k_pct) if len(y_arr) else math.nan,
    }


def binary_summary(y: ArrayLike, p: ArrayLike, k_pct: float, n_bins: int = 20,
                   probabilities: bool = True) -> dict[str, float]:
    """The headline metrics; calibration metrics only when `p` are probabilities."""
    y_arr, p_arr = _arrays(y, p)
    out = {"n": float(len(y_arr)), "positives": float(y_arr.sum()),
           **ranking_summary(y_arr, p_arr, k_pct)}
    if probabilities:
        slope, intercept = calibration_slope(y_arr, p_arr)
        out.update({
            "brier": brier(y_arr, p_arr),
            "ece": expected_calibration_error(y_arr, p_arr, n_bins),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
            "mean_predicted": float(p_arr.mean()) if len(p_arr) else math.nan,
        })
    return out
