"""Crash `doudi monthly` at several points; the rerun must end where an uninterrupted run does.

    .venv/bin/python bench/crash_monthly.py                          # 2,000 households, all points
    .venv/bin/python bench/crash_monthly.py --points register,export-committed --world DIR

A reference workspace runs `doudi monthly` once, uninterrupted. For each kill point a fresh
workspace (same pseudonym key, so pseudonyms, data fingerprints and sheets compare) runs it
in a child process that SIGKILLs itself (a real `kill -9`: no finally, no atexit) at that
point; then `.venv/bin/doudi monthly` runs again, normally, and the two workspaces' final
states are compared: alerts (everything but ids and clocks), the export audit, the export
files (names without their time stamp and token), registry versions (as_of, data
fingerprint, gate decision), aliases and champion history, warehouse row counts. The
`features` point also checks that no pool worker outlives the killed parent.
tests/hostile/test_concurrency_and_crashes.py runs a short version (marked slow).
Exit 1 when any point ends differently. Bounded: every child has a timeout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))  # one pseudonym key for every workspace of a comparison
AS_OF = "2025-06"
WORLD = {"households": 2000, "months": 30, "start": "2023-01", "seed": 11}
TIMEOUT = 900.0

# point -> (what is interrupted, the hook the child installs)
KILL_POINTS: dict[str, str] = {
    "ingest": "ingest: journal written, no file moved into the warehouse yet",
    "mlflow-init": "MLflow creating its tables (the store's migrations)",
    "features": "feature building: a pool worker kills the parent mid-task",
    "register": "registration: version created, aliases not yet set",
    "alerts": "scoring: alerts stored, nothing exported",
    "export-staged": "export: first township's sheets staged, not audited",
    "export-committed": "export: first township audited, sheets not yet published",
}
_STAMP = re.compile(r"_\d{8}T\d{6}(?:_[0-9a-f]{6})?(?=\.)")


# -- the child: `doudi monthly` with one failpoint --------------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str) -> None:
    """Replace `owner.name` by: call it, then die."""
    original = getattr(owner, name)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        _die()

    setattr(owner, name, hooked)


def install(point: str, home: Path) -> None:
    """The failpoint `point` (KILL_POINTS), in this process, before `doudi` runs."""
    if point == "ingest":
        import ingest.store

        ingest.store._apply = lambda *a, **k: _die()  # type: ignore[assignment]
    elif point == "mlflow-init":
        import mlflow.store.db.utils as db_utils

        db_utils._upgrade_db = lambda *a, **k: _die()
    elif point == "features":
        import features.tables as tables

        original = tables._county_task
        marks = home / ".crash-workers"
        marks.mkdir(exist_ok=True)

        def task(*args: Any, **kwargs: Any) -> Any:
            (marks / str(os.getpid())).touch()
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(120)  # a worker that outlives its parent shows up as alive
            return original(*args, **kwargs)

        task.__module__, task.__qualname__ = original.__module__, original.__qualname__
        tables._county_task = task
    elif point == "register":
        from mlflow import MlflowClient

        def alias(*_a: Any, **_k: Any) -> None:
            _die()

        MlflowClient.set_registered_model_alias = alias  # type: ignore[method-assign]
    elif point == "alerts":
        from serving.store.store import AlertStore

        _after(AlertStore, "add_alerts")
    elif point == "export-staged":
        import serving.export

        _after(serving.export, "write_csv")
    elif point == "export-committed":
        from serving.store.store import AlertStore

        _after(AlertStore, "record_export")
    else:
        raise SystemExit(f"unknown kill point {point!r}: {', '.join(KILL_POINTS)}")


def child(point: str, raw: str, as_of: str) -> None:
    install(point, Path(os.environ["DOUDI_HOME"]))
    from jobs.cli import main

    sys.argv = ["doudi", "monthly", raw, "--as-of", as_of]
    main()


# -- the parent -----------------------------------------------------------------------------------
def prepare(home: Path) -> None:
    """A fresh workspace with the shared pseudonym key."""
    secrets = home / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    fd = os.open(secrets / "pseudonym.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(KEY)


def env_for(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "DOUDI_HOME": str(home), "DOUDI_WORKERS": "2",
            "DOUDI_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", **(extra or {})}


def monthly(home: Path, raw: Path, *, kill_at: str | None = None, as_of: str = AS_OF,
            timeout: float = TIMEOUT,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`doudi monthly` in its own process (killed at `kill_at`, if given)."""
    if kill_at is None:
        argv = [str(ROOT / ".venv" / "bin" / "doudi"), "monthly", str(raw), "--as-of", as_of]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", kill_at, str(raw),
                as_of]
    return subprocess.run(argv, env=env_for(home, extra_env), cwd=home, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def surviving_workers(home: Path, within: float = 10.0) -> list[int]:
    """Pool workers of a killed parent still running after `within` seconds."""
    marks = home / ".crash-workers"
    pids = [int(p.name) for p in marks.iterdir()] if marks.is_dir() else []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for pid in left:  # do not leave them behind for the next point
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(marks, ignore_errors=True)
    return left


def snapshot(home: Path) -> dict[str, Any]:
    """A workspace's final state, without ids, clocks and time stamps."""
    import pyarrow.dataset as ds
    import sqlalchemy as sa

    from doudi import registry
    from doudi.settings import Settings

    state: dict[str, Any] = {}
    engine = sa.create_engine(f"sqlite:///{home / 'alerts.db'}")
    with engine.connect() as db:
        columns = [c["name"] for c in sa.inspect(db).get_columns("alerts")]
        keep = [c for c in columns if c != "id" and not c.endswith("_at")]
        rows = db.execute(sa.text(f"SELECT {', '.join(keep)} FROM alerts")).all()
        state["alerts"] = sorted(tuple(str(v) for v in r) for r in rows)
        audit = db.execute(sa.text(
            "SELECT township_code, household_count, file_path FROM export_audit")).all()
        state["export_audit"] = sorted(
            (t, n, ";".join(sorted(_STAMP.sub("", Path(f).name) for f in p.split(";"))))
            for t, n, p in audit)
    engine.dispose()
    exports = home / "exports"
    files = [f for f in exports.rglob("*") if f.is_file()] if exports.is_dir() else []
    state["export_files"] = sorted(collections.Counter(
        _STAMP.sub("", str(f.relative_to(exports))) for f in files).items())
    warehouse = home / "warehouse"
    state["warehouse_rows"] = {
        feed.name: ds.dataset(feed, format="parquet", partitioning="hive").count_rows()
        for feed in sorted(warehouse.iterdir()) if feed.is_dir() and not feed.name.startswith(
            (".", "_"))} if warehouse.is_dir() else {}
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    client = registry.client(settings.tracking_uri())
    ws = registry.workspace(settings)
    versions = registry.known_versions(client, ws.model_name)
    state["versions"] = [(str(v.version), v.tags.get("as_of"), v.tags.get("data_fingerprint"),
                          v.tags.get("gate_decision"), v.tags.get("registration"))
                         for v in versions]
    if versions:
        model = client.get_registered_model(ws.model_name)
        state["aliases"] = dict(sorted((model.aliases or {}).items()))
        state["champion_history"] = model.tags.get("champion_history")
    return state


def compare(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """One line per part of the state that differs."""
    out = []
    for key in sorted(set(reference) | set(other)):
        if reference.get(key) != other.get(key):
            a, b = reference.get(key), other.get(key)
            size = f" ({len(a)} vs {len(b)})" if isinstance(a, list | dict) and \
                isinstance(b, list | dict) else ""
            out.append(f"{key} differs{size}")
    return out


def crash_and_rerun(point: str, world_raw: Path, home: Path, *, as_of: str = AS_OF,
                    template: Path | None = None,
                    extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Kill at `point`, check the kill and the workers, rerun; the outcome as a dict.
    The workspace starts fresh, or as a copy of `template` (a workspace made earlier)."""
    if template is not None:
        shutil.copytree(template, home, symlinks=True)
    else:
        prepare(home)
    started = time.perf_counter()
    crashed = monthly(home, world_raw, kill_at=point, as_of=as_of, extra_env=extra_env)
    outcome: dict[str, Any] = {"point": point, "crash_rc": crashed.returncode,
                               "crash_seconds": round(time.perf_counter() - started, 1)}
    if point == "features":
        outcome["surviving_workers"] = surviving_workers(home)
    started = time.perf_counter()
    rerun = monthly(home, world_raw, as_of=as_of, extra_env=extra_env)
    outcome.update(rerun_rc=rerun.returncode, rerun_seconds=round(
        time.perf_counter() - started, 1), rerun_err=rerun.stderr.strip().splitlines()[-3:])
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("POINT", "RAW", "AS_OF"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--points", default=",".join(KILL_POINTS))
    parser.add_argument("--world", type=Path, help="A simulated province (default: generate)")
    parser.add_argument("--work", type=Path, default=ROOT / "workspace" / "crash-bench")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    points = [p for p in args.points.split(",") if p]
    unknown = sorted(set(points) - set(KILL_POINTS))
    if unknown:
        parser.error(f"unknown kill point(s) {unknown}: {', '.join(KILL_POINTS)}")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    world = args.world
    if world is None:
        from doudi.settings import Settings
        from province import simulate

        world = args.work / "world"
        simulate(world, settings=Settings(), **WORLD)  # type: ignore[arg-type]
    raw = world / "raw"
    # bytecode cached in the work folder (PYTHONDONTWRITEBYTECODE makes each child compile)
    cache = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(args.work / "pycache")}
    ref_home = args.work / "reference"
    prepare(ref_home)
    started = time.perf_counter()
    ref = monthly(ref_home, raw, extra_env=cache)
    if ref.returncode != 0:
        print(ref.stderr, file=sys.stderr)
        return 1
    print(f"reference run: {time.perf_counter() - started:.0f}s")
    reference = snapshot(ref_home)
    failed = 0
    for point in points:
        home = args.work / point
        outcome = crash_and_rerun(point, raw, home, extra_env=cache)
        diffs = compare(reference, snapshot(home)) if outcome["rerun_rc"] == 0 else \
            [f"rerun failed: {outcome['rerun_err']}"]
        if outcome["crash_rc"] != -signal.SIGKILL:
            diffs.append(f"the crash run was not killed (exit {outcome['crash_rc']})")
        if outcome.get("surviving_workers"):
            diffs.append(f"{len(outcome['surviving_workers'])} worker(s) outlived the parent")
        failed += bool(diffs)
        print(json.dumps({**outcome, "differences": diffs}, ensure_ascii=False))
        print(f"{point:18s} {'SAME' if not diffs else 'DIFFERENT'}  ({KILL_POINTS[point]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
