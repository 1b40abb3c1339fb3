"""Benchmark point-in-time features on a warehouse built from generator output.

    .venv/bin/python bench/bench_features.py --households 100000 --months 36 \
        --workdir workspace/bench_features [--replicate 10] [--repeats 3]

Steps: simulate a province (`province.simulate`) and ingest it (`ingest.ingest`)
unless `--warehouse` points at an existing warehouse; time one as-of month, 24
as-of months (one read per county) and, with `--replicate K`, one month on a
K-times larger warehouse (every generated household copied K times under new
pseudonymous keys, in the same county partitions). Beside it, a straightforward pandas groupby
implementation of a few features runs on the same data and its values are
checked against ours. Reports medians and the peak resident memory of the whole
process tree (sampled every 0.1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doudi.months import Month
from doudi.settings import Settings
from features import build_features, build_features_range
from features.asof import add_months, month_end
from features.county import HISTORY_MONTHS, WINDOWED_FEEDS

KEY_COLUMNS = ("household_key", "person_key", "head_person_key")


# -- memory of the process tree ---------------------------------------------------------
def _tree_rss_bytes(pid: int) -> int:
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with Path(f"/proc/{p}/status").open() as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class PeakMemory:
    """Peak RSS of this process and its children while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Wall time, CPU time (a load-independent figure on a shared machine) and peak RSS."""
    seconds, cpu, peaks, result = [], [], [], None
    for i in range(repeats):
        result = None  # free the previous run's frame before measuring the next
        with PeakMemory() as mem:
            cpu_start, started = _cpu_seconds(), time.perf_counter()
            result = fn()
            seconds.append(time.perf_counter() - started)
            cpu.append(_cpu_seconds() - cpu_start)
        peaks.append(mem.peak)
        print(f"  {label} run {i + 1}: {seconds[-1]:.1f}s wall, {cpu[-1]:.1f}s CPU, "
              f"peak {mem.peak / 2**30:.2f} GB, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = len(result) if result is not None else 0
    return {"label": label, "median_s": statistics.median(seconds), "runs_s": seconds,
            "median_cpu_s": statistics.median(cpu), "peak_gb": max(peaks) / 2**30,
            "rows": rows, "result": result}


# -- warehouse preparation ----------------------------------------------------------------
def generate(workdir: Path, households: int, months: int, seed: int) -> Path:
    import ingest
    import province

    settings = Settings(home=workdir / "home")
    started = time.perf_counter()
    province.simulate(workdir, households=households, months=months, start="2023-01",
                      seed=seed, settings=settings)
    print(f"simulate: {time.perf_counter() - started:.0f}s", flush=True)
    started = time.perf_counter()
    ingest.ingest(workdir / "raw", settings)
    print(f"ingest: {time.perf_counter() - started:.0f}s", flush=True)
    return settings.warehouse_dir


def replicate(source: Path, target: Path, copies: int, windowed_since: str = "") -> Path:
    """A warehouse with `copies` re-keyed copies of every household in the same partitions
    (counties `copies` times larger; one output file per input file, so writing stays fast).
    Partitions of windowed feeds reported before `windowed_since` (YYYY-MM) are left out:
    an as-of month whose windows start later never reads them."""
    for feed_dir in sorted(p for p in source.iterdir() if p.is_dir() and p.name[0] != "_"):
        for file in sorted(feed_dir.glob("county=*/reported_month=*/*.parquet")):
            month = file.parent.name.removeprefix("reported_month=")
            if feed_dir.name in WINDOWED_FEEDS and month < windowed_since:
                continue
            table = pq.read_table(file)
            parts = []
            for k in range(copies):
                out = table
                for name in KEY_COLUMNS:
                    if name in out.column_names:
                        out = out.set_column(
                            out.schema.get_field_index(name), name,
                            pc.binary_join_element_wise(out[name], f"~{k}", ""))
                parts.append(out)
            folder = target / file.relative_to(source).parent
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(parts), folder / file.name)
    return target


# -- the straightforward pandas baseline ------------------------------------------------------
def _read(warehouse: Path, feed_name: str, columns: list[str]) -> pd.DataFrame:
    table = pq.read_table(warehouse / feed_name, columns=columns, partitioning=None)
    return table.to_pandas(date_as_object=False)


def _latest(frame: pd.DataFrame, key: list[str], as_of: date) -> pd.DataFrame:
    frame = frame[frame["reported_date"] <= pd.Timestamp(as_of)]
    return frame.sort_values([*key, "reported_date"]).drop_duplicates(key, keep="last")


def pandas_baseline(warehouse: Path, as_of_month: Month) -> pd.DataFrame:
    """A few features the obvious way: read whole feeds, dedupe, merge, groupby."""
    t = month_end(as_of_month)
    stamp = pd.Timestamp(t)
    hh = _latest(_read(warehouse, "households", ["household_key", "reported_date"]),
                 ["household_key"], t)
    persons = _read(warehouse, "persons", ["person_key", "household_key", "status", "status_date",
                                       "reported_date"])
    persons = persons[(persons["reported_date"] <= stamp) & (persons["status_date"] <= stamp)]
    persons = persons.sort_values(["person_key", "status_date", "reported_date"])
    persons = persons.drop_duplicates("person_key", keep="last")
    members = persons[persons["status"].isin(["living", "moved_in"])]
    members = members[members["household_key"].isin(hh["household_key"])]
    out = members.groupby("household_key").size().rename("household_size").to_frame()
    med = _read(warehouse, "medical",
                ["person_key", "month", "out_of_pocket_yuan", "reported_date"])
    med = _latest(med[med["month"] <= stamp], ["person_key", "month"], t)
    med = med.merge(members[["person_key", "household_key"]], on="person_key")
    for w in (3, 12):
        since = pd.Timestamp(add_months(t, -w)) + pd.Timedelta(days=1)
        sums = med[med["month"] >= since].groupby("household_key")["out_of_pocket_yuan"].sum()
        out[f"medical_oop_{w}m"] = sums.reindex(out.index).fillna(0.0)
    dis = _read(warehouse, "disasters", ["household_key", "event_date", "hazard", "loss_yuan",
                                   "reported_date"])
    dis = _latest(dis[dis["event_date"] <= stamp], ["household_key", "event_date", "hazard"], t)
    since = pd.Timestamp(add_months(t, -12)) + pd.Timedelta(days=1)
    sums = dis[dis["event_date"] >= since].groupby("household_key")["loss_yuan"].sum()
    out["disaster_loss_12m"] = sums.reindex(out.index).fillna(0.0)
    return out.reset_index()


def compare(ours: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, float]:
    """Max abs difference per baseline feature, over households where our feed is present."""
    merged = ours.merge(baseline, on="household_key", suffixes=("", "_pandas"))
    diffs = {}
    for column in baseline.columns.drop("household_key"):
        mine, theirs = merged[column].to_numpy(), merged[f"{column}_pandas"].to_numpy()
        present = ~np.isnan(mine)
        diffs[column] = float(np.max(np.abs(mine[present] - theirs[present]), initial=0.0))
    diffs["households_matched"] = float(len(merged))
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("workspace/bench_features"))
    ap.add_argument("--warehouse", type=Path, help="use this warehouse instead of generating")
    ap.add_argument("--as-of", default=Month.parse("2025-06"), type=Month.parse)
    ap.add_argument("--range-months", type=int, default=24)
    ap.add_argument("--replicate", type=int, default=0, help="also time a K-times warehouse")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["one", "range", "baseline", "big"])
    args = ap.parse_args()

    settings = Settings(workers=args.workers)
    warehouse = args.warehouse or generate(args.workdir, args.households, args.months,
                                           args.seed)
    report: dict[str, Any] = {"warehouse": str(warehouse), "workers": args.workers,
                              "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}
    results = []
    ours = None
    if "one" not in args.skip:
        r = timed("features, 1 as-of month", lambda: build_features(warehouse, args.as_of,
                                                                    settings), args.repeats)
        ours = r["result"]
        results.append(r)
    if "range" not in args.skip:
        first = args.as_of - (args.range_months - 1)
        results.append(timed(f"features, {args.range_months} as-of months",
                             lambda: build_features_range(warehouse, first, args.as_of,
                                                          settings), args.repeats))
    if "baseline" not in args.skip:
        r = timed("pandas groupby baseline (5 features, 1 month, 1 core)",
                  lambda: pandas_baseline(warehouse, args.as_of), args.repeats)
        results.append(r)
        if ours is not None:
            report["baseline_max_abs_diff"] = compare(ours, r["result"])
    if args.replicate > 1 and "big" not in args.skip:
        big = args.workdir / f"warehouse_x{args.replicate}"
        if not (big / "households").is_dir():
            started = time.perf_counter()
            # the as-of month's windows start HISTORY_MONTHS + 3 months back (load_county)
            since = add_months(month_end(args.as_of), -(HISTORY_MONTHS + 3))
            replicate(warehouse, big, args.replicate, f"{since:%Y-%m}")
            print(f"replicate x{args.replicate}: {time.perf_counter() - started:.0f}s")
        results.append(timed(f"features, 1 as-of month, warehouse x{args.replicate}",
                             lambda: build_features(big, args.as_of, settings),
                             args.big_repeats))
    report["load_avg_end"] = os.getloadavg()
    report["results"] = [{k: v for k, v in r.items() if k != "result"} for r in results]
    print()
    print("| run | household-months | median wall s | runs s | median CPU s | peak GB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        runs = ", ".join(f"{s:.1f}" for s in r["runs_s"])
        print(f"| {r['label']} | {r['rows']} | {r['median_s']:.1f} | {runs} | "
              f"{r['median_cpu_s']:.1f} | {r['peak_gb']:.2f} |")
    print()
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))


if __name__ == "__main__":
    main()
