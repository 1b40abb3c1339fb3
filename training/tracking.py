"""MLflow: log a training run, register the model, gate champion/challenger, promote, roll back.

Registry conventions for `doudi-risk`:
  * every new version gets alias `challenger`; the very first becomes `champion` directly;
  * a challenger becomes `champion` only if, on the same latest window, none of the gated
    metrics is worse than the champion's by more than its tolerance;
  * the registered model's tag `champion_history` is a JSON list of champion versions
    (oldest first) so `rollback()` can return to the previous one;
  * versions carry tags `as_of` and `data_fingerprint`: a rerun with the same pair returns
    the existing version instead of registering a duplicate.
The version's source is the run's `model/` artifact directory: the native artifact that
`doudi.model_artifact.load_artifact("models:/doudi-risk@champion")` loads (no pyfunc).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from doudi.model_artifact import ModelArtifact, load_artifact
from training import metrics
from training.core import FitResult

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODEL_NAME = "doudi-risk"
EXPERIMENT = "doudi-risk"
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"


class GateConfig(BaseModel):
    """Challenger vs champion on the same latest window: allowed drop per metric."""

    tolerances: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.01, "pr_auc": 0.02},
        description="metric -> largest tolerated drop (absolute) vs the champion.")
    min_window_rows: int = Field(default=100, ge=1)
    min_window_positives: int = Field(default=5, ge=1)


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    champion_version: str | None
    window: str  # "unseen-by-champion", "recorded-test-metrics" or "first-version"
    window_rows: int = 0
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrackOutcome:
    run_id: str | None
    version: str
    aliases: list[str]
    duplicate: bool
    gate: GateDecision | None


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on `tracking_uri` (default: Settings().tracking_uri())."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri is None:
        from doudi.settings import get_settings

        tracking_uri = get_settings().tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def find_existing_version(client: MlflowClient, as_of: str, fingerprint: str,
                          model_name: str = MODEL_NAME) -> str | None:
    """The version already registered for this as-of and data fingerprint, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get("as_of") == as_of and v.tags.get("data_fingerprint") == fingerprint:
            return str(v.version)
    return None


def _champion(client: MlflowClient, model_name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _finite(d: dict[str, float]) -> bool:
    return all(isinstance(v, float | int) and math.isfinite(v) for v in d.values())


def gate(challenger_prob: np.ndarray, y_window: np.ndarray, window_time: pd.Series,
         challenger_recorded: dict[str, float], champion: ModelArtifact | None,
         champion_version: str | None, X_window: pd.DataFrame | None,
         config: GateConfig, k_pct: float) -> GateDecision:
    """Compare the challenger with the champion on the latest window the champion never saw.

    Rows after the champion's `trained_through` period are scored by both models. When that
    window is too small (e.g. same-month retrain), the champion's recorded out-of-time test
    metrics are compared with the challenger's instead; the reasons say which was used.
    """
    if champion is None or X_window is None:
        return GateDecision(True, ["no champion yet: the first version becomes champion"],
                            None, "first-version")
    through = float(champion.meta.get("trained_through_ordinal", math.inf))
    unseen = metrics.month_ordinal(window_time) > through
    y_unseen = y_window[unseen]
    names = list(config.tolerances)
    comparable = set(champion.feature_names) <= set(X_window.columns)
    if comparable and unseen.sum() >= config.min_window_rows \
            and y_unseen.sum() >= config.min_window_positives and y_unseen.sum() < len(y_unseen):
        champ_prob = champion.predict_proba(X_window.loc[unseen])
        chal = metrics.binary_summary(y_unseen, challenger_prob[unseen], k_pct)
        champ = metrics.binary_summary(y_unseen, champ_prob, k_pct)
        window = "unseen-by-champion"
    else:
        # Too few unseen rows, or the champion needs features this table no longer has.
        chal = dict(challenger_recorded)
        champ = {k: float(v) for k, v in champion.meta.get("test_metrics", {}).items()}
        window = "recorded-test-metrics"
    chal_m = {m: float(chal.get(m, math.nan)) for m in names}
    champ_m = {m: float(champ.get(m, math.nan)) for m in names}
    reasons = []
    promote = True
    for m in names:
        tol = config.tolerances[m]
        c, h = chal_m[m], champ_m[m]
        if not math.isfinite(c):
            promote = False
            reasons.append(f"{m}: challenger value undefined on the window ({window})")
        elif math.isfinite(h) and c < h - tol:
            promote = False
            reasons.append(f"{m}: challenger {c:.4f} < champion {h:.4f} - tolerance {tol} "
                           f"({window})")
        else:
            reasons.append(f"{m}: challenger {c:.4f} vs champion {h:.4f}, within tolerance "
                           f"{tol} ({window})")
    return GateDecision(promote, reasons, champion_version, window, int(unseen.sum()),
                        chal_m, champ_m)


def _input_example(X_test: pd.DataFrame, artifact: ModelArtifact) -> pd.DataFrame:
    """One synthetic row (medians / most frequent level): no household's actual record."""
    row: dict[str, Any] = {}
    for spec in artifact.features:
        col = X_test[spec.name]
        if spec.kind == "categorical":
            mode = col.astype("string").mode(dropna=True)
            row[spec.name] = str(mode.iloc[0]) if len(mode) else None
        else:
            med = pd.to_numeric(col, errors="coerce").astype("float64").median()
            row[spec.name] = None if pd.isna(med) else float(med)
    return pd.DataFrame([row])


def _plots(result: FitResult, X_test: pd.DataFrame, out: Path, sample: int = 2000) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result.calibration_curve
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.plot(curve["mean_predicted"], curve["observed_rate"], marker="o")
    top = max(float(curve["mean_predicted"].max()), float(curve["observed_rate"].max()), 0.01)
    ax.set(xlim=(0, top * 1.05), ylim=(0, top * 1.05), xlabel="mean predicted probability",
           ylabel="observed rate", title=f"Calibration, test block ({result.calibration['method']},"
           f" {result.config.n_bins} equal-frequency bins)")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=100)
    plt.close(fig)

    imp = result.feature_importance.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 7))
    ax.barh(imp["feature"], imp["gain"])
    ax.set(xlabel="total gain", title="Feature importance (production model)")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=100)
    plt.close(fig)

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(X_test), min(sample, len(X_test)), replace=False))
    Xs = result.artifact.encode(X_test.iloc[rows])
    contrib = result.artifact.contributions(Xs)[:, :-1]
    _shap_summary_plot(contrib, Xs, result.artifact.feature_names, out / "shap_summary.png")


def _shap_summary_plot(contrib: np.ndarray, values: np.ndarray, names: list[str], path: Path,
                       max_display: int = 20) -> None:
    """A SHAP beeswarm-style summary with matplotlib (importing shap costs ~10 s of numba).

    One row per feature (largest mean |SHAP| on top); each dot a household, x = its
    contribution to the margin, colour = the feature value's percentile within the sample.
    """
    import matplotlib.pyplot as plt

    order = np.argsort(-np.abs(contrib).mean(axis=0))[:max_display][::-1]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    for row, j in enumerate(order):
        v = pd.Series(values[:, j]).rank(pct=True).fillna(0.5).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, len(v))
        points = ax.scatter(contrib[:, j], row + jitter, c=v, cmap="coolwarm", s=4, vmin=0,
                            vmax=1, alpha=0.7, linewidths=0)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(order)), [names[j] for j in order])
    ax.set(xlabel="SHAP value (contribution to the log-odds)",
           title="SHAP summary (LightGBM pred_contrib), test-block sample")
    if len(order):
        fig.colorbar(points, ax=ax, label="feature value percentile (missing = 0.5)")
    fig.tight_layout()
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


def model_card(result: FitResult, as_of: str, decision: GateDecision | None) -> str:
    """Markdown model card; the headline is the out-of-time metrics table."""
    cols = ["scorer", "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "brier", "ece",
            "calibration_slope"]
    table = result.comparison[[c for c in cols if c in result.comparison.columns]]
    k = result.config.k_pct
    parts = [
        f"# doudi-risk model card — as of {as_of}",
        "",
        f"Out-of-time test block {', '.join(result.test_periods)} "
        f"(n = {int(result.test_metrics['n'])}, positives = "
        f"{int(result.test_metrics['positives'])}; precision/recall at top {k:g}%):",
        "",
        _markdown_table(table),
        "",
        "## Training",
        f"- data fingerprint `{result.fingerprint}`, feature registry "
        f"`{result.config.feature_registry_version}`",
        f"- {len(result.artifact.features)} features; production model "
        f"{result.artifact.meta['rounds']} rounds through "
        f"{result.artifact.meta['trained_through']}",
        f"- calibration: {result.calibration['method']} (chosen out of time by Brier; "
        f"candidates {json.dumps(result.calibration['candidates'])})",
        "",
        "## Cross-validation folds (ROC-AUC / PR-AUC)",
        "",
        _markdown_table(result.fold_metrics[["fold", "scorer", "n", "positives", "roc_auc",
                                             "pr_auc", "precision_at_k"]]),
    ]
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
        parts += ["", "## Hardship types", "", _markdown_table(result.type_metrics)]
    if decision is not None:
        parts += ["", "## Registry gate", "",
                  f"{'promoted to champion' if decision.promote else 'kept as challenger'} "
                  f"(window: {decision.window})", ""] + [f"- {r}" for r in decision.reasons]
    parts += ["", "## Intended use",
              "Ranks in-scope rural households by the risk of being identified for monitoring "
              "within the label horizon, to prioritise caseworker visits. Not a decision: "
              "every alert is reviewed by a caseworker."]
    return "\n".join(parts) + "\n"


def _flat_params(result: FitResult, as_of: str) -> dict[str, str]:
    params = {k: (json.dumps(v) if isinstance(v, dict | list) else str(v))
              for k, v in result.config.model_dump().items()}
    params.update(as_of=as_of, data_fingerprint=result.fingerprint,
                  n_rows=str(result.artifact.meta["n_rows"]),
                  test_periods=",".join(result.test_periods),
                  calibration_chosen=result.calibration["method"],
                  rounds=str(result.artifact.meta["rounds"]))
    return {k: v[:500] for k, v in params.items()}


def _metrics(result: FitResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result.comparison.to_dict("records"):
        prefix = "test" if row["scorer"] == "lightgbm" else f"baseline_{row['scorer']}"
        for k in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "brier", "ece",
                  "calibration_slope", "positives", "n"):
            if k in row:
                out[f"{prefix}_{k}".replace(":", "_")] = row[k]
    for row in result.fold_metrics.to_dict("records"):
        for k in ("roc_auc", "pr_auc"):
            out[f"fold{row['fold']}_{row['scorer']}_{k}".replace(":", "_")] = row[k]
    for method, scores in result.calibration["candidates"].items():
        for k, v in scores.items():
            out[f"calibration_{method}_{k}"] = v
    if result.lead_time is not None:
        out.update({f"lead_{k}": float(v) for k, v in result.lead_time.as_dict().items()})
    out.update({f"time_{k}": v for k, v in result.timings.items()})
    return {k: float(v) for k, v in out.items()
            if isinstance(v, float | int) and math.isfinite(float(v))}


def track_run(
    result: FitResult,
    X: pd.DataFrame,
    y: pd.Series,
    time: pd.Series,
    *,
    as_of: str,
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
    gate_config: GateConfig | None = None,
    experiment: str = EXPERIMENT,
    model_name: str = MODEL_NAME,
) -> TrackOutcome:
    """Log the run, register a new `model_name` version and apply the champion gate.

    `X`, `y`, `time` are the table given to `fit_evaluate` (the test block is taken from it).
    Idempotent: the same `as_of` and data fingerprint return the existing version.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    client = client_for(tracking_uri)
    gate_config = gate_config or GateConfig()
    existing = find_existing_version(client, as_of, result.fingerprint, model_name)
    if existing is not None:
        log.info("as_of %s with fingerprint %s is already version %s; not registering again",
                 as_of, result.fingerprint, existing)
        mv = client.get_model_version(model_name, existing)
        return TrackOutcome(mv.run_id, existing, list(mv.aliases), True, None)

    mask = result.test_mask
    X_test = X.iloc[np.flatnonzero(mask)]
    y_test = pd.Series(y).to_numpy(dtype=np.float64)[mask]
    t_test = pd.Series(pd.Series(time).to_numpy()[mask])

    champ_mv = _champion(client, model_name)
    champion = (load_artifact(f"models:/{model_name}@{CHAMPION}")
                if champ_mv is not None else None)
    decision = gate(result.test_probability, y_test, t_test, result.test_metrics, champion,
                    None if champ_mv is None else str(champ_mv.version),
                    X_test.reset_index(drop=True), gate_config, result.config.k_pct)

    if mlflow.get_experiment_by_name(experiment) is None:
        if artifact_location is None:
            # MLflow's default is ./mlruns relative to the cwd: pin it next to the store.
            from doudi.settings import get_settings

            artifact_location = (get_settings().mlruns_dir / "artifacts").as_uri()
        client.create_experiment(experiment, artifact_location=artifact_location)
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None
    with tempfile.TemporaryDirectory(prefix="doudi-train-") as tmp:
        root = Path(tmp)
        example = _input_example(X_test, result.artifact)
        signature = infer_signature(example, result.artifact.predict_proba(example))
        result.artifact.meta["as_of"] = as_of  # the registered month, whatever fit was told
        result.artifact.extra_json = {
            "signature.json": signature.to_dict(),
            "input_example.json": json.loads(example.to_json(orient="split", index=False)),
        }
        result.artifact.save(root / "model")
        plots = root / "plots"
        plots.mkdir()
        _plots(result, X_test, plots)
        tables = root / "tables"
        tables.mkdir()
        result.comparison.to_csv(tables / "comparison.csv", index=False)
        result.fold_metrics.to_csv(tables / "fold_metrics.csv", index=False)
        result.feature_importance.to_csv(tables / "feature_importance.csv", index=False)
        result.calibration_curve.to_csv(tables / "calibration_curve.csv", index=False)
        result.type_metrics.to_csv(tables / "type_metrics.csv", index=False)
        if result.search is not None:
            result.search.to_csv(tables / "search.csv", index=False)
        if result.fairness is not None:
            result.fairness.table.to_csv(tables / "fairness.csv", index=False)
            (tables / "fairness_warnings.json").write_text(
                json.dumps(result.fairness.warnings, ensure_ascii=False, indent=1))
        (root / "model_card.md").write_text(model_card(result, as_of, decision),
                                            encoding="utf-8")
        (root / "gate.json").write_text(json.dumps(asdict(decision), indent=1))

        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=f"as_of={as_of}") as run:
            mlflow.log_params(_flat_params(result, as_of))
            mlflow.log_metrics(_metrics(result))
            mlflow.set_tags({"as_of": as_of, "data_fingerprint": result.fingerprint,
                             "gate_decision": "champion" if decision.promote else "challenger",
                             "gate_window": decision.window})
            mlflow.log_artifacts(str(root))
            run_id = run.info.run_id
            source = f"{run.info.artifact_uri}/model"

    with contextlib.suppress(MlflowException):  # it already exists
        client.create_registered_model(model_name, description="doudi household risk model")
    tags = {"as_of": as_of, "data_fingerprint": result.fingerprint,
            "gate_decision": "champion" if decision.promote else "challenger",
            "gate_window": decision.window,
            "gate_reasons": " | ".join(decision.reasons)[:4900],
            **{f"test_{k}": f"{v:.6g}" for k, v in result.test_metrics.items()
               if math.isfinite(v)}}
    mv = client.create_model_version(model_name, source=source, run_id=run_id, tags=tags)
    version = str(mv.version)
    aliases = [CHALLENGER]
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if decision.promote:
        _set_champion(client, model_name, version, reason="gate")
        aliases.append(CHAMPION)
    client.set_tag(run_id, "registered_version", version)
    return TrackOutcome(run_id, version, aliases, False, decision)


def _history(client: MlflowClient, model_name: str) -> list[str]:
    tags = client.get_registered_model(model_name).tags
    return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def _set_champion(client: MlflowClient, model_name: str, version: str, reason: str) -> None:
    history = _history(client, model_name)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    if not history or history[-1] != version:
        history.append(version)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(model_name, version, "champion_reason", reason)


def promote(version: str | int, *, tracking_uri: str | None = None,
            model_name: str = MODEL_NAME) -> None:
    """Operator override: make `version` the champion (recorded in the history)."""
    client = client_for(tracking_uri)
    client.get_model_version(model_name, str(version))  # raises if it does not exist
    _set_champion(client, model_name, str(version), reason="manual promote")


def rollback(*, tracking_uri: str | None = None, model_name: str = MODEL_NAME) -> str:
    """Return `champion` to the previous champion; returns that version."""
    from doudi.errors import UserError

    client = client_for(tracking_uri)
    history = _history(client, model_name)
    if len(history) < 2:
        raise UserError(f"{model_name}: no previous champion to roll back to "
                        f"(history {history})")
    current, previous = history[-1], history[-2]
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[:-1]))
    client.set_model_version_tag(model_name, current, "rolled_back", "true")
    client.set_model_version_tag(model_name, previous, "champion_reason", "rollback")
    return previous
