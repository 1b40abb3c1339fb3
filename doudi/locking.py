"""One lock per workspace: two commands that write never run at once on one `DOUDI_HOME`.

The lock is `fcntl.flock` on `<home>/.doudi.lock`: the kernel releases it when its
process ends, however it ends (`kill -9`, power loss of the process), so a crash can
never leave a lock that blocks forever. Who holds it is written beside it, in
`<home>/.doudi.lock.json` (command, pid, host, started at), for the one-line refusal a
second command prints. A record left there by a process that died is stale: the next
command to take the lock reports it ("did not finish") and replaces it.

A ground module (imports nothing of the stages). Which commands take the lock is decided
in one place, `jobs.commands.register_all`; docs/operations.md "One job at a time".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from doudi.errors import UserError

LOCK_NAME = ".doudi.lock"
HOLDER_NAME = ".doudi.lock.json"
POLL_SECONDS = 0.2

# Homes this process holds (resolved path -> depth): a nested take in the same process
# (one command calling another's code path) must not deadlock on its own lock.
_held: dict[Path, int] = {}


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a workspace's lock."""

    command: str
    pid: int
    host: str
    started: str  # UTC, ISO 8601 to the second

    def describe(self) -> str:
        return f"`doudi {self.command}` (pid {self.pid} on {self.host}, started {self.started})"


def lock_path(home: Path) -> Path:
    return Path(home) / LOCK_NAME


def holder_path(home: Path) -> Path:
    return Path(home) / HOLDER_NAME


def read_holder(home: Path) -> Holder | None:
    """The recorded holder, or None when there is no (readable) record."""
    try:
        data = json.loads(holder_path(home).read_text(encoding="utf-8"))
        return Holder(str(data["command"]), int(data["pid"]), str(data["host"]),
                      str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(home: Path, holder: Holder) -> None:
    """Atomically (write, then rename): a reader never sees half a record."""
    target = holder_path(home)
    tmp = target.with_name(f"{target.name}.{holder.pid}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(holder)))
    tmp.replace(target)


def _busy(home: Path, wait: float) -> UserError:
    holder = read_holder(home)
    who = holder.describe() if holder is not None else "another doudi command (no record)"
    waited = f" after waiting {wait:g}s" if wait > 0 else ""
    return UserError(
        f"workspace {home} is busy{waited}: {who} holds its lock; let it finish, or rerun "
        "with --wait SECONDS (docs/operations.md \"One job at a time\")")


@contextlib.contextmanager
def workspace_lock(home: Path, command: str, *, wait: float = 0.0,
                   on_stale: Callable[[str], None] | None = None) -> Iterator[Holder]:
    """Hold `home`'s lock for the `with` block, as `doudi <command>`.

    Busy: poll for up to `wait` seconds, then raise a one-line `UserError` naming the holder.
    A holder record found on taking the lock is stale (its process ended without releasing
    the record: a crash); `on_stale` gets one line saying so.
    """
    home = Path(home).resolve()
    if home in _held:  # already ours (same process): nested use
        _held[home] += 1
        try:
            yield read_holder(home) or Holder(command, os.getpid(), socket.gethostname(), "")
        finally:
            _held[home] -= 1
        return
    created = not home.exists()
    home.mkdir(parents=True, exist_ok=True)
    fd = _acquire(home, wait)
    try:
        stale = read_holder(home)
        if stale is not None and on_stale is not None:
            # We hold the flock, so its writer's process is gone (the kernel released it):
            # it ended without removing its record, i.e. it crashed or was killed.
            on_stale(f"cleared a stale lock record: {stale.describe()} did not finish "
                     "(crashed or killed): rerun it to complete its work (docs/operations.md "
                     "\"After a crash\")")
        holder = Holder(command, os.getpid(), socket.gethostname(),
                        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        _write_holder(home, holder)
        _held[home] = 1
        try:
            yield holder
        finally:
            del _held[home]
            # Record and lock file go while we still hold the lock (a finished command
            # leaves nothing behind; `_acquire` copes with the file vanishing under it).
            for path in (holder_path(home), lock_path(home)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if created:
                with contextlib.suppress(OSError):
                    home.rmdir()  # only if still empty: a command that refused wrote nothing
    finally:
        os.close(fd)  # releases the flock


def _acquire(home: Path, wait: float) -> int:
    """An open descriptor of `<home>/.doudi.lock` holding its flock.

    The holder deletes the file when done, so a waiter may lock a file no longer at that
    path; it then starts again on the new file (else two could hold "the" lock).
    """
    deadline = time.monotonic() + max(0.0, wait)
    path = lock_path(home)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise _busy(home, wait) from None
            time.sleep(POLL_SECONDS)
            continue
        mine = os.fstat(fd)
        try:
            there = path.stat()
        except FileNotFoundError:
            os.close(fd)
            continue
        if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)
