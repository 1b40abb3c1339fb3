"""The data-agnostic core on non-doudi tables, and the out-of-time guarantees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, make_classification

from training.core import (
    FitResult,
    TrainConfig,
    _before_gap,
    _fit_stop_rows,
    _held_out_households,
    fit_evaluate,
    make_folds,
)

FAST = {"num_threads": 1, "learning_rate": 0.1, "n_estimators": 200,
        "early_stopping_rounds": 20, "min_child_samples": 20}


def _table(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """make_classification + a monthly time index + a string column with missing values."""
    X, y = make_classification(n_samples=8000, n_features=10, n_informative=5,
                               weights=[0.93], random_state=seed)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(10)])
    rng = np.random.default_rng(seed)
    region = np.where(frame["f0"] > 0.5, "hill", rng.choice(["plain", "river"], len(frame)))
    frame["region"] = pd.Series(region, dtype="str")
    frame.loc[rng.random(len(frame)) < 0.15, "region"] = None
    frame.loc[rng.random(len(frame)) < 0.1, "f1"] = np.nan
    month = pd.Series(np.repeat(pd.date_range("2024-01-31", periods=8, freq="ME"), 1000))
    return frame, pd.Series(y), month


@pytest.fixture(scope="module")
def fitted() -> tuple[FitResult, pd.DataFrame, pd.Series, pd.Series]:
    X, y, t = _table()
    result = fit_evaluate(X, y, t, config=TrainConfig(**FAST),
                          groups=pd.DataFrame({"region": X["region"]}),
                          household=pd.Series(np.tile(np.arange(1000), 8)),
                          type_labels=pd.DataFrame({"label_a": (X["f2"] > 0).astype(int),
                                                    "label_rare": np.zeros(len(X), int)}),
                          rule_scores={"f0_rule": lambda frame: frame["f0"]})
    return result, X, y, t


def test_core_on_a_non_doudi_table(fitted: tuple[FitResult, pd.DataFrame, pd.Series,
                                                 pd.Series]) -> None:
    result, X, _, _ = fitted
    assert result.test_periods == ["2024-08-31T00:00:00"]
    assert result.test_mask.sum() == 1000
    cmp = result.comparison.set_index("scorer")
    assert list(cmp.index) == ["lightgbm", "logistic", "rule:f0_rule"]
    assert cmp.loc["lightgbm", "roc_auc"] > 0.85
    assert cmp.loc["lightgbm", "roc_auc"] > cmp.loc["rule:f0_rule", "roc_auc"]
    assert 0 <= cmp.loc["lightgbm", "ece"] < 0.05
    assert set(result.fold_metrics["fold"]) == {0, 1, 2}
    assert result.calibration["method"] in ("isotonic_logit", "platt")
    # Calibration never changes the ranking: after == before (the raw margin), to 1e-9.
    m = result.test_metrics
    for name in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k"):
        assert m[name] == pytest.approx(m[f"margin_{name}"], abs=1e-9)
    assert result.test_margin is not None
    assert len(np.unique(result.test_probability)) == len(np.unique(result.test_margin))
    assert result.artifact.feature_names == list(X.columns)
    assert result.artifact.features[-1].kind == "categorical"
    assert result.fairness is not None and set(result.fairness.table["group"]) >= {"hill",
                                                                                   "missing"}
    assert result.lead_time is not None and result.lead_time.identified > 0
    types = result.type_metrics.set_index("risk_type")
    assert types.loc["a", "status"] == "trained" and types.loc["a", "roc_auc"] > 0.8
    assert types.loc["rare", "status"].startswith("skipped")
    assert list(result.artifact.type_boosters) == ["a"]
    # The production artifact reproduces itself through the DataFrame path.
    np.testing.assert_allclose(result.artifact.predict_proba(X.iloc[:5]),
                               result.artifact.predict_proba(result.artifact.encode(X.iloc[:5])))


def test_test_block_never_reaches_the_evaluated_model(
        fitted: tuple[FitResult, pd.DataFrame, pd.Series, pd.Series]) -> None:
    """Flipping every test-block label changes nothing about the model evaluated on it."""
    result, X, y, t = fitted
    flipped = y.copy()
    flipped[result.test_mask] = 1 - flipped[result.test_mask]
    again = fit_evaluate(X, flipped, t, config=TrainConfig(**FAST, logistic_baseline=False),
                         household=pd.Series(np.tile(np.arange(1000), 8)))
    np.testing.assert_array_equal(again.test_probability, result.test_probability)
    np.testing.assert_array_equal(again.evaluated_artifact.raw_margin(X.iloc[:200]),
                                  result.evaluated_artifact.raw_margin(X.iloc[:200]))
    assert again.fingerprint != result.fingerprint
    assert again.test_metrics["roc_auc"] < 0.2  # the same scores judged against flipped labels


def test_fold_ids_and_a_bundled_dataset() -> None:
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    folds = pd.Series(np.arange(len(X)) % 6)  # fold ids instead of dates
    result = fit_evaluate(X, y, folds, config=TrainConfig(
        **{**FAST, "min_child_samples": 5}, k_pct=10, baseline_max_rows=1000))
    assert result.test_periods == ["5"]
    assert result.test_metrics["roc_auc"] > 0.9


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(3, 6), st.integers(1, 3), st.integers(0, 6),
       st.integers(1, 3))
def test_rolling_origin_folds_never_look_ahead(n_periods: int, n_folds: int, fold_periods: int,
                                               gap: int, stop: int) -> None:
    config = TrainConfig(n_folds=n_folds, fold_periods=fold_periods, gap_periods=gap,
                         early_stopping_periods=stop)
    if n_periods - n_folds * fold_periods - gap - stop < 1:
        with pytest.raises(ValueError, match="too few"):
            make_folds(n_periods, config)
        return
    folds = make_folds(n_periods, config)
    assert len(folds) == n_folds and folds[-1].is_test and not any(f.is_test for f in folds[:-1])
    assert folds[-1].valid_periods[1] == n_periods
    for f in folds:
        assert 0 == f.fit_periods[0] < f.fit_periods[1] == f.stop_periods[0]
        assert f.stop_periods[1] + gap == f.valid_periods[0]
        assert f.valid_periods[1] - f.valid_periods[0] == fold_periods
    starts = [f.valid_periods[0] for f in folds]
    assert starts == sorted(starts) and len(set(starts)) == n_folds


def test_bad_inputs_are_named() -> None:
    X, y, t = _table()
    with pytest.raises(ValueError, match="0/1"):
        fit_evaluate(X, y.replace(1, 2), t, config=TrainConfig(**FAST))
    with pytest.raises(ValueError, match="too few"):
        fit_evaluate(X, y, pd.Series(np.arange(len(X)) % 3), config=TrainConfig(**FAST))
    with pytest.raises(ValueError, match="time has 3 rows"):
        fit_evaluate(X, y, t.iloc[:3], config=TrainConfig(**FAST))
    words = y.map({0: "no", 1: "yes"})
    with pytest.raises(ValueError, match=r"0/1 .* found 0 missing and the values 'no', 'yes'"):
        fit_evaluate(X, words, t, config=TrainConfig(**FAST))
    with pytest.raises(ValueError, match="found 1 missing"):
        fit_evaluate(X, y.where(y.index != 5), t, config=TrainConfig(**FAST))
    with pytest.raises(ValueError, match=r"duplicate column names \['f1'\]"):
        fit_evaluate(pd.concat([X, X[["f1"]]], axis=1), y, t, config=TrainConfig(**FAST))


def test_negative_downsampling_keeps_ranking_and_calibration() -> None:
    X, y, t = _table(seed=1)
    result = fit_evaluate(X, y, t, config=TrainConfig(**FAST, negative_sample_rate=0.3,
                                                      logistic_baseline=False))
    assert result.test_metrics["roc_auc"] > 0.85
    # Boosters saw ~3x the real positive share; out-of-time calibration brings it back.
    assert abs(result.test_metrics["mean_predicted"] - y[result.test_mask].mean()) < 0.02
    assert result.test_metrics["ece"] < 0.05


@settings(max_examples=100, deadline=None)
@given(st.integers(8, 20), st.integers(0, 3), st.floats(0.05, 0.5), st.integers(0, 10_000))
def test_early_stopping_households_are_never_fitted(n_periods: int, gap: int, share: float,
                                                    seed: int) -> None:
    rng = np.random.default_rng(seed)
    households = pd.Series(rng.integers(0, 50, size=n_periods * 30)).map("h{:03d}".format)
    period_idx = np.sort(rng.integers(0, n_periods, size=len(households)))
    held = _held_out_households(households, share)
    assert held is not None
    # the holdout is a property of the household, not of the row
    assert pd.Series(held).groupby(households.to_numpy()).nunique().max() == 1
    fold = make_folds(n_periods, TrainConfig(gap_periods=gap))[-1]
    fit_rows, stop_rows = _fit_stop_rows(period_idx, fold, held)
    assert not set(households[fit_rows]) & set(households[stop_rows])
    assert (period_idx[fit_rows] < fold.stop_periods[1]).all()
    assert ((period_idx[stop_rows] >= fold.stop_periods[0])
            & (period_idx[stop_rows] < fold.stop_periods[1])).all()
    # every other household's rows before the gap are fitted on
    before = _before_gap(period_idx, fold)
    assert fit_rows.tolist() == before[~held[before]].tolist()
    assert stop_rows.tolist() == [r for r in before if held[r]
                                  and period_idx[r] >= fold.stop_periods[0]]


def test_early_stopping_fires_when_households_repeat() -> None:
    """Labels carried by the household, not by any signal that generalises to others:
    a stop set of the same households rewards memorising them; held-out ones do not."""
    rng = np.random.default_rng(3)
    n_households, n_periods = 600, 10
    fingerprint = rng.normal(size=(n_households, 6))
    prone = rng.random(n_households) < 0.15  # unrelated to the fingerprint
    hh = np.tile(np.arange(n_households), n_periods)
    X = pd.DataFrame(fingerprint[hh] + rng.normal(scale=0.01, size=(len(hh), 6)),
                     columns=[f"f{i}" for i in range(6)])
    y = pd.Series((rng.random(len(hh)) < np.where(prone[hh], 0.6, 0.02)).astype(int))
    t = pd.Series(np.repeat(np.arange(n_periods), n_households))
    config = {**FAST, "n_estimators": 300, "logistic_baseline": False}

    def rounds(holdout: float) -> int:
        result = fit_evaluate(X, y, t, household=pd.Series(hh),
                              config=TrainConfig(**config, early_stopping_holdout=holdout))
        comparison = result.comparison.set_index("scorer")
        return int(comparison.loc["lightgbm", "rounds"])

    assert rounds(0.0) > 3 * rounds(0.2)


def test_search_hands_lightgbm_its_parameter_types() -> None:
    """A random trial that wins gives integer parameters back as integers (the search table
    stores them as floats; LightGBM refuses num_leaves=63.0)."""
    X, y, t = _table()
    result = fit_evaluate(X, y, t, config=TrainConfig(**FAST, search_trials=3,
                                                      logistic_baseline=False))
    assert result.search is not None
    best = result.search.iloc[int(result.search["pr_auc"].to_numpy().argmax())]
    assert best["trial"] > 0  # a random trial won: the case that used to crash
    for name in ("num_leaves", "max_depth", "min_child_samples"):
        assert result.params[name] == best[name] and isinstance(result.params[name], int)
    assert result.params["learning_rate"] == best["learning_rate"]


def test_cross_sectional_mode_without_time() -> None:
    """time=None: rows dealt into seeded blocks, households kept whole, no lead time even
    with household ids (it is a panel measure), no early-stopping holdout."""
    X, y, _ = _table()
    household = pd.Series(np.arange(len(X)) // 4)
    result = fit_evaluate(X, y, None, config=TrainConfig(**FAST, logistic_baseline=False),
                          household=household)
    assert result.cross_sectional and result.lead_time is None
    assert not [k for k in result.test_metrics if k.startswith("lead_")]
    assert result.test_periods == ["4"] and result.data is not None
    assert result.data.periods == 5 and result.data.rows == len(X)
    assert result.data.positives == int(y.sum())
    tested = set(household[result.test_mask])
    assert not tested & set(household[~result.test_mask])
    # roughly a fifth of the rows and of the positives in the test block
    assert abs(result.test_mask.mean() - 0.2) < 0.01
    assert abs(y[result.test_mask].sum() / y.sum() - 0.2) < 0.02
    assert result.test_metrics["roc_auc"] > 0.85
    # the same rows with fold ids as time (a panel, for the core) report lead time
    with_time = fit_evaluate(X, y, pd.Series(np.arange(len(X)) % 5),
                             config=TrainConfig(**FAST, logistic_baseline=False),
                             household=household)
    assert with_time.lead_time is not None


def test_the_public_api_is_lazy() -> None:
    """`import training` names the public API and imports nothing heavy until it is used."""
    import subprocess
    import sys

    import training

    assert sorted(training.__all__) == training.__all__
    for name in training.__all__:
        assert getattr(training, name).__name__ == name
    code = ("import sys, training; heavy = {'lightgbm', 'pandas', 'mlflow', 'sklearn'}; "
            "print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
