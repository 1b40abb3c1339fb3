"""The routing table covers the contract's hardship types and programmes, in one place."""

from __future__ import annotations

import pytest

from doudi.contract import PROGRAM, RISK_TYPES
from serving import routing


def test_every_hardship_type_routes_to_known_departments() -> None:
    assert set(routing.ROUTES) == set(RISK_TYPES)
    for departments in routing.ROUTES.values():
        assert departments and set(departments) <= set(routing.DEPARTMENTS)


def test_every_department_runs_a_programme_and_civil_affairs_runs_the_contracts() -> None:
    for department in routing.DEPARTMENTS:
        assert routing.programmes_of(department)
    assert set(routing.programmes_of("civil_affairs")) == set(PROGRAM)
    assert routing.PROGRAMMES["dibao"].name_zh == "低保"


def test_departments_for_keeps_routing_order_without_repeats() -> None:
    assert routing.departments_for(["illness", "disaster"]) == (
        "medical_insurance",
        "civil_affairs",
        "emergency_management",
        "housing",
    )
    with pytest.raises(KeyError, match="unknown risk type 'luck'"):
        routing.departments_for(["luck"])


def test_assistance_mixes_programmes_and_departments() -> None:
    assert routing.assisting_departments(["dibao", "medical_insurance"]) == {
        "civil_affairs",
        "medical_insurance",
    }
    assert routing.department_name("disabled_persons_federation") == "残联"
