"""A tiny workspace for the scoring/export tests: warehouse roster in two townships (and
division names) and the vault holding the original household numbers, the heads' ID
numbers and names and the households' phones."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from doudi.idnumber import make_id
from doudi.settings import Settings
from ingest import vault
from tests.features.warehouse_fixture import Warehouse

TOWNSHIP_A = "620102001"
TOWNSHIP_B = "620102002"
D_GRADE_HOUSE = "h_0000000000000000000a"  # in township B: the housing rule fires
# household_key -> (village, original household number, head person key, head ID number)
HOUSEHOLDS: dict[str, tuple[str, str, str, str]] = {
    f"h_{i:020x}": (
        village, f"62010200{i:04d}", f"p_{i:020x}",
        make_id("620102", date(1960 + i, 1 + i % 12, 1 + i), 2 * i + 1),
    )
    for i, village in enumerate(
        [TOWNSHIP_A + "001"] * 4 + [TOWNSHIP_A + "002"] * 3 + [TOWNSHIP_B + "001"] * 5)
}


# Made-up names and phones (no real people) for the heads and households, in order; the
# last household has no phone on record.
HEAD_NAMES = ["王秀英", "李建国", "张桂兰", "刘志强", "陈玉梅", "杨德福", "赵淑珍", "黄永红",
              "周文华", "吴海燕", "徐春生", "孙丽娟"]


def phone_of(position: int) -> str:
    return f"1390931{position:04d}"


# The divisions feed names township A and its villages; township B's village has no name
# (the sheet shows its code).
DIVISIONS = {"620102": "城关区", TOWNSHIP_A: "城关镇", TOWNSHIP_A + "001": "兴隆村",
             TOWNSHIP_A + "002": "新庄村", TOWNSHIP_A + "003": "红柳沟村"}


def write_world(home: Path,
                households: dict[str, tuple[str, str, str, str]] | None = None) -> Settings:
    """Warehouse (households + persons) and vault for `households` (default HOUSEHOLDS)
    under `home`. The vault holds whatever household numbers are given: a vault filled
    before the input contract tightened may hold values ingest now refuses."""
    households = HOUSEHOLDS if households is None else households
    settings = Settings(home=home, workers=1, operator="clerk01")
    w = Warehouse(settings.warehouse_dir)
    for key, (village, _number, head, person_id) in households.items():
        w.add("households", household_key=key, head_person_key=head, village_code=village,
              reported_date="2026-01-05")
        w.add("persons", person_key=head, household_key=key, birth_date=person_id[6:10]
              + "-" + person_id[10:12] + "-" + person_id[12:14], reported_date="2026-01-05")
    w.add("housing", household_key=D_GRADE_HOUSE, assessed_date="2026-03-10",
          safety_grade="D", reported_date="2026-03-15")
    for code, name in DIVISIONS.items():
        w.add("divisions", code=code, name=name, reported_date="2026-01-05")
    w.write()
    vault.ensure_private_dir(settings.vault_dir)
    for name, rows in (
        (vault.HOUSEHOLDS, [{"household_key": k, "household_id": v[1]}
                            for k, v in households.items()]),
        (vault.PERSONS, [{"person_key": v[2], "person_id": v[3]} for v in households.values()]),
        (vault.PERSON_NAMES, [{"person_key": v[2], "name": HEAD_NAMES[i % len(HEAD_NAMES)],
                               "status_date": date(2026, 1, 5), "reported_date": date(2026, 1, 5)}
                              for i, v in enumerate(households.values())]),
        (vault.HOUSEHOLD_PHONES, [{"household_key": k, "contact_phone": phone_of(i),
                                   "reported_date": date(2026, 1, 5)}
                                  for i, k in enumerate(list(households)[:-1])]),
    ):
        folder = settings.vault_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=vault.SCHEMAS[name]),
                       folder / "part-test.parquet")
    return settings
