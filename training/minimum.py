"""How many months of data the monthly training job needs: one function, light to import.

`doudi train`/`monthly` refuse a warehouse with fewer months (training.job), and
`doudi simulate --help`, `doudi settings` and docs/generator.md quote the same number.
No lightgbm or pandas here: the CLI imports this module to write its help.

The arithmetic (training/core.py `make_folds`, training/job.py `train_monthly`):
an as-of month T is a training period once its label is final, i.e. T + horizon +
allowance <= the model month; the rolling-origin folds then need
`n_folds * fold_periods` validation periods + `gap` (= horizon) + early-stopping
periods + 1 fitting period. Months of data = those periods + horizon + allowance,
counted from the first roster month to the model month inclusive.
"""

from __future__ import annotations

# The monthly job's fold shape: TrainConfig's defaults (tests/jobs checks they agree).
MONTHLY_N_FOLDS = 3
MONTHLY_FOLD_PERIODS = 1
MONTHLY_EARLY_STOPPING_PERIODS = 1


def periods_needed(
    n_folds: int = MONTHLY_N_FOLDS,
    fold_periods: int = MONTHLY_FOLD_PERIODS,
    gap_periods: int = 0,
    early_stopping_periods: int = MONTHLY_EARLY_STOPPING_PERIODS,
) -> int:
    """Distinct training periods (as-of months) the rolling-origin folds need."""
    return n_folds * fold_periods + gap_periods + early_stopping_periods + 1


def months_needed(
    horizon_months: int,
    label_allowance_months: int,
    *,
    n_folds: int = MONTHLY_N_FOLDS,
    fold_periods: int = MONTHLY_FOLD_PERIODS,
    gap_periods: int | None = None,
    early_stopping_periods: int = MONTHLY_EARLY_STOPPING_PERIODS,
) -> int:
    """Months of delivered data (first roster month to model month, inclusive) training
    needs; the gap defaults to the horizon, as in the monthly job."""
    gap = horizon_months if gap_periods is None else gap_periods
    periods = periods_needed(n_folds, fold_periods, gap, early_stopping_periods)
    return periods + horizon_months + label_allowance_months
