"""Evaluation metrics as pure functions of labels and scores (hand-testable, no model needed).

Conventions: `y` is 0/1, `p` a score (probability for Brier/ECE/slope; any monotone score
for the ranking metrics). "Top k%" flags the ceil(k/100 * n) highest scores; ties are
broken by row order so results are deterministic.

Every metric takes optional sample weights `w` (non-negative: how many population rows a
row stands for, e.g. 1/r for a negative kept with probability r), so a down-sampled table
estimates the full population's figures. Weighted, "top k%" takes rows in score order until
their weight reaches k% of the total weight, and the calibration bins hold equal weight.
`w=None` is the unweighted definition, unchanged; weights are scale-free (w and c*w give
the same metrics).
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


def check_weights(w: ArrayLike | pd.Series | None, n: int, name: str = "w"
                  ) -> np.ndarray | None:
    """`w` as float64 of length n, finite and non-negative (None stays None); else a
    one-line ValueError."""
    if w is None:
        return None
    try:
        w_arr = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers (sample weights)") from None
    if w_arr.shape != (n,):
        raise ValueError(f"{name} has shape {w_arr.shape}, need ({n},): one weight per row")
    bad = int((~np.isfinite(w_arr) | (w_arr < 0)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} missing, infinite or negative weight(s): "
                         "sample weights must be finite and >= 0")
    return w_arr


def _weighted(y: np.ndarray, w: ArrayLike | pd.Series | None) -> np.ndarray | None:
    return check_weights(w, len(y))


def _both_classes(y: np.ndarray, w: np.ndarray | None = None) -> bool:
    if w is not None:
        return bool(np.sum(w * y) > 0 and np.sum(w * (1 - y)) > 0)
    return bool(len(y) and 0 < y.sum() < len(y))


def _mean(values: np.ndarray, w: np.ndarray | None) -> float:
    """(Weighted) mean; NaN for no rows or no weight."""
    if w is None:
        return float(values.mean()) if len(values) else math.nan
    total = float(w.sum())
    return float(np.sum(w * values) / total) if total > 0 else math.nan


def roc_auc(y: ArrayLike, p: ArrayLike, w: ArrayLike | None = None) -> float:
    """ROC-AUC; NaN when only one class is present (or carries weight)."""
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    if not _both_classes(y_arr, w_arr):
        return math.nan
    return float(roc_auc_score(y_arr, p_arr, sample_weight=w_arr))


def pr_auc(y: ArrayLike, p: ArrayLike, w: ArrayLike | None = None) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives."""
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    if (y_arr.sum() if w_arr is None else np.sum(w_arr * y_arr)) <= 0:
        return math.nan
    return float(average_precision_score(y_arr, p_arr, sample_weight=w_arr))


def top_k_count(n: int, k_pct: float) -> int:
    """How many rows "top k%" flags out of n (at least one when n > 0)."""
    if not 0 < k_pct <= 100:
        raise ValueError(f"k_pct must be in (0, 100], got {k_pct}")
    return min(n, max(1, math.ceil(n * k_pct / 100.0 - 1e-9))) if n else 0


def _weighted_top_count(w: np.ndarray, k_pct: float) -> int:
    """How many rows, in score order, until their weight reaches k% of the total (>= 1).

    The tolerance (1e-9 of a mean weight, as `top_k_count` allows 1e-9 of a row) keeps
    float sums on an exact boundary from taking one row more; with equal weights this is
    `top_k_count`'s count.
    """
    n = len(w)
    if not 0 < k_pct <= 100:
        raise ValueError(f"k_pct must be in (0, 100], got {k_pct}")
    if not n:
        return 0
    total = float(w.sum())
    target = total * k_pct / 100.0 - 1e-9 * total / n
    reached = int(np.searchsorted(np.cumsum(w), target, side="left")) + 1
    return min(n, max(1, reached))


def top_k_mask(p: ArrayLike, k_pct: float, w: ArrayLike | None = None) -> np.ndarray:
    """Boolean mask of the top k% scores (stable: earlier rows win ties); weighted, the
    highest-scored rows until their weight reaches k% of the total weight."""
    p_arr = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p_arr, kind="stable")
    mask = np.zeros(len(p_arr), dtype=bool)
    w_arr = check_weights(w, len(p_arr))
    count = (top_k_count(len(p_arr), k_pct) if w_arr is None
             else _weighted_top_count(w_arr[order], k_pct))
    mask[order[:count]] = True
    return mask


def top_k_mask_by_period(p: ArrayLike, period: ArrayLike | pd.Series, k_pct: float,
                         w: ArrayLike | None = None) -> np.ndarray:
    """Top k% within each period (how caseworkers see a monthly list)."""
    p_arr = np.asarray(p, dtype=np.float64)
    w_arr = check_weights(w, len(p_arr))
    codes = pd.factorize(pd.Series(np.asarray(period)))[0]
    mask = np.zeros(len(p_arr), dtype=bool)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        mask[rows] = top_k_mask(p_arr[rows], k_pct, None if w_arr is None else w_arr[rows])
    return mask


def precision_at_k(y: ArrayLike, p: ArrayLike, k_pct: float,
                   w: ArrayLike | None = None) -> float:
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    flagged = top_k_mask(p_arr, k_pct, w_arr)
    if not flagged.any():
        return math.nan
    return _mean(y_arr[flagged], None if w_arr is None else w_arr[flagged])


def recall_at_k(y: ArrayLike, p: ArrayLike, k_pct: float, w: ArrayLike | None = None) -> float:
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    flagged = top_k_mask(p_arr, k_pct, w_arr)
    if w_arr is None:
        positives = y_arr.sum()
        return float(y_arr[flagged].sum() / positives) if positives else math.nan
    positives = float(np.sum(w_arr * y_arr))
    return float(np.sum((w_arr * y_arr)[flagged]) / positives) if positives else math.nan


def brier(y: ArrayLike, p: ArrayLike, w: ArrayLike | None = None) -> float:
    y_arr, p_arr = _arrays(y, p)
    return _mean((p_arr - y_arr) ** 2, _weighted(y_arr, w))


def _weighted_bins(order: np.ndarray, w: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Rows in score order cut into n_bins runs of near-equal weight.

    A row belongs to the bin its weight starts in (with 1e-9 of slack, so scaled weights
    cut the same). Equal weights give `np.array_split`'s equal-count runs instead, so
    constant weights reproduce the unweighted bins exactly.
    """
    sorted_w = w[order]
    if np.all(sorted_w == sorted_w[0]):
        return list(np.array_split(order, n_bins))
    starts = np.cumsum(sorted_w) - sorted_w
    position = starts * n_bins / float(sorted_w.sum()) + 1e-9
    bin_of_row = np.minimum(np.floor(position).astype(np.int64), n_bins - 1)
    return [order[bin_of_row == b] for b in range(n_bins)]


def calibration_curve(y: ArrayLike, p: ArrayLike, n_bins: int = 20,
                      w: ArrayLike | None = None) -> pd.DataFrame:
    """Equal-frequency bins: rows sorted by p (stable) and split into n_bins near-equal runs
    (weighted: near-equal weight; `n` is then the bin's weight, `rows` its row count).

    Columns: bin, n, mean_predicted, observed_rate, p_min, p_max (+ rows when weighted).
    """
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    order = np.argsort(p_arr, kind="stable")
    if w_arr is not None and len(order) and w_arr.sum() > 0:
        nonzero = order[w_arr[order] > 0]  # rows standing for nobody belong to no bin
        bins = _weighted_bins(nonzero, w_arr, min(n_bins, len(nonzero)))
    else:
        bins = list(np.array_split(order, min(n_bins, max(len(order), 1))))
    rows = []
    for b, idx in enumerate(bins):
        if len(idx) == 0:
            continue
        bin_w = None if w_arr is None else w_arr[idx]
        row: dict[str, Any] = {
            "bin": b, "n": len(idx) if bin_w is None else float(bin_w.sum()),
            "mean_predicted": _mean(p_arr[idx], bin_w),
            "observed_rate": _mean(y_arr[idx], bin_w),
            "p_min": float(p_arr[idx].min()), "p_max": float(p_arr[idx].max())}
        if bin_w is not None:
            row["rows"] = len(idx)
        rows.append(row)
    columns = ["bin", "n", "mean_predicted", "observed_rate", "p_min", "p_max"]
    return pd.DataFrame(rows, columns=columns + ([] if w_arr is None else ["rows"]))


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 20,
                               w: ArrayLike | None = None) -> float:
    """ECE over equal-frequency bins: sum_b n_b/N * |observed_rate_b - mean_predicted_b|
    (weighted: n_b is the bin's weight)."""
    curve = calibration_curve(y, p, n_bins, w)
    if curve.empty:
        return math.nan
    weights = curve["n"] / curve["n"].sum()
    return float((weights * (curve["observed_rate"] - curve["mean_predicted"]).abs()).sum())


def calibration_slope(y: ArrayLike, p: ArrayLike, eps: float = 1e-6,
                      w: ArrayLike | None = None) -> tuple[float, float]:
    """(slope, intercept) of an unpenalised (weighted) logistic regression of y on logit(p).

    A slope of 1 and intercept of 0 is perfect; slope < 1 means over-confident scores.
    Fitted by Newton-Raphson on two parameters (no regularisation, unlike sklearn's default).
    """
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    if not _both_classes(y_arr, w_arr):
        return math.nan, math.nan
    # Unit weights multiply exactly: the unweighted fit is unchanged to the last bit.
    rw = np.ones_like(y_arr) if w_arr is None else w_arr
    p_clip = np.clip(p_arr, eps, 1 - eps)
    z = np.log(p_clip / (1 - p_clip))
    design = np.column_stack([np.ones_like(z), z])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(rw * (y_arr * eta - np.logaddexp(0.0, eta))))

    beta = np.array([0.0, 1.0])
    current = loglik(beta)
    for _ in range(100):
        mu = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -700, 700)))
        curvature = np.clip(rw * mu * (1 - mu), 1e-12, None)
        grad = design.T @ (rw * (y_arr - mu))
        hess = design.T @ (design * curvature[:, None])
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


def ranking_summary(y: ArrayLike, score: ArrayLike, k_pct: float,
                    w: ArrayLike | None = None) -> dict[str, float]:
    """The ranking metrics of any score (e.g. the raw margin): RANKING_METRICS."""
    y_arr, s_arr = _arrays(y, score)
    w_arr = _weighted(y_arr, w)
    return {
        "roc_auc": roc_auc(y_arr, s_arr, w_arr),
        "pr_auc": pr_auc(y_arr, s_arr, w_arr),
        "precision_at_k": precision_at_k(y_arr, s_arr, k_pct, w_arr) if len(y_arr)
        else math.nan,
        "recall_at_k": recall_at_k(y_arr, s_arr, k_pct, w_arr) if len(y_arr) else math.nan,
    }


def binary_summary(y: ArrayLike, p: ArrayLike, k_pct: float, n_bins: int = 20,
                   probabilities: bool = True, w: ArrayLike | None = None) -> dict[str, float]:
    """The headline metrics; calibration metrics only when `p` are probabilities.

    `n` and `positives` count rows (the evidence); weighted, `represented` and
    `represented_positives` are the population they stand for.
    """
    y_arr, p_arr = _arrays(y, p)
    w_arr = _weighted(y_arr, w)
    out = {"n": float(len(y_arr)), "positives": float(y_arr.sum())}
    if w_arr is not None:
        out.update(represented=float(w_arr.sum()),
                   represented_positives=float(np.sum(w_arr * y_arr)))
    out.update(ranking_summary(y_arr, p_arr, k_pct, w_arr))
    if probabilities:
        slope, intercept = calibration_slope(y_arr, p_arr, w=w_arr)
        out.update({
            "brier": brier(y_arr, p_arr, w_arr),
            "ece": expected_calibration_error(y_arr, p_arr, n_bins, w_arr),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
            "mean_predicted": _mean(p_arr, w_arr),
        })
    return out
