"""The BentoML service the provincial monitoring platform calls (docs/api.md).

    doudi serve            # or: make serve; runs `bentoml serve serving.service:DoudiRisk`

A thin layer: each endpoint calls `serving.api.RiskLookup` and maps its errors to HTTP
(`BadRequestError` -> 400 `InvalidArgument`, `NotFoundError` -> 404 `NotFound`). Nothing runs
at import but the decorator; the model loads in `__init__`, inside the worker. Start it
with `BENTOML_DO_NOT_TRACK=true`, `MLFLOW_DISABLE_TELEMETRY=true` and `BENTOML_HOME` in the
workspace (`doudi serve` sets all three).

One worker: the month cache lives in the worker's memory (a second worker would score the
month again and hold a second copy). Sync endpoints run in up to `threads` threads.
"""

# No `from __future__ import annotations`: BentoML reads the endpoints' type hints.

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound
from pydantic import BaseModel, ConfigDict, Field

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
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from doudi.settings import Settings
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
            return self.lookup.score(as_of, household_keys, explain=explain, limit=limit)

    @bentoml.api(input_spec=ExplainRequest)
    def explain(self, as_of: str, household_key: str) -> HouseholdRisk:
        """One household's risk and reasons, whether alerted or not."""
        with _http_errors():
            return self.lookup.explain(as_of, household_key)

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
