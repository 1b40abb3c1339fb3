"""Group fairness in the style of Aequitas: metrics by group, disparity ratios, flags.

Households are flagged by ONE global threshold (the top k% of all scores, as caseworkers
see them); each group's rates are then computed on its own rows. Disparity = group metric /
reference group metric; a disparity outside [tau, 1/tau] is flagged (tau = 0.8 is the
"four-fifths rule"). Groups too small to judge are reported with a warning, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training import metrics

DISPARITY_METRICS = ("flag_rate", "precision", "recall", "fpr", "fnr", "fdr")


@dataclass
class FairnessReport:
    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> pd.DataFrame:
        """Rows with at least one disparity outside [tau, 1/tau]."""
        cols = [f"{m}_flag" for m in DISPARITY_METRICS]
        return self.table[self.table[cols].any(axis=1)]


def _rate(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def group_metrics(y: np.ndarray, p: np.ndarray, flagged: np.ndarray, total_flagged: int,
                  probabilities: bool, n_bins: int) -> dict[str, float]:
    """Confusion-based rates of one group given the global flags."""
    tp = float((flagged & (y == 1)).sum())
    fp = float((flagged & (y == 0)).sum())
    fn = float((~flagged & (y == 1)).sum())
    tn = float((~flagged & (y == 0)).sum())
    n = len(y)
    row = {
        "n": float(n),
        "positives": tp + fn,
        "prevalence": _rate(tp + fn, n),
        "flagged": tp + fp,
        "flag_rate": _rate(tp + fp, n),
        "flagged_share": _rate(tp + fp, total_flagged),
        "precision": _rate(tp, tp + fp),
        "recall": _rate(tp, tp + fn),
        "fpr": _rate(fp, fp + tn),
        "fnr": _rate(fn, tp + fn),
        "fdr": _rate(fp, tp + fp),
        "roc_auc": metrics.roc_auc(y, p) if n else math.nan,
    }
    if probabilities:
        row["brier"] = metrics.brier(y, p) if n else math.nan
        row["ece"] = metrics.expected_calibration_error(y, p, n_bins) if n else math.nan
        row["mean_predicted"] = float(p.mean()) if n else math.nan
    return row


def fairness_report(
    y: metrics.ArrayLike,
    p: metrics.ArrayLike,
    groups: pd.DataFrame,
    *,
    k_pct: float = 5.0,
    reference: Mapping[str, Any] | None = None,
    tau: float = 0.8,
    min_size: int = 30,
    min_positives: int = 5,
    probabilities: bool = True,
    n_bins: int = 20,
) -> FairnessReport:
    """Metrics and disparities for every attribute (column) and group (value) in `groups`.

    `reference` maps attribute -> reference value; otherwise the largest group is the reference.
    Missing group values form their own group named "missing".
    """
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    y_arr, p_arr = metrics._arrays(y, p)
    if len(groups) != len(y_arr):
        raise ValueError(f"groups has {len(groups)} rows, labels have {len(y_arr)}")
    flagged = metrics.top_k_mask(p_arr, k_pct)
    total_flagged = int(flagged.sum())
    reference = dict(reference or {})
    frames: list[pd.DataFrame] = []
    warnings: list[str] = []
    for attribute in groups.columns:
        values = groups[attribute].astype("string").fillna("missing").to_numpy(dtype=object)
        attr_rows = []
        for value in pd.unique(values):
            mask = values == value
            row: dict[str, Any] = {"attribute": str(attribute), "group": str(value),
                   **group_metrics(y_arr[mask], p_arr[mask], flagged[mask], total_flagged,
                                   probabilities, n_bins)}
            row["small_group"] = row["n"] < min_size or row["positives"] < min_positives
            if row["small_group"]:
                warnings.append(
                    f"{attribute}={value}: only {int(row['n'])} rows / "
                    f"{int(row['positives'])} positives (minimum {min_size} / {min_positives});"
                    " its disparities are unreliable")
            attr_rows.append(row)
        attr_frame = pd.DataFrame(attr_rows)
        if str(attribute) in reference:
            ref_value = str(reference[str(attribute)])
            if ref_value not in set(attr_frame["group"]):
                raise ValueError(f"reference group {attribute}={ref_value} has no rows")
        else:
            ref_value = str(attr_frame.sort_values(["n", "group"], ascending=[False, True])
                            .iloc[0]["group"])
        attr_frame["reference_group"] = ref_value
        attr_frame["is_reference"] = attr_frame["group"] == ref_value
        ref_row = attr_frame[attr_frame["is_reference"]].iloc[0]
        for m in DISPARITY_METRICS:
            ref = ref_row[m]
            ratio = (attr_frame[m] / ref) if ref and not math.isnan(ref) else math.nan
            attr_frame[f"{m}_disparity"] = ratio
            attr_frame[f"{m}_flag"] = (
                (attr_frame[f"{m}_disparity"] < tau) | (attr_frame[f"{m}_disparity"] > 1 / tau)
            ).fillna(False).astype(bool)
        frames.append(attr_frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return FairnessReport(table=table, warnings=warnings)
