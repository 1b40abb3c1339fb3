"""The scoring API's errors and response models: pydantic only, light to import.

`serving.service` (BentoML) imports these at module level and `serving.api.RiskLookup`
(lightgbm, pandas, duckdb, MLflow) only inside the worker: BentoML's supervisor process
imports the service module just to read its configuration, and importing the heavy
stack there as well would add ~5 s to every cold start. `serving.api` re-exports all.
"""

from __future__ import annotations

from typing import Any

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


class ConflictError(ApiError):
    """The alert store refuses the change as it stands: another verdict recorded, an alert
    not at that step of its lifecycle (HTTP 409)."""

    status = 409


class ProblemsError(ApiError):
    """A refusal that lists each problem (HTTP `status`): `{"error": ..., "problems": [...]}`.
    A problem names where (feed/row/column, or index/field) and the rule, never a value."""

    def __init__(self, message: str, problems: list[dict[str, Any]], status: int = 400) -> None:
        super().__init__(message)
        self.problems = problems
        self.status = status


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


class TrainingWindow(_Out):
    first: str | None = Field(description="First training month (YYYY-MM).")
    last: str | None = Field(description="Last training month (YYYY-MM).")


class ModelInfo(_Out):
    model_uri: str
    model_version: str
    model_as_of: str = Field(description="The month the model was trained as of (YYYY-MM).")
    trained_through: str | None = Field(
        None, description="Last training period's month end (YYYY-MM-DD): the last month "
        "with mature labels.")
    training_window: TrainingWindow | None = Field(
        None, description="First and last training month (YYYY-MM); `first` is the registry "
        "version's record (null for a model folder, or a local copy saved without it).")
    test_periods: list[str] = Field(
        default_factory=list, description="The out-of-time test fold's months (YYYY-MM).")
    test_metrics: dict[str, float] = Field(
        default_factory=dict, description="The model's metrics on the test fold (artifact "
        "meta.json): roc_auc, pr_auc, precision_at_k, recall_at_k, brier, ece, "
        "calibration_slope, positives, n.")
    workspace: str | None = Field(
        None, description="The workspace fingerprint the model is bound to (docs/training.md).")
    source: str = Field(
        "registry", description="Where the served model was loaded from: registry, local_copy "
        "(the registry was unreachable) or folder (api_model_uri is a model folder).")
    fallback_reason: str | None = Field(
        None, description="Why the local copy is served (null unless source is local_copy).")
    feature_count: int
    feature_registry_version: str | None = None
    calibration_method: str | None = None
    risk_type_models: list[str]
    loaded_at: str
    refresh_seconds: float
    cached_as_of: str | None = Field(None, description="The month whose scores are cached.")


class RowProblemOut(_Out):
    """One problem of a `/score_fresh` row: where and which rule, never the value."""

    feed: str
    row: int | None = Field(description="Index in the feed's list (null: the feed as a whole).")
    column: str | None = Field(description="Canonical column (null: the row as a whole).")
    rule: str = Field(description="An ingest rule code (docs/ingest-rules.md) or a fresh rule.")
    message: str


class FreshRisk(HouseholdRisk):
    """`/score_fresh`: the household as `/explain` answers it, with the request's rows."""

    rows_added: dict[str, int] = Field(description="Feed -> rows counted.")
    warnings: list[RowProblemOut] = Field(
        description="Ingest's warning rules (the rows are kept, as ingest keeps them).")


class AlertOut(_Out):
    """One alert of the store: where it is in its lifecycle."""

    alert_id: int
    household_key: str
    county_code: str
    township_code: str
    village_code: str
    as_of: str = Field(description="The alert's month end, YYYY-MM-DD.")
    model_version: str
    risk: float | None
    tier: str
    risk_types: list[str]
    departments: list[str]
    rule_triggers: list[str]
    source: str
    status: str
    created_at: str
    updated_at: str


class AlertsPage(_Out):
    alerts: list[AlertOut] = Field(description="Newest first (alert id descending).")
    next_cursor: str | None = Field(
        description="Pass as `cursor`, with the same filters, for the next page; null: none.")


class VerdictsOut(_Out):
    received: int = Field(description="Verdicts in the request.")
    recorded: int = Field(description="Verdicts written now.")
    already_recorded: int = Field(
        description="The identical verdict was already stored (or repeated in the request).")


class ReferralOut(_Out):
    alert_id: int
    status: str = Field(description="The alert's status after the call (referred, or later).")
    referred: list[str] = Field(description="Departments the alert is referred to.")
    already_assisting: list[str] = Field(
        description="Departments skipped because the household's current assistance comes "
        "from them (empty when already recorded).")
    already_recorded: bool = Field(description="The alert was referred before: nothing changed.")
