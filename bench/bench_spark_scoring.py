"""Scoring and explanations for one as-of month: the local engine vs Spark `local[2]`
(issue 16, serving/spark_scoring.py).

    DOUDI_HOME=/tmp/spark_bench/home MLFLOW_TRACKING_URI=... \
        .venv/bin/python bench/bench_spark_scoring.py --as-of 2024-12 \
        [--model URI|FOLDER] [--master local[2]] [--repeats 2] [--out FILE]

The workspace needs a model (`doudi train --as-of ...`; default: its champion). The
scoring table is built once (local engine; features are bench_spark_features.py's), then
`serving.scoring.score` runs, in one process and one after the other (2 cores):
alerts explained (the monthly job) and everyone explained (`--explain-all`, TreeSHAP on
every row), each on `local` (`workers` 2) and on `spark`; the Spark frame is checked
equal to the local one. Wall time, CPU time and peak RSS of the process tree (the JVM and
its Python workers included); then `--repeats` local/spark pairs back to back, the
overhead ratio being their median ratio (the machine is shared).

Exits 0 with a note when pyspark is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_spark_features import timed

from doudi.months import Month
from doudi.settings import Settings
from features import scoring_table
from serving.scoring import choose_model, load_model, score


def _plain(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "result"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--model", default=None, help="registry URI or folder (default: champion)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/out/spark_scoring.json"))
    args = parser.parse_args()
    if importlib.util.find_spec("pyspark") is None:
        print("pyspark is not installed (doudi's `spark` extra): nothing to measure")
        return
    from features import spark

    as_of = Month.parse(args.as_of)
    local_settings = Settings(workers=2)
    master = local_settings.spark.model_copy(update={"master": args.master})
    spark_settings = local_settings.model_copy(update={"engine": "spark", "spark": master})
    artifact, version = load_model(choose_model(args.model, local_settings).uri, local_settings)
    table = timed("scoring table (local engine)",
                  lambda: scoring_table(local_settings.warehouse_dir, as_of, local_settings))
    frame = table.pop("result")
    report: dict[str, Any] = {
        "home": str(local_settings.home), "as_of": str(as_of), "master": args.master,
        "model": version, "trees": artifact.booster.num_trees(),
        "type_models": sorted(artifact.type_boosters), "rows": len(frame),
        "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(),
        "scoring_table": table}
    report["session_start"] = _plain(timed("spark session start (JVM)",
                                           lambda: spark.session(spark_settings)))
    for explain_all in (False, True):
        name = "explain_all" if explain_all else "alerts"

        def run(s: Settings, explain_all: bool = explain_all) -> pd.DataFrame:
            return score(frame, artifact, s, as_of.end, model_version=version,
                         explain_all=explain_all)

        local = timed(f"{name}: local (2 workers)", lambda: run(local_settings), args.repeats)
        on_spark = timed(f"{name}: spark ({args.master})", lambda: run(spark_settings),
                         args.repeats)
        pd.testing.assert_frame_equal(on_spark["result"], local["result"], check_exact=True)
        alerted = int(local["result"]["alerted"].sum())
        print(f"  {name}: spark frame == local frame ({alerted} alerts)", flush=True)
        pairs = []
        for _ in range(args.repeats):
            a = timed(f"{name} paired: local", lambda: run(local_settings))
            b = timed(f"{name} paired: spark", lambda: run(spark_settings))
            pairs.append({"local_s": a["median_s"], "spark_s": b["median_s"],
                          "local_cpu_s": a["median_cpu_s"], "spark_cpu_s": b["median_cpu_s"]})
        report[name] = {
            "alerts": alerted, "local": _plain(local), "spark": _plain(on_spark),
            "pairs": pairs,
            "ratio_wall_paired": statistics.median(p["spark_s"] / p["local_s"] for p in pairs),
            "ratio_cpu_paired": statistics.median(p["spark_cpu_s"] / p["local_cpu_s"]
                                                  for p in pairs),
            "ratio_peak": on_spark["peak_gb"] / local["peak_gb"]}
        print(f"  {name}: spark/local wall {report[name]['ratio_wall_paired']:.2f}x "
              f"(paired median), CPU {report[name]['ratio_cpu_paired']:.2f}x", flush=True)
    spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
