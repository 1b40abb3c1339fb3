"""Benchmark: `doudi monitor` on a workspace's month, what it reuses, and its PSI against
pandas' qcut.

    .venv/bin/python bench/bench_monitor.py --home <workspace COPY> --as-of 2025-12

1. The whole monitor (`monitoring.monitor.monitor_month`: labels of the window, features
   where needed, margins, SHAP samples, the alert store, the report files, the MLflow run),
   each repeat in a fresh process: wall time and peak memory (the process and its feature
   workers, ru_maxrss), in three states of the workspace, in this order:
   - `recompute`: no prediction log and no reference profile (what the monitor did before
     it reused anything: every month's features and predictions);
   - `after_first_monthly`: the state `doudi monthly` leaves in a new workspace: the as-of
     month's prediction log only, no profile (each repeat deletes the profile first);
   - `steady`: every window month scored by `doudi score` (as monthly runs would have done;
     done here first with `serving.scoring.score_month`, timed apart) and the profile kept.
2. The drift step alone on the same two matrices (reference months vs the as-of month, the
   champion's encoding): `monitoring.drift.feature_drift` against the obvious pandas
   version (`pd.qcut` of the reference per feature, `pd.cut` of the month, value_counts,
   missing as its own bin), the largest PSI difference between the two.
Timings are medians of `--repeats`. The bench writes logs, the cache, reports/, alerts of
past months and MLflow runs: use a copy of the workspace and of its MLflow store.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _child(as_of: str) -> None:
    from doudi.months import Month
    from doudi.settings import Settings
    from monitoring.monitor import monitor_month

    started = time.perf_counter()
    report, _ = monitor_month(Settings(), Month.parse(as_of))
    seconds = time.perf_counter() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024 / 1024
    print(json.dumps({"seconds": seconds, "peak_gb": peak,
                      "households": int(report.township_alerts["in_scope"].sum()),
                      "recommendation": report.recommendation.line()}, ensure_ascii=False))


def qcut_psi(reference, current):  # type: ignore[no-untyped-def]
    """The obvious pandas PSI: decile bins of the reference by pd.qcut, missing apart."""
    import numpy as np
    import pandas as pd

    ref, now = pd.Series(reference), pd.Series(current)
    try:
        _, edges = pd.qcut(ref.dropna(), 10, retbins=True, duplicates="drop")
    except (ValueError, IndexError):
        edges = np.array([-np.inf, np.inf])
    edges[0], edges[-1] = -np.inf, np.inf

    def shares(s: pd.Series) -> np.ndarray:
        binned = pd.cut(s, edges).cat.add_categories("missing").fillna("missing")
        counts = binned.value_counts(sort=False).to_numpy(dtype=float)
        return np.maximum(counts / counts.sum(), 1e-4)

    p, q = shares(ref), shares(now)
    return float(np.sum((q - p) * np.log(q / p)))


def _drift_comparison(as_of: str, repeats: int) -> dict[str, object]:
    import numpy as np

    from doudi import registry
    from doudi.months import Month
    from doudi.settings import Settings
    from features import labelled_table
    from monitoring import drift

    settings = Settings()
    month = Month.parse(as_of)
    artifact, _ = registry.load_model(registry.workspace(settings).champion_uri, settings)
    found = registry.find_champion(settings)
    assert found is not None and found.as_of
    last = Month.parse(found.as_of, allow_date=True) - (
        settings.horizon_months + settings.label_allowance_months)
    reference = (last - settings.monitor.reference_months + 1).through(last)
    table = labelled_table(settings.warehouse_dir, [*reference, month], settings, month)
    is_now = table["as_of"].dt.date.to_numpy() == month.end
    ref_x, now_x = artifact.encode(table[~is_now]), artifact.encode(table[is_now])
    names = artifact.feature_names
    ours, theirs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        got = drift.feature_drift(ref_x, now_x, names, moderate=0.1, major=0.25)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        pandas_psi = [qcut_psi(ref_x[:, j], now_x[:, j]) for j in range(len(names))]
        theirs.append(time.perf_counter() - t)
    difference = np.abs(got["psi"].to_numpy() - np.array(pandas_psi))
    return {"reference_rows": len(ref_x), "month_rows": len(now_x),
            "features": len(names), "ours_s": statistics.median(ours),
            "pandas_qcut_s": statistics.median(theirs),
            "max_psi_difference": float(difference.max()),
            "features_differing_by_0.01": int((difference > 0.01).sum())}


def _monitor_runs(args: argparse.Namespace, before_each: Callable[[], None] = lambda: None,
                  ) -> dict[str, object]:
    runs = []
    for _ in range(args.repeats):
        before_each()
        done = subprocess.run([sys.executable, __file__, "--child", "--home", str(args.home),
                               "--as-of", args.as_of], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1], ensure_ascii=False), flush=True)
    return {"seconds_median": round(statistics.median(r["seconds"] for r in runs), 1),
            "seconds": [round(r["seconds"], 1) for r in runs],
            "peak_gb_median": round(statistics.median(r["peak_gb"] for r in runs), 2),
            "recommendation": runs[-1]["recommendation"]}


def _score_window(as_of: str) -> dict[str, object]:
    """`doudi score` for every window month without a prediction log (what monthly runs
    leave behind), timed per month."""
    from doudi.months import Month
    from doudi.settings import Settings
    from serving.predictions import read_predictions
    from serving.scoring import score_month

    settings = Settings()
    month = Month.parse(as_of)
    horizon = settings.horizon_months + settings.label_allowance_months
    first = month - horizon - settings.monitor.calibration_months + 1
    seconds = []
    for past in first.through(month):
        if read_predictions(settings, past) is None:
            started = time.perf_counter()
            score_month(settings, past)
            seconds.append(time.perf_counter() - started)
    return {"months_scored": len(seconds),
            "score_s_median": round(statistics.median(seconds), 1) if seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="A workspace COPY.")
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--states", default="recompute,after_first_monthly,steady")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["DOUDI_HOME"] = str(args.home)
    if args.child:
        _child(args.as_of)
        return
    predictions, cache = args.home / "predictions", args.home / "cache"
    aside = args.home / "predictions.bench-aside"
    states = args.states.split(",")
    found: dict[str, object] = {}

    def no_profile() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    if "recompute" in states:
        predictions.rename(aside) if predictions.exists() else aside.mkdir()
        try:
            found["recompute"] = _monitor_runs(args, no_profile)
        finally:
            shutil.rmtree(predictions, ignore_errors=True)
            aside.rename(predictions)
    if "after_first_monthly" in states:
        found["after_first_monthly"] = _monitor_runs(args, no_profile)
    if "steady" in states:
        found["scoring_the_window"] = _score_window(args.as_of)
        _monitor_runs(argparse.Namespace(**{**vars(args), "repeats": 1}))  # keeps the profile
        found["steady"] = _monitor_runs(args)
    found["drift"] = _drift_comparison(args.as_of, args.repeats)
    print(json.dumps(found, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
