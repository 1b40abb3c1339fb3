"""The whole monthly job on one new month, `local` vs `spark` (issue 16).

    .venv/bin/python bench/bench_monthly.py --base BASE_HOME --delivery RAW_DIR \
        --as-of YYYY-MM --workdir DIR [--engines local spark] [--master local[2]] \
        [--out FILE]

BASE_HOME is a workspace that holds every month before the delivery and a champion
(`doudi ingest`, `doudi train`). For each engine, a copy of it (`cp -a`, under the
workdir) runs `doudi monthly RAW_DIR --as-of M --no-retrain` as a child process: ingest
of the one new month, features, score, explain, store, export (`monitor.after_monthly`
off: the issue's job has no monitor; `doudi monitor` is measured on its own in
bench_monitor.py; the yearly compaction off unless `--compact`: a December delivery
closes its year, and that once-a-year rewrite is measured by `doudi compact` on its own).
Wall time, CPU time and peak RSS of the whole process tree (the CLI, its pool workers,
the JVM and its Python workers; RSS summed, sampled every 0.2 s), and
the job's own step times (its `time:` line). Then the alert stores of the runs are
compared: the same alerts (household, tier, risk, types, departments) on every engine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_features import _tree_rss_bytes

PROJECT = Path(__file__).resolve().parent.parent
DOUDI = PROJECT / ".venv" / "bin" / "doudi"


def run_cli(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """`doudi argv` as a child: wall, CPU (the whole tree, reaped) and peak tree RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen([str(DOUDI), *argv], env={**os.environ, **env}, stdout=out,
                                 stderr=subprocess.STDOUT)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss_bytes(child.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"doudi {argv[0]} exited {code}; see {log}:\n{text[-2000:]}")
    return {"wall_s": wall, "peak_gb": peak[0] / 2**30, "text": text,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "load_after": os.getloadavg()[0], "log": str(log)}


def run_job(home: Path, delivery: Path, as_of: str, engine: str, master: str,
            log: Path, compact: bool = False) -> dict[str, Any]:
    env = {"DOUDI_HOME": str(home), "DOUDI_ENGINE": engine, "DOUDI_SPARK__MASTER": master,
           "DOUDI_MONITOR__AFTER_MONTHLY": "false",
           "DOUDI_COMPACT_CLOSED_YEARS": "true" if compact else "false",
           "PYSPARK_PYTHON": str(PROJECT / ".venv" / "bin" / "python")}
    result = run_cli(["monthly", str(delivery), "--as-of", as_of, "--no-retrain"], env, log)
    steps = {}
    for line in result.pop("text").splitlines():
        if line.strip().startswith("time:"):
            for part in line.split(":", 1)[1].split(","):
                name, seconds, _ = part.split()
                steps[name] = float(seconds)
    return {"engine": engine, **result, "steps": steps}


def alerts_of(home: Path, as_of: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "alerts.db") as con:
        return con.execute(
            "SELECT household_key, tier, risk, risk_types, departments, source FROM alerts "
            "WHERE substr(as_of, 1, 7) = ? ORDER BY household_key", (as_of,)).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--delivery", type=Path, required=True)
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--engines", nargs="+", default=["local", "spark"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--compact", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for engine in args.engines:
        home = args.workdir / f"home-{engine}"
        if home.exists():
            shutil.rmtree(home)
        subprocess.run(["cp", "-a", str(args.base), str(home)], check=True)
        print(f"{engine}: doudi monthly on a copy of {args.base}", flush=True)
        result = run_job(home, args.delivery, args.as_of, engine, args.master,
                         args.workdir / f"monthly-{engine}.log", args.compact)
        result["alerts"] = len(alerts_of(home, args.as_of))
        print(f"  {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU, peak "
              f"{result['peak_gb']:.2f} GB, {result['alerts']} alerts; steps {result['steps']}",
              flush=True)
        results.append(result)
    if len(results) > 1:
        first = alerts_of(args.workdir / f"home-{args.engines[0]}", args.as_of)
        for engine in args.engines[1:]:
            same = alerts_of(args.workdir / f"home-{engine}", args.as_of) == first
            print(f"  alerts {engine} == {args.engines[0]}: {same}", flush=True)
            if not same:
                raise SystemExit("the engines' alerts differ")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
