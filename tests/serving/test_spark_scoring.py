"""Scoring on the `spark` engine (serving/spark_scoring.py) equals the local engine exactly.

`score` with `engine="spark"` (`local[2]`) sends the margins, the contributions of the
rows to explain and the type probabilities to Spark executors (the models broadcast as
LightGBM text); the rows, risks (exact floats), ranks, tiers, types, departments and
reasons equal the local run's. `score_month` on spark stores its alerts once from the
driver: a rerun adds nothing. One SparkSession for the module.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings, SparkSettings, TierSettings
from serving.scoring import InProcess, row_work, score, score_month
from serving.store import list_alerts, open_store
from tests.serving.export_world import write_world
from tests.serving.scoring_fixtures import AS_OF, feature_frame, train_artifact

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyspark") is None,
                                reason="pyspark is not installed (doudi's `spark` extra)")

SPARK = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})


@pytest.fixture(scope="module")
def spark_session() -> Iterator[None]:
    """The module's one SparkSession, stopped after."""
    from features import spark

    spark.session(Settings(engine="spark", spark=SPARK))
    yield
    spark.stop()


@pytest.fixture(scope="module")
def model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25, with_types=True)


def _both(frame: pd.DataFrame, artifact: ModelArtifact, settings: Settings,
          explain_all: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    local = score(frame, artifact, settings, AS_OF, explain_all=explain_all)
    on_spark = score(frame, artifact, settings.model_copy(update={"engine": "spark",
                                                                  "spark": SPARK}),
                     AS_OF, explain_all=explain_all)
    return local, on_spark


@pytest.mark.parametrize("explain_all", [False, True])
def test_spark_scores_equal_local(spark_session: None, model: ModelArtifact,
                                  explain_all: bool) -> None:
    frame = feature_frame(1500, seed=3)
    frame.loc[0, "housing_safety_level"] = 4.0  # a rule fires too
    settings = Settings(workers=2, tiers=TierSettings(red_min_risk=1.0))  # red by rank
    local, on_spark = _both(frame, model, settings, explain_all=explain_all)
    pd.testing.assert_frame_equal(on_spark, local, check_exact=True)
    # the comparison has teeth: alerts of every source and tier, reasons and model types
    assert len(local) == 1500 and local["alerted"].sum() >= 30
    assert {"model", "both", "rules"} <= set(local["source"])
    assert {"red", "orange", "yellow"} <= set(local["tier"])
    assert local.loc[local["alerted"], "reasons"].map(len).gt(0).mean() > 0.9
    assert local["model_risk_types"].map(len).gt(0).any()
    explained = local["reasons"].map(len).gt(0)
    assert explained.sum() > local["alerted"].sum() if explain_all else explained.any()


def test_spark_row_work_is_the_in_process_work_to_the_bit(spark_session: None,
                                                         model: ModelArtifact) -> None:
    """Each per-row result, not only what `score` keeps of it: every margin, every
    contribution column (NaN inputs included), every type probability; rows of several
    partitions come back in their order."""
    frame = feature_frame(777, seed=5)
    X = model.encode(frame)
    assert np.isnan(X).any()
    local = InProcess(model, 2)
    spark = row_work(model, Settings(engine="spark", spark=SPARK))
    try:
        assert type(spark).__name__ == "SparkRowWork"
        np.testing.assert_array_equal(spark.margins(X), local.margins(X))
        rows = np.array([776, 3, 400, 0, 5])  # any subset, any order
        np.testing.assert_array_equal(spark.contributions(X[rows]), local.contributions(X[rows]))
        spark_types, local_types = spark.type_probabilities(X), local.type_probabilities(X)
        assert list(spark_types) == list(local_types) == ["housing", "illness"]
        for name in local_types:
            np.testing.assert_array_equal(spark_types[name], local_types[name])
        assert spark.margins(X[:0]).shape == (0,)
    finally:
        spark.close()
    with pytest.raises(RuntimeError, match="after close"):
        spark.margins(X)


def _world(home: Path, model: ModelArtifact, engine: str) -> tuple[Settings, Path]:
    """The export world (12 households, two townships, a rule-firing house), its key, and
    a model folder of this workspace; capacity for a few alerts."""
    from doudi import registry

    made = write_world(home)
    made.key_file.parent.mkdir(parents=True)
    made.key_file.write_bytes(b"k" * 32)
    made.key_file.chmod(0o600)
    settings = made.model_copy(update={
        "engine": engine, "spark": SPARK, "capacity_pct": 20.0,
        "tiers": TierSettings(yellow_top_pct=20.0, min_alert_risk=0.0)})
    stamped = dataclasses.replace(model, meta=dict(model.meta))
    registry.stamp(stamped.meta, registry.workspace(settings))
    return settings, stamped.save(home / "model")


def test_score_month_on_spark_stores_the_local_alerts_once(
    spark_session: None, model: ModelArtifact, tmp_path: Path,
) -> None:
    month = Month.parse("2026-06")  # past the world's last delivery: a deliberate run
    runs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}  # scored, stored alerts
    for engine in ("local", "spark"):
        settings, model_dir = _world(tmp_path / engine, model, engine)
        first, again = (score_month(settings, month, model_uri=str(model_dir),
                                    allow_undelivered=True, allow_non_champion=True)
                        for _ in range(2))
        with open_store(settings=settings) as store:
            stored = list_alerts(store)
        assert len(first.added.created) == len(stored) == int(first.scored["alerted"].sum()) >= 3
        assert not again.added.created  # the rerun is idempotent
        pd.testing.assert_frame_equal(again.scored, first.scored, check_exact=True)
        runs[engine] = (first.scored, stored)
    (local, local_stored), (spark, spark_stored) = runs["local"], runs["spark"]
    pd.testing.assert_frame_equal(spark, local, check_exact=True)
    same = ["household_key", "tier", "risk", "risk_types", "departments", "source"]
    pd.testing.assert_frame_equal(spark_stored[same].reset_index(drop=True),
                                  local_stored[same].reset_index(drop=True), check_exact=True)


def test_serving_imports_without_pyspark() -> None:
    import subprocess
    import sys

    from doudi.settings import PROJECT_ROOT

    code = ("import sys, serving.scoring, serving.spark_scoring; "
            "print('pyspark' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)
    assert done.stdout.strip() == "False"
