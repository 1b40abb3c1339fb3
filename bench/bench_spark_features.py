"""Features for one as-of month: the local engine vs Spark `local[2]`, and the warehouse's
small files as Spark sees them (issue 16).

    .venv/bin/python bench/bench_spark_features.py [--home DOUDI_HOME] \
        [--households 30000 --months 24 --workdir workspace/bench_spark] \
        [--as-of 2024-12] [--master local[2]] [--repeats 3] [--skip features files]

Without `--home` a province is generated and ingested under `--workdir` (reused when
there). Steps, in one process and one after the other (the machine has 2 cores):

1. `features`: `build_features` on the local engine (`workers` 2), then on Spark: the
   session's start (JVM), then the same call `--repeats` times (the first one also starts
   the Python workers). Wall time, CPU time and peak memory of the whole process tree
   (this process, its pool workers, the JVM and the JVM's Python workers; RSS summed,
   sampled every 0.1 s); the Spark frame is checked equal to the local one. Then
   `--repeats` local/spark pairs back to back: the overhead ratio is their median ratio
   (the machine is shared; a pair sees about the same load).
2. `files`: the warehouse's Parquet files per feed; Spark's planning (listing, partition
   discovery, schema: `spark.read.parquet`) and a full read (`noop` write) of every feed;
   the same on a copy compacted by `doudi compact` (one file per feed x county x closed
   year, under the workdir; the warehouse itself is not changed); and the local engine's
   own reading (`load_county`, DuckDB) of every county for the as-of month.

Exits 0 with a note when pyspark is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_features import PeakMemory, generate

from doudi.months import Month
from doudi.settings import Settings
from features import build_features
from features.asof import counties
from features.county import load_county

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_cpu_seconds() -> float:
    """CPU time of this process tree: live processes (the JVM, its Python workers) and the
    children they reaped (fields utime, stime, cutime, cstime of /proc/PID/stat)."""
    total = 0
    for pid in _tree(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / CLOCK_TICKS


def timed(label: str, fn: Callable[[], Any], repeats: int = 1) -> dict[str, Any]:
    """Wall, CPU (process tree) and peak RSS (process tree) of each run."""
    runs: list[dict[str, float]] = []
    result = None
    for i in range(repeats):
        result = None  # free the previous run's frame first
        with PeakMemory() as mem:
            cpu, started = tree_cpu_seconds(), time.perf_counter()
            result = fn()
            wall = time.perf_counter() - started
            cpu = tree_cpu_seconds() - cpu
        runs.append({"wall_s": wall, "cpu_s": cpu, "peak_gb": mem.peak / 2**30,
                     "load": os.getloadavg()[0]})
        print(f"  {label} run {i + 1}: {wall:.1f}s wall, {cpu:.1f}s CPU, "
              f"peak {mem.peak / 2**30:.2f} GB, load {runs[-1]['load']:.1f}", flush=True)
    return {"label": label, "runs": runs, "result": result,
            "median_s": statistics.median(r["wall_s"] for r in runs),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_gb": max(r["peak_gb"] for r in runs)}


# -- 1. features, local vs spark ---------------------------------------------------------
def bench_features(warehouse: Path, as_of: Month, master: str, repeats: int
                   ) -> dict[str, Any]:
    from features import spark

    local_settings = Settings(workers=2)
    spark_settings = local_settings.model_copy(update={
        "engine": "spark", "spark": local_settings.spark.model_copy(update={"master": master})})
    local = timed("local engine (2 workers)",
                  lambda: build_features(warehouse, as_of, local_settings), repeats)
    start = timed("spark session start (JVM)", lambda: spark.session(spark_settings))
    on_spark = timed(f"spark engine ({master})",
                     lambda: build_features(warehouse, as_of, spark_settings), repeats)
    pd.testing.assert_frame_equal(on_spark["result"], local["result"], check_exact=True)
    print("  spark frame == local frame (rows, order, values, dtypes)", flush=True)
    # The machine is shared: pairs run back to back see about the same load, so the
    # median of their ratios is the fairer overhead figure (the JVM idles beside `local`).
    pairs = []
    for _ in range(repeats):
        a = timed("paired: local", lambda: build_features(warehouse, as_of, local_settings))
        b = timed("paired: spark", lambda: build_features(warehouse, as_of, spark_settings))
        pairs.append({"local_s": a["median_s"], "spark_s": b["median_s"],
                      "local_cpu_s": a["median_cpu_s"], "spark_cpu_s": b["median_cpu_s"]})
    return {
        "rows": len(local["result"]), "columns": local["result"].shape[1],
        "local": _plain(local), "session_start": _plain(start), "spark": _plain(on_spark),
        "pairs": pairs,
        "ratio_wall_paired": statistics.median(p["spark_s"] / p["local_s"] for p in pairs),
        "ratio_cpu_paired": statistics.median(p["spark_cpu_s"] / p["local_cpu_s"]
                                              for p in pairs),
        "ratio_cold_with_start": (start["median_s"] + on_spark["runs"][0]["wall_s"])
        / local["median_s"],
        "ratio_peak": on_spark["peak_gb"] / local["peak_gb"],
    }


def _plain(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "result"}


# -- 2. the warehouse's files ----------------------------------------------------------------
def feed_dirs(warehouse: Path) -> list[Path]:
    return sorted(p for p in warehouse.iterdir() if p.is_dir() and not p.name.startswith("_"))


def file_counts(warehouse: Path) -> dict[str, Any]:
    per_feed = {f.name: len(list(f.rglob("*.parquet"))) for f in feed_dirs(warehouse)}
    sizes = [p.stat().st_size for p in warehouse.rglob("*.parquet")]
    return {"feeds": per_feed, "feed_files": sum(per_feed.values()),
            "all_files": len(sizes), "bytes": sum(sizes),
            "median_file_kb": statistics.median(sizes) / 1024 if sizes else 0}


def compact_copy(warehouse: Path, target: Path) -> Path:
    """A copy of `warehouse` under `target` compacted by `doudi compact` (one file per feed
    x county x closed year): its warehouse folder. The measured warehouse is not changed."""
    from ingest.compact import compact_warehouse

    settings = Settings(home=target)
    if settings.warehouse_dir.is_dir():
        return settings.warehouse_dir
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    shutil.copytree(warehouse, Settings(home=building).warehouse_dir)
    compact_warehouse(Settings(home=building))
    building.rename(target)
    return settings.warehouse_dir


def spark_reads(spark: Any, warehouse: Path) -> dict[str, Any]:
    """Per feed: planning (listing, partitions, schema) and a full read of every column."""
    per_feed: dict[str, dict[str, float]] = {}
    for feed in feed_dirs(warehouse):
        started = time.perf_counter()
        # The files hold `reported_month` (and some feeds `year`) themselves: no partition
        # discovery from the folder names, which would name those columns twice.
        frame = spark.read.option("recursiveFileLookup", "true").parquet(str(feed))
        planned = time.perf_counter()
        frame.write.format("noop").mode("overwrite").save()
        per_feed[feed.name] = {"files": len(frame.inputFiles()), "plan_s": planned - started,
                               "read_s": time.perf_counter() - planned}
    return {"plan_s": sum(f["plan_s"] for f in per_feed.values()),
            "read_s": sum(f["read_s"] for f in per_feed.values()),
            "files": sum(int(f["files"]) for f in per_feed.values()), "feeds": per_feed}


def bench_files(warehouse: Path, workdir: Path, as_of: Month, master: str) -> dict[str, Any]:
    from features import spark as engine

    settings = Settings(engine="spark", spark={"master": master})
    spark = engine.session(settings)
    report: dict[str, Any] = {"warehouse": file_counts(warehouse)}
    spark_reads(spark, warehouse)  # warm-up: JIT, Parquet reader classes, page cache
    report["spark_warehouse"] = timed("spark: plan + read every feed (partitioned by month)",
                                      lambda: spark_reads(spark, warehouse))["result"]
    compact = compact_copy(warehouse, workdir / "compacted")
    report["compacted"] = file_counts(compact)
    spark_reads(spark, compact)
    report["spark_compacted"] = timed("spark: plan + read every feed (compacted copy)",
                                      lambda: spark_reads(spark, compact))["result"]
    first = as_of.end

    def duckdb_reads() -> int:
        done = counties(warehouse)
        for county in done:
            load_county(warehouse, county, first, first)
        return len(done)

    report["local_reads"] = _plain(timed("local engine: load_county of every county "
                                         "(DuckDB, 1 thread)", duckdb_reads))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--home", type=Path, help="an ingested DOUDI_HOME (else generate one)")
    ap.add_argument("--households", type=int, default=30_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("workspace/bench_spark"))
    ap.add_argument("--as-of", type=Month.parse, default=Month.parse("2024-12"))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["features", "files"])
    ap.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = ap.parse_args()
    if importlib.util.find_spec("pyspark") is None:
        print("pyspark is not installed (doudi's `spark` extra): nothing to measure")
        return
    if args.home:
        warehouse = args.home / "warehouse"
    elif (args.workdir / "home" / "warehouse" / "households").is_dir():
        warehouse = args.workdir / "home" / "warehouse"
    else:
        warehouse = generate(args.workdir, args.households, args.months, args.seed)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"warehouse": str(warehouse), "as_of": str(args.as_of),
                              "master": args.master, "cpu_count": os.cpu_count(),
                              "load_avg_start": os.getloadavg()}
    if "features" not in args.skip:
        report["features"] = bench_features(warehouse, args.as_of, args.master, args.repeats)
    if "files" not in args.skip:
        report["files"] = bench_files(warehouse, workdir, args.as_of, args.master)
    report["load_avg_end"] = os.getloadavg()
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
