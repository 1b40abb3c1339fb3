"""The BentoML service the provincial monitoring platform calls (docs/api.md).

    doudi serve            # or: make serve; runs `bentoml serve serving.service:DoudiRisk`

A thin layer: each endpoint parses `as_of` into a `doudi.months.Month` (the edge), calls
`serving.api.RiskLookup` and maps its errors to HTTP (`BadRequestError` -> 400
`InvalidArgument`, `NotFoundError` -> 404 `NotFound`, `ConflictError` -> 409;
`ProblemsError` -> its status with `{"error", "problems"}`). BentoML logs every exception an
endpoint raises as an ERROR with its stack; a 4xx is the caller's mistake, so
`ClientErrorsInOneLine` turns those into one WARNING line (method, route, status, the
field and rule; never the request's content). In front of the endpoints,
`RequestGuard` checks the API key (401, 403; `serving.access`), takes JSON only (415) and
bodies up to `settings.api_max_body_bytes` (413), and writes every endpoint request to the
audit log; `BoundedMetricLabels` labels /metrics by route, never by the raw URL path
(docs/api.md "Access", "Errors", "/metrics"). `RequestGuard` also times answered
requests and counts refusals by reason (`doudi_*` metrics, `ApiMetrics`), and puts the
served model (and why the local copy stands in, if it does) in `/readyz`'s body;
`DoudiRisk.__metrics__` adds the served model and the cached month's alerts by tier.
Each endpoint answers within its key's area (`RiskLookup`'s `area`) and notes the
households asked and answered in the request's `AuditEntry`. At import: the decorator,
the middleware's registration and the metrics class swap, nothing else; the model loads
in `__init__`, inside the worker. Start it with `BENTOML_DO_NOT_TRACK=true`,
`MLFLOW_DISABLE_TELEMETRY=true` and `BENTOML_HOME` in the workspace (`doudi serve` sets
all three).

One worker: the month cache lives in the worker's memory (a second worker would score the
month again and hold a second copy). Sync endpoints run in up to `threads` threads.
"""

# No `from __future__ import annotations`: BentoML reads the endpoints' type hints.

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar, cast

import bentoml
from bentoml._internal.server.http import instruments
from bentoml._internal.utils.uri import join_paths
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from doudi.errors import UserError
from doudi.months import Month
from serving.access import Area, AuditEntry, AuthError, KeyVerifier, Principal, allowed

# Light imports only: `RiskLookup` (lightgbm, pandas, MLflow) loads in the worker.
from serving.api_models import (
    DEFAULT_LIMIT,
    AlertsPage,
    BadRequestError,
    ConflictError,
    FreshRisk,
    HouseholdRisk,
    ModelInfo,
    NotFoundError,
    ProblemsError,
    ReferralOut,
    ScoreResponse,
    VerdictsOut,
)


class _Request(BaseModel):
    # A malformed body is a 400 whose log line must not quote the input: a caller may
    # have sent a raw ID number where a pseudonym belongs. Unknown fields are errors.
    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        # pydantic's own `extra_forbidden` error puts the unknown key in `loc`, which BentoML
        # returns in the 400 body: a caller who sent an ID number as a field *name* would get
        # it back. Refuse unknown keys here, counted but never named (`extra="forbid"` stays
        # as the backstop). No field of these models is a dict, so no other `loc` can hold
        # request content: only field names and list positions.
        if isinstance(data, dict):
            unknown = sum(1 for key in data if key not in cls.model_fields)
            if unknown:
                raise PydanticCustomError(
                    "unknown_field",
                    "{count} unknown field(s); this endpoint takes only: {fields}",
                    {
                        "count": unknown,
                        "fields": ", ".join(cls.model_fields) or "no fields ({} is the body)",
                    },
                )
        return data


class ScoreRequest(_Request):
    as_of: str = Field(description="Month YYYY-MM (or a date YYYY-MM-DD in that month).")
    household_keys: list[str] | None = Field(
        None, description="Household pseudonyms (h_ + 20 hex); null: the month's alerts."
    )
    explain: bool = Field(True, description="Include reasons (false: empty reasons).")
    limit: int = Field(DEFAULT_LIMIT, description="Most alerted households listed (without keys).")


class ExplainRequest(_Request):
    as_of: str = Field(description="Month YYYY-MM (or a date YYYY-MM-DD in that month).")
    household_key: str = Field(description="One household pseudonym (h_ + 20 hex).")


class ModelRequest(_Request):
    pass


class FreshRequest(_Request):
    as_of: str = Field(description="Month YYYY-MM (or a date YYYY-MM-DD in that month).")
    household_key: str = Field(description="One household pseudonym (h_ + 20 hex).")
    # `Any` rows: a feed's or column's name is the caller's text, so no schema error may put
    # it in a `loc`; serving.fresh checks them and names them masked.
    rows: dict[str, Any] | None = Field(
        None, description="Feed name -> list of rows (column -> value as the department "
        "delivers it; contract names or Chinese aliases). Null or {}: the warehouse alone.")


class AlertsRequest(_Request):
    division: str | None = Field(
        None, description="6-digit county, 9-digit township or 12-digit village code.")
    township: str | None = Field(None, description="9-digit township code (as division).")
    tier: str | None = Field(None, description="red, orange or yellow.")
    risk_type: str | None = Field(None, description="A contract risk type code, e.g. illness.")
    status: str | None = Field(None, description="Lifecycle status, e.g. dispatched.")
    month: str | None = Field(None, description="The alerts' month, YYYY-MM.")
    limit: int = Field(DEFAULT_LIMIT, description="Most alerts on one page, newest first.")
    cursor: str | None = Field(
        None, description="next_cursor of the previous page (with the same filters).")


class VerdictItem(_Request):
    alert_id: int = Field(description="The alert's id (/alerts, the sheet's 预警编号).")
    verdict: str = Field(description="confirmed or dismissed (or the sheet's 属实 / 不属实).")
    risk_types: list[str] | None = Field(
        None, description="Confirmed hardship types (contract codes or terms); none when "
        "dismissed.")
    visited_on: str = Field(description="Visit date YYYY-MM-DD (not after today, not before "
                            "the alert's month end).")
    caseworker: str = Field(description="The caseworker's staff code (1-32 characters).")
    note: str | None = Field(None, description="Up to 500 characters; no ID numbers.")


class VerdictsRequest(_Request):
    verdicts: list[VerdictItem] = Field(description="One or more verdicts (all or nothing).")


class ReferralRequest(_Request):
    alert_id: int = Field(description="A confirmed alert's id.")
    referred_on: str = Field(description="Referral date YYYY-MM-DD (not after today).")
    current_assistance: list[str] = Field(
        default_factory=list, description="The household's current programme or department "
        "codes: departments already helping are not referred again.")


def parse_as_of(value: str) -> Month:
    """The request's `as_of`: YYYY-MM, or a date in the month (documented): 400 otherwise.

    The message names the rule, never the value: `Month.parse` repeats short values, and a
    short value may be a name."""
    try:
        return Month.parse(value, what="as_of", allow_date=True)
    except UserError as err:
        # Month.parse says "<what> <value>: <rule>"; no rule contains ": ".
        raise BadRequestError(f"as_of: {str(err).rsplit(': ', 1)[-1]}") from None


# -- one line per 4xx ------------------------------------------------------------------------
# BentoML 1.4 (`_bentoml_impl.server.app.api_endpoint_wrapper`) calls `log_exception`, which
# logs "Exception on <path> [<method>]" with the stack on this logger, for every exception.
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
_FIELDS = ("household_keys", "household_key", "as_of", "explain", "limit", "township", "status",
           "rows", "division", "tier", "risk_type", "month", "cursor", "verdicts", "alert_id",
           "verdict", "risk_types", "visited_on", "caseworker", "note", "referred_on",
           "current_assistance")
_FIELD = re.compile(r"\b(" + "|".join(_FIELDS) + r")\b")


def _loc(parts: tuple[Any, ...]) -> str:
    """A pydantic error location: our field names and list positions; anything else withheld."""
    shown = [str(p) if isinstance(p, int) or p in _FIELDS else "?" for p in parts]
    return ".".join(shown) or "body"


def client_error(exc: BaseException | None) -> tuple[int, str] | None:
    """(status, field and rule) of a caller's mistake (4xx); None for anything else."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        rules = [f"{_loc(tuple(e['loc']))}: {e['type']}" for e in errors[:3]]
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return 400, "; ".join(rules) + more
    if isinstance(exc, BentoMLException):
        status = int(exc.error_code)
        if not 400 <= status < 500:
            return None
        # Our messages name the field first; the message itself may quote the input.
        field = _FIELD.search(str(exc))
        return status, f"{field.group(1) if field else '-'}: {type(exc).__name__}"
    return None


class ClientErrorsInOneLine(logging.Filter):
    """Rewrites BentoML's ERROR-with-stack for a 4xx into one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = client_error(record.exc_info[1] if record.exc_info else None)
        if found is None:
            return True
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ()
        path, method = (str(args[0]), str(args[1])) if args else ("?", "?")
        record.msg, record.args = "%s %s -> %d (%s)", (method, path, *found)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_client_errors() -> None:
    """Install `ClientErrorsInOneLine` on BentoML's exception logger (once per process)."""
    logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())


# -- the HTTP surface: bounded metric labels, JSON only, bounded bodies -----------------------
# BentoML 1.4.40 labels its request metrics with the raw URL path
# (`bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware`, the outermost
# middleware `_bentoml_impl.server.app.ServiceAppFactory.middlewares` builds): every unknown
# path became a new label value for good (500 random paths grew /metrics from 95 kB to
# 1.9 MB), and the access log printed whatever path was asked for. BentoML has no setting
# for it, so the middleware class is replaced by `BoundedMetricLabels`, which hands the
# metrics, tracing and access-log layers a known route or `OTHER`; `RequestGuard` (our own
# middleware, inside those) puts the real path back before routing.
OTHER = "other"
_SYSTEM_ROUTES = frozenset(
    {"/", "/docs.json", "/schema.json", "/metrics", "/livez", "/healthz", "/readyz"}
)
_STATIC = "/static_content"  # the Swagger UI's files
_REAL_PATH = "doudi.real_path"  # scope key: the path as asked, while the label stands in


def metric_label(path: str, routes: frozenset[str]) -> str:
    """The `endpoint` label for a URL path: a known route, the static folder, or `OTHER`."""
    if path in routes or path in _SYSTEM_ROUTES:
        return path
    if path.startswith(_STATIC + "/"):
        return _STATIC
    return OTHER


def api_routes() -> frozenset[str]:
    """The endpoints' URL paths (`/score`, ...), as BentoML routes them."""
    service: Any = DoudiRisk  # a bentoml Service at runtime; typed as the class
    return frozenset(join_paths(service.path_prefix, api.route) for api in service.apis.values())


class BoundedMetricLabels(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics, labelled by route: unknown paths all count as `other`."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            routes = getattr(self, "_doudi_routes", None)
            if routes is None:
                routes = self._doudi_routes = api_routes()
            label = metric_label(scope["path"], routes)
            if label != scope["path"]:
                scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


def bound_metric_labels() -> None:
    """Make BentoML build `BoundedMetricLabels` instead of its own request metrics.

    Must run before BentoML builds the app (it picks the class up then), so it runs when
    this module is imported, in the server's worker."""
    instruments.RunnerTrafficMetricsMiddleware = BoundedMetricLabels  # type: ignore[misc]


async def _refuse(
    scope: Any,
    receive: Any,
    send: Any,
    status: int,
    why: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer a refused request (one WARNING line, like BentoML's own 4xx) and close."""
    from starlette.responses import JSONResponse

    path = metric_label(scope["path"], api_routes())  # never an unknown path as asked
    logging.getLogger(BENTOML_ERROR_LOGGER).warning(
        "%s %s -> %d (%s)", scope.get("method", "?"), path, status, why
    )
    # The body is left unread: close the connection rather than parse what follows it.
    response = JSONResponse(
        {"error": message}, status_code=status, headers={"connection": "close", **(headers or {})}
    )
    await response(scope, receive, send)


def _ready_body(send: Any, readiness: Callable[[], dict[str, Any]]) -> Any:
    """`send` for BentoML's /readyz: a 200 answers `readiness()` as JSON instead of its
    empty line; anything else (503 while not ready) passes unchanged."""
    held: list[Any] = []
    replaced = False

    async def rewrite(message: Any) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start":
            held.append(message)
            return
        if replaced:
            return  # the rest of the body replaced
        if held:
            start = held.pop()
            if start["status"] == 200:
                body = json.dumps(readiness(), ensure_ascii=False).encode("utf-8")
                headers = [(k, v) for k, v in start.get("headers", [])
                           if k.lower() not in (b"content-length", b"content-type")]
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii"))]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                replaced = True
                return
            await send(start)
        await send(message)

    return rewrite


# -- doudi's own metrics ------------------------------------------------------------------------
# Label values are bounded: endpoint is a route or `other`; reason one of these.
REFUSAL_REASONS = {
    "no key": "no_key", "malformed key": "malformed_key", "unknown key": "unknown_key",
    "wrong secret": "wrong_secret", "expired": "expired", "revoked": "revoked",
    "role": "role", "key check failed": "key_check_failed",
}
STATUS_REASONS = {400: "bad_request", 404: "not_found", 409: "conflict", 413: "too_large",
                  415: "not_json", 422: "bad_request"}
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0)


def refusal_reason(status: int, refusal: str | None) -> str | None:
    """The `reason` label of a refused request (None: not a refusal)."""
    if status in (401, 403, 503) and refusal is not None:
        return REFUSAL_REASONS.get(refusal, "other")
    if 400 <= status < 500:
        return STATUS_REASONS.get(status, "other")
    return None


@dataclass(frozen=True)
class ApiMetrics:
    """doudi's request metrics, in BentoML's Prometheus registry (multiprocess files)."""

    latency: Any  # prometheus_client.Histogram
    refused: Any  # prometheus_client.Counter

    def observe(self, endpoint: str, status: int, refusal: str | None, seconds: float) -> None:
        """An endpoint request's outcome: its time when answered (2xx), its reason when
        refused (4xx, or the 503 of a key check that could not be made)."""
        if 200 <= status < 300:
            self.latency.labels(endpoint=endpoint).observe(seconds)
            return
        reason = refusal_reason(status, refusal)
        if reason is not None:
            self.refused.labels(endpoint=endpoint, status=str(status), reason=reason).inc()


_metrics: ApiMetrics | None = None
_metrics_lock = threading.Lock()


def api_metrics() -> ApiMetrics:
    """This worker's `ApiMetrics`, made on first use: prometheus_client is imported only
    then, in the worker, after BentoML has set PROMETHEUS_MULTIPROC_DIR (bentoml.metrics)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            import prometheus_client

            _metrics = ApiMetrics(
                prometheus_client.Histogram(
                    "doudi_request_duration_seconds",
                    "Answered (2xx) endpoint requests: seconds from the request to the end "
                    "of the answer, by endpoint.",
                    ["endpoint"], buckets=LATENCY_BUCKETS),
                prometheus_client.Counter(
                    "doudi_refused_requests",
                    "Endpoint requests refused, by endpoint, status and reason.",
                    ["endpoint", "status", "reason"]),
            )
        return _metrics


def served_metrics(model: tuple[str, str, str | None] | None,
                   tiers: tuple[str, dict[str, int]] | None) -> str:
    """The served model and the cached month's alerts by tier, as Prometheus text."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    class _Served:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            info = GaugeMetricFamily(
                "doudi_model_info", "The model being served (1), by version and where it was "
                "loaded from (registry, local_copy, folder).", labels=["version", "source"])
            if model is not None:
                info.add_metric([model[0], model[1]], 1.0)
            yield info
            alerts = GaugeMetricFamily(
                "doudi_cached_month_alerts", "Alerted households of the cached month (the "
                "province), by tier.", labels=["as_of", "tier"])
            if tiers is not None:
                for tier, count in sorted(tiers[1].items()):
                    alerts.add_metric([tiers[0], tier], float(count))
            yield alerts

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Served())
    return generate_latest(registry).decode("utf-8")


# The served model for /readyz's body (set when the service starts; None before).
_readiness: Callable[[], dict[str, Any]] | None = None


# -- access: the key check and the audit log ---------------------------------------------------
_AUDIT = "doudi.audit"  # scope key: the request's AuditEntry (with its verified Principal)
_CHALLENGE = {"www-authenticate": 'Bearer realm="doudi"'}


class AccessGate:
    """The worker's key check (`KeyVerifier`, cached) and audit log, over the alert store."""

    def __init__(self) -> None:
        from doudi.settings import Settings
        from serving.store import open_store
        from serving.store.keys import AuditLog, stored_key

        self.store = open_store(settings=Settings())
        self.verifier = KeyVerifier(lambda key_id: stored_key(self.store, key_id))
        self.audit = AuditLog(self.store)

    def close(self) -> None:
        """Write the audit rows still queued and release the store."""
        self.audit.close()
        self.store.dispose()


_gate: AccessGate | None = None
_gate_lock = threading.Lock()


def access_gate() -> AccessGate:
    """This worker's `AccessGate`, opened on first use."""
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = AccessGate()
        return _gate


def close_access_gate() -> None:
    """Write the queued audit rows and close the gate (the service's shutdown)."""
    global _gate
    with _gate_lock:
        if _gate is not None:
            _gate.close()
            _gate = None


async def _authenticate(gate: AccessGate, authorization: str | None) -> Principal:
    """The caller's principal; AuthError when the key is missing or refused. A cache miss
    asks the store in a thread, never on the event loop."""
    found = gate.verifier.cached(authorization)
    if found is not None:
        return found
    import anyio.to_thread

    return await anyio.to_thread.run_sync(gate.verifier.verify, authorization)


class RequestGuard:
    """ASGI middleware (`DoudiRisk.add_asgi_middleware`) in front of the endpoints.

    - Puts back the real path `BoundedMetricLabels` replaced by a label.
    - An endpoint needs `Authorization: Bearer <key>`: a missing, malformed, unknown,
      expired or revoked key is a 401 (before the body is read), a role the endpoint does
      not allow (`serving.access.ENDPOINT_ROLES`) a 403. The verified caller travels to
      the endpoint in the scope's `AuditEntry`; every request to an endpoint, refused or
      answered, is queued to the audit log with its status.
    - The API takes JSON only: another Content-Type on an endpoint is a 415 (BentoML would
      otherwise parse form and multipart bodies: a bad boundary was a 500).
    - A body over `settings.api_max_body_bytes` is a 413, refused from its Content-Length
      before reading, or as soon as a chunked body passes the limit: at most the limit is
      ever held. The endpoint then reads the body from memory.
    - Each endpoint request's outcome goes to `ApiMetrics` (time when answered, reason when
      refused); a ready `/readyz` answers which model is served, and from where.
    """

    def __init__(self, app: Any, max_body_bytes: int | None = None) -> None:
        self.app = app
        if max_body_bytes is None:
            from doudi.settings import Settings

            max_body_bytes = Settings().api_max_body_bytes
        self.max_body_bytes = max_body_bytes
        self.endpoints = api_routes()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
        too_big = f"request body over {self.max_body_bytes} bytes (settings.api_max_body_bytes)"
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length", b"").strip()
        too_long = length.isdigit() and int(length) > self.max_body_bytes
        if scope["path"] not in self.endpoints or scope.get("method") != "POST":
            if too_long:
                api_metrics().observe(metric_label(scope["path"], self.endpoints), 413, None, 0)
                await _refuse(scope, receive, send, 413, "body: too large", too_big)
                return
            if scope["path"] == "/readyz" and _readiness is not None:
                await self.app(scope, receive, _ready_body(send, _readiness))
                return
            await self.app(scope, receive, send)  # the router answers (404, 405, docs, probes)
            return
        entry = AuditEntry(endpoint=scope["path"], at=datetime.now(UTC))
        answered = 0
        started = time.perf_counter()

        async def send_noted(message: Any) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            await send(message)

        gate = access_gate()
        try:
            if too_long:  # refused unread, whoever sends it
                await _refuse(scope, receive, send_noted, 413, "body: too large", too_big)
            else:
                await self._endpoint(
                    {**scope, _AUDIT: entry}, receive, send_noted, headers, entry, gate, too_big
                )
        finally:
            entry.status = answered
            gate.audit.record(entry)
            api_metrics().observe(scope["path"], answered, entry.refusal,
                                  time.perf_counter() - started)

    async def _endpoint(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        headers: dict[bytes, bytes],
        entry: AuditEntry,
        gate: AccessGate,
        too_big: str,
    ) -> None:
        """An endpoint's request: the key, the role, the body; then the endpoint."""
        authorization = headers.get(b"authorization")
        try:
            principal = await _authenticate(
                gate, authorization.decode("latin-1") if authorization is not None else None
            )
        except AuthError as err:
            entry.key_id, entry.refusal = err.key_id, err.reason
            # the key id (public, as `doudi keys list` shows it) only for a key of the store
            which = f", key {err.key_id}" if err.key_id else ""
            await _refuse(scope, receive, send, 401, f"auth: {err.reason}{which}", err.message,
                          _CHALLENGE)
            return
        except Exception as err:  # the store is unreachable: refuse, never let anyone in
            entry.refusal = "key check failed"
            logging.getLogger(__name__).error("API key check failed: %s", type(err).__name__)
            await _refuse(scope, receive, send, 503, "auth: key check failed",
                          "the API key could not be checked; try again shortly")
            return
        entry.key_id, entry.role, entry.principal = (
            principal.key_id, principal.role.value, principal
        )
        if not allowed(principal.role, scope["path"]):
            entry.refusal = "role"
            await _refuse(scope, receive, send, 403,
                          f"auth: role {principal.role} refused, key {principal.key_id}",
                          f"{'an' if principal.role == 'analyst' else 'a'} {principal.role} key "
                          f"may not call {scope['path']}")
            return
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
        if media.lower() != b"application/json":
            await _refuse(
                scope,
                receive,
                send,
                415,
                "body: not JSON",
                "the API takes JSON bodies only (Content-Type: application/json)",
            )
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(scope, receive, send, 413, "body: too large", too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI says

        await self.app(scope, replay, send)


def _caller(ctx: bentoml.Context) -> AuditEntry:
    """The request's audit entry, with the principal `RequestGuard` verified."""
    entry = ctx.request.scope.get(_AUDIT)
    if not isinstance(entry, AuditEntry) or entry.principal is None:
        # Fail closed: an endpoint reached without the guard answers nothing (500).
        raise RuntimeError("no verified API key on the request: RequestGuard did not run")
    return entry


def _pseudonyms(keys: Sequence[Any]) -> list[str]:
    """The well-formed household pseudonyms among the keys asked for (for the audit log:
    anything else may be a raw identifier, and is never written)."""
    from serving.api import key_problem

    if isinstance(keys, str):
        return []
    return list(dict.fromkeys(k for k in keys if isinstance(k, str) and key_problem(k) is None))


@contextmanager
def _http_errors() -> Iterator[None]:
    """RiskLookup's errors as BentoML's (400 / 404 / 409); anything else stays a 500.
    `ProblemsError` passes: `_answer` turns it into its own body."""
    try:
        yield
    except NotFoundError as err:
        raise NotFound(str(err)) from None
    except ConflictError as err:
        raise BentoMLException(str(err), error_code=HTTPStatus.CONFLICT) from None
    except BadRequestError as err:
        raise InvalidArgument(str(err)) from None


T = TypeVar("T")
_CODE = re.compile(r"[a-z_]{1,40}")


def _code_of(problem: dict[str, Any]) -> str:
    """What a log line may say of a problem: its rule code, else its field or column name
    when that is one of ours (codes only: a masked or free-text name is `-`)."""
    for key in ("rule", "field", "column"):
        value = str(problem.get(key) or "")
        if _CODE.fullmatch(value):
            return value
    return "-"


def _answer(ctx: bentoml.Context, field: str, call: Callable[[], T]) -> T:
    """`call()`'s answer, its errors as `_http_errors` maps them; a `ProblemsError` is
    answered `{"error": ..., "problems": [...]}` with its status (one WARNING line, as
    for any 4xx; the problems name places and rules, never values)."""
    from starlette.responses import JSONResponse

    try:
        with _http_errors():
            return call()
    except ProblemsError as err:
        shown = ",".join(sorted({_code_of(p) for p in err.problems})[:3])
        logging.getLogger(BENTOML_ERROR_LOGGER).warning(
            "%s %s -> %d (%s: %s)", ctx.request.method, ctx.request.url.path, err.status,
            field, shown)
        ctx.response.status_code = err.status  # BentoML sets the answer's status from it
        body = {"error": str(err), "problems": err.problems}
        return cast(T, JSONResponse(body, status_code=err.status))


@bentoml.service(
    name="doudi",
    workers=1,
    threads=4,
    traffic={"timeout": 300},  # the first request for a month scores the whole province
    # The access log keeps method, path, status, sizes and timing; not the request's
    # Content-Type header, which is the caller's free text.
    logging={"access": {"request_content_type": False}},
)
class DoudiRisk:
    """兜底 doudi risk scores and explanations, keyed by household pseudonym."""

    def __init__(self) -> None:
        from doudi.registry import disable_telemetry
        from doudi.settings import Settings

        disable_telemetry()
        quiet_client_errors()
        # The model's story (loaded, scored, changed, the registry lost) is operators' news;
        # a registry outage is our one WARNING line per refresh, not MLflow's ERROR with a
        # stack for each query it tried.
        logging.getLogger("serving.api").setLevel(logging.INFO)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        from serving.api import RiskLookup

        self.lookup = RiskLookup(Settings())
        global _readiness
        _readiness = self._readiness
        from serving.store.keys import active_key_count

        if active_key_count(access_gate().store) == 0:
            logging.getLogger(__name__).warning(
                "no active API key in the alert store: every request will be refused (401); "
                "create one with `doudi keys create`"
            )

    def _readiness(self) -> dict[str, Any]:
        """/readyz's body: the model served and where from (the local copy, and why)."""
        version, source, why = self.lookup.served
        return {"ready": True, "model_version": version, "source": source, "reason": why}

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.lookup.close()
        close_access_gate()

    @bentoml.api(input_spec=ScoreRequest)
    def score(
        self,
        ctx: bentoml.Context,
        as_of: str,
        household_keys: list[str] | None = None,
        explain: bool = True,
        limit: int = DEFAULT_LIMIT,
    ) -> ScoreResponse:
        """A month's alerted households by rank (no keys), or the requested households."""
        entry = _caller(ctx)
        if household_keys is not None:
            entry.asked = _pseudonyms(household_keys)
        with _http_errors():
            month = parse_as_of(as_of)
            out = self.lookup.score(
                month, household_keys, explain=explain, limit=limit, area=_area(entry)
            )
        entry.answered = [h.household_key for h in out.households]
        return out

    @bentoml.api(input_spec=ExplainRequest)
    def explain(self, ctx: bentoml.Context, as_of: str, household_key: str) -> HouseholdRisk:
        """One household's risk and reasons, whether alerted or not."""
        entry = _caller(ctx)
        entry.asked = _pseudonyms([household_key])
        with _http_errors():
            out = self.lookup.explain(parse_as_of(as_of), household_key, area=_area(entry))
        entry.answered = [out.household_key]
        return out

    @bentoml.api(input_spec=ModelRequest)
    def model(self, ctx: bentoml.Context) -> ModelInfo:
        """The model being served (re-resolved from the registry when due)."""
        _caller(ctx)
        with _http_errors():
            return self.lookup.model_info()

    @bentoml.api(input_spec=FreshRequest)
    def score_fresh(
        self,
        ctx: bentoml.Context,
        as_of: str,
        household_key: str,
        rows: dict[str, Any] | None = None,
    ) -> FreshRisk:
        """One household scored with records not yet in the warehouse; nothing is written."""
        entry = _caller(ctx)
        entry.asked = _pseudonyms([household_key])
        out = _answer(ctx, "rows", lambda: self.lookup.fresh(
            parse_as_of(as_of), household_key, rows, area=_area(entry)))
        if isinstance(out, FreshRisk):
            entry.answered = [out.household_key]
        return out

    @bentoml.api(input_spec=AlertsRequest)
    def alerts(
        self,
        ctx: bentoml.Context,
        division: str | None = None,
        township: str | None = None,
        tier: str | None = None,
        risk_type: str | None = None,
        status: str | None = None,
        month: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> AlertsPage:
        """The alert store, newest first, filtered and paged: each alert's lifecycle state."""
        from serving.api import AlertFilters

        entry = _caller(ctx)
        with _http_errors():
            filters = AlertFilters.check(division=division, township=township, tier=tier,
                                         risk_type=risk_type, status=status, month=month)
            out = self.lookup.alerts(filters, limit, cursor, area=_area(entry))
        entry.answered = list(dict.fromkeys(a.household_key for a in out.alerts))
        return out

    @bentoml.api(input_spec=VerdictsRequest)
    def verdicts(self, ctx: bentoml.Context, verdicts: list[VerdictItem]) -> VerdictsOut:
        """Caseworkers' verdicts, by the rules of `doudi feedback import`; all or nothing."""
        entry = _caller(ctx)
        rows = [{**v.model_dump(), "risk_types": ";".join(v.risk_types or ())}
                for v in verdicts]
        out = _answer(ctx, "verdicts", lambda: self.lookup.verdicts(
            rows, actor=_actor(entry), area=_area(entry)))
        if not isinstance(out, tuple):
            return out  # the problems' answer
        answer, households = out
        entry.answered = households
        return answer

    @bentoml.api(input_spec=ReferralRequest)
    def referrals(
        self,
        ctx: bentoml.Context,
        alert_id: int,
        referred_on: str,
        current_assistance: list[str] | None = None,
    ) -> ReferralOut:
        """Refer a confirmed alert to its departments (once; again: what was recorded)."""
        entry = _caller(ctx)
        with _http_errors():
            answer, household = self.lookup.refer(
                alert_id, referred_on=referred_on, current_assistance=current_assistance or (),
                actor=_actor(entry), area=_area(entry))
        entry.answered = [household]
        return answer

    def __metrics__(self, content: str) -> str:
        """BentoML's /metrics text, with the served model and the cached month's alerts."""
        return content + served_metrics(self.lookup.served, self.lookup.cached_tiers())


def _area(entry: AuditEntry) -> Area:
    """The verified caller's area (`serving.access.Area`)."""
    assert entry.principal is not None  # `_caller` checked it
    return entry.principal.area


def _actor(entry: AuditEntry) -> str:
    """Who the alert store records as having made a change: the key's id and label."""
    assert entry.principal is not None  # `_caller` checked it
    return f"api {entry.principal.key_id}: {entry.principal.label}"[:64]


# Both at import: BentoML reads a service's middlewares, and picks its metrics class, when it
# builds the app, before any instance exists.
cast(Any, DoudiRisk).add_asgi_middleware(RequestGuard)
bound_metric_labels()
