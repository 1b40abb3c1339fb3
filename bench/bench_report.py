"""Benchmark: `doudi report` on a scored month (issue 14), ours against the obvious
alternative, each run in a fresh process (time and peak memory).

    DOUDI_HOME=... DOUDI_MLFLOW_TRACKING_URI=... .venv/bin/python bench/bench_report.py \\
        --as-of 2025-12 [--repeats 3]

Run it on a COPY of the workspace: `doudi report` writes reports/ and an MLflow run.

1. `doudi report --as-of` end to end (the command as an operator runs it: imports, the
   champion's run, the store, `run_monitor`, rendering, writing, MLflow), `--repeats` times;
2. in one process each, phase by phase (gather, monitor, render, write) on the same data:
   - ours: one plotly.js inlined in the head, figures as divs, tables as escaped HTML;
   - the obvious alternative: every figure carries its own plotly.js
     (`include_plotlyjs=True`) and tables are pandas `Styler.to_html` (escaped too).
Medians of wall time (`time.perf_counter`), peak RSS of the process
(`resource.getrusage`), and the page's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _use_alternative() -> None:
    """Swap in the alternative renderers where the sections look them up."""
    import plotly.io as pio

    from monitoring import report_drift, report_html, report_sections

    def figure(fig: Any) -> str:
        fig.update_layout(font={"family": report_html.FONT_FAMILY}, template="plotly_white")
        return str(pio.to_html(fig, full_html=False, include_plotlyjs=True))

    def table(frame: Any, columns: Any, **_: Any) -> str:
        shown = frame[[c.name for c in columns if c.name in frame.columns]]
        return str(shown.style.format(escape="html").to_html())

    for module in (report_sections, report_drift):
        module.figure = figure  # type: ignore[attr-defined]
        module.table = table  # type: ignore[attr-defined]


def phases(as_of: str, variant: str, out: Path) -> dict[str, float]:
    """One process: the report's phases timed (no MLflow logging: both write a file)."""
    started = time.perf_counter()
    from doudi.months import Month
    from doudi.settings import Settings
    from monitoring.monitor import run_monitor
    from monitoring.report import render, write_private
    from monitoring.report_data import gather

    if variant == "alternative":
        _use_alternative()
    settings, month = Settings(), Month.parse(as_of)
    times = {"imports_s": time.perf_counter() - started}
    mark = time.perf_counter()
    data = gather(settings, month)
    times["gather_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    monitor = run_monitor(settings, month)
    times["monitor_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    html = render(data, monitor)
    times["render_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_private(out, html)
    times["write_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - started
    times["peak_mb"] = _peak_mb()
    times["size_mb"] = out.stat().st_size / 1e6
    return times


def _child(args: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def end_to_end(as_of: str, out: Path) -> dict[str, float]:
    """`doudi report` as a subprocess: wall time, and the child's peak RSS."""
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("doudi")), "report",
                           "--as-of", as_of, "--out", str(out)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"doudi report failed:\n{done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"total_s": wall, "peak_mb": peak, "size_mb": out.stat().st_size / 1e6}


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", choices=["ours", "alternative"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases:  # the child process
        print(json.dumps(phases(args.as_of, args.phases, args.out)))
        return
    print(f"DOUDI_HOME={os.environ.get('DOUDI_HOME')} as of {args.as_of}, "
          f"{args.repeats} repeat(s), medians")
    with tempfile.TemporaryDirectory(prefix="doudi-bench-report-") as tmp:
        folder = Path(tmp)
        cli = [end_to_end(args.as_of, folder / f"cli-{i}.html") for i in range(args.repeats)]
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "alternative": []}
        for i in range(args.repeats):  # alternate, so load on the machine hits both alike
            for variant in runs:
                runs[variant].append(_child(["--as-of", args.as_of, "--phases", variant,
                                             "--out", str(folder / f"{variant}-{i}.html")]))
    row = _median(cli)
    print(f"doudi report end to end: {row['total_s']:.1f} s, peak {row['peak_mb']:.0f} MB "
          f"(largest child), page {row['size_mb']:.1f} MB")
    keys = ["imports_s", "gather_s", "monitor_s", "render_s", "write_s", "total_s",
            "peak_mb", "size_mb"]
    print("| variant | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for variant, rows in runs.items():
        med = _median(rows)
        print(f"| {variant} | " + " | ".join(f"{med[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
