"""What the caseworker sheet says about each alert: who, where, why, and what to do first.

`work_order` turns `alerts_for_export` rows and what the vault and the warehouse know
(household numbers, heads' ID numbers, names and phones; division names) into the rows
of the sheet (`serving.sheet` columns and order, Chinese headers), the return columns
left empty for the caseworker. Every value is text: identifiers are never numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.idnumber import mask_id
from doudi.months import Month
from features.rules import BY_CODE as RULES_BY_CODE
from serving.sheet import SHEET_COLUMNS
from serving.store import reason_columns_in

TIER_ZH = {"red": "红色", "orange": "橙色", "yellow": "黄色", "none": ""}
HEADERS = [c.header for c in SHEET_COLUMNS]


@dataclass(frozen=True)
class Contacts:
    """What the vault gave back for one export (all keyed by pseudonym)."""

    household_ids: Mapping[str, str]  # household key -> original household number
    head_keys: Mapping[str, str] = field(default_factory=dict)  # household -> head person
    person_ids: Mapping[str, str] = field(default_factory=dict)  # person key -> ID number
    names: Mapping[str, str] = field(default_factory=dict)  # person key -> name
    phones: Mapping[str, str] = field(default_factory=dict)  # household key -> phone


@dataclass(frozen=True)
class WorkOrder:
    """One township's sheet: rows grouped by village (code order), highest risk first."""

    title: str  # heads every printed page: township, month
    sheet: pd.DataFrame  # Chinese headers, `serving.sheet` order, every cell text
    village_codes: list[str]  # per row
    village_names: dict[str, str]  # village code -> name shown (the code when unnamed)

    def villages(self) -> list[tuple[str, pd.DataFrame]]:
        """(village code, its rows) in code order: one worksheet each."""
        codes = pd.Series(self.village_codes, index=self.sheet.index)
        return [(code, self.sheet[codes == code]) for code in dict.fromkeys(self.village_codes)]


def place_name(code: str, names: Mapping[str, str]) -> str:
    """A division's name, or its code when the `divisions` feed has no name for it."""
    name = names.get(code)
    return name.strip() if isinstance(name, str) and name.strip() else code


def rules_in_words(codes: Sequence[str]) -> str:
    """Fired rule codes as the registry's Chinese sentences, one per line (a rule no
    longer in the registry shows its code)."""
    return "\n".join(RULES_BY_CODE[c].text_zh if c in RULES_BY_CODE else c for c in codes)


def first_steps(risk_types: Sequence[str], table: Mapping[str, str]) -> str:
    """`因病：协助申请医疗救助…`, one line per hardship type with a step in `table`
    (`settings.first_steps`)."""
    lines = [f"{RISK_TYPES.get(t, t)}：{table[t]}" for t in risk_types if table.get(t)]
    return "\n".join(lines)


def numbered(texts: Sequence[str]) -> str:
    """Stored reasons as written (sizes and all), numbered, one per line."""
    return "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))


def _codes(joined: object) -> list[str]:
    return [c for c in str(joined).split(";") if c] if isinstance(joined, str) else []


def work_order(township_code: str, alerts: pd.DataFrame, contacts: Contacts, *, month: Month,
               respond_by: date, division_names: Mapping[str, str],
               first_step_table: Mapping[str, str]) -> WorkOrder:
    """The sheet's rows for `alerts_for_export` rows (see the module docstring)."""
    alerts = alerts.assign(_village=alerts["village_code"].astype(str))
    alerts = alerts.sort_values("_village", kind="stable")  # the query's risk order inside
    ranked = reason_columns_in(alerts)
    villages = alerts["_village"].tolist()
    names = {code: place_name(code, division_names) for code in dict.fromkeys(villages)}

    rows: list[list[str]] = []
    for a in alerts.to_dict("records"):
        key = str(a["household_key"])
        head = contacts.head_keys.get(key)
        head_id = contacts.person_ids.get(head) if head else None
        types = _codes(a["risk_types"])
        cells = {
            "month": str(month),
            "respond_by": respond_by.isoformat(),
            "village_name": names[a["_village"]],
            "household_id": contacts.household_ids[key],
            "head_name": contacts.names.get(head, "") if head else "",
            "head_id_masked": mask_id(head_id) if head_id else "",
            "contact_phone": contacts.phones.get(key, ""),
            "tier": TIER_ZH.get(str(a["tier"]), str(a["tier"])),
            "predicted_risk_types": "、".join(RISK_TYPES.get(t, t) for t in types),
            "reasons": numbered([a[c] for c in ranked if isinstance(a.get(c), str) and a[c]]),
            "rules": rules_in_words(_codes(a.get("rule_triggers"))),
            "departments": "" if pd.isna(a["departments_zh"]) else str(a["departments_zh"]),
            "first_steps": first_steps(types, first_step_table),
            "alert_id": str(int(a["alert_id"])),
        }
        rows.append([cells.get(c.key, "") for c in SHEET_COLUMNS])  # return part: empty
    sheet = pd.DataFrame(rows, columns=HEADERS, dtype=object)
    township = place_name(township_code, division_names)
    title = f"{township}（{township_code}）{month} 防返贫监测预警核实单"
    return WorkOrder(title, sheet, villages, names)
