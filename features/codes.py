"""The contract codes features give a meaning to, each checked against `doudi.contract` at
import: a code the contract renames or drops fails here instead of matching nothing.

Single codes named inline (`is_one_of(rows, "status", "enrolled")`) are held to the
contract by tests/features/test_feature_builders.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from doudi.contract import feed as contract_feed


def contract_codes(feed_name: str, column: str, *codes: str) -> tuple[str, ...]:
    """`codes` of a contract enum column; refused when one is not a contract code."""
    known = contract_feed(feed_name).column(column).enum or {}
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise ValueError(f"{feed_name}.{column}: {unknown} are not contract codes")
    return codes


def contract_levels(feed_name: str, column: str, levels: Mapping[str, float]
                    ) -> dict[str, float]:
    """A number for every code of a contract enum column: refused unless `levels` names
    exactly the contract's codes (a new code would otherwise become NaN)."""
    known = contract_feed(feed_name).column(column).enum or {}
    if set(levels) != set(known):
        raise ValueError(f"{feed_name}.{column}: levels for {sorted(levels)}, contract codes "
                         f"{sorted(known)}")
    return dict(levels)


# persons on the household now (the roster's current members)
LIVING_STATUSES = contract_codes("persons", "status", "living", "moved_in")
# any kind of work
WORK_STATUSES = contract_codes("employment", "status", "employed_local", "migrant",
                               "self_employed", "public_welfare_post")
SENIOR_OR_HIGHER = contract_codes("education", "stage", "senior_secondary", "vocational",
                                  "higher")
GRADE_LEVEL = contract_levels("housing", "safety_grade", {"A": 1.0, "B": 2.0, "C": 3.0,
                                                           "D": 4.0})
DAMAGE_LEVEL = contract_levels("disasters", "house_damage", {"none": 0.0, "minor": 1.0,
                                                              "severe": 2.0, "collapsed": 3.0})
# tekun (特困供养): households in a spell are out of the model's scope (labels);
# temporary (临时救助): one-off payments, not running spells.
TEKUN, TEMPORARY = contract_codes("social_assistance", "program", "tekun", "temporary")
