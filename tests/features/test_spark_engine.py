"""The `spark` engine (features/spark.py) returns the local engine's frames exactly.

On the ingested small world (3 counties), every public table built with
`engine="spark"` (`local[2]`) equals the local one: same rows in the same order, same
values (NaN where NaN), same dtypes. One SparkSession for the module: its JVM takes
5-10 s to start here, each comparison then a second or two.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pandas as pd
import pytest

from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import PROJECT_ROOT, Settings, SparkSettings

HAS_PYSPARK = importlib.util.find_spec("pyspark") is not None
needs_spark = pytest.mark.skipif(
    not HAS_PYSPARK, reason="pyspark is not installed (doudi's `spark` extra)")

MONTH = Month.parse("2025-06")  # the small world runs 2023-01 .. 2025-06

Table = Callable[[Path, Settings], pd.DataFrame]


def _features(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.build_features(warehouse, MONTH - 1, s)


def _training(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.training_table(warehouse, MONTH, s)


def _training_sampled(warehouse: Path, s: Settings) -> pd.DataFrame:
    """Negatives down-sampled inside each county's task (executors send only the sample)."""
    import features

    return features.training_table(
        warehouse, MONTH, s.model_copy(update={"training_negative_rate": 0.3}))


def _labels(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.labels_table(warehouse, [MONTH - 12, MONTH - 9], s, known_by=MONTH)


def _scoring(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.scoring_table(warehouse, MONTH, s)


def _labelled(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.labelled_table(warehouse, [MONTH - 4, MONTH - 2], s, known_by=MONTH)


def _no_such_county(warehouse: Path, s: Settings) -> pd.DataFrame:
    import features

    return features.build_features(warehouse, MONTH, s, county="999999")


TABLES: dict[str, Table] = {
    "build_features": _features, "training_table": _training, "labels_table": _labels,
    "training_table_sampled": _training_sampled,
    "scoring_table": _scoring, "labelled_table": _labelled, "empty": _no_such_county,
}


@pytest.fixture(scope="module")
def workspace(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The small world ingested into this module's workspace (local engine settings)."""
    import ingest

    settings = Settings(home=tmp_path_factory.mktemp("spark_home"), workers=2)
    ingest.ingest(small_world / "raw", settings)
    return settings


@pytest.fixture(scope="module")
def spark_settings(workspace: Settings) -> Iterator[Settings]:
    """The same workspace on the spark engine; the module's one session, stopped after."""
    from features import spark

    settings = workspace.model_copy(update={"engine": "spark", "spark": SparkSettings(
        master="local[2]", conf={"spark.sql.shuffle.partitions": "3"})})
    spark.session(settings)
    yield settings
    spark.stop()


@needs_spark
@pytest.mark.parametrize("name", sorted(TABLES))
def test_spark_equals_local(name: str, workspace: Settings, spark_settings: Settings) -> None:
    table = TABLES[name]
    local = table(workspace.warehouse_dir, workspace)
    on_spark = table(spark_settings.warehouse_dir, spark_settings)
    pd.testing.assert_frame_equal(on_spark, local, check_exact=True)
    if name == "empty":
        assert local.empty
        return
    assert len(local) > 100
    assert not local.duplicated(["household_key", "as_of"]).any()
    floats = local.select_dtypes("float64")
    if not floats.empty:
        assert floats.isna().to_numpy().any(), "no NaN: null <-> NaN would go untested"
    if "county_code" in local:
        assert local["county_code"].nunique() == 3, "the order across counties is untested"


@needs_spark
def test_the_session_takes_doudis_conf_and_the_users(spark_settings: Settings) -> None:
    from features import spark

    session = spark.session(spark_settings)
    conf = session.sparkContext.getConf()
    assert session.sparkContext.master == "local[2]"
    assert conf.get("spark.sql.shuffle.partitions") == "3"  # the user's (settings.spark.conf)
    assert conf.get("spark.ui.enabled") == "false"  # doudi's, with a local master
    assert conf.get("spark.pyspark.python", os.environ["PYSPARK_PYTHON"]) == sys.executable


@needs_spark
def test_a_users_error_in_a_task_is_one_line(spark_settings: Settings) -> None:
    """A task's UserError comes back from the executor as that one-line UserError."""
    from features.spark import run_counties

    # The task parses the county code as a month: a real doudi UserError, raised on an
    # executor's Python worker.
    with pytest.raises(UserError, match=r"^--as-of 620121: not a month; use YYYY-MM$"):
        task = cast(Callable[[str], pd.DataFrame], Month.parse)
        run_counties(["620121"], task, ["household_key"], spark_settings)


def test_every_output_column_has_a_declared_type() -> None:
    from features.spark import arrow_schema, pandas_dtypes
    from features.tables import Task, _empty

    tasks: tuple[Task, ...] = ("features", "labels", "training", "scoring")
    for task in tasks:
        columns = list(_empty(task).columns)
        assert pandas_dtypes(arrow_schema(columns)).keys() == set(columns)
    sampled = list(_empty("training", sampled=True).columns)
    assert pandas_dtypes(arrow_schema(sampled)).keys() == set(sampled)
    with pytest.raises(ValueError, match="no declared type"):
        arrow_schema(["household_key", "something_new"])


def test_features_import_without_pyspark() -> None:
    code = ("import sys, features, features.spark, features.tables; "
            "print('pyspark' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)
    assert done.stdout.strip() == "False"


def test_engine_settings_from_environment_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    assert Settings().engine == "local"
    assert Settings().spark.master == "local[2]"
    monkeypatch.setenv("DOUDI_ENGINE", "spark")
    monkeypatch.setenv("DOUDI_SPARK__MASTER", "spark://head:7077")
    monkeypatch.setenv("DOUDI_SPARK__CONF", json.dumps({"spark.executor.memory": "8g"}))
    s = Settings()
    assert (s.engine, s.spark.master) == ("spark", "spark://head:7077")
    assert s.spark.conf == {"spark.executor.memory": "8g"}
    for name in ("DOUDI_ENGINE", "DOUDI_SPARK__MASTER", "DOUDI_SPARK__CONF"):
        monkeypatch.delenv(name)
    config = tmp_path / "doudi.toml"
    config.write_text('[doudi]\nengine = "spark"\n[doudi.spark.conf]\n'
                      '"spark.executor.instances" = 4\n"spark.dynamicAllocation.enabled" = true\n',
                      encoding="utf-8")
    monkeypatch.setenv("DOUDI_CONFIG", str(config))
    s = Settings()
    assert s.engine == "spark"
    assert s.spark.conf == {"spark.executor.instances": "4",
                            "spark.dynamicAllocation.enabled": "true"}
    monkeypatch.setenv("DOUDI_ENGINE", "dask")
    with pytest.raises(ValueError, match="engine"):
        Settings()


def test_without_pyspark_the_spark_engine_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from features import spark

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"engine spark needs pyspark.*spark. extra"):
        spark._start(Settings(engine="spark"))


@needs_spark
def test_without_java_the_spark_engine_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from features import spark

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `java` on it
    with pytest.raises(UserError, match="engine spark needs Java 17"):
        spark._start(Settings(engine="spark"))
