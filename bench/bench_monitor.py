"""Benchmark: `doudi monitor` on a workspace's month, and its PSI against pandas' qcut.

    .venv/bin/python bench/bench_monitor.py --home <workspace COPY> --as-of 2025-12

1. The whole monitor (`monitoring.monitor.monitor_month`: one warehouse read for the
   reference, window and as-of months, per-month scoring, SHAP samples, the alert store,
   the report files and the MLflow run), each repeat in a fresh process: wall time and
   peak memory (the process and its feature workers, ru_maxrss).
2. The drift step alone on the same two matrices (reference months vs the as-of month, the
   champion's encoding): `monitoring.drift.feature_drift` against the obvious pandas
   version (`pd.qcut` of the reference per feature, `pd.cut` of the month, value_counts,
   missing as its own bin), the largest PSI difference between the two.
Timings are medians of `--repeats`. The monitor writes reports/ and an MLflow run: use a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="A workspace COPY.")
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["DOUDI_HOME"] = str(args.home)
    if args.child:
        _child(args.as_of)
        return
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, __file__, "--child", "--home", str(args.home),
                               "--as-of", args.as_of], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1], ensure_ascii=False), flush=True)
    print(json.dumps({
        "monitor_s_median": statistics.median(r["seconds"] for r in runs),
        "monitor_s": [round(r["seconds"], 1) for r in runs],
        "peak_gb_median": statistics.median(r["peak_gb"] for r in runs),
        "drift": _drift_comparison(args.as_of, args.repeats)}, indent=1))


if __name__ == "__main__":
    main()
