"""Running the scoring API's server (`doudi serve`, tests, benchmarks; docs/api.md).

`bentoml serve serving.service:DoudiRisk` runs from the project root, with the
workspace and tracking store passed as absolute paths (the server's working directory
differs from the caller's), BENTOML_HOME under the workspace and telemetry off.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doudi.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "serving.service:DoudiRisk"


def server_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: `base` plus absolute locations and telemetry off."""
    from doudi.registry import TELEMETRY_OFF

    env = dict(base)
    env.update(
        {
            "DOUDI_HOME": str(settings.home),
            "DOUDI_MLFLOW_TRACKING_URI": settings.tracking_uri(),
            "BENTOML_HOME": str(settings.home / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            **TELEMETRY_OFF,
        }
    )
    if env.get("DOUDI_CONFIG"):
        env["DOUDI_CONFIG"] = str(Path(env["DOUDI_CONFIG"]).resolve())
    return env


def server_command(host: str, port: int) -> list[str]:
    """`bentoml serve ...` with the venv's own bentoml."""
    script = Path(sys.executable).with_name("bentoml")
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "bentoml"]
    return [*exe, "serve", SERVICE, "--host", host, "--port", str(port)]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_seconds: float  # start to the first 200 from /readyz


@contextmanager
def running_server(
    settings: Settings,
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 90.0,
    command: Callable[[str, int], list[str]] = server_command,
) -> Iterator[RunningServer]:
    """The API as a child process group (tests, benchmarks): ready on entry, stopped on exit.

    `command(host, port)` starts it (default `bentoml serve`; bench/load_api.py passes its
    FastAPI reference server, which must answer /readyz too). Raises RuntimeError, with the
    end of the server's log, when it exits or is not ready within `ready_timeout` seconds.
    """
    from doudi.settings import PROJECT_ROOT

    port = port or free_port(host)
    env = server_environment(settings, {**os.environ, **(extra_env or {})})
    base = f"http://{host}:{port}"
    Path(env["BENTOML_HOME"]).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(host, port),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped as a group (`_stop`)
        )
    try:
        _wait_until_ready(process, f"{base}/readyz", log_path, started, ready_timeout)
        yield RunningServer(base, process, log_path, time.perf_counter() - started)
    finally:
        _stop(process)


def _wait_until_ready(process: subprocess.Popen[bytes], readyz: str, log_path: Path,
                      started: float, ready_timeout: float) -> None:
    """Poll `readyz` until it answers 200; RuntimeError with the log's end when the server
    exits first or `ready_timeout` seconds pass after `started` (`time.perf_counter()`)."""
    import httpx

    def failure(what: str) -> RuntimeError:
        return RuntimeError(f"{what}:\n{log_path.read_text(errors='replace')[-3000:]}")

    while True:
        if process.poll() is not None:
            raise failure(f"the server exited ({process.returncode})")
        try:
            if httpx.get(readyz, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.perf_counter() - started > ready_timeout:
            raise failure(f"the server was not ready after {ready_timeout:.0f} s")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group, then any worker it started outside that group."""
    # BentoML's arbiter starts its worker in a session of its own: outside our process
    # group. Noted now, while the arbiter is their parent; killed if left behind.
    workers = descendants(process.pid)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    for pid, began in workers:
        if _started(pid) == began:  # still that process, not a new one with its pid
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, ... ([] when gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks after boot): a pid plus this names it."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def descendants(pid: int) -> list[tuple[int, str | None]]:
    """(pid, start time) of the processes below `pid`, from /proc; [] without /proc."""
    proc = Path("/proc")
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        fields = _stat(entry.name) if entry.name.isdigit() else []
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, _started(child)))
        todo.extend(children.get(child, []))
    return found


def check_model(settings: Settings) -> None:
    """Fail fast, in one line, when the model to serve does not resolve or is another
    workspace's, or the township capacity table is malformed: the server would otherwise
    restart its worker over and over, or fail every scoring request."""
    from doudi import registry
    from serving.capacity import configured_capacities

    try:
        registry.locate(registry.served_uri(settings), settings, what="DOUDI_API_MODEL_URI")
    except registry.RegistryUnreachableError as err:
        # the server serves its last local copy then (registry.load_served): start anyway
        if not (settings.cache_dir / registry.SERVED_COPY / "served.json").is_file():
            raise
        log.warning("%s; serving the local copy of the last served model", err)
    configured_capacities(settings)
