"""Point-in-time household features and labels (as of a month end T).

Reads the warehouse (`doudi.warehouse` layout) only; never imports ingest,
training or serving. Public API:

- `build_features(warehouse, as_of, settings)`: keys + features + group columns.
- `build_labels(warehouse, as_of, settings, known_by)`: scope and labels.
- `training_table(warehouse, model_month, settings, from_month=None)` (negatives
  down-sampled with a `SAMPLE_WEIGHT` column when `settings.training_negative_rate` < 1;
  `sample_negatives` is the rule).
- `scoring_table(warehouse, as_of, settings)`.
- `labelled_table(warehouse, months, settings, known_by)`: any months, labels known by then.
- `labels_table(warehouse, months, settings, known_by)`: the same without features (cheap).
- `current_assistance(warehouse, as_of)`: who receives which assistance at T.
- `feature_names()`, `FEATURES` (`registry.FeatureDefinition`s), `REGISTRY_VERSION`.
"""

from features.assistance import current_assistance
from features.labels import LABEL_COLUMNS
from features.registry import (
    FEATURES,
    GROUP_COLUMNS,
    KEY_COLUMNS,
    REGISTRY_VERSION,
    feature_names,
    group_column_names,
)
from features.tables import (
    SAMPLE_WEIGHT,
    build_features,
    build_features_range,
    build_labels,
    labelled_table,
    labels_table,
    mature_months,
    sample_negatives,
    scoring_table,
    training_table,
)

__all__ = [
    "FEATURES",
    "GROUP_COLUMNS",
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "REGISTRY_VERSION",
    "SAMPLE_WEIGHT",
    "build_features",
    "build_features_range",
    "build_labels",
    "current_assistance",
    "feature_names",
    "group_column_names",
    "labelled_table",
    "labels_table",
    "mature_months",
    "sample_negatives",
    "scoring_table",
    "training_table",
]
