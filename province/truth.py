"""Ground truth: contract labels from the emitted records, and the oracle.

`contract_labels` applies the contract's "prediction target" to the clean rows
the generator wrote (households, persons, monitoring_events, social_assistance).
`oracle_probabilities` forward-simulates many futures from the full latent state.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from doudi import contract
from province import timeutil
from province.dynamics import step
from province.params import WorldParams
from province.records import Batch, take
from province.state import NULL, TEKUN, State

LIVING_CODES = (0, 3)  # persons.status living, moved_in
IDENTIFIED, ELIMINATED = 0, 1


def _group_ends(group: np.ndarray, *, first: bool = False) -> np.ndarray:
    """Positions of the last (or first) row of each run of equal values in sorted `group`."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    change = group[1:] != group[:-1]
    return np.flatnonzero(np.r_[True, change] if first else np.r_[change, True])


def contract_labels(
    rows: dict[str, Batch],
    n_households: int,
    as_of_months: list[int],
    horizon: int,
    household_ids: np.ndarray,
    onset_by_month: dict[int, np.ndarray],
) -> Iterator[pa.Table]:
    """Per as-of month: one row per household with in_scope, label, label_risk_types, onset."""
    hh_rows, person_rows = rows["households"], rows["persons"]
    events, spells = rows["monitoring_events"], rows.get("social_assistance", {})
    risk_codes = list(contract.RISK_TYPES)
    risk_text = pa.array(
        [
            ";".join(risk_codes[k] for k in range(len(risk_codes)) if m >> k & 1)
            for m in range(1 << len(risk_codes))
        ]
    )
    ids = pa.array(household_ids).cast(pa.string())
    roster_day = np.full(n_households, np.iinfo(np.int64).max)
    np.minimum.at(roster_day, hh_rows["household_id"], hh_rows["reported_date"])
    # sort once; each as-of month then filters rows and keeps group ends in that order
    person_rows = take(
        person_rows,
        np.lexsort(
            (person_rows["reported_date"], person_rows["status_date"], person_rows["person_id"])
        ),
    )
    events = take(
        events, np.lexsort((events["event"], events["event_date"], events["household_id"]))
    )
    if spells:
        spells = take(spells, np.flatnonzero(spells["program"] == TEKUN))
        spell_key = spells["household_id"] * 100_000 + spells["start_date"]
        spells = take(spells, np.lexsort((spells["reported_date"], spell_key)))
    for t in as_of_months:
        t_end = int(timeutil.last_day(t))
        h_end = int(timeutil.last_day(t + horizon))
        members = _living_members(person_rows, t_end, n_households)
        in_scope = (
            (roster_day <= t_end)
            & (members > 0)
            & ~_monitored(events, t_end, n_households)
            & ~_in_tekun(spells, t_end, n_households)
        )
        label, mask_bits = _first_identification(events, t_end, h_end, n_households)
        began = np.zeros(n_households, dtype=bool)
        for m in range(t + 1, t + horizon + 1):
            began |= onset_by_month[m]
        yield pa.table(
            {
                "as_of": pa.array(np.full(n_households, t_end, dtype=np.int32), pa.date32()),
                "household_id": ids,
                "in_scope": in_scope,
                "label": label,
                "label_risk_types": risk_text.take(pa.array(mask_bits, mask=~label)),
                "hardship_began_in_horizon": began,
            }
        )


def _living_members(person_rows: Batch, t_end: int, n_households: int) -> np.ndarray:
    """Living members per household by each person's latest status known at `t_end`.

    `person_rows` sorted by person, status date, reported date.
    """
    sel = (person_rows["reported_date"] <= t_end) & (person_rows["status_date"] <= t_end)
    idx = np.flatnonzero(sel)
    latest = idx[_group_ends(person_rows["person_id"][idx])]
    living = np.isin(person_rows["status"][latest], LIVING_CODES)
    return np.bincount(person_rows["household_id"][latest][living], minlength=n_households)


def _monitored(events: Batch, t_end: int, n_households: int) -> np.ndarray:
    """Households whose latest monitoring event known at `t_end` is an identification.

    `events` sorted by household, event date, event.
    """
    sel = (events["reported_date"] <= t_end) & (events["event_date"] <= t_end)
    idx = np.flatnonzero(sel)
    last = idx[_group_ends(events["household_id"][idx])]
    monitored = np.zeros(n_households, dtype=bool)
    monitored[events["household_id"][last]] = events["event"][last] == IDENTIFIED
    return monitored


def _in_tekun(spells: Batch, t_end: int, n_households: int) -> np.ndarray:
    """Households with a tekun spell covering `t_end`, each spell as last reported by then.

    `spells`: tekun rows sorted by (household, start date), reported date; may be empty.
    """
    tekun = np.zeros(n_households, dtype=bool)
    if not spells:
        return tekun
    sel = (spells["reported_date"] <= t_end) & (spells["start_date"] <= t_end)
    idx = np.flatnonzero(sel)
    spell_key = spells["household_id"][idx] * 100_000 + spells["start_date"][idx]
    latest = idx[_group_ends(spell_key)]
    covers = (spells["end_date"][latest] == NULL) | (spells["end_date"][latest] >= t_end)
    tekun[spells["household_id"][latest][covers]] = True
    return tekun


def _first_identification(
    events: Batch, t_end: int, h_end: int, n_households: int
) -> tuple[np.ndarray, np.ndarray]:
    """Households identified in (`t_end`, `h_end`] and the risk-type bits of their first
    identification there: (label, bits)."""
    window = (
        (events["event"] == IDENTIFIED)
        & (events["event_date"] > t_end)
        & (events["event_date"] <= h_end)
    )
    idx = np.flatnonzero(window)
    first = idx[_group_ends(events["household_id"][idx], first=True)]
    label = np.zeros(n_households, dtype=bool)
    label[events["household_id"][first]] = True
    mask_bits = np.zeros(n_households, dtype=np.int64)
    mask_bits[events["household_id"][first]] = events["risk_types"][first]
    return label, mask_bits


def oracle_probabilities(
    state: State,
    month: int,
    households: np.ndarray,
    horizon: int,
    params: WorldParams,
    monitoring_line_of_year: dict[int, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """P(identified within (month, month+horizon]) for `households`, by forward simulation."""
    reps = params.oracle_replicates
    futures = state.select(households).tile(reps)
    n = len(households)
    hit = np.zeros(n * reps, dtype=bool)
    for k in range(1, horizon + 1):
        m = month + k
        line = monitoring_line_of_year[int(timeutil.year_of(m))]
        outcome = step(futures, m, rng, params, line, detection=True)
        hit |= outcome.identified
    return hit.reshape(reps, n).mean(axis=0)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC by the rank-sum formula (ties count one half)."""
    y = np.asarray(y, dtype=bool)
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos, neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (recall step) x precision."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    s, t = np.asarray(score, dtype=float)[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision = tp / seen
    recall = tp / max(1, int(y.sum()))
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
