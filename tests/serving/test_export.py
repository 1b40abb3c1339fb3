"""The caseworker export: one township only, masked IDs, GBK readable, audited."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from doudi.errors import UserError
from doudi.idnumber import mask_id
from doudi.settings import Settings
from serving.export import export_township
from serving.sheet import SHEET_COLUMNS, Part
from serving.store import AlertStore, NewAlert, Reason, open_store
from serving.store.models import ExportAudit
from tests.serving.export_world import HOUSEHOLDS, TOWNSHIP_A, TOWNSHIP_B, write_world

AS_OF = date(2026, 6, 30)
HEADERS = [c.header for c in SHEET_COLUMNS]


def add_alerts(store: AlertStore) -> dict[str, int]:
    """One alert per world household; returns household_key -> alert id."""
    alerts = [
        NewAlert(household_key=key, village_code=village, as_of=AS_OF,
                 model_version="doudi-risk/7", tier=("red", "orange", "yellow")[i % 3],
                 risk=0.9 - i / 100, risk_types=("illness", "housing"), source="model",
                 reasons=(Reason(1, "medical_oop", "近12个月个人自付医疗费用 38,200 元"
                                 "（本县中位数 1,200 元）〔风险 +4.1 个百分点〕", 4.1),
                          Reason(2, "housing_safety", "住房鉴定为C/D级危房〔风险 +1.0 个百分点〕",
                                 1.0)))
        for i, (key, (village, *_)) in enumerate(HOUSEHOLDS.items())
    ]
    report = store.add_alerts(alerts)
    return dict(zip(HOUSEHOLDS, report.created, strict=True))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, AlertStore, dict[str, int]]:
    settings = write_world(tmp_path / "ws")
    store = open_store(f"sqlite:///{tmp_path / 'alerts.db'}")
    ids = add_alerts(store)
    yield settings, store, ids
    store.dispose()


def test_township_export_holds_only_that_township(world, tmp_path: Path) -> None:
    settings, store, ids = world
    done = export_township(store, TOWNSHIP_A, settings, tmp_path / "sheets")
    mine = {k: v for k, v in HOUSEHOLDS.items() if v[0].startswith(TOWNSHIP_A)}
    assert done.households == len(mine) == 7

    sheet = pd.read_csv(done.csv, encoding="gbk", dtype=str, keep_default_na=False)
    assert list(sheet.columns) == HEADERS
    # identifier columns lead with a tab, so a spreadsheet keeps them as text (all digits)
    for column in ("户编号", "户主身份证号", "预警编号", "预警月份"):
        assert sheet[column].str.startswith("\t").all()
        sheet[column] = sheet[column].str[1:]
    assert sorted(sheet["户编号"]) == sorted(v[1] for v in mine.values())
    assert set(sheet["村名称"]) == {"兴隆村", "新庄村"}
    assert sorted(sheet["户主身份证号"]) == sorted(mask_id(v[3]) for v in mine.values())
    assert sheet["户主身份证号"].str.fullmatch(r"620102\*{8}\d{3}[\dX]").all()
    assert sorted(sheet["预警编号"].astype(int)) == sorted(ids[k] for k in mine)
    assert set(sheet["预测风险类型"]) == {"因病、住房安全"}
    assert set(sheet["帮扶部门"]) == {"医保、民政、住建"}
    assert sheet["预警原因"].str.startswith("1. 近12个月个人自付医疗费用 38,200 元").all()
    assert set(sheet["预警月份"]) == {"2026-06"}
    returned = [c.header for c in SHEET_COLUMNS if c.part is Part.RETURN]
    assert (sheet[returned] == "").all().all()  # the caseworker fills these

    raw = done.csv.read_bytes() + done.workbook.read_bytes()
    for key, (_v, _n, head, person_id) in HOUSEHOLDS.items():
        assert person_id.encode() not in raw and key.encode() not in raw
        assert head.encode() not in raw
    assert (done.csv.stat().st_mode & 0o777) == 0o600
    assert (done.workbook.stat().st_mode & 0o777) == 0o600

    book = load_workbook(done.workbook)
    rows = [row for ws in book.worksheets for row in ws.iter_rows(min_row=2, values_only=True)]
    assert len(rows) == len(mine)
    for ws in book.worksheets:
        assert [c.value for c in ws[1]] == HEADERS
        assert ws["J2"].alignment.wrap_text and "\n2. " in ws["J2"].value
    assert sorted(r[3] for r in rows) == sorted(v[1] for v in mine.values())


def test_export_is_audited_and_dispatches(world, tmp_path: Path) -> None:
    settings, store, ids = world
    done = export_township(store, TOWNSHIP_B, settings, tmp_path / "sheets")
    with store.transaction() as session:
        audits = session.scalars(select(ExportAudit)).all()
    assert len(audits) == 1
    audit = audits[0]
    assert audit.id == done.audit_id
    assert (audit.actor, audit.township_code, audit.household_count) == ("clerk01", TOWNSHIP_B, 5)
    assert str(done.workbook) in audit.file_path and str(done.csv) in audit.file_path
    for key, (village, *_) in HOUSEHOLDS.items():
        expected = "dispatched" if village.startswith(TOWNSHIP_B) else "new"
        assert store.get(ids[key]).status == expected
    assert "caseworker export township 620102002" in \
        (settings.vault_dir / "audit.jsonl").read_text(encoding="utf-8")
    # Exported alerts are no longer new: a second export of B is empty.
    again = export_township(store, TOWNSHIP_B, settings, tmp_path / "sheets2")
    assert again.households == 0


def test_a_bad_township_code_is_a_user_error(world, tmp_path: Path) -> None:
    settings, store, _ = world
    with pytest.raises(UserError, match="9 digits"):
        export_township(store, "62010", settings, tmp_path)


def test_an_unknown_township_writes_nothing(world, tmp_path: Path) -> None:
    settings, store, ids = world
    with pytest.raises(UserError) as err:
        export_township(store, "620199001", settings, tmp_path / "sheets")
    message = str(err.value)
    assert message == ("--township 620199001: no such township on the roster "
                       f"(known: {TOWNSHIP_A}, {TOWNSHIP_B}; 2 in all)")
    assert not (tmp_path / "sheets").exists()
    with store.transaction() as session:
        assert session.scalars(select(ExportAudit)).all() == []
    assert {store.get(i).status for i in ids.values()} == {"new"}


def test_the_export_command_checks_every_code_first(world, tmp_path: Path) -> None:
    from tests.jobs.cli import doudi, refused

    settings, store, _ = world
    url = f"sqlite:///{tmp_path / 'alerts.db'}"  # the `world` fixture's store
    done = doudi(settings.home, "export", "--township", TOWNSHIP_A, "--township", "620199001",
                 "--out-dir", str(tmp_path / "sheets"), "--database-url", url)
    refused(done, "--township 620199001: no such township on the roster", TOWNSHIP_A)
    assert not (tmp_path / "sheets").exists()  # not even the known township's sheet
    with store.transaction() as session:
        assert session.scalars(select(ExportAudit)).all() == []
    done = doudi(settings.home, "export", "--township", TOWNSHIP_A,
                 "--out-dir", str(tmp_path / "sheets"), "--database-url", url)
    assert done.code == 0, done.err
    assert done.out.startswith(f"{TOWNSHIP_A}: 7 household(s) -> alerts_{TOWNSHIP_A}_2026-06_")
