"""Write tiny warehouse tables in exactly the `doudi.warehouse` layout, for tests.

Rows use warehouse column names; dates may be 'YYYY-MM-DD' strings and MONTH
columns 'YYYY-MM'. Unspecified optional columns get neutral defaults so each
test names only what it checks.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from doudi.contract import Kind
from doudi.contract import feed as contract_feed
from doudi.warehouse import partition_dir, table_schema, warehouse_name

COUNTY = "620102"
VILLAGE = "620102001001"

DEFAULTS: dict[str, dict[str, Any]] = {
    "households": {"village_code": VILLAGE, "poverty_history": "ordinary",
                   "lifted_year": None, "relocated": False},
    "persons": {"relation": "head", "sex": "M", "birth_date": "1980-01-01",
                "ethnicity": "汉族", "status": "living", "status_date": "2000-01-01"},
    "medical": {"insured": True, "outpatient_visits": 0, "inpatient_days": 0,
                "total_cost_yuan": 0.0, "reimbursed_yuan": 0.0, "out_of_pocket_yuan": 0.0,
                "serious_illness": None},
    "employment": {"status": "employed_local", "monthly_wage_yuan": None,
                   "social_insurance_paid": None},
    "education": {"stage": "primary", "status": "enrolled", "tuition_yuan": 0.0,
                  "aid_yuan": 0.0},
    "housing": {"safety_grade": "A", "renovation_funded": False},
    "disability": {"disability_type": "physical", "grade": 3, "living_subsidy": False,
                   "care_subsidy": False},
    "disasters": {"hazard": "flood", "loss_yuan": 0.0, "house_damage": "none"},
    "social_assistance": {"end_date": None, "monthly_amount_yuan": 0.0},
    "income_checks": {"wage_income_yuan": 0.0, "operating_income_yuan": 0.0,
                      "property_income_yuan": 0.0, "transfer_income_yuan": 0.0,
                      "rigid_expenditure_yuan": None},
    "agriculture": {"cultivated_land_mu": 0.0, "livestock_units": 0.0,
                    "cooperative_member": False, "industry_support_yuan": 0.0},
    "assets": {"value_yuan": None},
    "monitoring_events": {"category": "marginal", "risk_types": "illness",
                          "source": "grassroots_visit"},
}


def _value(kind: Kind, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if kind == Kind.DATE:
        return date.fromisoformat(value)
    if kind == Kind.MONTH:
        return date.fromisoformat(value + "-01") if len(value) == 7 else date.fromisoformat(value)
    return value


class Warehouse:
    """Collect rows per feed and county, then write them as partitioned Parquet."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def add(self, feed_name: str, county: str = COUNTY, **row: Any) -> Warehouse:
        spec = contract_feed(feed_name)
        full = {**DEFAULTS.get(feed_name, {}), **row}
        record: dict[str, Any] = {}
        for column in spec.columns:
            name = warehouse_name(column.name)
            if name not in full:
                raise KeyError(f"{feed_name}: test row lacks {name}")
            record[name] = _value(column.kind, full[name])
        self.rows[(feed_name, county)].append(record)
        return self

    def write(self) -> Path:
        """Write every collected row (one file per feed/county/reported month)."""
        for (feed_name, county), rows in self.rows.items():
            schema = table_schema(feed_name)
            by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in rows:
                by_month[f"{r['reported_date']:%Y-%m}"].append(r)
            for month, part in by_month.items():
                folder = self.root / partition_dir(feed_name, county, month)
                folder.mkdir(parents=True, exist_ok=True)
                n = len(list(folder.glob("*.parquet")))
                name = f"part-{n}.parquet"
                records = [{**r, "county_code": county, "reported_month": month,
                            "source_file": f"{feed_name}/{name}", "source_row": i}
                           for i, r in enumerate(part)]
                table = pa.Table.from_pylist(records, schema=schema)
                pq.write_table(table, folder / name)
        self.rows.clear()
        return self.root
