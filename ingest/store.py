"""Atomic, incremental writes: staging, a commit journal, the manifest, partition files.

A run writes only into staging folders (`<area>/.staging/<run>/`, one per
workspace area so that raw identifiers stay inside the 0700 vault and
quarantine). Commit: fsync, write a journal of the renames, rename every file
into place, write the manifest last (temp file + `os.replace`), drop the
journal. A run that fails before the journal leaves the workspace as it was; one
that dies during the renames is rolled forward by `recover` at the next start.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doudi.settings import Settings
from doudi.warehouse import COUNTY_DIR_PREFIX, MONTH_DIR_PREFIX, YEAR_DIR_PREFIX, partition_dir

MANIFEST_NAME = "_manifest.json"
STAGING = ".staging"
JOURNAL_DIR = ".ingest-journal"
PRIVATE_AREAS = ("quarantine", "vault", "pending")  # 0700 folders, 0600 files
REPORTS = "reports"  # 0700 folder, 0600 files: run reports name files and counts only
FLUSH_ROWS = 1_000_000  # buffered rows per feed before partition files are written
WRITER_THREADS = 2


def area_dirs(settings: Settings) -> dict[str, Path]:
    return {
        "warehouse": settings.warehouse_dir,
        "quarantine": settings.quarantine_dir,
        "vault": settings.vault_dir,
        "reports": settings.reports_dir,
        "pending": settings.home / "pending",
    }


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write via a temp file in the same folder and `os.replace`: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_manifest(settings: Settings) -> dict[str, Any]:
    path = settings.warehouse_dir / MANIFEST_NAME
    if not path.exists():
        return {"version": 1, "files": {}, "runs": []}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@contextmanager
def workspace_lock(settings: Settings) -> Iterator[None]:
    """One ingest at a time per workspace."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / ".ingest.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_if_empty(path: Path) -> None:
    with suppress(OSError):
        path.rmdir()


def _remove_empty_partition(folder: Path) -> None:
    """A warehouse partition folder (and its county folder) a remove left empty: gone, so
    no empty `reported_month=` folder counts as a delivery."""
    if folder.name.startswith((MONTH_DIR_PREFIX, YEAR_DIR_PREFIX)):
        _remove_if_empty(folder)
        if folder.parent.name.startswith(COUNTY_DIR_PREFIX):
            _remove_if_empty(folder.parent)


def _apply(home: Path, journal: Path) -> None:
    plan = json.loads(journal.read_text(encoding="utf-8"))
    for src_rel, dst_rel in plan["moves"]:
        src, dst = home / src_rel, home / dst_rel
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dst)
    for gone in plan.get("removes", []):  # replaced files (pending rows, compacted months)
        (home / gone).unlink(missing_ok=True)
        _remove_empty_partition((home / gone).parent)
    atomic_write_text(home / plan["manifest_path"], plan["manifest"])
    journal.unlink()


def recover(settings: Settings) -> None:
    """Finish a run that died mid-commit; drop the staging of runs that never committed."""
    home = settings.home
    journals = home / JOURNAL_DIR
    if journals.is_dir():
        for journal in sorted(journals.glob("*.json")):
            _apply(home, journal)
        _remove_if_empty(journals)
    for area in area_dirs(settings).values():
        staging = area / STAGING
        if staging.is_dir():
            shutil.rmtree(staging)


def _plan_moves(src_dir: Path, dst_dir: Path) -> list[tuple[Path, Path]]:
    """Renames that put `src_dir`'s tree into `dst_dir`: whole folders where they are new."""
    moves: list[tuple[Path, Path]] = []
    for src in sorted(src_dir.iterdir()):
        dst = dst_dir / src.name
        if src.is_dir() and dst.is_dir():
            moves += _plan_moves(src, dst)
        else:
            moves.append((src, dst))
    return moves


class Stager:
    """Where a run writes; nothing is visible in the workspace until `commit`."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.areas = area_dirs(settings)
        self._created: list[Path] = []
        self._journaled = False
        self._dirs: set[Path] = set()
        self._removes: list[Path] = []
        self.roots: dict[str, Path] = {}
        for name, area in self.areas.items():
            if not area.exists():
                self._created.append(area)
                area.mkdir(parents=True, exist_ok=True)
                if name in (*PRIVATE_AREAS, REPORTS):
                    area.chmod(0o700)
            elif name == REPORTS and area.stat().st_mode & 0o077:
                area.chmod(0o700)  # reports hold no personal data: tightened, not refused
            root = area / STAGING / run_id
            root.mkdir(parents=True, exist_ok=True)
            self.roots[name] = root

    def path(self, area: str, relative: str) -> Path:
        target = self.roots[area] / relative
        if target.parent not in self._dirs:  # metadata calls are slow on shared disks
            target.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(target.parent)
        return target

    def write_parquet(self, area: str, relative: str, table: pa.Table) -> Path:
        target = self.path(area, relative)
        pq.write_table(table, target, compression="zstd")
        if area in (*PRIVATE_AREAS, REPORTS):
            target.chmod(0o600)
        return target

    def write_many(self, area: str, items: list[tuple[str, pa.Table]]) -> None:
        """Write several Parquet files at once (Arrow releases the GIL while encoding)."""
        for relative, _ in items:
            self.path(area, relative)  # folders first, from this thread
        with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
            list(pool.map(lambda item: self.write_parquet(area, *item), items))

    def write_text(self, area: str, relative: str, text: str) -> Path:
        target = self.path(area, relative)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return target

    def remove_on_commit(self, path: Path) -> None:
        """Delete `path` (a workspace file this run replaces) as part of the commit."""
        self._removes.append(path)

    def abort(self) -> None:
        """Drop everything staged; remove folders this run created.

        Once the journal is written the run is promised: staging stays for `recover`.
        """
        if self._journaled:
            return
        for area, root in self.roots.items():
            shutil.rmtree(root, ignore_errors=True)
            _remove_if_empty(self.areas[area] / STAGING)
        for created in reversed(self._created):
            _remove_if_empty(created)

    def commit(self, manifest: dict[str, Any]) -> None:
        """Move every staged file into place, then write the manifest (last)."""
        home = self.settings.home
        moves: list[tuple[str, str]] = []
        for area, root in self.roots.items():
            moves += [(os.path.relpath(src, home), os.path.relpath(dst, home))
                      for src, dst in _plan_moves(root, self.areas[area])]
        removes = [os.path.relpath(p, home) for p in self._removes]
        manifest_path = os.path.relpath(self.settings.warehouse_dir / MANIFEST_NAME, home)
        os.sync()  # staged files are durable before the journal promises them
        journals = home / JOURNAL_DIR
        journals.mkdir(exist_ok=True, mode=0o700)
        journal = journals / f"{self.run_id}.json"
        atomic_write_text(
            journal,
            json.dumps({"moves": moves, "removes": removes, "manifest_path": manifest_path,
                        "manifest": json.dumps(manifest, ensure_ascii=False, indent=1)}),
            mode=0o600,
        )
        self._journaled = True
        _apply(home, journal)
        _remove_if_empty(journals)
        for area, root in self.roots.items():
            shutil.rmtree(root, ignore_errors=True)
            _remove_if_empty(self.areas[area] / STAGING)


def split_by_partition(table: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """(county, month, rows) for each partition present in `table`."""
    key = pc.binary_join_element_wise(table["county_code"], table["reported_month"], "|")
    encoded = pc.dictionary_encode(key).combine_chunks() if isinstance(key, pa.ChunkedArray) \
        else pc.dictionary_encode(key)
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(encoded.dictionary))
    sorted_table = table.take(pa.array(order))
    start = 0
    for label, count in zip(encoded.dictionary.to_pylist(), counts.tolist(), strict=True):
        if count:
            county, month = label.split("|")
            yield county, month, sorted_table.slice(start, count)
        start += count


class PartitionWriter:
    """Buffers a feed's accepted rows; writes one part file per partition per flush."""

    def __init__(self, stager: Stager | None, feed_name: str, schema: pa.Schema) -> None:
        self.stager = stager
        self.feed_name = feed_name
        self.schema = schema
        self._buffer: dict[tuple[str, str], list[pa.Table]] = {}
        self._rows = 0
        self._sequence = 0
        self.written_rows = 0
        self.run_id = stager.run_id if stager is not None else "dry-run"

    def add(self, table: pa.Table) -> None:
        if self.stager is None:  # a dry run keeps nothing
            self.written_rows += table.num_rows
            return
        for county, month, part in split_by_partition(table):
            self._buffer.setdefault((county, month), []).append(part)
        self._rows += table.num_rows
        if self._rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        items = []
        for (county, month), parts in sorted(self._buffer.items()):
            table = pa.concat_tables(parts).cast(self.schema)
            self.written_rows += table.num_rows
            self._sequence += 1
            items.append((
                f"{partition_dir(self.feed_name, county, month)}/"
                f"part-{self.run_id}-{self._sequence:05d}.parquet",
                table,
            ))
        if self.stager is not None and items:
            self.stager.write_many("warehouse", items)
        self._buffer.clear()
        self._rows = 0
