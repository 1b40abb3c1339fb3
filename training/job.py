"""The monthly training job: features -> (caseworker verdicts) -> core -> MLflow registry."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd

import features
from doudi.errors import UserError
from doudi.settings import Settings
from features.rules import baseline_rule_scores
from training.core import TrainConfig, data_fingerprint, fit_evaluate
from training.tracking import GateConfig, TrackOutcome, client_for, find_existing_version, track_run

log = logging.getLogger(__name__)


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


def train_monthly(
    settings: Settings,
    as_of: date | str,
    *,
    verdicts: pd.DataFrame | None = None,
    config: TrainConfig | None = None,
    gate_config: GateConfig | None = None,
) -> TrackOutcome:
    """Train, evaluate and register the model as of month `as_of` (idempotent per data)."""
    as_of_text = str(pd.Timestamp(as_of).date())
    table = features.training_table(settings.warehouse_dir, as_of_text, settings)
    if table.empty:
        raise UserError(
            f"no label-final training rows as of {as_of_text}: as-of months need "
            f"{settings.horizon_months} + {settings.label_allowance_months} months of "
            "history after them"
        )
    table = apply_verdicts(table, verdicts)
    X = table[list(features.feature_names())]
    y = table["label"].astype("int8")
    time = table["as_of"]
    # The gap keeps a fold's training labels closed before its validation period starts.
    # num_threads stays at TrainConfig's 1: OpenMP threads on busy cores run many times slower.
    config = config or TrainConfig(
        gap_periods=settings.horizon_months,
        feature_registry_version=str(features.REGISTRY_VERSION),
    )
    client = client_for(settings.tracking_uri())
    fingerprint = data_fingerprint(X, y, time, config)
    existing = find_existing_version(client, as_of_text, fingerprint)
    if existing is not None:
        mv = client.get_model_version("doudi-risk", existing)
        log.info("as_of %s already registered as version %s", as_of_text, existing)
        return TrackOutcome(mv.run_id, existing, list(mv.aliases), True, None)
    group_cols = ["county_code", *features.group_column_names()]
    type_cols = [c for c in features.LABEL_COLUMNS if c != "label" and c in table.columns]
    result = fit_evaluate(
        X, y, time,
        config=config,
        groups=table[group_cols],
        household=table["household_key"],
        type_labels=table[type_cols],
        rule_scores=baseline_rule_scores(settings),
        as_of=as_of_text,
    )
    return track_run(
        result, X, y, time,
        as_of=as_of_text,
        tracking_uri=settings.tracking_uri(),
        artifact_location=settings.artifact_root(),
        gate_config=gate_config,
    )
