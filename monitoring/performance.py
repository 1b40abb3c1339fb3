"""Calibration by risk band and performance at capacity, estimated and realised.

Estimated performance (confidence-based, as in NannyML's CBPE) trusts the calibrated
risks: among the k alerted households the expected true positives are the sum of their
risks, so expected precision = sum(risk of the alerted) / k and expected recall = that sum
/ sum(risk of everyone); the expected ROC-AUC weighs each (i above j) pair by
risk_i * (1 - risk_j). It needs no label, so it exists the month a model scores. Realised
performance uses the labels known so far (and confirmed verdicts): it is final only once
the horizon and the reporting allowance have passed (`label_share` = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

BANDS_PCT: tuple[tuple[str, float], ...] = (
    ("top 1%", 1.0), ("top 5%", 5.0), ("top 10%", 10.0), ("all", 100.0))
CALIBRATION_COLUMNS = ["band", "month", "n", "predicted", "observed", "ratio"]
PERFORMANCE_COLUMNS = ["month", "kind", "metric", "value", "label_share"]


def top_count(n: int, pct: float) -> int:
    """How many households the top `pct`% of `n` is (rounded up, as tiers count)."""
    return min(n, math.ceil(n * pct / 100.0 - 1e-9))


def by_risk(risk: np.ndarray) -> np.ndarray:
    """Row positions, highest risk first (ties in row order)."""
    return np.argsort(-np.asarray(risk, dtype=np.float64), kind="stable")


def calibration_bands(risk: np.ndarray, label: np.ndarray,
                      bands: Sequence[tuple[str, float]] = BANDS_PCT) -> pd.DataFrame:
    """One month: per band (top p% by risk), n, mean predicted risk, observed rate and
    their ratio observed / predicted (> 1: the model under-predicts)."""
    order = by_risk(risk)
    r = np.asarray(risk, dtype=np.float64)[order]
    y = np.asarray(label, dtype=np.float64)[order]
    rows = []
    for name, pct in bands:
        k = top_count(len(r), pct)
        predicted = float(r[:k].mean()) if k else math.nan
        observed = float(y[:k].mean()) if k else math.nan
        ratio = observed / predicted if k and predicted > 0 else math.nan
        rows.append((name, k, predicted, observed, ratio))
    return pd.DataFrame(rows, columns=["band", "n", "predicted", "observed", "ratio"])


def expected_roc_auc(risk: np.ndarray) -> float:
    """ROC-AUC expected if every risk is the true probability: over ordered pairs i != j,
    sum of risk_i (1 - risk_j) where i ranks above j (ties count half), divided by the sum
    over all pairs i != j."""
    p = np.asarray(risk, dtype=np.float64)
    values, group = np.unique(p, return_inverse=True)
    pos = np.bincount(group, weights=p, minlength=len(values))
    neg = np.bincount(group, weights=1.0 - p, minlength=len(values))
    same = np.bincount(group, weights=p * (1.0 - p), minlength=len(values))
    below = np.cumsum(neg) - neg  # negatives' expected count strictly below each value
    ordered = float(np.sum(pos * below) + 0.5 * np.sum(pos * neg - same))
    pairs = float(p.sum() * (1.0 - p).sum() - same.sum())
    return ordered / pairs if pairs > 0 else math.nan


def estimated_metrics(risk: np.ndarray, k: int) -> dict[str, float]:
    """Expected precision and recall of alerting the top `k` by risk, expected ROC-AUC."""
    r = np.asarray(risk, dtype=np.float64)
    top = r[by_risk(r)[:k]]
    expected_tp = float(top.sum())
    return {
        "precision_at_capacity": expected_tp / k if k else math.nan,
        "recall_at_capacity": expected_tp / float(r.sum()) if r.sum() > 0 else math.nan,
        "roc_auc": expected_roc_auc(r),
        "expected_positives": float(r.sum()),
    }


def realised_metrics(risk: np.ndarray, label: np.ndarray, k: int) -> dict[str, float]:
    """Precision and recall of the top `k` by risk on the labels known so far, ROC-AUC."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(label, dtype=np.float64)
    hits = float(y[by_risk(risk)[:k]].sum())
    positives = float(y.sum())
    both = 0 < positives < len(y)
    return {
        "precision_at_capacity": hits / k if k else math.nan,
        "recall_at_capacity": hits / positives if positives else math.nan,
        "roc_auc": float(roc_auc_score(y, risk)) if both else math.nan,
        "positives": positives,
    }
