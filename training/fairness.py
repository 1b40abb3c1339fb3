"""Group fairness in the style of Aequitas: metrics by group, disparity ratios, flags.

Households are flagged by ONE global threshold (the top k% of all scores, as caseworkers
see them); each group's rates are then computed on its own rows. Disparity = group metric /
reference group metric; a disparity outside [tau, 1/tau] is flagged (tau = 0.8 is the
"four-fifths rule"). Groups too small to judge are reported with a warning, never hidden.

With sample weights (a down-sampled table) the flags are the weighted top k% and every
rate is a ratio of weight sums, so the table describes the population; `n` and
`positives` still count rows (the evidence the small-group warning judges), `represented`
is the group's weight, and the reference group is the largest by weight.
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


def group_metrics(y: np.ndarray, p: np.ndarray, flagged: np.ndarray, total_flagged: float,
                  probabilities: bool, n_bins: int, w: np.ndarray | None = None
                  ) -> dict[str, float]:
    """Confusion-based rates of one group given the global flags (weighted: weight sums)."""
    rw = np.ones(len(y)) if w is None else w  # unit weights: sums equal the counts exactly
    tp = float(rw[flagged & (y == 1)].sum())
    fp = float(rw[flagged & (y == 0)].sum())
    fn = float(rw[~flagged & (y == 1)].sum())
    tn = float(rw[~flagged & (y == 0)].sum())
    n = len(y)
    represented = tp + fp + fn + tn
    row = {"n": float(n)}
    if w is not None:
        row["represented"] = represented
    row.update({
        "positives": tp + fn if w is None else float((y == 1).sum()),
        "prevalence": _rate(tp + fn, represented),
        "flagged": tp + fp,
        "flag_rate": _rate(tp + fp, represented),
        "flagged_share": _rate(tp + fp, total_flagged),
        "precision": _rate(tp, tp + fp),
        "recall": _rate(tp, tp + fn),
        "fpr": _rate(fp, fp + tn),
        "fnr": _rate(fn, tp + fn),
        "fdr": _rate(fp, tp + fp),
        "roc_auc": metrics.roc_auc(y, p, w) if n else math.nan,
    })
    if probabilities:
        row["brier"] = metrics.brier(y, p, w) if n else math.nan
        row["ece"] = metrics.expected_calibration_error(y, p, n_bins, w) if n else math.nan
        row["mean_predicted"] = (float(np.average(p, weights=w))
                                 if n and represented > 0 else math.nan)
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
    w: metrics.ArrayLike | None = None,
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
    w_arr = metrics.check_weights(w, len(y_arr))
    flagged = metrics.top_k_mask(p_arr, k_pct, w_arr)
    total_flagged = float(flagged.sum() if w_arr is None else w_arr[flagged].sum())
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
                                   probabilities, n_bins,
                                   None if w_arr is None else w_arr[mask])}
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
            size = "n" if w_arr is None else "represented"
            ref_value = str(attr_frame.sort_values([size, "group"], ascending=[False, True])
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
