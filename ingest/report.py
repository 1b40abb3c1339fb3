"""What a run found: counts per feed and rule, files, unknown columns. No values, ever."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FeedSummary:
    feed: str
    files: int = 0
    rows: int = 0
    accepted: int = 0  # new rows written to the warehouse
    quarantined: int = 0  # rows (a row breaking two rules counts once here)
    duplicates: int = 0  # exact duplicates kept once (within the run or of earlier rows)
    violations: Counter[str] = field(default_factory=Counter)  # rule -> cells
    sex_disagreements: int = 0  # persons: `sex` column differs from the ID number
    birth_date_disagreements: int = 0


@dataclass
class FileSummary:
    feed: str
    file: str
    sha256: str
    format: str
    encoding: str | None = None
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    skipped: str | None = None  # why the file was not read again (already ingested)


@dataclass
class UnknownColumn:
    feed: str
    file: str
    column: str
    sensitive: bool  # a name/phone/address column: its values are never read


@dataclass
class Rejection:
    """One broken rule in one row; `row` is the 1-based data row of `file`."""

    feed: str
    file: str
    row: int
    column: str
    rule: str
    message: str


@dataclass
class RunReport:
    run_id: str
    raw_dir: str
    dry_run: bool
    started_at: str
    finished_at: str = ""
    feeds: dict[str, FeedSummary] = field(default_factory=dict)
    files: list[FileSummary] = field(default_factory=list)
    unknown_columns: list[UnknownColumn] = field(default_factory=list)
    missing_optional_feeds: list[str] = field(default_factory=list)
    ignored_paths: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.feeds.values())

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.feeds.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["feeds"] = {name: {**asdict(s), "violations": dict(sorted(s.violations.items()))}
                         for name, s in self.feeds.items()}
        data.pop("rejections", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def to_text(self) -> str:
        mode = "validation (nothing written)" if self.dry_run else "ingest"
        lines = [f"doudi {mode} run {self.run_id}", f"  raw folder: {self.raw_dir}"]
        new_files = [f for f in self.files if f.skipped is None]
        lines.append(f"  files read: {len(new_files)}, skipped: {len(self.files) - len(new_files)}")
        lines.append(
            f"  {'feed':<20}{'rows':>11}{'accepted':>11}{'quarantined':>13}{'duplicates':>12}"
        )
        for s in self.feeds.values():
            if not (s.files or s.rows):
                continue
            lines.append(
                f"  {s.feed:<20}{s.rows:>11,}{s.accepted:>11,}{s.quarantined:>13,}"
                f"{s.duplicates:>12,}"
            )
        rule_lines = [
            f"    {s.feed:<20}{rule:<24}{count:>9,}"
            for s in self.feeds.values() for rule, count in sorted(s.violations.items())
        ]
        if rule_lines:
            lines.append("  rule violations (feed, rule, cells):")
            lines += rule_lines
        persons = self.feeds.get("persons")
        if persons and (persons.sex_disagreements or persons.birth_date_disagreements):
            lines.append(
                f"  persons disagreeing with their ID number (ID wins): sex "
                f"{persons.sex_disagreements:,}, birth_date {persons.birth_date_disagreements:,}"
            )
        if self.unknown_columns:
            lines.append("  unknown columns (kept out of the warehouse; files):")
            counted = Counter((u.feed, u.column, u.sensitive) for u in self.unknown_columns)
            for (feed, column, sensitive), files in sorted(counted.items()):
                note = " [sensitive: values never read]" if sensitive else ""
                lines.append(f"    {feed}: {column}{note} in {files} file(s)")
        if self.missing_optional_feeds:
            missing = ", ".join(self.missing_optional_feeds)
            lines.append(f"  optional feeds not delivered: {missing}")
        if self.ignored_paths:
            lines.append("  ignored (not a feed or not a data file): " + ", ".join(
                self.ignored_paths))
        for f in self.files:
            if f.skipped:
                lines.append(f"  skipped {f.file}: {f.skipped}")
        return "\n".join(lines) + "\n"


@dataclass
class IngestReport(RunReport):
    report_paths: list[str] = field(default_factory=list)


@dataclass
class ValidationReport(RunReport):
    rejections: list[Rejection] = field(default_factory=list)

    def rejections_jsonl(self) -> str:
        return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.rejections)
