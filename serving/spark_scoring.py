"""The `spark` engine for scoring (issue 16): the per-row model work on Spark executors.

`serving.scoring.score` runs everything province-wide (calibration, ranks, tiers per
township capacity, rule alerts, reason texts, types) on the driver, in the same code for
both engines; only the per-row heavy work goes through its `RowWork`: LightGBM margins,
TreeSHAP contributions of the rows to explain, type-model probabilities. `SparkRowWork`
is that work on Spark:

- the models travel as LightGBM TEXT (`model_to_string`), broadcast once per scoring
  run; each Python worker parses them once (`lgb.Booster(model_str=...)`, cached by
  text) and never receives a pickled Booster;
- the encoded float matrix goes to Spark as an Arrow table cut into chunks of at most
  `CHUNK_ROWS` rows (one chunk per partition, at least one per core), each row with its
  index; `mapInArrow` predicts each chunk on an executor, one thread per task;
- the driver puts every value back at its row index, so Spark's partition order never
  matters. A row's prediction does not depend on the other rows of its chunk, so the
  values are the local engine's to the last bit (tests/serving/test_spark_scoring.py).

pyspark is imported inside functions only (through `features.spark`): `serving`
imports without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from doudi.model_artifact import ModelArtifact
from doudi.settings import Settings

if TYPE_CHECKING:
    from pyspark import Broadcast

# Rows per chunk (= per Spark partition) at most; Spark's own Arrow batches are 10k rows.
CHUNK_ROWS = 10_000
ROW = "row"  # the row index column: values come back to their rows whatever the order

Kind = Literal["margins", "contributions", "types"]

# Executor side: boosters parsed from the broadcast text, kept while the Python worker
# lives (Spark reuses workers across tasks), keyed by the text itself.
_BOOSTERS: dict[str, lgb.Booster] = {}
_MAX_CACHED = 8


def _booster(text: str) -> lgb.Booster:
    booster = _BOOSTERS.get(text)
    if booster is None:
        if len(_BOOSTERS) >= _MAX_CACHED:  # models of earlier runs: drop them
            _BOOSTERS.clear()
        booster = _BOOSTERS[text] = lgb.Booster(model_str=text)
    return booster


def _predict(batches: Iterator[pa.RecordBatch], *, models: Broadcast[dict[str, Any]],
             kind: Kind, names: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    """Executor side: each batch is (row, f0..fn) rows; yield (row, *names) predictions."""
    texts: dict[str, Any] = models.value
    for batch in batches:
        if batch.num_rows == 0:
            continue
        X = np.empty((batch.num_rows, batch.num_columns - 1), dtype=np.float64)
        for j in range(1, batch.num_columns):
            X[:, j - 1] = batch.column(j).to_numpy(zero_copy_only=False)
        if kind == "margins":
            values = _booster(texts["risk"]).predict(X, raw_score=True, num_threads=1)
            columns = [np.asarray(values)]
        elif kind == "contributions":
            contrib = np.asarray(_booster(texts["risk"]).predict(X, pred_contrib=True,
                                                                 num_threads=1))
            columns = [contrib[:, j] for j in range(contrib.shape[1])]
        else:
            columns = [np.asarray(_booster(texts["types"][name]).predict(X, num_threads=1))
                       for name in names]
        yield pa.record_batch([batch.column(0), *(pa.array(c) for c in columns)],
                              names=[ROW, *names])


class SparkRowWork:
    """`serving.scoring.RowWork` on Spark: predictions per partition on the executors."""

    def __init__(self, artifact: ModelArtifact, settings: Settings) -> None:
        from features.spark import session

        self.spark = session(settings)
        self.width = len(artifact.features)
        self.type_names = tuple(sorted(artifact.type_boosters))  # predict_types's order
        texts = {"risk": artifact.booster.model_to_string(),
                 "types": {n: b.model_to_string() for n, b in artifact.type_boosters.items()}}
        self._models: Broadcast[dict[str, Any]] | None = self.spark.sparkContext.broadcast(texts)

    def margins(self, X: np.ndarray) -> np.ndarray:
        """The raw margin (log-odds) of every row."""
        return self._run(X, "margins", ("margin",))[:, 0]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, features + 1) TreeSHAP contributions; the last column is the bias."""
        return self._run(X, "contributions", tuple(f"c{j}" for j in range(self.width + 1)))

    def type_probabilities(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Per risk type (sorted by name): P(type | identified) of every row."""
        if not self.type_names:
            return {}
        out = self._run(X, "types", self.type_names)
        return {name: out[:, j] for j, name in enumerate(self.type_names)}

    def close(self) -> None:
        """Free the broadcast models on the executors and the driver."""
        if self._models is not None:
            self._models.destroy()
            self._models = None

    def _run(self, X: np.ndarray, kind: Kind, names: tuple[str, ...]) -> np.ndarray:
        from pyspark.sql import types as st

        from features.spark import _quiet_pandas3_warning

        if self._models is None:
            raise RuntimeError("SparkRowWork used after close()")
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        out = np.full((n, len(names)), np.nan)
        if n == 0:
            return out
        if X.ndim != 2 or X.shape[1] != self.width:
            raise ValueError(f"expected {self.width} feature columns, got shape {X.shape}")
        # Chunks of equal size, at least one per core and at most CHUNK_ROWS rows: Spark
        # turns each Arrow batch of the table into one partition.
        cores = max(1, self.spark.sparkContext.defaultParallelism)
        chunk = max(1, min(CHUNK_ROWS, math.ceil(n / cores)))
        columns = np.asfortranarray(X)
        table = pa.table([pa.array(np.arange(n, dtype=np.int64)),
                          *(pa.array(columns[:, j]) for j in range(self.width))],
                         names=[ROW, *(f"f{j}" for j in range(self.width))])
        table = pa.Table.from_batches(table.to_batches(max_chunksize=chunk))
        schema = st.StructType([st.StructField(ROW, st.LongType(), nullable=False), *(
            st.StructField(name, st.DoubleType(), nullable=True) for name in names)])
        work = partial(_predict, models=self._models, kind=kind, names=names)
        with _quiet_pandas3_warning():
            result = self.spark.createDataFrame(table).mapInArrow(work, schema).toArrow()
        rows = result.column(ROW).to_numpy()
        if len(rows) != n or len(np.unique(rows)) != n:
            raise RuntimeError(f"spark scoring returned {len(rows)} rows for {n}")
        for j, name in enumerate(names):
            out[rows, j] = result.column(name).to_numpy()
        return out
