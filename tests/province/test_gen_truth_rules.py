"""The contract's prediction target on a hand-built four-household fixture."""

from __future__ import annotations

from datetime import date

import numpy as np

from province import timeutil
from province.state import NULL, TEKUN
from province.truth import contract_labels


def d(text: str) -> int:
    return (date.fromisoformat(text) - date(1970, 1, 1)).days


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


ROSTER = d("2023-01-01")
ROWS = {
    "households": {"household_id": arr(0, 1, 2, 3), "reported_date": arr(*[ROSTER] * 4)},
    "persons": {
        # person 1 (household 1) dies in February; the registry hears of it in March
        "person_id": arr(0, 1, 2, 3, 1),
        "household_id": arr(0, 1, 2, 3, 1),
        "status": arr(0, 0, 0, 0, 1),
        "status_date": arr(
            d("1960-01-01"), d("1950-01-01"), d("1970-01-01"), d("1940-01-01"), d("2023-02-14")
        ),
        "reported_date": arr(ROSTER, ROSTER, ROSTER, ROSTER, d("2023-03-03")),
    },
    "monitoring_events": {
        # household 2 is under monitoring January-March; household 0 identified in April
        "household_id": arr(2, 2, 0),
        "event_date": arr(d("2023-01-10"), d("2023-03-05"), d("2023-04-20")),
        "event": arr(0, 1, 0),
        "risk_types": arr(1, 1, 0b101),  # illness; illness + education
        "reported_date": arr(d("2023-01-15"), d("2023-03-06"), d("2023-04-22")),
    },
    "social_assistance": {
        # household 3: a tekun spell, closed on 10 February (row reported 20 February)
        "household_id": arr(3, 3),
        "program": arr(TEKUN, TEKUN),
        "start_date": arr(d("2022-05-01"), d("2022-05-01")),
        "end_date": arr(NULL, d("2023-02-10")),
        "reported_date": arr(ROSTER, d("2023-02-20")),
    },
}


def test_scope_and_labels_by_hand() -> None:
    january = timeutil.parse_month("2023-01")
    months = [january, january + 1, january + 2]
    onsets = {m: np.zeros(4, dtype=bool) for m in range(january, january + 12)}
    onsets[january + 3][0] = True
    tables = list(contract_labels(ROWS, 4, months, 6, np.array(["a", "b", "c", "d"]), onsets))
    scope = [t.column("in_scope").to_pylist() for t in tables]
    labels = [t.column("label").to_pylist() for t in tables]
    assert scope[0] == [True, True, False, False]  # 2 monitored, 3 in a tekun spell
    assert scope[1] == [True, True, False, True]  # death not yet reported; spell closed
    assert scope[2] == [True, False, True, True]  # death known; monitoring ended
    assert labels == [[True, False, False, False]] * 3
    assert tables[0].column("label_risk_types").to_pylist() == [
        "illness;education",
        None,
        None,
        None,
    ]
    assert tables[0].column("hardship_began_in_horizon").to_pylist()[0]
    assert str(tables[0].column("as_of")[0]) == "2023-01-31"
