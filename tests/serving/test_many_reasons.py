"""`settings.max_reasons` above four: every reason is stored, listed for export and on the sheet.

The store, its export rows and the caseworker sheet once stopped at four reasons while
`max_reasons` may be up to 8 (`doudi.settings.MAX_REASONS_LIMIT`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.exc import IntegrityError

from doudi.settings import MAX_REASONS_LIMIT, Settings
from serving.export import export_township
from serving.scoring import score, to_new_alerts
from serving.sheet import SHEET_COLUMNS
from serving.store import AlertStore, NewAlert, Reason, alerts_for_export, open_store
from serving.store.models import AlertReason
from tests.serving.export_world import HOUSEHOLDS, TOWNSHIP_B, write_world
from tests.serving.scoring_fixtures import AS_OF, feature_frame, train_artifact
from tests.serving.store_fixtures import alert

pytest_plugins = ["tests.serving.store_fixtures"]

# Six reasons in the words of the registry's templates, strongest first.
SIX = (
    "近12个月个人自付医疗费用 38,200 元",
    "住房鉴定为C/D级危房",
    "家庭劳动力人数 0 人",
    "近12个月务工月数 2 个月",
    "人均纯收入比上年下降 35%",
    "家中有 2 名在校生",
)


def with_reasons(key: str, texts: tuple[str, ...], village: str = "620102003007") -> NewAlert:
    reasons = tuple(
        Reason(rank, f"group_{rank}", text, round(6.0 - rank, 1))
        for rank, text in enumerate(texts, 1)
    )
    return replace(alert(key, village=village), reasons=reasons)


def texts_of(row: pd.Series) -> list[str | None]:
    """A row's reason cells, None where empty (pandas may hold a missing text as NaN)."""
    return [None if pd.isna(v) else v for v in row]


def test_an_alert_keeps_up_to_the_settings_limit_of_reasons(alert_store: AlertStore) -> None:
    many = tuple(f"原因{i}" for i in range(1, MAX_REASONS_LIMIT + 1))
    (alert_id,) = alert_store.add_alerts([with_reasons("hh-eight", many)]).created
    assert [r.text_zh for r in alert_store.get(alert_id).reasons] == list(many)
    too_many = with_reasons("hh-nine", (*many, "原因9"))
    with pytest.raises(ValueError, match=f"reason ranks must be distinct, 1-{MAX_REASONS_LIMIT}"):
        alert_store.add_alerts([too_many])


def test_the_database_refuses_a_rank_beyond_the_limit(alert_store: AlertStore) -> None:
    (alert_id,) = alert_store.add_alerts([alert("hh-a")]).created
    with pytest.raises(IntegrityError), alert_store.transaction() as session:
        session.add(
            AlertReason(
                alert_id=alert_id,
                rank=MAX_REASONS_LIMIT + 1,
                group_key="g",
                text_zh="t",
                contribution=0.1,
                scale="probability points",
            )
        )


def test_export_rows_hold_every_stored_reason(alert_store: AlertStore) -> None:
    alert_store.add_alerts([with_reasons("hh-six", SIX), alert("hh-two", risk=0.5)])
    six = [f"reason_{r}" for r in range(1, 7)]

    rows = alerts_for_export(alert_store, "620102003", max_reasons=6)
    assert [c for c in rows.columns if c.startswith("reason_")] == six
    assert texts_of(rows.loc[0, six]) == list(SIX)
    assert texts_of(rows.loc[1, six]) == ["近12个月自付医疗费用高", "人均纯收入下降", *[None] * 4]

    # Fewer columns asked for than an alert carries: its reasons are not cut off.
    assert rows.equals(alerts_for_export(alert_store, "620102003", max_reasons=4))
    # More asked for than any alert carries: the columns are there, empty.
    wide = alerts_for_export(alert_store, "620102003", max_reasons=8)
    assert wide["reason_8"].isna().all() and wide[six].equals(rows[six])


def test_the_caseworker_sheet_lists_all_six_reasons(tmp_path: Path) -> None:
    settings = write_world(tmp_path / "ws").model_copy(update={"max_reasons": 6})
    key, (village, *_) = next((k, v) for k, v in HOUSEHOLDS.items() if v[0][:9] == TOWNSHIP_B)
    with open_store(f"sqlite:///{tmp_path / 'alerts.db'}") as store:
        store.add_alerts([replace(with_reasons(key, SIX, village), as_of=date(2026, 6, 30))])
        done = export_township(store, TOWNSHIP_B, settings, tmp_path / "sheets")
    numbered = [f"{rank}. {text}" for rank, text in enumerate(SIX, 1)]
    sheet = pd.read_csv(done.csv, encoding="gbk", dtype=str)
    assert sheet.loc[0, "预警原因"] == "；".join(numbered)
    from openpyxl import load_workbook

    reasons_at = [c.key for c in SHEET_COLUMNS].index("reasons") + 1
    assert load_workbook(done.workbook).active.cell(2, reasons_at).value == "\n".join(numbered)


def test_scoring_with_six_reasons_stores_and_lists_them_all(tmp_path: Path) -> None:
    settings = Settings(workers=1, max_reasons=6)
    model = train_artifact(feature_frame(400), rounds=25, with_types=True)
    scored = score(feature_frame(400, seed=3), model, settings, AS_OF)
    alerted = scored[scored["alerted"]]
    assert alerted["reasons"].map(len).max() > 4  # the case this test is about
    with open_store(f"sqlite:///{tmp_path / 'alerts.db'}") as store:
        store.add_alerts(to_new_alerts(scored))
        listed = pd.concat(
            alerts_for_export(store, township, max_reasons=settings.max_reasons)
            for township in sorted(set(alerted["village_code"].str[:9]))
        )
    columns = [f"reason_{r}" for r in range(1, 7)]
    by_key = listed.set_index("household_key")[columns]
    for row in alerted.itertuples():
        texts = [r.text_zh for r in row.reasons]
        assert texts_of(by_key.loc[row.household_key]) == texts + [None] * (6 - len(texts))
