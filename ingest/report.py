"""What a run found: counts per feed and rule, files, unknown columns. No values, ever."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from doudi.contract import FEED_NAMES
from doudi.settings import DEFAULT_FEED_CADENCE


def _default_monthly() -> list[str]:
    return [name for name in FEED_NAMES if DEFAULT_FEED_CADENCE.get(name) == "monthly"]


@dataclass
class FeedSummary:
    feed: str
    files: int = 0  # files new this run (read)
    files_skipped: int = 0  # files not read again: already ingested, or a copy of another
    rows: int = 0  # rows of the new files
    accepted: int = 0  # new rows written to the warehouse
    quarantined: int = 0  # rows (a row breaking two rules counts once here)
    duplicates: int = 0  # exact duplicates kept once (within the run or of earlier rows;
    # also waiting rows that turn out, when placed, to be copies of stored rows)
    pending: int = 0  # new rows waiting for their household/person (ingest.pending)
    placed: int = 0  # rows of earlier runs placed now that their household/person is known
    pending_total: int = 0  # rows waiting after this run (earlier runs' and new)
    pending_overdue: int = 0  # of those, waiting `pending_alert_months` or more
    violations: Counter[str] = field(default_factory=Counter)  # rule -> cells
    warnings: Counter[str] = field(default_factory=Counter)  # rule -> cells (rows kept)
    accepted_by_month: Counter[str] = field(default_factory=Counter)  # 'YYYY-MM' reported
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
    pending: int = 0
    skipped: str | None = None  # why the file was not read again (already ingested)

    @property
    def skipped_as_ingested(self) -> bool:
        return self.skipped is not None and self.skipped.startswith("already ingested")


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
    file: str  # the file's reference (`ingest.names.file_ref`), never its name as given
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
    unknown_paths: list[str] = field(default_factory=list)  # read anyway (--allow-unknown)
    hidden_paths: list[str] = field(default_factory=list)  # .DS_Store and the like: not read
    linked_paths: list[str] = field(default_factory=list)  # symbolic links inside: followed
    expected_monthly: list[str] = field(default_factory=_default_monthly)  # feed cadence
    pending_alert_months: int = 3

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.feeds.values())

    @property
    def accepted(self) -> int:
        """Rows added to the warehouse: new ones, and earlier pending ones placed now."""
        return sum(f.accepted + f.placed for f in self.feeds.values())

    @property
    def pending(self) -> int:
        return sum(f.pending for f in self.feeds.values())

    @property
    def placed(self) -> int:
        return sum(f.placed for f in self.feeds.values())

    @property
    def pending_overdue(self) -> int:
        return sum(f.pending_overdue for f in self.feeds.values())

    def overdue_warning(self) -> str | None:
        """The loud line about rows that waited too long for their household/person."""
        if not self.pending_overdue:
            return None
        per_feed = ", ".join(f"{s.feed} {s.pending_overdue:,}" for s in self.feeds.values()
                             if s.pending_overdue)
        return (f"WARNING: {self.pending_overdue:,} row(s) have waited "
                f"{self.pending_alert_months} delivered month(s) or more for their household "
                f"or person to reach the roster ({per_feed}); they stay in pending/: check "
                "the households and persons deliveries")

    @property
    def warned(self) -> int:
        return sum(f.warnings.total() for f in self.feeds.values())

    def silent_feeds(self, as_of_month: str, *, expected_only: bool = True) -> list[str]:
        """Feeds (contract order) with no new row reported in `as_of_month` ('YYYY-MM';
        a longer text such as a date or a Month's str is cut to its first 7 characters).
        Only feeds expected monthly (`Settings.feed_cadence`) unless not `expected_only`:
        a sparse feed (housing, disasters, ...) delivering nothing is no news."""
        month = str(as_of_month)[:7]
        return [name for name in FEED_NAMES
                if (name in self.expected_monthly or not expected_only)
                and (name not in self.feeds or not self.feeds[name].accepted_by_month[month])]

    def feed_table(self) -> list[str]:
        """One line per contract feed: files new and skipped, rows new (accepted,
        quarantined, pending, duplicates), rows placed from pending, warnings; a header
        line first, and the overdue-pending WARNING line last when there is one."""
        lines = [f"{'feed':<18}{'files new':>10}{'skipped':>9}{'rows new':>11}{'accepted':>11}"
                 f"{'quarantined':>12}{'pending':>9}{'duplicates':>11}{'placed':>8}"
                 f"{'warnings':>10}"]
        for name in FEED_NAMES:
            s = self.feeds.get(name) or FeedSummary(name)
            note = "  (not delivered)" if name in self.missing_optional_feeds else ""
            lines.append(
                f"{name:<18}{s.files:>10,}{s.files_skipped:>9,}{s.rows:>11,}{s.accepted:>11,}"
                f"{s.quarantined:>12,}{s.pending:>9,}{s.duplicates:>11,}{s.placed:>8,}"
                f"{s.warnings.total():>10,}{note}"
            )
        overdue = self.overdue_warning()
        return [*lines, overdue] if overdue else lines

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["feeds"] = {name: {**asdict(s), "violations": dict(sorted(s.violations.items())),
                                "warnings": dict(sorted(s.warnings.items())),
                                "accepted_by_month": dict(sorted(s.accepted_by_month.items()))}
                         for name, s in self.feeds.items()}
        data.pop("rejections", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def to_text(self) -> str:
        mode = "validation (nothing written)" if self.dry_run else "ingest"
        lines = [f"doudi {mode} run {self.run_id}", f"  raw folder: {self.raw_dir}"]
        new_files = [f for f in self.files if f.skipped is None]
        skipped = [f for f in self.files if f.skipped is not None]
        copies = sum(1 for f in skipped if not f.skipped_as_ingested)
        lines.append(
            f"  files read: {len(new_files)}; skipped: {len(skipped) - copies} already "
            f"ingested, {copies} same content as another file of this delivery"
        )
        lines += [f"  {line}" for line in self.feed_table()]
        for title, attr in (("rule violations (quarantined; feed, rule, cells):", "violations"),
                            ("warnings (rows kept; feed, rule, cells):", "warnings")):
            counted = [f"    {s.feed:<20}{rule:<24}{count:>9,}"
                       for s in self.feeds.values()
                       for rule, count in sorted(getattr(s, attr).items())]
            if counted:
                lines.append(f"  {title}")
                lines += counted
        persons = self.feeds.get("persons")
        if persons and (persons.sex_disagreements or persons.birth_date_disagreements):
            lines.append(
                f"  persons disagreeing with their ID number (ID wins): sex "
                f"{persons.sex_disagreements:,}, birth_date {persons.birth_date_disagreements:,}"
            )
        if self.unknown_columns:
            lines.append("  unknown columns (kept out of the warehouse; files):")
            counted_columns = Counter((u.feed, u.column, u.sensitive)
                                      for u in self.unknown_columns)
            for (feed, column, sensitive), files in sorted(counted_columns.items()):
                note = " [sensitive: values never read]" if sensitive else ""
                lines.append(f"    {feed}: {column}{note} in {files} file(s)")
        if self.missing_optional_feeds:
            missing = ", ".join(self.missing_optional_feeds)
            lines.append(f"  optional feeds not delivered: {missing}")
        if self.unknown_paths:
            lines.append("  WARNING: unknown entries, not read (--allow-unknown):")
            lines += [f"    {p}" for p in self.unknown_paths]
        if self.hidden_paths:
            lines.append("  hidden or system files, not read: " + ", ".join(self.hidden_paths))
        if self.linked_paths:
            lines.append("  symbolic links inside the raw folder, followed: "
                         + "; ".join(self.linked_paths))
        waiting = [s for s in self.feeds.values() if s.pending_total]
        if waiting:
            lines.append("  rows waiting for their household/person (pending/): " + ", ".join(
                f"{s.feed} {s.pending_total:,}" for s in waiting))
        return "\n".join(lines) + "\n"


@dataclass
class IngestReport(RunReport):
    report_paths: list[str] = field(default_factory=list)


@dataclass
class ValidationReport(RunReport):
    rejections: list[Rejection] = field(default_factory=list)

    def rejections_jsonl(self) -> str:
        return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.rejections)
