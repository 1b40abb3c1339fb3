"""A training run's report: the model card (markdown) and its plots.

`training.tracking.track_run` writes both beside the model in the MLflow run. The card is
generic: it names the registered model and describes the data from what the model was
trained on; what the model is for is the caller's to say (`intended_use`: the doudi
monthly job's wording lives in `training.job`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import metrics
from training.core import FitResult
from training.gate import GateDecision


def write_plots(result: FitResult, X_test: pd.DataFrame, out: Path, sample: int = 2000) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _plot_names()
    curve = result.calibration_curve
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.plot(curve["mean_predicted"], curve["observed_rate"], marker="o")
    top = max(float(curve["mean_predicted"].max()), float(curve["observed_rate"].max()), 0.01)
    ax.set(xlim=(0, top * 1.05), ylim=(0, top * 1.05), xlabel="mean predicted probability",
           ylabel="observed rate",
           title=f"Calibration, test block\n({result.calibration['method']}, "
           f"{result.config.n_bins} equal-frequency bins)")
    fig.savefig(out / "calibration.png", dpi=100)
    plt.close(fig)

    imp = result.feature_importance.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
    ax.barh([names.get(f, f) for f in imp["feature"]], imp["gain"])
    ax.set(xlabel="total gain", title="Feature importance (production model)")
    fig.savefig(out / "feature_importance.png", dpi=100)
    plt.close(fig)

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(X_test), min(sample, len(X_test)), replace=False))
    Xs = result.artifact.encode(X_test.iloc[rows])
    contrib = result.artifact.contributions(Xs)[:, :-1]
    _shap_summary_plot(contrib, Xs, [names.get(f, f) for f in result.artifact.feature_names],
                       out / "shap_summary.png")


def _plot_names() -> dict[str, str]:
    """Feature -> "中文名 (name)" when matplotlib can draw Chinese here, else {} (the
    names alone): a missing font must not stop a training run."""
    from doudi.errors import UserError
    from doudi.plotting import use_cjk_font
    from features import FEATURES

    try:
        use_cjk_font()
    except UserError:
        return {}
    return {f.name: f"{f.label_zh} ({f.name})" for f in FEATURES}


def _shap_summary_plot(contrib: np.ndarray, values: np.ndarray, names: list[str], path: Path,
                       max_display: int = 20) -> None:
    """A SHAP beeswarm-style summary with matplotlib (importing shap costs ~10 s of numba).

    One row per feature (largest mean |SHAP| on top); each dot a household, x = its
    contribution to the margin, colour = the feature value's percentile within the sample.
    """
    import matplotlib.pyplot as plt

    order = np.argsort(-np.abs(contrib).mean(axis=0))[:max_display][::-1]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(order) + 1.8), layout="constrained")
    for row, j in enumerate(order):
        v = pd.Series(values[:, j]).rank(pct=True).fillna(0.5).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, len(v))
        points = ax.scatter(contrib[:, j], row + jitter, c=v, cmap="coolwarm", s=4, vmin=0,
                            vmax=1, alpha=0.7, linewidths=0)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(order)), [names[j] for j in order])
    ax.set(xlabel="SHAP value (contribution to the log-odds)",
           title="SHAP summary (LightGBM pred_contrib)\ntest-block sample")
    if len(order):
        fig.colorbar(points, ax=ax, label="feature value percentile (missing = 0.5)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.4f}"
    return str(v)


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def model_card(result: FitResult, as_of: str, decision: GateDecision | None, *,
               model_name: str, intended_use: str | None = None) -> str:
    """Markdown model card for `model_name`; the headline is the out-of-time metrics table.

    The data are described from what the model was trained on (`result.data`); the
    intended use is the caller's to state (`intended_use`; no section without it).
    """
    cols = ["scorer", "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "brier", "ece",
            "calibration_slope"]
    table = result.comparison[[c for c in cols if c in result.comparison.columns]]
    k = result.config.k_pct
    parts = [
        f"# {model_name} model card — as of {as_of}",
        "",
        f"Out-of-time test block {', '.join(result.test_periods)} "
        f"(n = {int(result.test_metrics['n'])}, positives = "
        f"{int(result.test_metrics['positives'])}; precision/recall at top {k:g}%):",
        "",
        _markdown_table(table),
        "",
        *_data_section(result),
        "## Training",
        f"- data fingerprint `{result.fingerprint}`, feature registry "
        f"`{result.config.feature_registry_version}`",
        f"- {len(result.artifact.features)} features; production model "
        f"{result.artifact.meta['rounds']} rounds through "
        f"{result.artifact.meta['trained_through']}",
        f"- calibration: {result.calibration['method']} (chosen out of time by Brier among "
        f"the strictly increasing maps; candidates "
        f"{json.dumps(result.calibration['candidates'])})",
        "",
        *_calibration_section(result),
        "## Cross-validation folds (ROC-AUC / PR-AUC)",
        "",
        _markdown_table(result.fold_metrics[["fold", "scorer", "n", "positives", "roc_auc",
                                             "pr_auc", "precision_at_k"]]),
        *_evidence_sections(result),
    ]
    if decision is not None:
        parts += ["", "## Registry gate", "",
                  f"{'promoted to champion' if decision.promote else 'kept as challenger'} "
                  f"(window: {decision.window})", ""] + [f"- {r}" for r in decision.reasons]
    if intended_use:
        parts += ["", "## Intended use", intended_use]
    return "\n".join(parts) + "\n"


def _data_section(result: FitResult) -> list[str]:
    """Rows, positives, features and periods the model was trained on."""
    data = result.data
    if data is None:
        return []
    rate = data.positives / data.rows if data.rows else math.nan
    if result.cross_sectional:
        span = (f"- cross-sectional: rows dealt into {data.periods} seeded blocks that play "
                "the periods (no time order, no lead time)")
    else:
        span = f"- {data.periods} periods, {data.first_period} to {data.last_period}"
    return ["## Data", "",
            f"- {data.rows:,} rows, {data.positives:,} positive ({rate:.2%})",
            f"- {data.features} features ({data.categorical_features} categorical)",
            span, ""]


def _evidence_sections(result: FitResult) -> list[str]:
    """Lead time, fairness and per-type models, where the run measured them."""
    parts: list[str] = []
    if result.lead_time is not None:
        parts += ["", "## Lead time", "", json.dumps(result.lead_time.as_dict())]
    if result.fairness is not None:
        flagged = result.fairness.flagged
        parts += ["", f"## Fairness (tau = {result.config.fairness_tau:g})", "",
                  f"{len(flagged)} group(s) with a disparity outside [tau, 1/tau]; "
                  f"{len(result.fairness.warnings)} small-group warning(s). See fairness.csv."]
        if len(flagged):
            parts += ["", _markdown_table(flagged[["attribute", "group", "n", "positives",
                                                   "flag_rate_disparity", "recall_disparity",
                                                   "fpr_disparity"]])]
    if len(result.type_metrics):
        parts += ["", "## Type models (P(type | positive), one per `label_<type>` column)", "",
                  _markdown_table(result.type_metrics)]
    return parts


def _calibration_section(result: FitResult) -> list[str]:
    """Test block before (raw margin / raw sigmoid) and after calibration, side by side."""
    m = result.test_metrics
    if "margin_roc_auc" not in m:
        return []
    k = result.config.k_pct
    rows = [("before: raw margin (serving's ranking), raw sigmoid", "margin_", "raw_"),
            (f"after: calibrated ({result.calibration['method']})", "", "")]
    lines = ["## Calibration: before and after (test block)", "",
             f"| | ROC-AUC | PR-AUC | precision@{k:g}% | recall@{k:g}% | Brier | ECE |",
             "|---|---|---|---|---|---|---|"]
    for label, rank, prob in rows:
        values = [m.get(f"{rank}{n}", math.nan) for n in metrics.RANKING_METRICS]
        values += [m.get(f"{prob}brier", math.nan), m.get(f"{prob}ece", math.nan)]
        lines.append(f"| {label} | " + " | ".join(_fmt(float(v)) for v in values) + " |")
    return [*lines, "", "Ranking, tiers and capacity follow the margin; the calibrated "
            "probability is what is shown and thresholded. The gate refuses a calibrator "
            "that lowers ROC-AUC, PR-AUC or precision at capacity.", ""]
