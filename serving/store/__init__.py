"""The alert store: alerts, their lifecycle, verdicts, referrals and the export audit.

Public API (import from here):
    open_store(url=None, *, settings=None, clock=...) -> AlertStore   (migrates to head)
    AlertStore.add_alerts / dispatch / record_verdict / refer / update_referral /
        close / record_export / get / open_household_keys
    NewAlert, Reason, AddReport, SkipReason, ReferralOutcome, Status
    list_alerts, alerts_for_export, reason_columns_in, verdict_labels,
    duplicate_assistance, omissions, township_status
    import_feedback, read_feedback, ImportReport, FeedbackFile, Problem
"""

from serving.store.database import default_url
from serving.store.feedback import (
    FeedbackError,
    FeedbackFile,
    ImportReport,
    Problem,
    import_feedback,
    read_feedback,
)
from serving.store.inputs import NewAlert, Reason
from serving.store.lifecycle import IllegalTransitionError, Status
from serving.store.records import (
    AddReport,
    AlertNotFoundError,
    AlertRecord,
    ReferralOutcome,
    Skipped,
    SkipReason,
    VerdictConflictError,
)
from serving.store.reports import (
    DEFAULT_OMISSION_AFTER_DAYS,
    alerts_for_export,
    duplicate_assistance,
    list_alerts,
    omissions,
    reason_columns_in,
    township_status,
    verdict_labels,
)
from serving.store.store import AlertStore, open_store

__all__ = [
    "DEFAULT_OMISSION_AFTER_DAYS",
    "AddReport",
    "AlertNotFoundError",
    "AlertRecord",
    "AlertStore",
    "FeedbackError",
    "FeedbackFile",
    "IllegalTransitionError",
    "ImportReport",
    "NewAlert",
    "Problem",
    "Reason",
    "ReferralOutcome",
    "SkipReason",
    "Skipped",
    "Status",
    "VerdictConflictError",
    "alerts_for_export",
    "default_url",
    "duplicate_assistance",
    "import_feedback",
    "list_alerts",
    "omissions",
    "open_store",
    "read_feedback",
    "reason_columns_in",
    "township_status",
    "verdict_labels",
]
