"""Scoring one household with records the platform just collected (not in the warehouse).

`score_fresh(settings, as_of, household_key, rows, artifact=..., model_version=...)`
answers what `doudi score` would say about one household as of month end T had `rows` (a
caseworker's income check, a new hospital bill, ...) been ingested by T. Nothing is written:
not to the warehouse, the vault, the quarantine, the pending rows nor the alert store.

The request (`rows`): feed name -> list of rows, each a mapping of the contract's column
names (canonical or Chinese alias, docs/data-contract.md) to raw values as a department
delivers them. Values are read as the text a CSV extract would hold (`true`/`false` for
booleans, numbers as Python writes them), so they pass exactly the row checks ingest applies
to a CSV file (`ingest.checks.parse_batch`: IDs, codes, enums, dates, money, ranges,
control characters, missing values); ingest's header rules apply per row (a column given
twice, once by name and once by alias; required columns). Beyond ingest:

- an unknown column is refused, not dropped: a misspelt optional column would otherwise
  silently change nothing;
- every row must concern the household: household-level rows and `persons` rows name it
  (`household_id`), person-level rows name a person whom the latest `persons` row known at
  T (warehouse or request) places in it; `divisions` is not household data;
- a households row may move the household within its county, not to another county;
- point in time: a row whose event (the feed's event column: claim month, check period,
  status date, ...) is after T is refused. The contract counts at T only what happened by
  T; counting it would use the future, ignoring it would answer a score that silently
  leaves out what the caller sent. The rows' own `reported_date` is checked like ingest
  checks it, then the rows count as reported at T (the newest version of their record):
  the platform collected them after the warehouse's delivery for T, and T is the latest
  month that can be scored.

Any problem refuses the whole request: `FreshRowsError` (a `BadRequestError`, HTTP 400)
lists every problem as feed, row index, column and rule (`RowProblem`), never a value.
ID numbers and household numbers are replaced by ingest's keyed pseudonyms
(`ingest.pseudonyms.Pseudonymiser`, the workspace key) as soon as they are checked; the
raw values are never returned, logged or stored.

Features: the county's warehouse rows are read as `features.county.load_county` reads them
(`county_frames`), the request's rows appended, and `history_from_frames` +
`county_features` + `county_labels` (scope) build the whole county as of T: one feature
implementation. The whole county, not the household alone, because some features are
areas' (`village_identified_share_12m`, `village_shock_share_3m`, `county_unemployed_share_*`,
`county_disaster_loss_3m_per_household`, the `<feed>_feed_missing` indicators) and the new
rows count in them too. The county's block of the month's scoring table is replaced by the
rebuilt one and `serving.scoring.score` scores the province, so rank, tier, types,
departments and reasons are those of the month's scoring; a household that is not alerted
gets its reasons computed now, as the API does (`scoring._reasons`, county medians at T).

Several rows for one record: the later in the request wins (source_row). The answer's
`seconds` says where the time went. Measured (2 shared cores, load ~3, one thread, a bill
added; `CountyCache` warm / cold): small test province (300 households, county of 94 in
scope) 0.10 / 0.25 s; 30,000 households (county of 10k, 26,778 in scope, 200-tree model)
2.3 / 2.7 s, of which `score` 1.6-1.8 s (it explains all 1,875 alerts of the province:
TreeSHAP 1.2 s, predicting the province 0.3 s), the county's features 0.55 s, the read
0.38 s (0.01 s from the cache). Restricting the history to the household would not keep
the area features identical, so the county is rebuilt whole.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import features
from doudi.contract import FEED_NAMES, Feed, feed
from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import table_schema, warehouse_name
from features import county as features_county
from features.asof import (
    event_dates,
    feed_columns,
    partition_files,
    read_feed_as_of,
    require_delivered,
    versioned_from_frame,
)
from features.build import county_features
from features.county import WINDOWED_FEEDS, history_from_frames
from features.labels import county_labels
from ingest.checks import RULE_MESSAGES, parse_batch
from ingest.names import safe_label
from ingest.pipeline import _Run
from ingest.pseudonyms import KIND_OF_COLUMN, Pseudonymiser, load_key
from ingest.report import FeedSummary
from serving import scoring
from serving.api import key_problem
from serving.api_models import BadRequestError, NotFoundError
from serving.explain import ExplainedReason, Explainer

__all__ = [
    "FRESH_RULES",
    "MAX_ROWS",
    "CountyCache",
    "FreshRowsError",
    "FreshScore",
    "RowProblem",
    "county_frames",
    "score_fresh",
]

log = logging.getLogger(__name__)

MAX_ROWS = 1000  # rows in one request, all feeds together
MAX_PROBLEMS_SHOWN = 10  # in the error's message; `FreshRowsError.problems` has them all
# Provenance of the request's rows. Versions of one record reported on the same day are
# ordered by source file (features.asof): this sorts after every warehouse file reference
# (`ingest.names.safe_name`: ASCII and CJK only), so the request's row is the newest.
REQUEST_SOURCE = "\uffffrequest"
PROVENANCE = ("source_file", "source_row")

# Refusals that are not ingest's row rules (those are `ingest.checks.RULES`).
FRESH_RULES: dict[str, str] = {
    "unknown_feed": "not a feed of the contract",
    "not_household_data": "the divisions feed names areas, not a household's records",
    "not_a_list": "a feed's rows must be a list of rows",
    "not_a_row": "a row must be an object of column -> value",
    "too_many_rows": f"more than {MAX_ROWS} rows in one request",
    "unknown_column": "not a column of this feed (canonical name or Chinese alias)",
    "duplicate_column": "column given twice (by its name and by its alias)",
    "missing_column": "required column is absent",
    "not_a_scalar": "value must be a string, number, boolean or null",
    "other_household": "names another household than the one scored",
    "not_a_member": "person is not a member of the scored household at the month's end "
                    "(no persons row known by then, in the warehouse or this request, "
                    "places them there)",
    "other_county": "moves the household to another county: ingest it, then score",
    "after_as_of": "the event is after the as-of month's end: a month's score counts only "
                   "what happened by then",
}


# -- problems ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowProblem:
    """One refused (or, for ingest's warning rules, noted) cell or row. Never holds a value."""

    feed: str
    row: int | None  # index in the feed's list (None: the feed as a whole)
    column: str | None  # canonical column name (None: the row as a whole)
    rule: str  # an `ingest.checks.RULES` code or a `FRESH_RULES` code
    message: str

    def __str__(self) -> str:
        where = self.feed + ("" if self.row is None else f"[{self.row}]")
        where += "" if self.column is None else f".{self.column}"
        return f"{where}: {self.rule} ({self.message})"


def _problem(feed_name: str, row: int | None, column: str | None, rule: str) -> RowProblem:
    return RowProblem(feed_name, row, column, rule,
                      FRESH_RULES.get(rule) or RULE_MESSAGES.get(rule, rule))


class FreshRowsError(BadRequestError):
    """The request's rows are refused (HTTP 400); `problems` lists every one."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        tail = f" (and {more} more)" if more > 0 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the rows, nothing scored: "
                         f"{shown}{tail}")


# -- the request's rows as a department's extract ------------------------------------------
@dataclass
class _Feed:
    """One feed of the request, checked: contract columns as Arrow, then pseudonymised."""

    spec: Feed
    n: int
    raw: dict[str, pa.Array] = field(default_factory=dict)
    frame: pd.DataFrame | None = None  # warehouse columns + provenance


def _text(value: object) -> str | None:
    """A JSON value as a CSV extract would hold it (None: an empty cell)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "NaN"  # not a number: bad_number
    raise TypeError


def _shape(rows: Mapping[str, Any]) -> tuple[list[_Feed], list[RowProblem]]:
    """The request's feeds with their columns as Arrow text arrays, and shape problems.

    Header rules as `ingest.reading` applies them to a file, per row: canonical name or
    alias (surrounding spaces ignored), a column named twice is refused, every required
    column present; unknown columns are refused (see the module docstring)."""
    problems: list[RowProblem] = []
    feeds: list[_Feed] = []
    if not isinstance(rows, Mapping):
        raise BadRequestError("rows must be an object: feed name -> list of rows")
    if sum(len(v) for v in rows.values() if isinstance(v, list)) > MAX_ROWS:
        raise FreshRowsError([_problem("rows", None, None, "too_many_rows")])
    for position, (name, listed) in enumerate(rows.items()):
        if name not in FEED_NAMES:
            shown = safe_label(str(name)) if isinstance(name, str) else f"#{position}"
            problems.append(_problem(shown, None, None, "unknown_feed"))
            continue
        if name == "divisions":
            problems.append(_problem(name, None, None, "not_household_data"))
            continue
        if not isinstance(listed, list):
            problems.append(_problem(name, None, None, "not_a_list"))
            continue
        spec = feed(name)
        lookup = spec.header_lookup()
        cells: dict[str, list[str | None]] = {c.name: [None] * len(listed)
                                              for c in spec.contract_columns}
        for i, row in enumerate(listed):
            if not isinstance(row, Mapping):
                problems.append(_problem(name, i, None, "not_a_row"))
                continue
            seen: set[str] = set()
            for header, value in row.items():
                canonical = lookup.get(header.strip().lstrip("\ufeff")) \
                    if isinstance(header, str) else None
                if canonical is None:
                    problems.append(_problem(name, i, safe_label(str(header)), "unknown_column"))
                    continue
                if canonical in seen:
                    problems.append(_problem(name, i, canonical, "duplicate_column"))
                    continue
                seen.add(canonical)
                try:
                    cells[canonical][i] = _text(value)
                except TypeError:
                    problems.append(_problem(name, i, canonical, "not_a_scalar"))
            problems += [_problem(name, i, c.name, "missing_column")
                         for c in spec.columns if not c.nullable and c.name not in seen]
        feeds.append(_Feed(spec, len(listed),
                           {c: pa.array(v, pa.string()) for c, v in cells.items()}))
    return feeds, problems


def _check(item: _Feed, key: bytes, as_of: date) -> tuple[list[RowProblem], list[RowProblem]]:
    """Ingest's row checks, then pseudonyms: (problems, warnings). Sets `item.frame` (the
    rows as the warehouse holds them, reported at `as_of`) when the rows are all good."""
    spec, n = item.spec, item.n
    parsed = parse_batch(spec, item.raw, n, today=date.today())
    item.raw = {}  # raw identifiers go no further than the checks
    problems = [_problem(spec.name, int(i), v.column, v.rule)
                for v in parsed.violations for i in np.flatnonzero(v.mask)]
    warnings = [_problem(spec.name, int(i), w.column, w.rule)
                for w in parsed.warnings for i in np.flatnonzero(w.mask)]
    if problems or n == 0:
        return problems, warnings
    pseudonyms = Pseudonymiser(key)  # no vault: HMAC of each identifier, as ingest issues
    columns: dict[str, pa.Array] = {}
    for name in spec.column_names:
        kind = KIND_OF_COLUMN.get(name)
        if kind == "person":
            values, _ = pseudonyms.persons(parsed.values[name], parsed.id_digits[name].code)
        elif kind == "household":
            values, _ = pseudonyms.households(parsed.values[name])
        else:
            values = parsed.values[name]
        columns[warehouse_name(name)] = values
    pseudonyms.take_issued()  # (pseudonym, identifier) pairs: not kept, not stored
    if spec.name == "persons":  # sex and birth date as ingest stores them: the ID number's
        _Run._facts_from_id(parsed, np.ones(n, dtype=bool), columns, FeedSummary(spec.name))
    columns["reported_date"] = pa.array([as_of] * n, pa.date32())
    columns["source_file"] = pa.array([REQUEST_SOURCE] * n, pa.string())
    columns["source_row"] = pa.array(np.arange(n), pa.int64())
    wanted = [*feed_columns(spec.name), *PROVENANCE]
    schema = table_schema(spec.name)
    table = pa.table({c: columns[c].cast(schema.field(c).type) for c in wanted})
    item.frame = table.to_pandas(date_as_object=False)
    return problems, warnings


# -- the county as `load_county` reads it ------------------------------------------------
def county_frames(warehouse: Path, county: str, as_of: date) -> dict[str, pd.DataFrame]:
    """The county's warehouse rows `load_county(warehouse, county, as_of, as_of)` reads, as
    the frames it hands to `history_from_frames` (tests/serving/test_fresh.py holds the two
    to the same features)."""
    return features_county.county_frames(warehouse, county, as_of, as_of)


def _files_stamp(warehouse: Path, county: str, as_of: date) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every partition file `county_frames` reads: changes on ingest."""
    since = features_county.history_since(as_of)
    stamp = []
    for name in FEED_NAMES:
        for path in partition_files(warehouse, name, county, as_of,
                                    since if name in WINDOWED_FEEDS else None):
            try:
                st = Path(path).stat()
            except FileNotFoundError:  # compacted away since listed: the stamp changes anyway
                continue
            stamp.append((path, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


class CountyCache:
    """The warehouse rows of the last `size` counties read (per as-of month), re-read when
    one of the county's partition files changes. Thread-safe; the frames are shared, and
    `history_from_frames` copies them, so nobody modifies them."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._frames: OrderedDict[tuple[str, str, date], tuple[Any, dict[str, pd.DataFrame]]] = (
            OrderedDict())
        self.reads = 0  # counties read from the warehouse (misses)

    def frames(self, warehouse: Path, county: str, as_of: date) -> dict[str, pd.DataFrame]:
        key = (str(warehouse), county, as_of)
        stamp = _files_stamp(warehouse, county, as_of)
        with self._lock:
            hit = self._frames.get(key)
            if hit is not None and hit[0] == stamp:
                self._frames.move_to_end(key)
                return hit[1]
        frames = county_frames(warehouse, county, as_of)
        with self._lock:
            self.reads += 1
            self._frames[key] = (stamp, frames)
            self._frames.move_to_end(key)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frames


# -- the household's place: county, membership ----------------------------------------------
def _county_of(warehouse: Path, household: str, as_of: date, month_table: pd.DataFrame,
               request: pd.DataFrame | None) -> tuple[str | None, list[RowProblem]]:
    """The household's county at T: the month's scoring table's (in scope at T), else its
    latest roster row (warehouse), else the request's households rows; a request row in
    another county is a problem."""
    known = month_table.loc[month_table["household_key"] == household, "county_code"]
    if not len(known):  # out of scope at T (the rows may bring it in): the roster says
        roster = read_feed_as_of(warehouse, "households", as_of,
                                 columns=["household_key", "county_code"])
        known = roster.loc[roster["household_key"] == household, "county_code"]
    county = str(known.iloc[0]) if len(known) else None
    problems = []
    if request is not None:
        counties = request["village_code"].astype(str).str[:6].tolist()
        county = county or counties[0]
        problems = [_problem("households", i, "village_code", "other_county")
                    for i, c in enumerate(counties) if c != county]
    return county, problems


def _ownership(checked: Sequence[_Feed], household: str, persons: pd.DataFrame,
               as_of: date) -> list[RowProblem]:
    """Rows naming another household, people not in the household, events after T."""
    problems: list[RowProblem] = []
    request_people: set[str] = set()
    for item in checked:
        if item.spec.person_level and item.spec.name != "persons":
            assert item.frame is not None
            request_people |= set(item.frame["person_key"])
    members: set[str] = set()
    if request_people:
        # the person's latest state known at T decides, with the request's persons rows
        # counted: the contract's version order (features.asof), not a second one here
        latest = versioned_from_frame(
            "persons", persons[persons["person_key"].isin(request_people)]).as_of(as_of)
        members = set(latest.loc[latest["household_key"] == household, "person_key"])
    end = np.datetime64(as_of, "D")
    for item in checked:
        frame, spec = item.frame, item.spec
        assert frame is not None
        if "household_key" in frame:
            problems += [_problem(spec.name, int(i), "household_id", "other_household")
                         for i in np.flatnonzero(frame["household_key"].to_numpy() != household)]
        elif spec.person_level:
            problems += [_problem(spec.name, int(i), "person_id", "not_a_member")
                         for i in np.flatnonzero(~frame["person_key"].isin(members).to_numpy())]
        events = event_dates(spec.name, frame)
        if events is not None:
            assert spec.event_column is not None
            problems += [_problem(spec.name, int(i), spec.event_column, "after_as_of")
                         for i in np.flatnonzero(events > end)]
    return problems


# -- the answer --------------------------------------------------------------------------
@dataclass(frozen=True)
class FreshScore:
    """One household scored with the request's rows (pseudonymous: no raw identifier)."""

    household_key: str
    as_of: Month
    scored: dict[str, Any]  # its row of `serving.scoring.score`'s output (SCORE_COLUMNS)
    reasons: list[ExplainedReason]  # the alert's reasons, or computed now when not alerted
    features: dict[str, Any]  # its row of the scoring table, with the rows added
    in_scope: int  # in-scope households of the province: the rank is among them
    alerted: int  # alerted households of the province, with the rows added
    rows_added: dict[str, int]  # feed -> rows counted
    warnings: tuple[RowProblem, ...]  # ingest's warning rules (rows kept, as ingest keeps them)
    seconds: dict[str, float]  # where the time went


def _county_table(history_frames: dict[str, pd.DataFrame], county: str, as_of: date,
                  settings: Settings) -> pd.DataFrame:
    """The county's in-scope households with their features, as `features.scoring_table`
    holds them (features; scope from `county_labels`; sorted by household key)."""
    history = history_from_frames(county, history_frames)
    feats = county_features(history, as_of, settings)
    scope = county_labels(history, as_of, as_of, settings.horizon_months)
    in_scope = set(scope.loc[scope["in_scope"].to_numpy(), "household_key"])
    table = feats[feats["household_key"].isin(in_scope).to_numpy()]
    return table.sort_values(["as_of", "household_key"], kind="stable", ignore_index=True)


def score_fresh(
    settings: Settings,
    as_of: Month,
    household_key: str,
    rows: Mapping[str, Any] | None,
    *,
    artifact: ModelArtifact,
    model_version: str,
    explainer: Explainer | None = None,
    month_table: pd.DataFrame | None = None,
    cache: CountyCache | None = None,
) -> FreshScore:
    """Score `household_key` as of `as_of` with `rows` (feed -> list of contract rows)
    added to what the warehouse holds; nothing is written anywhere.

    `month_table`: the month's `features.scoring_table` (the service's cached month; built
    here when None). `cache`: a `CountyCache` shared between calls. Raises
    `FreshRowsError` (400: every problem of the rows), `BadRequestError` (400: not a
    household pseudonym, a month in the future) or `NotFoundError` (404: no data for the
    month, household not on the roster or not in scope with the rows)."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    problem = key_problem(household_key)
    if problem is not None:
        raise BadRequestError(f"household_key {problem}")
    end = as_of.end
    if as_of > Month.today():
        raise BadRequestError(f"as_of {as_of} is in the future (this month is {Month.today()})")
    warehouse = settings.warehouse_dir
    key = load_key(settings.key_file, create=False)
    if key is None:
        raise NotFoundError(f"the warehouse has no data yet; nothing to score as of {as_of}")
    checked, problems = _shape(rows or {})
    warnings: list[RowProblem] = []
    for item in checked:
        bad, odd = _check(item, key, end)
        problems += bad
        warnings += odd
    if problems:
        raise FreshRowsError(problems)
    adding = [item for item in checked if item.frame is not None and len(item.frame)]
    request = {item.spec.name: item.frame for item in adding if item.frame is not None}
    seconds["check"] = time.perf_counter() - started

    mark = time.perf_counter()
    if month_table is None:
        try:
            require_delivered(warehouse, as_of)
        except UserError as err:  # nothing delivered for that month yet
            raise NotFoundError(str(err)) from err
        month_table = features.scoring_table(warehouse, as_of, settings)
    county, problems = _county_of(warehouse, household_key, end, month_table,
                                  request.get("households"))
    if county is None:
        raise NotFoundError(f"household {household_key} is not on the roster as of {as_of} "
                            "(and no households row in the request places it)")
    frames = (cache.frames(warehouse, county, end) if cache is not None
              else county_frames(warehouse, county, end))
    seconds["read"] = time.perf_counter() - mark
    combined = dict(frames)
    for name, frame in request.items():
        combined[name] = pd.concat([frames[name], frame], ignore_index=True)
    problems += _ownership(adding, household_key, combined["persons"], end)
    if problems:
        raise FreshRowsError(problems)
    seconds["rows"] = time.perf_counter() - mark - seconds["read"]

    mark = time.perf_counter()
    county_table = _county_table(combined, county, end, settings)
    seconds["features"] = time.perf_counter() - mark
    if not (county_table["household_key"] == household_key).any():
        raise NotFoundError(f"household {household_key} is not in scope as of {as_of} with "
                            "these rows (under monitoring, in a tekun spell, or no living "
                            "member)")
    if list(month_table.columns) != list(county_table.columns):
        raise ValueError("month_table is not a features.scoring_table")
    others = month_table[month_table["county_code"].to_numpy() != county]
    table = pd.concat([others, county_table], ignore_index=True).sort_values(
        "county_code", kind="stable", ignore_index=True)  # counties in code order, as built
    seconds["table"] = time.perf_counter() - mark - seconds["features"]

    mark = time.perf_counter()
    explainer = explainer or Explainer(artifact, max_reasons=settings.max_reasons)
    scored = scoring.score(table, artifact, settings, end, model_version=model_version,
                           explainer=explainer)
    i = int(np.flatnonzero(scored["household_key"].to_numpy() == household_key)[0])
    row = {str(k): v for k, v in scored.iloc[i].to_dict().items()}
    reasons: list[ExplainedReason] = list(row["reasons"])
    if not row["alerted"]:  # reasons on demand, exactly as score computes an alert's
        reasons = scoring._reasons(table, artifact.encode(table), np.array([i]), artifact,
                                   explainer, 1)[i]
    seconds["score"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    log.info("fresh score: %d row(s) in %d feed(s), %d in-scope households, %.2fs",
             sum(len(f) for f in request.values()), len(request), len(scored),
             seconds["total"])
    features_row = {str(k): v for k, v in table.iloc[i].to_dict().items()}
    return FreshScore(
        household_key=household_key, as_of=as_of, scored=row, reasons=reasons,
        features=features_row, in_scope=len(scored), alerted=int(scored["alerted"].sum()),
        rows_added={name: len(frame) for name, frame in request.items()},
        warnings=tuple(warnings), seconds=seconds,
    )
