"""The scoring API's logic, free of any web framework (`serving/service.py` is the thin
BentoML layer on top; docs/api.md describes the HTTP side).

`RiskLookup(settings)` answers the provincial monitoring platform:

- `score(as_of, household_keys, explain, limit)` (`as_of` a `doudi.months.Month`, parsed
  by the caller: `serving/service.py` for HTTP): risk, rank, tier, types, departments,
  rules and reasons. Tiers are ranks within the whole province, so a subset cannot be
  scored alone: the first request for a month scores every in-scope household (exactly
  what `serving.scoring.score_month` does) and caches the scored frame and the encoded
  feature matrix of that one month; later requests for it are lookups. Households that
  were not alerted get their reasons on demand (TreeSHAP for those rows only).
- `fresh(as_of, household_key, rows)`: one household scored with records the platform
  collected but not yet delivered (`serving.fresh.score_fresh`: ingest's checks, the
  county's features rebuilt with the rows, the province scored; nothing written), with the
  month's cached scoring table and a shared `CountyCache`.
- `model_info()`: what is being served (version, training window, test-fold metrics,
  workspace, and whether the local copy stands in for the registry).
- `alerts(...)`: the alert store's lifecycle view, filtered (division, tier, risk type,
  status, month) and paged by an opaque cursor (`AlertsPage`).
- `verdicts(rows, actor)` / `refer(alert_id, ...)`: caseworkers' verdicts (the rules of
  `doudi feedback import`, `serving.store.feedback`: idempotent by alert id, all or
  nothing) and referrals to the departments (`AlertStore.refer`).

Each answer takes an `area` (`serving.access.Area`; None: the whole province): a
household or alert outside it is answered exactly as an unknown one (listed in `missing`,
a 404 from `explain`, `fresh`, `verdicts` and `refer`, left out of `alerts`), and a
month's counts and alert list are the area's.

The model is loaded by `doudi.registry.load_served`: when the registry cannot be reached
at start-up, the local copy of the last served model stands in (`model_info().source`,
`/readyz`). The model URI is re-resolved at most every `settings.api_model_refresh_seconds`,
in a background thread, never on a request's path: a new registry version (a new champion
after the monthly retrain, `doudi promote`) is loaded and the cached month scored with it
before the two are swapped in together, so no request waits or fails for the switch; a
registry outage during a refresh is logged and the current model kept.

Privacy: households are addressed by pseudonym (`h_` + 20 hex) only. Keys that look like
raw identifiers (an 18-character ID number, a household number) are rejected without
being echoed: re-identification happens only in the audited caseworker export.

Errors the caller can fix raise `BadRequestError` (HTTP 400) or `NotFoundError` (HTTP 404).
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import features
from doudi import registry
from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import latest_delivered_month
from ingest.pseudonyms import DIGEST_HEX, PREFIX
from serving import scoring
from serving.access import Area
from serving.api_models import (
    DEFAULT_LIMIT,
    AlertOut,
    AlertsPage,
    ApiError,
    BadRequestError,
    ConflictError,
    FreshRisk,
    HouseholdRisk,
    ModelInfo,
    NotFoundError,
    ProblemsError,
    ReasonOut,
    ReferralOut,
    RowProblemOut,
    ScoreResponse,
    TrainingWindow,
    VerdictsOut,
)
from serving.explain import (
    PROBABILITY_POINTS,
    ExplainedReason,
    Explainer,
    county_medians,
    reference_rows,
)

__all__ = [
    "AlertFilters",
    "AlertsPage",
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "FreshRisk",
    "HouseholdRisk",
    "ModelInfo",
    "NotFoundError",
    "ProblemsError",
    "ReasonOut",
    "RiskLookup",
    "ScoreResponse",
    "check_keys",
    "key_problem",
]

log = logging.getLogger(__name__)

HOUSEHOLD_PREFIX = PREFIX["household"]
_HOUSEHOLD_KEY = re.compile(rf"^{re.escape(HOUSEHOLD_PREFIX)}[0-9a-f]{{{DIGEST_HEX}}}$")
_PERSON_KEY = re.compile(rf"^{re.escape(PREFIX['person'])}[0-9a-f]{{{DIGEST_HEX}}}$")
_ID_NUMBER = re.compile(r"^(\d{17}[\dXx]|\d{15})$")  # 居民身份证号码: GB 11643, old 15-digit
_RAW_NUMBER = re.compile(r"^[0-9A-Za-z-]*\d{6}[0-9A-Za-z-]*$")  # 户编号-like: a long digit run
_TOWNSHIP = re.compile(r"^\d{9}$")
_DIVISION = re.compile(r"^(\d{6}|\d{9}|\d{12})$")  # county, township or village code
_REFERRED_ON = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_CACHED_AREAS = 1024  # areas whose alert lists a cached month keeps
ALERT_TIERS = ("red", "orange", "yellow")
CURSOR_VERSION = 1
# The test-fold metrics /model reports, from the artifact's meta.json `test_metrics`.
TEST_METRICS = ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "brier", "ece",
                "calibration_slope", "positives", "n")
SERVED_TAGS = "served-model-tags.json"  # beside the served copy: its registry version's tags
API_SOURCE = "api"  # a verdict's `source_file` when it came through the API
PSEUDONYMS_ONLY = (
    "the API takes household pseudonyms only (h_ followed by "
    f"{DIGEST_HEX} lowercase hex characters): raw identifiers never travel through it, "
    "re-identification happens only in the audited caseworker export"
)


# -- validation ----------------------------------------------------------------------------
# Error messages name the field and the rule, never the value: a caller may have put a raw
# ID number or a name anywhere (key_problem describes a rejected key without repeating it).
def key_problem(key: str) -> str | None:
    """None for a household pseudonym, else what is wrong (without repeating the key)."""
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a string"
    if _HOUSEHOLD_KEY.match(key):
        return None
    text = key.strip()
    if _ID_NUMBER.match(text):
        return f"looks like a resident ID number (身份证号): {PSEUDONYMS_ONLY}"
    if _PERSON_KEY.match(text):
        return "is a person pseudonym (p_...): pass the household's pseudonym (h_...)"
    if _RAW_NUMBER.match(text) and not text.lower().startswith(HOUSEHOLD_PREFIX):
        return f"looks like a raw household number (户编号): {PSEUDONYMS_ONLY}"
    if _HOUSEHOLD_KEY.match(text.lower()):
        return "is not a household pseudonym: pseudonyms are lowercase, without spaces"
    return (
        f"is not a household pseudonym (expected {HOUSEHOLD_PREFIX} followed by "
        f"{DIGEST_HEX} lowercase hex characters)"
    )


def check_keys(keys: Sequence[str], max_households: int) -> list[str]:
    """The keys, de-duplicated in request order; BadRequestError when any is not a pseudonym."""
    if isinstance(keys, str):
        raise BadRequestError("household_keys must be a list of pseudonyms, not one string")
    if len(keys) == 0:
        raise BadRequestError(
            "household_keys is empty: leave it out (null) to get the month's alerted households"
        )
    if len(keys) > max_households:
        raise BadRequestError(
            f"{len(keys)} household keys in one request; at most "
            f"{max_households} (settings.api_max_households): split the request"
        )
    problems = [(i, p) for i, k in enumerate(keys) if (p := key_problem(k)) is not None]
    if problems:
        shown = "; ".join(f"household_keys[{i}] {p}" for i, p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BadRequestError(
            f"{len(problems)} of {len(keys)} household key(s) rejected: {shown}{more}"
        )
    return list(dict.fromkeys(keys))


def _check_limit(limit: int, max_households: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_households:
        raise BadRequestError(f"limit must be an integer from 1 to {max_households}")
    return limit


def settle_heap() -> None:
    """Collect once, then keep what is cached now (the model, the month: millions of
    objects) out of the cyclic collector's sight. Without it a full collection every
    ~20 s walks them all, 270-490 ms during which requests queue: p99 146 ms against
    7.7 ms with it (docs/benchmarks.md "Scoring API under load"). Called after each
    month or model swap; unfreezing first lets the previous ones be collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


# -- the lookup ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Model:
    uri: str
    artifact: ModelArtifact
    version: str
    explainer: Explainer
    loaded_at: datetime
    source: str  # "registry", "local_copy" or "folder"
    fallback: str | None  # why the local copy stands in (source "local_copy")
    tags: Mapping[str, str]  # the registry version's tags (the copy's, saved with it)


@dataclass(frozen=True)
class _Month:
    """One month scored with one model: read-only once built (shared between threads)."""

    as_of: Month
    model: _Model
    table: pd.DataFrame  # the month's `features.scoring_table` (fresh scoring rebuilds on it)
    scored: pd.DataFrame
    X: np.ndarray  # encoded features, rows as in `scored`
    medians: pd.DataFrame  # county medians at T: the reasons' comparison values
    columns: dict[str, list[Any]]  # scored columns as Python lists (fast row access)
    row_of: dict[str, int]
    alert_rows: list[int]  # alerted rows by rank
    tiers: dict[str, int]  # alerted households by tier (the province)
    seconds: float
    # per area: (in-scope households, alerted rows by rank); filled on first use, bounded
    by_area: dict[Area, tuple[int, list[int]]] = field(default_factory=dict)
    per_township: dict[str, int] = field(default_factory=dict)  # in-scope households
    roster: dict[str, str] = field(default_factory=dict)  # household -> village at T (lazy)

    def in_area(self, area: Area) -> tuple[int, list[int]]:
        """(in-scope households, alerted rows by rank) of an area: its townships' counts
        (one pass over the month, once) and the month's alerts filtered."""
        found = self.by_area.get(area)
        if found is None:
            if not self.per_township:
                counts: dict[str, int] = {}
                for v in self.columns["village_code"]:
                    counts[v[:9]] = counts.get(v[:9], 0) + 1
                self.per_township.update(counts)
            townships = {t for t in self.per_township if area.covers_township(t)}
            villages = self.columns["village_code"]
            found = (
                sum(self.per_township[t] for t in townships),
                [i for i in self.alert_rows if villages[i][:9] in townships],
            )
            if len(self.by_area) >= MAX_CACHED_AREAS:
                self.by_area.clear()
            self.by_area[area] = found  # two threads may both compute it: same answer
        return found

    def village_of(self, household_key: str, warehouse: Path) -> str | None:
        """The household's village at T: the month's (in scope), else its roster row in the
        warehouse (read once per month), else None (not on the roster)."""
        i = self.row_of.get(household_key)
        if i is not None:
            return str(self.columns["village_code"][i])
        if not self.roster:
            from features.asof import read_feed_as_of

            roster = read_feed_as_of(warehouse, "households", self.as_of,
                                     columns=["household_key", "village_code"])
            self.roster.update(zip(roster["household_key"].astype(str),
                                   roster["village_code"].astype(str), strict=True))
        return self.roster.get(household_key)


@dataclass(frozen=True)
class AlertFilters:
    """The `/alerts` filters, checked (`check`); their hash binds a cursor to them."""

    division: str | None = None  # 6-digit county, 9-digit township or 12-digit village code
    tier: str | None = None
    risk_type: str | None = None
    status: str | None = None
    month: Month | None = None

    @classmethod
    def check(cls, *, division: str | None = None, township: str | None = None,
              tier: str | None = None, risk_type: str | None = None, status: str | None = None,
              month: str | None = None) -> AlertFilters:
        """The filters from a request's fields; BadRequestError naming the field and rule.
        `township` (the field /alerts took first) is a 9-digit `division`."""
        from doudi.contract import RISK_TYPES
        from serving.store import Status

        if township is not None:
            if not (isinstance(township, str) and _TOWNSHIP.match(township)):
                raise BadRequestError("township must be a 9-digit township code")
            if division is not None and division != township:
                raise BadRequestError("give division or township, not both")
            division = township
        if division is not None and not (isinstance(division, str) and _DIVISION.match(division)):
            raise BadRequestError("division must be a 6-digit county, 9-digit township or "
                                  "12-digit village code")
        if tier is not None and tier not in ALERT_TIERS:
            raise BadRequestError(f"tier must be one of {', '.join(ALERT_TIERS)}")
        if risk_type is not None and risk_type not in RISK_TYPES:
            raise BadRequestError(f"risk_type must be one of {', '.join(RISK_TYPES)}")
        statuses = [s.value for s in Status]
        if status is not None and status not in statuses:
            raise BadRequestError(f"status must be one of {', '.join(statuses)}")
        return cls(division, tier, risk_type, status,
                   None if month is None else _parse_month(month, "month"))

    def digest(self) -> str:
        """A short hash of the filters (a cursor carries it)."""
        text = json.dumps([self.division, self.tier, self.risk_type, self.status,
                           None if self.month is None else str(self.month)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_month(value: object, what: str) -> Month:
    """A request's month field; the error names the rule, never the value."""
    if not isinstance(value, str):
        raise BadRequestError(f"{what} must be a month YYYY-MM")
    try:
        return Month.parse(value, what=what, allow_date=True)
    except UserError as err:  # "<what> <value>: <rule>"; no rule contains ": "
        raise BadRequestError(f"{what}: {str(err).rsplit(': ', 1)[-1]}") from None


def encode_cursor(last_id: int, filters: AlertFilters) -> str:
    """The opaque cursor after alert `last_id`, bound to `filters`."""
    raw = json.dumps({"v": CURSOR_VERSION, "after": last_id, "f": filters.digest()})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, filters: AlertFilters) -> int:
    """The alert id a cursor continues after; BadRequestError for a cursor this server did
    not issue, or one issued for other filters."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after, digest = data["after"], data["f"]
        if data.get("v") != CURSOR_VERSION or not isinstance(after, int) or after < 1:
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise BadRequestError("cursor is not one this server issued: pass next_cursor as "
                              "it came, or leave it out for the first page") from None
    if digest != filters.digest():
        raise BadRequestError("cursor was issued for other filters: repeat that request's "
                              "filters, or leave cursor out to start again")
    return int(after)


def _month_of(value: object) -> str | None:
    """YYYY-MM of a date or timestamp text ("2024-09-30T00:00:00", "2024-09-30")."""
    text = str(value or "")
    return text[:7] if re.match(r"^\d{4}-\d{2}", text) else None


class RiskLookup:
    """Risk scores and explanations for the monitoring platform (thread-safe)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        from serving.fresh import CountyCache

        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()  # the month cache (and the model it was built with)
        self._refresh_lock = threading.Lock()  # held by the one refresh running
        self._refresher: threading.Thread | None = None
        self._store_lock = threading.Lock()
        self._write_lock = threading.Lock()  # verdicts and referrals: one at a time
        self._store: Any = None
        self._client: Any = None
        self._county_cache = CountyCache()
        self._model = self._load()
        self._checked = clock()
        self._month: _Month | None = None

    # -- the model -------------------------------------------------------------------
    def _load(self) -> _Model:
        """The served model (`doudi.registry.load_served`: the local copy when the registry
        cannot be reached), with its registry version's tags."""
        uri = registry.served_uri(self.settings)
        served = registry.load_served(uri, self.settings)
        artifact = served.artifact
        version = served.label or scoring.model_version_of(artifact)
        source = ("folder" if registry.parse_uri(uri) is None
                  else "local_copy" if served.fallback else "registry")
        tags = self._version_tags(served.label, fallback=served.fallback is not None)
        explainer = Explainer(artifact, max_reasons=self.settings.max_reasons)
        log.info("serving %s (%s, as of %s%s)", version, uri, artifact.meta.get("as_of"),
                 "; the local copy: the registry is unreachable" if served.fallback else "")
        return _Model(uri, artifact, version, explainer, datetime.now(UTC), source,
                      served.fallback, tags)

    def _version_tags(self, label: str | None, *, fallback: bool) -> dict[str, str]:
        """The registry version's tags (training window, test metrics), saved beside the
        served copy; read back from there when the copy stands in."""
        if label is None:
            return {}
        saved = self.settings.cache_dir / SERVED_TAGS
        if fallback:
            try:
                kept = json.loads(saved.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return dict(kept.get("tags", {})) if kept.get("label") == label else {}
        name, _, number = label.rpartition("/")
        if self._client is None:
            self._client = registry.client(self.settings.tracking_uri())
        mv = registry.resolve(self._client, registry.ModelRef(name, version=number),
                              registry.workspace(self.settings))
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        _write_json(saved, {"label": label, "tags": tags})
        return tags

    def _registry_version(self) -> str | None:
        """The version the served URI points at now; None when it cannot move (a folder,
        a fixed version number). Another workspace's version raises (kept serving)."""
        ref = registry.parse_uri(registry.served_uri(self.settings))
        if ref is None or not ref.alias:
            return None
        if self._client is None:
            self._client = registry.client(self.settings.tracking_uri())
        mv = registry.resolve(self._client, ref, registry.workspace(self.settings))
        return f"{mv.name}/{mv.version}"

    def _current(self) -> _Model:
        """The served model; starts a refresh in the background when
        `api_model_refresh_seconds` have passed (the request goes on with this model)."""
        if self._clock() - self._checked >= self.settings.api_model_refresh_seconds \
                and self._refresh_lock.acquire(blocking=False):
            try:
                thread = threading.Thread(target=self._refresh, name="doudi-model-refresh",
                                          daemon=True)
                self._refresher = thread
                thread.start()  # it releases the lock
            except BaseException:
                self._refresh_lock.release()
                raise
        return self._model

    def wait_for_refresh(self, timeout: float | None = None) -> None:
        """Wait for the refresh in progress, if any (tests, benchmarks)."""
        thread = self._refresher
        if thread is not None:
            thread.join(timeout)

    def _refresh(self) -> None:
        """Re-resolve the served URI; load a new version and score the cached month with
        it, then swap both in. Any failure (a registry outage) keeps the current model."""
        try:
            current = self._model
            version = self._registry_version()
            if version is None:
                return
            if version == current.version:
                if current.fallback is not None:  # the registry is back and agrees
                    log.info("the registry is reachable again; %s confirmed", version)
                    with self._lock:
                        self._model = _restamped(current)
                        if self._month is not None and self._month.model is current:
                            self._month = _with_model(self._month, self._model)
                return
            model = self._load()
            if model.fallback is not None:  # lost the registry between the two calls
                raise RuntimeError(model.fallback)
            month = self._month
            rescored = None
            if month is not None:
                try:  # before the swap: requests keep the old month until then
                    rescored = self._score_month(month.as_of, model)
                except Exception as err:
                    log.warning("could not score %s with %s (%s); scored on first request",
                                month.as_of, model.version, type(err).__name__)
            with self._lock:
                log.info("model changed: %s -> %s%s", self._model.version, model.version,
                         "; cached month rescored" if rescored is not None else "")
                self._model, self._month = model, rescored
            settle_heap()
        except Exception as err:  # the registry is down: keep serving what we have
            log.warning("could not re-resolve %s (%s); still serving %s",
                        self._model.uri, err, self._model.version)
        finally:
            self._checked = self._clock()
            self._refresh_lock.release()

    @property
    def served(self) -> tuple[str, str, str | None]:
        """(version, source, why the local copy stands in) of the model served now."""
        model = self._model
        return model.version, model.source, model.fallback

    def cached_tiers(self) -> tuple[str, dict[str, int]] | None:
        """(month end, alerted households by tier) of the cached month, if any."""
        month = self._month
        return None if month is None else (month.as_of.end.isoformat(), dict(month.tiers))

    # -- the month cache ---------------------------------------------------------------
    def _month_for(self, as_of: Month) -> _Month:
        self._current()  # may start a refresh; the swap happens under the lock
        with self._lock:
            model, month = self._model, self._month
            if month is None or month.as_of != as_of or month.model is not model:
                month = self._score_month(as_of, model)
                self._month = month
                settle_heap()
            return month

    def _score_month(self, as_of: Month, model: _Model) -> _Month:
        started = time.perf_counter()
        settings = self.settings
        table = self._scoring_table(as_of)
        scored = scoring.score(
            table,
            model.artifact,
            settings,
            as_of.end,
            model_version=model.version,
            explainer=model.explainer,
        )
        X = model.artifact.encode(table)
        medians = county_medians(table, model.artifact.feature_names)
        keys = scored["household_key"].astype(str).tolist()
        alerted = np.flatnonzero(scored["alerted"].to_numpy())
        by_rank = alerted[np.argsort(scored["rank"].to_numpy()[alerted], kind="stable")]
        columns = {c: scored[c].tolist() for c in scored.columns}
        tiers = dict.fromkeys(ALERT_TIERS, 0)
        for i in alerted.tolist():
            tier = str(columns["tier"][i])
            tiers[tier] = tiers.get(tier, 0) + 1
        seconds = time.perf_counter() - started
        log.info(
            "scored %d households as of %s with %s in %.1fs (%d alerted)",
            len(scored),
            as_of,
            model.version,
            seconds,
            len(alerted),
        )
        return _Month(
            as_of,
            model,
            table,
            scored,
            X,
            medians,
            columns,
            {k: i for i, k in enumerate(keys)},
            by_rank.tolist(),
            tiers,
            seconds,
        )

    def _scoring_table(self, as_of: Month) -> pd.DataFrame:
        """The month's scoring table; BadRequestError for a future month, NotFoundError
        when the warehouse has nothing (in scope) for it."""
        settings = self.settings
        latest = latest_delivered_month(settings.warehouse_dir)
        if as_of > Month.today():
            raise BadRequestError(f"as_of {as_of} is in the future (this month is {Month.today()})")
        if latest is None:
            raise NotFoundError(
                f"the warehouse has no data yet (run `doudi ingest`); "
                f"nothing to score as of {as_of}"
            )
        if as_of > latest:
            raise NotFoundError(
                f"as_of {as_of}: no data delivered for that month yet; the latest "
                f"delivered month is {latest}"
            )
        try:
            table = features.scoring_table(settings.warehouse_dir, as_of, settings)
        except UserError as err:  # e.g. no households table: nothing to score from
            raise NotFoundError(f"no scoring table for {as_of}: {err}") from err
        if len(table) == 0:
            raise NotFoundError(
                f"no in-scope households as of {as_of} (before the "
                "warehouse's first delivery, or nobody in scope)"
            )
        return table

    def scored_frame(self, as_of: Month) -> pd.DataFrame:
        """The cached full scoring of a month (as `serving.scoring.score` returns it)."""
        return self._month_for(as_of).scored

    # -- answers -------------------------------------------------------------------------
    def score(
        self,
        as_of: Month,
        household_keys: Sequence[str] | None = None,
        explain: bool = True,
        limit: int = DEFAULT_LIMIT,
        *,
        area: Area | None = None,
    ) -> ScoreResponse:
        """The month's alerted households by rank (no keys; at most `limit`), or the
        requested households (reasons computed on demand for those not alerted); within
        `area` (None: the province), whose households' counts the answer gives."""
        max_households = self.settings.api_max_households
        keys = None if household_keys is None else check_keys(household_keys, max_households)
        limit = _check_limit(limit, max_households)
        month = self._month_for(as_of)
        area = None if area is None or area.whole else area
        in_scope, alert_rows = (
            (len(month.scored), month.alert_rows) if area is None else month.in_area(area)
        )
        missing: list[str] = []
        if keys is None:
            rows = alert_rows[:limit]
        else:
            villages = month.columns["village_code"]
            rows = []
            for key in keys:
                i = month.row_of.get(key)
                # outside the area: exactly as unknown, so existence does not leak
                if i is None or (area is not None and not area.covers(villages[i])):
                    missing.append(key)
                else:
                    rows.append(i)
        reasons = self._reasons(month, rows) if explain else {}
        return ScoreResponse(
            as_of=as_of.end.isoformat(),
            model_version=month.model.version,
            in_scope=in_scope,
            alerted=len(alert_rows),
            households=[self._household(month, i, reasons.get(i, [])) for i in rows],
            missing=missing,
        )

    def explain(
        self, as_of: Month, household_key: str, *, area: Area | None = None
    ) -> HouseholdRisk:
        """One household with its reasons (up to settings.max_reasons), alerted or not;
        NotFoundError, the same for both, when it is unknown or outside `area`."""
        if not isinstance(household_key, str):
            raise BadRequestError("household_key must be one pseudonym (a string)")
        response = self.score(as_of, [household_key], explain=True, limit=1, area=area)
        if not response.households:
            raise NotFoundError(f"household {household_key} is not in scope as of {response.as_of}")
        return response.households[0]

    def _reasons(self, month: _Month, rows: Sequence[int]) -> dict[int, list[ExplainedReason]]:
        """Reasons for these rows: alerts' from the scoring, the others computed now,
        exactly as `serving.scoring.score` computes them for alerts."""
        alerted = month.columns["alerted"]
        stored = month.columns["reasons"]
        out = {i: stored[i] for i in rows if alerted[i]}
        todo = np.array(sorted({i for i in rows if not alerted[i]}), dtype=np.int64)
        if len(todo):
            explainer = month.model.explainer
            values = month.X[todo]
            counties = month.columns["county_code"]
            reference = reference_rows(month.medians, [counties[i] for i in todo.tolist()])
            # one thread: requests run in parallel threads and the month is scored already
            contrib = explainer.contributions(values, num_threads=1)
            for i, r in zip(
                todo.tolist(),
                explainer.reasons_from(values, contrib, reference=reference),
                strict=True,
            ):
                out[i] = r
        return out

    @staticmethod
    def _household(month: _Month, i: int, reasons: Sequence[ExplainedReason]) -> HouseholdRisk:
        c = month.columns
        return HouseholdRisk(**_risk_fields({k: c[k][i] for k in _ROW_COLUMNS},
                                            month.as_of, reasons))

    # -- fresh records -------------------------------------------------------------------
    def fresh(
        self,
        as_of: Month,
        household_key: str,
        rows: Mapping[str, Any] | None,
        *,
        area: Area | None = None,
    ) -> FreshRisk:
        """One household scored as of `as_of` with `rows` (feed -> contract rows) added to
        the warehouse's; nothing is written (`serving.fresh.score_fresh`).

        The area is checked on the household's village in the warehouse, before the rows
        are looked at: a household outside it is the same 404, with the same message, as
        one not on the roster (its rows are never checked against its members). A key with
        an area cannot score a household the warehouse does not know (a households row
        in the request placing it would otherwise tell apart "unknown" from "elsewhere")."""
        from serving.fresh import FreshRowsError, score_fresh

        if not isinstance(household_key, str):
            raise BadRequestError("household_key must be one pseudonym (a string)")
        problem = key_problem(household_key)
        if problem is not None:
            raise BadRequestError(f"household_key {problem}")
        if rows is not None and not isinstance(rows, Mapping):
            raise BadRequestError("rows must be an object: feed name -> list of rows")
        month = self._month_for(as_of)
        if area is not None and not area.whole:
            village = month.village_of(household_key, self.settings.warehouse_dir)
            if village is None or not area.covers(village):
                raise NotFoundError(f"household {household_key} is not on the roster as of "
                                    f"{as_of}")
        model = month.model
        try:
            got = score_fresh(self.settings, as_of, household_key, rows,
                              artifact=model.artifact, model_version=model.version,
                              explainer=model.explainer, month_table=month.table,
                              cache=self._county_cache)
        except FreshRowsError as err:
            raise ProblemsError(str(err), [_problem_out(p) for p in err.problems]) from None
        return FreshRisk(
            **_risk_fields(got.scored, as_of, got.reasons),
            rows_added=dict(got.rows_added),
            warnings=[RowProblemOut(**_problem_out(p)) for p in got.warnings],
        )

    # -- the model -----------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        model = self._current()
        meta = model.artifact.meta
        month = self._month
        cached = month.as_of.end.isoformat() if month is not None and month.model is model else None
        first = _month_of(model.tags.get("trained_from"))
        last = _month_of(meta.get("trained_through") or model.tags.get("trained_through"))
        metrics = meta.get("test_metrics") or {}
        return ModelInfo(
            model_uri=model.uri,
            model_version=model.version,
            model_as_of=str(meta.get("as_of", "")),
            trained_through=str(meta["trained_through"])[:10]
            if meta.get("trained_through")
            else None,
            training_window=TrainingWindow(first=first, last=last) if first or last else None,
            test_periods=[m for p in meta.get("test_periods") or () if (m := _month_of(p))],
            test_metrics={k: float(metrics[k]) for k in TEST_METRICS
                          if isinstance(metrics.get(k), int | float)
                          and math.isfinite(metrics[k])},
            workspace=str(meta.get(registry.WORKSPACE_KEY) or "") or None,
            source=model.source,
            fallback_reason=model.fallback,
            feature_count=len(model.artifact.feature_names),
            feature_registry_version=(
                str(meta["feature_registry_version"])
                if meta.get("feature_registry_version")
                else None
            ),
            calibration_method=str(
                meta.get("calibration_method") or model.artifact.calibrator.method
            ),
            risk_type_models=sorted(model.artifact.type_boosters),
            loaded_at=model.loaded_at.isoformat(timespec="seconds"),
            refresh_seconds=self.settings.api_model_refresh_seconds,
            cached_as_of=cached,
        )

    # -- the alert store -----------------------------------------------------------------
    def alerts(
        self,
        filters: AlertFilters | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        *,
        area: Area | None = None,
    ) -> AlertsPage:
        """A page of the store's alerts, newest first (alert id descending), matching
        `filters` within `area` (the division intersected with it: one outside it has no
        alerts, as a division without alerts has none); `next_cursor` continues after the
        page's last alert with the same filters (BadRequestError for other filters). Keyset
        paging: alerts created meanwhile never shift a page."""
        filters = filters or AlertFilters()
        limit = _check_limit(limit, self.settings.api_max_households)
        after = None if cursor is None else decode_cursor(cursor, filters)
        found = alert_rows(self._alert_store(), filters, limit + 1, after=after, area=area)
        page = [_alert_out(a) for a in found[:limit]]
        more = len(found) > limit
        return AlertsPage(alerts=page,
                          next_cursor=encode_cursor(page[-1].alert_id, filters) if more else None)

    def _visible_alerts(self, alert_ids: Sequence[int], area: Area | None) -> dict[int, Any]:
        """The alerts among `alert_ids` that exist within `area` (id -> Alert, detached)."""
        from sqlalchemy import select

        from serving.store.database import chunks
        from serving.store.models import Alert

        found: dict[int, Any] = {}
        with self._alert_store().transaction() as session:
            for chunk in chunks(sorted(set(alert_ids))):
                for a in session.scalars(select(Alert).where(Alert.id.in_(chunk))):
                    if area is None or area.covers(a.village_code):
                        found[a.id] = a
        return found

    def verdicts(
        self, rows: Sequence[Mapping[str, Any]], *, actor: str, area: Area | None = None
    ) -> tuple[VerdictsOut, list[str]]:
        """Record caseworkers' verdicts by the rules of `doudi feedback import`
        (`serving.store.feedback`: `read_rows` checks each row as a returned sheet's,
        `record_feedback` checks them against the store and writes), all or nothing:
        ProblemsError (400) for rows breaking a rule, NotFoundError (404) for an alert that
        does not exist or lies outside `area` (the same answer), ProblemsError (409) when
        the store refuses (a different verdict recorded: the import's conflict; an alert
        not dispatched; a visit before the alert). The same verdict again changes nothing
        (`already_recorded`). Returns the answer and the households of the alerts."""
        from serving.store import FeedbackError
        from serving.store.feedback import read_rows, record_feedback

        if not rows:
            raise BadRequestError("verdicts is empty: send one or more verdicts")
        if len(rows) > self.settings.api_max_households:
            raise BadRequestError(f"{len(rows)} verdicts in one request; at most "
                                  f"{self.settings.api_max_households} (settings."
                                  "api_max_households): split the request")
        store = self._alert_store()
        read = read_rows(rows, today=store.now().date(), file="request")
        if read.problems:
            raise ProblemsError(
                f"{len(read.problems)} problem(s) in the verdicts, nothing recorded",
                [{"index": p.row, "field": p.column, "rule": p.rule} for p in read.problems])
        area = None if area is None or area.whole else area
        ids = [r.alert_id for r in read.rows]
        with self._write_lock:
            visible = self._visible_alerts(ids, area)
            missing = sorted({i for i in ids if i not in visible})
            if missing:  # unknown and outside the area alike
                raise NotFoundError(f"no alert {', '.join(map(str, missing[:10]))} in the store"
                                    + (f" (and {len(missing) - 10} more)"
                                       if len(missing) > 10 else ""))
            try:
                report = record_feedback(store, read, actor=actor, source_file=API_SOURCE,
                                         all_or_nothing=True)
            except FeedbackError as err:
                problems = [p for p in err.problems if not isinstance(p, str)]
                raise ProblemsError(
                    f"the alert store refuses {len(problems)} verdict(s), nothing recorded",
                    [{"index": p.row, "field": p.column, "rule": p.rule,
                      "alert_id": p.alert_id} for p in problems], status=409) from None
        households = list(dict.fromkeys(str(visible[i].household_key) for i in ids))
        return VerdictsOut(received=len(rows), recorded=report.imported,
                           already_recorded=report.already_recorded), households

    def refer(
        self,
        alert_id: int,
        *,
        referred_on: str,
        current_assistance: Sequence[str] = (),
        actor: str,
        area: Area | None = None,
    ) -> tuple[ReferralOut, str]:
        """Refer a confirmed alert to the departments its verdict's hardship types route
        to (`AlertStore.refer`: never to one already helping), once: an alert referred
        before answers what was recorded (`already_recorded`). NotFoundError (404) for an
        alert that does not exist or lies outside `area`; ConflictError (409) when the
        lifecycle does not allow it (no confirmed verdict). Returns the answer and the
        alert's household."""
        from serving import routing
        from serving.store import AlertNotFoundError, IllegalTransitionError, Status

        if isinstance(alert_id, bool) or not isinstance(alert_id, int) or alert_id < 1:
            raise BadRequestError("alert_id must be a positive alert id")
        on = _past_date(referred_on, "referred_on", self._alert_store().now().date())
        if isinstance(current_assistance, str):
            raise BadRequestError("current_assistance must be a list of codes")
        for i, code in enumerate(current_assistance):
            if not isinstance(code, str) or (code not in routing.PROGRAMMES
                                             and code not in routing.DEPARTMENTS):
                raise BadRequestError(f"current_assistance[{i}] is not a programme or "
                                      "department code (docs/alerts.md)")
        area = None if area is None or area.whole else area
        store = self._alert_store()
        with self._write_lock:
            try:
                alert = store.get(alert_id)
            except AlertNotFoundError:
                alert = None
            if alert is None or (area is not None and not area.covers(alert.village_code)):
                raise NotFoundError(f"no alert {alert_id} in the store")
            if any(h.to_status == Status.REFERRED.value for h in alert.history):
                return ReferralOut(alert_id=alert_id, status=alert.status,
                                   referred=[r.department for r in alert.referrals],
                                   already_assisting=[], already_recorded=True), \
                    alert.household_key
            try:
                outcome = store.refer(alert_id, referred_on=on, actor=actor,
                                      current_assistance=list(current_assistance))
            except IllegalTransitionError as err:
                raise ConflictError(str(err)) from None
        return ReferralOut(alert_id=alert_id, status=Status.REFERRED.value,
                           referred=list(outcome.referred),
                           already_assisting=list(outcome.already_assisting),
                           already_recorded=False), alert.household_key

    def _alert_store(self) -> Any:
        with self._store_lock:
            if self._store is None:
                from serving.store import open_store

                self._store = open_store(settings=self.settings)
            return self._store

    def close(self) -> None:
        """Release the alert store's connections."""
        with self._store_lock:
            if self._store is not None:
                self._store.dispose()
                self._store = None


def alert_rows(store: Any, filters: AlertFilters, limit: int, *, after: int | None = None,
               area: Area | None = None) -> list[Any]:
    """Up to `limit` stored alerts (`serving.store.models.Alert`, detached) matching
    `filters` within `area`, newest first (id descending), after alert id `after`. The
    division and the area intersect: a division outside the area has no alerts, as a
    division without alerts has none."""
    from sqlalchemy import String, cast, or_, select

    from serving.store.models import Alert

    query = select(Alert).order_by(Alert.id.desc()).limit(limit)
    division = filters.division
    if division is not None:
        column = {6: Alert.county_code, 9: Alert.township_code}.get(len(division),
                                                                   Alert.village_code)
        query = query.where(column == division)
    if area is not None and not area.whole:
        query = query.where(or_(Alert.county_code.in_(sorted(area.counties)),
                                Alert.township_code.in_(sorted(area.townships))))
    if filters.tier is not None:
        query = query.where(Alert.tier == filters.tier)
    if filters.status is not None:
        query = query.where(Alert.status == filters.status)
    if filters.month is not None:
        query = query.where(Alert.as_of == filters.month.end)
    if filters.risk_type is not None:
        # a JSON list's text, on SQLite and PostgreSQL alike: ["illness", "housing"]; codes
        # are [a-z_]: `_` escaped, and the quotes make the match a whole element
        code = filters.risk_type.replace("_", "\\_")
        query = query.where(cast(Alert.risk_types, String).like(f'%"{code}"%', escape="\\"))
    if after is not None:
        query = query.where(Alert.id < after)
    with store.transaction() as session:
        return list(session.scalars(query))


# -- rows as answers -----------------------------------------------------------------------
_ROW_COLUMNS = ("household_key", "county_code", "village_code", "risk", "rank", "tier",
                "alerted", "source", "risk_types", "departments", "rule_triggers",
                "model_version", "model_as_of")


def _risk_fields(row: Mapping[str, Any], as_of: Month,
                 reasons: Sequence[ExplainedReason]) -> dict[str, Any]:
    """A scored row (`serving.scoring.score`'s columns) as `HouseholdRisk`'s fields."""
    return {
        "household_key": str(row["household_key"]),
        "as_of": as_of.end.isoformat(),
        "county_code": str(row["county_code"]),
        "village_code": str(row["village_code"]),
        "risk": float(row["risk"]),
        "rank": int(row["rank"]),
        "tier": str(row["tier"]),
        "alerted": bool(row["alerted"]),
        "source": str(row["source"]),
        "risk_types": list(row["risk_types"]),
        "departments": list(row["departments"]),
        "rule_triggers": list(row["rule_triggers"]),
        "reasons": [
            ReasonOut(
                rank=r.rank,
                group=r.group_key,
                text_zh=r.text_zh,
                contribution_pp=(r.contribution if r.scale == PROBABILITY_POINTS else None),
                margin_logodds=r.margin,
            )
            for r in reasons
        ],
        "model_version": str(row["model_version"]),
        "model_as_of": str(row["model_as_of"]),
    }


def _problem_out(problem: Any) -> dict[str, Any]:
    """A `serving.fresh.RowProblem` as the answer's problem (no value: it holds none)."""
    return {"feed": problem.feed, "row": problem.row, "column": problem.column,
            "rule": problem.rule, "message": problem.message}


def _alert_out(a: Any) -> AlertOut:
    """A stored alert (`serving.store.models.Alert`) as the answer's row."""
    return AlertOut(
        alert_id=int(a.id), household_key=a.household_key, county_code=a.county_code,
        township_code=a.township_code, village_code=a.village_code,
        as_of=a.as_of.isoformat(), model_version=a.model_version,
        risk=None if a.risk is None or math.isnan(a.risk) else float(a.risk), tier=a.tier,
        risk_types=list(a.risk_types), departments=list(a.departments),
        rule_triggers=list(a.rule_triggers), source=a.source, status=a.status,
        created_at=a.created_at.isoformat(), updated_at=a.updated_at.isoformat(),
    )


def _past_date(value: object, what: str, today: date) -> date:
    """A request's date (YYYY-MM-DD), not after today; the error names the rule only."""
    if not isinstance(value, str) or not _REFERRED_ON.match(value):
        raise BadRequestError(f"{what} must be a date YYYY-MM-DD")
    try:
        found = date.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"{what} is not a calendar date") from None
    if found > today:
        raise BadRequestError(f"{what} is after today ({today})")
    return found


def _restamped(model: _Model) -> _Model:
    """The model as the registry's: it confirmed the version the local copy holds."""
    from dataclasses import replace

    return replace(model, source="registry", fallback=None)


def _with_model(month: _Month, model: _Model) -> _Month:
    from dataclasses import replace

    return replace(month, model=model)


def _write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically (a private file in a private folder)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
