"""The data-agnostic training core: any feature table, binary labels, a time index.

Scheme (see docs/training.md):
  periods = sorted distinct values of `time`; the last n_folds * fold_periods periods form
  n_folds consecutive blocks. Block k is validated by a model trained on the periods before
  it (minus `gap_periods`, the label horizon); the last block is the out-of-time TEST.
  Every booster early-stops on its own latest training periods (an inner later slice) of
  households it does not fit on (a stable 20% of households by id hash).
  Calibration is fitted on out-of-time margins of the cross-validation folds: each strictly
  increasing method is fitted on the earlier folds and scored on the latest CV fold (Brier,
  then ECE); the winner
  is refitted on all CV margins and applied to the EVALUATED model (trained on everything
  before the test block minus the gap). The test block is never used to fit, stop or
  calibrate that model. The PRODUCTION model is then trained on every period with the
  evaluated model's number of rounds, and its calibrator refitted on all out-of-time
  margins (CV folds + test).
  Ranking metrics are reported twice on the test block: by the raw margin (what serving ranks
  by) and by the calibrated probability (`margin_*` vs the plain names); the registry gate
  refuses a calibrator that lowers them.
With `weight` (a negative-down-sampled table: kept negatives carry 1/r) every booster, the
baselines, the calibrators and every metric are weighted, so probabilities and figures
estimate the full population (docs/training.md, "Down-sampled, weighted training tables").
"""

from __future__ import annotations

import hashlib
import logging
import math
import time as _time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from doudi.model_artifact import (
    Calibrator,
    FeatureSpec,
    ModelArtifact,
    category_strings,
    encode_frame,
)
from training import calibration as calib
from training import metrics
from training.fairness import FairnessReport, fairness_report
from training.minimum import periods_needed

log = logging.getLogger(__name__)

RuleScore = Callable[[pd.DataFrame], Any] | pd.Series | np.ndarray


class TrainConfig(BaseModel):
    """Everything that shapes a training run (logged as MLflow params)."""

    model_config = ConfigDict(extra="forbid")

    # folds
    n_folds: int = Field(default=3, ge=3, description="Rolling-origin blocks incl. the test block.")
    fold_periods: int = Field(default=1, ge=1, description="Periods per validation/test block.")
    gap_periods: int = Field(default=0, ge=0,
                             description="Periods skipped before a block (label horizon).")
    early_stopping_periods: int = Field(default=1, ge=1, description="Latest train periods for ES.")
    early_stopping_holdout: float = Field(
        default=0.2, ge=0, lt=1,
        description="Share of households (by id hash) whose latest periods form the "
                    "early-stopping set and which no booster fits on; 0 = split by period only.")
    # evaluation
    k_pct: float = Field(default=5.0, gt=0, le=100,
                         description="Top k% flagged for precision/recall.")
    n_bins: int = Field(default=20, ge=2, description="Equal-frequency bins for ECE.")
    calibration: Literal["auto", "isotonic_logit", "platt", "identity", "isotonic"] = Field(
        default="auto",
        description="auto = the lower out-of-time Brier of isotonic_logit and platt (both "
                    "strictly increasing); isotonic = the legacy step map, which ties "
                    "households (the gate refuses it when that lowers ranking metrics).")
    # LightGBM
    imbalance: Literal["none", "scale_pos_weight", "is_unbalance"] = "none"
    # 1 by default: on a shared 2-core box, 2 OpenMP threads ran 8x slower than 1 (measured).
    num_threads: int = Field(default=1, ge=1)
    num_leaves: int = Field(default=31, ge=2)
    max_depth: int = Field(default=5, ge=-1)
    learning_rate: float = Field(default=0.05, gt=0)
    n_estimators: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    early_stopping_metric: Literal["binary_logloss", "auc", "average_precision"] = (
        "binary_logloss")
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambda_l2: float = Field(default=1.0, ge=0)
    max_bin: int = Field(default=255, ge=2)
    seed: int = 0
    negative_sample_rate: float = Field(
        default=1.0, gt=0, le=1,
        description="Share of negative rows each booster fits on (all positives kept); "
                    "the out-of-time calibration absorbs the shifted base rate.")
    # tiny random search (no Optuna): trials scored by PR-AUC on the latest CV fold
    search_trials: int = Field(default=0, ge=0)
    search_budget_seconds: float = Field(default=120.0, gt=0)
    # baselines
    logistic_baseline: bool = True
    baseline_max_rows: int = Field(default=200_000, ge=100)
    # hardship types
    type_min_positives: int = Field(default=20, ge=1)
    type_num_leaves: int = Field(default=15, ge=2)
    type_n_estimators: int = Field(default=150, ge=1)
    # fairness
    fairness_tau: float = Field(default=0.8, gt=0, le=1)
    fairness_min_size: int = Field(default=30, ge=1)
    fairness_min_positives: int = Field(default=5, ge=0)
    fairness_reference: dict[str, str] = Field(default_factory=dict)
    # provenance
    feature_registry_version: str = "unversioned"

    def lgb_params(self, **overrides: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
            "metric": self.early_stopping_metric,
        }
        if self.imbalance == "is_unbalance":
            params["is_unbalance"] = True
        params.update(overrides)
        return params


@dataclass(frozen=True)
class Fold:
    """Period indices (into the sorted distinct periods) of one rolling-origin fold."""

    index: int
    fit_periods: tuple[int, int]  # [start, end) periods the booster is fitted on
    stop_periods: tuple[int, int]  # [start, end) inner later slice for early stopping
    valid_periods: tuple[int, int]  # [start, end) the block evaluated
    is_test: bool


def make_folds(n_periods: int, config: TrainConfig) -> list[Fold]:
    """Rolling-origin folds; raises ValueError when there are too few periods."""
    blocks = config.n_folds * config.fold_periods
    first_valid = n_periods - blocks
    needed = blocks + config.gap_periods + config.early_stopping_periods + 1
    if first_valid - config.gap_periods - config.early_stopping_periods < 1:
        raise ValueError(
            f"{n_periods} distinct periods are too few: {config.n_folds} folds x "
            f"{config.fold_periods} period(s) + gap {config.gap_periods} + early-stopping "
            f"{config.early_stopping_periods} + 1 fitting period need {needed}"
        )
    folds = []
    for k in range(config.n_folds):
        start = first_valid + k * config.fold_periods
        train_end = start - config.gap_periods
        stop_start = train_end - config.early_stopping_periods
        folds.append(Fold(k, (0, stop_start), (stop_start, train_end),
                          (start, start + config.fold_periods), k == config.n_folds - 1))
    return folds


def feature_specs(X: pd.DataFrame) -> tuple[FeatureSpec, ...]:
    """Numeric/bool columns stay numeric; category, string and object columns are categorical."""
    specs = []
    for name in X.columns:
        col = X[name]
        dtype = col.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            levels = tuple(category_strings(pd.Series(dtype.categories)).tolist())
            specs.append(FeatureSpec(str(name), "categorical", "category", levels))
        elif pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            specs.append(FeatureSpec(str(name), "numeric", str(dtype)))
        elif pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
            levels = tuple(sorted(category_strings(col).dropna().unique().tolist()))
            specs.append(FeatureSpec(str(name), "categorical", str(dtype), levels))
        else:
            raise ValueError(f"feature column {name!r} has unsupported dtype {dtype}; "
                             "convert datetimes to numbers (e.g. months since an event)")
    return tuple(specs)


def data_fingerprint(X: pd.DataFrame, y: pd.Series, time: pd.Series,
                     config: TrainConfig | None = None,
                     weight: pd.Series | None = None) -> str:
    """SHA-256 over the values of X, y, time (not the index), the sample weights when given
    (a table sampled at another rate is other data; all-1 weights are no sampling, so they
    hash as no weights) and the config."""
    h = hashlib.sha256()
    h.update(",".join(map(str, X.columns)).encode())
    frames = [X, y.to_frame(), time.to_frame()]
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    if w is not None and not np.all(w == 1.0):
        h.update(b"sample_weight")
        frames.append(pd.Series(w).to_frame())
    for frame in frames:
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    if config is not None:
        h.update(config.model_dump_json().encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class DataSummary:
    """What a model was trained on (for its model card)."""

    rows: int
    positives: int
    features: int
    categorical_features: int
    periods: int  # distinct periods (cross-sectional: dealt blocks)
    first_period: str
    last_period: str
    # The population the rows stand for (sum of sample weights; = rows, positives unweighted).
    represented_rows: float = math.nan
    represented_positives: float = math.nan


@dataclass
class FitResult:
    """What `fit_evaluate` learned: two models, on purpose, and the evidence about them.

    `artifact` is the PRODUCTION model, refit on every row (the test block included): the
    one `doudi train` registers and serving uses. Its predictions on the rows it was given
    are in-sample and prove nothing. `evaluated_artifact` never saw the test block (it was
    not fitted, stopped or calibrated on it): the honest figures are `test_metrics`,
    `comparison` and `held_out_probability()`, its calibrated probabilities on the test rows.
    """

    artifact: ModelArtifact  # production: refit on every period; in-sample on these rows
    evaluated_artifact: ModelArtifact  # trained before the test block; the one evaluated
    test_metrics: dict[str, float]
    comparison: pd.DataFrame  # test block: model vs baselines, side by side
    fold_metrics: pd.DataFrame  # every fold x scorer
    calibration: dict[str, Any]
    calibration_curve: pd.DataFrame
    test_mask: np.ndarray
    test_probability: np.ndarray  # evaluated model's calibrated probability, test block
    test_periods: list[str]
    fairness: FairnessReport | None
    lead_time: metrics.LeadTime | None
    type_metrics: pd.DataFrame
    feature_importance: pd.DataFrame
    config: TrainConfig
    params: dict[str, Any]
    fingerprint: str
    search: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    test_margin: np.ndarray | None = None  # evaluated model's raw margin on the test block
    cross_sectional: bool = False  # no time given: the periods were dealt blocks
    data: DataSummary | None = None
    test_weight: np.ndarray | None = None  # the test rows' sample weights (None: unweighted)

    def held_out_probability(self) -> pd.Series:
        """Honest predictions: the evaluated model's calibrated probability on the test
        block, indexed by row position in the table given to `fit_evaluate`."""
        return pd.Series(self.test_probability, index=np.flatnonzero(self.test_mask),
                         name="probability")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _rows(period_idx: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    return np.flatnonzero((period_idx >= span[0]) & (period_idx < span[1]))


def _fit_stop_rows(period_idx: np.ndarray, fold: Fold,
                   held_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows a fold's booster fits on and early-stops on.

    A household's consecutive months share most feature values and overlapping label
    windows, so a stop set made of the same households as the fit set keeps improving
    for as long as the booster memorises households (measured: early stopping never
    fired in 1,000 rounds). With `held_out` (a per-row mask of held-out households) the
    stop set is the held-out households' latest periods and the fit set every other
    household's periods up to the gap.
    """
    if held_out is None:
        return _rows(period_idx, fold.fit_periods), _rows(period_idx, fold.stop_periods)
    in_fit = (period_idx >= fold.fit_periods[0]) & (period_idx < fold.stop_periods[1])
    in_stop = (period_idx >= fold.stop_periods[0]) & (period_idx < fold.stop_periods[1])
    return np.flatnonzero(in_fit & ~held_out), np.flatnonzero(in_stop & held_out)


def _before_gap(period_idx: np.ndarray, fold: Fold) -> np.ndarray:
    """Every row a fold may learn from: all households, all periods before the gap."""
    return _rows(period_idx, (fold.fit_periods[0], fold.stop_periods[1]))


def _held_out_households(household: pd.Series | None, share: float) -> np.ndarray | None:
    """Per-row mask of the households held out for early stopping (stable id hash)."""
    if household is None or share <= 0:
        return None
    ids = pd.Series(household).reset_index(drop=True).astype(str)
    hashed = pd.util.hash_pandas_object(ids, index=False, hash_key="doudi-early-stop")
    return (hashed.to_numpy() % 10_000) < round(share * 10_000)


def _subset(w: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The sample weights of `rows` (None: unweighted)."""
    return None if w is None else w[rows]


def _train_booster(Xm: np.ndarray, y: np.ndarray, fit_rows: np.ndarray,
                   stop_rows: np.ndarray | None, params: dict[str, Any], cat_idx: list[int],
                   config: TrainConfig, num_rounds: int | None = None,
                   w: np.ndarray | None = None) -> lgb.Booster:
    """Fit one booster (weighted by `w` when given, fit and stop rows alike); early-stops
    on `stop_rows` unless a fixed `num_rounds` is given."""
    if config.negative_sample_rate < 1.0:
        # Negative downsampling for speed at ~3% positives; a fixed seed keeps reruns equal.
        # On a weighted table it comes on top of the table's own sampling, unreweighted as
        # ever: the out-of-time calibration absorbs the shifted base rate.
        rng = np.random.default_rng(config.seed)
        keep = (y[fit_rows] == 1) | (rng.random(len(fit_rows)) < config.negative_sample_rate)
        fit_rows = fit_rows[keep]
    fit_y = y[fit_rows]
    fit_w = _subset(w, fit_rows)
    p = dict(params)
    if config.imbalance == "scale_pos_weight":
        if fit_w is None:
            pos = max(float(fit_y.sum()), 1.0)
            p["scale_pos_weight"] = (len(fit_y) - pos) / pos
        else:  # the population's imbalance, not the sample's
            pos = max(float(np.sum(fit_w * fit_y)), 1e-12)
            p["scale_pos_weight"] = float(np.sum(fit_w * (1 - fit_y))) / pos
    train_set = lgb.Dataset(Xm[fit_rows], label=fit_y, weight=fit_w, categorical_feature=cat_idx,
                            free_raw_data=True, params={"max_bin": config.max_bin})
    if num_rounds is not None or stop_rows is None or len(stop_rows) == 0:
        return lgb.train(p, train_set, num_boost_round=num_rounds or config.n_estimators)
    stop_set = lgb.Dataset(Xm[stop_rows], label=y[stop_rows], weight=_subset(w, stop_rows),
                           reference=train_set, categorical_feature=cat_idx)
    booster = lgb.train(
        p, train_set, num_boost_round=config.n_estimators, valid_sets=[stop_set],
        valid_names=["stop"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True,
                                      verbose=False)],
    )
    # Keep only the best rounds so the saved model is the early-stopped one.
    best = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


class _LogisticBaseline:
    """Logistic regression: median imputation + scaling for numerics, one-hot categoricals."""

    def __init__(self, specs: tuple[FeatureSpec, ...], config: TrainConfig) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        num = [i for i, s in enumerate(specs) if s.kind == "numeric"]
        cat = [i for i, s in enumerate(specs) if s.kind == "categorical"]
        transformers: list[tuple[str, Any, list[int]]] = []
        if num:
            transformers.append(("num", make_pipeline(
                SimpleImputer(strategy="median", add_indicator=True,
                              keep_empty_features=True), StandardScaler()), num))
        if cat:
            # Codes with NaN mapped to -1 so "missing" is its own one-hot level.
            transformers.append(("cat", make_pipeline(
                SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True),
                OneHotEncoder(handle_unknown="ignore", max_categories=30)), cat))
        self.pipeline = make_pipeline(ColumnTransformer(transformers),
                                      LogisticRegression(max_iter=300))
        self.config = config

    def fit(self, Xm: np.ndarray, y: np.ndarray, rows: np.ndarray,
            w: np.ndarray | None = None) -> _LogisticBaseline:
        if len(rows) > self.config.baseline_max_rows:
            rng = np.random.default_rng(self.config.seed)
            rows = np.sort(rng.choice(rows, self.config.baseline_max_rows, replace=False))
        if w is None:
            self.pipeline.fit(Xm[rows], y[rows])
        else:
            self.pipeline.fit(Xm[rows], y[rows], logisticregression__sample_weight=w[rows])
        return self

    def predict(self, Xm: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(Xm[rows])[:, 1])


def _rule_arrays(rule_scores: Mapping[str, RuleScore] | None, X: pd.DataFrame
                 ) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, rule in (rule_scores or {}).items():
        values = rule(X) if callable(rule) else rule
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (len(X),):
            raise ValueError(f"rule baseline {name!r} gave shape {arr.shape}, need ({len(X)},)")
        out[name] = np.nan_to_num(arr, nan=-np.inf)
    return out


def _score_row(scorer: str, fold: Fold, y: np.ndarray, p: np.ndarray, config: TrainConfig,
               probabilities: bool, w: np.ndarray | None = None) -> dict[str, Any]:
    summary = metrics.binary_summary(y, p, config.k_pct, config.n_bins, probabilities, w)
    return {"fold": fold.index, "is_test": fold.is_test, "scorer": scorer, **summary}


def _random_params(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "num_leaves": int(rng.choice([15, 31, 63])),
        "max_depth": int(rng.choice([4, 5, 6])),
        "learning_rate": float(rng.choice([0.03, 0.05, 0.1])),
        "min_child_samples": int(rng.choice([20, 50, 100, 200])),
        "feature_fraction": float(rng.choice([0.6, 0.8, 1.0])),
        "lambda_l2": float(rng.choice([0.0, 1.0, 10.0])),
    }


def _search(Xm: np.ndarray, y: np.ndarray, period_idx: np.ndarray, fold: Fold,
            cat_idx: list[int], config: TrainConfig, held_out: np.ndarray | None,
            w: np.ndarray | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Tiny random search under a time budget, scored by PR-AUC on one CV fold."""
    rng = np.random.default_rng(config.seed)
    start = _time.perf_counter()
    fit_rows, stop_rows = _fit_stop_rows(period_idx, fold, held_out)
    valid_rows = _rows(period_idx, fold.valid_periods)
    trials = []
    for t in range(config.search_trials + 1):
        if t and _time.perf_counter() - start > config.search_budget_seconds:
            break
        overrides = {} if t == 0 else _random_params(rng)  # trial 0 = the configured params
        booster = _train_booster(Xm, y, fit_rows, stop_rows, config.lgb_params(**overrides),
                                 cat_idx, config, w=w)
        score = metrics.pr_auc(y[valid_rows], booster.predict(Xm[valid_rows], raw_score=True),
                               _subset(w, valid_rows))
        trials.append({"trial": t, **overrides, "pr_auc": score,
                       "rounds": booster.current_iteration()})
    table = pd.DataFrame(trials)
    best = table.iloc[int(np.argmax(table["pr_auc"].fillna(-1).to_numpy()))]
    # The table's columns are float (trial 0 has NaN there): give LightGBM its types back.
    template = _random_params(rng)
    keys = [k for k in template if k in table.columns and not pd.isna(best.get(k))]
    return {k: type(template[k])(best[k]) for k in keys}, table


def _type_models(Xm: np.ndarray, y: np.ndarray, type_labels: pd.DataFrame | None,
                 train_rows: np.ndarray, test_rows: np.ndarray, cat_idx: list[int],
                 config: TrainConfig, w: np.ndarray | None = None
                 ) -> tuple[dict[str, lgb.Booster], pd.DataFrame]:
    """One small booster per risk type on identified rows: P(type | identified, x)
    (weighted by `w` when given; identified rows are positives, usually weight 1)."""
    if type_labels is None or type_labels.empty:
        return {}, pd.DataFrame(columns=["risk_type", "status"])
    params = config.lgb_params(num_leaves=config.type_num_leaves, learning_rate=0.05,
                               min_child_samples=10, metric="binary_logloss")
    params.pop("scale_pos_weight", None)
    pos_train = train_rows[y[train_rows] == 1]
    pos_test = test_rows[y[test_rows] == 1]
    pos_all = np.flatnonzero(y == 1)
    models: dict[str, lgb.Booster] = {}
    rows = []
    for column in type_labels.columns:
        name = str(column).removeprefix("label_")
        t = type_labels[column].fillna(0).to_numpy(dtype=np.float64)
        n_train, n_test = int(t[pos_train].sum()), int(t[pos_test].sum())
        row: dict[str, Any] = {"risk_type": name, "positives_train": n_train,
                               "positives_test": n_test, "identified_train": len(pos_train)}
        lacking = min(n_train, len(pos_train) - n_train)
        if lacking < config.type_min_positives:
            row.update(status=f"skipped: {lacking} rows in the rarer class "
                       f"(< {config.type_min_positives})", roc_auc=math.nan)
            rows.append(row)
            continue
        evaluated = lgb.train(params, lgb.Dataset(Xm[pos_train], label=t[pos_train],
                                                  weight=_subset(w, pos_train),
                                                  categorical_feature=cat_idx),
                              num_boost_round=config.type_n_estimators)
        row["roc_auc"] = (metrics.roc_auc(t[pos_test], evaluated.predict(Xm[pos_test]),
                                          _subset(w, pos_test))
                          if len(pos_test) else math.nan)
        row["status"] = "trained"
        models[name] = lgb.train(params, lgb.Dataset(Xm[pos_all], label=t[pos_all],
                                                     weight=_subset(w, pos_all),
                                                     categorical_feature=cat_idx),
                                 num_boost_round=config.type_n_estimators)
        rows.append(row)
    return models, pd.DataFrame(rows)


def _ordinal(value: Any) -> float:
    """A period as a number comparable across runs (months for datetimes)."""
    return float(metrics.month_ordinal(pd.Series([value]))[0])


def _as_json_time(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def cross_sectional_blocks(y: np.ndarray, n_blocks: int, seed: int,
                           units: pd.Series | None = None) -> np.ndarray:
    """Each row's block, for cross-sectional data: the blocks play the periods.

    The units (the rows, or the ids in `units`: one household's members stay together, so
    none is fitted on and evaluated at once) are shuffled with `seed` and dealt round robin,
    units with a positive first, so every block gets its share of the positives.
    """
    if units is None:
        codes = np.arange(len(y))
    else:
        ids = pd.Series(units).reset_index(drop=True)
        if ids.isna().any():
            raise ValueError(f"household has {int(ids.isna().sum())} missing id(s)")
        codes = pd.factorize(ids)[0]
    n_units = int(codes.max()) + 1 if len(codes) else 0
    if n_units < n_blocks:
        what = "sample(s)" if units is None else "household(s)"
        raise ValueError(
            f"{n_units} {what} are too few: cross-sectional evaluation deals them into "
            f"{n_blocks} blocks (n_folds x fold_periods + gap + early-stopping periods + 1)")
    positive = np.bincount(codes, weights=y, minlength=n_units) > 0
    order = np.random.default_rng(seed).permutation(n_units)
    order = order[np.argsort(~positive[order], kind="stable")]
    block_of_unit = np.empty(n_units, dtype=np.int64)
    block_of_unit[order] = np.arange(n_units) % n_blocks
    return block_of_unit[codes]


@dataclass
class _Table:
    """`fit_evaluate`'s inputs, checked and encoded once."""

    X: pd.DataFrame
    Xm: np.ndarray  # X encoded (categorical codes): what the boosters see
    y: np.ndarray  # 0/1 as float64
    time: pd.Series  # each row's period (cross-sectional: its dealt block)
    period_idx: np.ndarray  # each row's index into `periods`
    periods: pd.Index  # the sorted distinct periods
    specs: tuple[FeatureSpec, ...]
    cat_idx: list[int]
    folds: list[Fold]
    held_out: np.ndarray | None  # households held out for early stopping (per row)
    rules: dict[str, np.ndarray]
    fingerprint: str
    w: np.ndarray | None = None  # sample weights (None: every row stands for itself)


def _sample_weights(weight: pd.Series | None, n: int) -> np.ndarray | None:
    """`weight` as float64: finite, non-negative, some positive; else a one-line ValueError."""
    if weight is None:
        return None
    w = metrics.check_weights(pd.Series(weight).to_numpy(), n, "weight")
    if w is not None and not w.sum() > 0:
        raise ValueError("weight sums to 0: at least one row must carry weight")
    return w


def _prepare(X: pd.DataFrame, y: pd.Series, time: pd.Series | None,
             household: pd.Series | None, config: TrainConfig,
             rule_scores: Mapping[str, RuleScore] | None,
             aligned: Mapping[str, Any], weight: pd.Series | None = None) -> _Table:
    """Check that every input aligns with X, encode X, find the periods and the folds."""
    n = len(X)
    for name, other in aligned.items():
        if other is not None and len(other) != n:
            raise ValueError(f"{name} has {len(other)} rows but X has {n}")
    check_unique_columns(X.columns)
    y_arr = _zero_one(y)
    w = _sample_weights(weight, n)
    cross_sectional = time is None
    if time is None:
        n_blocks = periods_needed(config.n_folds, config.fold_periods, config.gap_periods,
                                  config.early_stopping_periods)
        time = pd.Series(cross_sectional_blocks(y_arr, n_blocks, config.seed, household))
    specs = feature_specs(X)
    period_idx, periods = pd.factorize(pd.Series(time).reset_index(drop=True), sort=True)
    if (period_idx < 0).any():
        raise ValueError("time has missing values")
    return _Table(
        X=X, Xm=encode_frame(X, specs), y=y_arr, time=pd.Series(time),
        period_idx=period_idx, periods=periods, specs=specs,
        cat_idx=[i for i, s in enumerate(specs) if s.kind == "categorical"],
        folds=make_folds(len(periods), config),
        # Cross-sectional blocks already keep each household in one block.
        held_out=None if cross_sectional else _held_out_households(
            household, config.early_stopping_holdout),
        rules=_rule_arrays(rule_scores, X),
        fingerprint=data_fingerprint(X, pd.Series(y), pd.Series(time), config,
                                     None if weight is None else pd.Series(weight)),
        w=w,
    )


def check_unique_columns(columns: Iterable[Any]) -> None:
    """Refuse column names that repeat once read as text: a feature is found by its name."""
    names = [str(c) for c in columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"X has duplicate column names {duplicated}: every feature needs a "
                         "name of its own")


def _zero_one(y: pd.Series) -> np.ndarray:
    """y as float 0/1; anything else (text labels, other values, missing) in one line."""
    labels = pd.Series(y)
    try:
        y_arr = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        y_arr = np.full(len(labels), np.nan)  # text labels: reported below
    if np.isnan(y_arr).any() or not np.isin(y_arr, (0.0, 1.0)).all():
        found = ", ".join(map(repr, pd.unique(labels.dropna())[:5].tolist()))
        raise ValueError(
            f"y must be 0/1 without missing values; found {int(labels.isna().sum())} missing "
            f"and the values {found}: map them to 0/1 (training.estimator."
            "CalibratedLGBMClassifier takes any two classes)")
    return y_arr


def _baseline_rows(t: _Table, fold: Fold, rows: np.ndarray,
                   config: TrainConfig) -> list[dict[str, Any]]:
    """The logistic baseline's and the rules' scores on a fold's validation `rows`."""
    out = []
    y, w = t.y[rows], _subset(t.w, rows)
    if config.logistic_baseline:
        lr = _LogisticBaseline(t.specs, config).fit(t.Xm, t.y, _before_gap(t.period_idx, fold),
                                                    t.w)
        out.append(_score_row("logistic", fold, y, lr.predict(t.Xm, rows), config, True, w))
    for name, score in t.rules.items():
        out.append(_score_row(f"rule:{name}", fold, y, score[rows], config, False, w))
    return out


@dataclass
class _OutOfTime:
    """The cross-validation folds: their scores, and their validation blocks' raw margins
    and labels (what calibration is fitted on)."""

    score_rows: list[dict[str, Any]] = field(default_factory=list)
    margins: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)  # empty when unweighted

    def weight(self, folds: slice, extra: np.ndarray | None = None) -> np.ndarray | None:
        """The `folds`' sample weights concatenated (+ `extra`); None when unweighted."""
        if not self.weights:
            return None
        return np.concatenate([*self.weights[folds], *([] if extra is None else [extra])])


def _cross_validate(t: _Table, params: dict[str, Any], config: TrainConfig) -> _OutOfTime:
    """One early-stopped booster per CV fold, scored with the baselines on its block."""
    oot = _OutOfTime()
    for fold in t.folds[:-1]:
        fit_rows, stop_rows = _fit_stop_rows(t.period_idx, fold, t.held_out)
        valid_rows = _rows(t.period_idx, fold.valid_periods)
        booster = _train_booster(t.Xm, t.y, fit_rows, stop_rows, params, t.cat_idx, config,
                                 w=t.w)
        margin = np.asarray(booster.predict(t.Xm[valid_rows], raw_score=True,
                                            num_threads=config.num_threads))
        oot.margins.append(margin)
        oot.labels.append(t.y[valid_rows])
        valid_w = _subset(t.w, valid_rows)
        if valid_w is not None:
            oot.weights.append(valid_w)
        row = _score_row("lightgbm_raw", fold, t.y[valid_rows], _sigmoid(margin), config, True,
                         valid_w)
        row["rounds"] = booster.current_iteration()
        oot.score_rows.append(row)
        oot.score_rows.extend(_baseline_rows(t, fold, valid_rows, config))
    return oot


@dataclass(frozen=True)
class _Calibration:
    method: calib.CalibrationMethod
    candidates: dict[str, dict[str, float]]  # every method fitted on earlier folds, scored
    evaluated: Calibrator  # the method refitted on all CV margins: the evaluated model's


def _calibrate_out_of_time(oot: _OutOfTime, config: TrainConfig) -> _Calibration:
    """Choose the method on the CV folds (earlier folds fit, latest fold scores) unless the
    config names one; refit it on every CV fold's margins."""
    earlier_m, earlier_y = np.concatenate(oot.margins[:-1]), np.concatenate(oot.labels[:-1])
    method, candidates = calib.choose_calibration(
        earlier_m, earlier_y, oot.margins[-1], oot.labels[-1], config.n_bins,
        fit_w=oot.weight(slice(None, -1)), eval_w=oot.weight(slice(-1, None)))
    if config.calibration != "auto":
        method = config.calibration
    fitted = calib.fit_calibrator(method, np.concatenate(oot.margins), np.concatenate(oot.labels),
                                  oot.weight(slice(None)))
    return _Calibration(method, candidates, fitted)


@dataclass
class _Evaluated:
    """The evaluated model (everything before the test block, minus the gap) on the test
    block: the run's honest figures."""

    booster: lgb.Booster
    rows: np.ndarray  # the test block's rows
    y: np.ndarray
    margin: np.ndarray
    probability: np.ndarray  # calibrated
    comparison_rows: list[dict[str, Any]]  # the model first, then the baselines
    raw_row: dict[str, Any]  # the model before calibration
    w: np.ndarray | None = None  # the test rows' sample weights

    @property
    def rounds(self) -> int:
        return int(self.booster.current_iteration())


def _evaluate_on_test(t: _Table, params: dict[str, Any], calibrator: Calibrator,
                      config: TrainConfig) -> _Evaluated:
    test = t.folds[-1]
    fit_rows, stop_rows = _fit_stop_rows(t.period_idx, test, t.held_out)
    rows = _rows(t.period_idx, test.valid_periods)
    booster = _train_booster(t.Xm, t.y, fit_rows, stop_rows, params, t.cat_idx, config,
                             w=t.w)
    margin = np.asarray(booster.predict(t.Xm[rows], raw_score=True,
                                        num_threads=config.num_threads))
    probability = calibrator.apply(margin)
    y, w = t.y[rows], _subset(t.w, rows)
    headline = _score_row("lightgbm", test, y, probability, config, True, w)
    headline["rounds"] = booster.current_iteration()
    raw_row = _score_row("lightgbm_raw", test, y, _sigmoid(margin), config, True, w)
    # Before calibration: ranking by the margin (serving's order), Brier/ECE of the raw sigmoid.
    # After: the plain names. The gate refuses a calibrator whose ranking metrics fall.
    margin_ranking = metrics.ranking_summary(y, margin, config.k_pct, w)
    headline.update({f"margin_{k}": v for k, v in margin_ranking.items()})
    headline.update({f"raw_{k}": raw_row[k] for k in ("brier", "ece")})
    return _Evaluated(booster, rows, y, margin, probability,
                      [headline, *_baseline_rows(t, test, rows, config)], raw_row, w)


def _fairness_on_test(groups: pd.DataFrame | None, ev: _Evaluated,
                      config: TrainConfig) -> FairnessReport | None:
    if groups is None or not len(groups.columns):
        return None
    return fairness_report(
        ev.y, ev.probability, groups.iloc[ev.rows].reset_index(drop=True),
        k_pct=config.k_pct, reference=config.fairness_reference, tau=config.fairness_tau,
        min_size=config.fairness_min_size, min_positives=config.fairness_min_positives,
        n_bins=config.n_bins, w=ev.w)


def _lead_time_on_test(household: pd.Series | None, time: pd.Series, ev: _Evaluated,
                       config: TrainConfig) -> metrics.LeadTime | None:
    """How early the test block's identified households were in their month's top k%
    (a panel measure: needs household ids and real periods)."""
    if household is None:
        return None
    hh = pd.Series(household).to_numpy()[ev.rows]
    t_test = pd.Series(time).to_numpy()[ev.rows]
    ident = metrics.identification_from_labels(hh, t_test, ev.y)
    flagged = metrics.top_k_mask_by_period(ev.margin, t_test, config.k_pct, ev.w)
    return metrics.lead_time_summary(metrics.lead_times(hh, t_test, flagged, ident))


def _refit_production(t: _Table, params: dict[str, Any], cal: _Calibration, oot: _OutOfTime,
                      ev: _Evaluated, config: TrainConfig) -> tuple[lgb.Booster, Calibrator]:
    """Every period, the evaluated model's number of rounds (no slice is left to stop on);
    the calibrator refitted on every out-of-time margin (CV folds + test block)."""
    production = _train_booster(t.Xm, t.y, np.arange(len(t.X)), None, params, t.cat_idx,
                                config, num_rounds=ev.rounds, w=t.w)
    calibrator = calib.fit_calibrator(cal.method, np.concatenate([*oot.margins, ev.margin]),
                                      np.concatenate([*oot.labels, ev.y]),
                                      oot.weight(slice(None), ev.w))
    return production, calibrator


def _artifact_metas(t: _Table, cal: _Calibration, params: dict[str, Any], ev: _Evaluated,
                    production: lgb.Booster, test_metrics: dict[str, float],
                    config: TrainConfig, as_of: str | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(production meta, evaluated meta): what each artifact's `meta.json` records."""
    test = t.folds[-1]
    common = {
        "feature_registry_version": config.feature_registry_version,
        "as_of": as_of,
        "data_fingerprint": t.fingerprint,
        "calibration_method": cal.method,
        "params": {k: v for k, v in params.items() if k != "verbosity"},
        "test_periods": _test_periods(t),
        "test_metrics": test_metrics,
        "n_rows": len(t.X),
    }
    last, through_eval = t.periods[len(t.periods) - 1], t.periods[test.stop_periods[1] - 1]
    production_meta = {**common, "trained_through": _as_json_time(last),
                       "trained_through_ordinal": _ordinal(last),
                       "rounds": production.current_iteration(), "role": "production"}
    evaluated_meta = {**common, "trained_through": _as_json_time(through_eval),
                      "trained_through_ordinal": _ordinal(through_eval),
                      "rounds": ev.rounds, "role": "evaluated"}
    return production_meta, evaluated_meta


def _test_periods(t: _Table) -> list[str]:
    return [_as_json_time(t.periods[i]) for i in range(*t.folds[-1].valid_periods)]


def _data_summary(t: _Table) -> DataSummary:
    positives = int(t.y.sum())
    return DataSummary(rows=len(t.X), positives=positives, features=len(t.specs),
                       categorical_features=len(t.cat_idx), periods=len(t.periods),
                       first_period=_as_json_time(t.periods[0]),
                       last_period=_as_json_time(t.periods[len(t.periods) - 1]),
                       represented_rows=float(len(t.X) if t.w is None else t.w.sum()),
                       represented_positives=float(positives if t.w is None
                                                   else np.sum(t.w * t.y)))


def _feature_importance(specs: tuple[FeatureSpec, ...], booster: lgb.Booster) -> pd.DataFrame:
    return pd.DataFrame({
        "feature": [s.name for s in specs],
        "gain": booster.feature_importance("gain"),
        "split": booster.feature_importance("split"),
    }).sort_values("gain", ascending=False, ignore_index=True)


def fit_evaluate(
    X: pd.DataFrame,
    y: pd.Series,
    time: pd.Series | None,
    *,
    config: TrainConfig | None = None,
    groups: pd.DataFrame | None = None,
    household: pd.Series | None = None,
    type_labels: pd.DataFrame | None = None,
    rule_scores: Mapping[str, RuleScore] | None = None,
    as_of: str | None = None,
    weight: pd.Series | None = None,
) -> FitResult:
    """Cross-validate over time, calibrate out of time, evaluate on the latest block, refit.

    X: features (numeric, bool, category/str/object; missing values allowed). y: 0/1.
    time: as-of period (datetime, Period or any sortable value; fold ids work too), or
    None for cross-sectional data: rows (or households) are dealt into seeded blocks that
    play the periods, no household is held out and no lead time is reported
    (`cross_sectional_blocks`). groups: fairness attributes (one column each).
    household: ids for lead time and the early-stopping holdout (cross-sectional: the
    units kept in one block). type_labels: 0/1 columns per hardship type (name
    `label_<type>`). rule_scores: named rule baselines, a score per row or a callable on
    X. weight: sample weights (finite, >= 0; e.g. `sample_weight` of a negative-down-sampled
    table: 1 for positives, 1/r for kept negatives): every fit, calibrator and metric is
    weighted so figures estimate the full population; None = every row weighs 1.
    All inputs align by position.
    """
    config = config or TrainConfig()
    timings: dict[str, float] = {}
    clock = _time.perf_counter()
    cross_sectional = time is None
    t = _prepare(X, y, time, household, config, rule_scores,
                 {"y": y, "time": time, "groups": groups, "household": household,
                  "type_labels": type_labels, "weight": weight}, weight)
    timings["prepare_s"] = _time.perf_counter() - clock

    search_table = None
    overrides: dict[str, Any] = {}
    if config.search_trials:
        clock = _time.perf_counter()
        overrides, search_table = _search(t.Xm, t.y, t.period_idx, t.folds[-2], t.cat_idx,
                                          config, t.held_out, t.w)
        timings["search_s"] = _time.perf_counter() - clock
    params = config.lgb_params(**overrides)

    clock = _time.perf_counter()
    oot = _cross_validate(t, params, config)
    timings["cv_s"] = _time.perf_counter() - clock
    cal = _calibrate_out_of_time(oot, config)
    clock = _time.perf_counter()
    ev = _evaluate_on_test(t, params, cal.evaluated, config)
    timings["evaluated_s"] = _time.perf_counter() - clock
    fairness = _fairness_on_test(groups, ev, config)
    lead = None if cross_sectional else _lead_time_on_test(household, t.time, ev, config)

    clock = _time.perf_counter()
    production, production_calibrator = _refit_production(t, params, cal, oot, ev, config)
    type_boosters, type_table = _type_models(
        t.Xm, t.y, None if type_labels is None else type_labels.reset_index(drop=True),
        _before_gap(t.period_idx, t.folds[-1]), ev.rows, t.cat_idx, config, t.w)
    timings["production_s"] = _time.perf_counter() - clock

    test_metrics = {k: v for k, v in ev.comparison_rows[0].items()
                    if isinstance(v, float | int) and not isinstance(v, bool)}
    if lead is not None:
        test_metrics.update({f"lead_{k}": float(v) for k, v in lead.as_dict().items()})
    production_meta, evaluated_meta = _artifact_metas(t, cal, params, ev, production,
                                                      test_metrics, config, as_of)
    return FitResult(
        artifact=ModelArtifact(production, t.specs, production_calibrator, production_meta,
                               type_boosters),
        evaluated_artifact=ModelArtifact(ev.booster, t.specs, cal.evaluated, evaluated_meta),
        test_metrics=test_metrics,
        comparison=pd.DataFrame(ev.comparison_rows),
        fold_metrics=pd.DataFrame([*oot.score_rows, ev.raw_row, *ev.comparison_rows]),
        calibration={"method": cal.method, "candidates": cal.candidates,
                     "evaluated": cal.evaluated.to_json()["method"]},
        calibration_curve=metrics.calibration_curve(ev.y, ev.probability, config.n_bins, ev.w),
        test_mask=np.isin(np.arange(len(t.X)), ev.rows),
        test_probability=ev.probability,
        test_periods=_test_periods(t),
        fairness=fairness,
        lead_time=lead,
        type_metrics=type_table,
        feature_importance=_feature_importance(t.specs, production),
        config=config,
        params=params,
        fingerprint=t.fingerprint,
        search=search_table,
        timings=timings,
        test_margin=ev.margin,
        cross_sectional=cross_sectional,
        data=_data_summary(t),
        test_weight=ev.w,
    )
