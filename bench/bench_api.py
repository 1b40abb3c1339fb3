"""Benchmark: the scoring API over HTTP (BentoML) versus `RiskLookup` in-process.

    .venv/bin/python bench/bench_api.py                       # 3,000 households, 500 requests
    .venv/bin/python bench/bench_api.py --out /tmp/api_bench.md   # also write the table there

Builds (or with --reuse, reuses) a workspace under --workdir: a simulated province
(`province.simulate`), then `doudi monthly` as of --as-of (ingest, train, champion,
score, alert store). Then, for the same month and the same requests:

1. in-process `RiskLookup`: construction (model load), first `score` of the month (the
   whole province: scoring table, prediction, tiers, rules, reasons of alerts), then
   --requests sequential single-household `score(as_of, [key], explain=True)` (cache
   hits; households drawn at random from the in-scope ones, so most are not alerted and
   get TreeSHAP on demand) and the same requests from --concurrency threads;
2. the real server (`bentoml serve serving.service:DoudiRisk`, one worker): cold start to
   /readyz, first POST /score of the month, then the same requests over HTTP (httpx,
   keep-alive), sequential and from --concurrency client threads.
Prints a markdown table; --out writes it with the machine's nproc and load average.
Run it twice and keep the second (--reuse): the first run's in-process start is warm.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from doudi.settings import Settings


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def build(args: argparse.Namespace) -> tuple[Path, str]:
    """The workspace home and its tracking URI (built unless --reuse finds it ready)."""
    work = Path(args.workdir).resolve()
    home = work / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    # MLflow artifacts next to the bench's store, not in the project's mlruns/
    os.environ["DOUDI_MLRUNS_DIR"] = str(work / "mlruns")
    ready = home / ".ready"
    if args.reuse and ready.exists():
        return home, uri
    import shutil

    from doudi.months import Month
    from doudi.settings import Settings
    from jobs.monthly import run_monthly
    from province import simulate

    shutil.rmtree(work, ignore_errors=True)
    province = work / "province"
    t = time.perf_counter()
    simulate(
        province,
        settings=Settings(),
        households=args.households,
        months=args.months,
        start=args.start,
        seed=args.seed,
    )
    print(
        f"simulated {args.households} households x {args.months} months in "
        f"{time.perf_counter() - t:.1f}s",
        flush=True,
    )
    t = time.perf_counter()
    settings = Settings(home=home, mlflow_tracking_uri=uri, workers=args.threads)
    summary = run_monthly(settings, Month.parse(args.as_of), province / "raw")
    print(
        f"doudi monthly as of {args.as_of}: {summary.scored} scored, "
        f"{summary.alerts_created} alerts, {summary.model_version} in "
        f"{time.perf_counter() - t:.1f}s",
        flush=True,
    )
    ready.touch()
    return home, uri


def add_workspace_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `build` (bench_api, fuzz_api, load_api and soak_api share a workspace)."""
    ap.add_argument("--households", type=int, default=3000)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--start", default="2023-01")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--as-of", default="2025-12")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "api"))
    ap.add_argument("--reuse", action="store_true", help="reuse a workspace built before")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="LightGBM threads for the month's scoring (DOUDI_WORKERS)",
    )


def add_key_arguments(ap: argparse.ArgumentParser) -> None:
    """--api-key / --no-key: how the bench authenticates to the server (`api_key`)."""
    ap.add_argument(
        "--api-key",
        default=os.environ.get("DOUDI_API_KEY"),
        help="send `Authorization: Bearer <key>` (default $DOUDI_API_KEY; else a platform key "
        "is created in the workspace when this tree has `doudi keys`)",
    )
    ap.add_argument("--no-key", action="store_true", help="send no Authorization header")


def doudi(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """`doudi ARGV...` (this venv's) on the workspace of `settings`, output captured."""
    from serving.server import server_environment

    exe = Path(sys.executable).with_name("doudi")
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "jobs.cli"]
    env = server_environment(settings, os.environ)
    return subprocess.run(
        [*command, *argv], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )


@contextmanager
def api_key(args: argparse.Namespace, settings: Settings, label: str) -> Iterator[str | None]:
    """The key the bench sends: --api-key, none with --no-key, else a new `platform` key
    when this tree has `doudi keys` (created in the workspace, revoked on exit), else none."""
    if args.no_key or args.api_key:
        yield None if args.no_key else str(args.api_key)
        return
    if doudi(settings, "keys", "--help").returncode != 0:
        yield None  # a tree without API keys: the server takes no Authorization header
        return
    made = doudi(settings, "keys", "create", "--role", "platform", "--label", label,
                 "--expires-days", "1")
    # `doudi keys create` prints the key alone on stdout, what it is on stderr
    lines = made.stdout.split()
    if made.returncode != 0 or not lines:
        raise SystemExit(f"doudi keys create failed ({made.returncode}): {made.stderr.strip()}")
    key_id = re.search(r"created API key (\S+?):", made.stderr)
    try:
        yield lines[-1]
    finally:
        if key_id:  # the bench's key lives as long as the bench
            doudi(settings, "keys", "revoke", key_id.group(1))


def auth_headers(key: str | None) -> dict[str, str]:
    """The Authorization header for `key` (none without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        "mean": statistics.fmean(ms),
    }


def table_row(start: str, first_s: float, seq: dict[str, float], rps: float,
        concurrent: dict[str, float]) -> dict[str, str]:
    """One line of the result table."""
    return {"start": start, "first": f"{first_s:.2f} s", "p50": f"{seq['p50']:.2f}",
            "p99": f"{seq['p99']:.2f}", "rps": f"{rps:.0f}",
            "cp50": f"{concurrent['p50']:.2f}", "cp99": f"{concurrent['p99']:.2f}"}


def timed_sequential(call: Callable[[str], None], keys: list[str]) -> list[float]:
    out = []
    for key in keys:
        t = time.perf_counter()
        call(key)
        out.append(time.perf_counter() - t)
    return out


def timed_concurrent(
    make_call: Callable[[], Callable[[str], None]], keys: list[str], clients: int
) -> tuple[float, list[float]]:
    """(requests per second, latencies) with `clients` threads sharing the key list."""
    shares = [keys[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    calls = [make_call() for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        start.wait()
        latencies[i] = timed_sequential(calls[i], shares[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return len(keys) / wall, [x for part in latencies for x in part]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workspace_arguments(ap)
    add_key_arguments(ap)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    load_before = load_average()
    home, uri = build(args)  # with --reuse: imports nothing heavy
    import httpx

    from doudi.months import Month
    from doudi.settings import Settings

    t = time.perf_counter()
    from serving.api import RiskLookup

    imports = time.perf_counter() - t
    settings = Settings(home=home, mlflow_tracking_uri=uri, workers=args.threads)
    rows: dict[str, dict[str, str]] = {}

    # -- in process ---------------------------------------------------------------------
    t = time.perf_counter()
    lookup = RiskLookup(settings)
    init = time.perf_counter() - t
    t = time.perf_counter()
    month = Month.parse(args.as_of)
    first = lookup.score(month)
    first_s = time.perf_counter() - t
    scored = lookup.scored_frame(month)
    rng = random.Random(0)
    keys = rng.choices(scored["household_key"].tolist(), k=args.requests)
    alerted_share = scored.set_index("household_key").loc[keys, "alerted"].mean()

    def local(key: str) -> None:
        lookup.score(month, [key], explain=True)

    for key in keys[:20]:  # warm-up
        local(key)
    seq = stats(timed_sequential(local, keys))
    rps, lat = timed_concurrent(lambda: local, keys, args.concurrency)
    rows["in-process RiskLookup"] = table_row(
        f"{imports + init:.1f} s (imports {imports:.1f} s + model load {init:.1f} s)",
        first_s, seq, rps, stats(lat))
    lookup.close()
    print(
        f"in-process done: {first.in_scope} in scope, {first.alerted} alerted; "
        f"{alerted_share:.0%} of the sampled requests are alerted households",
        flush=True,
    )

    # -- over HTTP ------------------------------------------------------------------------
    from doudi.settings import Settings
    from serving.server import running_server

    settings = Settings(home=home, mlflow_tracking_uri=uri)
    try:
        with api_key(args, settings, "bench_api") as key, running_server(
            settings, home / "bench_server.log", ready_timeout=180,
            extra_env={"DOUDI_WORKERS": str(args.threads)},
        ) as server:
            headers = auth_headers(key)
            base = server.base_url
            with httpx.Client(base_url=base, timeout=300, headers=headers) as http:
                t = time.perf_counter()
                r = http.post("/score", json={"as_of": args.as_of})
                first_http = time.perf_counter() - t
                r.raise_for_status()
                assert r.json()["alerted"] == first.alerted

                def remote(key: str, client: httpx.Client = http) -> None:
                    resp = client.post("/score", json={
                        "as_of": args.as_of, "household_keys": [key], "explain": True})
                    resp.raise_for_status()

                for key in keys[:20]:
                    remote(key)
                seq = stats(timed_sequential(remote, keys))

            clients: list[httpx.Client] = []

            def make_remote() -> Callable[[str], None]:
                client = httpx.Client(base_url=base, timeout=60, headers=headers)
                clients.append(client)
                return lambda key: remote(key, client)

            rps, lat = timed_concurrent(make_remote, keys, args.concurrency)
            for client in clients:
                client.close()
            rows["HTTP (bentoml serve, 1 worker)"] = table_row(
                f"{server.ready_seconds:.1f} s (to /readyz)", first_http, seq, rps, stats(lat))
    except RuntimeError as err:
        raise SystemExit(str(err)) from None

    load_after = load_average()
    c = args.concurrency
    lines = [
        f"| path | start | first /score of the month ({first.in_scope:,} households) | "
        f"single-household score, explain=true: p50 / p99 ms (sequential, n={args.requests}) "
        f"| {c} concurrent clients: req/s | {c} clients: p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['start']} | {row['first']} | {row['p50']} / {row['p99']} "
            f"| {row['rps']} | {row['cp50']} / {row['cp99']} |"
        )
    command = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "bench/bench_api.py", *sys.argv[1:]]
    )
    notes = [
        "",
        f"Command: `{command}`",
        f"Machine: nproc {os.cpu_count()}, {platform.platform()}, Python "
        f"{platform.python_version()}; load average (1, 5, 15 min) {load_before} before, "
        f"{load_after} after.",
        f"Workspace: {args.households:,} simulated households, {args.months} months from "
        f"{args.start} (seed {args.seed}), `doudi monthly` as of {args.as_of}: "
        f"{first.in_scope:,} in scope, {first.alerted} alerted; LightGBM threads "
        f"{args.threads}; requests: households drawn at random from the in-scope ones "
        f"({alerted_share:.0%} alerted, the rest explained on demand).",
        "HTTP latencies include the Python client (httpx, keep-alive) and BentoML's access log.",
    ]
    text = "\n".join(lines + notes) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(
            "# Scoring API benchmark (bench/bench_api.py)\n\n" + text, encoding="utf-8"
        )
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
