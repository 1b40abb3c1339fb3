"""Fuzz the scoring API with schemathesis, against a real server, for a bounded time.

    .venv/bin/python bench/fuzz_api.py                          # ~3 minutes of fuzzing
    .venv/bin/python bench/fuzz_api.py --reuse --seconds 90     # the same workspace, shorter
    .venv/bin/python bench/fuzz_api.py --home /srv/doudi        # an existing workspace

schemathesis is a dev dependency (the lock's dev group: .venv/bin/schemathesis); another
install can be named with --schemathesis or $SCHEMATHESIS. The workspace is
bench/bench_api.py's (a simulated province after `doudi monthly`; built unless --reuse
finds it, or given with --home). The server is `bentoml serve serving.service:DoudiRisk`
(`running_server`), its month warmed by one /score. With `doudi keys` in the tree, a
`platform` key is created in the workspace and every request, schemathesis's too, carries
`Authorization: Bearer <key>` (or --api-key / --no-key; bench_api.api_key): requests that
reach the endpoints, not only the 401 in front of them. schemathesis then reads /docs.json
and runs its phases (examples, coverage, fuzzing) on every endpoint for at most --seconds
(and --max-examples per operation, when given) with the `not_a_server_error` check.

The 5xx count does not depend on schemathesis's own report: it is read from the server's
/metrics (`bentoml_service_request_total` by endpoint and status) before and after, so
every request it sent is counted, whatever schemathesis thought of the answer. Also
checked after the run: the server log has no traceback, and /metrics has no label for a
path outside the known routes. Exit status 1 when any 5xx was answered.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# bench_api (this script's folder is on the path) puts the project on it and telemetry off
from bench_api import (
    add_key_arguments,
    add_workspace_arguments,
    api_key,
    auth_headers,
    build,
)

_SAMPLE = re.compile(
    r"^\w+_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+]+)$", re.MULTILINE
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def request_counts(metrics: str) -> Counter[tuple[str, str]]:
    """(endpoint, status) -> requests answered, from BentoML's request counter."""
    counts: Counter[tuple[str, str]] = Counter()
    for found in _SAMPLE.finditer(metrics):
        labels = dict(_LABEL.findall(found["labels"]))
        key = (labels.get("endpoint", "?"), labels.get("http_response_code", "?"))
        counts[key] += int(float(found["value"]))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=180, help="schemathesis's time budget")
    ap.add_argument("--max-examples", type=int, default=None, help="per operation")
    ap.add_argument("--fuzz-seed", type=int, default=None, help="schemathesis's seed")
    ap.add_argument("--workers", default="2", help="schemathesis's concurrent workers")
    ap.add_argument(
        "--schemathesis",
        default=os.environ.get("SCHEMATHESIS", str(Path(sys.executable).with_name("schemathesis"))),
    )
    ap.add_argument("--home", type=Path, default=None, help="an existing workspace")
    ap.add_argument("--tracking-uri", default=None, help="with --home: its MLflow store")
    add_workspace_arguments(ap)
    add_key_arguments(ap)
    args = ap.parse_args()
    if not Path(args.schemathesis).is_file():
        sys.exit(
            f"no schemathesis at {args.schemathesis}: `make install` (the dev group) or "
            "--schemathesis PATH"
        )

    import httpx

    from doudi.settings import Settings
    from serving.server import running_server

    if args.home is not None:
        home = args.home.resolve()
        uri = args.tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
    else:
        home, uri = build(args)
    settings = Settings(home=home, mlflow_tracking_uri=uri)
    bounds = [] if args.max_examples is None else ["--max-examples", str(args.max_examples)]
    if args.fuzz_seed is not None:
        bounds += ["--seed", str(args.fuzz_seed)]
    log = home / "fuzz_server.log"
    with api_key(args, settings, "bench_fuzz") as key, running_server(
        settings, log, ready_timeout=180, extra_env={"DOUDI_WORKERS": str(args.threads)}
    ) as server:
        headers = auth_headers(key)
        # the key travels on schemathesis's command line: the bench's own, revoked after
        header_args = [a for k, v in headers.items() for a in ("--header", f"{k}: {v}")]
        base = server.base_url
        with httpx.Client(base_url=base, timeout=300, headers=headers) as http:
            from doudi.warehouse import latest_delivered_month

            month = latest_delivered_month(settings.warehouse_dir)
            warm = http.post("/score", json={"as_of": str(month), "limit": 1})
            print(
                f"server ready in {server.ready_seconds:.1f} s; /score {month}: {warm.status_code}",
                flush=True,
            )
            before = request_counts(http.get("/metrics").text)
            started = time.perf_counter()
            run = subprocess.run(
                [
                    args.schemathesis,
                    "run",
                    f"{base}/docs.json",
                    "--checks",
                    "not_a_server_error",
                    "--max-time",
                    str(args.seconds),
                    "--workers",
                    str(args.workers),
                    "--request-timeout",
                    "300",
                    "--suppress-health-check",
                    "all",
                    "--no-color",
                    *bounds,
                    *header_args,
                ],
                capture_output=True,
                text=True,
                check=False,
                cwd=home,  # its run cache (.schemathesis/) goes to the workspace, not the tree
            )
            seconds = time.perf_counter() - started
            metrics = http.get("/metrics").text
    after = request_counts(metrics)
    # every route counts (a 5xx anywhere fails), except /metrics: the script's own reads
    api = {key: n for key, n in (after - before).items() if key[0] != "/metrics"}
    by_status: Counter[str] = Counter()
    for (_, status), n in api.items():
        by_status[status] += n
    errors = sum(n for status, n in by_status.items() if status.startswith("5"))
    labels = sorted({endpoint for endpoint, _ in after})
    text = log.read_text(encoding="utf-8", errors="replace")
    summary = [line for line in run.stdout.splitlines() if line.strip()][-12:]
    print("\n".join(summary))
    print(f"\nschemathesis exit {run.returncode} after {seconds:.0f} s")
    print(
        f"requests answered (every route but /metrics): {sum(api.values())}; by status: "
        + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()))
    )
    print(f"5xx answers: {errors}")
    print(f"/metrics endpoint labels: {', '.join(labels)}")
    print(f"tracebacks in the server log: {text.count('Traceback')}")
    if run.returncode not in (0, 1):
        print(run.stderr[-3000:] or run.stdout[-3000:], file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
