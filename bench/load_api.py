"""Load: the scoring API at a fixed request rate, BentoML against the same handler in FastAPI.

    .venv/bin/python bench/load_api.py                           # builds the workspace if needed
    .venv/bin/python bench/load_api.py --reuse --out /tmp/load.md
    .venv/bin/python bench/load_api.py --reuse --rate 100 --seconds 60 --batches 10

Loopback only and bounded: every phase sends a fixed number of requests and waits at most
--timeout seconds for the last answers. The workspace is bench/bench_api.py's (a simulated
province after `doudi monthly`; built unless --reuse finds it). Then, for each server in
turn (never both at once):

1. `doudi serve`'s server (`bentoml serve serving.service:DoudiRisk`, `running_server`);
2. the same handler (`serving.api.RiskLookup`, with the service's own `ScoreRequest` and
   `parse_as_of`) in a minimal FastAPI app under uvicorn, one process, its thread pool
   capped at the BentoML service's `threads`: what BentoML costs on top of the handler.

Each gets: the first /score of the month (it scores the whole province), --warmup seconds
of load (discarded), then open-loop load: single-household POST /score with reasons
(`explain: true`, households drawn at random from the in-scope ones, so most are explained
on demand) sent at --rate per second for --seconds, each at its scheduled time whether or
not earlier ones have been answered (aiohttp, one event loop, keep-alive pool). Latency is
measured from the *scheduled* send time, not from when the request left: a stalled server
or a late generator shows up as latency instead of hiding it (no coordinated omission).
The table also gives the generator's own lag (sent minus scheduled) and CPU, to show it
was not the bottleneck, and the server's CPU per request (from /proc, its whole process
tree). Then --batches sequential requests of --batch-size households each: households/s.

With `doudi keys` in the tree, a `platform` key is created in the workspace and sent as
`Authorization: Bearer <key>` (or pass --api-key / --no-key; bench_api.api_key). The
FastAPI reference has no access control: it ignores the header.

Exit status 1 when any request failed (transport error or a status other than 200).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# bench_api (this script's folder is on the path) puts the project on it and telemetry off
from bench_api import (
    add_key_arguments,
    add_workspace_arguments,
    api_key,
    auth_headers,
    build,
    load_average,
)

if TYPE_CHECKING:
    from doudi.settings import Settings
    from serving.server import RunningServer

GOAL_P99_MS = 50.0  # issue 15: single household with reasons, 100 requests/s, 2 cores


# -- the server's processes ----------------------------------------------------------------
def server_pids(pid: int) -> list[int]:
    """The server process and every process below it (BentoML's worker runs in a session
    of its own, but is still the arbiter's child)."""
    from serving.server import descendants

    return [pid, *(child for child, _ in descendants(pid))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (gone ones count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / ticks


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of these processes (VmRSS, summed; gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


# -- the load generator ----------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """One request: loop times (seconds) it was due, sent and answered; status 0 when it
    failed in transport (`error` names the exception)."""

    scheduled: float
    sent: float
    done: float
    status: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


Request = tuple[str, bytes]  # (path, JSON body)


def session(headers: dict[str, str], timeout: float) -> Any:
    """An aiohttp client session: keep-alive pool, JSON bodies, the Authorization header."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"Content-Type": "application/json", **headers},
    )


async def _send(http: Any, url: str, body: bytes, scheduled: float, out: list[Outcome]) -> None:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        async with http.post(url, data=body) as response:
            await response.read()
            status = response.status
        out.append(Outcome(scheduled, sent, loop.time(), status))
    except Exception as err:  # a transport failure is an error to count, not a crash
        out.append(Outcome(scheduled, sent, loop.time(), 0, type(err).__name__))


async def open_loop(
    http: Any,
    base: str,
    requests: Sequence[Request],
    rate: float,
    seconds: float,
    out: list[Outcome] | None = None,
    drain: float = 30.0,
) -> list[Outcome]:
    """Send `rate * seconds` requests (cycling through `requests`), request i at start +
    i / rate whatever happened to the earlier ones; wait at most `drain` seconds after the
    last send for the answers still out (unanswered ones count as errors). Outcomes are
    appended to `out` as they complete (a caller may watch it)."""
    loop = asyncio.get_running_loop()
    out = [] if out is None else out
    total = math.floor(rate * seconds)
    start = loop.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        path, body = requests[i % len(requests)]
        task = asyncio.create_task(_send(http, base + path, body, due, out))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain)
        for task in pending:
            task.cancel()
        if pending:
            now = loop.time()
            out.extend(Outcome(now, now, now, 0, "unanswered") for _ in pending)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class LoadResult:
    sent: int
    errors: int
    error_kinds: dict[str, int]
    p50: float  # ms from the scheduled send time to the answer
    p99: float
    max: float
    service_p50: float  # ms from the actual send to the answer
    service_p99: float
    lag_p99: float  # ms the generator sent late
    lag_max: float
    server_cpu_ms: float  # server CPU per request
    client_cpu_share: float  # the generator's CPU seconds per wall second
    achieved_rate: float


def summarise(
    outcomes: Sequence[Outcome], server_cpu: float, client_cpu: float, wall: float
) -> LoadResult:
    """Latency percentiles (ms) and error counts of one open-loop phase."""
    answered = [o for o in outcomes if o.status]
    kinds: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            kind = o.error or f"HTTP {o.status}"
            kinds[kind] = kinds.get(kind, 0) + 1
    latency = [(o.done - o.scheduled) * 1000 for o in answered] or [math.nan]
    service = [(o.done - o.sent) * 1000 for o in answered] or [math.nan]
    lag = [(o.sent - o.scheduled) * 1000 for o in outcomes] or [math.nan]
    return LoadResult(
        sent=len(outcomes),
        errors=sum(kinds.values()),
        error_kinds=kinds,
        p50=percentile(latency, 50),
        p99=percentile(latency, 99),
        max=max(latency),
        service_p50=percentile(service, 50),
        service_p99=percentile(service, 99),
        lag_p99=percentile(lag, 99),
        lag_max=max(lag),
        server_cpu_ms=server_cpu / max(1, len(answered)) * 1000,
        client_cpu_share=client_cpu / wall,
        achieved_rate=len(outcomes) / wall,
    )


def score_body(as_of: str, keys: Sequence[str]) -> bytes:
    """POST /score's body for these households, with reasons."""
    return json.dumps({"as_of": as_of, "household_keys": list(keys), "explain": True}).encode()


# -- the FastAPI reference server -------------------------------------------------------------
def fastapi_app() -> Any:
    """POST /score on `RiskLookup` with the service's own request model and month parsing,
    and GET /readyz; JSON answers serialised by pydantic, as the service's are."""
    from contextlib import asynccontextmanager

    import anyio.to_thread
    from fastapi import FastAPI, HTTPException, Response

    from doudi.settings import Settings
    from serving.api import BadRequestError, NotFoundError, RiskLookup
    from serving.service import DoudiRisk, ScoreRequest, parse_as_of

    lookup = RiskLookup(Settings())  # loaded before uvicorn listens: ready once it answers
    threads = int(getattr(DoudiRisk, "config", {}).get("threads", 1))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Sync endpoints run in anyio's pool (40 threads by default); BentoML runs ours in
        # `threads` threads: the same number here, so the two differ in framework only.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield
        lookup.close()

    app = FastAPI(lifespan=lifespan)

    def score(request: ScoreRequest) -> Response:
        try:
            answer = lookup.score(
                parse_as_of(request.as_of),
                request.household_keys,
                explain=request.explain,
                limit=request.limit,
            )
        except BadRequestError as err:
            raise HTTPException(400, str(err)) from None
        except NotFoundError as err:
            raise HTTPException(404, str(err)) from None
        return Response(answer.model_dump_json(), media_type="application/json")

    # FastAPI reads the body model from the annotations, which this module's
    # `from __future__ import annotations` turns into names it cannot resolve: real types.
    score.__annotations__ = {"request": ScoreRequest, "return": Response}
    app.post("/score")(score)

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app


def fastapi_command(host: str, port: int) -> list[str]:
    """This script as the FastAPI reference server (for `running_server(command=...)`)."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-fastapi",
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve_fastapi(host: str, port: int) -> None:
    import uvicorn

    from doudi.registry import disable_telemetry

    disable_telemetry()
    uvicorn.run(fastapi_app(), host=host, port=port, log_level="info")


# -- one server, all phases --------------------------------------------------------------------
@dataclass(frozen=True)
class ServerResult:
    name: str
    ready_seconds: float
    first_seconds: float
    in_scope: int
    alerted: int
    load: LoadResult
    batch_seconds: list[float]
    batch_errors: int
    batch_size: int
    tracebacks: int


@contextmanager
def started(kind: str, settings: Settings, log: Path, threads: int) -> Iterator[RunningServer]:
    """The BentoML server (`doudi serve`) or the FastAPI reference, ready."""
    from serving.server import running_server, server_command

    command = server_command if kind == "bentoml" else fastapi_command
    with running_server(
        settings, log, ready_timeout=180, command=command, extra_env={"DOUDI_WORKERS": str(threads)}
    ) as server:
        yield server


async def exercise(
    server: RunningServer,
    name: str,
    args: argparse.Namespace,
    headers: dict[str, str],
    keys: Sequence[str],
) -> ServerResult:
    """First /score of the month, warm-up, open-loop load, then batches."""
    base = server.base_url
    rng = random.Random(args.seed)
    singles = [("/score", score_body(args.as_of, [k])) for k in rng.choices(keys, k=5000)]
    async with session(headers, args.timeout) as http:
        t = time.perf_counter()
        async with http.post(base + "/score", data=json.dumps({"as_of": args.as_of})) as r:
            if r.status != 200:
                raise SystemExit(f"{name}: first /score answered {r.status}: {await r.text()}")
            first = json.loads(await r.read())
        first_seconds = time.perf_counter() - t
        await open_loop(http, base, singles, args.rate, args.warmup)
        pids = server_pids(server.process.pid)
        cpu0, client0, wall0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
        outcomes = await open_loop(http, base, singles, args.rate, args.seconds)
        wall = time.perf_counter() - wall0
        if args.trace is not None:
            epoch = time.time() - asyncio.get_running_loop().time()  # loop time -> Unix time
            with args.trace.open("a", encoding="utf-8") as trace:
                trace.writelines(
                    f"{name.split()[0].strip('`')},{o.scheduled + epoch:.4f},"
                    f"{(o.done - o.scheduled) * 1000:.2f},{o.status}\n"
                    for o in outcomes
                )
        load = summarise(outcomes, cpu_seconds(pids) - cpu0, time.process_time() - client0, wall)
        print(
            f"{name}: {load.sent} requests, {load.errors} errors, p50 {load.p50:.1f} ms, "
            f"p99 {load.p99:.1f} ms, max {load.max:.1f} ms",
            flush=True,
        )
        batch_seconds, batch_errors = [], 0
        for _ in range(args.batches):
            body = score_body(args.as_of, rng.sample(list(keys), min(args.batch_size, len(keys))))
            t = time.perf_counter()
            try:
                async with http.post(base + "/score", data=body) as r:
                    await r.read()
                    batch_errors += r.status != 200
            except Exception as err:  # counted and reported, like the open-loop phase's
                print(f"{name}: a batch failed: {type(err).__name__}: {err}", flush=True)
                batch_errors += 1
            batch_seconds.append(time.perf_counter() - t)
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    return ServerResult(
        name,
        server.ready_seconds,
        first_seconds,
        int(first["in_scope"]),
        int(first["alerted"]),
        load,
        batch_seconds,
        batch_errors,
        min(args.batch_size, len(keys)),
        text.count("Traceback"),
    )


def quiet_gc() -> None:
    """Keep the generator's own garbage collections short: everything built so far (pandas,
    the key list) moves out of the collector's reach, so a full collection during the load
    (tens of ms with the data stack imported) does not make requests late."""
    import gc

    gc.collect()
    gc.freeze()


def in_scope_keys(settings: Settings, as_of: str) -> list[str]:
    """The month's in-scope household pseudonyms (the rows the server scores)."""
    import features
    from doudi.months import Month

    table = features.scoring_table(settings.warehouse_dir, Month.parse(as_of), settings)
    return sorted(table["household_key"].astype(str))


# -- the report ----------------------------------------------------------------------------------
def report(
    results: list[ServerResult],
    args: argparse.Namespace,
    keyed: bool,
    load_before: str,
    load_after: str,
) -> str:
    """The markdown table, the overhead ratios and how the figures were taken."""
    rate = f"{args.rate:g}/s × {args.seconds:g} s"
    lines = [
        f"| server | start to ready | first /score of the month | {rate}: sent, errors | "
        "p50 / p99 / max ms (from scheduled send) | service time p50 / p99 ms | "
        f"server CPU per request | batches of {results[0].batch_size:,}: households/s "
        "(batch p50 / max s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r.batch_seconds
        hh = r.batch_size * len(b) / sum(b) if b else math.nan
        lines.append(
            f"| {r.name} | {r.ready_seconds:.1f} s | {r.first_seconds:.2f} s | "
            f"{r.load.sent:,}, {r.load.errors} | **{r.load.p50:.1f} / {r.load.p99:.1f}** / "
            f"{r.load.max:.1f} | {r.load.service_p50:.1f} / {r.load.service_p99:.1f} | "
            f"{r.load.server_cpu_ms:.2f} ms | {hh:,.0f} ({percentile(b, 50):.2f} / "
            f"{max(b):.2f}) |"
        )
    bento, ref = results[0], results[-1]
    notes = [""]
    if len(results) == 2:

        def hh_rate(r: ServerResult) -> float:
            return r.batch_size * len(r.batch_seconds) / sum(r.batch_seconds)

        notes.append(
            "BentoML / FastAPI: p50 "
            f"{bento.load.p50 / ref.load.p50:.2f}×, p99 {bento.load.p99 / ref.load.p99:.2f}×, "
            f"server CPU per request {bento.load.server_cpu_ms / ref.load.server_cpu_ms:.2f}×, "
            f"batch throughput {hh_rate(bento) / hh_rate(ref):.2f}×."
        )
    verdict = "met" if bento.load.p99 <= GOAL_P99_MS and bento.load.errors == 0 else "missed"
    notes.append(
        f"Goal (issue 15) p99 ≤ {GOAL_P99_MS:g} ms with no error at {args.rate:g}/s: "
        f"**{verdict}** (p99 {bento.load.p99:.1f} ms, {bento.load.errors} errors)."
    )
    for r in results:
        if r.load.error_kinds or r.batch_errors or r.tracebacks:
            notes.append(
                f"{r.name}: errors {r.load.error_kinds}, batch errors "
                f"{r.batch_errors}, tracebacks in its log {r.tracebacks}."
            )
    command = " ".join(
        shlex.quote(a)
        for a in [".venv/bin/python", "bench/load_api.py", *sys.argv[1:]]
        if not a.startswith("--api-key")
    )
    notes += [
        "",
        f"Command: `{command}` (Authorization header: {'yes' if keyed else 'no'}).",
        f"Machine: nproc {os.cpu_count()}, {platform.platform()}, Python "
        f"{platform.python_version()}; load average (1, 5, 15 min) {load_before} before, "
        f"{load_after} after.",
        f"Workspace: {args.households:,} simulated households, {args.months} months from "
        f"{args.start} (seed {args.seed}), `doudi monthly` as of {args.as_of}: "
        f"{bento.in_scope:,} in scope, {bento.alerted} alerted (so about "
        f"{bento.alerted / bento.in_scope:.0%} of the random requests find their reasons "
        "stored; the rest are explained on demand, TreeSHAP for that row).",
        "Load generator: this script, one asyncio loop, aiohttp keep-alive pool, requests "
        "sent at fixed times (open loop); latency from the scheduled send time. Its lag "
        + ", ".join(
            f"{r.name} p99 {r.load.lag_p99:.1f} / max {r.load.lag_max:.1f} ms" for r in results
        )
        + "; its CPU "
        + ", ".join(f"{r.load.client_cpu_share:.0%} of a core" for r in results)
        + "; achieved rate "
        + ", ".join(f"{r.load.achieved_rate:.1f}/s" for r in results)
        + ".",
        "Server CPU per request: user + system CPU of the server's process tree (/proc) "
        "over the timed phase, divided by the answered requests.",
    ]
    return "\n".join(lines + notes) + "\n"


def main() -> None:
    if "--serve-fastapi" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--serve-fastapi", action="store_true")
        ap.add_argument("--host", default="127.0.0.1")
        ap.add_argument("--port", type=int, required=True)
        served = ap.parse_args()
        serve_fastapi(served.host, served.port)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workspace_arguments(ap)
    add_key_arguments(ap)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="the timed open-loop phase")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load, discarded")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    ap.add_argument("--only-bentoml", action="store_true", help="skip the FastAPI reference")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="append each timed request (server, due Unix time, ms, status) as CSV",
    )
    args = ap.parse_args()

    load_before = load_average()
    home, uri = build(args)
    from doudi.settings import Settings

    settings = Settings(home=home, mlflow_tracking_uri=uri)
    keys = in_scope_keys(settings, args.as_of)
    quiet_gc()
    kinds = [("bentoml", "`doudi serve` (BentoML 1.4, 1 worker)")]
    if not args.only_bentoml:
        kinds.append(("fastapi", "same handler, FastAPI + uvicorn"))
    results = []
    with api_key(args, settings, "bench_load") as key:
        for kind, name in kinds:
            try:
                with started(kind, settings, home / f"load_{kind}.log", args.threads) as server:
                    results.append(
                        asyncio.run(exercise(server, name, args, auth_headers(key), keys))
                    )
            except RuntimeError as err:
                raise SystemExit(str(err)) from None
    text = report(results, args, key is not None, load_before, load_average())
    print(text)
    if args.out is not None:
        args.out.write_text(
            "# Scoring API under load (bench/load_api.py)\n\n" + text, encoding="utf-8"
        )
        print(f"written to {args.out}")
    failed = any(r.load.errors or r.batch_errors for r in results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
