"""PSI and its bins on hand-made distributions (values computed here by hand), and drift
on a real month: a stable month is not flagged, a simulated shift is."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from doudi import registry
from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from features import scoring_table
from monitoring import drift
from tests.serving.test_api import settings  # noqa: F401 - the shared monthly workspace


def test_psi_of_two_bins_by_hand() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5) ln(0.25/0.5) + (0.75-0.5) ln(0.75/0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(expected)
    assert expected == pytest.approx(0.2747, abs=1e-4)
    assert drift.psi(np.array([3, 7]), np.array([30, 70])) == pytest.approx(0.0)


def test_an_empty_bin_counts_as_the_floor() -> None:
    p, q = [1.0, drift.SHARE_FLOOR], [0.5, 0.5]
    expected = (q[0] - p[0]) * math.log(q[0] / p[0]) + (q[1] - p[1]) * math.log(q[1] / p[1])
    assert drift.psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(expected)


def test_bins_are_the_reference_quantiles_plus_missing() -> None:
    reference = np.arange(100, dtype=float)  # deciles at 9.9, 19.8, ...: ten bins of ten
    edges = drift.quantile_edges(reference)
    assert len(edges) == 9
    assert drift.bin_counts(reference, edges).tolist() == [10.0] * 10 + [0.0]
    # half the values gone missing: every bin halves, the missing bin holds 50
    current = np.where(np.arange(100) % 2 == 0, reference, np.nan)
    counts = drift.bin_counts(current, edges)
    assert counts.tolist() == [5.0] * 10 + [50.0]
    q = np.append(np.full(10, 0.05), 0.5)
    p = np.append(np.full(10, 0.1), drift.SHARE_FLOOR)
    assert drift.column_psi(reference, current) == pytest.approx(float(np.sum((q - p) *
                                                                              np.log(q / p))))


def test_a_discrete_feature_gets_one_bin_per_value() -> None:
    reference = np.array([0.0] * 70 + [1.0] * 30)
    edges = drift.quantile_edges(reference)
    assert edges.tolist() == [0.0, 1.0]
    current = np.array([0.0] * 40 + [1.0] * 60)
    expected = (0.4 - 0.7) * math.log(0.4 / 0.7) + (0.6 - 0.3) * math.log(0.6 / 0.3)
    assert drift.column_psi(reference, current) == pytest.approx(expected)


@pytest.mark.parametrize(("value", "band"), [(0.0, "stable"), (0.099, "stable"),
                                             (0.1, "moderate"), (0.2499, "moderate"),
                                             (0.25, "major"), (3.0, "major")])
def test_bands(value: float, band: str) -> None:
    assert drift.band(value, 0.1, 0.25) == band


def test_mean_abs_contributions_drops_the_bias() -> None:
    shap = np.array([[1.0, -2.0, 5.0], [-3.0, 0.0, 5.0]])
    assert drift.mean_abs_contributions(shap).tolist() == [2.0, 1.0]


# -- on a real month ---------------------------------------------------------------------------
def _drift(artifact: ModelArtifact, reference: pd.DataFrame, current: pd.DataFrame,
           ) -> pd.DataFrame:
    table = drift.feature_drift(artifact.encode(reference), artifact.encode(current),
                                artifact.feature_names, moderate=0.1, major=0.25)
    return table.set_index("feature")


def _household_level(names: pd.Index) -> list[str]:
    """Features that should hold still from one month to the next: not area shares
    (county_*, village_*: one value per area, so a month's change moves whole areas between
    bins) nor clocks (months since an event: everyone moves one month), docs/monitoring.md."""
    return [n for n in names if not n.startswith(("county_", "village_"))
            and "age_months" not in n and "months_since" not in n]


@pytest.fixture(scope="module")
def months(settings: Settings) -> tuple[ModelArtifact, pd.DataFrame, pd.DataFrame]:  # noqa: F811
    artifact, _ = registry.load_model(registry.workspace(settings).champion_uri, settings)
    before = scoring_table(settings.warehouse_dir, Month.parse("2025-05"), settings)
    now = scoring_table(settings.warehouse_dir, Month.parse("2025-06"), settings)
    return artifact, before, now


def test_a_stable_month_is_not_flagged(
    months: tuple[ModelArtifact, pd.DataFrame, pd.DataFrame],
) -> None:
    artifact, before, now = months
    table = _drift(artifact, before, now)
    own = table.loc[_household_level(table.index)]
    assert len(own) > 50 and (own["band"] != "major").all(), own.sort_values("psi").tail()
    score = drift.column_psi(artifact.raw_margin(before), artifact.raw_margin(now))
    assert score < 0.1


def test_incomes_cut_by_40_percent_are_flagged(
    months: tuple[ModelArtifact, pd.DataFrame, pd.DataFrame],
) -> None:
    artifact, before, now = months
    poorer = now.copy()
    money = ["income_per_capita", "income_to_monitoring_line"]
    poorer[money] = poorer[money] * 0.6
    table = _drift(artifact, before, poorer)
    assert (table.loc[money, "band"] == "major").all(), table.loc[money]
    untouched = [n for n in _household_level(table.index) if not n.startswith("income")]
    assert (table.loc[untouched, "band"] != "major").all()


def test_one_countys_medical_feed_stopping_is_flagged(
    months: tuple[ModelArtifact, pd.DataFrame, pd.DataFrame],
) -> None:
    artifact, before, now = months
    stopped = now.copy()
    county = stopped["county_code"].value_counts().index[0]
    medical = [c for c in stopped.columns if c.startswith("medical_")
               and c != "medical_feed_missing"]
    # what a stopped feed looks like to the features: no values, the missing flag set
    in_county = stopped["county_code"] == county
    stopped.loc[in_county, medical] = np.nan
    stopped.loc[in_county, "medical_feed_missing"] = 1
    table = _drift(artifact, before, stopped)
    assert table.loc["medical_feed_missing", "band"] == "major"
    share = in_county.mean()
    assert share > 0.25
    usually_there = table.loc[medical][table.loc[medical, "missing_ref"] < 0.1]
    assert len(usually_there) >= 10 and (usually_there["band"] == "major").all(), usually_there
    assert (usually_there["missing_now"] >= share).all()
    before_shift = _drift(artifact, before, now).loc[medical]
    assert (before_shift["band"] == "stable").all(), before_shift
