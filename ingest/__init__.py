"""ingest: raw department extracts -> validated, pseudonymised Parquet warehouse.

    ingest(raw_dir, settings)    check, pseudonymise and write (atomic, incremental)
    validate(raw_dir, settings)  the same checks, nothing written

Layout and schemas: `doudi.warehouse`; identities: `ingest.vault`; rows waiting for
their household or person: `ingest.pending`; how files are named: `ingest.names`.
"""

from __future__ import annotations

from pathlib import Path

from doudi.settings import Settings
from ingest.pipeline import Progress, run
from ingest.report import IngestReport, Rejection, RunReport, ValidationReport

__all__ = [
    "IngestReport",
    "Progress",
    "Rejection",
    "RunReport",
    "ValidationReport",
    "ingest",
    "validate",
]


def ingest(raw_dir: Path, settings: Settings, *, progress: Progress | None = None,
           allow_unknown: bool = False) -> IngestReport:
    """Check every new file in `raw_dir`, quarantine bad rows, write the rest; atomic.
    Unknown folders or files in `raw_dir` are a `UserError` unless `allow_unknown`."""
    report = run(raw_dir, settings, write=True, progress=progress, allow_unknown=allow_unknown)
    assert isinstance(report, IngestReport)
    return report


def validate(raw_dir: Path, settings: Settings, *, allow_unknown: bool = False
             ) -> ValidationReport:
    """The checks `ingest` would run on `raw_dir` now (already-ingested files skipped),
    writing nothing."""
    report = run(raw_dir, settings, write=False, allow_unknown=allow_unknown)
    assert isinstance(report, ValidationReport)
    return report
