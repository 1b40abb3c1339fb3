"""Benchmark: visit capacity per township (issue 13), ours against pandas groupby + rank.

    .venv/bin/python bench/bench_capacity.py                       # 1M households, 5 repeats
    .venv/bin/python bench/bench_capacity.py --rows 100000 --townships 100 --repeats 3

On `--rows` households in `--townships` townships of uneven size (a few large townships,
many small ones), with risks from a Beta distribution and today's 5% capacity:

1. the default capacities (`township_capacities`: counts, largest-remainder shares);
2. the allocation: `serving.capacity.allocate` (one lexsort of integer ranks and township
   indices) against the obvious alternative, pandas `groupby(township).rank(method="first")`
   compared with each township's capacity; both must give the same households;
3. `capacity_report` (the expected true positives given up against the top k), and
   `assign_tiers` with and without townships (the whole step in `score`).
Medians of `--repeats` runs, wall time (`time.perf_counter`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

from doudi.settings import Settings
from serving.capacity import allocate, capacity_report, township_capacities
from serving.scoring import assign_tiers


def province(rows: int, townships: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(risk, township code) per household; township sizes vary about tenfold."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.8, townships)
    codes = np.array([f"62{t // 40:04d}{t % 40 + 1:03d}" for t in range(townships)],
                     dtype=object)
    township = codes[rng.choice(townships, rows, p=weights / weights.sum())]
    # Some townships are poorer: their households' risks are shifted up.
    lift = rng.normal(0.0, 0.5, townships)[np.searchsorted(np.sort(codes), township)]
    risk = 1.0 / (1.0 + np.exp(-(np.log(rng.beta(0.6, 12.0, rows)) + lift + 0.5)))
    return risk, township


def pandas_allocate(rank: np.ndarray, townships: np.ndarray, capacities: dict[str, int],
                    eligible: np.ndarray) -> np.ndarray:
    """The obvious alternative: rank within township with pandas, compare with capacity."""
    frame = pd.DataFrame({"township": townships, "rank": rank})[eligible]
    place = frame.groupby("township", sort=False)["rank"].rank(method="first")
    limit = frame["township"].map(capacities).fillna(0)
    alerted = np.zeros(len(rank), dtype=bool)
    alerted[frame.index[(place <= limit).to_numpy()]] = True
    return alerted


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--townships", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    settings = Settings(workers=1)
    risk, townships = province(args.rows, args.townships)
    margin = np.log(risk / (1 - risk))
    rank, _ = assign_tiers(risk, settings, margin=margin)
    eligible = risk >= settings.tiers.min_alert_risk
    print(f"{args.rows:,} households, {len(set(townships)):,} townships, "
          f"{eligible.sum():,} at or above min_alert_risk; median of {args.repeats}")

    t_caps, capacities = timed(lambda: township_capacities(townships, settings), args.repeats)
    t_ours, ours = timed(lambda: allocate(rank, townships, capacities, eligible), args.repeats)
    t_pandas, theirs = timed(lambda: pandas_allocate(rank, townships, capacities, eligible),
                             args.repeats)
    if not (ours == theirs).all():
        raise SystemExit("the two allocations differ")
    t_report, report = timed(
        lambda: capacity_report(risk, rank, ours, townships, capacities, eligible), args.repeats)
    t_tiers, _ = timed(lambda: assign_tiers(risk, settings, margin=margin,
                                            townships=townships, capacities=capacities),
                       args.repeats)
    t_province, _ = timed(lambda: assign_tiers(risk, settings, margin=margin), args.repeats)

    print("| step | median |")
    print("|---|---|")
    print(f"| default capacities (`township_capacities`) | {t_caps:.3f} s |")
    print(f"| allocation, ours (`allocate`: lexsort of integer ranks) | {t_ours:.3f} s |")
    print(f"| allocation, pandas groupby + rank(method='first') | {t_pandas:.3f} s "
          f"({t_pandas / t_ours:.1f}x ours) |")
    print(f"| `capacity_report` | {t_report:.3f} s |")
    print(f"| `assign_tiers` with townships (rank + allocation + tiers) | {t_tiers:.3f} s |")
    print(f"| `assign_tiers` province-wide (before issue 13) | {t_province:.3f} s |")
    print(f"capacity {report.capacity:,} visits; {report.alerted:,} alerted; "
          f"{report.at_capacity} of {report.townships} townships at capacity; "
          f"gives up {report.expected_loss:.1f} of {report.expected_top_k:.1f} expected true "
          f"positives ({report.expected_loss / report.expected_top_k:.1%}); "
          f"{report.displaced:,} top-k households not alerted")


if __name__ == "__main__":
    main()
