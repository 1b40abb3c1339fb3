"""A capacity plan for a large roll from measured per-county costs (issue 16).

    DOUDI_HOME=<an ingested workspace with a champion> \
        .venv/bin/python bench/capacity_plan.py --as-of 2024-12 [--sample 8] \
        [--households 30000000] [--executors 16 --cores 4 --executor-memory-gb 16] \
        [--monthly FILE (bench_monthly.py --out)] [--out FILE]

1. Measure: `--sample` counties (spread over the county sizes), each in a forked child so
   its memory is its own: the county task for one as-of month (read + features, the Spark
   task's work) and then scoring with the champion (margins, types, TreeSHAP of the alerted
   rows: `serving.scoring.score` on the in-process row work). CPU seconds and the child's
   peak RSS above its start, per household.
2. Plan: the monthly job for `--households` on `--executors` x `--cores`: the executor
   side from the per-household CPU (parallel over counties, at `--efficiency`), the
   driver side (ingest of the new month, store, export) from the measured single-machine
   rates in `--monthly` (bench_monthly.py's local run, scaled by households), the
   executor memory from the largest county size you give (`--largest-county`), the
   driver's memory for the collected table, and the training table's ceiling.
   Every figure is printed with its arithmetic.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doudi.months import Month
from doudi.settings import Settings


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _measure_county(county: str, as_of: Month, out: Any) -> None:
    """Child: one county's features then scoring; CPU and memory of this process only."""
    from features.tables import _county_task
    from serving.scoring import InProcess, choose_model, load_model, score

    settings = Settings(workers=1)
    choice = choose_model(None, settings)
    artifact, version = load_model(choice.uri, settings)
    start_rss = _status_kb("VmRSS")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    table = _county_task(settings.warehouse_dir, county, [as_of.end], settings, "scoring", None)
    cpu_features = time.process_time() - cpu0
    work = InProcess(artifact, threads=1)
    cpu1 = time.process_time()
    scored = score(table, artifact, settings, as_of.end, model_version=version, work=work)
    cpu_score = time.process_time() - cpu1
    out.put({"county": county, "households": len(table),
             "alerts": int(scored["alerted"].sum()) if len(scored) else 0,
             "features_cpu_s": cpu_features, "score_cpu_s": cpu_score,
             "wall_s": time.perf_counter() - wall0,
             "peak_above_start_mb": (_status_kb("VmHWM") - start_rss) / 1024,
             "table_mb": float(table.memory_usage(deep=True).sum()) / 2**20})


def measure(as_of: Month, sample: int) -> list[dict[str, Any]]:
    from features.asof import counties

    settings = Settings()
    every = counties(settings.warehouse_dir)
    step = max(1, len(every) // sample)
    chosen = every[::step][:sample]
    context = multiprocessing.get_context("fork")
    rows = []
    for county in chosen:
        queue = context.Queue()
        child = context.Process(target=_measure_county, args=(county, as_of, queue))
        child.start()
        row = queue.get()
        child.join()
        print(f"  county {county}: {row['households']:,} households, "
              f"features {row['features_cpu_s']:.2f} s CPU, score {row['score_cpu_s']:.2f} s "
              f"CPU, +{row['peak_above_start_mb']:.0f} MB peak", flush=True)
        rows.append(row)
    return rows


def plan(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    n = args.households
    per_hh_cpu = statistics.median(
        (r["features_cpu_s"] + r["score_cpu_s"]) / r["households"] for r in rows)
    per_hh_mb = statistics.median(r["peak_above_start_mb"] / r["households"] for r in rows)
    per_hh_table_mb = statistics.median(r["table_mb"] / r["households"] for r in rows)
    slots = args.executors * args.cores
    executor_cpu_s = per_hh_cpu * n
    executor_wall_s = executor_cpu_s / (slots * args.efficiency)
    lines = [
        f"executor work: {per_hh_cpu * 1e3:.2f} ms CPU per household (features + score + "
        f"explain the alerts; median of {len(rows)} counties) x {n:,} = "
        f"{executor_cpu_s / 3600:.1f} CPU-hours; on {args.executors} executors x "
        f"{args.cores} cores at {args.efficiency:.0%} efficiency: "
        f"{executor_wall_s / 60:.1f} min",
        f"task memory: {per_hh_mb * 1e3:.1f} MB per 1,000 households of the county; the "
        f"largest county ({args.largest_county:,} households) needs "
        f"{per_hh_mb * args.largest_county / 1024:.1f} GB per task, x {args.cores} tasks "
        f"per executor = {per_hh_mb * args.largest_county * args.cores / 1024:.1f} GB "
        f"(executor memory {args.executor_memory_gb} GB)",
        f"driver: the collected scoring table is {per_hh_table_mb * 1e3:.1f} MB per 1,000 "
        f"households: {per_hh_table_mb * n / 1024:.1f} GB for {n:,}",
    ]
    driver_s = 0.0
    if args.monthly:
        local = next(r for r in json.loads(Path(args.monthly).read_text())
                     if r["engine"] == "local")
        scale = n / args.measured_households
        steps = local["steps"]
        for step in ("ingest", "export"):
            if step in steps:
                driver_s += steps[step] * scale
                lines.append(f"driver {step}: {steps[step]:.0f} s for "
                             f"{args.measured_households:,} households x {scale:.0f} = "
                             f"{steps[step] * scale / 60:.1f} min (one machine, linear)")
    total = executor_wall_s + driver_s + args.overhead_s
    lines.append(f"monthly job: {executor_wall_s / 60:.1f} + {driver_s / 60:.1f} + "
                 f"{args.overhead_s / 60:.1f} (session start, scheduling) = "
                 f"{total / 60:.1f} min")
    for line in lines:
        print("  " + line, flush=True)
    return {"per_household_cpu_ms": per_hh_cpu * 1e3, "per_household_task_mb": per_hh_mb,
            "per_household_table_mb": per_hh_table_mb, "executor_wall_min": executor_wall_s / 60,
            "driver_min": driver_s / 60, "total_min": total / 60, "lines": lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--as-of", type=Month.parse, required=True)
    ap.add_argument("--sample", type=int, default=8)
    ap.add_argument("--households", type=int, default=30_000_000)
    ap.add_argument("--measured-households", type=int, default=1_000_000)
    ap.add_argument("--largest-county", type=int, default=400_000)
    ap.add_argument("--executors", type=int, default=16)
    ap.add_argument("--cores", type=int, default=4)
    ap.add_argument("--executor-memory-gb", type=int, default=16)
    ap.add_argument("--efficiency", type=float, default=0.7)
    ap.add_argument("--overhead-s", type=float, default=120.0)
    ap.add_argument("--monthly", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("DOUDI_ENGINE", "local")
    rows = measure(args.as_of, args.sample)
    result = {"counties": rows, "plan": plan(rows, args),
              "cpu_s_this_process": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
