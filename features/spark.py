"""The `spark` engine (issue 16): the same per-county tasks, run by a SparkSession.

`run_counties(counties, task, columns, settings)` runs `task(county)` (in practice
`features.tables._county_task` bound to its months: a pure function of the warehouse,
point-in-time rule included) once per county, each county one Spark task:
`spark.range(n, numPartitions=n)` puts county i alone in partition i, `mapInArrow` runs
the task in an executor's Python worker, which reads the warehouse Parquet itself (a
path every executor sees: a shared filesystem or object store mount) and hands back its
frame as Arrow of the schema declared from the feature registry, packed as one Arrow IPC
blob per county (Spark moves the blob, never unpacks it: see `_BLOB_DDL`). `toArrow()`
collects the blobs; the driver unpacks them in county code order, each county sorted as
the task sorted it: the frame is the local engine's, row for row and dtype for dtype.

Why `mapInArrow` rather than `mapInPandas`: we convert pandas <-> Arrow ourselves, with
the declared schema (a column of another type fails loudly instead of being coerced),
and so stay out of pyspark's own pandas conversions, which pyspark 4.3 says do not yet
fully support pandas 3 (there, dates come back as Python objects).

pyspark is imported inside functions only: `features` imports without it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from doudi.errors import UserError
from doudi.settings import Settings
from features.labels import LABEL_COLUMNS
from features.registry import feature_names, group_column_names

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Rows per Arrow batch a task hands back (a county's frame is cut into batches of this).
BATCH_ROWS = 10_000

# doudi's defaults; settings.spark.conf wins. No console progress bars in the CLI's output;
# the collected frame may exceed Spark's default 1 GiB result cap (1M households x 114
# float columns is ~0.9 GiB); a task's ~126 columns would make Spark warn that it
# truncates plan strings (at 25 fields).
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.maxResultSize": "0",
    "spark.sql.debug.maxToStringFields": "1000",
}
LOG4J2_FILE = Path(__file__).with_name("spark-log4j2.properties")
# On one machine: no web UI (no port opened), the JVM logs warnings only (LOG4J2_FILE).
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_FILE.as_uri()}",
}
# pyspark 4.3 warns on import and at each pandas-facing call that pandas >= 3 is not yet
# fully supported; we stay off its pandas conversions (module docstring).
_PANDAS3_WARNING = ".*does not yet fully support pandas >= 3"

# Declared types of the non-float columns; every registry feature and group column is
# float64 (features/build.py), anything else has no declared type and fails loudly.
_FIXED_TYPES: dict[str, pa.DataType] = {
    "household_key": pa.string(),
    "as_of": pa.date32(),
    "county_code": pa.string(),
    "village_code": pa.string(),
    "in_scope": pa.bool_(),
    **{name: pa.int8() for name in LABEL_COLUMNS},
    "sample_weight": pa.float64(),  # features.tables.SAMPLE_WEIGHT (a sampled training table)
}
# What the local engine's frame holds for each declared type (pandas 3: strings are `str`).
_PANDAS_DTYPES: dict[pa.DataType, str] = {
    pa.string(): "str",
    pa.date32(): "datetime64[ms]",
    pa.float64(): "float64",
    pa.int8(): "int8",
    pa.bool_(): "bool",
}


def arrow_schema(columns: Sequence[str]) -> pa.Schema:
    """The declared Arrow schema of a task's output columns (from the feature registry)."""
    floats = {*feature_names(), *group_column_names()}
    fields = []
    for name in columns:
        if name in _FIXED_TYPES:
            fields.append(pa.field(name, _FIXED_TYPES[name]))
        elif name in floats:
            fields.append(pa.field(name, pa.float64()))
        else:
            raise ValueError(f"column {name!r} has no declared type (features/spark.py)")
    return pa.schema(fields)


def pandas_dtypes(schema: pa.Schema) -> dict[str, str]:
    """The local engine's pandas dtype of each column of `schema`."""
    return {field.name: _PANDAS_DTYPES[field.type] for field in schema}


# -- the session: one per process, created on first use, stopped at exit -----------------
_session: SparkSession | None = None
_session_lock = threading.Lock()


def session(settings: Settings) -> SparkSession:
    """This process's SparkSession (created on first use from `settings.spark`; later
    calls reuse it whatever their settings, as Spark's own getOrCreate does)."""
    global _session
    with _session_lock:
        if _session is None or _session.sparkContext._jsc is None:  # stopped elsewhere
            _session = _start(settings)
            atexit.register(stop)
        return _session


def stop() -> None:
    """Stop this process's SparkSession (and its JVM's work) if there is one."""
    global _session
    with _session_lock:
        if _session is not None:
            _session.stop()
            _session = None


@contextmanager
def _quiet_pandas3_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS3_WARNING, category=FutureWarning)
        yield


def _start(settings: Settings) -> SparkSession:
    with _quiet_pandas3_warning():
        return _new_session(settings)


def _new_session(settings: Settings) -> SparkSession:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("engine spark needs pyspark: install doudi with its `spark` extra "
                        "(or set DOUDI_ENGINE=local)") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise UserError("engine spark needs Java 17: put `java` on PATH or set JAVA_HOME "
                        "(or set DOUDI_ENGINE=local)")
    # Python workers must run this interpreter (its venv has doudi, pandas, duckdb); a
    # cluster whose executors keep the venv elsewhere sets conf spark.pyspark.python.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    master = settings.spark.master
    # Under spark-submit (or a pyspark shell) the JVM is running, with its own --master.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    local = not submitted and master.startswith("local")
    if local:  # bind to loopback: no network address lookup, no warning about it
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName("doudi")
    if not submitted:
        builder = builder.master(master)
    conf = {**DEFAULT_CONF, **(LOCAL_CONF if local else {}), **settings.spark.conf}
    for key, value in conf.items():
        builder = builder.config(key, value)
    log.info("spark: starting a session on %s", master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# -- running the counties ----------------------------------------------------------------
# What a task hands to Spark: one row per county, its frame as an Arrow IPC stream of the
# declared schema. Spark never unpacks it: turning ~120 columns into Spark rows on the
# executors and back into Arrow for the driver cost more CPU than the features themselves
# at 1M households (docs/benchmarks.md, "Spark"); a blob per county costs one copy.
_BLOB_DDL = "county long, frame binary"
# Spark's binary values are Arrow `binary` (32-bit offsets): one county's frame < 2 GiB.
_MAX_BLOB_BYTES = 2**31 - 1


def _county_batches(
    batches: Iterator[pa.RecordBatch], *, counties: tuple[str, ...],
    task: Callable[[str], pd.DataFrame], schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """Executor side: each input row is a county's index; yield its frame, checked against
    the declared schema, as one Arrow IPC blob."""
    for batch in batches:
        for index in batch.column(0).to_pylist():
            frame = task(counties[index])
            if not len(frame):
                continue
            if list(frame.columns) != schema.names:  # the task and the schema drifted apart
                raise RuntimeError(f"county task columns {list(frame.columns)} differ from "
                                   f"the declared schema {schema.names}")
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, schema) as writer:
                writer.write_table(table.replace_schema_metadata(None),
                                   max_chunksize=BATCH_ROWS)
            blob = sink.getvalue()
            if blob.size > _MAX_BLOB_BYTES:
                raise RuntimeError(f"county {counties[index]}: its frame is {blob.size:,} "
                                   "bytes, over Spark's 2 GiB per value")
            offsets = pa.py_buffer(np.array([0, blob.size], dtype=np.int32).tobytes())
            frame_value = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, blob])  # no copy
            yield pa.record_batch([pa.array([index], pa.int64()), frame_value],
                                  names=["county", "frame"])


def _unpack(blobs: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """The counties' frames, in county order, as one table of the declared schema."""
    order = pc.sort_indices(blobs["county"])
    frames = [pa.ipc.open_stream(blob.as_buffer()).read_all()
              for blob in blobs["frame"].take(order)]
    for frame in frames:
        if not frame.schema.equals(schema):
            raise RuntimeError(f"a county frame's schema {frame.schema} is not the declared "
                               f"{schema}")
    return pa.concat_tables(frames) if frames else None


def run_counties(
    counties: Sequence[str], task: Callable[[str], pd.DataFrame], columns: Sequence[str],
    settings: Settings,
) -> pd.DataFrame | None:
    """`task(county)` for every county on Spark, concatenated in county order (None: no
    rows). `task` must be picklable by reference (a module-level function or a partial)."""
    schema = arrow_schema(columns)
    spark = session(settings)
    work = partial(_county_batches, counties=tuple(counties), task=task, schema=schema)
    # One partition per county (range splits n ids into n partitions of one id each): no
    # shuffle, and partition order is county order.
    ids = spark.range(len(counties), numPartitions=max(1, len(counties)))
    try:
        with _quiet_pandas3_warning():
            blobs = ids.mapInArrow(work, _BLOB_DDL).toArrow()
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        raise user_error from None
    table = _unpack(blobs, schema)
    del blobs
    if table is None or table.num_rows == 0:
        return None
    # self_destruct: Arrow buffers are freed as columns convert (lower peak memory)
    frame = table.to_pandas(date_as_object=False, split_blocks=True, self_destruct=True)
    del table
    for name, dtype in pandas_dtypes(schema).items():
        if frame[name].dtype != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


def _user_error(error: Exception) -> UserError | None:
    """A doudi UserError a task raised (Spark hands back its traceback as text)."""
    marker = "doudi.errors.UserError: "
    text = str(error)
    if marker not in text:
        return None
    return UserError(text.split(marker, 1)[1].splitlines()[0].strip())
