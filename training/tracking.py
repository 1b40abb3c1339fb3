"""MLflow: log a training run, register the model, gate champion/challenger, promote, roll back.

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
The version's source is the run's `model/` artifact directory: the native artifact that
`doudi.model_artifact.load_artifact("models:/<name>@champion")` loads (no pyfunc).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from doudi import registry
from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact, load_artifact
from doudi.registry import CHALLENGER, CHAMPION, Workspace
from doudi.settings import GATE_FLOOR_METRICS, Settings, check_floor_lifts
from training import metrics
from training.core import FitResult

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


def _settings_default(name: str) -> Any:
    """A `Settings` field's default: the floor's defaults live in one place."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


class GateConfig(BaseModel):
    """The floor every champion must clear, then challenger vs champion on the same window.

    Floor (first version or not; `floor_check`): on its own out-of-time test block the
    version beats the best departments' rule and the logistic baseline by the margins per
    metric, its ECE is within `max_ece_excess` of what chance gives a calibrated model, and
    the observed/predicted rate in the top capacity band is within `top_band_ratio`.
    Defaults: `doudi.settings.Settings`' `gate_*` fields (`from_settings`).
    """

    tolerances: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.01, "pr_auc": 0.02},
        description="metric -> largest tolerated drop (absolute) vs the champion.")
    min_window_rows: int = Field(default=100, ge=1)
    min_window_positives: int = Field(default=5, ge=1)
    min_lift_over_rules: dict[str, float] = Field(
        default_factory=lambda: _settings_default("gate_min_lift_over_rules"))
    min_lift_over_logistic: dict[str, float] = Field(
        default_factory=lambda: _settings_default("gate_min_lift_over_logistic"))
    max_ece_excess: float = Field(
        default_factory=lambda: _settings_default("gate_max_ece_excess"), ge=0, le=1)
    top_band_ratio: tuple[float, float] = Field(default_factory=lambda: (
        _settings_default("gate_top_band_ratio_min"),
        _settings_default("gate_top_band_ratio_max")))
    min_test_positives: int = Field(
        default_factory=lambda: _settings_default("gate_min_test_positives"), ge=1)
    min_z_over_chance: float = Field(
        default_factory=lambda: _settings_default("gate_min_z_over_chance"), ge=0)

    @field_validator("min_lift_over_rules", "min_lift_over_logistic")
    @classmethod
    def _floor_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        return check_floor_lifts(v)

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(min_lift_over_rules=settings.gate_min_lift_over_rules,
                   min_lift_over_logistic=settings.gate_min_lift_over_logistic,
                   max_ece_excess=settings.gate_max_ece_excess,
                   top_band_ratio=(settings.gate_top_band_ratio_min,
                                   settings.gate_top_band_ratio_max),
                   min_test_positives=settings.gate_min_test_positives,
                   min_z_over_chance=settings.gate_min_z_over_chance)


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    champion_version: str | None
    window: str  # "unseen-by-champion", "recorded-test-metrics" or "first-version"
    window_rows: int = 0
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    # The version's own checks (calibration ranking + floor), independent of any champion:
    # `promote` refuses a version that failed them unless forced.
    floor_passed: bool = False


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


def finish_registration(client: MlflowClient, mv: ModelVersion) -> ModelVersion:
    """A version a killed run registered but did not finish: its aliases as the gate decided
    (`gate_decision` tag), then `complete`. Others (complete, or older than the tag) as is."""
    if (mv.tags or {}).get(REGISTRATION_TAG) != "pending":
        return mv
    name, number = mv.name, str(mv.version)
    newer = [v for v in registry.known_versions(client, name) if int(v.version) > int(number)]
    if not newer:  # a later version owns `challenger` already otherwise
        client.set_registered_model_alias(name, CHALLENGER, number)
    if mv.tags.get("gate_decision") == "champion":
        _set_champion(client, name, number, reason="gate")
    if mv.run_id:
        client.set_tag(mv.run_id, "registered_version", number)
    client.set_model_version_tag(name, number, REGISTRATION_TAG, "complete")
    log.warning("%s/%s: finished a registration a killed run left half-done", name, number)
    return client.get_model_version(name, number)


def _finite(d: dict[str, float]) -> bool:
    return all(isinstance(v, float | int) and math.isfinite(v) for v in d.values())


# Calibration may not change the ranking: these test-block metrics after calibration must
# equal (to float noise) the same metrics ranked by the raw margin, `margin_<name>`.
# PR-AUC too: on a 3,000-household province the legacy steps RAISED ROC-AUC by luck
# (0.8185 vs 0.8168) while cutting PR-AUC from 0.220 to 0.189.
CALIBRATION_RANKING_METRICS = ("roc_auc", "pr_auc", "precision_at_k")
CALIBRATION_TOLERANCE = 1e-9


def calibration_ranking_check(recorded: Mapping[str, float]) -> tuple[bool, list[str]]:
    """(ok, reason lines): does the calibrated probability rank the test block as the margin?

    A calibrator that ties or reorders households (e.g. the legacy isotonic steps) lowers
    ROC-AUC, PR-AUC or precision at capacity; such a version must not become champion. Metrics
    recorded without `margin_*` (older runs) are not checked.
    """
    ok, reasons = True, []
    for name in CALIBRATION_RANKING_METRICS:
        before = float(recorded.get(f"margin_{name}", math.nan))
        after = float(recorded.get(name, math.nan))
        if not (math.isfinite(before) and math.isfinite(after)):
            continue
        if after < before - CALIBRATION_TOLERANCE:
            ok = False
            reasons.append(f"calibration lowers {name} on the test block: {after:.4f} after "
                           f"vs {before:.4f} by margin (a calibrator must not tie or reorder "
                           "households); kept as challenger")
        else:
            reasons.append(f"calibration keeps {name} on the test block: {after:.4f} after, "
                           f"{before:.4f} by margin")
    return ok, reasons


RULES, LOGISTIC = "rules", "logistic"
_BASELINE_LABEL = {RULES: "departments' rules", LOGISTIC: "logistic baseline"}
KEPT = "kept as challenger"


def floor_baselines(comparison: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The floor's baselines from `FitResult.comparison` (test block): `logistic`, and
    `rules` = the best departments' rule per metric (beating the best beats them all)."""
    out: dict[str, dict[str, float]] = {}
    if "scorer" not in comparison.columns:
        return out
    scorer = comparison["scorer"].astype(str)
    rows = {LOGISTIC: comparison[scorer == LOGISTIC], RULES: comparison[scorer.str.startswith(
        "rule:")]}
    for key, frame in rows.items():
        if len(frame):
            out[key] = {m: float(pd.to_numeric(frame[m], errors="coerce").max())
                        for m in GATE_FLOOR_METRICS if m in frame.columns}
    return out


def ece_with_noise(y: np.ndarray, p: np.ndarray, n_bins: int = 20) -> tuple[float, float]:
    """(ECE, the ECE a perfectly calibrated model would show by chance on the same bins).

    ECE over equal-frequency bins (`metrics.expected_calibration_error`). Were every p_i the
    true probability, a bin's observed rate would deviate from its mean p by a mean absolute
    sqrt(2/pi) * sqrt(sum p_i(1 - p_i)) / n_b (normal approximation): on a test block of
    2,700 rows at 3% positives that alone is ~0.012, as large as a good model's ECE, so a
    fixed ECE limit would judge sample size, not calibration.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    ece = metrics.expected_calibration_error(y_arr, p_arr, n_bins)
    order = np.argsort(p_arr, kind="stable")
    noise = 0.0
    for idx in np.array_split(order, min(n_bins, max(len(order), 1))):
        if len(idx):
            q = p_arr[idx]
            noise += len(idx) / len(p_arr) * math.sqrt(2 / math.pi) * math.sqrt(
                float(np.sum(q * (1 - q)))) / len(idx)
    return ece, noise


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC-AUC from its value and class sizes."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc)
           + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def _ranking_value(recorded: Mapping[str, float], name: str) -> float:
    """The version's test-block ranking metric as serving ranks: by the raw margin when
    recorded (`margin_<name>`), else the calibrated probability's."""
    value = float(recorded.get(f"margin_{name}", math.nan))
    return value if math.isfinite(value) else float(recorded.get(name, math.nan))


def floor_check(prob: np.ndarray, y: np.ndarray, recorded: Mapping[str, float],
                baselines: Mapping[str, Mapping[str, float]], config: GateConfig,
                k_pct: float, n_bins: int = 20) -> tuple[bool, list[str]]:
    """(ok, reason lines): may this version be champion at all, champion or not?

    On its out-of-time test block (`prob` calibrated probabilities, `y` labels, `recorded`
    its test metrics): enough positives to tell, ROC-AUC `min_z_over_chance` standard
    errors above 0.5 (on shuffled labels the baselines sit at chance too, so beating them
    alone proves nothing), each floor metric at least the best
    departments' rule's and the logistic baseline's plus their margins (a missing baseline
    fails: nothing shows the model beats it), ECE within `max_ece_excess` of chance, and
    the observed/predicted rate of the top `k_pct`% (the alerted band) within bounds.
    Every failed check is one line ending "kept as challenger".
    """
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(prob, dtype=np.float64)
    positives = int(y_arr.sum())
    if positives < config.min_test_positives or positives == len(y_arr):
        return False, [
            f"floor: the test block has {positives} positive(s) in {len(y_arr)} rows (fewer "
            f"than {config.min_test_positives} is too little to show that this version beats "
            f"the departments' rules and the logistic baseline); {KEPT}"]
    ok, reasons = True, []
    auc = _ranking_value(recorded, "roc_auc")
    if math.isfinite(auc):
        se = auc_standard_error(auc, positives, len(y_arr) - positives)
        z = (auc - 0.5) / se if se > 0 else math.inf
        chance = (f"floor: roc_auc {auc:.4f} is {z:.1f} standard errors above chance (0.5; "
                  f"need {config.min_z_over_chance:g})")
        if not z >= config.min_z_over_chance:
            ok = False
            chance = f"{chance}: no better than a coin on this test block; {KEPT}"
        reasons.append(chance)
    lifts = {RULES: config.min_lift_over_rules, LOGISTIC: config.min_lift_over_logistic}
    for key, margins in lifts.items():
        label, base = _BASELINE_LABEL[key], baselines.get(key)
        if base is None:
            ok = False
            reasons.append(f"floor: no {label} on the test block to compare with (train with "
                           f"{'rule_scores' if key == RULES else 'logistic_baseline'}); {KEPT}")
            continue
        for name, margin in margins.items():
            mine, theirs = _ranking_value(recorded, name), float(base.get(name, math.nan))
            if not (math.isfinite(mine) and math.isfinite(theirs)):
                ok = False
                reasons.append(f"floor: {name} undefined on the test block (model {mine:.4f}, "
                               f"{label} {theirs:.4f}); {KEPT}")
            elif mine < theirs + margin:
                ok = False
                reasons.append(f"floor: {name} {mine:.4f} does not beat the {label} "
                               f"{theirs:.4f} by {margin:+g} on the test block; {KEPT}")
            else:
                reasons.append(f"floor: {name} {mine:.4f} vs the {label} {theirs:.4f}: lift "
                               f"{mine - theirs:+.4f} >= {margin:+g}")
    ece, noise = ece_with_noise(y_arr, p_arr, n_bins)
    limit = noise + config.max_ece_excess
    if not ece <= limit:
        ok = False
        reasons.append(f"floor: ECE {ece:.4f} on the test block > {limit:.4f} (chance "
                       f"{noise:.4f} + {config.max_ece_excess:g}): the risks shown are "
                       f"miscalibrated; {KEPT}")
    else:
        reasons.append(f"floor: ECE {ece:.4f} on the test block <= {limit:.4f} (chance "
                       f"{noise:.4f} + {config.max_ece_excess:g})")
    top = metrics.top_k_mask(p_arr, k_pct)
    predicted, observed = float(p_arr[top].mean()), float(y_arr[top].mean())
    ratio = observed / predicted if predicted > 0 else math.inf
    low, high = config.top_band_ratio
    band = (f"top {k_pct:g}% ({int(top.sum())} rows): observed rate {observed:.4f} is "
            f"{ratio:.2f}x the predicted {predicted:.4f}")
    if not low <= ratio <= high:
        ok = False
        reasons.append(f"floor: {band}, outside [{low:g}, {high:g}]: the alerted band's "
                       f"risks are miscalibrated; {KEPT}")
    else:
        reasons.append(f"floor: {band}, within [{low:g}, {high:g}]")
    return ok, reasons


def gate(challenger_prob: np.ndarray, y_window: np.ndarray, window_time: pd.Series,
         challenger_recorded: dict[str, float], champion: ModelArtifact | None,
         champion_version: str | None, X_window: pd.DataFrame | None,
         config: GateConfig, k_pct: float, *,
         baselines: Mapping[str, Mapping[str, float]] | None = None,
         n_bins: int = 20) -> GateDecision:
    """Compare the challenger with the champion on the latest window the champion never saw.

    Rows after the champion's `trained_through` period are scored by both models. When that
    window is too small (e.g. same-month retrain), the champion's recorded out-of-time test
    metrics are compared with the challenger's instead; the reasons say which was used.
    Ranking metrics of the champion come from its raw margin (serving ranks by it).
    Whatever the comparison, a calibrator that lowers the challenger's test-block ranking
    metrics refuses promotion (`calibration_ranking_check`), and so does a version below
    the floor (`floor_check`: `challenger_prob`/`y_window` are its test block there,
    `baselines` from `floor_baselines`), the first version included.
    """
    calibration_ok, calibration_reasons = calibration_ranking_check(challenger_recorded)
    floor_ok, floor_reasons = floor_check(challenger_prob, y_window, challenger_recorded,
                                          baselines or {}, config, k_pct, n_bins)
    own_ok = calibration_ok and floor_ok
    if champion is None or X_window is None:
        first = ("no champion yet: the first version becomes champion" if own_ok else
                 "no champion yet, and this version is refused above: no champion")
        return GateDecision(own_ok, [*calibration_reasons, *floor_reasons, first], None,
                            "first-version", floor_passed=own_ok)
    through = float(champion.meta.get("trained_through_ordinal", math.inf))
    unseen = metrics.month_ordinal(window_time) > through
    y_unseen = y_window[unseen]
    names = list(config.tolerances)
    comparable = set(champion.feature_names) <= set(X_window.columns)
    if comparable and unseen.sum() >= config.min_window_rows \
            and y_unseen.sum() >= config.min_window_positives and y_unseen.sum() < len(y_unseen):
        champ_margin = champion.raw_margin(X_window.loc[unseen])
        chal = metrics.binary_summary(y_unseen, challenger_prob[unseen], k_pct)
        champ = metrics.binary_summary(y_unseen, champion.calibrator.apply(champ_margin), k_pct)
        # Serving ranks by the margin: an old step-calibrated champion is judged as it ranks.
        champ.update(metrics.ranking_summary(y_unseen, champ_margin, k_pct))
        window = "unseen-by-champion"
    else:
        # Too few unseen rows, or the champion needs features this table no longer has.
        chal = dict(challenger_recorded)
        champ = {k: float(v) for k, v in champion.meta.get("test_metrics", {}).items()}
        window = "recorded-test-metrics"
    chal_m = {m: float(chal.get(m, math.nan)) for m in names}
    champ_m = {m: float(champ.get(m, math.nan)) for m in names}
    reasons = [*calibration_reasons, *floor_reasons]
    promote = own_ok
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
                        chal_m, champ_m, floor_passed=own_ok)


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
        f"- calibration: {result.calibration['method']} (chosen out of time by Brier among "
        f"the strictly increasing maps; candidates "
        f"{json.dumps(result.calibration['candidates'])})",
        "",
        *_calibration_section(result),
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
) -> TrackOutcome:
    """Log the run, register a new version of the workspace's model, apply the champion gate.

    `X`, `y`, `time` are the table given to `fit_evaluate` (the test block is taken from it);
    `counties` the county codes it covers (recorded with the version, informational).
    Idempotent: the same `as_of` and data fingerprint return the existing version. The
    experiment is named like the registered model, so workspaces' runs stay apart too.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    model_name = experiment = workspace.model_name
    client = registry.client(tracking_uri)
    gate_config = gate_config or GateConfig()
    existing = find_existing_version(client, as_of, result.fingerprint, workspace)
    if existing is not None:
        log.info("as_of %s with fingerprint %s is already version %s; not registering again",
                 as_of, result.fingerprint, existing)
        mv = finish_registration(client, client.get_model_version(model_name, existing))
        return TrackOutcome(mv.run_id, existing, list(mv.aliases), True, None)

    mask = result.test_mask
    X_test = X.iloc[np.flatnonzero(mask)]
    y_test = pd.Series(y).to_numpy(dtype=np.float64)[mask]
    t_test = pd.Series(pd.Series(time).to_numpy()[mask])

    champ_mv = registry.champion(client, workspace)  # another workspace's: refused
    champion = None
    if champ_mv is not None:
        champion = load_artifact(f"models:/{model_name}/{champ_mv.version}")
        registry.check_meta(champion.meta, workspace, f"{model_name}/{champ_mv.version}")
    decision = gate(result.test_probability, y_test, t_test, result.test_metrics, champion,
                    None if champ_mv is None else str(champ_mv.version),
                    X_test.reset_index(drop=True), gate_config, result.config.k_pct,
                    baselines=floor_baselines(result.comparison), n_bins=result.config.n_bins)

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
        registry.stamp(result.artifact.meta, workspace, counties)
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
                             registry.WORKSPACE_KEY: workspace.fingerprint,
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
    from doudi.errors import UserError

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
