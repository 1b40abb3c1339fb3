"""Two jobs at once and `kill -9` at any point: nothing lost, nothing half-done.

- One lock per workspace (doudi/locking.py): a second writing command exits 2 naming the
  holder, or waits with --wait; a killed holder's lock is gone with it.
- Schemas created once, atomically: the MLflow SQLite store (doudi/registry.py
  `ensure_store`) and the alert store (serving/store/schema.py), by racing processes and
  after a kill in the middle of their creation.
- Feature pool workers die with their parent (features/tables.py).
- A registration a kill left half-done is finished by the rerun, never duplicated.
- `doudi monthly` killed at a few points, then rerun, ends equal to an uninterrupted run
  (bench/crash_monthly.py; the short version here is marked slow).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from doudi import locking, registry
from doudi.errors import UserError
from tests.jobs.cli import doudi, refused

ROOT = Path(__file__).resolve().parents[2]
DOUDI = str(ROOT / ".venv" / "bin" / "doudi")
KEY = bytes(range(32))


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DOUDI_HOME": str(home), "DOUDI_WORKERS": "1",
            "DOUDI_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT), **extra}


def _python(code: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env or {
        **os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def _wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# -- the workspace lock --------------------------------------------------------------------------
def _hold(home: Path, command: str = "monthly") -> subprocess.Popen[str]:
    """Another process holding `home`'s lock until its stdin closes."""
    proc = _python(f"""
        import sys
        from doudi.locking import workspace_lock
        with workspace_lock({str(home)!r}, {command!r}):
            print("held", flush=True)
            sys.stdin.read()
        """, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_its_holder_and_is_free_after(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    try:
        with pytest.raises(UserError) as caught, locking.workspace_lock(tmp_path, "ingest"):
            pass
        line = str(caught.value)
        assert "\n" not in line
        assert f"`doudi monthly` (pid {holder.pid} on {socket.gethostname()}, started 20" \
            in line and "--wait SECONDS" in line
    finally:
        holder.communicate("")
    assert not locking.holder_path(tmp_path).exists()  # released with its record
    with locking.workspace_lock(tmp_path, "ingest") as me:
        assert me.pid == os.getpid()
        assert locking.read_holder(tmp_path) == me
        with locking.workspace_lock(tmp_path, "score"):  # nested in one process: no deadlock
            pass
    assert not locking.holder_path(tmp_path).exists()
    assert not locking.lock_path(tmp_path).exists()  # a finished command leaves nothing


def test_never_two_holders_though_each_deletes_the_lock_file(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    code = f"""
        import time
        from pathlib import Path
        from doudi.locking import workspace_lock
        counter = Path({str(counter)!r})
        for _ in range(25):
            with workspace_lock({str(tmp_path)!r}, "score", wait=120):
                n = int(counter.read_text())
                time.sleep(0.002)  # a lost update shows if two ever hold it at once
                counter.write_text(str(n + 1))
        """
    procs = [_python(code) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert counter.read_text() == "100"


def test_wait_takes_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"busy after waiting 0\.5s"), \
            locking.workspace_lock(tmp_path, "ingest", wait=0.5):
        pass
    assert time.monotonic() - started >= 0.5
    subprocess.Popen(["sh", "-c", f"sleep 1; kill {holder.pid}"])
    with locking.workspace_lock(tmp_path, "ingest", wait=60):
        assert holder.wait(5) is not None  # it ended before we got the lock


def test_a_killed_holders_lock_is_free_and_its_record_reported(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "train")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert locking.read_holder(tmp_path).pid == holder.pid  # type: ignore[union-attr]
    notes: list[str] = []
    with locking.workspace_lock(tmp_path, "monthly", on_stale=notes.append):
        pass
    assert len(notes) == 1
    assert f"stale lock record: `doudi train` (pid {holder.pid}" in notes[0]
    assert "did not finish" in notes[0]


def test_writing_commands_take_the_lock_and_readers_do_not(tmp_path: Path) -> None:
    from jobs.cli import app
    from jobs.commands import READ_ONLY_COMMANDS, command_paths

    locked = {path for path, info in command_paths(app)
              if getattr(info.callback, "__doudi_locked__", False)}
    assert {"ingest", "monthly", "train", "promote", "rollback", "score", "export",
            "feedback import"} <= locked
    assert not locked & READ_ONLY_COMMANDS
    holder = _hold(tmp_path)
    try:
        for args in (["train", "--as-of", "2025-06"], ["rollback"], ["promote", "1"],
                     ["feedback", "import", str(tmp_path / "v.csv")],
                     ["export", "--township", "620102001", "--out-dir", str(tmp_path)]):
            refused(doudi(tmp_path, *args), "is busy", f"pid {holder.pid}")
        assert doudi(tmp_path, "settings").code == 0  # read-only: not blocked
        assert doudi(tmp_path, "alerts", "list", "--format", "json").code == 0
        refused(doudi(tmp_path, "rollback", "--wait", "-1"), "--wait -1")
    finally:
        holder.communicate("")


def test_two_real_doudi_processes_the_second_exits_2_or_waits(
        small_world: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    first = subprocess.Popen([DOUDI, "ingest", "-q", str(small_world / "raw")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(locking.holder_path(home))
    first.send_signal(signal.SIGSTOP)  # frozen while holding the lock: no timing luck needed
    try:
        second = subprocess.run([DOUDI, "ingest", "-q", str(small_world / "raw")], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 2, second.stderr
        line, = second.stderr.strip().splitlines()
        assert line.startswith("doudi: error: workspace ") and "is busy" in line
        assert f"`doudi ingest` (pid {first.pid} on {socket.gethostname()}" in line
        waiter = subprocess.Popen([DOUDI, "ingest", "-q", "--wait", "600",
                                   str(small_world / "raw")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert waiter.poll() is None  # waiting, not refused
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(300) == 0, first.stderr.read() if first.stderr else ""
    _, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, err
    assert not locking.holder_path(home).exists()


# -- the MLflow store --------------------------------------------------------------------------
_OPEN_STORE = """
    import sys
    from doudi import registry
    client = registry.client(sys.argv[1])
    client.search_experiments()
    print("ok")
    """


def _all_print_ok_at_once(script: str, arg: str, *, copies: int, cwd: Path,
                          timeout: float) -> None:
    """Start `copies` processes running `script arg` at once; each must exit 0 saying ok."""
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), arg],
                              cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for _ in range(copies)]
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.slow
def test_two_processes_create_a_fresh_mlflow_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    _all_print_ok_at_once(_OPEN_STORE, uri, copies=2, cwd=tmp_path, timeout=300)
    path = registry.sqlite_store_path(uri)
    assert path is not None and registry._store_state(path)[0] == "complete"
    assert not list(path.parent.glob(".mlflow.db.init-*"))  # no temp files left


@pytest.mark.slow
def test_kill_9_while_mlflow_creates_its_tables_then_a_rerun_works(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    killed = _python(f"""
        import os, signal
        import mlflow.store.db.utils as db_utils
        db_utils._upgrade_db = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        from doudi import registry
        registry.client({uri!r})
        """)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not db.exists()  # the half-made store never took the store's name
    rerun = subprocess.run([sys.executable, "-c", textwrap.dedent(_OPEN_STORE), uri],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert registry._store_state(db)[0] == "complete"
    assert not list(tmp_path.glob(".mlflow.db.init-*"))  # the killed run's temp file: gone


def test_a_half_created_store_holding_runs_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:  # what a kill during MLflow's own creation left
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY)")
        con.execute("INSERT INTO runs VALUES ('r1')")
    with pytest.raises(UserError) as caught:
        registry.ensure_store(f"sqlite:///{db}")
    line = str(caught.value)
    assert "\n" not in line and "half-initialised (2 of " in line
    assert "mlflow db upgrade" in line
    assert _tables(db) == {"experiments", "runs"}  # left as it was


@pytest.mark.slow
def test_a_half_created_empty_store_is_moved_aside_and_recreated(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO experiments VALUES (0, 'Default')")  # MLflow's own
    registry.ensure_store(f"sqlite:///{db}")
    assert registry._store_state(db)[0] == "complete"
    aside = list(tmp_path.glob("mlflow.db.broken-*"))
    assert len(aside) == 1 and _tables(aside[0]) == {"experiments"}


# -- registration: never twice, never half --------------------------------------------------------
@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A complete store: copied from the training tests' template when it exists."""
    db = tmp_path / "mlflow.db"
    base = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT", "/tmp"))
    templates = sorted(base.glob("pytest-of-*/**/doudi_training_mlflow_template.db"))
    if templates and registry._store_state(templates[-1])[0] == "complete":
        shutil.copy(templates[-1], db)
    registry.ensure_store(f"sqlite:///{db}")
    return f"sqlite:///{db}"


@pytest.mark.slow
def test_a_registration_killed_before_its_aliases_is_finished_not_repeated(
        mlflow_uri: str, tmp_path: Path) -> None:
    from training.tracking import REGISTRATION_TAG, finish_registration

    client = registry.client(mlflow_uri)
    name = "doudi-risk-test"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(
        name, artifact_location=(tmp_path / "a").as_uri())).info.run_id
    tags = {"as_of": "2025-06", "data_fingerprint": "f1", "gate_decision": "champion"}
    # what `track_run` leaves when killed right after creating the version
    mv = client.create_model_version(name, source=f"runs:/{run}/model", run_id=run,
                                     tags={**tags, REGISTRATION_TAG: "pending"})
    done = finish_registration(client, mv)
    assert sorted(done.aliases) == ["challenger", "champion"]
    assert done.tags[REGISTRATION_TAG] == "complete"
    model = client.get_registered_model(name)
    assert json.loads(model.tags["champion_history"]) == [str(mv.version)]
    assert finish_registration(client, done) == done  # complete: left alone
    # an older version without the tag (registered before it existed) is left alone too
    old = client.create_model_version(name, source=f"runs:/{run}/model", run_id=run,
                                      tags={**tags, "data_fingerprint": "f0"})
    assert finish_registration(client, old).aliases == []
    assert len(registry.known_versions(client, name)) == 2


# -- the alert store -----------------------------------------------------------------------------
_OPEN_ALERTS = """
    import sys
    from serving.store import open_store
    with open_store(sys.argv[1]) as store:
        pass
    print("ok")
    """


def test_processes_opening_a_fresh_alert_store_at_once_all_succeed(tmp_path: Path) -> None:
    from serving.store.database import make_engine
    from serving.store.schema import current_revision, head_revision

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    _all_print_ok_at_once(_OPEN_ALERTS, url, copies=4, cwd=ROOT, timeout=120)
    engine = make_engine(url)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_kill_9_while_the_alert_store_is_created_leaves_nothing_half_done(
        tmp_path: Path) -> None:
    from serving.store import open_store

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    killed = _python(f"""
        import os, signal
        from alembic.operations import Operations
        real = Operations.create_table
        made = []
        def create_table(self, *a, **k):  # dies after the second table
            made.append(real(self, *a, **k))
            if len(made) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return made[-1]
        Operations.create_table = create_table
        from serving.store import open_store
        open_store({url!r})
        """)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert _tables(tmp_path / "alerts.db") == set()  # one transaction: rolled back whole
    with open_store(url) as store:
        assert store.open_household_keys() == set()


def test_a_half_created_alert_store_is_rebuilt_when_empty_refused_when_not(
        tmp_path: Path) -> None:
    from serving.store import open_store

    db = tmp_path / "alerts.db"
    with sqlite3.connect(db) as con:  # tables but no revision: a creation killed before
        con.execute("CREATE TABLE alerts (id INTEGER PRIMARY KEY)")
    with open_store(f"sqlite:///{db}"):
        pass
    assert "alembic_version" in _tables(db)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE alerts (id INTEGER PRIMARY KEY)")
        con.execute("INSERT INTO alerts VALUES (1)")
    with pytest.raises(UserError, match=r"1 row\(s\) but no schema revision"):
        open_store(f"sqlite:///{other}")


# -- pool workers ----------------------------------------------------------------------------------
def test_feature_workers_die_with_their_parent(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    for county in ("620102", "620103"):
        (warehouse / "households" / f"county={county}").mkdir(parents=True)
    marks = tmp_path / "workers"
    marks.mkdir()
    parent = _python(f"""
        import os, time
        from pathlib import Path
        import features.tables as tables
        from doudi.months import Month
        from doudi.settings import Settings

        def task(*args, **kwargs):  # a long county: the parent is killed meanwhile
            (Path({str(marks)!r}) / str(os.getpid())).touch()
            time.sleep(300)
        task.__module__, task.__qualname__ = "features.tables", "_county_task"
        tables._county_task = task
        tables._run(Path({str(warehouse)!r}), [Month.parse("2025-06").end],
                    Settings(workers=2), "features")
        """)
    deadline = time.monotonic() + 120
    while len(list(marks.iterdir())) < 2:
        assert time.monotonic() < deadline and parent.poll() is None, parent.communicate()
        time.sleep(0.05)
    workers = [int(p.name) for p in marks.iterdir()]
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"{len(left)} worker(s) outlived their parent"


# -- doudi monthly killed, then rerun ---------------------------------------------------------
# The 300-household world's own first version cannot clear the gate's floor (its test block
# is too small, tests/hostile/test_gate_floor.py), so the workspace starts as a month-earlier
# copy with a forced champion; `monthly` then ingests the last month, scores and exports
# (not due to retrain: bench/crash_monthly.py kills training and registration too).
FAST_POINTS = ("alerts", "export-committed")  # ingest's journal: tests/ingest


@pytest.fixture(scope="module")
def month_before(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with every delivery but 2025-06 ingested and a champion as of 2025-05."""
    from bench.crash_monthly import prepare

    root = tmp_path_factory.mktemp("month_before")
    earlier = root / "raw"
    shutil.copytree(small_world / "raw", earlier,
                    ignore=lambda _dir, names: [n for n in names if "2025-06" in n])
    home = root / "home"
    prepare(home)
    for args in (["ingest", "-q", str(earlier)], ["train", "--as-of", "2025-05"],
                 ["promote", "1", "--force"]):
        done = doudi(home, *args)
        assert done.code == 0, done.err[-2000:]
    return home


@pytest.mark.slow
def test_monthly_killed_then_rerun_ends_like_an_uninterrupted_run(
        small_world: Path, month_before: Path, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from bench.crash_monthly import compare, crash_and_rerun, monthly, snapshot

    # Bytecode cached outside the tree: with PYTHONDONTWRITEBYTECODE every child process
    # compiled lightgbm, sklearn and mlflow again (~8 of its ~15 s).
    extra = {"DOUDI_RETRAIN_EVERY_MONTHS": "2", "DOUDI_WORKERS": "1",
             "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(
                 tmp_path_factory.getbasetemp() / "pycache")}
    reference = tmp_path / "reference"
    shutil.copytree(month_before, reference, symlinks=True)
    # the reference and each kill point in their own workspaces, side by side (wall time)
    with ThreadPoolExecutor(max_workers=1 + len(FAST_POINTS)) as pool:
        ref_run = pool.submit(monthly, reference, small_world / "raw", extra_env=extra,
                              timeout=300)
        crashes = {point: pool.submit(crash_and_rerun, point, small_world / "raw",
                                      tmp_path / point, template=month_before,
                                      extra_env=extra)
                   for point in FAST_POINTS}
        done = ref_run.result()
        outcomes = {point: future.result() for point, future in crashes.items()}
    assert done.returncode == 0, done.stderr[-2000:]
    expected = snapshot(reference)
    assert expected["alerts"] and expected["export_files"] and expected["export_audit"]
    for point, outcome in outcomes.items():
        assert outcome["crash_rc"] == -signal.SIGKILL, (point, outcome)
        assert outcome["rerun_rc"] == 0, (point, outcome)
        assert compare(expected, snapshot(tmp_path / point)) == [], point
