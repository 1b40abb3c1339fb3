"""training: the data-agnostic core, the estimator, the promotion gate, MLflow tracking and
the monthly job (docs/training.md). May import `doudi` and `features`.

Public API, imported on first use (`import training` loads no LightGBM, pandas or MLflow,
so the CLI's `--help` stays fast):

- `fit_evaluate(X, y, time, config=TrainConfig(...))` -> `FitResult`: temporal (or, with
  `time=None`, cross-sectional) cross-validation, out-of-time calibration, evaluation on
  the latest block, refit on everything (`training.core`).
- `CalibratedLGBMClassifier`: the same core as a scikit-learn estimator
  (`training.estimator`).
- `GateConfig`, `GateDecision`, `decide`, `floor_check`: the promotion gate
  (`training.gate`).
- `track_run`, `TrackOutcome`, `promote`, `rollback`: MLflow runs and the model registry
  (`training.tracking`); `model_card` (`training.report`).
- `train_monthly`, `apply_verdicts`: doudi's monthly training job (`training.job`).
- `months_needed`, `periods_needed`: the history training needs (`training.minimum`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from doudi.lazy import lazy_exports

# public name -> the module that defines it
_HOMES = {
    "CalibratedLGBMClassifier": "training.estimator",
    "DataSummary": "training.core",
    "FitResult": "training.core",
    "GateConfig": "training.gate",
    "GateDecision": "training.gate",
    "TrackOutcome": "training.tracking",
    "TrainConfig": "training.core",
    "apply_verdicts": "training.job",
    "cross_sectional_blocks": "training.core",
    "decide": "training.gate",
    "fit_evaluate": "training.core",
    "floor_check": "training.gate",
    "model_card": "training.report",
    "months_needed": "training.minimum",
    "periods_needed": "training.minimum",
    "promote": "training.tracking",
    "rollback": "training.tracking",
    "track_run": "training.tracking",
    "train_monthly": "training.job",
}

__all__ = [
    "CalibratedLGBMClassifier",
    "DataSummary",
    "FitResult",
    "GateConfig",
    "GateDecision",
    "TrackOutcome",
    "TrainConfig",
    "apply_verdicts",
    "cross_sectional_blocks",
    "decide",
    "fit_evaluate",
    "floor_check",
    "model_card",
    "months_needed",
    "periods_needed",
    "promote",
    "rollback",
    "track_run",
    "train_monthly",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)


if TYPE_CHECKING:
    from training.core import (
        DataSummary,
        FitResult,
        TrainConfig,
        cross_sectional_blocks,
        fit_evaluate,
    )
    from training.estimator import CalibratedLGBMClassifier
    from training.gate import GateConfig, GateDecision, decide, floor_check
    from training.job import apply_verdicts, train_monthly
    from training.minimum import months_needed, periods_needed
    from training.report import model_card
    from training.tracking import TrackOutcome, promote, rollback, track_run
