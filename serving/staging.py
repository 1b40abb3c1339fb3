"""All of an export or nothing: files staged privately, committed by the audit row, then moved.

An export that re-identifies households writes its files in a private staging folder
inside the destination folder (`.doudi-staging-<token>/`, 0700; files 0600), fsyncs
them and a manifest, and only then commits its audit row (which carries the token)
and the alerts' dispatch in one store transaction; last, the files are renamed into
place (same file system: atomic per file) and the folder removed.

A crash (kill -9, power loss) therefore leaves one of:
- before the commit: a staging folder no audit row names: the next run over that
  folder deletes it (contents overwritten with zeros, then unlinked); no visible file,
  alerts still `new`, no audit row;
- after the commit: a staging folder an audit row names: the next run moves its files
  into place. Either way the export happens exactly once.

A live export holds an exclusive `flock` on its staging folder, so a concurrent run never
deletes or finishes another process's export; the lock dies with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PREFIX = ".doudi-staging-"
MANIFEST = "manifest.json"
_CHUNK = 1 << 16


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shred(path: Path) -> None:
    """Overwrite a file with zeros, fsync, unlink (best effort: a journaling or
    copy-on-write file system or an SSD may keep old blocks; see docs/threat-model.md)."""
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        with path.open("r+b", buffering=0) as fh:
            left = size
            while left > 0:
                left -= fh.write(b"\0" * min(_CHUNK, left))
            os.fsync(fh.fileno())
        path.unlink()


class StagingError(RuntimeError):
    """A staging folder could not be written, committed or moved into place."""


@dataclass
class Staging:
    """One export's private staging folder in `folder` (use `Staging.create`)."""

    folder: Path
    token: str
    path: Path
    _lock_fd: int
    _names: list[str]
    committed: bool = False
    _closed: bool = False

    @classmethod
    def create(cls, folder: Path) -> Staging:
        """A new locked staging folder (0700) in `folder` (created if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            token = secrets.token_hex(8)
            path = folder / f"{PREFIX}{token}"
            path.mkdir(mode=0o700)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A recovering run may have taken the lock first and removed the folder.
            try:
                if path.stat().st_ino == os.fstat(fd).st_ino:
                    return cls(folder, token, path, fd, [])
            except FileNotFoundError:
                pass
            os.close(fd)

    def file(self, name: str) -> Path:
        """Create `name` (0600, empty) in the staging folder; it lands as `folder/name`."""
        if "/" in name or name in ("", ".", "..", MANIFEST) or name.startswith(PREFIX):
            raise ValueError(f"not a plain file name: {name!r}")
        if name in self._names:
            raise ValueError(f"{name!r} is staged twice")
        staged = self.path / name
        os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._names.append(name)
        return staged

    def final(self, name: str) -> Path:
        return self.folder / name

    def seal(self) -> None:
        """fsync every staged file, then write and fsync the manifest: ready to commit."""
        for name in self._names:
            fd = os.open(self.path / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        manifest = json.dumps({"token": self.token, "files": self._names}).encode()
        fd = os.open(self.path / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, manifest)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.path)

    def publish(self) -> None:
        """Move the staged files into place (after the commit) and remove the folder."""
        _publish(self.path, self.folder, self._names)
        self._release()

    def discard(self) -> None:
        """Delete the staging folder and its contents (overwritten first)."""
        _discard(self.path)
        self._release()

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._lock_fd)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        """On an error before the commit: discard. After it: leave the folder for the
        next run to finish (its files are committed)."""
        if kind is not None and not self._closed:
            if self.committed:
                self._release()
            else:
                with contextlib.suppress(OSError):
                    self.discard()
        self._release()


def _move(staged: Path, final: Path) -> None:
    staged.replace(final)  # atomic: same file system (the staging folder is inside)


def _publish(path: Path, folder: Path, names: list[str]) -> None:
    for name in names:
        staged = path / name
        if staged.exists():  # a crash may have moved some already
            _move(staged, folder / name)
    _fsync_dir(folder)
    with contextlib.suppress(FileNotFoundError):
        (path / MANIFEST).unlink()
    for leftover in path.iterdir():  # nothing else belongs here; never leave data behind
        _shred(leftover)
    path.rmdir()


def _discard(path: Path) -> None:
    if path.is_dir():
        for entry in path.iterdir():
            if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                entry.unlink()
            elif entry.is_dir():
                _discard(entry)
            else:
                _shred(entry)
        path.rmdir()


@dataclass(frozen=True)
class Recovered:
    """What `recover` did in one folder: exports finished, and abandoned ones deleted."""

    finished: tuple[str, ...] = ()  # tokens
    deleted: int = 0
    busy: int = 0  # staging folders of a live export, left alone


def _manifest(path: Path) -> tuple[str, list[str]] | None:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        token, files = data["token"], data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(token, str) and isinstance(files, list)
            and all(isinstance(f, str) and "/" not in f and f not in ("", ".", "..")
                    for f in files)):
        return None
    return token, files


def recover(folder: Path, committed: Callable[[str], bool]) -> Recovered:
    """Finish or delete every staging folder a crashed export left in `folder`.

    `committed(token)` says whether that export's audit row exists (its transaction
    committed). Folders another live process holds are skipped.
    """
    finished: list[str] = []
    deleted = busy = 0
    for path in sorted(_staging_dirs(folder)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy += 1
                continue
            if not path.is_dir():  # gone meanwhile
                continue
            found = _manifest(path)
            token_matches = found is not None and path.name == PREFIX + found[0]
            if found is not None and token_matches and committed(found[0]):
                _publish(path, folder, found[1])
                finished.append(found[0])
            else:
                _discard(path)
                deleted += 1
        finally:
            os.close(fd)
    return Recovered(tuple(finished), deleted, busy)


def _staging_dirs(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(PREFIX) and entry.is_dir() and not entry.is_symlink():
            yield entry
