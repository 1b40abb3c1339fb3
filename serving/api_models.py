"""The scoring API's errors and response models: pydantic only, light to import.

`serving.service` (BentoML) imports these at module level and `serving.api.RiskLookup`
(lightgbm, pandas, duckdb, MLflow) only inside the worker: BentoML's supervisor process
imports the service module just to read its configuration, and importing the heavy
stack there as well would add ~5 s to every cold start. `serving.api` re-exports all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Most households (or alerts) one answer lists when the request names no `limit`.
DEFAULT_LIMIT = 1000


# -- errors ------------------------------------------------------------------------------
class ApiError(Exception):
    """A request the caller can fix; `status` is the HTTP status the service answers."""

    status = 400


class BadRequestError(ApiError):
    """Malformed or disallowed input (HTTP 400)."""

    status = 400


class NotFoundError(ApiError):
    """Nothing to answer with: no data for that month, household not in scope (HTTP 404)."""

    status = 404


# -- responses -----------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), frozen=True)


class ReasonOut(_Out):
    """One reason: a feature group that raises the household's risk, strongest first."""

    rank: int
    group: str = Field(description="Feature group (registry `group`).")
    text_zh: str = Field(description="The reason as caseworkers read it.")
    contribution_pp: float | None = Field(
        description="Size in probability points: the risk the household's risk-raising "
        "groups add (risk minus the calibrated risk at the margin without them), shared "
        "among those groups in proportion to their log-odds contributions (they sum to "
        "that lift, never above the risk). Always set for reasons computed now; None only "
        "for a reason stored on another scale."
    )
    margin_logodds: float = Field(description="The group's TreeSHAP contribution (log-odds).")


class HouseholdRisk(_Out):
    """One in-scope household as of a month end. Keyed by pseudonym only."""

    household_key: str
    as_of: str = Field(description="Month end, YYYY-MM-DD.")
    county_code: str
    village_code: str
    risk: float = Field(
        description="Calibrated probability of identification within the "
        "horizon (settings.horizon_months)."
    )
    rank: int = Field(description="1 = highest risk among the month's in-scope households.")
    tier: str = Field(description="red, orange, yellow or none.")
    alerted: bool
    source: str = Field(description="model, rules, both or none.")
    risk_types: list[str]
    departments: list[str]
    rule_triggers: list[str]
    reasons: list[ReasonOut]
    model_version: str
    model_as_of: str


class ScoreResponse(_Out):
    as_of: str
    model_version: str
    in_scope: int = Field(description="In-scope households scored for the month.")
    alerted: int = Field(description="Alerted households for the month (all, not just listed).")
    households: list[HouseholdRisk]
    missing: list[str] = Field(description="Requested keys not in scope for the month.")


class ModelInfo(_Out):
    model_uri: str
    model_version: str
    model_as_of: str = Field(description="The month the model was trained as of.")
    trained_through: str | None = None
    feature_count: int
    feature_registry_version: str | None = None
    calibration_method: str | None = None
    risk_type_models: list[str]
    loaded_at: str
    refresh_seconds: float
    cached_as_of: str | None = Field(None, description="The month whose scores are cached.")
