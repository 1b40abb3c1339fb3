"""The BentoML service the provincial monitoring platform calls (docs/api.md).

    doudi serve            # or: make serve; runs `bentoml serve serving.service:DoudiRisk`

A thin layer: each endpoint parses `as_of` into a `doudi.months.Month` (the edge), calls
`serving.api.RiskLookup` and maps its errors to HTTP (`BadRequestError` -> 400
`InvalidArgument`, `NotFoundError` -> 404 `NotFound`). BentoML logs every exception an
endpoint raises as an ERROR with its stack; a 4xx is the caller's mistake, so
`ClientErrorsInOneLine` turns those into one WARNING line (method, route, status, the
field and rule; never the request's content). In front of the endpoints,
`RequestGuard` checks the API key (401, 403; `serving.access`), takes JSON only (415) and
bodies up to `settings.api_max_body_bytes` (413), and writes every endpoint request to the
audit log; `BoundedMetricLabels` labels /metrics by route, never by the raw URL path
(docs/api.md "Access", "Errors", "/metrics"). Each endpoint answers within its key's area
(`RiskLookup`'s `area`) and notes the households asked and answered in the request's
`AuditEntry`. At import: the decorator, the middleware's registration and the
metrics class swap, nothing else; the model loads in `__init__`, inside the worker. Start it
with `BENTOML_DO_NOT_TRACK=true`, `MLFLOW_DISABLE_TELEMETRY=true` and `BENTOML_HOME` in the
workspace (`doudi serve` sets all three).

One worker: the month cache lives in the worker's memory (a second worker would score the
month again and hold a second copy). Sync endpoints run in up to `threads` threads.
"""

# No `from __future__ import annotations`: BentoML reads the endpoints' type hints.

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

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
    BadRequestError,
    HouseholdRisk,
    ModelInfo,
    NotFoundError,
    ScoreResponse,
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


class AlertsRequest(_Request):
    township: str | None = Field(None, description="9-digit township code.")
    status: str | None = Field(None, description="Lifecycle status, e.g. dispatched.")
    limit: int = Field(DEFAULT_LIMIT, description="Most alerts returned, newest first.")


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
_FIELDS = ("household_keys", "household_key", "as_of", "explain", "limit", "township", "status")
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
                await _refuse(scope, receive, send, 413, "body: too large", too_big)
                return
            await self.app(scope, receive, send)  # the router answers (404, 405, docs, probes)
            return
        entry = AuditEntry(endpoint=scope["path"], at=datetime.now(UTC))
        answered = 0

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
    """RiskLookup's errors as BentoML's (400 / 404); anything else stays a 500."""
    try:
        yield
    except NotFoundError as err:
        raise NotFound(str(err)) from None
    except BadRequestError as err:
        raise InvalidArgument(str(err)) from None


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
        from serving.api import RiskLookup

        self.lookup = RiskLookup(Settings())
        from serving.store.keys import active_key_count

        if active_key_count(access_gate().store) == 0:
            logging.getLogger(__name__).warning(
                "no active API key in the alert store: every request will be refused (401); "
                "create one with `doudi keys create`"
            )

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

    @bentoml.api(input_spec=AlertsRequest)
    def alerts(
        self,
        ctx: bentoml.Context,
        township: str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[dict[str, Any]]:
        """The alert store, newest first: where each alert is in its lifecycle."""
        entry = _caller(ctx)
        with _http_errors():
            out = self.lookup.alerts(township, status, limit, area=_area(entry))
        entry.answered = list(dict.fromkeys(str(a["household_key"]) for a in out))
        return out


def _area(entry: AuditEntry) -> Area:
    """The verified caller's area (`serving.access.Area`)."""
    assert entry.principal is not None  # `_caller` checked it
    return entry.principal.area


# Both at import: BentoML reads a service's middlewares, and picks its metrics class, when it
# builds the app, before any instance exists.
cast(Any, DoudiRisk).add_asgi_middleware(RequestGuard)
bound_metric_labels()
