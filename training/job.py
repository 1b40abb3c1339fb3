"""The monthly training job: features -> (caseworker verdicts) -> core -> MLflow registry."""

from __future__ import annotations

import numpy as np
import pandas as pd

import features
from doudi import registry
from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from features.asof import require_delivered
from features.rules import baseline_rule_scores
from features.tables import first_roster_month
from training.core import TrainConfig, data_fingerprint, fit_evaluate
from training.gate import GateConfig
from training.minimum import months_needed
from training.tracking import TrackOutcome, registered_outcome, track_run

# The model card's "Intended use" for the monthly job's model (the core and its card are
# generic: this is where households come in).
INTENDED_USE = (
    "Ranks in-scope rural households by the risk of being identified for monitoring within "
    "the label horizon, to prioritise caseworker visits. Not a decision: every alert is "
    "reviewed by a caseworker.")


def apply_verdicts(table: pd.DataFrame, verdicts: pd.DataFrame | None) -> pd.DataFrame:
    """Training rows with caseworkers' confirmed verdicts added as positive labels.

    A verdict belongs to the alert's (household, as-of month). `confirmed` makes that
    row positive and adds the confirmed risk types; `dismissed` changes nothing, since
    a dismissal is not evidence that the household stays out of hardship, and the
    contract's label (a later identification) stays the ground truth. Rows without a
    verdict are untouched: only visited households get verdicts (selective labels,
    docs/alerts.md). Verdicts for as-of months not in `table` (immature) are ignored.
    """
    if verdicts is None or verdicts.empty or table.empty:
        return table
    confirmed = verdicts[verdicts["verdict"] == "confirmed"]
    if confirmed.empty:
        return table
    keys = pd.MultiIndex.from_arrays(
        [confirmed["household_key"].astype(str), pd.to_datetime(confirmed["as_of"])]
    )
    types_by_key = dict(zip(keys, confirmed["risk_types"].fillna("").astype(str), strict=True))
    row_keys = pd.MultiIndex.from_arrays(
        [table["household_key"].astype(str), pd.to_datetime(table["as_of"])]
    )
    hit = row_keys.isin(keys)
    out = table.copy()
    out.loc[hit, "label"] = 1
    for pos in np.flatnonzero(hit).tolist():
        for risk_type in filter(None, types_by_key[row_keys[pos]].split(";")):
            column = int(out.columns.get_indexer(pd.Index([f"label_{risk_type}"]))[0])
            if column >= 0:  # -1: a type without a label column
                out.iloc[pos, column] = 1
    return out


def check_history(settings: Settings, as_of: Month, config: TrainConfig) -> int:
    """The training periods `config` needs; a one-line UserError when the warehouse's
    months (first roster month to `as_of`) cannot hold them (`training.minimum`)."""
    needed = months_needed(
        settings.horizon_months, settings.label_allowance_months, n_folds=config.n_folds,
        fold_periods=config.fold_periods, gap_periods=config.gap_periods,
        early_stopping_periods=config.early_stopping_periods)
    first = first_roster_month(settings.warehouse_dir)
    have = as_of - first + 1
    if have < 1:
        raise UserError(f"training as of {as_of}: the warehouse's roster starts later, in {first}")
    if have < needed:
        raise UserError(
            f"training as of {as_of} needs at least {needed} months of data from the first "
            f"roster month; {first} to {as_of} is {have} (horizon {settings.horizon_months} + "
            f"label allowance {settings.label_allowance_months} + "
            f"{needed - settings.horizon_months - settings.label_allowance_months} months of "
            "cross-validation folds)"
        )
    return needed - settings.horizon_months - settings.label_allowance_months


def train_monthly(
    settings: Settings,
    as_of: Month,
    *,
    verdicts: pd.DataFrame | None = None,
    config: TrainConfig | None = None,
    gate_config: GateConfig | None = None,
    allow_undelivered: bool = False,
) -> TrackOutcome:
    """Train, evaluate and register the model as of month `as_of` (idempotent per data).

    The version is registered under this workspace's model name and bound to its
    workspace (`doudi.registry`); the gate compares it with this workspace's champion only.
    """
    workspace = registry.workspace(settings)  # before the features: a one-line refusal
    require_delivered(settings.warehouse_dir, as_of, allow_undelivered=allow_undelivered)
    as_of_text = str(as_of)  # the registry's `as_of` tag: YYYY-MM
    # The gap keeps a fold's training labels closed before its validation period starts.
    # num_threads stays at TrainConfig's 1: OpenMP threads on busy cores run many times slower.
    config = config or TrainConfig(
        gap_periods=settings.horizon_months,
        feature_registry_version=str(features.REGISTRY_VERSION),
    )
    needed = check_history(settings, as_of, config)
    table = features.training_table(settings.warehouse_dir, as_of, settings)
    periods = table["as_of"].nunique() if len(table) else 0
    if periods < needed:
        raise UserError(
            f"training as of {as_of} needs {needed} as-of months with in-scope households "
            f"and final labels; the warehouse has {periods}"
        )
    # A sampled row keeps its weight when a verdict makes it positive: it was drawn on the
    # contract label alone, so 1/r still undoes its chance of being drawn (docs/training.md).
    table = apply_verdicts(table, verdicts)
    X = table[list(features.feature_names())]
    y = table["label"].astype("int8")
    time = table["as_of"]
    weight = table.get(features.SAMPLE_WEIGHT)
    client = registry.client(settings.tracking_uri())
    fingerprint = data_fingerprint(X, y, time, config, weight=weight)
    existing = registered_outcome(client, as_of_text, fingerprint, workspace)
    if existing is not None:
        return existing
    group_cols = ["county_code", *features.group_column_names()]
    type_cols = [c for c in features.LABEL_COLUMNS if c != "label" and c in table.columns]
    result = fit_evaluate(
        X, y, time,
        config=config,
        groups=table[group_cols],
        household=table["household_key"],
        type_labels=table[type_cols],
        weight=weight,
        rule_scores=baseline_rule_scores(settings),
        as_of=as_of_text,
    )
    return track_run(
        result, X, y, time,
        as_of=as_of_text,
        workspace=workspace,
        counties=sorted(table["county_code"].astype(str).unique()),
        tracking_uri=settings.tracking_uri(),
        artifact_location=settings.artifact_root(),
        gate_config=gate_config or GateConfig.from_settings(settings),
        intended_use=INTENDED_USE,
    )
