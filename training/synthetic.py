"""A synthetic household x month panel with signal, for tests, benchmarks and demos.

Not doudi data and not the generator's: a latent per-household risk plus a monthly AR(1)
shock drives both noisy features and the label, so a good model is measurably better than
a shuffled one. Shape mirrors `features.training_table` (household_key, as_of, features,
label, label_<risk_type>, group columns) so the wiring can be exercised end to end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RISK_TYPES_DEMO = ("illness", "disability", "unstable_employment")


def _intercept_for_rate(score: np.ndarray, rate: float) -> float:
    """b such that mean(sigmoid(b + score)) == rate (bisection on a sample)."""
    sample = score[:: max(1, len(score) // 200_000)].astype(np.float64)
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + sample)))) > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def make_panel(n_households: int = 2000, n_months: int = 12, n_features: int = 10,
               positive_rate: float = 0.05, signal: float = 1.5, seed: int = 0,
               n_counties: int = 6, start: str = "2023-01-31") -> pd.DataFrame:
    """One row per household x month-end; features are float32 plus two categoricals."""
    rng = np.random.default_rng(seed)
    n = n_households * n_months
    household_effect = rng.standard_normal(n_households).astype(np.float32)
    shock = np.zeros((n_households, n_months), dtype=np.float32)
    for m in range(1, n_months):
        shock[:, m] = 0.7 * shock[:, m - 1] + 0.7 * rng.standard_normal(n_households)
    latent = (household_effect[:, None] + shock).reshape(n)  # household-major order
    n_informative = max(1, n_features // 3)
    loadings = np.zeros(n_features, dtype=np.float32)
    loadings[:n_informative] = rng.uniform(0.3, 1.0, n_informative)
    values = np.empty((n, n_features), dtype=np.float32)
    for j in range(n_features):  # column by column: no (n x n_features) float64 temporaries
        column = rng.standard_normal(n, dtype=np.float32)
        if loadings[j]:
            column += loadings[j] * latent
        column[rng.random(n, dtype=np.float32) < 0.03] = np.nan  # scattered missing values
        values[:, j] = column
    frame = pd.DataFrame(values, columns=[f"x{j:03d}" for j in range(n_features)])
    county_of_household = rng.integers(0, n_counties, n_households)
    county_effect = np.linspace(-0.5, 0.5, n_counties)
    county = np.repeat(county_of_household, n_months)
    housing = rng.choice(np.array(["brick", "wood", "earth"], dtype=object), n)
    housing[rng.random(n) < 0.1] = None
    frame["county_code"] = pd.Categorical.from_codes(
        county, categories=pd.Index([f"C{c:02d}" for c in range(n_counties)]))
    frame["housing"] = pd.Series(housing, dtype="str")
    elderly = np.repeat(rng.random(n_households) < 0.3, n_months)
    score = (signal * latent + county_effect[county] + 0.4 * (housing == "earth")
             + 0.3 * elderly).astype(np.float32)
    b = _intercept_for_rate(score, positive_rate)
    label = (rng.random(n) < 1 / (1 + np.exp(-(b + score)))).astype(np.int8)
    frame.insert(0, "household_key", np.repeat(
        np.array([f"h{i:07d}" for i in range(n_households)], dtype=object), n_months))
    frame.insert(1, "as_of", np.tile(pd.date_range(start, periods=n_months, freq="ME"),
                                     n_households))
    frame["label"] = label
    x0 = np.nan_to_num(values[:, 0])
    for i, name in enumerate(RISK_TYPES_DEMO):
        p_type = 1 / (1 + np.exp(-(x0 * (1.5 if i == 0 else -0.5) + (i - 1) * 0.5)))
        frame[f"label_{name}"] = (label.astype(bool) & (rng.random(n) < p_type)).astype(np.int8)
    frame["group_elderly_head"] = elderly
    frame["group_county"] = frame["county_code"]
    return frame


def feature_columns(panel: pd.DataFrame) -> list[str]:
    return [c for c in panel.columns if c.startswith("x") or c in ("county_code", "housing")]
