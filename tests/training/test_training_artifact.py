"""The model artifact: contributions add up, DataFrame and array paths agree, no pickle."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doudi.model_artifact import Calibrator, ModelArtifact, load_artifact
from training.core import feature_specs

LEVELS = ["brick", "wood", "earth"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame({
        "income": rng.normal(10, 3, n),
        "members": rng.integers(1, 8, n).astype("int64"),
        "housing": pd.Series(rng.choice(LEVELS, n), dtype="str"),
        "disabled": rng.random(n) < 0.2,
    })
    X.loc[rng.random(n) < 0.1, "income"] = np.nan
    X.loc[rng.random(n) < 0.1, "housing"] = None
    logit = -0.4 * np.nan_to_num(X["income"], nan=8) + 2 * (X["housing"] == "earth") + X["disabled"]
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit + 3)))).astype(int)
    specs = feature_specs(X)
    from doudi.model_artifact import encode_frame

    Xm = encode_frame(X, specs)
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "max_depth": 5,
                         "verbosity": -1, "num_threads": 1, "min_child_samples": 10},
                        lgb.Dataset(Xm, y, categorical_feature=[2]), num_boost_round=40)
    types = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                      lgb.Dataset(Xm, (Xm[:, 1] > 3).astype(int), categorical_feature=[2]),
                      num_boost_round=5)
    made = ModelArtifact(booster, specs, Calibrator("platt", a=0.8, b=-0.3),
                         {"as_of": "2025-01-31"}, {"illness": types})
    path = made.save(tmp_path_factory.mktemp("artifact") / "model")
    return load_artifact(path)


def test_artifact_directory_layout_has_no_pickle(artifact: ModelArtifact,
                                                 tmp_path: Path) -> None:
    root = artifact.save(tmp_path / "again")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert names == ["calibrator.json", "features.json", "meta.json", "model.lgb",
                     "types/illness.lgb"]
    assert artifact.feature_names == ["income", "members", "housing", "disabled"]
    assert artifact.features[2].levels == ("brick", "earth", "wood")
    assert artifact.meta["risk_types"] == ["illness"]


rows = st.fixed_dictionaries({
    "income": st.one_of(st.none(), st.floats(-50, 80, allow_nan=False)),
    "members": st.integers(0, 12),
    "housing": st.one_of(st.none(), st.sampled_from([*LEVELS, "unseen-level"])),
    "disabled": st.booleans(),
})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rows, min_size=1, max_size=20))
def test_contributions_plus_bias_equal_raw_margin(artifact: ModelArtifact,
                                                  records: list[dict]) -> None:
    frame = pd.DataFrame(records)
    frame["income"] = frame["income"].astype("float64")
    frame["housing"] = frame["housing"].astype("str")
    margin = artifact.raw_margin(frame)
    contrib = artifact.contributions(frame)
    assert contrib.shape == (len(frame), len(artifact.features) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, rtol=0, atol=1e-9)
    # The fast path (2-D float array in feature order) gives the same answers.
    encoded = artifact.encode(frame)
    np.testing.assert_array_equal(artifact.raw_margin(encoded), margin)
    prob = artifact.predict_proba(encoded)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-(0.8 * margin - 0.3))), rtol=1e-12)
    # Unseen and missing categories both take LightGBM's missing branch.
    unseen = frame["housing"].isin(["unseen-level"]).to_numpy() | frame["housing"].isna()
    assert np.isnan(encoded[unseen, 2]).all()


def test_type_predictions_and_shape_errors(artifact: ModelArtifact) -> None:
    frame = pd.DataFrame({"income": [9.0], "members": [5], "housing": ["wood"],
                          "disabled": [False]})
    types = artifact.predict_types(frame)
    assert list(types) == ["illness"] and 0 <= types["illness"][0] <= 1
    with pytest.raises(ValueError, match="4 columns"):
        artifact.raw_margin(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="disabled"):
        artifact.raw_margin(frame.drop(columns="disabled"))
    assert 0 < artifact.predict_proba(artifact.encode(frame))[0] < 1


def test_isotonic_calibrator_json_round_trip(tmp_path: Path, artifact: ModelArtifact) -> None:
    iso = Calibrator("isotonic", x=(-2.0, 0.0, 2.0), y=(0.01, 0.1, 0.6))
    copy = ModelArtifact(artifact.booster, artifact.features, iso, {})
    loaded = load_artifact(copy.save(tmp_path / "iso"))
    assert loaded.calibrator == iso
    np.testing.assert_allclose(loaded.calibrator.apply(np.array([-9, -1, 1, 9])),
                               [0.01, 0.055, 0.35, 0.6])
