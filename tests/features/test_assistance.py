"""Current assistance as of T, on a hand-made warehouse (late and closing rows)."""

from datetime import date
from pathlib import Path

from doudi.months import Month
from features import current_assistance
from tests.features.warehouse_fixture import Warehouse


def test_spells_covering_the_month_end(tmp_path: Path) -> None:
    w = Warehouse(tmp_path)
    sa = "social_assistance"
    # h1: dibao from Jan, closed at the end of March by a row reported in April
    w.add(sa, household_key="h1", program="dibao", start_date=date(2024, 1, 1), end_date=None,
          monthly_amount_yuan=500.0, reported_date=date(2024, 1, 5))
    w.add(sa, household_key="h1", program="dibao", start_date=date(2024, 1, 1),
          end_date=date(2024, 3, 31), monthly_amount_yuan=500.0, reported_date=date(2024, 4, 3))
    # h2: a one-off temporary payment in March; tekun reported late (only known in April)
    w.add(sa, household_key="h2", program="temporary", start_date=date(2024, 3, 10),
          end_date=date(2024, 3, 10), monthly_amount_yuan=2000.0,
          reported_date=date(2024, 3, 12))
    w.add(sa, household_key="h2", program="tekun", start_date=date(2024, 2, 1), end_date=None,
          monthly_amount_yuan=800.0, reported_date=date(2024, 4, 20))
    root = w.write()
    march = current_assistance(root, Month.parse("2024-03"))
    assert march == {"h1": ["dibao"], "h2": ["temporary"]}
    assert current_assistance(root, Month.parse("2024-04")) == {"h2": ["tekun"]}
    assert current_assistance(root, Month.parse("2023-12")) == {}
