"""What the monitoring platform needs from the real API server (issue #15): scoring with
fresh records, alerts filtered and paged by cursor, verdicts and referrals posted (the
rules of `doudi feedback import`), /model, /readyz and /metrics, the served model's local
copy when the registry is unreachable, and a new champion picked up under load.

One server for the module on a copy of tests/serving/test_api.py's workspace (verdicts and
promotions change it; the shared one stays as it was), its registry a SQLite store opened
without a connection pool (`MLFLOW_SQLALCHEMYSTORE_POOLCLASS=NullPool`), so putting a
directory where the store's file was is an outage the server sees at once. The model
refresh runs every second. Tests run in file order: the last one promotes a new version
and then takes the registry away."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from doudi import registry
from doudi.months import Month
from doudi.settings import Settings
from features.asof import read_feed_as_of
from serving import routing
from serving.access import Area
from serving.api import AlertFilters, alert_rows, decode_cursor, encode_cursor
from serving.api_models import BadRequestError
from serving.fresh import score_fresh
from serving.server import RunningServer, running_server
from serving.store import AlertStore, import_feedback, open_store
from serving.store.keys import read_audit
from serving.store.models import Alert, StatusChange, Verdict
from tests.serving.access_fixtures import bearer, make_key
from tests.serving.store_fixtures import alert as new_alert
from tests.serving.test_api import (  # the shared monthly workspace (built once per run)
    AS_OF,
    UNKNOWN,
    _error,
    settings,  # noqa: F401  (the fixture)
)

pytest_plugins = ["tests.serving.store_fixtures"]

MONTH = Month.parse(AS_OF)
COUNTY_A, COUNTY_B = "620121", "620122"
TOWNSHIP_A = "620121001"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once
REFRESH = 1.0  # seconds between the server's registry checks


@dataclass(frozen=True)
class Platform:
    """The copied workspace, its server and keys."""

    settings: Settings
    server: RunningServer
    keys: dict[str, tuple[str, str]]  # name -> (key id, key)
    person_id: dict[str, str]  # person pseudonym -> raw ID number (the vault)
    household_id: dict[str, str]  # household pseudonym -> raw household number

    def headers(self, name: str) -> dict[str, str]:
        return bearer(self.keys[name][1])


def _copy_workspace(source: Settings, home: Path) -> Settings:
    """The workspace at `home`: files copied, the two SQLite stores through SQLite's backup
    (another test's server may be writing the audit log meanwhile)."""
    shutil.copytree(source.home, home,
                    ignore=shutil.ignore_patterns("*.db", "*.db-*", "bentoml"))
    for name in ("alerts.db", "mlflow.db"):
        with sqlite3.connect(source.home / name) as src, sqlite3.connect(home / name) as dst:
            src.backup(dst)
    return Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                    workers=1, api_model_refresh_seconds=REFRESH)


@pytest.fixture(scope="module")
def platform(
    settings: Settings,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    from ingest import vault

    root = tmp_path_factory.mktemp("api_platform")
    ws = _copy_workspace(settings, root / "home")
    keys = {
        "platform": make_key(ws, "platform", label="platform tests: platform"),
        "county_a": make_key(ws, "county", [COUNTY_A], label="platform tests: county a"),
        "county_b": make_key(ws, "county", [COUNTY_B], label="platform tests: county b"),
        "township_a": make_key(ws, "township", [TOWNSHIP_A], label="platform tests: twp a"),
        "analyst": make_key(ws, "analyst", label="platform tests: analyst"),
    }
    people = vault.read_table(ws.vault_dir, vault.PERSONS).to_pandas()
    homes = vault.read_table(ws.vault_dir, vault.HOUSEHOLDS).to_pandas()
    env = {"DOUDI_WORKERS": "1", "DOUDI_API_MODEL_REFRESH_SECONDS": str(REFRESH),
           "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
    try:
        with running_server(ws, root / "server.log", extra_env=env) as server:
            yield Platform(ws, server, keys,
                           dict(zip(people["person_key"], people["person_id"], strict=True)),
                           dict(zip(homes["household_key"], homes["household_id"], strict=True)))
    except RuntimeError as err:  # did not start: the log's end says why
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def http(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.server.base_url, timeout=120) as client:
        r = client.post("/score", json={"as_of": AS_OF, "limit": 1},
                        headers=platform.headers("platform"))
        assert r.status_code == 200, r.text  # the month is scored and cached
        yield client


@pytest.fixture(scope="module")
def month(platform: Platform, http: httpx.Client) -> dict[str, Any]:
    """The platform key's view of the month: every in-scope household, explained."""
    table = read_feed_as_of(platform.settings.warehouse_dir, "households", MONTH,
                            columns=["household_key", "village_code"])
    r = http.post("/score", json={"as_of": AS_OF, "household_keys": list(
        table["household_key"]), "explain": False}, headers=platform.headers("platform"))
    assert r.status_code == 200, r.text
    living = read_feed_as_of(platform.settings.warehouse_dir, "persons", MONTH,
                             columns=["person_key", "household_key", "status"])
    living = living[living["status"] == "living"]
    return {"households": r.json()["households"],
            "members": living.groupby("household_key")["person_key"].apply(list).to_dict()}


def _quiet(month: dict[str, Any], prefix: str, n: int = 0) -> dict[str, Any]:
    """A household of the area `prefix`, not alerted, with a living member."""
    found = [h for h in month["households"] if h["village_code"].startswith(prefix)
             and not h["alerted"] and month["members"].get(h["household_key"])]
    return sorted(found, key=lambda h: -h["rank"])[n]


def _bill(person_id: str, oop: int = 60000) -> dict[str, Any]:
    """A big hospital bill, in Chinese headers, as the medical insurance bureau delivers it."""
    return {"身份证号": person_id, "结算月份": "2025-06", "是否参保": "是", "门诊次数": 1,
            "住院天数": 20, "医疗总费用": oop + 30000, "报销金额": 30000, "个人自付": oop,
            "大病慢病": "", "上报日期": "2025-07-08"}


def _listing(*folders: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for path in folder.rglob("*"):
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def _alert_state(ws: Settings) -> tuple[Any, ...]:
    """What the alert store holds about alerts (not the audit log, which grows)."""
    with open_store(settings=ws) as store, store.transaction() as session:
        counts = [session.scalar(select(func.count()).select_from(t))
                  for t in (Alert, StatusChange, Verdict)]
        return (*counts, session.scalar(select(func.max(Alert.updated_at))))


def _audit(ws: Settings, key_id: str, endpoint: str, count: int) -> list[Any]:
    """The key's audit rows of `endpoint`, oldest first, once `count` are written (the log
    is written in batches)."""
    with open_store(settings=ws) as store:
        for _ in range(100):
            rows = [r for r in read_audit(store, key_id=key_id, limit=5000)
                    if r.endpoint == endpoint]
            if len(rows) >= count:
                return rows[::-1]
            time.sleep(0.1)
    raise AssertionError(f"{len(rows)} audit rows, expected {count}")


# -- fresh records -------------------------------------------------------------------------
def test_score_fresh_counts_the_new_rows_and_writes_nothing(
    platform: Platform, http: httpx.Client, month: dict[str, Any]
) -> None:
    ws, h = platform.settings, platform.headers("platform")
    quiet = _quiet(month, COUNTY_A)
    key = quiet["household_key"]
    before = _listing(ws.warehouse_dir, ws.vault_dir, ws.quarantine_dir, ws.home / "pending")
    state = _alert_state(ws)

    # no rows: what /explain says
    explained = http.post("/explain", json={"as_of": AS_OF, "household_key": key}, headers=h)
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key}, headers=h)
    assert r.status_code == 200, r.text
    assert {k: v for k, v in r.json().items() if k not in ("rows_added", "warnings")} \
        == explained.json()
    assert r.json()["rows_added"] == {} and r.json()["warnings"] == []

    # a big hospital bill for a member: medical costs count, the risk rises
    person = platform.person_id[month["members"][key][0]]
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key,
                                        "rows": {"medical": [_bill(person)]}}, headers=h)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["rows_added"] == {"medical": 1} and got["household_key"] == key
    assert not quiet["alerted"] and "R_MED_OOP" not in quiet["rule_triggers"]
    assert "R_MED_OOP" in got["rule_triggers"]  # the bill counts (the model may not care)
    assert got["model_version"] == explained.json()["model_version"]
    assert person not in r.text
    # exactly `serving.fresh.score_fresh`'s answer, computed here on the same model
    artifact, version = registry.load_model(registry.served_uri(ws), ws)
    oracle = score_fresh(ws, MONTH, key, {"medical": [_bill(person)]}, artifact=artifact,
                         model_version=str(version))
    assert (got["risk"], got["rank"], got["tier"], got["source"]) == (
        pytest.approx(float(oracle.scored["risk"])), int(oracle.scored["rank"]),
        oracle.scored["tier"], oracle.scored["source"])
    assert [x["text_zh"] for x in got["reasons"]] == [x.text_zh for x in oracle.reasons]

    # bad rows: 400, every problem by feed, row, column and rule; no value repeated
    bad = {**_bill(person), "结算月份": "2025-13", "个人自付": -5}
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key,
                                        "rows": {"medical": [bad], "nofeed": [], person: []}},
                  headers=h)
    assert r.status_code == 400, r.text
    body = r.json()
    where = {(p["feed"], p["row"], p["column"], p["rule"]) for p in body["problems"]}
    assert {("medical", 0, "month", "bad_date"),
            ("medical", 0, "out_of_pocket_yuan", "negative_money"),
            ("nofeed", None, None, "unknown_feed")} <= where
    assert "problem(s) in the rows, nothing scored" in body["error"]
    assert person not in r.text and "2025-13" not in r.text
    # an unknown household: 404; events after the month: refused
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": UNKNOWN}, headers=h)
    assert r.status_code == 404 and "not on the roster" in _error(r)
    late = {**_bill(person), "结算月份": "2025-07"}
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key,
                                        "rows": {"medical": [late]}}, headers=h)
    assert r.status_code == 400 and r.json()["problems"][0]["rule"] == "after_as_of"

    # nothing was written: not the warehouse, vault, quarantine, pending rows, alerts
    assert _listing(ws.warehouse_dir, ws.vault_dir, ws.quarantine_dir,
                    ws.home / "pending") == before
    assert _alert_state(ws) == state


def test_score_fresh_is_scoped_before_the_rows_are_read(
    platform: Platform, http: httpx.Client, month: dict[str, Any]
) -> None:
    inside, outside = _quiet(month, COUNTY_A, 1), _quiet(month, COUNTY_B, 1)
    h = platform.headers("county_a")
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": inside[
        "household_key"]}, headers=h)
    assert r.status_code == 200 and r.json()["household_key"] == inside["household_key"]
    unknown = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": UNKNOWN},
                        headers=h)
    assert unknown.status_code == 404
    key = outside["household_key"]
    member = platform.person_id[month["members"][key][0]]
    moved_in = {"household_id": platform.household_id[key],  # to a village of county a
                "village_code": COUNTY_A + "001001", "head_person_id": member,
                "poverty_history": "ordinary", "reported_date": "2025-06-30"}
    sent: list[dict[str, Any] | None] = [
        None, {"medical": [_bill(member)]},  # its own member: would be fine
        {"medical": [{"person_id": "bad"}]},  # bad rows: still the 404 first
        {"households": [moved_in]},  # a row placing it in the area: still 404
    ]
    for rows in sent:
        r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key,
                                            "rows": rows}, headers=h)
        assert r.status_code == 404, (rows, r.text)
        assert r.text.replace(key, "K") == unknown.text.replace(UNKNOWN, "K")
        assert member not in r.text
    # a household the warehouse does not know, placed in the area by a row: 404 too (else
    # "unknown" and "elsewhere" would answer differently)
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": UNKNOWN,
                                        "rows": {"households": [moved_in]}}, headers=h)
    assert r.status_code == 404 and member not in r.text
    r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key},
                  headers=platform.headers("analyst"))
    assert r.status_code == 403
    audited = _audit(platform.settings, platform.keys["county_a"][0], "/score_fresh", 7)
    assert [a.status for a in audited] == [200, *[404] * 6]
    assert (audited[0].households_asked, audited[0].households_answered) == (
        [inside["household_key"]], [inside["household_key"]])
    assert (audited[2].households_asked, audited[2].households_answered) == ([key], [])


# -- alerts: filters and cursor ------------------------------------------------------------
def _every_alert(http: httpx.Client, headers: dict[str, str], body: dict[str, Any],
                 page: int) -> list[dict[str, Any]]:
    """All alerts matching `body`, `page` at a time by cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = http.post("/alerts", json={**body, "limit": page,
                                       **({"cursor": cursor} if cursor else {})},
                      headers=headers)
        assert r.status_code == 200, r.text
        out += r.json()["alerts"]
        cursor = r.json()["next_cursor"]
        assert len(r.json()["alerts"]) == page or cursor is None
        if cursor is None:
            return out


def test_alerts_filter_by_division_tier_type_status_and_month(
    platform: Platform, http: httpx.Client
) -> None:
    every = _every_alert(http, platform.headers("platform"), {}, 1000)
    assert len(every) >= 8 and [a["alert_id"] for a in every] == sorted(
        (a["alert_id"] for a in every), reverse=True)
    some = every[len(every) // 2]
    risk_type = some["risk_types"][0]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"division": COUNTY_A}, lambda a: a["county_code"] == COUNTY_A),
        ({"division": some["township_code"]}, lambda a: a["township_code"] ==
         some["township_code"]),
        ({"township": some["township_code"]}, lambda a: a["township_code"] ==
         some["township_code"]),  # the field /alerts took first
        ({"division": some["village_code"]}, lambda a: a["village_code"] ==
         some["village_code"]),
        ({"tier": some["tier"]}, lambda a: a["tier"] == some["tier"]),
        ({"risk_type": risk_type}, lambda a: risk_type in a["risk_types"]),
        ({"status": "dispatched"}, lambda a: a["status"] == "dispatched"),
        ({"month": AS_OF}, lambda a: a["as_of"] == MONTH.end.isoformat()),
        ({"month": "2025-05"}, lambda a: False),
        ({"division": COUNTY_A, "tier": some["tier"], "status": "dispatched"},
         lambda a: a["county_code"] == COUNTY_A and a["tier"] == some["tier"]
         and a["status"] == "dispatched"),
    ]
    for name, area in (("platform", Area.province()), ("county_a", Area.of([COUNTY_A])),
                       ("township_a", Area.of([TOWNSHIP_A]))):
        for body, keep in cases:
            expected = [a for a in every if keep(a) and area.covers(a["village_code"])]
            assert _every_alert(http, platform.headers(name), body, 2) == expected, \
                (name, body)
    for body, rule in (
        ({"division": "62012"}, "division must be a 6-digit county"),
        ({"township": TOWNSHIP_A, "division": COUNTY_A}, "division or township, not both"),
        ({"tier": "none"}, "tier must be one of red, orange, yellow"),
        ({"risk_type": "poverty"}, "risk_type must be one of"),
        ({"month": "2025-13"}, "month: month 13 is not 01-12"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this server issued"),
    ):
        r = http.post("/alerts", json=body, headers=platform.headers("platform"))
        assert r.status_code == 400 and rule in _error(r), (body, r.text)
    r = http.post("/alerts", json={}, headers=platform.headers("analyst"))
    assert r.status_code == 403


def test_the_cursor_is_stable_and_bound_to_its_filters(
    platform: Platform, http: httpx.Client
) -> None:
    h = platform.headers("platform")
    first = http.post("/alerts", json={"limit": 3}, headers=h).json()
    cursor = first["next_cursor"]
    # a new alert meanwhile (the next monthly run): the next page does not move
    with open_store(settings=platform.settings) as store:
        (made,) = store.add_alerts([new_alert("h_" + "e" * 20, as_of=MONTH.end,
                                              village=TOWNSHIP_A + "001")]).created
    second = http.post("/alerts", json={"limit": 3, "cursor": cursor}, headers=h).json()
    assert second["alerts"][0]["alert_id"] < first["alerts"][-1]["alert_id"]
    again = http.post("/alerts", json={"limit": 3}, headers=h).json()
    assert again["alerts"][0]["alert_id"] == made and made > first["alerts"][0]["alert_id"]
    # the cursor with other filters: 400; with the same: the same page
    for other in ({"tier": "red"}, {"division": COUNTY_A}, {"status": "dispatched"}):
        r = http.post("/alerts", json={"limit": 3, "cursor": cursor, **other}, headers=h)
        assert r.status_code == 400 and "issued for other filters" in _error(r), other
    assert http.post("/alerts", json={"limit": 3, "cursor": cursor}, headers=h).json() \
        == second
    # in process: the cursor is opaque, and it is the filters' own
    filters = AlertFilters.check(division=COUNTY_A, tier="red")
    assert decode_cursor(encode_cursor(42, filters), filters) == 42
    with pytest.raises(BadRequestError, match="other filters"):
        decode_cursor(encode_cursor(42, filters), AlertFilters.check(division=COUNTY_A))
    for forged in ("", "e30", encode_cursor(42, filters)[:-3], "!!!", "eyJ2IjogMX0"):
        with pytest.raises(BadRequestError, match="not one this server issued"):
            decode_cursor(forged, filters)


def test_alert_filters_in_sql(alert_store: AlertStore) -> None:
    """The same filters on SQLite and PostgreSQL (the risk type matches a JSON list's
    element, `_` literally)."""
    made = alert_store.add_alerts([
        new_alert("h_" + "1" * 20, village="620121001001", risk_types=("illness",)),
        new_alert("h_" + "2" * 20, village="620121002001", tier="yellow",
                  risk_types=("unstable_employment", "illness")),
        new_alert("h_" + "3" * 20, village="620122001001", risk_types=("disability",)),
        new_alert("h_" + "4" * 20, village="620122001002", tier="orange",
                  risk_types=("unstable_employment",)),
    ]).created
    a, b, c, d = made

    def ids(area: Area | None = None, limit: int = 10, after: int | None = None,
            **given: str) -> list[int]:
        return [x.id for x in alert_rows(alert_store, AlertFilters.check(**given), limit,
                                         after=after, area=area)]

    assert ids() == [d, c, b, a]
    assert ids(risk_type="illness") == [b, a]
    assert ids(risk_type="unstable_employment") == [d, b]
    assert ids(division="620121") == [b, a] and ids(division="620122001") == [d, c]
    assert ids(division="620122001002") == [d] and ids(tier="yellow") == [b]
    assert ids(month="2026-03") == [d, c, b, a] and ids(month="2026-02") == []
    assert ids(area=Area.of(["620121002", "620122"])) == [d, c, b]
    assert ids(area=Area.of(["620121"]), division="620122") == []  # intersected
    assert ids(area=Area.of([])) == []  # a damaged key's empty area: nothing
    assert ids(limit=2) == [d, c] and ids(limit=2, after=c) == [b, a]


# -- verdicts and referrals ----------------------------------------------------------------
def _dispatched(http: httpx.Client, platform: Platform, prefix: str, n: int = 0
                ) -> dict[str, Any]:
    alerts = _every_alert(http, platform.headers("platform"),
                          {"status": "dispatched", "division": prefix}, 1000)
    return alerts[n]


def _verdict(alert: dict[str, Any], **changed: Any) -> dict[str, Any]:
    return {"alert_id": alert["alert_id"], "verdict": "confirmed",
            "risk_types": ["illness", "disability"], "visited_on": "2025-07-03",
            "caseworker": "CW0107", "note": "入户核实", **changed}


def test_verdicts_follow_the_feedback_import_rules(
    platform: Platform, http: httpx.Client, tmp_path: Path
) -> None:
    ws, h = platform.settings, platform.headers("township_a")
    target = _dispatched(http, platform, TOWNSHIP_A)
    verdict = _verdict(target)
    r = http.post("/verdicts", json={"verdicts": [verdict]}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "recorded": 1, "already_recorded": 0}
    # the same again (a retry): one effect
    r = http.post("/verdicts", json={"verdicts": [verdict, verdict]}, headers=h)
    assert r.json() == {"received": 2, "recorded": 0, "already_recorded": 2}
    with open_store(settings=ws) as store:
        record = store.get(target["alert_id"])
    assert record.status == "verified_confirmed" and record.verdict is not None
    assert (record.verdict.verdict, sorted(record.verdict.risk_types), record.verdict.caseworker
            ) == ("confirmed", ["disability", "illness"], "CW0107")
    key_id = platform.keys["township_a"][0]
    moves = [e for e in record.history if e.to_status == "verified_confirmed"]
    assert len(moves) == 1 and moves[0].actor == f"api {key_id}: platform tests: twp a"

    # a different verdict for it: 409, the refusal `doudi feedback import` gives
    other = _verdict(target, verdict="dismissed", risk_types=[])
    state = _alert_state(ws)
    r = http.post("/verdicts", json={"verdicts": [other]}, headers=h)
    assert r.status_code == 409, r.text
    (problem,) = r.json()["problems"]
    sheet = tmp_path / "returned.csv"
    with sheet.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(other))
        writer.writeheader()
        writer.writerow({**other, "risk_types": ""})
    with open_store(settings=ws) as store:
        report = import_feedback(store, sheet, actor="tests")
    assert [c.rule for c in report.conflicts] == [problem["rule"]]
    assert "already has a different verdict" in problem["rule"]
    assert (problem["index"], problem["field"], problem["alert_id"]) == (
        0, "verdict", target["alert_id"])

    # all or nothing: a good verdict beside a refused one is not recorded either
    second = _dispatched(http, platform, TOWNSHIP_A)
    r = http.post("/verdicts", json={"verdicts": [_verdict(second), other]}, headers=h)
    assert r.status_code == 409
    # rows breaking a rule: 400 naming index, field and rule, never the value
    raw_id = next(iter(platform.person_id.values()))
    r = http.post("/verdicts", json={"verdicts": [
        _verdict(second, visited_on="2025-13-01"), _verdict(second, risk_types=[]),
        _verdict(second, caseworker=raw_id), _verdict(second, verdict="maybe"),
        _verdict(second, risk_types=["poverty"]),
    ]}, headers=h)
    assert r.status_code == 400, r.text
    assert {(p["index"], p["field"]) for p in r.json()["problems"]} == {
        (0, "visited_on"), (1, "risk_types"), (2, "caseworker"), (3, "verdict"),
        (4, "risk_types")}
    assert raw_id not in r.text and "2025-13-01" not in r.text
    # a visit before the alert's month end: the store refuses (409)
    r = http.post("/verdicts", json={"verdicts": [_verdict(second, visited_on="2025-06-01")]},
                  headers=h)
    assert r.status_code == 409 and "before the alert's as-of date" in r.json()[
        "problems"][0]["rule"]
    assert _alert_state(ws) == state

    # outside the key's area: the same 404 as an alert that does not exist
    elsewhere = _dispatched(http, platform, COUNTY_B)
    missing = http.post("/verdicts", json={"verdicts": [_verdict(elsewhere, alert_id=999999)]},
                        headers=h)
    assert missing.status_code == 404
    r = http.post("/verdicts", json={"verdicts": [_verdict(elsewhere)]}, headers=h)
    assert r.status_code == 404
    assert r.text.replace(str(elsewhere["alert_id"]), "N") == missing.text.replace("999999", "N")
    assert http.post("/verdicts", json={"verdicts": [_verdict(elsewhere)]},
                     headers=platform.headers("analyst")).status_code == 403
    assert _alert_state(ws) == state
    # audited: the households whose alerts were written
    rows = _audit(ws, key_id, "/verdicts", 8)
    assert [r.status for r in rows] == [200, 200, 409, 409, 400, 409, 404, 404]
    assert rows[0].households_answered == [target["household_key"]]
    assert rows[-1].households_answered == []


def test_referrals_once_and_only_after_a_confirmed_visit(
    platform: Platform, http: httpx.Client
) -> None:
    h = platform.headers("county_a")
    confirmed = _every_alert(http, h, {"status": "verified_confirmed"}, 100)[0]
    dispatched = _dispatched(http, platform, COUNTY_A)
    body = {"alert_id": confirmed["alert_id"], "referred_on": "2025-07-05",
            "current_assistance": ["medical_assistance"]}
    r = http.post("/referrals", json=body, headers=h)
    assert r.status_code == 200, r.text
    with open_store(settings=platform.settings) as store:
        record = store.get(confirmed["alert_id"])
    types = record.verdict.risk_types if record.verdict else ()
    expected = [d for d in routing.departments_for(types)
                if d not in routing.assisting_departments(["medical_assistance"])]
    assert r.json() == {"alert_id": confirmed["alert_id"], "status": "referred",
                        "referred": expected,
                        "already_assisting": [d for d in routing.departments_for(types)
                                              if d not in expected],
                        "already_recorded": False}
    assert [x.department for x in record.referrals] == expected
    again = http.post("/referrals", json=body, headers=h)
    assert again.json() == {**r.json(), "already_assisting": [], "already_recorded": True}
    with open_store(settings=platform.settings) as store:
        assert len(store.get(confirmed["alert_id"]).referrals) == len(expected)
    r = http.post("/referrals", json={**body, "alert_id": dispatched["alert_id"]}, headers=h)
    assert r.status_code == 409 and "cannot go from 'dispatched' to 'referred'" in _error(r)
    for wrong, rule in (({"referred_on": "2099-01-01"}, "after today"),
                        ({"referred_on": "05/07/2025"}, "YYYY-MM-DD"),
                        ({"current_assistance": ["dibao", "x1"]}, "current_assistance[1]")):
        r = http.post("/referrals", json={**body, **wrong}, headers=h)
        assert r.status_code == 400 and rule in _error(r) and "x1" not in r.text
    elsewhere = _dispatched(http, platform, COUNTY_B)
    missing = http.post("/referrals", json={**body, "alert_id": 999999}, headers=h)
    r = http.post("/referrals", json={**body, "alert_id": elsewhere["alert_id"]}, headers=h)
    assert missing.status_code == r.status_code == 404
    assert r.text.replace(str(elsewhere["alert_id"]), "N") == missing.text.replace("999999", "N")
    assert http.post("/referrals", json=body, headers=platform.headers("analyst")
                     ).status_code == 403


# -- /model, /readyz, /metrics -------------------------------------------------------------
def test_model_says_what_is_served(platform: Platform, http: httpx.Client) -> None:
    ws = platform.settings
    r = http.post("/model", json={}, headers=platform.headers("township_a"))
    assert r.status_code == 200, r.text
    info = r.json()
    name = registry.workspace(ws).model_name
    mv = registry.client(ws.tracking_uri()).get_model_version(name, "1")
    artifact, _ = registry.load_model(registry.served_uri(ws), ws)
    meta = artifact.meta
    assert info["model_version"] == f"{name}/1" and info["source"] == "registry"
    assert info["fallback_reason"] is None
    assert info["workspace"] == registry.workspace(ws).fingerprint == meta["workspace"]
    assert info["model_as_of"] == AS_OF
    assert info["training_window"] == {"first": mv.tags["trained_from"][:7],
                                       "last": str(meta["trained_through"])[:7]}
    assert info["training_window"]["first"] < info["training_window"]["last"]
    assert info["test_periods"] == [p[:7] for p in meta["test_periods"]]
    metrics = meta["test_metrics"]
    assert info["test_metrics"] == {k: pytest.approx(metrics[k]) for k in (
        "roc_auc", "pr_auc", "precision_at_k", "recall_at_k", "brier", "ece",
        "calibration_slope", "positives", "n")}
    assert info["test_metrics"]["roc_auc"] == pytest.approx(float(mv.tags["test_roc_auc"]),
                                                            rel=1e-5)
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.headers["content-type"] == "application/json"
    assert ready.json() == {"ready": True, "model_version": f"{name}/1",
                            "source": "registry", "reason": None}


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """A metric's samples from Prometheus text: sorted label pairs -> value."""
    out = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
            out[labels] = float(match.group(2))
    return out


def test_metrics_model_latency_tiers_and_refusals(
    platform: Platform, http: httpx.Client, month: dict[str, Any]
) -> None:
    h = platform.headers("platform")
    name = registry.workspace(platform.settings).model_name
    before = http.get("/metrics").text
    key = month["households"][0]["household_key"]
    for _ in range(5):
        assert http.post("/explain", json={"as_of": AS_OF, "household_key": key},
                         headers=h).status_code == 200
    refusals = [
        (http.post("/model", json={}), "/model", "401", "no_key"),
        (http.post("/model", json={}, headers=bearer("dk_" + "0" * 12 + "_" + "1" * 64)),
         "/model", "401", "unknown_key"),
        (http.post("/alerts", json={}, headers=platform.headers("analyst")), "/alerts", "403",
         "role"),
        (http.post("/explain", json={"as_of": AS_OF, "household_key": UNKNOWN}, headers=h),
         "/explain", "404", "not_found"),
        (http.post("/score", json={"as_of": "x"}, headers=h), "/score", "400", "bad_request"),
        (http.post("/score", content=b"a=b", headers={**h, "content-type": "text/plain"}),
         "/score", "415", "not_json"),
        (http.post("/score", content=b"x" * (platform.settings.api_max_body_bytes + 1),
                   headers=h), "/score", "413", "too_large"),
    ]
    after = http.get("/metrics").text
    for response, endpoint, status, _ in refusals:
        assert str(response.status_code) == status, (endpoint, response.text)
    count = _samples(after, "doudi_refused_requests_total")
    was = _samples(before, "doudi_refused_requests_total")
    for _, endpoint, status, reason in refusals:
        labels = (("endpoint", endpoint), ("reason", reason), ("status", status))
        assert count.get(labels, 0) - was.get(labels, 0) >= 1, labels
    assert {v for k in count for n, v in k if n == "reason"} <= {
        "no_key", "malformed_key", "unknown_key", "wrong_secret", "expired", "revoked", "role",
        "key_check_failed", "bad_request", "not_found", "conflict", "too_large", "not_json",
        "other"}
    latency = _samples(after, "doudi_request_duration_seconds_count")
    old = _samples(before, "doudi_request_duration_seconds_count")
    label = (("endpoint", "/explain"),)
    assert latency[label] - old.get(label, 0) == 5
    buckets = _samples(after, "doudi_request_duration_seconds_bucket")
    assert buckets[(("endpoint", "/explain"), ("le", "+Inf"))] == latency[label]
    info = _samples(after, "doudi_model_info")
    assert info == {(("source", "registry"), ("version", f"{name}/1")): 1.0}
    r = http.post("/score", json={"as_of": AS_OF, "limit": 5000}, headers=h)
    tiers: dict[str, int] = {}
    for x in r.json()["households"]:
        tiers[x["tier"]] = tiers.get(x["tier"], 0) + 1
    alerts = _samples(http.get("/metrics").text, "doudi_cached_month_alerts")
    assert {dict(k)["tier"]: v for k, v in alerts.items() if v} == tiers
    assert {dict(k)["as_of"] for k in alerts} == {MONTH.end.isoformat()}


# -- the registry: unreachable at start-up, a new champion, an outage ----------------------
def test_an_unreachable_registry_at_start_up_serves_the_local_copy(
    platform: Platform, tmp_path: Path
) -> None:
    ws = platform.settings
    saved = json.loads((ws.cache_dir / registry.SERVED_COPY / "served.json").read_text())
    down = ws.model_copy(update={"mlflow_tracking_uri": UNREACHABLE})
    env = {"DOUDI_WORKERS": "1", "DOUDI_API_MODEL_REFRESH_SECONDS": str(REFRESH),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    with running_server(down, tmp_path / "down.log", extra_env=env) as server, \
            httpx.Client(base_url=server.base_url, timeout=120,
                         headers=platform.headers("platform")) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text  # still ready: it has a model
        body = ready.json()
        assert (body["ready"], body["model_version"], body["source"]) == (
            True, saved["label"], "local_copy")
        assert "registry unreachable" in body["reason"] and saved["label"] in body["reason"]
        info = http.post("/model", json={}).json()
        assert (info["model_version"], info["source"]) == (saved["label"], "local_copy")
        assert info["fallback_reason"] == body["reason"]
        assert info["training_window"]["first"]  # the version's record, kept with the copy
        for _ in range(3):  # refreshes keep failing: still answering, same model
            r = http.post("/score", json={"as_of": AS_OF, "limit": 3})
            assert r.status_code == 200 and r.json()["model_version"] == saved["label"]
            time.sleep(REFRESH)
        metrics = _samples(http.get("/metrics").text, "doudi_model_info")
        assert metrics == {(("source", "local_copy"), ("version", saved["label"])): 1.0}
    log = (tmp_path / "down.log").read_text(errors="replace")
    assert "could not re-resolve" in log and "Traceback" not in log


def test_a_new_champion_is_served_without_dropping_a_request(
    platform: Platform, http: httpx.Client, month: dict[str, Any]
) -> None:
    from training.tracking import promote

    ws = platform.settings
    name = registry.workspace(ws).model_name
    client = registry.client(ws.tracking_uri())
    current = client.get_model_version(name, "1")
    new = client.create_model_version(name, str(current.source), run_id=current.run_id,
                                      tags=dict(current.tags))
    keys = [h["household_key"] for h in month["households"][:40]]
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def calls() -> None:
        with httpx.Client(base_url=platform.server.base_url, timeout=60,
                          headers=platform.headers("platform")) as own:
            i = 0
            while not stop.is_set():
                r = own.post("/score", json={"as_of": AS_OF,
                                             "household_keys": [keys[i % len(keys)]]})
                version = r.json()["model_version"] if r.status_code == 200 else ""
                answers.append((time.monotonic(), r.status_code, version))
                i += 1

    loop = threading.Thread(target=calls)
    loop.start()
    try:
        time.sleep(1.5)
        promote(new.version, workspace=registry.workspace(ws), tracking_uri=ws.tracking_uri(),
                force=True, actor="tests")
        promoted = time.monotonic()
        switched = None
        while time.monotonic() - promoted < 60 and switched is None:
            switched = next((t for t, _, v in answers if v == f"{name}/{new.version}"), None)
            time.sleep(0.2)
        assert switched is not None, "the new champion was never served"
        time.sleep(1.0)  # and it stays

        # the registry goes away: a directory where its file was; the server keeps serving
        store = Path(ws.tracking_uri().removeprefix("sqlite:///"))
        store.rename(store.with_suffix(".away"))
        store.mkdir()
        outage = time.monotonic()
        time.sleep(4 * REFRESH)
    finally:
        stop.set()
        loop.join()
    assert answers and all(status == 200 for _, status, _ in answers), \
        [a for a in answers if a[1] != 200][:5]
    # the new version within the refresh period plus loading and scoring the month
    print(f"new champion served {switched - promoted:.2f} s after the promotion; "
          f"{len(answers)} answers, none refused")
    assert switched - promoted < REFRESH + 15, switched - promoted
    versions = [v for t, _, v in answers if t > switched]
    assert versions and set(versions) == {f"{name}/{new.version}"}
    during = [v for t, _, v in answers if t > outage]
    assert len(during) > 10 and set(during) == {f"{name}/{new.version}"}
    log = platform.server.log_path.read_text(errors="replace")
    assert f"model changed: {name}/1 -> {name}/{new.version}; cached month rescored" in log
    after = log.split(f"-> {name}/{new.version}")[-1]
    assert "could not re-resolve" in after and "cannot reach the model registry" in after
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    assert http.get("/readyz").json()["model_version"] == f"{name}/{new.version}"
