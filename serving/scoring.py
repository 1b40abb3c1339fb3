"""Scoring: calibrated risk, rank, tier (分层), hardship types (分类), departments, rules.

`score(features_frame, artifact, settings, as_of)` returns one row per in-scope
household. The fast path encodes the frame once to a float matrix and predicts in
one LightGBM call with `settings.workers` threads; contributions are computed for
alerted households only.

Tiers (settings.tiers, shares of the in-scope households, ranks by the model's raw
margin; equal margins only are ordered by household key). The calibrated risk is what is
shown and what the risk thresholds compare with; it increases with the margin, so the
two agree (a legacy step calibrator may tie risks, never reorder them):
red = top `red_top_pct` or risk >= `red_min_risk`; orange = top `orange_top_pct`;
yellow = top `yellow_top_pct`. Model alerts are allocated within each township's visit
capacity (`serving.capacity`: the configured table, else the township's share of
`capacity_pct`), best rank first; an alerted household keeps its province tier (yellow
when its rank is beyond the province's yellow share), and nothing below `min_alert_risk`
is a model alert. A household that only the departments' rules flag is an alert too
(`source` "rules", tier yellow): rule triggers are policy obligations, outside the
model's capacity budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from features.registry import KEY_COLUMNS
from features.rules import evaluate_rules
from serving import routing
from serving.capacity import (
    CapacityReport,
    allocate,
    capacity_report,
    province_capacity,
    township_capacities,
    townships_of,
)
from serving.explain import ExplainedReason, Explainer, county_medians, reference_rows

if TYPE_CHECKING:
    from serving.store import AddReport, NewAlert

TIER_NONE = "none"
# Per-type models give P(type | identified): types at or above this are listed ...
TYPE_THRESHOLD = 0.5
# ... at most this many, and the most likely type when none reaches the threshold.
MAX_TYPES = 3

SCORE_COLUMNS = [
    "household_key", "as_of", "county_code", "village_code", "risk", "margin", "rank",
    "tier", "alerted", "source", "risk_types", "model_risk_types", "rule_risk_types",
    "departments", "rule_triggers", "rule_score", "reasons", "model_version", "model_as_of",
]


def assign_tiers(risk: np.ndarray, settings: Settings,
                 keys: Sequence[str] | np.ndarray | None = None, *,
                 margin: np.ndarray | None = None,
                 townships: Sequence[str] | np.ndarray | None = None,
                 capacities: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rank 1 = highest margin, tier) per household.

    Ranks follow `margin` (the model's raw score; `risk` when no margin is given) and only
    exactly equal margins are ordered by key, for repeatability: households a calibrator
    tied at one risk are still told apart by the model. Thresholds use the calibrated risk.

    With `townships` (a code per household), alerts are allocated within each township's
    capacity (`capacities`, default `serving.capacity.township_capacities`), best rank
    first; without, the province is one township. Tiers are the province's either way: an
    alerted household is red/orange by its province rank (or red by risk), else yellow.
    """
    risk = np.asarray(risk, dtype=np.float64)
    n = len(risk)
    by = risk if margin is None else np.asarray(margin, dtype=np.float64)
    tie = np.asarray(keys) if keys is not None else np.arange(n)
    order = np.lexsort((tie, -by))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    tiers = settings.tiers

    def top(pct: float) -> int:
        return math.ceil(n * pct / 100.0 - 1e-9)

    eligible = risk >= tiers.min_alert_risk
    if townships is None:
        alerted = eligible & (rank <= province_capacity(n, settings))
    else:
        if capacities is None:
            capacities = township_capacities(townships, settings)
        alerted = allocate(rank, townships, capacities, eligible)
    red = alerted & ((rank <= top(tiers.red_top_pct)) | (risk >= tiers.red_min_risk))
    orange = alerted & ~red & (rank <= top(tiers.orange_top_pct))
    tier = np.full(n, TIER_NONE, dtype=object)
    tier[alerted] = "yellow"
    tier[orange] = "orange"
    tier[red] = "red"
    return rank, tier


def rule_only_capped(rule_score: np.ndarray, margin: np.ndarray, model_alert: np.ndarray,
                     keys: np.ndarray, settings: Settings) -> np.ndarray:
    """Rule-fired households the model did not alert, capped at `rule_capacity_pct`.

    Department triggers are checks caseworkers must make, but unbounded they would
    swamp the visit capacity the model's tiers respect; the strongest rules (then the
    highest model margin, then the key) go first.
    """
    candidates = np.flatnonzero((rule_score > 0) & ~model_alert)
    limit = math.ceil(len(margin) * settings.rule_capacity_pct / 100.0 - 1e-9)
    keep = np.zeros(len(margin), dtype=bool)
    if len(candidates) and limit > 0:
        order = np.lexsort((keys[candidates], -margin[candidates], -rule_score[candidates]))
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
    """Fallback 分类: the risk types of the reasons' groups (the registry's
    `FeatureDefinition.risk_type`), strongest first."""
    return reason_risk_types(reasons, explainer)[:MAX_TYPES]


def reason_risk_types(reasons: Sequence[ExplainedReason], explainer: Explainer,
                      ) -> tuple[str, ...]:
    """Every risk type the reasons speak to, strongest reason first (context: none)."""
    types = (explainer.group_risk_type(r.group_key) for r in reasons)
    return tuple(dict.fromkeys(t for t in types if t))


def backed_types(types: Sequence[str], reasons: Sequence[ExplainedReason],
                 rule_types: Sequence[str], explainer: Explainer) -> tuple[str, ...]:
    """The `types` a shown reason or a fired rule names (the caseworker can see why);
    when none is, the reasons' own types: an alert never shows an unexplained type."""
    backing = {*reason_risk_types(reasons, explainer), *rule_types}
    kept = tuple(t for t in types if t in backing)
    return kept or types_from_reasons(reasons, explainer)


def model_version_of(artifact: ModelArtifact) -> str:
    """A short version label recorded with every alert."""
    meta = artifact.meta
    for key in ("model_version", "registered_version"):
        if meta.get(key):
            return str(meta[key])[:64]
    if meta.get("data_fingerprint"):
        return f"local-{str(meta['data_fingerprint'])[:12]}"
    return "unversioned"


class RowWork(Protocol):
    """The per-row heavy work of `score` (one implementation per engine; everything
    province-wide stays in `score`, the same code for both): every method takes the
    encoded float matrix (`ModelArtifact.encode`) and answers row for row."""

    def margins(self, X: np.ndarray) -> np.ndarray:
        """The raw margin (log-odds) of every row."""
        ...

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, features + 1) TreeSHAP contributions; the last column is the bias."""
        ...

    def type_probabilities(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Per risk type (sorted by name): P(type | identified) of every row."""
        ...

    def close(self) -> None:
        """Release what the work holds (models sent to executors)."""
        ...


@dataclass(frozen=True)
class InProcess:
    """The `local` engine's `RowWork`: LightGBM in this process with `threads` threads."""

    artifact: ModelArtifact
    threads: int

    def margins(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.artifact.booster.predict(X, raw_score=True,
                                                        num_threads=self.threads))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        return self.artifact.contributions(X, num_threads=self.threads)

    def type_probabilities(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return self.artifact.predict_types(X, num_threads=self.threads)

    def close(self) -> None:
        pass


def row_work(artifact: ModelArtifact, settings: Settings) -> RowWork:
    """The per-row work for `settings.engine`: in process (`local`), or on the Spark
    executors with the model broadcast as LightGBM text (`spark`, serving/spark_scoring.py)."""
    if settings.engine == "spark":
        from serving.spark_scoring import SparkRowWork

        return SparkRowWork(artifact, settings)
    return InProcess(artifact, settings.workers)


def score(
    features_frame: pd.DataFrame,
    artifact: ModelArtifact,
    settings: Settings,
    as_of: date,
    *,
    model_version: str | None = None,
    explainer: Explainer | None = None,
    explain_all: bool = False,
    capacities: Mapping[str, int] | None = None,
    work: RowWork | None = None,
) -> pd.DataFrame:
    """Risk, rank, tier, types, departments, rules, source and reasons per household.

    Reasons are computed for alerted households, or for every household with
    `explain_all` (TreeSHAP for all rows: the "explain everyone on request" path).
    Model alerts are allocated per township within `capacities` (visits per township
    code; default `serving.capacity.township_capacities` of the frame and settings).
    The per-row model work runs on `work`, default `row_work(artifact, settings)` (by
    `settings.engine`; closed here when made here); the results are the same on either.
    """
    explainer = explainer or Explainer(artifact, max_reasons=settings.max_reasons)
    version = model_version or model_version_of(artifact)
    frame = features_frame.reset_index(drop=True)
    if len(frame) == 0:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    _check_as_of(frame, as_of)
    chosen = work or row_work(artifact, settings)
    try:
        return _score(frame, artifact, settings, as_of, version, explainer, explain_all,
                      capacities, chosen)
    finally:
        if work is None:  # made here: released here (the broadcast models on spark)
            chosen.close()


def _score(frame: pd.DataFrame, artifact: ModelArtifact, settings: Settings, as_of: date,
           version: str, explainer: Explainer, explain_all: bool,
           capacities: Mapping[str, int] | None, work: RowWork) -> pd.DataFrame:
    """`score` on a non-empty frame with its per-row `work` chosen."""
    X = artifact.encode(frame)
    margin = work.margins(X)
    risk = artifact.calibrator.apply(margin)
    keys = frame["household_key"].astype(str).to_numpy()
    rank, model_tier = assign_tiers(risk, settings, keys, margin=margin,
                                    townships=townships_of(frame["village_code"]),
                                    capacities=capacities)
    rules = evaluate_rules(frame, settings)
    model_alert = model_tier != TIER_NONE
    alerted, tier, source = _with_rule_alerts(model_tier, rules["rule_score"].to_numpy(), margin,
                                              keys, settings)
    explained = np.arange(len(frame)) if explain_all else np.flatnonzero(alerted)
    reasons = _reasons(frame, X, explained, artifact, explainer, work)
    rule_types = rules["rule_risk_types"].tolist()
    model_types = _model_types(artifact, X, np.flatnonzero(model_alert), reasons, explainer,
                               work, rule_types)
    risk_types = [tuple(dict.fromkeys((*m, *r))) if a else ()
                  for m, r, a in zip(model_types, rule_types, alerted, strict=True)]
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
        "departments": [routing.departments_for(t) if t else () for t in risk_types],
        "rule_triggers": rules["rule_triggers"].tolist(),
        "rule_score": rules["rule_score"].to_numpy(),
        "reasons": reasons,
        "model_version": version,
        "model_as_of": str(artifact.meta.get("as_of", "")),
    })
    out["as_of"] = as_of
    for column in ("risk_types", "model_risk_types", "rule_risk_types", "departments",
                   "rule_triggers", "reasons"):
        out[column] = out[column].astype(object)
    return out[[c for c in SCORE_COLUMNS if c in out.columns]]


def _check_as_of(frame: pd.DataFrame, as_of: date) -> None:
    """A frame built for another month (its `as_of` column) is refused."""
    if "as_of" in frame.columns:
        months = sorted({pd.Timestamp(v).date() for v in frame["as_of"].unique()})
        if months != [as_of]:
            raise ValueError(f"the feature frame is as of {sorted(map(str, months))[:3]}, "
                             f"not {as_of}")


def _with_rule_alerts(model_tier: np.ndarray, rule_score: np.ndarray, margin: np.ndarray,
                      keys: np.ndarray, settings: Settings,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alerted, tier, source) once the departments' rules are added to the model's alerts:
    rule-only alerts (capped, `rule_only_capped`) are yellow; `source` says who alerted."""
    model_alert = model_tier != TIER_NONE
    fired = rule_only_capped(rule_score, margin, model_alert, keys, settings) | (
        model_alert & (rule_score > 0)
    )
    alerted = model_alert | fired
    tier = np.where(~model_alert & fired, "yellow", model_tier)
    source = np.select([model_alert & fired, model_alert, fired], ["both", "model", "rules"],
                       TIER_NONE)
    return alerted, tier, source


def _reasons(frame: pd.DataFrame, X: np.ndarray, rows: np.ndarray, artifact: ModelArtifact,
             explainer: Explainer, work: RowWork | int) -> list[list[ExplainedReason]]:
    """Reasons of `rows` (TreeSHAP, compared with the county medians); none for the rest.
    `work`: the engine's `RowWork`, or a thread count for in-process work (the API's one
    household on demand)."""
    reasons: list[list[ExplainedReason]] = [[] for _ in range(len(frame))]
    if len(rows) == 0:
        return reasons
    medians = county_medians(frame, artifact.feature_names)
    reference = reference_rows(medians, frame["county_code"].to_numpy()[rows])
    explained = X if len(rows) == len(frame) else X[rows]  # no 1M-row copy for everyone
    if isinstance(work, int):
        work = InProcess(artifact, work)
    contrib = work.contributions(explained)
    for i, r in zip(rows, explainer.reasons_from(explained, contrib, reference=reference),
                    strict=True):
        reasons[i] = r
    return reasons


def _model_types(artifact: ModelArtifact, X: np.ndarray, modelled: np.ndarray,
                 reasons: list[list[ExplainedReason]], explainer: Explainer,
                 work: RowWork, rule_types: Sequence[tuple[str, ...]] | None = None,
                 ) -> list[tuple[str, ...]]:
    """分类 of the model's alerts (`modelled` rows): from the per-type models, kept where a
    reason or a fired rule (`rule_types`) backs them (`backed_types`), or without them from
    the reasons' groups; () for every other row."""
    types: list[tuple[str, ...]] = [() for _ in range(len(X))]
    if len(modelled) == 0:
        return types
    if artifact.type_boosters:
        picked = select_types(work.type_probabilities(X[modelled]))
        for i, t in zip(modelled, picked, strict=False):
            types[i] = backed_types(t, reasons[i], () if rule_types is None else rule_types[i],
                                    explainer)
    else:
        for i in modelled:
            types[i] = types_from_reasons(reasons[i], explainer)
    return types


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

@dataclass(frozen=True)
class ScoreRun:
    """What `score_month` did: the scored frame, the store's report, the export rows, and
    a warning line when a model other than the champion was used (`allow_non_champion`)."""

    scored: pd.DataFrame
    added: AddReport
    model_version: str
    exported_rows: int | None
    warning: str | None = None
    capacity: CapacityReport | None = None  # the township allocation against the top k


NON_CHAMPION_FLAG = "--allow-non-champion"
NON_CHAMPION_LOG = "non-champion-scoring.jsonl"  # under <home>/reports/, one line per use


@dataclass(frozen=True)
class ModelChoice:
    """Which model `--model` names, and whether it is this workspace's current champion."""

    uri: str
    label: str | None  # `<name>/<version>` for a registry model; None for a folder
    champion: str | None  # the champion's `<name>/<version>`; None when there is none

    @property
    def is_champion(self) -> bool:
        return self.label is not None and self.label == self.champion


def choose_model(uri: str | None, settings: Settings) -> ModelChoice:
    """The model to score with: `uri`, else this workspace's champion (checked before any
    model is loaded).

    Without `uri` and without a champion while versions exist (the gate refused them all),
    a one-line UserError says so. A registry `uri` is resolved and bound-checked
    (`doudi.registry`); a folder's binding is checked from its meta.json. A folder is never
    the champion (the registry alone says what the champion is), so for a folder the
    tracking store is not opened at all.
    """
    from doudi import registry
    from doudi.errors import UserError

    if uri is not None and registry.parse_uri(uri) is None:  # a folder: never the champion
        registry.locate(uri, settings)
        return ModelChoice(uri, None, None)
    ws = registry.workspace(settings)
    client = registry.client(settings.tracking_uri())
    champ = registry.champion(client, ws)
    champion = None if champ is None else f"{champ.name}/{champ.version}"
    if uri is None:
        known = registry.known_versions(client, ws.model_name) if champ is None else []
        if known:
            raise UserError(
                f"{ws.model_name} has no champion: the gate refused all {len(known)} "
                "version(s) (see `doudi models list` and each version's gate reasons); "
                "retrain, `doudi promote N --force`, or score with --model URI "
                f"{NON_CHAMPION_FLAG} (logged)")
        return ModelChoice(ws.champion_uri, champion, champion)
    mv = registry.locate(uri, settings)
    assert mv is not None  # a registry URI
    return ModelChoice(uri, f"{mv.name}/{mv.version}", champion)


def _refuse_non_champion(choice: ModelChoice) -> None:
    from doudi.errors import UserError

    if choice.label is None:
        what = "a model folder, not this workspace's champion (only the registry's is)"
    else:
        current = choice.champion or "none: the gate has promoted no version"
        what = f"{choice.label}, not this workspace's champion ({current})"
    raise UserError(
        f"--model {choice.uri} is {what}: its alerts would go to caseworkers; pass "
        f"{NON_CHAMPION_FLAG} to score with it anyway (logged)")


def _log_non_champion(settings: Settings, as_of: Month, choice: ModelChoice, version: str,
                      added: AddReport) -> str:
    """The warning line, and one JSON line in <home>/reports/non-champion-scoring.jsonl:
    who scored which month with which non-champion model (no household data)."""
    import json
    import logging
    import os
    from datetime import UTC, datetime

    what = "model folder" if choice.label is None else "registry version"
    champion = "a folder never is" if choice.label is None else choice.champion or "none"
    line = (f"scored with {what} {version}, not the champion ({champion}); "
            f"{len(added.created)} alert(s) stored under it, by {settings.operator}; "
            f"recorded in reports/{NON_CHAMPION_LOG}")
    logging.getLogger(__name__).warning(line)
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
             "operator": settings.operator, "as_of": str(as_of), "model_version": version,
             "model_kind": what, "champion": choice.champion,
             "alerts_created": len(added.created), "alerts_skipped": added.skipped_counts(),
             "flag": NON_CHAMPION_FLAG}
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.reports_dir / NON_CHAMPION_LOG,
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return line


def load_model(uri: str, settings: Settings) -> tuple[ModelArtifact, str]:
    """The artifact at `uri` (registry URI or local folder) and its version label.

    A registry URI is resolved with `settings.tracking_uri()`; its version label is
    `<name>/<version>` (e.g. `doudi-risk-1a2b3c4d/3`). Either must belong to this
    workspace (`doudi.registry`), else a one-line UserError.
    """
    from doudi import registry

    artifact, version = registry.load_model(uri, settings)
    return artifact, version or model_version_of(artifact)


def score_month(settings: Settings, as_of: Month, *, model_uri: str | None = None,
                out: Path | None = None, database_url: str | None = None,
                explain_all: bool = False, allow_undelivered: bool = False,
                allow_non_champion: bool = False) -> ScoreRun:
    """Score every in-scope household at `as_of`, store the alerts, optionally export
    (with reasons for every household when `explain_all`). `model_uri` defaults to this
    workspace's champion; any other model (a refused challenger, an old version, a folder)
    is refused in one line unless `allow_non_champion`, and then logged (`ScoreRun.warning`,
    the alerts' creation actor, reports/non-champion-scoring.jsonl)."""
    from features import scoring_table
    from features.asof import require_delivered
    from serving.predictions import write_predictions
    from serving.store import open_store

    require_delivered(settings.warehouse_dir, as_of, allow_undelivered=allow_undelivered)

    choice = choose_model(model_uri, settings)
    non_champion = model_uri is not None and not choice.is_champion
    if non_champion and not allow_non_champion:
        _refuse_non_champion(choice)
    artifact, version = load_model(choice.uri, settings)
    explainer = Explainer(artifact, max_reasons=settings.max_reasons)  # checks the registry
    table = scoring_table(settings.warehouse_dir, as_of, settings)
    townships = townships_of(table["village_code"])
    capacities = township_capacities(townships, settings, known=_roster_if_configured(settings))
    scored = score(table, artifact, settings, as_of.end, model_version=version,
                   explainer=explainer, explain_all=explain_all, capacities=capacities)
    with open_store(database_url, settings=settings) as store:
        # The scoring table holds in-scope households only: monitored ones are already out.
        # A non-champion's alerts say who chose that model in their creation history.
        actor = (f"doudi score {NON_CHAMPION_FLAG} ({settings.operator})"[:64]
                 if non_champion else "doudi score")
        added = store.add_alerts(to_new_alerts(scored), actor=actor)
        rows = None
        if out is not None:
            from serving.export import write_operator_export

            rows = write_operator_export(scored, out, settings, store)
    write_predictions(settings, as_of, scored)  # after the store: the log of what was served
    warning = (_log_non_champion(settings, as_of, choice, version, added)
               if non_champion else None)
    allocation = capacity_report(
        scored["risk"].to_numpy(), scored["rank"].to_numpy(),
        scored["source"].isin(["model", "both"]).to_numpy(), townships, capacities,
        eligible=scored["risk"].to_numpy() >= settings.tiers.min_alert_risk)
    return ScoreRun(scored, added, version, rows, warning, allocation)


def _roster_if_configured(settings: Settings) -> list[str] | None:
    """The roster's townships when a capacity table is configured (each township it names
    must be on it), else None: the default needs no roster."""
    if settings.township_capacity_file is None and not settings.township_capacity:
        return None
    from serving.export import known_townships

    return known_townships(settings)
