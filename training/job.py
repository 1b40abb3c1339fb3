"""The monthly training job: features -> core -> MLflow registry.

INTEGRATION GAP: `features.training_table` was written concurrently; this wiring follows its
API (training_table, feature_names, group_column_names, LABEL_COLUMNS, REGISTRY_VERSION,
rules.baseline_rule_scores) and has not been run end to end on a generated world. What it
calls below the features line (`fit_evaluate`, `track_run`) is tested on synthetic and
non-doudi tables.
"""

from __future__ import annotations

import importlib
import logging
from datetime import date

import pandas as pd

from doudi.errors import UserError
from doudi.settings import Settings
from training.core import TrainConfig, data_fingerprint, fit_evaluate
from training.tracking import GateConfig, TrackOutcome, client_for, find_existing_version, track_run

log = logging.getLogger(__name__)


def train_monthly(settings: Settings, as_of: date | str, *, config: TrainConfig | None = None,
                  gate_config: GateConfig | None = None) -> TrackOutcome:
    """Train, evaluate and register the model as of month `as_of` (UNTESTED: needs features)."""
    try:
        features = importlib.import_module("features")
        rules = importlib.import_module("features.rules")
    except ImportError as err:
        raise UserError("the features stage is not available") from err
    as_of_text = str(pd.Timestamp(as_of).date())
    table = features.training_table(settings.warehouse_dir, as_of_text, settings)
    if table.empty:
        raise UserError(f"no label-final training rows as of {as_of_text}")
    X = table[list(features.feature_names())]
    y = table["label"].astype("int8")
    time = table["as_of"]
    # Label horizon: a fold's training rows must have their labels closed before it starts.
    # num_threads stays at TrainConfig's 1: OpenMP threads on busy cores run many times slower.
    config = config or TrainConfig(gap_periods=settings.horizon_months,
                                   feature_registry_version=str(features.REGISTRY_VERSION))
    client = client_for(settings.tracking_uri())
    fingerprint = data_fingerprint(X, y, time, config)
    existing = find_existing_version(client, as_of_text, fingerprint)
    if existing is not None:
        mv = client.get_model_version("doudi-risk", existing)
        log.info("as_of %s already registered as version %s", as_of_text, existing)
        return TrackOutcome(mv.run_id, existing, list(mv.aliases), True, None)
    group_cols = ["county_code", *features.group_column_names()]
    type_cols = [c for c in features.LABEL_COLUMNS if c != "label" and c in table.columns]
    result = fit_evaluate(X, y, time, config=config, groups=table[group_cols],
                          household=table["household_key"], type_labels=table[type_cols],
                          rule_scores=rules.baseline_rule_scores(settings), as_of=as_of_text)
    return track_run(result, X, y, time, as_of=as_of_text, tracking_uri=settings.tracking_uri(),
                     gate_config=gate_config)
