"""The BentoML service the provincial monitoring platform calls (docs/api.md).

    doudi serve            # or: make serve; runs `bentoml serve serving.service:DoudiRisk`

A thin layer: each endpoint parses `as_of` into a `doudi.months.Month` (the edge), calls
`serving.api.RiskLookup` and maps its errors to HTTP (`BadRequestError` -> 400
`InvalidArgument`, `NotFoundError` -> 404 `NotFound`). BentoML logs every exception an
endpoint raises as an ERROR with its stack; a 4xx is the caller's mistake, so
`ClientErrorsInOneLine` turns those into one WARNING line (method, route, status, the
field and rule; never the request's content). Nothing runs
at import but the decorator; the model loads in `__init__`, inside the worker. Start it
with `BENTOML_DO_NOT_TRACK=true`, `MLFLOW_DISABLE_TELEMETRY=true` and `BENTOML_HOME` in the
workspace (`doudi serve` sets all three).

One worker: the month cache lives in the worker's memory (a second worker would score the
month again and hold a second copy). Sync endpoints run in up to `threads` threads.
"""

# No `from __future__ import annotations`: BentoML reads the endpoints' type hints.

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from doudi.errors import UserError
from doudi.months import Month

# Light imports only: `RiskLookup` (lightgbm, pandas, MLflow) loads in the worker.
from serving.api_models import (
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


class ScoreRequest(_Request):
    as_of: str = Field(description="Month YYYY-MM (or a date YYYY-MM-DD in that month).")
    household_keys: list[str] | None = Field(
        None, description="Household pseudonyms (h_ + 20 hex); null: the month's alerts."
    )
    explain: bool = Field(True, description="Include reasons (false: empty reasons).")
    limit: int = Field(1000, description="Most alerted households listed (without keys).")


class ExplainRequest(_Request):
    as_of: str = Field(description="Month YYYY-MM (or a date YYYY-MM-DD in that month).")
    household_key: str = Field(description="One household pseudonym (h_ + 20 hex).")


class ModelRequest(_Request):
    pass


class AlertsRequest(_Request):
    township: str | None = Field(None, description="9-digit township code.")
    status: str | None = Field(None, description="Lifecycle status, e.g. dispatched.")
    limit: int = Field(1000, description="Most alerts returned, newest first.")


def parse_as_of(value: str) -> Month:
    """The request's `as_of`: YYYY-MM, or a date in the month (documented): 400 otherwise."""
    try:
        return Month.parse(value, what="as_of", allow_date=True)
    except UserError as err:
        raise BadRequestError(str(err)) from None


# -- one line per 4xx ------------------------------------------------------------------------
# BentoML 1.4 (`_bentoml_impl.server.app.api_endpoint_wrapper`) calls `log_exception`, which
# logs "Exception on <path> [<method>]" with the stack on this logger, for every exception.
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
_FIELDS = ("household_keys", "household_key", "as_of", "explain", "limit", "township", "status")
_FIELD = re.compile(r"\b(" + "|".join(_FIELDS) + r")\b")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _loc(parts: tuple[Any, ...]) -> str:
    """A pydantic error location, with anything not shaped like a field name withheld."""
    shown = [str(p) if isinstance(p, int) or _NAME.fullmatch(str(p)) else "?" for p in parts]
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

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.lookup.close()

    @bentoml.api(input_spec=ScoreRequest)
    def score(
        self,
        as_of: str,
        household_keys: list[str] | None = None,
        explain: bool = True,
        limit: int = 1000,
    ) -> ScoreResponse:
        """A month's alerted households by rank (no keys), or the requested households."""
        with _http_errors():
            month = parse_as_of(as_of)
            return self.lookup.score(month, household_keys, explain=explain, limit=limit)

    @bentoml.api(input_spec=ExplainRequest)
    def explain(self, as_of: str, household_key: str) -> HouseholdRisk:
        """One household's risk and reasons, whether alerted or not."""
        with _http_errors():
            return self.lookup.explain(parse_as_of(as_of), household_key)

    @bentoml.api(input_spec=ModelRequest)
    def model(self) -> ModelInfo:
        """The model being served (re-resolved from the registry when due)."""
        with _http_errors():
            return self.lookup.model_info()

    @bentoml.api(input_spec=AlertsRequest)
    def alerts(
        self, township: str | None = None, status: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The alert store, newest first: where each alert is in its lifecycle."""
        with _http_errors():
            return self.lookup.alerts(township, status, limit)
