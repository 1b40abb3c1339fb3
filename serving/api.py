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
- `model_info()`: what is being served.
- `alerts(township, status, limit)`: the alert store's lifecycle view.

Each answer takes an `area` (`serving.access.Area`; None: the whole province): a
household outside it is answered exactly as an unknown one (listed in `missing`, a 404
from `explain`, left out of `alerts`), and a month's counts and alert list are the area's.

The model URI is re-resolved at most every `settings.api_model_refresh_seconds`; a new
registry version (a new champion after the monthly retrain) is loaded and the cached
month dropped.

Privacy: households are addressed by pseudonym (`h_` + 20 hex) only. Keys that look like
raw identifiers (an 18-character ID number, a household number) are rejected without
being echoed: re-identification happens only in the audited caseworker export.

Errors the caller can fix raise `BadRequestError` (HTTP 400) or `NotFoundError` (HTTP 404).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    ApiError,
    BadRequestError,
    HouseholdRisk,
    ModelInfo,
    NotFoundError,
    ReasonOut,
    ScoreResponse,
)
from serving.explain import (
    PROBABILITY_POINTS,
    ExplainedReason,
    Explainer,
    county_medians,
    reference_rows,
)

__all__ = [
    "ApiError",
    "BadRequestError",
    "HouseholdRisk",
    "ModelInfo",
    "NotFoundError",
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
MAX_CACHED_AREAS = 1024  # areas whose alert lists a cached month keeps
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


# -- the lookup ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Model:
    uri: str
    artifact: ModelArtifact
    version: str
    explainer: Explainer
    loaded_at: datetime


@dataclass(frozen=True)
class _Month:
    """One month scored with one model: read-only once built (shared between threads)."""

    as_of: Month
    model: _Model
    scored: pd.DataFrame
    X: np.ndarray  # encoded features, rows as in `scored`
    medians: pd.DataFrame  # county medians at T: the reasons' comparison values
    columns: dict[str, list[Any]]  # scored columns as Python lists (fast row access)
    row_of: dict[str, int]
    alert_rows: list[int]  # alerted rows by rank
    seconds: float
    # per area: (in-scope households, alerted rows by rank); filled on first use, bounded
    by_area: dict[Area, tuple[int, list[int]]] = field(default_factory=dict)
    per_township: dict[str, int] = field(default_factory=dict)  # in-scope households

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


class RiskLookup:
    """Risk scores and explanations for the monitoring platform (thread-safe)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()  # the month cache (and the model it was built with)
        self._refresh_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._store: Any = None
        self._client: Any = None
        self._model = self._load()
        self._checked = clock()
        self._month: _Month | None = None

    # -- the model -------------------------------------------------------------------
    def _load(self) -> _Model:
        uri = registry.served_uri(self.settings)
        artifact, version = scoring.load_model(uri, self.settings)
        explainer = Explainer(artifact, max_reasons=self.settings.max_reasons)
        log.info("serving %s (%s, as of %s)", version, uri, artifact.meta.get("as_of"))
        return _Model(uri, artifact, version, explainer, datetime.now(UTC))

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
        """The served model, re-resolved when `api_model_refresh_seconds` have passed."""
        every = self.settings.api_model_refresh_seconds
        if self._clock() - self._checked < every:
            return self._model
        with self._refresh_lock:
            if self._clock() - self._checked < every:  # another thread just checked
                return self._model
            try:
                version = self._registry_version()
                if version is not None and version != self._model.version:
                    model = self._load()
                    with self._lock:
                        log.info(
                            "model changed: %s -> %s; cached scores dropped",
                            self._model.version,
                            model.version,
                        )
                        self._model, self._month = model, None
            except Exception as err:  # the registry is down: keep serving what we have
                log.warning(
                    "could not re-resolve %s (%s); still serving %s",
                    self._model.uri,
                    err,
                    self._model.version,
                )
            self._checked = self._clock()
        return self._model

    # -- the month cache ---------------------------------------------------------------
    def _month_for(self, as_of: Month) -> _Month:
        model = self._current()
        with self._lock:
            month = self._month
            if month is None or month.as_of != as_of or month.model is not model:
                month = self._score_month(as_of, model)
                self._month = month
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
            scored,
            X,
            medians,
            columns,
            {k: i for i, k in enumerate(keys)},
            by_rank.tolist(),
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
        return HouseholdRisk(
            household_key=str(c["household_key"][i]),
            as_of=month.as_of.end.isoformat(),
            county_code=str(c["county_code"][i]),
            village_code=str(c["village_code"][i]),
            risk=float(c["risk"][i]),
            rank=int(c["rank"][i]),
            tier=str(c["tier"][i]),
            alerted=bool(c["alerted"][i]),
            source=str(c["source"][i]),
            risk_types=list(c["risk_types"][i]),
            departments=list(c["departments"][i]),
            rule_triggers=list(c["rule_triggers"][i]),
            reasons=[
                ReasonOut(
                    rank=r.rank,
                    group=r.group_key,
                    text_zh=r.text_zh,
                    contribution_pp=(r.contribution if r.scale == PROBABILITY_POINTS
                                     else None),
                    margin_logodds=r.margin,
                )
                for r in reasons
            ],
            model_version=str(c["model_version"][i]),
            model_as_of=str(c["model_as_of"][i]),
        )

    def model_info(self) -> ModelInfo:
        model = self._current()
        meta = model.artifact.meta
        month = self._month
        cached = month.as_of.end.isoformat() if month is not None and month.model is model else None
        return ModelInfo(
            model_uri=model.uri,
            model_version=model.version,
            model_as_of=str(meta.get("as_of", "")),
            trained_through=str(meta["trained_through"])[:10]
            if meta.get("trained_through")
            else None,
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
        township: str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        area: Area | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts in the store, newest first: the lifecycle state caseworkers update; only
        `area`'s (a township outside it: none, as a township without alerts)."""
        from serving.store import Status, list_alerts

        if township is not None and not (isinstance(township, str) and _TOWNSHIP.match(township)):
            raise BadRequestError("township must be a 9-digit township code")
        statuses = [s.value for s in Status]
        if status is not None and status not in statuses:
            raise BadRequestError(f"status must be one of {', '.join(statuses)}")
        limit = _check_limit(limit, self.settings.api_max_households)
        if area is not None and township is not None and not area.covers_township(township):
            return []  # as for a township without alerts
        frame = list_alerts(self._alert_store(), township=township, status=status)
        if area is not None and not area.whole:
            frame = frame.loc[np.array([area.covers(v) for v in frame["village_code"]],
                                       dtype=bool)]
        frame = frame.head(limit)
        out: list[dict[str, Any]] = []
        for record in frame.to_dict("records"):
            row = {str(k): v for k, v in record.items()}
            risk = row["risk"]
            out.append(
                {
                    **row,
                    "alert_id": int(row["alert_id"]),
                    "as_of": pd.Timestamp(row["as_of"]).date().isoformat(),
                    "risk": None if risk is None or math.isnan(risk) else float(risk),
                    "risk_types": _split(row["risk_types"]),
                    "departments": _split(row["departments"]),
                    "rule_triggers": _split(row["rule_triggers"]),
                    "created_at": _iso(row["created_at"]),
                    "updated_at": _iso(row["updated_at"]),
                }
            )
        return out

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


def _split(value: object) -> list[str]:
    return [v for v in str(value or "").split(";") if v]


def _iso(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()  # type: ignore[arg-type]
