"""Helpers for the scoring/explain/export tests: a registry-shaped feature frame and a
tiny LightGBM artifact trained on it (lightgbm API directly, one thread)."""

from __future__ import annotations

from datetime import date

import lightgbm as lgb
import numpy as np
import pandas as pd

from doudi.model_artifact import Calibrator, FeatureSpec, ModelArtifact
from features.registry import FEATURES

AS_OF = date(2026, 6, 30)
VILLAGES = ("620102001001", "620102001002", "620102002001", "620103001001")


def feature_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Keys plus every registry feature; medical cost, housing and income carry signal."""
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for spec in FEATURES:
        if spec.dtype == "bool":
            data[spec.name] = (rng.random(n) < 0.05).astype(np.float64)
        else:  # mostly nothing happened, like a real month
            data[spec.name] = np.round(rng.gamma(1.0, 2.0, n), 2) * (rng.random(n) < 0.1)
    data["medical_oop_12m"] = np.round(rng.gamma(1.0, 6000.0, n))
    data["medical_oop_6m"] = np.round(data["medical_oop_12m"] * rng.random(n))
    data["housing_safety_level"] = rng.integers(1, 5, n).astype(np.float64)
    data["income_to_monitoring_line"] = 0.8 + rng.gamma(4.0, 0.4, n)
    data["income_after_rigid_to_monitoring_line"] = data["income_to_monitoring_line"]
    data["income_per_capita"] = data["income_to_monitoring_line"] * 7900.0
    data["income_to_monitoring_line"][:5] = np.nan  # no income check yet
    villages = np.array(VILLAGES)[rng.integers(0, len(VILLAGES), n)]
    keys = pd.DataFrame(
        {
            "household_key": [f"h_{i:020x}" for i in range(n)],
            "as_of": np.full(n, np.datetime64(AS_OF, "ms")),
            "county_code": [v[:6] for v in villages],
            "village_code": villages,
        }
    )
    return pd.concat([keys, pd.DataFrame(data)], axis=1)


def labels(frame: pd.DataFrame, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = (
        frame["medical_oop_12m"].to_numpy() / 6000.0
        + 0.8 * (frame["housing_safety_level"].to_numpy() >= 4)
        - np.nan_to_num(frame["income_to_monitoring_line"].to_numpy(), nan=1.0)
        - 1.5
    )
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-2 * z))).astype(np.float64)


def train_artifact(
    frame: pd.DataFrame,
    *,
    rounds: int = 30,
    with_types: bool = False,
    calibrator: Calibrator | None = None,
) -> ModelArtifact:
    specs = tuple(FeatureSpec(s.name, "numeric") for s in FEATURES)
    X = frame[[s.name for s in specs]].to_numpy(dtype=np.float64)
    y = labels(frame)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "max_depth": 3,
        "learning_rate": 0.2,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "verbosity": -1,
        "seed": 0,
        "deterministic": True,
    }
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=rounds)
    types: dict[str, lgb.Booster] = {}
    if with_types:
        housing = (frame["housing_safety_level"].to_numpy() >= 4).astype(np.float64)
        illness = (frame["medical_oop_12m"].to_numpy() > 6000).astype(np.float64)
        for name, target in (("housing", housing), ("illness", illness)):
            types[name] = lgb.train(params, lgb.Dataset(X, label=target), num_boost_round=10)
    return ModelArtifact(
        booster=booster,
        features=specs,
        calibrator=calibrator or Calibrator("identity"),
        meta={"as_of": "2026-05-31", "model_version": "doudi-risk/7"},
        type_boosters=types,
    )
