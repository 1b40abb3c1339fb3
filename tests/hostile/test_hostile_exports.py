"""Hostile values and crashes at the export (issue #11): text is text, one bad value never
stops an export, and an export completes with its audit row or leaves nothing.

The vault may hold household numbers from before the input contract tightened (a
formula, a control character, an emoji): they are put straight into the vault here.
Faults are injected by making one real step raise (the real files and store are used);
the crash test kills a real export process with SIGKILL.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import event, select

from doudi.idnumber import make_id
from doudi.months import Month
from doudi.safe_text import (
    CUT_MARKER,
    FORMULA_START,
    XLSX_CELL_LIMIT,
    csv_text,
    encode_gbk,
    html_text,
    visible,
    xlsx_cell,
)
from doudi.settings import Settings
from serving import export as export_module
from serving import staging
from serving import workbook as workbook_module
from serving.export import (
    ExportError,
    export_new_alerts,
    export_township,
    write_operator_export,
)
from serving.sheet import BY_KEY, SHEET_COLUMNS
from serving.staging import PREFIX, Staging, recover
from serving.store import AlertStore, NewAlert, Reason, open_store
from serving.store.models import ExportAudit, StatusChange
from tests.serving.export_world import HOUSEHOLDS, TOWNSHIP_A, TOWNSHIP_B, write_world

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 6, 30)
MONTH = Month.of(AS_OF)
LONG = "9" * 40_000
ALERT_AT = SHEET_COLUMNS.index(BY_KEY["alert_id"])  # 0-based positions on the sheet
HOUSEHOLD_AT = SHEET_COLUMNS.index(BY_KEY["household_id"])
# household key -> a household number a vault filled before the contract change may hold
HOSTILE: dict[str, str] = {
    "h_00000000000000000000": '=HYPERLINK("http://e.x","户")',
    "h_00000000000000000001": "=2+2",
    "h_00000000000000000002": "+cmd|' /C calc'!A0",
    "h_00000000000000000003": "ab\x01cd",  # IllegalCharacterError in openpyxl
    "h_00000000000000000004": "12😀34",  # GBK has no emoji
    "h_00000000000000000005": "6201220010030076",  # 16 digits: a float in Excel
    "h_00000000000000000006": "\u202eevil",  # right-to-left override
    "h_00000000000000000007": "#N/A",  # openpyxl's error cell
    "h_00000000000000000008": "@SUM(1+1)*cmd|' /C calc'!A0",
    "h_00000000000000000009": " -2+3",
    "h_0000000000000000000a": LONG,
    "h_0000000000000000000b": "00012",
}


def _hostile_world() -> dict[str, tuple[str, str, str, str]]:
    return {k: (v[0], HOSTILE[k], v[2], v[3]) for k, v in HOUSEHOLDS.items()}


def _add_alerts(store: AlertStore, households: dict[str, tuple[str, str, str, str]]
                ) -> dict[str, int]:
    reasons = (Reason(1, "medical_oop", "近12个月个人自付医疗费用 38,200 元〔风险 +4.1 个百分点〕",
                      4.1),
               Reason(2, "housing_safety", "住房鉴定为C/D级危房〔风险 +1.0 个百分点〕", 1.0))
    report = store.add_alerts(
        NewAlert(household_key=key, village_code=village, as_of=AS_OF,
                 model_version="doudi-risk/7", tier="red", risk=0.9 - i / 1000,
                 risk_types=("illness",), reasons=reasons)
        for i, (key, (village, *_)) in enumerate(households.items()))
    return dict(zip(households, report.created, strict=True))


@pytest.fixture
def hostile(tmp_path: Path):
    settings = write_world(tmp_path / "ws", _hostile_world())
    store = open_store(settings=settings)
    ids = _add_alerts(store, _hostile_world())
    yield settings, store, ids
    store.dispose()


def _audits(store: AlertStore) -> list[ExportAudit]:
    with store.transaction() as session:
        return list(session.scalars(select(ExportAudit).order_by(ExportAudit.id)))


def _dispatches(store: AlertStore) -> dict[int, int]:
    """alert id -> how many times it went to `dispatched`."""
    with store.transaction() as session:
        rows = session.scalars(select(StatusChange).where(StatusChange.to_status == "dispatched"))
        counts: dict[int, int] = {}
        for row in rows:
            counts[row.alert_id] = counts.get(row.alert_id, 0) + 1
        return counts


def _sheet_xml(workbook: Path) -> str:
    with zipfile.ZipFile(workbook) as z:
        return "".join(z.read(n).decode("utf-8") for n in z.namelist()
                       if n.startswith("xl/worksheets/"))


# -- text as text -------------------------------------------------------------


def test_visible_escapes_every_control_and_invisible_character() -> None:
    assert visible("ab\x01cd\x7f") == "ab\\x01cd\\x7f"
    assert visible("\u202eevil\u200b") == "\\u202eevil\\u200b"
    assert visible("line\nbreak\ttab\r") == "line\\x0abreak\\x09tab\\x0d"
    assert visible("城关镇 兴隆村 12😀") == "城关镇 兴隆村 12😀"  # printable stays
    assert visible(None) == "" and visible(float("nan")) == "" and visible(12) == "12"


@pytest.mark.parametrize(("value", "expected"), [
    ("=2+2", "'=2+2"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("  =1+1", "'  =1+1"), ("＝1+1", "'＝1+1"),
    ("\t=1", "\\x09=1"), ("\r=1", "\\x0d=1"), ("\n=1", "\\x0a=1"),  # escaped: inert
    ("城关镇", "城关镇"), ("1. 近12个月", "1. 近12个月"), ("", ""),
])
def test_csv_fields_never_start_a_formula(value: str, expected: str) -> None:
    assert csv_text(value) == expected


def test_csv_identifiers_keep_every_digit() -> None:
    assert csv_text("6201220010030076", verbatim=True) == "\t6201220010030076"
    assert csv_text("2026-06", verbatim=True) == "\t2026-06"  # no date
    assert csv_text("=2+2", verbatim=True) == "'=2+2"  # the formula rule comes first
    assert csv_text("", verbatim=True) == ""


def test_gbk_escapes_what_it_cannot_encode_and_counts() -> None:
    assert encode_gbk("城关镇,12") == ("城关镇,12".encode("gbk"), 0)
    data, count = encode_gbk("户12😀34𠮷")
    assert count == 2
    assert data.decode("gbk") == "户12\\U0001f60034\\U00020bb7"


def test_html_text_is_escaped_and_visible() -> None:
    assert html_text('<script>"x"</script>\x1b') == (
        "&lt;script&gt;&quot;x&quot;&lt;/script&gt;\\x1b")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_any_text_is_text_in_every_format(value: str) -> None:
    shown = visible(value)
    assert not ILLEGAL_CHARACTERS_RE.search(shown)
    field = csv_text(value)
    first = field.lstrip(" \u3000")[:1]
    assert first not in FORMULA_START
    assert field in (shown, "'" + shown)
    data, escaped = encode_gbk(field)  # always encodable, always decodable
    assert len(data.decode("gbk")) >= len(field) - 9 * escaped
    assert "<" not in html_text(value) and "\x00" not in html_text(value)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30),
                min_size=1, max_size=8))
def test_any_text_is_a_string_cell_never_a_formula(values: list[str]) -> None:
    book = Workbook()
    ws = book.active
    for r, value in enumerate(values, 1):
        xlsx_cell(ws.cell(r, 1), value)
    buffer = io.BytesIO()
    book.save(buffer)
    with zipfile.ZipFile(buffer) as z:
        xml = z.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert "<f>" not in xml and "<f " not in xml and 't="e"' not in xml
    back = load_workbook(io.BytesIO(buffer.getvalue())).active
    for r, value in enumerate(values, 1):
        expected = visible(value)
        got = back.cell(r, 1).value
        assert (got or "") == expected


def test_a_cell_longer_than_excel_allows_is_cut_visibly() -> None:
    cell = Workbook().active.cell(1, 1)
    xlsx_cell(cell, LONG)
    assert len(cell.value) == XLSX_CELL_LIMIT and cell.value.endswith(CUT_MARKER)
    xlsx_cell(cell, 6201220010030076)  # a number stays a number
    assert cell.value == 6201220010030076 and cell.data_type == "n"


# -- hostile household numbers in the caseworker sheets -----------------------


def test_hostile_household_numbers_are_written_as_text(hostile, tmp_path: Path) -> None:
    settings, store, ids = hostile
    out = tmp_path / "sheets"
    a = export_township(store, TOWNSHIP_A, settings, out)
    b = export_township(store, TOWNSHIP_B, settings, out)
    assert (a.households, b.households) == (7, 5)
    assert a.gbk_escaped + b.gbk_escaped == 1  # the emoji, as \U0001f600 in the CSV

    for done in (a, b):
        xml = _sheet_xml(done.workbook)
        assert "<f>" not in xml and "<f " not in xml and 't="e"' not in xml
        by_alert = {int(row[ALERT_AT].value): row[HOUSEHOLD_AT]
                    for ws in load_workbook(done.workbook).worksheets
                    for row in ws.iter_rows(min_row=2)}
        assert len(by_alert) == done.households
        for key, raw in HOSTILE.items():
            if ids[key] in by_alert:
                cell = by_alert[ids[key]]
                assert cell.data_type == "s"
                expected = visible(raw)
                if len(expected) > XLSX_CELL_LIMIT:
                    assert cell.value.endswith(CUT_MARKER)
                else:
                    assert cell.value == expected
        assert (done.workbook.stat().st_mode & 0o777) == 0o600

    rows = pd.concat([pd.read_csv(d.csv, encoding="gbk", dtype=str, keep_default_na=False)
                      for d in (a, b)])
    by_alert = dict(zip(rows["预警编号"].str.strip().astype(int), rows["户编号"], strict=True))
    assert set(by_alert) == set(ids.values())
    assert by_alert[ids["h_00000000000000000001"]] == "'=2+2"
    assert by_alert[ids["h_00000000000000000002"]] == "'+cmd|' /C calc'!A0"
    assert by_alert[ids["h_00000000000000000000"]] == "'=HYPERLINK(\"http://e.x\",\"户\")"
    assert by_alert[ids["h_00000000000000000009"]] == "' -2+3"
    assert by_alert[ids["h_00000000000000000003"]] == "\tab\\x01cd"
    assert by_alert[ids["h_00000000000000000004"]] == "\t12\\U0001f60034"
    assert by_alert[ids["h_00000000000000000005"]] == "\t6201220010030076"
    assert by_alert[ids["h_0000000000000000000b"]] == "\t00012"
    assert by_alert[ids["h_00000000000000000006"]] == "\t\\u202eevil"
    for field in rows.to_numpy().ravel():
        assert field.lstrip(" \u3000")[:1] not in FORMULA_START - {"\t"}
    assert {store.get(i).status for i in ids.values()} == {"dispatched"}


def test_a_failing_row_names_its_alert_never_the_household_number(
        hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, ids = hostile
    secret = HOSTILE["h_00000000000000000005"]
    real = workbook_module.xlsx_cell

    def picky(cell: object, value: object, **kw: object) -> None:
        if value == secret:
            raise ValueError(f"{value} cannot be used in worksheets.")  # as openpyxl words it
        real(cell, value, **kw)

    monkeypatch.setattr("serving.workbook.xlsx_cell", picky)
    out = tmp_path / "sheets"
    with pytest.raises(ExportError) as err:
        export_township(store, TOWNSHIP_A, settings, out)
    message = str(err.value)
    assert message.startswith(f"alert {ids['h_00000000000000000005']}: its row could not")
    shown = "".join(traceback.format_exception(err.value))
    assert secret not in shown and secret not in message
    assert list(out.iterdir()) == []  # nothing visible, no staging folder
    assert _audits(store) == []
    assert {store.get(i).status for i in ids.values()} == {"new"}


# -- all or nothing -----------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path):
    settings = write_world(tmp_path / "ws")
    store = open_store(settings=settings)
    ids = _add_alerts(store, HOUSEHOLDS)
    yield settings, store, ids
    store.dispose()


def _fail_on_call(n: int, exc: Exception, real):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)
    return wrapper


def _refuse_export_commits(session) -> None:  # type: ignore[no-untyped-def]
    """The export's commit itself fails (the database refuses it): a real rollback."""
    if any(isinstance(o, ExportAudit) for o in session.identity_map.values()):
        raise OSError("injected: commit refused")


FAULTS: dict[str, tuple[object, str, int]] = {
    "workbook": (export_module, "write_workbook", 1),
    "csv": (export_module, "write_csv", 1),
    "fsync": (Staging, "seal", 1),
    "store, mid-transaction": (AlertStore, "_move", 3),
    "commit": (None, "", 0),
}


@pytest.mark.parametrize("step", list(FAULTS))
def test_a_failure_before_the_commit_leaves_nothing(
        world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    settings, store, ids = world
    owner, name, nth = FAULTS[step]
    if owner is None:
        event.listen(store._sessions, "before_commit", _refuse_export_commits)
    else:
        monkeypatch.setattr(owner, name, _fail_on_call(nth, OSError("injected"),
                                                       getattr(owner, name)))
    out = tmp_path / "sheets"
    with pytest.raises(OSError, match="injected"):
        export_township(store, TOWNSHIP_A, settings, out)
    assert list(out.iterdir()) == []
    assert _audits(store) == []
    assert {store.get(i).status for i in ids.values()} == {"new"}

    monkeypatch.undo()  # the rerun completes it, exactly once
    if owner is None:
        event.remove(store._sessions, "before_commit", _refuse_export_commits)
    done = export_township(store, TOWNSHIP_A, settings, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([done.workbook.name, done.csv.name])
    assert [a.township_code for a in _audits(store)] == [TOWNSHIP_A]
    assert set(_dispatches(store).values()) == {1} and len(_dispatches(store)) == 7


def test_a_failure_after_the_commit_is_finished_by_the_next_run(
        world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, _ = world
    out = tmp_path / "sheets"
    monkeypatch.setattr(staging, "_move", _fail_on_call(2, OSError(5, "I/O error"),
                                                        staging._move))
    with pytest.raises(ExportError, match=r"committed, but its files could not be moved"):
        export_township(store, TOWNSHIP_A, settings, out)
    monkeypatch.undo()
    (audit,) = _audits(store)
    assert audit.export_token and audit.household_count == 7
    staged = [p for p in out.iterdir() if p.name.startswith(PREFIX)]
    assert len(staged) == 1  # the CSV waits in the committed staging folder

    again = export_township(store, TOWNSHIP_A, settings, out)  # finishes, then has nothing new
    assert again.households == 0
    audits = _audits(store)
    first = audits[0].file_path.split(";")
    assert all(Path(f).is_file() for f in first)
    names = {p.name for p in out.iterdir()}
    assert names == {Path(f).name for a in audits for f in a.file_path.split(";")}
    assert not any(n.startswith(PREFIX) for n in names)
    assert set(_dispatches(store).values()) == {1} and len(_dispatches(store)) == 7


def test_an_abandoned_staging_folder_is_shredded_by_the_next_run(
        world, tmp_path: Path) -> None:
    settings, store, _ = world
    out = tmp_path / "sheets"
    stage = Staging.create(out)
    staged = stage.file("alerts_x.csv")
    staged.write_bytes(b"620102000001,secret")
    stage.seal()
    keep = tmp_path / "hardlink"
    os.link(staged, keep)  # the same inode: shows what the deletion did to the data
    stage._release()  # the process dies without committing
    export_township(store, TOWNSHIP_A, settings, out)
    assert not any(p.name.startswith(PREFIX) for p in out.iterdir())
    assert keep.read_bytes() == b"\0" * len(b"620102000001,secret")


def test_a_live_export_is_never_touched_by_a_recovering_run(tmp_path: Path) -> None:
    stage = Staging.create(tmp_path)
    stage.file("a.csv").write_text("x")
    found = recover(tmp_path, lambda token: False)
    assert found.busy == 1 and found.deleted == 0 and stage.path.is_dir()
    stage.discard()
    assert list(tmp_path.iterdir()) == []


def test_the_operator_export_is_whole_or_untouched(
        world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, _ = world
    scored = pd.DataFrame({
        "household_key": list(HOUSEHOLDS), "village_code": [v[0] for v in HOUSEHOLDS.values()],
        "as_of": [AS_OF] * len(HOUSEHOLDS), "risk": [0.5] * len(HOUSEHOLDS),
        "tier": ["red"] * len(HOUSEHOLDS), "risk_types": [("illness",)] * len(HOUSEHOLDS),
        "departments": [("civil_affairs",)] * len(HOUSEHOLDS), "reasons": [()] * len(HOUSEHOLDS),
        "rule_triggers": [("=cmd",)] * len(HOUSEHOLDS),
        "model_version": ["doudi-risk/7"] * len(HOUSEHOLDS)})
    path = tmp_path / "out" / "scores.csv"
    path.parent.mkdir()
    path.write_text("last month's export\n")
    monkeypatch.setattr("serving.export.write_csv",
                        _fail_on_call(1, OSError("injected"), lambda *a, **k: 0))
    with pytest.raises(OSError, match="injected"):
        write_operator_export(scored, path, settings, store)
    assert path.read_text() == "last month's export\n"  # untouched
    assert [p.name for p in path.parent.iterdir()] == ["scores.csv"]
    assert _audits(store) == []

    monkeypatch.undo()
    assert write_operator_export(scored, path, settings, store) == len(HOUSEHOLDS)
    back = pd.read_csv(path, dtype=str)
    assert set(back["rule_triggers"]) == {"'=cmd"}  # text, never a formula
    assert set(back["household_id"]) == {v[1] for v in HOUSEHOLDS.values()}  # exact
    audits = _audits(store)
    assert {a.township_code for a in audits} == {TOWNSHIP_A, TOWNSHIP_B}
    assert len({a.export_token for a in audits}) == 1 and audits[0].export_token
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["scores.csv"]


# -- kill -9 during a real export process --------------------------------------

TOWNSHIPS = [f"6201020{t:02d}" for t in range(1, 9)]
BIG: dict[str, tuple[str, str, str, str]] = {
    f"h_{t:010x}{i:010x}": (
        f"{township}00{1 + i % 2}", f"=HYPERLINK(\"x\",\"{t}{i}\")" if i == 0 else f"H{t}-{i}",
        f"p_{t:010x}{i:010x}", make_id("620102", date(1950 + t, 1 + i, 1 + t), 2 * i + 1))
    for t, township in enumerate(TOWNSHIPS) for i in range(3)
}
DRIVER = """
import sys
from pathlib import Path
from doudi.months import Month
from doudi.settings import Settings
from serving.export import export_new_alerts
from serving.store import open_store
settings = Settings(home=Path(sys.argv[1]), workers=1, operator="clerk01")
store = open_store(settings=settings)
print("go", flush=True)
export_new_alerts(store, settings, Month.parse(sys.argv[2]))
print("done", flush=True)
"""


def _run_driver(home: Path, kill_after: float | None) -> tuple[str, float]:
    """Run the monthly export loop in a process; SIGKILL it `kill_after` s after it starts
    exporting. Returns (how it ended, seconds from the start of the export to its end)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(home), str(MONTH)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "go", proc.stderr.read() if proc.stderr else ""
        started = time.monotonic()
        if kill_after is not None:
            time.sleep(kill_after)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        return "finished", took
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return "killed", took


def _check_exactly_once(home: Path) -> None:
    settings = Settings(home=home, workers=1, operator="clerk01")
    with open_store(settings=settings) as store:
        audits = _audits(store)
        dispatches = _dispatches(store)
        statuses = {store.get(i).status for i in range(1, len(BIG) + 1)}
    out = home / "exports" / str(MONTH)
    assert sorted(a.township_code for a in audits) == TOWNSHIPS  # one audit each
    assert all(a.household_count == 3 for a in audits)
    assert statuses == {"dispatched"}
    assert len(dispatches) == len(BIG) and set(dispatches.values()) == {1}
    named = {Path(f) for a in audits for f in a.file_path.split(";")}
    assert set(out.iterdir()) == named  # no staging folder, no unaudited file
    for path in named:
        if path.suffix == ".csv":
            sheet = pd.read_csv(path, encoding="gbk", dtype=str)
            assert len(sheet) == 3 and sheet["户编号"].str[0].isin(["'", "\t"]).all()
        else:
            assert sum(ws.max_row - 1 for ws in load_workbook(path).worksheets) == 3
            assert "<f>" not in _sheet_xml(path)


def test_kill_9_during_the_export_then_rerun_exports_exactly_once(tmp_path: Path) -> None:
    template = tmp_path / "template"
    settings = write_world(template, BIG)
    with open_store(settings=settings) as store:
        _add_alerts(store, BIG)

    def fresh(name: str) -> Path:
        home = tmp_path / name
        shutil.copytree(template, home)
        return home

    def rerun(home: Path) -> float:
        started = time.monotonic()
        with open_store(settings=Settings(home=home)) as store:
            export_new_alerts(store, Settings(home=home, workers=1, operator="clerk01"), MONTH)
        return time.monotonic() - started

    reference = fresh("reference")
    took = rerun(reference)  # how long the whole export loop takes here, now
    _check_exactly_once(reference)

    rng = random.Random(11)
    endings = []
    for trial in range(3):
        home = fresh(f"trial{trial}")
        how, _ = _run_driver(home, rng.uniform(0.0, 0.9 * took))
        endings.append(how)
        left = list((home / "exports").rglob("*")) if (home / "exports").exists() else []
        # what a crash leaves visible is only ever audited files (never a partial set)
        with open_store(settings=Settings(home=home)) as store:
            named = {Path(f) for a in _audits(store) for f in a.file_path.split(";")}
        visible_files = {p for p in left if p.is_file() and not any(
            part.startswith(PREFIX) for part in p.relative_to(home).parts)}
        assert visible_files <= named, (trial, how)
        rerun(home)  # finishes or deletes what the crash left, then exports the rest
        _check_exactly_once(home)
    assert "killed" in endings, endings


def test_export_errors_in_the_monthly_loop_name_townships_not_households(
        world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, ids = world
    real = export_module.write_workbook

    def fail_a(pages, path, title, *args, **kwargs):  # type: ignore[no-untyped-def]
        if f"（{TOWNSHIP_A}）" in title:
            first = pages[0][1]["预警编号"].iloc[0]
            raise ExportError(f"alert {first}: its row could not "
                              "be written (ValueError); nothing of this export was kept")
        return real(pages, path, title, *args, **kwargs)

    monkeypatch.setattr("serving.export.write_workbook", fail_a)
    with pytest.raises(ExportError, match=rf"1 of 2 township export\(s\) failed .*"
                                          rf"township {TOWNSHIP_A}: alert \d+"):
        export_new_alerts(store, settings, MONTH)
    # township B went out regardless; A waits, whole, for the rerun
    assert [a.township_code for a in _audits(store)] == [TOWNSHIP_B]
    statuses = {k: store.get(i).status for k, i in ids.items()}
    assert {statuses[k] for k, v in HOUSEHOLDS.items() if v[0].startswith(TOWNSHIP_A)} == {"new"}
    out = settings.home / "exports" / str(MONTH)
    assert all(re.match(rf"alerts_{TOWNSHIP_B}_", p.name) for p in out.iterdir())
    monkeypatch.undo()
    done = export_new_alerts(store, settings, MONTH)
    assert [d.township_code for d in done.exports] == [TOWNSHIP_A]
