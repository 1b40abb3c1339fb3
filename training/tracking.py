"""MLflow: log a training run, register the model, apply the gate, promote, roll back.

Registry conventions (names, aliases, URIs and the workspace binding live in
`doudi.registry`; each workspace has its own registered model, `doudi-risk-<fingerprint[:8]>`):
  * every new version carries tags `workspace` (the fingerprint) and `counties`, and its
    artifact's meta the same: every load refuses another workspace's model;
  * every new version gets alias `challenger`; no version becomes `champion` (the first
    neither) unless it clears the floor on its out-of-time test block (`floor_check`: beats
    the departments' rules and the logistic baseline by configured margins, calibrated)
    and its calibration keeps its ranking (`calibration_ranking_check`); tag `gate_floor`;
  * a challenger becomes `champion` only if, on the same latest window, none of the gated
    metrics is worse than the champion's by more than its tolerance;
  * `promote` refuses a version that did not clear the floor unless forced (recorded);
  * the registered model's tag `champion_history` is a JSON list of champion versions
    (oldest first) so `rollback()` can return to the previous one;
  * versions carry tags `as_of` and `data_fingerprint`: a rerun with the same pair returns
    the existing version instead of registering a duplicate.
The gate's judgement is `training.gate`; the run's model card and plots
`training.report`. The version's source is the run's `model/` artifact directory: the
native artifact that `doudi.registry.load_model("models:/<name>@champion", settings)` loads
(no pyfunc).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from doudi import registry
from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact
from doudi.registry import CHALLENGER, CHAMPION, Workspace
from training.core import FitResult
from training.gate import KEPT, GateConfig, GateDecision, decide, floor_baselines
from training.report import model_card, write_plots

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

HISTORY_TAG = "champion_history"
# Version tag: "passed" when the version cleared its own checks (calibration ranking and the
# floor); `promote` refuses any other value (absent: registered before the floor) unless forced.
FLOOR_TAG = "gate_floor"
# Version tag: "pending" from creation until its aliases are set, then "complete". A run
# killed in between leaves "pending"; the rerun finds the version (same as_of and data) and
# finishes it (`finish_registration`) instead of returning a version without its aliases.
REGISTRATION_TAG = "registration"


@dataclass
class TrackOutcome:
    run_id: str | None
    version: str
    aliases: list[str]
    duplicate: bool
    gate: GateDecision | None


def _period_text(value: Any) -> str:
    """A training period as text (a date for month ends)."""
    if hasattr(value, "date") and callable(value.date):
        return str(value.date())
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def find_existing_version(client: MlflowClient, as_of: str, fingerprint: str,
                          workspace: Workspace) -> str | None:
    """This workspace's version already registered for this as-of and data fingerprint."""
    for v in registry.known_versions(client, workspace.model_name):
        if v.tags.get("as_of") == as_of and v.tags.get("data_fingerprint") == fingerprint \
                and v.tags.get(registry.WORKSPACE_KEY) == workspace.fingerprint:
            return str(v.version)
    return None


def registered_outcome(client: MlflowClient, as_of: str, fingerprint: str,
                       workspace: Workspace) -> TrackOutcome | None:
    """The outcome of this as-of and data already registered (finishing a registration a
    killed run left half-done), or None: training the same data twice registers once."""
    existing = find_existing_version(client, as_of, fingerprint, workspace)
    if existing is None:
        return None
    log.info("as_of %s with fingerprint %s is already version %s; not registering again",
             as_of, fingerprint, existing)
    mv = finish_registration(client, client.get_model_version(workspace.model_name, existing))
    return TrackOutcome(mv.run_id, existing, list(mv.aliases), True, None)


def finish_registration(client: MlflowClient, mv: ModelVersion) -> ModelVersion:
    """A version a killed run registered but did not finish: its aliases as the gate decided
    (`gate_decision` tag), then `complete`. Others (complete, or older than the tag) as is."""
    if (mv.tags or {}).get(REGISTRATION_TAG) != "pending":
        return mv
    name, number = mv.name, str(mv.version)
    newer = [v for v in registry.known_versions(client, name) if int(v.version) > int(number)]
    if not newer:  # a later version owns `challenger` already otherwise
        client.set_registered_model_alias(name, CHALLENGER, number)
    if mv.tags.get("gate_decision") == CHAMPION:
        _set_champion(client, name, number, reason="gate")
    if mv.run_id:
        client.set_tag(mv.run_id, "registered_version", number)
    client.set_model_version_tag(name, number, REGISTRATION_TAG, "complete")
    log.warning("%s/%s: finished a registration a killed run left half-done", name, number)
    return client.get_model_version(name, number)


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
                  "calibration_slope", "positives", "n", "margin_roc_auc", "margin_pr_auc",
                  "margin_precision_at_k", "margin_recall_at_k", "raw_brier", "raw_ece"):
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


def _gate_label(decision: GateDecision) -> str:
    """The `gate_decision` tag: the alias the gate gave the version."""
    return CHAMPION if decision.promote else CHALLENGER


@dataclass(frozen=True)
class _TestBlock:
    """The run's out-of-time test block, cut from the table given to `fit_evaluate`."""

    X: pd.DataFrame
    y: np.ndarray
    time: pd.Series

    @classmethod
    def of(cls, result: FitResult, X: pd.DataFrame, y: pd.Series,
           time: pd.Series) -> _TestBlock:
        mask = result.test_mask
        return cls(X.iloc[np.flatnonzero(mask)], pd.Series(y).to_numpy(dtype=np.float64)[mask],
                   pd.Series(pd.Series(time).to_numpy()[mask]))


def _judge(client: MlflowClient, result: FitResult, test: _TestBlock, workspace: Workspace,
           gate_config: GateConfig) -> GateDecision:
    """The gate against this workspace's champion (another workspace's is refused)."""
    champ_mv = registry.champion(client, workspace)
    champion = None
    if champ_mv is not None:
        champion = registry.load_version(champ_mv.name, champ_mv.version)
        registry.check_meta(champion.meta, workspace, f"{champ_mv.name}/{champ_mv.version}")
    return decide(result.test_probability, test.y, test.time, result.test_metrics, champion,
                None if champ_mv is None else str(champ_mv.version),
                test.X.reset_index(drop=True), gate_config, result.config.k_pct,
                baselines=floor_baselines(result.comparison), n_bins=result.config.n_bins,
                weight=result.test_weight)


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment `name`, created on first use with its artifacts beside the store."""
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        if artifact_location is None:
            # MLflow's default is ./mlruns relative to the cwd: pin it next to the store.
            from doudi.settings import get_settings

            artifact_location = (get_settings().mlruns_dir / "artifacts").as_uri()
        client.create_experiment(name, artifact_location=artifact_location)
    exp = mlflow.get_experiment_by_name(name)
    assert exp is not None
    return str(exp.experiment_id)


def _write_model(root: Path, result: FitResult, test: _TestBlock, as_of: str,
                 workspace: Workspace, counties: Sequence[str]) -> None:
    """The production artifact, stamped with the registered month and the workspace, with
    an MLflow signature and a synthetic input example."""
    from mlflow.models import infer_signature

    example = _input_example(test.X, result.artifact)
    signature = infer_signature(example, result.artifact.predict_proba(example))
    result.artifact.meta["as_of"] = as_of  # the registered month, whatever fit was told
    registry.stamp(result.artifact.meta, workspace, counties)
    result.artifact.extra_json = {
        "signature.json": signature.to_dict(),
        "input_example.json": json.loads(example.to_json(orient="split", index=False)),
    }
    result.artifact.save(root / "model")


def _write_tables(tables: Path, result: FitResult) -> None:
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


def _log_run(client: MlflowClient, result: FitResult, test: _TestBlock, decision: GateDecision,
             *, as_of: str, workspace: Workspace, counties: Sequence[str],
             artifact_location: str | None, intended_use: str | None) -> tuple[str, str]:
    """One MLflow run: params, metrics, tags and the artifacts (model/, plots/, tables/,
    model_card.md, gate.json). Returns (run id, the model folder's URI)."""
    import mlflow

    experiment_id = _experiment_id(client, workspace.model_name, artifact_location)
    with tempfile.TemporaryDirectory(prefix="doudi-train-") as tmp:
        root = Path(tmp)
        _write_model(root, result, test, as_of, workspace, counties)
        (root / "plots").mkdir()
        write_plots(result, test.X, root / "plots")
        _write_tables(root / "tables", result)
        card = model_card(result, as_of, decision, model_name=workspace.model_name,
                          intended_use=intended_use)
        (root / "model_card.md").write_text(card, encoding="utf-8")
        (root / "gate.json").write_text(json.dumps(asdict(decision), indent=1))

        with mlflow.start_run(experiment_id=experiment_id, run_name=f"as_of={as_of}") as run:
            mlflow.log_params(_flat_params(result, as_of))
            mlflow.log_metrics(_metrics(result))
            mlflow.set_tags({"as_of": as_of, "data_fingerprint": result.fingerprint,
                             registry.WORKSPACE_KEY: workspace.fingerprint,
                             "gate_decision": _gate_label(decision),
                             "gate_window": decision.window})
            mlflow.log_artifacts(str(root))
            return run.info.run_id, f"{run.info.artifact_uri}/model"


def _register_version(client: MlflowClient, result: FitResult, decision: GateDecision,
                      run_id: str, source: str, *, as_of: str, time: pd.Series,
                      workspace: Workspace, counties: Sequence[str]) -> TrackOutcome:
    """A new version of the workspace's model: `challenger`, and `champion` if the gate
    said so. Tagged `pending` until its aliases are set (see `finish_registration`)."""
    from mlflow.exceptions import MlflowException

    model_name = workspace.model_name
    with contextlib.suppress(MlflowException):  # it already exists
        client.create_registered_model(model_name, description="doudi household risk model")
    tags = {"as_of": as_of, "data_fingerprint": result.fingerprint,
            "gate_decision": _gate_label(decision),
            "gate_window": decision.window,
            FLOOR_TAG: "passed" if decision.floor_passed else "failed",
            REGISTRATION_TAG: "pending",
            "gate_reasons": " | ".join(decision.reasons)[:4900],
            **registry.version_tags(workspace, counties),
            "trained_from": _period_text(pd.Series(time).min()),
            "trained_through": str(result.artifact.meta.get("trained_through", "")),
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
    client.set_model_version_tag(model_name, version, REGISTRATION_TAG, "complete")
    return TrackOutcome(run_id, version, aliases, False, decision)


def track_run(
    result: FitResult,
    X: pd.DataFrame,
    y: pd.Series,
    time: pd.Series,
    *,
    as_of: str,
    workspace: Workspace,
    counties: Sequence[str] = (),
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
    gate_config: GateConfig | None = None,
    intended_use: str | None = None,
) -> TrackOutcome:
    """Log the run, register a new version of the workspace's model, apply the champion gate.

    `X`, `y`, `time` are the table given to `fit_evaluate` (the test block is taken from it);
    `counties` the county codes it covers (recorded with the version, informational);
    `intended_use` the model card's statement of what the model is for (none: no section).
    Idempotent: the same `as_of` and data fingerprint return the existing version. The
    experiment is named like the registered model, so workspaces' runs stay apart too.
    """
    client = registry.client(tracking_uri)
    existing = registered_outcome(client, as_of, result.fingerprint, workspace)
    if existing is not None:
        return existing
    test = _TestBlock.of(result, X, y, time)
    decision = _judge(client, result, test, workspace, gate_config or GateConfig())
    run_id, source = _log_run(client, result, test, decision, as_of=as_of, workspace=workspace,
                              counties=counties, artifact_location=artifact_location,
                              intended_use=intended_use)
    return _register_version(client, result, decision, run_id, source, as_of=as_of, time=time,
                             workspace=workspace, counties=counties)


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


FORCED_REASON = "manual promote (forced past gate)"


def promote(version: str | int, *, workspace: Workspace, tracking_uri: str | None = None,
            force: bool = False, actor: str | None = None) -> str:
    """Operator override: make `version` (a number or `models:/NAME/N`) the champion,
    recorded in the history; returns the version number. Unknown versions, non-numbers
    and other workspaces' versions are refused (UserError); so is a version that failed
    the gate's floor or calibration check (or has no record of them), unless `force`:
    then its `champion_reason` tag says "manual promote (forced past gate)" and
    `champion_forced_by` names `actor` (the operator)."""
    client = registry.client(tracking_uri)
    mv = registry.version(client, workspace, version)
    number = str(mv.version)
    tags = mv.tags or {}
    passed = tags.get(FLOOR_TAG) == "passed"
    if not passed and not force:
        failed = [r for r in str(tags.get("gate_reasons", "")).split(" | ")
                  if r.endswith(KEPT) and (r.startswith("floor:") or r.startswith("calibration"))]
        why = (failed[0].removesuffix(f"; {KEPT}") + (f" (+{len(failed) - 1} more)"
                                                      if len(failed) > 1 else "")
               if failed else "no record of the gate's floor: registered before it")
        raise UserError(f"{workspace.model_name}/{number} did not clear the gate's floor "
                        f"({why}); see `doudi models list`; promote it anyway with --force "
                        "(recorded)")
    reason = "manual promote" if passed else FORCED_REASON
    _set_champion(client, workspace.model_name, number, reason=reason)
    if not passed:
        client.set_model_version_tag(workspace.model_name, number, "champion_forced_by",
                                     (actor or "unknown")[:64])
        log.warning("%s/%s promoted past the gate's floor (forced)", workspace.model_name, number)
    return number


def rollback(*, workspace: Workspace, tracking_uri: str | None = None) -> str:
    """Return `champion` to the previous champion; returns that version."""
    model_name = workspace.model_name
    client = registry.client(tracking_uri)
    try:
        history = _history(client, model_name)
    except Exception as err:  # MlflowException: no such registered model
        raise UserError(f"{model_name}: no champion to roll back (train one first)") from err
    if len(history) < 2:
        raise UserError(f"{model_name}: no previous champion to roll back to "
                        f"(history {history})")
    current, previous = history[-1], history[-2]
    registry.check_version(client.get_model_version(model_name, previous), workspace)
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history[:-1]))
    client.set_model_version_tag(model_name, current, "rolled_back", "true")
    client.set_model_version_tag(model_name, previous, "champion_reason", "rollback")
    return previous
