"""Who helps with what: hardship type -> departments -> assistance programmes.

The one routing table of doudi. The alert store uses it to decide which
departments a confirmed hardship is referred to, to spot households that already
receive the matching help (possible duplicate assistance) and confirmed hardship
that nobody took up (possible omission); scoring uses it to attach departments
to an alert. Hardship codes are those of `doudi.contract.RISK_TYPES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from doudi.contract import PROGRAM, RISK_TYPES

# department code -> Chinese name used on caseworker sheets and reports
DEPARTMENTS: Final = MappingProxyType(
    {
        "medical_insurance": "医保",
        "civil_affairs": "民政",
        "education": "教育",
        "housing": "住建",
        "human_resources": "人社",
        "emergency_management": "应急管理",
        "disabled_persons_federation": "残联",
        "agriculture": "农业农村",
    }
)


@dataclass(frozen=True)
class Programme:
    code: str
    name_zh: str
    department: str


def _programmes() -> dict[str, Programme]:
    # Civil affairs' programmes are the contract's social-assistance codes (the
    # social_assistance feed reports them), so their names come from there.
    civil = {code: Programme(code, zh or code, "civil_affairs") for code, zh in PROGRAM.items()}
    others = (
        Programme("medical_assistance", "医疗救助", "medical_insurance"),
        Programme("critical_illness_insurance", "大病保险", "medical_insurance"),
        Programme("education_grant", "教育资助", "education"),
        Programme("dilapidated_house_renovation", "农村危房改造", "housing"),
        Programme("employment_assistance", "就业帮扶", "human_resources"),
        Programme("public_welfare_post", "公益岗位", "human_resources"),
        Programme("disaster_relief", "受灾人员救助", "emergency_management"),
        Programme("disability_subsidy", "残疾人两项补贴", "disabled_persons_federation"),
        Programme("industry_support", "产业帮扶", "agriculture"),
        Programme("drinking_water_support", "农村供水保障", "agriculture"),
    )
    return civil | {p.code: p for p in others}


PROGRAMMES: Final = MappingProxyType(_programmes())

# hardship type -> departments, most specific first. Civil affairs closes every
# route because its temporary assistance (临时救助) is the safety net of last
# resort whatever the cause.
ROUTES: Final = MappingProxyType(
    {
        "illness": ("medical_insurance", "civil_affairs"),
        "disability": ("disabled_persons_federation", "civil_affairs"),
        "education": ("education", "civil_affairs"),
        "disaster": ("emergency_management", "housing", "civil_affairs"),
        "accident": ("medical_insurance", "emergency_management", "civil_affairs"),
        "unstable_employment": ("human_resources", "civil_affairs"),
        "industry_failure": ("agriculture", "civil_affairs"),
        "labor_shortage": ("human_resources", "civil_affairs"),
        "housing": ("housing", "civil_affairs"),
        # Rural water supply is coordinated by agriculture and rural affairs
        # (农业农村) here; a province that routes it to 水利 adds that department.
        "drinking_water": ("agriculture", "civil_affairs"),
        "other": ("civil_affairs",),
    }
)


def department_name(code: str) -> str:
    """The Chinese name of a department code (KeyError naming the known codes)."""
    try:
        return DEPARTMENTS[code]
    except KeyError:
        raise KeyError(f"unknown department {code!r}; known: {', '.join(DEPARTMENTS)}") from None


def programmes_of(department: str) -> tuple[str, ...]:
    """Programme codes run by `department`."""
    department_name(department)
    return tuple(code for code, p in PROGRAMMES.items() if p.department == department)


def departments_for(risk_types: Iterable[str]) -> tuple[str, ...]:
    """Departments for these hardship types, in routing order, without repeats."""
    out: list[str] = []
    for risk_type in risk_types:
        if risk_type not in ROUTES:
            raise KeyError(f"unknown risk type {risk_type!r}; known: {', '.join(RISK_TYPES)}")
        out.extend(d for d in ROUTES[risk_type] if d not in out)
    return tuple(out)


def assisting_departments(assistance: Iterable[str]) -> frozenset[str]:
    """Departments behind a household's current assistance.

    `assistance` mixes programme codes (e.g. `dibao`) and department codes
    (e.g. `medical_insurance`, when only the department is known).
    """
    out: set[str] = set()
    for code in assistance:
        if code in PROGRAMMES:
            out.add(PROGRAMMES[code].department)
        elif code in DEPARTMENTS:
            out.add(code)
        else:
            raise KeyError(
                f"unknown assistance code {code!r}: expected a programme "
                f"({', '.join(PROGRAMMES)}) or a department ({', '.join(DEPARTMENTS)})"
            )
    return frozenset(out)
