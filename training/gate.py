"""The promotion gate: may a new version become champion? Pure judgement, no MLflow.

Two questions, both answered on out-of-time rows (docs/training.md "The gate"):
  * the floor (`floor_check`, with `calibration_ranking_check`): on its own test block, is
    the version better than chance, the departments' rules and the logistic baseline, and
    calibrated? Every version must clear it, the first one included;
  * the comparison (`decide`): on the rows the champion never trained on, is the challenger
    within tolerance of the champion?
Each failed check is one reason line ending "kept as challenger". `training.tracking`
records the decision in the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from doudi.model_artifact import ModelArtifact
from doudi.settings import GATE_FLOOR_METRICS, Settings, check_floor_lifts
from training import metrics

# A check's verdict and its reason lines.
Verdict = tuple[bool, list[str]]


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


def ece_with_noise(y: np.ndarray, p: np.ndarray, n_bins: int = 20,
                   w: np.ndarray | None = None) -> tuple[float, float]:
    """(ECE, the ECE a perfectly calibrated model would show by chance on the same bins).

    ECE over equal-frequency bins (`metrics.expected_calibration_error`). Were every p_i the
    true probability, a bin's observed rate would deviate from its mean p by a mean absolute
    sqrt(2/pi) * sqrt(sum p_i(1 - p_i)) / n_b (normal approximation): on a test block of
    2,700 rows at 3% positives that alone is ~0.012, as large as a good model's ECE, so a
    fixed ECE limit would judge sample size, not calibration. With sample weights `w` the
    ECE is the weighted one and the chance term stays that of the rows actually observed
    (a sample is noisier than the roll it stands for, never less noisy).
    """
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    ece = metrics.expected_calibration_error(y_arr, p_arr, n_bins, w=w)
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


def _chance_check(recorded: Mapping[str, float], positives: int, negatives: int,
                  config: GateConfig) -> Verdict:
    """ROC-AUC (as served: by the margin) `min_z_over_chance` standard errors above 0.5."""
    auc = _ranking_value(recorded, "roc_auc")
    if not math.isfinite(auc):
        return True, []
    se = auc_standard_error(auc, positives, negatives)
    z = (auc - 0.5) / se if se > 0 else math.inf
    line = (f"floor: roc_auc {auc:.4f} is {z:.1f} standard errors above chance (0.5; "
            f"need {config.min_z_over_chance:g})")
    if not z >= config.min_z_over_chance:
        return False, [f"{line}: no better than a coin on this test block; {KEPT}"]
    return True, [line]


def _lift_checks(recorded: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
                 config: GateConfig) -> Verdict:
    """Each floor metric at least the best rule's and the logistic baseline's plus their
    margins; a missing baseline fails (nothing shows the model beats it)."""
    ok, reasons = True, []
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
    return ok, reasons


def _ece_check(y: np.ndarray, p: np.ndarray, config: GateConfig, n_bins: int,
               w: np.ndarray | None = None) -> Verdict:
    """ECE within `max_ece_excess` of what chance gives a calibrated model on these bins."""
    ece, noise = ece_with_noise(y, p, n_bins, w)
    limit = noise + config.max_ece_excess
    if not ece <= limit:
        return False, [f"floor: ECE {ece:.4f} on the test block > {limit:.4f} (chance "
                       f"{noise:.4f} + {config.max_ece_excess:g}): the risks shown are "
                       f"miscalibrated; {KEPT}"]
    return True, [f"floor: ECE {ece:.4f} on the test block <= {limit:.4f} (chance "
                  f"{noise:.4f} + {config.max_ece_excess:g})"]


def _top_band_check(y: np.ndarray, p: np.ndarray, config: GateConfig, k_pct: float,
                    w: np.ndarray | None = None) -> Verdict:
    """Observed / predicted rate of the top `k_pct`% (the alerted band) within bounds
    (of the weighted roll, with sample weights `w`)."""
    top = metrics.top_k_mask(p, k_pct, w)
    band_w = np.ones(int(top.sum())) if w is None else np.asarray(w, dtype=np.float64)[top]
    predicted = float(np.average(p[top], weights=band_w))
    observed = float(np.average(y[top], weights=band_w))
    ratio = observed / predicted if predicted > 0 else math.inf
    low, high = config.top_band_ratio
    band = (f"top {k_pct:g}% ({int(top.sum())} rows): observed rate {observed:.4f} is "
            f"{ratio:.2f}x the predicted {predicted:.4f}")
    if not low <= ratio <= high:
        return False, [f"floor: {band}, outside [{low:g}, {high:g}]: the alerted band's "
                       f"risks are miscalibrated; {KEPT}"]
    return True, [f"floor: {band}, within [{low:g}, {high:g}]"]


def floor_check(prob: np.ndarray, y: np.ndarray, recorded: Mapping[str, float],
                baselines: Mapping[str, Mapping[str, float]], config: GateConfig,
                k_pct: float, n_bins: int = 20, w: np.ndarray | None = None) -> Verdict:
    """(ok, reason lines): may this version be champion at all, champion or not?

    On its out-of-time test block (`prob` calibrated probabilities, `y` labels, `recorded`
    its test metrics): enough positives to tell, ROC-AUC `min_z_over_chance` standard
    errors above 0.5 (on shuffled labels the baselines sit at chance too, so beating them
    alone proves nothing), each floor metric at least the best
    departments' rule's and the logistic baseline's plus their margins (a missing baseline
    fails: nothing shows the model beats it), ECE within `max_ece_excess` of chance, and
    the observed/predicted rate of the top `k_pct`% (the alerted band) within bounds.
    Every failed check is one line ending "kept as challenger". `w`: the test block's
    sample weights (a down-sampled training table), used by the calibration checks; the
    positives and the AUC's standard error count rows actually observed.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(prob, dtype=np.float64)
    positives = int(y_arr.sum())
    if positives < config.min_test_positives or positives == len(y_arr):
        return False, [
            f"floor: the test block has {positives} positive(s) in {len(y_arr)} rows (fewer "
            f"than {config.min_test_positives} is too little to show that this version beats "
            f"the departments' rules and the logistic baseline); {KEPT}"]
    checks = [_chance_check(recorded, positives, len(y_arr) - positives, config),
              _lift_checks(recorded, baselines, config),
              _ece_check(y_arr, p_arr, config, n_bins, w),
              _top_band_check(y_arr, p_arr, config, k_pct, w)]
    return all(ok for ok, _ in checks), [line for _, lines in checks for line in lines]


@dataclass(frozen=True)
class _Window:
    """Challenger and champion metrics on one comparison window."""

    name: str  # "unseen-by-champion" or "recorded-test-metrics"
    unseen_rows: int  # rows after the champion's trained-through period
    challenger: dict[str, float]
    champion: dict[str, float]


def _comparison_window(challenger_prob: np.ndarray, y_window: np.ndarray,
                       window_time: pd.Series, challenger_recorded: Mapping[str, float],
                       champion: ModelArtifact, X_window: pd.DataFrame, config: GateConfig,
                       k_pct: float, w: np.ndarray | None = None) -> _Window:
    """Both models scored on the rows the champion never saw when there are enough of them
    (and the table still has the champion's features); else their recorded test metrics."""
    through = float(champion.meta.get("trained_through_ordinal", math.inf))
    unseen = metrics.month_ordinal(window_time) > through
    y_unseen = y_window[unseen]
    comparable = set(champion.feature_names) <= set(X_window.columns)
    if comparable and unseen.sum() >= config.min_window_rows \
            and y_unseen.sum() >= config.min_window_positives and y_unseen.sum() < len(y_unseen):
        champ_margin = champion.raw_margin(X_window.loc[unseen])
        w_unseen = None if w is None else np.asarray(w, dtype=np.float64)[unseen]
        chal = metrics.binary_summary(y_unseen, challenger_prob[unseen], k_pct, w=w_unseen)
        champ = metrics.binary_summary(y_unseen, champion.calibrator.apply(champ_margin), k_pct,
                                       w=w_unseen)
        # Serving ranks by the margin: an old step-calibrated champion is judged as it ranks.
        champ.update(metrics.ranking_summary(y_unseen, champ_margin, k_pct, w=w_unseen))
        return _Window("unseen-by-champion", int(unseen.sum()), chal, champ)
    champ = {k: float(v) for k, v in champion.meta.get("test_metrics", {}).items()}
    return _Window("recorded-test-metrics", int(unseen.sum()), dict(challenger_recorded), champ)


def _tolerance_check(metric: str, challenger: float, champion: float, tolerance: float,
                     window: str) -> tuple[bool, str]:
    """The challenger's `metric` no worse than the champion's by more than `tolerance`."""
    if not math.isfinite(challenger):
        return False, f"{metric}: challenger value undefined on the window ({window})"
    if math.isfinite(champion) and challenger < champion - tolerance:
        return False, (f"{metric}: challenger {challenger:.4f} < champion {champion:.4f} - "
                       f"tolerance {tolerance} ({window})")
    return True, (f"{metric}: challenger {challenger:.4f} vs champion {champion:.4f}, within "
                  f"tolerance {tolerance} ({window})")


def _tolerance_checks(challenger: Mapping[str, float], champion: Mapping[str, float],
                      tolerances: Mapping[str, float], window: str) -> Verdict:
    """No gated metric worse than the champion's by more than its tolerance."""
    checks = [_tolerance_check(m, challenger[m], champion[m], tol, window)
              for m, tol in tolerances.items()]
    return all(ok for ok, _ in checks), [line for _, line in checks]


def decide(challenger_prob: np.ndarray, y_window: np.ndarray, window_time: pd.Series,
         challenger_recorded: dict[str, float], champion: ModelArtifact | None,
         champion_version: str | None, X_window: pd.DataFrame | None,
         config: GateConfig, k_pct: float, *,
         baselines: Mapping[str, Mapping[str, float]] | None = None,
         n_bins: int = 20, weight: np.ndarray | None = None) -> GateDecision:
    """Compare the challenger with the champion on the latest window the champion never saw.

    Rows after the champion's `trained_through` period are scored by both models. When that
    window is too small (e.g. same-month retrain), the champion's recorded out-of-time test
    metrics are compared with the challenger's instead; the reasons say which was used.
    Ranking metrics of the champion come from its raw margin (serving ranks by it).
    Whatever the comparison, a calibrator that lowers the challenger's test-block ranking
    metrics refuses promotion (`calibration_ranking_check`), and so does a version below
    the floor (`floor_check`: `challenger_prob`/`y_window` are its test block there,
    `baselines` from `floor_baselines`), the first version included. `weight`: the test
    block's sample weights when the training table was down-sampled (every figure is then
    the weighted one, as in training).
    """
    calibration_ok, calibration_reasons = calibration_ranking_check(challenger_recorded)
    floor_ok, floor_reasons = floor_check(challenger_prob, y_window, challenger_recorded,
                                          baselines or {}, config, k_pct, n_bins, weight)
    own_ok = calibration_ok and floor_ok
    if champion is None or X_window is None:
        first = ("no champion yet: the first version becomes champion" if own_ok else
                 "no champion yet, and this version is refused above: no champion")
        return GateDecision(own_ok, [*calibration_reasons, *floor_reasons, first], None,
                            "first-version", floor_passed=own_ok)
    window = _comparison_window(challenger_prob, y_window, window_time, challenger_recorded,
                                champion, X_window, config, k_pct, weight)
    chal_m = {m: float(window.challenger.get(m, math.nan)) for m in config.tolerances}
    champ_m = {m: float(window.champion.get(m, math.nan)) for m in config.tolerances}
    within, tolerance_reasons = _tolerance_checks(chal_m, champ_m, config.tolerances,
                                                  window.name)
    return GateDecision(own_ok and within,
                        [*calibration_reasons, *floor_reasons, *tolerance_reasons],
                        champion_version, window.name, window.unseen_rows, chal_m, champ_m,
                        floor_passed=own_ok)
