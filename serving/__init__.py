"""serving: scores, reasons, the alert store, audited exports and the scoring API.

Public API (each name is imported from its module on first use: `import serving` loads
no data stack, so `doudi --help` stays fast and the BentoML service imports only what
it needs):

- `score_month(settings, as_of, ...)`: the monthly scoring run: score, store, export.
- `score(frame, artifact, settings, as_of)`, `to_new_alerts(scored)`,
  `load_model(uri, settings)` (`serving.scoring`).
- `Explainer(artifact, max_reasons)`: reasons per household (`serving.explain`).
- `export_township`, `export_new_alerts`, `write_operator_export`, `check_townships`:
  the audited exports (`serving.export`).
- `open_store`, `AlertStore`, `NewAlert`, `Reason`: the alert store (`serving.store`,
  which publishes the rest of its API itself).
- `RiskLookup`: the scoring API's logic (`serving.api`); `running_server`, `check_model`:
  running its server (`serving.server`; the BentoML layer is `serving.service`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from doudi.lazy import lazy_exports

if TYPE_CHECKING:
    from serving.api import RiskLookup
    from serving.explain import Explainer
    from serving.export import (
        check_townships,
        export_new_alerts,
        export_township,
        write_operator_export,
    )
    from serving.scoring import load_model, score, score_month, to_new_alerts
    from serving.server import check_model, running_server
    from serving.store import AlertStore, NewAlert, Reason, open_store

# public name -> the module it lives in
_HOMES: dict[str, str] = {
    "AlertStore": "serving.store",
    "Explainer": "serving.explain",
    "NewAlert": "serving.store",
    "Reason": "serving.store",
    "RiskLookup": "serving.api",
    "check_model": "serving.server",
    "check_townships": "serving.export",
    "export_new_alerts": "serving.export",
    "export_township": "serving.export",
    "load_model": "serving.scoring",
    "open_store": "serving.store",
    "running_server": "serving.server",
    "score": "serving.scoring",
    "score_month": "serving.scoring",
    "to_new_alerts": "serving.scoring",
    "write_operator_export": "serving.export",
}

# the same names, for `import *` and the linters (tests check the two agree)
__all__ = [
    "AlertStore",
    "Explainer",
    "NewAlert",
    "Reason",
    "RiskLookup",
    "check_model",
    "check_townships",
    "export_new_alerts",
    "export_township",
    "load_model",
    "open_store",
    "running_server",
    "score",
    "score_month",
    "to_new_alerts",
    "write_operator_export",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
