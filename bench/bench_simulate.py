"""Benchmark `doudi simulate`: wall time and peak memory, plus a CSV-writing comparison.

    .venv/bin/python bench/bench_simulate.py                    # 100k x 36, 3 runs
    .venv/bin/python bench/bench_simulate.py --households 1000000 --repeats 1

Each run is a fresh process under /usr/bin/time -v (peak RSS of the whole run).
Medians are printed; the machine may be shared, so read ratios over absolutes.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

RUN = (
    "import sys; from pathlib import Path; from province import simulate; "
    "simulate(Path(sys.argv[1]), households=int(sys.argv[2]), months=int(sys.argv[3]), "
    "start='2023-01', seed=7)"
)


def run_once(households: int, months: int, out: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in GB, bytes written) of one generator process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RUN, str(out), str(households), str(months)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    cpu = sum(
        float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr)[1])
        for kind in ("User", "System")
    )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return wall, cpu, peak_kb / 1024**2, size


def csv_comparison(rows: int) -> dict[str, float]:
    """Seconds to write one GB18030 CSV of employment-like rows: pyarrow vs pandas."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "身份证号": rng.integers(10**17, 9 * 10**17, rows).astype(str),
            "月份": "2024-03",
            "就业状态": rng.choice(["外出务工", "employed_local", "登记失业"], rows),
            "月工资": np.round(rng.uniform(800, 9000, rows), 2),
            "社保缴费": rng.choice(["是", "否"], rows),
            "上报日期": "2024-04-15",
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    timings = {}
    for name, write in (
        ("pyarrow write_csv + gb18030 encode", lambda: _arrow_gbk(table)),
        ("pandas to_csv(encoding=gb18030)", lambda: frame.to_csv(index=False, encoding="gb18030")),
    ):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            write()
            runs.append(time.perf_counter() - start)
        timings[name] = statistics.median(runs)
    return timings


def _arrow_gbk(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue().decode("utf-8").encode("gb18030")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv-rows", type=int, default=300_000)
    args = parser.parse_args()

    walls, cpus, peaks = [], [], []
    size = 0
    for k in range(args.repeats):
        out = Path(tempfile.mkdtemp(prefix="bench_simulate_"))
        try:
            wall, cpu, peak, size = run_once(args.households, args.months, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        walls.append(wall)
        cpus.append(cpu)
        peaks.append(peak)
        print(
            f"run {k + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.2f} GB, "
            f"{size / 1e6:.0f} MB written",
            flush=True,
        )
    print(
        f"simulate {args.households:,} households x {args.months} months: "
        f"median {statistics.median(walls):.1f} s wall "
        f"(min {min(walls):.1f}, max {max(walls):.1f}), "
        f"{statistics.median(cpus):.1f} s CPU, "
        f"peak RSS median {statistics.median(peaks):.2f} GB (max {max(peaks):.2f})"
    )
    for name, seconds in csv_comparison(args.csv_rows).items():
        print(f"GB18030 CSV, {args.csv_rows:,} rows, {name}: {seconds:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
