"""Soak: the scoring API under constant load for 10 minutes; memory flat, zero errors.

    .venv/bin/python bench/soak_api.py                    # 600 s at 100 requests/s
    .venv/bin/python bench/soak_api.py --reuse --seconds 120 --rate 50   # a shorter look

Not in CI (it takes the machine for ten minutes). Loopback only and bounded: `doudi
serve`'s server (`bentoml serve serving.service:DoudiRisk`) on bench/bench_api.py's
workspace (built unless --reuse finds it), the month warmed by one /score, then --rate
requests per second for --seconds, open loop (bench/load_api.py's generator), cycling
through a fixed mix: single-household /score with reasons (most), /explain, a 100-household
/score, /model and /alerts. Every --interval seconds the server's resident memory (VmRSS of
its whole process tree) is sampled, with the requests answered and failed so far.

Verdict "flat" when the memory at the end exceeds the first sample taken after --settle
seconds (default: half the run) by less than --max-growth percent. The first half is the
heap settling: on the 3,000-household workspace the server grows from about 545 to 690 MiB
over the first five minutes at 100/s and then levels off (+1.5% over the next five); a
leak does not level off. At the defaults (100/s for 10 minutes, 3%) a leak of about 0.7 kB
per request shows. The server's open file descriptors are sampled too (a socket or file
leak). Exit status 1 when it is not flat or any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

# bench_api (this script's folder is on the path) puts the project on it and telemetry off
from bench_api import (
    add_key_arguments,
    add_workspace_arguments,
    api_key,
    auth_headers,
    build,
    load_average,
)
from load_api import (
    Outcome,
    Request,
    in_scope_keys,
    open_loop,
    percentile,
    quiet_gc,
    rss_bytes,
    score_body,
    server_pids,
    session,
    started,
)

MIB = 1024 * 1024


def request_mix(as_of: str, keys: list[str], seed: int) -> list[Request]:
    """100 requests in a fixed shuffled order: 90 single-household /score with reasons,
    5 /explain, 2 /score of 100 households, 2 /alerts, 1 /model."""
    rng = random.Random(seed)
    mix: list[Request] = [("/score", score_body(as_of, [rng.choice(keys)])) for _ in range(90)]
    mix += [
        ("/explain", json.dumps({"as_of": as_of, "household_key": rng.choice(keys)}).encode())
        for _ in range(5)
    ]
    mix += [("/score", score_body(as_of, rng.sample(keys, min(100, len(keys))))) for _ in range(2)]
    mix += [("/alerts", b'{"limit": 50}')] * 2 + [("/model", b"{}")]
    rng.shuffle(mix)
    return mix


Sample = tuple[float, int, int, int, int]  # seconds, RSS bytes, open fds, answered, failed


def open_fds(pids: list[int]) -> int:
    """File descriptors (sockets included) the processes hold open (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            total += sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
    return total


def sample(pid: int, started_at: float, outcomes: list[Outcome]) -> Sample:
    """Now: seconds since the load began, the server's RSS and open fds, requests so far."""
    pids = server_pids(pid)
    failed = sum(not o.ok for o in outcomes)
    return (
        time.perf_counter() - started_at,
        rss_bytes(pids),
        open_fds(pids),
        len(outcomes) - failed,
        failed,
    )


async def soak(
    base: str, pid: int, args: argparse.Namespace, headers: dict[str, str], mix: list[Request]
) -> tuple[list[Sample], list[Outcome]]:
    """Run the load and, beside it, sample the server every --interval seconds."""
    outcomes: list[Outcome] = []
    samples: list[Sample] = []
    async with session(headers, args.timeout) as http:
        async with http.post(base + "/score", data=json.dumps({"as_of": args.as_of})) as r:
            if r.status != 200:
                raise SystemExit(f"first /score answered {r.status}: {await r.text()}")
        started_at = time.perf_counter()

        async def sampler() -> None:
            while True:
                samples.append(sample(pid, started_at, outcomes))
                t = samples[-1]
                print(
                    f"{t[0]:6.0f} s  RSS {t[1] / MIB:7.1f} MiB  open fds {t[2]:5d}  "
                    f"answered {t[3]:7d}  failed {t[4]}",
                    flush=True,
                )
                await asyncio.sleep(args.interval)

        watch = asyncio.create_task(sampler())
        await open_loop(http, base, mix, args.rate, args.seconds, out=outcomes)
        watch.cancel()
    samples.append(sample(pid, started_at, outcomes))
    return samples, outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workspace_arguments(ap)
    add_key_arguments(ap)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="memory growth is counted from the first sample after this many "
        "seconds (default: half of --seconds)",
    )
    ap.add_argument("--max-growth", type=float, default=3.0, help="percent; above: not flat")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = ap.parse_args()
    if args.settle is None:
        args.settle = args.seconds / 2

    load_before = load_average()
    home, uri = build(args)
    from doudi.settings import Settings

    settings = Settings(home=home, mlflow_tracking_uri=uri)
    keys = in_scope_keys(settings, args.as_of)
    mix = request_mix(args.as_of, keys, args.seed)
    quiet_gc()
    try:
        with (
            api_key(args, settings, "bench_soak") as key,
            started("bentoml", settings, home / "soak_server.log", args.threads) as server,
        ):
            samples, outcomes = asyncio.run(
                soak(server.base_url, server.process.pid, args, auth_headers(key), mix)
            )
            log = server.log_path.read_text(encoding="utf-8", errors="replace")
    except RuntimeError as err:
        raise SystemExit(str(err)) from None

    rss = [s[1] / MIB for s in samples]
    settled = next((s[1] / MIB for s in samples if s[0] >= args.settle), rss[0])
    end, top = rss[-1], max(rss)
    growth = (end - settled) / settled * 100
    errors: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            kind = o.error or f"HTTP {o.status}"
            errors[kind] = errors.get(kind, 0) + 1
    latency = [(o.done - o.scheduled) * 1000 for o in outcomes if o.status] or [float("nan")]
    flat = growth < args.max_growth
    print()
    print(
        f"soak: {len(outcomes):,} requests at {args.rate:g}/s for {args.seconds:g} s "
        f"(Authorization header: {'yes' if key else 'no'}); load average {load_before} "
        f"before, {load_average()} after"
    )
    kinds = f" {errors}" if errors else ""
    print(
        f"errors: {sum(errors.values())}{kinds}; tracebacks in the server log: "
        f"{log.count('Traceback')}"
    )
    print(
        f"latency from scheduled send: p50 {statistics.median(latency):.1f} ms, "
        f"p99 {percentile(latency, 99):.1f} ms, max {max(latency):.1f} ms"
    )
    print(
        f"server RSS: start {rss[0]:.1f} MiB, after {args.settle:g} s {settled:.1f} MiB, "
        f"end {end:.1f} MiB, max {top:.1f} MiB; growth after settling {growth:+.2f}% "
        f"(bound {args.max_growth:g}%)"
    )
    print(
        f"server open fds: start {samples[0][2]}, end {samples[-1][2]}, "
        f"max {max(s[2] for s in samples)}"
    )
    verdict = "flat" if flat else "GROWING"
    print(f"memory: {verdict}; errors: {'none' if not errors else 'SOME'}")
    sys.exit(0 if flat and not errors else 1)


if __name__ == "__main__":
    main()
