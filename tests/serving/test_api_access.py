"""Access to the real API server by role and area (docs/api.md "Access"): the whole role x
endpoint x area matrix with zero cross-area answers, 404-not-403 outside the area, 401 for
bad, expired and revoked keys, 403 for a role an endpoint does not take, and the audit rows.

One server for the module, on the workspace of tests/serving/test_api.py (after `doudi
monthly` as of 2025-06: three counties of one township each). The platform key's answers
are the oracle: every other key must get exactly their part within its area."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from doudi.months import Month
from doudi.settings import Settings
from features import scoring_table
from serving.access import KEY_CACHE_SECONDS, Area
from serving.server import RunningServer, running_server
from serving.store import open_store
from serving.store.keys import list_keys, read_audit, revoke_key
from tests.serving.access_fixtures import bearer, make_key
from tests.serving.test_api import (  # the shared monthly workspace (built once per run)
    AS_OF,
    RAW_ID,
    UNKNOWN,
    _error,
    settings,  # noqa: F401  (the fixture)
)

COUNTY_A, COUNTY_B = "620121", "620122"
TOWNSHIP_A, TOWNSHIP_B = "620121001", "620122001"
AREAS: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (role, area)
    "platform": ("platform", ()),
    "analyst": ("analyst", ()),
    "county_a": ("county", (COUNTY_A,)),
    "county_b": ("county", (COUNTY_B,)),
    "township_a": ("township", (TOWNSHIP_A,)),
    "township_b": ("township", (TOWNSHIP_B,)),
    "townships_ab": ("township", (TOWNSHIP_A, TOWNSHIP_B)),
}
ROUTES = ("/score", "/explain", "/model", "/alerts", "/score_fresh", "/verdicts", "/referrals")


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    area: Area
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


@pytest.fixture(scope="module")
def callers(settings: Settings) -> dict[str, Caller]:  # noqa: F811
    made = {}
    for name, (role, codes) in AREAS.items():
        key_id, key = make_key(settings, role, codes, label=f"access tests: {name}")
        area = Area.province() if not codes else Area.of(codes)
        made[name] = Caller(name, role, area, key_id, key)
    return made


@pytest.fixture(scope="module")
def villages(settings: Settings) -> dict[str, str]:  # noqa: F811
    """household pseudonym -> village code, for the month's in-scope households."""
    table = scoring_table(settings.warehouse_dir, Month.parse(AS_OF), settings)
    found = dict(zip(table["household_key"], table["village_code"], strict=True))
    for code in (COUNTY_A, COUNTY_B, TOWNSHIP_A, TOWNSHIP_B):  # the matrix needs both sides
        assert sum(v.startswith(code) for v in found.values()) >= 20, code
    assert any(not v.startswith((COUNTY_A, COUNTY_B)) for v in found.values())
    return found


@pytest.fixture(scope="module")
def server(
    settings: Settings,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    callers: dict[str, Caller],
) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("api_access") / "server.log"
    try:
        with running_server(settings, log, extra_env={"DOUDI_WORKERS": "1"}) as running:
            yield running
    except RuntimeError as err:  # did not start: the log's end says why
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def oracle(http: httpx.Client, callers: dict[str, Caller], villages: dict[str, str]
           ) -> dict[str, Any]:
    """The platform key's answers: the whole province."""
    headers = callers["platform"].headers
    alerted = http.post("/score", json={"as_of": AS_OF, "limit": 5000}, headers=headers)
    every = http.post("/score", json={"as_of": AS_OF, "household_keys": [*villages, UNKNOWN],
                                      "explain": False}, headers=headers)
    alerts = http.post("/alerts", json={"limit": 5000}, headers=headers)
    for r in (alerted, every, alerts):
        assert r.status_code == 200, r.text
    assert every.json()["missing"] == [UNKNOWN]
    assert len(alerts.json()["alerts"]) > 0 and alerted.json()["alerted"] > 0
    assert alerts.json()["next_cursor"] is None
    return {"alerted": alerted.json(), "every": every.json(), "alerts": alerts.json()["alerts"]}


def _log(server: RunningServer) -> str:
    time.sleep(0.3)  # the access log line follows the answer
    return server.log_path.read_text(encoding="utf-8", errors="replace")


# -- the matrix ---------------------------------------------------------------------------------
def test_every_key_sees_its_area_and_nothing_else(
    http: httpx.Client, callers: dict[str, Caller], villages: dict[str, str],
    oracle: dict[str, Any],
) -> None:
    seen: dict[str, set[str]] = {name: set() for name in callers}
    everyone = oracle["every"]["households"]
    for name, caller in callers.items():
        mine = [h for h in everyone if caller.area.covers(h["village_code"])]
        assert mine, name
        h = caller.headers

        # /score without keys: the area's alerts by rank, the area's counts
        r = http.post("/score", json={"as_of": AS_OF, "limit": 5000}, headers=h)
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        expected = [x for x in oracle["alerted"]["households"]
                    if caller.area.covers(x["village_code"])]
        assert body["households"] == expected, name
        assert body["alerted"] == len(expected) and body["in_scope"] == len(mine), name
        seen[name] |= {x["household_key"] for x in body["households"]}

        # /score with every household's key: the area's answered, all others `missing`
        asked = [*villages, UNKNOWN]
        r = http.post("/score", json={"as_of": AS_OF, "household_keys": asked,
                                      "explain": False}, headers=h)
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        assert body["households"] == mine, name
        assert body["missing"] == [k for k in asked if k not in {x["household_key"]
                                                                  for x in mine}], name
        seen[name] |= {x["household_key"] for x in body["households"]}

        # /explain: in the area answered, outside exactly as an unknown household (404)
        inside = mine[0]["household_key"]
        r = http.post("/explain", json={"as_of": AS_OF, "household_key": inside}, headers=h)
        assert r.status_code == 200 and r.json()["household_key"] == inside, (name, r.text)
        seen[name].add(r.json()["household_key"])
        unknown = http.post("/explain", json={"as_of": AS_OF, "household_key": UNKNOWN},
                            headers=h)
        assert unknown.status_code == 404
        outside = [k for k, v in villages.items() if not caller.area.covers(v)]
        assert bool(outside) != caller.area.whole, name
        for key in outside[:: max(1, len(outside) // 5)]:
            r = http.post("/explain", json={"as_of": AS_OF, "household_key": key}, headers=h)
            assert r.status_code == 404, (name, r.text)  # never 403: existence does not leak
            assert r.text.replace(key, "K") == unknown.text.replace(UNKNOWN, "K"), name
            varying = {"date", "x-bentoml-request-id"}
            assert {k: v for k, v in r.headers.items() if k not in varying} == {
                k: v for k, v in unknown.headers.items() if k not in varying}, name

        # /model: for everyone
        r = http.post("/model", json={}, headers=h)
        assert r.status_code == 200 and r.json()["model_version"], (name, r.text)

        # /alerts: the area's part of the store; another area's township is simply empty
        r = http.post("/alerts", json={"limit": 5000}, headers=h)
        if caller.role == "analyst":
            assert r.status_code == 403 and "analyst key may not call /alerts" in _error(r)
            continue
        assert r.status_code == 200, (name, r.text)
        expected = [a for a in oracle["alerts"] if caller.area.covers(a["village_code"])]
        assert r.json()["alerts"] == expected and expected, name
        seen[name] |= {a["household_key"] for a in r.json()["alerts"]}
        for township in (TOWNSHIP_A, TOWNSHIP_B, "620123001"):
            for field in ("township", "division"):
                r = http.post("/alerts", json={field: township, "limit": 5000}, headers=h)
                assert r.status_code == 200, (name, r.text)
                assert r.json()["alerts"] == [a for a in expected
                                              if a["township_code"] == township], name
        for county in (COUNTY_A, COUNTY_B):  # a county division, intersected with the area
            r = http.post("/alerts", json={"division": county, "limit": 5000}, headers=h)
            assert r.status_code == 200, (name, r.text)
            assert r.json()["alerts"] == [a for a in expected
                                          if a["county_code"] == county], name
        # pages of 3: the same alerts, in order, whatever the area
        paged, cursor = [], None
        while True:
            body = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            r = http.post("/alerts", json=body, headers=h)
            assert r.status_code == 200, (name, r.text)
            paged += r.json()["alerts"]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert paged == expected, name

    # zero cross-area answers, over everything any key was told
    for name, keys in seen.items():
        area = callers[name].area
        assert keys and all(area.covers(villages.get(k) or _alert_village(oracle, k))
                            for k in keys), name
    assert seen["county_a"] == seen["township_a"]  # one township in that county
    assert seen["townships_ab"] == seen["township_a"] | seen["township_b"]
    assert not seen["county_a"] & seen["county_b"]


def test_fresh_scores_verdicts_and_referrals_keep_to_the_area(
    http: httpx.Client, callers: dict[str, Caller], villages: dict[str, str],
    oracle: dict[str, Any],
) -> None:
    """The endpoints that take records or write the alert store: in the area answered (or,
    for writes, refused by the store's rules: nothing is written here), outside it exactly
    as an unknown household or alert (404), never to `analyst` (403)."""
    everyone = oracle["every"]["households"]
    seen: dict[str, set[str]] = {}
    no_alert = 99_999_999
    for name, caller in callers.items():
        h = caller.headers
        mine = [x for x in everyone if caller.area.covers(x["village_code"])]
        outside = [k for k, v in villages.items() if not caller.area.covers(v)]
        alerts_in = [a for a in oracle["alerts"] if caller.area.covers(a["village_code"])]
        alerts_out = [a for a in oracle["alerts"] if not caller.area.covers(a["village_code"])]
        visit = {"verdict": "dismissed", "visited_on": "2025-01-02", "caseworker": "CW01"}
        refer = {"referred_on": "2025-07-01"}
        if caller.role == "analyst":
            for route, body in (
                ("/score_fresh", {"as_of": AS_OF, "household_key": mine[0]["household_key"]}),
                ("/verdicts", {"verdicts": [{"alert_id": alerts_in[0]["alert_id"], **visit}]}),
                ("/referrals", {"alert_id": alerts_in[0]["alert_id"], **refer}),
            ):
                r = http.post(route, json=body, headers=h)
                assert r.status_code == 403 and f"analyst key may not call {route}" in _error(r)
            continue
        # /score_fresh without rows: the area's household as /explain gives it
        inside = mine[-1]["household_key"]
        r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": inside}, headers=h)
        assert r.status_code == 200, (name, r.text)
        explained = http.post("/explain", json={"as_of": AS_OF, "household_key": inside},
                              headers=h).json()
        assert {k: v for k, v in r.json().items() if k in explained} == explained, name
        seen[name] = {r.json()["household_key"]}
        unknown = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": UNKNOWN},
                            headers=h)
        assert unknown.status_code == 404, name
        for key in outside[:: max(1, len(outside) // 5)]:
            r = http.post("/score_fresh", json={"as_of": AS_OF, "household_key": key},
                          headers=h)
            assert r.status_code == 404, (name, r.text)
            if not caller.area.whole:  # (the platform: an unknown key is not on the roster)
                assert r.text.replace(key, "K") == unknown.text.replace(UNKNOWN, "K"), name
        # /verdicts and /referrals: the area's alert reaches the store's rules (a visit
        # before the alert, a referral before a verdict: 409, nothing written); another
        # area's alert is the 404 of an alert id that does not exist
        assert alerts_in, name
        r = http.post("/verdicts", json={"verdicts": [{"alert_id": alerts_in[0]["alert_id"],
                                                       **visit}]}, headers=h)
        assert r.status_code == 409 and "before the alert's as-of date" in r.text, (name, r.text)
        r = http.post("/referrals", json={"alert_id": alerts_in[0]["alert_id"], **refer},
                      headers=h)
        assert r.status_code == 409 and "to 'referred'" in _error(r), (name, r.text)
        no_verdict = http.post("/verdicts", json={"verdicts": [{"alert_id": no_alert,
                                                                **visit}]}, headers=h)
        no_referral = http.post("/referrals", json={"alert_id": no_alert, **refer}, headers=h)
        assert no_verdict.status_code == no_referral.status_code == 404
        assert bool(alerts_out) != caller.area.whole, name
        for a in alerts_out[:: max(1, len(alerts_out) // 4)]:
            n = str(a["alert_id"])
            r = http.post("/verdicts", json={"verdicts": [{"alert_id": a["alert_id"],
                                                           **visit}]}, headers=h)
            assert r.status_code == 404, (name, r.text)
            assert r.text.replace(n, "N") == no_verdict.text.replace(str(no_alert), "N")
            r = http.post("/referrals", json={"alert_id": a["alert_id"], **refer}, headers=h)
            assert r.status_code == 404, (name, r.text)
            assert r.text.replace(n, "N") == no_referral.text.replace(str(no_alert), "N")
    for name, keys in seen.items():  # zero cross-area answers
        assert all(callers[name].area.covers(villages[k]) for k in keys), name
    # nothing was written: the store's alerts are as the oracle saw them
    r = http.post("/alerts", json={"limit": 5000}, headers=callers["platform"].headers)
    assert r.json()["alerts"] == oracle["alerts"]


def _alert_village(oracle: dict[str, Any], key: str) -> str:
    """An alert's village (a stored alert's household may be out of scope this month)."""
    return next(a["village_code"] for a in oracle["alerts"] if a["household_key"] == key)


# -- 401 and 403 --------------------------------------------------------------------------------
def test_missing_bad_expired_and_revoked_keys_are_401(
    http: httpx.Client, server: RunningServer, settings: Settings,  # noqa: F811
    callers: dict[str, Caller],
) -> None:
    good = callers["township_a"]
    _, expired = make_key(settings, "platform", label="access tests: expired", expires_days=1,
                          created=datetime.now(UTC) - timedelta(days=2))
    revoked_id, revoked = make_key(settings, "platform", label="access tests: revoked")
    with open_store(settings=settings) as store:
        revoke_key(store, revoked_id)
    forged = good.key[:-64] + "0" * 64  # a real key id with another secret
    unknown = "dk_" + "0" * 12 + "_" + "1" * 64
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "missing or invalid"),
        ({"authorization": "Bearer"}, "missing or invalid"),
        ({"authorization": "Bearer not-a-key"}, "missing or invalid"),
        ({"authorization": f"Basic {good.key}"}, "missing or invalid"),
        ({"authorization": good.key}, "missing or invalid"),
        ({"x-api-key": good.key}, "missing or invalid"),
        (bearer(forged), "missing or invalid"),
        (bearer(unknown), "missing or invalid"),
        (bearer(expired), "API key expired"),
        (bearer(revoked), "API key revoked"),
    ]
    bodies = {
        "/score": {"as_of": AS_OF, "household_keys": [UNKNOWN]},
        "/explain": {"as_of": AS_OF, "household_key": UNKNOWN},
        "/model": {},
        "/alerts": {},
        "/score_fresh": {"as_of": AS_OF, "household_key": UNKNOWN},
        "/verdicts": {"verdicts": [{"alert_id": 1, "verdict": "dismissed",
                                    "visited_on": "2025-07-01", "caseworker": "CW01"}]},
        "/referrals": {"alert_id": 1, "referred_on": "2025-07-01"},
    }
    for headers, message in cases:
        for route in ROUTES:
            r = http.post(route, json=bodies[route], headers=headers)
            assert r.status_code == 401, (route, headers, r.text)
            assert message in _error(r) and r.headers["www-authenticate"].startswith("Bearer")
            for secret in (good.key, good.key[-64:], expired, revoked, forged):
                assert secret not in r.text
    # refused before the body is looked at: no key and a bad body is still a 401
    r = http.post("/score", content=b"{not json", headers={"content-type": "text/plain"})
    assert r.status_code == 401
    assert http.post(f"/score?key={good.key}", json={"as_of": AS_OF}).status_code == 401
    # lower-case scheme is fine; the probes and /metrics need no key
    r = http.post("/model", json={}, headers={"authorization": f"bearer {good.key}"})
    assert r.status_code == 200
    for path in ("/readyz", "/livez", "/metrics"):
        assert http.get(path).status_code == 200, path

    text_ = _log(server)
    for secret in (good.key, good.key[-64:], expired, revoked, forged, unknown[-64:]):
        assert secret not in text_
    assert "Traceback" not in text_ and "Exception on" not in text_, text_[-3000:]
    refusals = [line for line in text_.splitlines() if " -> 401 " in line]
    assert len(refusals) >= len(cases) * len(ROUTES)
    assert all("WARNING" in line for line in refusals), refusals[:3]
    for reason in ("no key)", "malformed key)", "unknown key)", f"wrong secret, key {good.key_id})",
                   "expired, key ", "revoked, key "):
        assert any(f"-> 401 (auth: {reason}" in line for line in refusals), reason


def test_a_revoked_key_is_refused_within_seconds(
    http: httpx.Client, settings: Settings,  # noqa: F811
) -> None:
    key_id, key = make_key(settings, "county", [COUNTY_A], label="access tests: to revoke")
    assert http.post("/model", json={}, headers=bearer(key)).status_code == 200  # now cached
    with open_store(settings=settings) as store:
        revoke_key(store, key_id)
    revoked_at = time.monotonic()
    while True:
        r = http.post("/model", json={}, headers=bearer(key))
        waited = time.monotonic() - revoked_at
        if r.status_code == 401:
            break
        assert r.status_code == 200 and waited < KEY_CACHE_SECONDS + 2, (waited, r.text)
        time.sleep(0.2)
    assert "revoked" in _error(r) and waited <= KEY_CACHE_SECONDS + 1, waited


# -- the audit log ------------------------------------------------------------------------------
def _audit_rows(settings: Settings, key_id: str, count: int) -> list[Any]:  # noqa: F811
    """The key's audit rows, oldest first, once `count` are written (batched: <= ~0.5 s)."""
    with open_store(settings=settings) as store:
        for _ in range(100):
            rows = read_audit(store, key_id=key_id)
            if len(rows) >= count:
                return rows[::-1]
            time.sleep(0.1)
    raise AssertionError(f"{len(rows)} audit rows for {key_id}, expected {count}")


def test_every_request_is_audited_without_raw_identifiers_or_keys(
    http: httpx.Client, settings: Settings, villages: dict[str, str],  # noqa: F811
) -> None:
    key_id, key = make_key(settings, "township", [TOWNSHIP_A], label="access tests: audited")
    analyst_id, analyst = make_key(settings, "analyst", label="access tests: audited analyst")
    h = bearer(key)
    inside = next(k for k, v in villages.items() if v.startswith(TOWNSHIP_A))
    outside = next(k for k, v in villages.items() if v.startswith(TOWNSHIP_B))
    started = datetime.now(UTC) - timedelta(seconds=1)
    calls = [
        ("/score", {"as_of": AS_OF, "household_keys": [inside, outside, UNKNOWN, RAW_ID]}, 400),
        ("/score", {"as_of": AS_OF, "household_keys": [inside, outside, UNKNOWN]}, 200),
        ("/explain", {"as_of": AS_OF, "household_key": outside}, 404),
        ("/explain", {"as_of": AS_OF, "household_key": inside}, 200),
        ("/explain", {"as_of": AS_OF, "household_key": RAW_ID}, 400),
        ("/alerts", {"township": TOWNSHIP_A}, 200),
        ("/model", {}, 200),
    ]
    answers = []
    for route, body, status in calls:
        r = http.post(route, json=body, headers=h)
        assert r.status_code == status, (route, r.text)
        answers.append(r.json())
    r = http.post("/score", json={"as_of": AS_OF}, headers=bearer(key[:-64] + "f" * 64))
    assert r.status_code == 401
    assert http.post("/alerts", json={}, headers=bearer(analyst)).status_code == 403
    assert http.post("/explain", json={"as_of": AS_OF, "household_key": inside}).status_code \
        == 401

    rows = _audit_rows(settings, key_id, len(calls) + 1)
    assert [(r.endpoint, r.status, r.role, r.refusal) for r in rows] == [
        *((route, status, "township", None) for route, _, status in calls),
        ("/score", 401, None, "wrong secret"),
    ]
    alerted_here = [a["household_key"] for a in answers[5]["alerts"]]
    assert [(r.households_asked, r.households_answered) for r in rows] == [
        ([inside, outside, UNKNOWN], []),  # the raw ID number is never written
        ([inside, outside, UNKNOWN], [inside]),
        ([outside], []),
        ([inside], [inside]),
        ([], []),
        ([], list(dict.fromkeys(alerted_here))),
        ([], []),
        ([], []),
    ]
    assert all(r.at >= started for r in rows)
    (refused_analyst,) = _audit_rows(settings, analyst_id, 1)
    assert (refused_analyst.endpoint, refused_analyst.status, refused_analyst.role,
            refused_analyst.refusal) == ("/alerts", 403, "analyst", "role")
    with open_store(settings=settings) as store:
        anonymous = [r for r in read_audit(store, limit=5000)
                     if r.key_id is None and r.at >= started]
        used = {k.key_id: k.last_used_at for k in list_keys(store)}
        with store.engine.connect() as connection:
            everything = "\n".join(
                repr(tuple(row)) for table in ("api_keys", "api_audit")
                for row in connection.execute(text(f"SELECT * FROM {table}")))
    assert any((r.endpoint, r.status, r.refusal, r.households_asked) == (
        "/explain", 401, "no key", []) for r in anonymous)
    last_used = used[key_id]
    assert last_used is not None and last_used >= started
    for secret in (key, key[-64:], analyst, analyst[-64:], RAW_ID):
        assert secret not in everything
