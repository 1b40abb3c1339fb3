"""Benchmark: ingest a generated province; compare with the obvious pandas read_csv path.

    .venv/bin/python bench/bench_ingest.py                       # 100k households x 36 months
    .venv/bin/python bench/bench_ingest.py --households 5000 --months 24 --runs 3

Each measurement runs in its own process (peak RSS from wait4). The generated
extract is cached under --work keyed by its parameters. Prints medians of --runs.
Target: 100k x 36 in <= 120 s on 2 cores with peak memory <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_INGEST = """
import sys, json
from pathlib import Path
from doudi.settings import Settings
import ingest
report = ingest.ingest(Path(sys.argv[1]), Settings(home=Path(sys.argv[2])))
print(json.dumps({"rows": sum(f.rows for f in report.feeds.values()),
                  "accepted": report.accepted, "quarantined": report.quarantined}))
"""

# the obvious approach: pandas reads each file whole (as strings), nothing else
_PANDAS = """
import sys, json
from pathlib import Path
import pandas as pd
from ingest.reading import discover, detect_encoding
rows = 0
for source in discover(Path(sys.argv[1])).files:
    if source.is_parquet:
        rows += len(pd.read_parquet(source.path))
    else:
        enc = detect_encoding(source)
        frame = pd.read_csv(source.path, dtype=str, keep_default_na=False, encoding=enc)
        rows += len(frame)
print(json.dumps({"rows": rows}))
"""


def _measure(code: str, *args: str) -> tuple[float, float, float, dict[str, int]]:
    """(wall seconds, CPU seconds, peak RSS in MB, the JSON the child printed)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            env=env, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed with exit code {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, json.loads(
        out.decode().strip().splitlines()[-1])


def _extract(work: Path, households: int, months: int, seed: int) -> Path:
    out = work / f"world-{households}h-{months}m-s{seed}"
    if not (out / "truth" / "summary.json").exists():
        from doudi.settings import Settings
        from province import simulate

        print(f"generating {households} households x {months} months into {out} ...",
              flush=True)
        t = time.perf_counter()
        simulate(out, households=households, months=months, start="2023-01", seed=seed,
                 settings=Settings())
        print(f"  generated in {time.perf_counter() - t:.0f} s", flush=True)
    return out / "raw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "workspace" / "bench_ingest")
    parser.add_argument("--skip-pandas", action="store_true")
    args = parser.parse_args()

    raw = _extract(args.work, args.households, args.months, args.seed)
    files = [p for p in raw.rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"extract: {len(files)} files, {size_mb:,.0f} MB on disk; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}", flush=True)

    timings, cpus, peaks = [], [], []
    rows = 0
    for i in range(args.runs):
        home = args.work / f"ws-run{i}"
        shutil.rmtree(home, ignore_errors=True)
        seconds, cpu, peak, out = _measure(_INGEST, str(raw), str(home))
        rows = out["rows"]
        timings.append(seconds)
        cpus.append(cpu)
        peaks.append(peak)
        print(f"  ingest run {i + 1}: {seconds:6.1f} s wall, {cpu:6.1f} s CPU, "
              f"peak {peak:,.0f} MB, {rows:,} rows "
              f"({out['quarantined']} quarantined), load {os.getloadavg()[0]:.1f}", flush=True)
        shutil.rmtree(home, ignore_errors=True)
    median = statistics.median(timings)
    print(f"ingest: median {median:.1f} s wall ({statistics.median(cpus):.1f} s CPU), "
          f"{rows / median:,.0f} rows/s, peak {max(peaks):,.0f} MB")

    if not args.skip_pandas:
        p_times, p_cpus, p_peaks = [], [], []
        for i in range(args.runs):
            seconds, cpu, peak, out = _measure(_PANDAS, str(raw))
            p_times.append(seconds)
            p_cpus.append(cpu)
            p_peaks.append(peak)
            print(f"  pandas run {i + 1}: {seconds:6.1f} s wall, {cpu:6.1f} s CPU, "
                  f"peak {peak:,.0f} MB", flush=True)
        p_median = statistics.median(p_times)
        print(f"pandas read_csv (read only, dtype=str): median {p_median:.1f} s wall "
              f"({statistics.median(p_cpus):.1f} s CPU), "
              f"{out['rows'] / p_median:,.0f} rows/s, peak {max(p_peaks):,.0f} MB")


if __name__ == "__main__":
    main()
