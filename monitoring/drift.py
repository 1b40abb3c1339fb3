"""Drift: the population stability index (PSI) per feature and for the score, the share of
missing values, and mean |SHAP| per feature. Small numpy functions, tested by hand.

PSI = sum over bins of (now - ref) * ln(now / ref), shares per bin. Bins are the
reference's deciles (fewer when values repeat: a discrete feature gets one bin per value
it takes) plus one bin for missing values, so a feed that stops (values turn missing)
moves mass into that bin and shows as drift. Empty bins count as `SHARE_FLOOR`, so the
index stays finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

QUANTILE_BINS = 10
SHARE_FLOOR = 1e-4  # an empty bin's share: ln(0) would make one empty bin infinite
BANDS = ("stable", "moderate", "major")


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """The PSI of two histograms over the same bins (counts or shares)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    now = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != now.shape or ref.sum() <= 0 or now.sum() <= 0:
        raise ValueError("psi needs two non-empty histograms over the same bins")
    p = np.maximum(ref / ref.sum(), SHARE_FLOOR)
    q = np.maximum(now / now.sum(), SHARE_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def band(value: float, moderate: float, major: float) -> str:
    """"stable" below `moderate`, "major" at or above `major`, else "moderate"."""
    if value >= major:
        return "major"
    return "moderate" if value >= moderate else "stable"


def quantile_edges(reference: np.ndarray, bins: int = QUANTILE_BINS) -> np.ndarray:
    """Inner bin edges: the reference's quantiles (missing values aside), each once. They are
    values the reference takes (`inverted_cdf`), so a discrete feature's values are edges."""
    values = np.asarray(reference, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.empty(0)
    return np.unique(np.quantile(values, np.arange(1, bins) / bins,
                                 method="inverted_cdf"))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in the bins (-inf, e0], (e0, e1], ..., (e_last, inf), then missing."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    index = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    return np.append(counts, missing.sum())


@dataclass(frozen=True)
class Histogram:
    """A reference variable binned: inner `edges` and `counts` per bin, missing last."""

    edges: np.ndarray
    counts: np.ndarray

    @property
    def missing_share(self) -> float:
        total = float(self.counts.sum())
        return float(self.counts[-1]) / total if total else float("nan")

    def psi(self, current: np.ndarray) -> float:
        """The PSI of `current` against this reference, over its bins."""
        return psi(self.counts, bin_counts(current, self.edges))

    def to_json(self) -> dict[str, list[float]]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> Histogram:
        return cls(np.asarray(data["edges"], dtype=np.float64),
                   np.asarray(data["counts"], dtype=np.float64))


def histogram(reference: np.ndarray, bins: int = QUANTILE_BINS) -> Histogram:
    """`reference` binned by its own quantiles plus a missing bin."""
    edges = quantile_edges(reference, bins)
    return Histogram(edges, bin_counts(reference, edges))


def column_psi(reference: np.ndarray, current: np.ndarray, bins: int = QUANTILE_BINS) -> float:
    """PSI of one variable, binned by the reference's quantiles plus a missing bin."""
    return histogram(reference, bins).psi(current)


def histograms(reference: np.ndarray) -> list[Histogram]:
    """One `Histogram` per column of a (rows, features) float matrix."""
    ref = np.asarray(reference, dtype=np.float64)
    return [histogram(ref[:, j]) for j in range(ref.shape[1])]


def feature_drift(reference: np.ndarray | Sequence[Histogram], current: np.ndarray,
                  names: Sequence[str], *, moderate: float, major: float) -> pd.DataFrame:
    """Per column of (rows, features) float matrices (the model's encoding: a categorical is
    its level code, an unknown level is missing), the reference as a matrix or its
    `histograms`: feature, psi, band, missing_ref, missing_now."""
    ref = histograms(reference) if isinstance(reference, np.ndarray) else list(reference)
    now = np.asarray(current, dtype=np.float64)
    values = [ref[j].psi(now[:, j]) for j in range(len(names))]
    return pd.DataFrame({
        "feature": list(names),
        "psi": values,
        "band": [band(v, moderate, major) for v in values],
        "missing_ref": [h.missing_share for h in ref],
        "missing_now": np.isnan(now).mean(axis=0) if len(now) else np.nan,
    })


def mean_abs_contributions(contributions: np.ndarray) -> np.ndarray:
    """Mean |SHAP| per feature of TreeSHAP output (the last column, the bias, dropped)."""
    return np.abs(np.asarray(contributions)[:, :-1]).mean(axis=0)


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Up to `size` row positions of `n`, sorted; the same ones for the same inputs."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
