"""Scoring: calibrated risk, rank, tier (分层), hardship types (分类), departments, rules.

`score(features_frame, artifact, settings, as_of)` returns one row per in-scope
household. The fast path encodes the frame once to a float matrix and predicts in
one LightGBM call with `settings.workers` threads; contributions are computed for
alerted households only.

Tiers (settings.tiers, shares of the in-scope households, ranks by risk):
red = top `red_top_pct` or risk >= `red_min_risk`; orange = top `orange_top_pct`;
yellow = top `yellow_top_pct`. Nothing beyond `capacity_pct` (caseworker capacity)
and nothing below `min_alert_risk` is a model alert. A household that only the
departments' rules flag is an alert too (`source` "rules", tier yellow): rule triggers
are policy obligations, outside the model's capacity budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.model_artifact import ModelArtifact
from doudi.settings import Settings
from features.registry import KEY_COLUMNS
from features.rules import evaluate_rules
from serving import routing
from serving.explain import ExplainedReason, Explainer, county_medians, reference_rows

if TYPE_CHECKING:
    from serving.store import AddReport, NewAlert

TIER_NONE = "none"
# Per-type models give P(type | identified): types at or above this are listed ...
TYPE_THRESHOLD = 0.5
# ... at most this many, and the most likely type when none reaches the threshold.
MAX_TYPES = 3
# Fallback without type models: the registry's hardship of a reason -> contract risk type.
HARDSHIP_TO_RISK_TYPE: dict[str, str | None] = {
    "medical": "illness",
    "education": "education",
    "housing": "housing",
    "employment": "unstable_employment",
    "disaster": "disaster",
    "disability": "disability",
    "income": "other",
    "demography": "labor_shortage",
    "assistance": "other",
    "context": None,  # village/county context speaks to no household hardship
}

SCORE_COLUMNS = [
    "household_key", "as_of", "county_code", "village_code", "risk", "margin", "rank",
    "tier", "alerted", "source", "risk_types", "model_risk_types", "rule_risk_types",
    "departments", "rule_triggers", "rule_score", "reasons", "model_version", "model_as_of",
]


def assign_tiers(risk: np.ndarray, settings: Settings,
                 keys: Sequence[str] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rank 1 = highest risk, tier) per household; ties broken by key for repeatability."""
    risk = np.asarray(risk, dtype=np.float64)
    n = len(risk)
    tie = np.asarray(keys) if keys is not None else np.arange(n)
    order = np.lexsort((tie, -risk))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    tiers = settings.tiers

    def top(pct: float) -> int:
        return math.ceil(n * pct / 100.0 - 1e-9)

    capacity = top(min(settings.capacity_pct, tiers.yellow_top_pct))
    eligible = (rank <= capacity) & (risk >= tiers.min_alert_risk)
    red = eligible & ((rank <= top(tiers.red_top_pct)) | (risk >= tiers.red_min_risk))
    orange = eligible & ~red & (rank <= top(tiers.orange_top_pct))
    tier = np.full(n, TIER_NONE, dtype=object)
    tier[eligible] = "yellow"
    tier[orange] = "orange"
    tier[red] = "red"
    return rank, tier


def rule_only_capped(rule_score: np.ndarray, risk: np.ndarray, model_alert: np.ndarray,
                     keys: np.ndarray, settings: Settings) -> np.ndarray:
    """Rule-fired households the model did not alert, capped at `rule_capacity_pct`.

    Department triggers are checks caseworkers must make, but unbounded they would
    swamp the visit capacity the model's tiers respect; the strongest rules (then the
    highest risk) go first.
    """
    candidates = np.flatnonzero((rule_score > 0) & ~model_alert)
    limit = math.ceil(len(risk) * settings.rule_capacity_pct / 100.0 - 1e-9)
    keep = np.zeros(len(risk), dtype=bool)
    if len(candidates) and limit > 0:
        order = np.lexsort((keys[candidates], -risk[candidates], -rule_score[candidates]))
        keep[candidates[order[:limit]]] = True
    return keep


def select_types(probabilities: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """Per row: types with P >= TYPE_THRESHOLD (at most MAX_TYPES), else the most likely."""
    names = [n for n in probabilities if n in RISK_TYPES]
    if not names:
        return []
    p = np.column_stack([probabilities[n] for n in names])
    order = np.argsort(-p, axis=1, kind="stable")
    out = []
    for i in range(len(p)):
        picked = [names[j] for j in order[i, :MAX_TYPES] if p[i, j] >= TYPE_THRESHOLD]
        out.append(tuple(picked or [names[order[i, 0]]]))
    return out


def types_from_reasons(reasons: Sequence[ExplainedReason], explainer: Explainer) -> tuple[str, ...]:
    """Fallback 分类: the hardship types of the reasons' groups, strongest first."""
    out: list[str] = []
    for reason in reasons:
        g = explainer.groups.index(reason.group_key)
        hardship = explainer.specs[int(np.flatnonzero(explainer.group_of == g)[0])].hardship
        risk_type = HARDSHIP_TO_RISK_TYPE.get(hardship)
        if risk_type and risk_type not in out:
            out.append(risk_type)
    return tuple(out[:MAX_TYPES])


def model_version_of(artifact: ModelArtifact) -> str:
    """A short version label recorded with every alert."""
    meta = artifact.meta
    for key in ("model_version", "registered_version"):
        if meta.get(key):
            return str(meta[key])[:64]
    if meta.get("data_fingerprint"):
        return f"local-{str(meta['data_fingerprint'])[:12]}"
    return "unversioned"


def score(
    features_frame: pd.DataFrame,
    artifact: ModelArtifact,
    settings: Settings,
    as_of: date | str,
    *,
    model_version: str | None = None,
    explainer: Explainer | None = None,
    explain_all: bool = False,
) -> pd.DataFrame:
    """Risk, rank, tier, types, departments, rules, source and reasons per household.

    Reasons are computed for alerted households, or for every household with
    `explain_all` (TreeSHAP for all rows: the "explain everyone on request" path).
    """
    explainer = explainer or Explainer(artifact, max_reasons=settings.max_reasons)
    as_of_day = pd.Timestamp(as_of).date()
    version = model_version or model_version_of(artifact)
    frame = features_frame.reset_index(drop=True)
    n = len(frame)
    if n == 0:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    if "as_of" in frame.columns:
        months = sorted({pd.Timestamp(v).date() for v in frame["as_of"].unique()})
        if months != [as_of_day]:
            raise ValueError(f"the feature frame is as of {sorted(map(str, months))[:3]}, "
                             f"not {as_of_day}")
    threads = settings.workers
    X = artifact.encode(frame)
    margin = np.asarray(artifact.booster.predict(X, raw_score=True, num_threads=threads))
    risk = artifact.calibrator.apply(margin)
    keys = frame["household_key"].astype(str).to_numpy()
    rank, tier = assign_tiers(risk, settings, keys)
    rules = evaluate_rules(frame, settings)
    rule_score = rules["rule_score"].to_numpy()
    model_alert = tier != TIER_NONE
    fired = rule_only_capped(rule_score, risk, model_alert, keys, settings) | (
        model_alert & (rule_score > 0)
    )
    alerted = model_alert | fired
    tier = np.where(~model_alert & fired, "yellow", tier)
    source = np.select([model_alert & fired, model_alert, fired], ["both", "model", "rules"],
                       TIER_NONE)

    reasons: list[list[ExplainedReason]] = [[] for _ in range(n)]
    model_types: list[tuple[str, ...]] = [() for _ in range(n)]
    rows = np.arange(n) if explain_all else np.flatnonzero(alerted)
    if len(rows):
        medians = county_medians(frame, artifact.feature_names)
        reference = reference_rows(medians, frame["county_code"].to_numpy()[rows])
        explained = X if explain_all else X[rows]  # no 1M-row copy when explaining all
        contrib = explainer.contributions(explained, num_threads=threads)
        for i, r in zip(rows, explainer.reasons_from(explained, contrib, reference=reference),
                        strict=True):
            reasons[i] = r
        modelled = np.flatnonzero(model_alert)
        if artifact.type_boosters:
            picked = select_types(artifact.predict_types(X[modelled], num_threads=threads))
            for i, t in zip(modelled, picked, strict=False):
                model_types[i] = t
        else:
            for i in modelled:
                model_types[i] = types_from_reasons(reasons[i], explainer)
    rule_types = rules["rule_risk_types"].tolist()
    risk_types = [tuple(dict.fromkeys((*m, *r))) if a else ()
                  for m, r, a in zip(model_types, rule_types, alerted, strict=True)]
    departments = [routing.departments_for(t) if t else () for t in risk_types]
    key_columns = {c: frame[c].to_numpy() for c in KEY_COLUMNS if c in frame.columns}
    out = pd.DataFrame({
        **key_columns,
        "risk": risk,
        "margin": margin,
        "rank": rank,
        "tier": tier.astype(str),
        "alerted": alerted,
        "source": source.astype(str),
        "risk_types": risk_types,
        "model_risk_types": model_types,
        "rule_risk_types": rule_types,
        "departments": departments,
        "rule_triggers": rules["rule_triggers"].tolist(),
        "rule_score": rules["rule_score"].to_numpy(),
        "reasons": reasons,
        "model_version": version,
        "model_as_of": str(artifact.meta.get("as_of", "")),
    })
    out["as_of"] = as_of_day
    for column in ("risk_types", "model_risk_types", "rule_risk_types", "departments",
                   "rule_triggers", "reasons"):
        out[column] = out[column].astype(object)
    return out[[c for c in SCORE_COLUMNS if c in out.columns]]


def to_new_alerts(scored: pd.DataFrame) -> list[NewAlert]:
    """The store's `NewAlert`s for the alerted rows of `score`'s output."""
    from serving.store import NewAlert, Reason

    alerts = []
    records = scored[scored["alerted"].to_numpy()].to_dict("records")
    for row in records:
        reasons: list[ExplainedReason] = row["reasons"]
        alerts.append(NewAlert(
            household_key=str(row["household_key"]),
            village_code=str(row["village_code"]),
            as_of=row["as_of"],
            model_version=str(row["model_version"]),
            tier=str(row["tier"]),
            risk=float(row["risk"]),
            risk_types=tuple(row["risk_types"]),
            departments=tuple(row["departments"]),
            rule_triggers=tuple(row["rule_triggers"]),
            source=str(row["source"]),
            reasons=tuple(Reason(r.rank, r.group_key, r.text_zh, r.contribution, r.scale)
                          for r in reasons),
        ))
    return alerts


# -- the monthly run (`doudi score`) ---------------------------------------------------------
CHAMPION_URI = "models:/doudi-risk@champion"


@dataclass(frozen=True)
class ScoreRun:
    """What `score_month` did: the scored frame, the store's report, the export rows."""

    scored: pd.DataFrame
    added: AddReport
    model_version: str
    exported_rows: int | None


def load_model(uri: str, settings: Settings) -> tuple[ModelArtifact, str]:
    """The artifact at `uri` (registry URI or local folder) and its version label.

    A registry URI is resolved with `settings.tracking_uri()`; its version label is
    `<name>/<version>` (e.g. `doudi-risk/3`).
    """
    import os

    from doudi.errors import UserError
    from doudi.model_artifact import load_artifact

    version: str | None = None
    if uri.startswith("models:/"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(settings.tracking_uri())
        name, _, ref = uri.removeprefix("models:/").partition("@")
        client = MlflowClient(tracking_uri=settings.tracking_uri())
        try:
            if ref:
                mv = client.get_model_version_by_alias(name, ref)
            else:
                name, _, number = name.partition("/")
                mv = client.get_model_version(name, number)
        except MlflowException as err:
            raise UserError(f"no model at {uri} in {settings.tracking_uri()} "
                            "(train one with `doudi train`, or pass --model PATH)") from err
        version = f"{name}/{mv.version}"
        uri = f"models:/{name}/{mv.version}"
    elif not Path(uri).is_dir():
        raise UserError(f"--model {uri}: no such model folder")
    artifact = load_artifact(uri)
    return artifact, version or model_version_of(artifact)


def score_month(settings: Settings, as_of: str, *, model_uri: str = CHAMPION_URI,
                out: Path | None = None, database_url: str | None = None,
                explain_all: bool = False) -> ScoreRun:
    """Score every in-scope household at `as_of`, store the alerts, optionally export
    (with reasons for every household when `explain_all`)."""
    from features import scoring_table
    from features.asof import month_end
    from serving.store import open_store

    artifact, version = load_model(model_uri, settings)
    explainer = Explainer(artifact, max_reasons=settings.max_reasons)  # checks the registry
    table = scoring_table(settings.warehouse_dir, as_of, settings)
    scored = score(table, artifact, settings, month_end(as_of), model_version=version,
                   explainer=explainer, explain_all=explain_all)
    with open_store(database_url, settings=settings) as store:
        # The scoring table holds in-scope households only: monitored ones are already out.
        added = store.add_alerts(to_new_alerts(scored), actor="doudi score")
        rows = None
        if out is not None:
            from serving.export import write_operator_export

            rows = write_operator_export(scored, out, settings, store)
    return ScoreRun(scored, added, version, rows)
