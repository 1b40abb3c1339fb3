"""Division names as of T, read from the warehouse the real ingest wrote."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import ingest
from doudi.months import Month
from features.divisions import division_names
from tests.ingest.ingest_world import delivery, division_rows, workspace, write_delivery


def test_latest_name_known_at_t(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    assert division_names(settings.warehouse_dir, Month.parse("2024-01")) == {}  # never delivered
    rows = delivery()
    rows["divisions"] = division_rows()  # all reported 2024-01-02
    ingest.ingest(write_delivery(tmp_path / "jan", rows), settings)
    renamed = {"divisions": [
        {"code": "620102001", "name": "城关街道", "reported_date": "2024-03-01"},
        {"code": "620102001002", "name": "新村", "reported_date": "2024-03-31"},
    ], "households": [], "persons": [], "monitoring_events": []}
    ingest.ingest(write_delivery(tmp_path / "mar", renamed, tag="2024-03"), settings)

    before = {"620102": "城关区", "620102001": "城关镇", "620102001001": "兴隆村"}
    assert division_names(settings.warehouse_dir, Month.parse("2024-02")) == before
    assert division_names(settings.warehouse_dir, date(2024, 1, 1)) == {}
    assert division_names(settings.warehouse_dir, date(2024, 3, 1)) == {
        **before, "620102001": "城关街道"}
    assert division_names(settings.warehouse_dir, Month.parse("2024-03")) == {
        **before, "620102001": "城关街道", "620102001002": "新村"}
