"""Training on a negative-down-sampled, weighted table that the engine builds (issue 16).

    .venv/bin/python bench/bench_train_sampled.py --home HOME --as-of YYYY-MM \
        [--rate 0.05] [--engine spark] [--master local[2]] [--out FILE]

Runs `doudi train --as-of M` on HOME as a child process with `training_negative_rate`
= RATE and the engine given: the county tasks build and sample the table (on Spark:
only the sample leaves the executors), then LightGBM, calibration and the gate run on
this machine. Wall, CPU and peak RSS of the process tree; the rows the table kept and the
rows they stand for (MLflow's `data_*` params of the run), hence bytes per training row:
the single-machine ceiling (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_monthly import PROJECT, run_cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--as-of", required=True)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--engine", default="spark")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = {"DOUDI_HOME": str(args.home), "DOUDI_ENGINE": args.engine,
           "DOUDI_SPARK__MASTER": args.master,
           "DOUDI_TRAINING_NEGATIVE_RATE": str(args.rate),
           "PYSPARK_PYTHON": str(PROJECT / ".venv" / "bin" / "python")}
    log = args.home.parent / f"train-{args.engine}-{args.rate:g}.log"
    result = run_cli(["train", "--as-of", args.as_of], env, log)
    text = result.pop("text")
    print(text[-3000:])
    print(f"doudi train ({args.engine}, rate {args.rate:g}): {result['wall_s']:.0f} s wall, "
          f"{result['cpu_s']:.0f} s CPU, peak {result['peak_gb']:.2f} GB (process tree)")
    if args.out:
        args.out.write_text(json.dumps({**vars(args), **result}, default=str, indent=1))


if __name__ == "__main__":
    main()
