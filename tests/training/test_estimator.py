"""The training core as a scikit-learn estimator (`training.estimator`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from training.core import cross_sectional_blocks, fit_evaluate
from training.estimator import CalibratedLGBMClassifier

# Small-data parameters: the core's defaults (min_child_samples=100, up to 1,000 rounds) are
# made for household panels; on check_estimator's 20-150-row datasets they cannot split at
# all (check_classifiers_train then fails its accuracy floor), and they would be slow.
SMALL: dict[str, Any] = {"n_estimators": 30, "min_child_samples": 2, "early_stopping_rounds": 5,
         "learning_rate": 0.3}
FAST: dict[str, Any] = {"n_estimators": 60, "min_child_samples": 10, "early_stopping_rounds": 10,
        "learning_rate": 0.2}


# Every applicable check passes. Binary only is declared in `__sklearn_tags__`
# (classifier_tags.multi_class = False): scikit-learn then runs its classifier checks on
# two-class data and, instead of the multiclass ones, checks that fit refuses three classes.
@parametrize_with_checks([CalibratedLGBMClassifier(**SMALL)])
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def _frame(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """make_classification + a string column with missing values and a category column."""
    X, y = make_classification(n_samples=n, n_features=6, n_informative=4, weights=[0.85],
                               random_state=seed)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    rng = np.random.default_rng(seed)
    region = np.where(frame["f0"] > 0.3, "hill", rng.choice(["plain", "river"], n))
    frame["region"] = pd.Series(region, dtype="str")
    frame.loc[rng.random(n) < 0.1, "region"] = None
    frame["size"] = pd.Categorical(rng.choice(["small", "large"], n))
    frame.loc[rng.random(n) < 0.1, "f1"] = np.nan
    return frame, pd.Series(y, name="target")


def test_same_probabilities_as_the_core() -> None:
    X, y = _frame()
    model = CalibratedLGBMClassifier(**FAST, random_state=7).fit(X, y)
    core = fit_evaluate(X, y, None, config=model.train_config())
    p = model.predict_proba(X)
    assert p.shape == (len(X), 2)
    np.testing.assert_array_equal(p[:, 1], core.artifact.predict_proba(X))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert model.result_.fingerprint == core.fingerprint
    # another seed deals other blocks: another model
    other = CalibratedLGBMClassifier(**FAST, random_state=8).fit(X, y)
    assert not np.array_equal(other.predict_proba(X), p)


def test_clone_pipeline_and_cross_val_predict() -> None:
    X, y = make_classification(n_samples=900, n_features=8, n_informative=5, random_state=1)
    model = CalibratedLGBMClassifier(**FAST)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert not hasattr(copy, "result_")
    pipe = Pipeline([("scale", StandardScaler()), ("model", model)])
    oof = cross_val_predict(pipe, X, y, cv=3, method="predict_proba")
    assert oof.shape == (len(X), 2)
    assert roc_auc_score(y, oof[:, 1]) > 0.85  # out of fold: each row by a model without it
    labels = cross_val_predict(clone(pipe), X, y, cv=3)
    assert set(np.unique(labels)) <= {0, 1} and (labels == y).mean() > 0.8
    assert not hasattr(model, "result_")  # cross_val_predict fitted clones only


def test_numpy_input_gets_generated_names() -> None:
    X, y = make_classification(n_samples=400, n_features=5, random_state=2)
    model = CalibratedLGBMClassifier(**FAST).fit(X, y)
    assert model.n_features_in_ == 5 and not hasattr(model, "feature_names_in_")
    assert model.artifact_.feature_names == ["x0", "x1", "x2", "x3", "x4"]
    assert model.predict_proba(X[:7]).shape == (7, 2)
    assert model.feature_importances_.shape == (5,)
    assert model.feature_importances_.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="X has 4 features"):
        model.predict(X[:, :4])


def test_dataframe_features_by_name() -> None:
    X, y = _frame(n=800, seed=3)
    model = CalibratedLGBMClassifier(**FAST).fit(X, y)
    assert list(model.feature_names_in_) == list(X.columns)
    kinds = {s.name: s.kind for s in model.artifact_.features}
    assert kinds["region"] == kinds["size"] == "categorical" and kinds["f0"] == "numeric"
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(X[list(reversed(X.columns))])


def test_string_labels_map_to_classes() -> None:
    X, y = _frame(n=800, seed=4)
    words = pd.Series(np.where(y == 1, "poor", "not poor"))
    model = CalibratedLGBMClassifier(**FAST).fit(X, words)
    assert list(model.classes_) == ["not poor", "poor"]  # classes_[1] is the positive class
    as_int = CalibratedLGBMClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), as_int.predict_proba(X))
    predicted = model.predict(X)
    assert set(predicted) <= {"poor", "not poor"}
    np.testing.assert_array_equal(predicted == "poor", as_int.predict(X) == 1)


@pytest.mark.parametrize(("labels", "message"), [
    (["low", "mid", "high"], r"Only binary classification is supported\. Calibrated"
                             r"LGBMClassifier got 3 classes in y \('high', 'low', 'mid'\)"),
    (["yes"], r"y has one class only \('yes'\)"),
])
def test_labels_that_are_not_binary_are_refused(labels: list[str], message: str) -> None:
    X, _ = _frame(n=60)
    y = np.resize(np.array(labels, dtype=object), len(X))
    with pytest.raises(ValueError, match=message):
        CalibratedLGBMClassifier(**FAST).fit(X, y)


def test_missing_labels_and_duplicate_columns_are_refused() -> None:
    X, y = _frame(n=60)
    with_nan = y.astype(float)
    with_nan[[3, 9]] = np.nan
    with pytest.raises(ValueError, match="y has 2 missing label"):
        CalibratedLGBMClassifier(**FAST).fit(X, with_nan)
    twice = pd.concat([X, X[["f0"]]], axis=1)
    with pytest.raises(ValueError, match=r"duplicate column names \['f0'\]"):
        CalibratedLGBMClassifier(**FAST).fit(twice, y)
    # names that only become equal as text collide too
    numbered = pd.DataFrame(X[["f0", "f1"]].to_numpy(), columns=pd.Index([1, "1"], dtype=object))
    with pytest.raises(ValueError, match=r"duplicate column names \['1'\]"):
        CalibratedLGBMClassifier(**FAST).fit(numbered, y)


def test_parameters_are_checked_at_fit_not_init() -> None:
    model = CalibratedLGBMClassifier(learning_rate=-1.0)  # stored as given
    assert model.get_params()["learning_rate"] == -1.0
    X, y = _frame(n=60)
    with pytest.raises(ValueError, match="learning_rate"):
        model.fit(X, y)
    assert model.set_params(learning_rate=0.3).train_config().learning_rate == 0.3


def test_cross_sectional_mode_keeps_groups_together_and_reports_no_lead_time() -> None:
    X, y = _frame(n=1200, seed=5)
    household = pd.Series(np.arange(len(X)) // 3)  # three members per household
    model = CalibratedLGBMClassifier(**FAST).fit(X, y, groups=household)
    result = model.result_
    assert result.cross_sectional and result.lead_time is None
    assert not any(k.startswith("lead_") for k in result.test_metrics)
    # a household's members are tested together, never split between fit and test
    tested = set(household[result.test_mask])
    assert not tested & set(household[~result.test_mask])
    assert result.test_periods == ["4"]  # 3 folds x 1 + gap 0 + stopping 1 + 1 = 5 blocks


def test_panel_mode_with_time() -> None:
    X, y = _frame(n=1200, seed=6)
    month = pd.Series(np.repeat(pd.date_range("2024-01-31", periods=6, freq="ME"), 200))
    household = pd.Series(np.tile(np.arange(200), 6))
    model = CalibratedLGBMClassifier(**FAST).fit(X, y, time=month, groups=household)
    assert not model.result_.cross_sectional
    assert model.result_.test_periods == ["2024-06-30T00:00:00"]
    assert model.result_.lead_time is not None


def test_blocks_spread_positives_and_units() -> None:
    y = np.r_[np.ones(10), np.zeros(90)]
    blocks = cross_sectional_blocks(y, 5, seed=0)
    assert np.bincount(blocks).tolist() == [20] * 5
    assert np.bincount(blocks, weights=y).tolist() == [2.0] * 5
    units = pd.Series(np.arange(100) // 4)
    grouped = cross_sectional_blocks(y, 5, seed=0, units=units)
    assert pd.Series(grouped).groupby(units).nunique().max() == 1
    with pytest.raises(ValueError, match="3 sample"):
        cross_sectional_blocks(np.array([0.0, 1.0, 0.0]), 5, seed=0)


def test_held_out_probability_is_the_evaluated_models() -> None:
    X, y = _frame(n=1000, seed=7)
    result = CalibratedLGBMClassifier(**FAST).fit(X, y).result_
    held_out = result.held_out_probability()
    rows = np.flatnonzero(result.test_mask)
    assert held_out.index.tolist() == rows.tolist()
    np.testing.assert_allclose(held_out.to_numpy(),
                               result.evaluated_artifact.predict_proba(X.iloc[rows]))
    # the production model was fitted on those rows: not the same numbers
    assert not np.allclose(held_out.to_numpy(), result.artifact.predict_proba(X.iloc[rows]))


def test_model_card_names_the_model_and_describes_its_data() -> None:
    """Generic: the given model name, the data it was trained on, and an intended use only
    when the caller states one (doudi's household wording lives in training.job)."""
    from training.job import INTENDED_USE
    from training.report import model_card

    X, y = _frame(n=1000, seed=8)
    result = CalibratedLGBMClassifier(**FAST).fit(X, y).result_
    card = model_card(result, "2024-05", None, model_name="poverty-cr")
    assert card.splitlines()[0] == "# poverty-cr model card — as of 2024-05"
    assert f"- {len(X):,} rows, {int(y.sum()):,} positive ({y.mean():.2%})" in card
    assert "- 8 features (2 categorical)" in card
    assert "cross-sectional: rows dealt into 5 seeded blocks" in card
    assert "household" not in card.lower() and "## Intended use" not in card
    stated = model_card(result, "2024-05", None, model_name="m", intended_use=INTENDED_USE)
    assert stated.rstrip().endswith(INTENDED_USE) and "rural households" in stated
