"""The training core as a scikit-learn estimator: `CalibratedLGBMClassifier`.

`fit(X, y)` runs `training.core.fit_evaluate`, the same core `doudi train` runs (LightGBM
early-stopped on a later slice, calibration chosen and fitted out of sample, evaluation on
the latest block, refit on everything), and `predict_proba` uses its production model.
Without `time` the data are taken as cross-sectional: the rows (or the `groups`, e.g.
households whose members must stay together) are dealt into seeded blocks that play the
periods, with no panel assumption and no lead-time metrics. With `time` (one period per
row) it is the panel scheme of docs/training.md.

Everything the core measured stays available: `result_` is the `FitResult`
(`result_.comparison`, `result_.test_metrics`, `result_.held_out_probability()`).
Binary only; `classes_[1]` is the positive class (for string labels, the later one in
sorted order). X: a DataFrame (numeric, bool, category/str/object columns, NaN allowed)
or a numeric array (columns named x0, x1, ...).
"""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from doudi.model_artifact import ModelArtifact
from training.core import FitResult, TrainConfig, check_unique_columns, fit_evaluate

__all__ = ["CalibratedLGBMClassifier"]


def _default(name: str) -> Any:
    """A `TrainConfig` default: the estimator's defaults are the core's, typed once."""
    return TrainConfig.model_fields[name].get_default(call_default_factory=True)


# __init__ parameters handed to TrainConfig under the same name (random_state -> seed).
_CONFIG_PARAMS = (
    "n_estimators", "learning_rate", "num_leaves", "max_depth", "min_child_samples",
    "feature_fraction", "bagging_fraction", "bagging_freq", "lambda_l2", "max_bin",
    "early_stopping_rounds", "early_stopping_metric", "imbalance", "negative_sample_rate",
    "calibration", "n_folds", "fold_periods", "gap_periods", "early_stopping_periods",
    "early_stopping_holdout", "k_pct", "n_bins", "logistic_baseline", "num_threads",
)


class CalibratedLGBMClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated LightGBM with early stopping and out-of-sample calibration (binary).

    Parameters are `training.core.TrainConfig`'s, with its defaults, except
    `logistic_baseline` (off: it only adds a row to `result_.comparison`) and
    `random_state` (TrainConfig's `seed`; None or a RandomState draws one).

    Fitted attributes: `classes_`, `n_features_in_`, `feature_names_in_` (DataFrames with
    string column names), `result_` (the core's `FitResult`), `artifact_` (its production
    model, refit on every row; the one that predicts), `feature_importances_` (gain, summing
    to 1, in column order).
    """

    def __init__(
        self,
        *,
        n_estimators: int = _default("n_estimators"),
        learning_rate: float = _default("learning_rate"),
        num_leaves: int = _default("num_leaves"),
        max_depth: int = _default("max_depth"),
        min_child_samples: int = _default("min_child_samples"),
        feature_fraction: float = _default("feature_fraction"),
        bagging_fraction: float = _default("bagging_fraction"),
        bagging_freq: int = _default("bagging_freq"),
        lambda_l2: float = _default("lambda_l2"),
        max_bin: int = _default("max_bin"),
        early_stopping_rounds: int = _default("early_stopping_rounds"),
        early_stopping_metric: Literal["binary_logloss", "auc", "average_precision"] = (
            _default("early_stopping_metric")),
        imbalance: Literal["none", "scale_pos_weight", "is_unbalance"] = _default("imbalance"),
        negative_sample_rate: float = _default("negative_sample_rate"),
        calibration: Literal["auto", "isotonic_logit", "platt", "identity", "isotonic"] = (
            _default("calibration")),
        n_folds: int = _default("n_folds"),
        fold_periods: int = _default("fold_periods"),
        gap_periods: int = _default("gap_periods"),
        early_stopping_periods: int = _default("early_stopping_periods"),
        early_stopping_holdout: float = _default("early_stopping_holdout"),
        k_pct: float = _default("k_pct"),
        n_bins: int = _default("n_bins"),
        logistic_baseline: bool = False,
        num_threads: int = _default("num_threads"),
        random_state: int | np.random.RandomState | None = _default("seed"),
    ) -> None:
        # scikit-learn's contract: store the parameters as given, nothing else (checked in fit).
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.lambda_l2 = lambda_l2
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.early_stopping_metric = early_stopping_metric
        self.imbalance = imbalance
        self.negative_sample_rate = negative_sample_rate
        self.calibration = calibration
        self.n_folds = n_folds
        self.fold_periods = fold_periods
        self.gap_periods = gap_periods
        self.early_stopping_periods = early_stopping_periods
        self.early_stopping_holdout = early_stopping_holdout
        self.k_pct = k_pct
        self.n_bins = n_bins
        self.logistic_baseline = logistic_baseline
        self.num_threads = num_threads
        self.random_state = random_state

    def train_config(self) -> TrainConfig:
        """The core's configuration these parameters make (validated: a bad value raises)."""
        seed = self.random_state
        if not isinstance(seed, int | np.integer):
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        return TrainConfig(**{name: getattr(self, name) for name in _CONFIG_PARAMS},
                           seed=int(seed))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Binary only: the core calibrates one margin into P(classes_[1]). check_estimator
        # then runs its checks on two-class data and checks that fit refuses three classes.
        tags.classifier_tags.multi_class = False
        # LightGBM routes missing values itself; NaN is a valid input.
        tags.input_tags.allow_nan = True
        # DataFrames with category/str columns are modelled as categoricals.
        tags.input_tags.categorical = True
        return tags

    def fit(self, X: Any, y: Any, *, time: Any = None, groups: Any = None) -> Self:
        """Fit the core on (X, y). `time`: each row's period (panel data; None =
        cross-sectional). `groups`: each row's unit (e.g. household) id: kept in one block
        (cross-sectional), or the early-stopping holdout's unit (panel)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None")
        frame = self._frame(X, reset=True)
        positive = self._binary_labels(y)
        config = self.train_config()
        self.result_: FitResult = fit_evaluate(
            frame, pd.Series(positive), None if time is None else pd.Series(time),
            config=config, household=None if groups is None else pd.Series(groups))
        self.artifact_: ModelArtifact = self.result_.artifact
        gain = self.artifact_.booster.feature_importance("gain")
        total = float(gain.sum())
        self.feature_importances_ = gain / total if total > 0 else np.zeros(len(gain))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2): P(classes_[0]), P(classes_[1]), from the calibrated production model."""
        check_is_fitted(self)
        p = self.artifact_.predict_proba(self._frame(X, reset=False),
                                         num_threads=self.num_threads)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """The more probable class (classes_[0] on an exact tie)."""
        proba = self.predict_proba(X)  # first: an unfitted estimator says so
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])

    # -- input checks ------------------------------------------------------------------------
    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """X as the DataFrame the core reads: string column names, unique; a NumPy array's
        columns named as at fit (x0, x1, ... when fitted on an array)."""
        if isinstance(X, pd.DataFrame):
            check_unique_columns(X.columns)
            names = [str(c) for c in X.columns]
            validate_data(self, X, reset=reset, skip_check_array=True)
            if not reset and not hasattr(self, "feature_names_in_"):
                names = self.artifact_.feature_names  # fitted without names: by position
            frame = X.copy(deep=False)
            frame.columns = pd.Index(names)
            return frame
        array = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan")
        names = ([f"x{i}" for i in range(array.shape[1])] if reset
                 else self.artifact_.feature_names)
        return pd.DataFrame(array, columns=names)

    def _binary_labels(self, y: Any) -> np.ndarray:
        """y as 0/1 (1 = classes_[1]); sets `classes_`. Refuses missing labels and anything
        but exactly two classes, in one line."""
        name = type(self).__name__
        labels = column_or_1d(y, warn=True)
        missing = int(pd.isna(labels).sum())
        if missing:
            raise ValueError(f"y has {missing} missing label(s): {name} needs a class for "
                             "every row")
        check_classification_targets(labels)  # "Unknown label type" for continuous y
        classes = np.unique(labels)
        if len(classes) > 2:
            shown = ", ".join(repr(c) for c in classes[:5].tolist())
            raise ValueError(
                f"Only binary classification is supported. {name} got {len(classes)} classes "
                f"in y ({shown}{', ...' if len(classes) > 5 else ''}): map y to two classes")
        if len(classes) < 2:
            raise ValueError(f"y has one class only ({classes.tolist()[0]!r}): {name} needs "
                             "rows of both classes")
        self.classes_ = classes
        return (labels == classes[1]).astype(np.int8)
