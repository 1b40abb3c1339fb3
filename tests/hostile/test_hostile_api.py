"""Hostile input against the real API server (`bentoml serve`, issue #11): request content
is never echoed in an answer or the server log, malformed bodies are 4xx (never 5xx),
bodies are bounded (413) and unknown URL paths do not grow /metrics.

One server per module (per xdist worker), on the workspace of tests/serving/test_api.py."""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from doudi.settings import Settings
from serving.api_models import BadRequestError
from serving.server import RunningServer, _started, running_server
from serving.service import OTHER, metric_label, parse_as_of
from tests.serving.access_fixtures import bearer, platform_key  # noqa: F401  (a fixture)
from tests.serving.test_api import (  # the shared monthly workspace (built once per run)
    AS_OF,
    RAW_HOUSEHOLD,
    RAW_ID,
    UNKNOWN,
    _error,
    settings,  # noqa: F401  (the fixture)
)

NAME = "王小明"  # a name where a pseudonym or a month belongs
SECRETS = (RAW_ID, RAW_HOUSEHOLD, NAME, "x" + RAW_ID)
ROUTES = ("/score", "/explain", "/model", "/alerts", "/score_fresh", "/verdicts", "/referrals")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(
    settings: Settings,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("hostile_api") / "server.log"
    try:
        with running_server(settings, log, extra_env={"DOUDI_WORKERS": "1"}) as running:
            worker = _worker(running)
            began = _started(worker)
            yield running
    except RuntimeError as err:  # did not start: the log's end says why
        pytest.fail(str(err))
    assert _started(worker) != began, "the server's worker outlived it"


@pytest.fixture(scope="module")
def http(server: RunningServer, platform_key: str) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=server.base_url, timeout=120,
                      headers=bearer(platform_key)) as client:
        assert client.post("/score", json={"as_of": AS_OF, "limit": 1}).status_code == 200
        yield client  # the month is scored and cached: valid bodies are quick lookups


def _log(server: RunningServer) -> str:
    time.sleep(0.3)  # the access log line follows the answer
    return server.log_path.read_text(encoding="utf-8", errors="replace")


def assert_log_clean(server: RunningServer, *secrets: str) -> None:
    """No request content in the log; every 4xx is one WARNING line; no stack."""
    text = _log(server)
    for secret in (*SECRETS, *secrets):
        assert secret not in text, f"{secret!r} is in the server log"
    assert "Traceback" not in text and "Exception on" not in text, text[-3000:]
    refused = [line for line in text.splitlines() if " -> 4" in line]
    assert all("[WARNING]" in line for line in refused), refused[:5]


def _multipart(boundary: str, declared: str, name: str, value: str) -> tuple[bytes, dict[str, str]]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    return body, {"content-type": f"multipart/form-data; boundary={declared}"}


# -- nothing echoed ------------------------------------------------------------------------
def test_field_names_and_values_are_never_echoed(http: httpx.Client, server: RunningServer) -> None:
    json_bodies: list[tuple[str, Any]] = [
        ("/score", {RAW_ID: 1}),
        ("/score", {RAW_ID: 1, "as_of": AS_OF}),
        ("/score", {"x" + RAW_ID: NAME, "as_of": AS_OF}),  # shaped like a field name
        ("/model", {RAW_ID: RAW_HOUSEHOLD}),
        ("/alerts", {NAME: 1}),
        ("/score", {"as_of": RAW_ID}),
        ("/score", {"as_of": NAME}),
        ("/score", {"as_of": AS_OF + "\x00" + RAW_ID}),
        ("/score", {"as_of": {RAW_ID: NAME}}),
        ("/score", {"as_of": AS_OF, "household_keys": [UNKNOWN, RAW_ID, RAW_HOUSEHOLD, NAME]}),
        ("/score", {"as_of": AS_OF, "household_keys": [{RAW_ID: NAME}]}),
        ("/score", {"as_of": AS_OF, "household_keys": RAW_ID}),
        ("/score", {"as_of": AS_OF, "limit": RAW_ID}),
        ("/explain", {"as_of": AS_OF, "household_key": NAME}),
        ("/explain", {"as_of": AS_OF, "household_key": RAW_ID}),
        ("/alerts", {"township": NAME}),
        ("/alerts", {"township": RAW_ID}),
        ("/alerts", {"status": NAME}),
        ("/alerts", {"limit": int(RAW_ID[:17])}),
        ("/alerts", {"division": RAW_ID}),
        ("/alerts", {"cursor": RAW_ID}),
        ("/alerts", {"month": NAME}),
        ("/score_fresh", {"as_of": AS_OF, "household_key": RAW_ID}),
        ("/score_fresh", {"as_of": AS_OF, "household_key": UNKNOWN,
                          "rows": {RAW_ID: [{NAME: RAW_HOUSEHOLD}]}}),
        ("/score_fresh", {"as_of": AS_OF, "household_key": UNKNOWN,
                          "rows": {"medical": [{RAW_ID: NAME, "person_id": RAW_ID}]}}),
        ("/verdicts", {"verdicts": [{"alert_id": 1, "verdict": NAME, "visited_on": RAW_ID,
                                     "caseworker": RAW_ID, "note": RAW_ID}]}),
        ("/verdicts", {"verdicts": [{"alert_id": 1, RAW_ID: NAME}]}),
        ("/referrals", {"alert_id": 1, "referred_on": RAW_ID}),
        ("/referrals", {"alert_id": 1, "referred_on": "2025-07-01",
                        "current_assistance": [RAW_ID]}),
    ]
    for route, body in json_bodies:
        r = http.post(route, json=body)
        assert r.status_code == 400, (route, body, r.text)
        for secret in SECRETS:
            assert secret not in r.text, (route, body, r.text)
    # an unknown field is counted, never named: not in `loc`, not in the message
    r = http.post("/score", json={RAW_ID: 1, "as_of": AS_OF})
    detail = r.json()["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == [("unknown_field", [])]
    assert "1 unknown field(s)" in detail[0]["msg"] and "as_of" in detail[0]["msg"]
    r = http.post("/score", json={"as_of": NAME})
    assert _error(r) == "as_of: not a month; use YYYY-MM"

    # not JSON at all: bad JSON, other content types, form and multipart bodies
    raw: list[tuple[bytes, dict[str, str]]] = [
        (b'{"' + RAW_ID.encode(), JSON),
        (b'{"as_of": "' + NAME.encode(), JSON),
        (json.dumps({RAW_ID: NAME}).encode(), {"content-type": "text/plain"}),
        (f"{RAW_ID}={NAME}".encode(), {"content-type": "application/x-www-form-urlencoded"}),
        _multipart("b0undary", "b0undary", RAW_ID, NAME),
        _multipart("b0undary", "other", RAW_ID, NAME),  # bad boundary: was a 500
        _multipart("b0undary", "", RAW_ID, NAME),
        (b"\x80\x04K\x01.", {"content-type": "application/vnd.bentoml+pickle"}),
        (json.dumps({"as_of": AS_OF}).encode(), {"content-type": f"text/{RAW_ID}"}),
    ]
    for content, headers in raw:
        for route in ROUTES:
            r = http.post(route, content=content, headers=headers)
            assert r.status_code in (400, 415), (route, content[:60], r.status_code, r.text)
            for secret in SECRETS:
                assert secret not in r.text, (route, content[:60], r.text)
    r = http.post(
        "/score",
        content=_multipart("b", "c", "as_of", AS_OF)[0],
        headers=_multipart("b", "c", "as_of", AS_OF)[1],
    )
    assert r.status_code == 415 and "JSON" in _error(r)
    assert_log_clean(server)


def test_as_of_year_zero_is_a_400(http: httpx.Client, server: RunningServer) -> None:
    r = http.post("/score", json={"as_of": "0000-01"})
    assert r.status_code == 400 and _error(r) == "as_of: year 0000 is outside 1900-2999"
    r = http.post("/explain", json={"as_of": "0000-01-01", "household_key": UNKNOWN})
    assert r.status_code == 400
    assert "0000-01" not in _log(server)


# -- never a 5xx ---------------------------------------------------------------------------
def test_malformed_bodies_are_4xx(http: httpx.Client, server: RunningServer) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    bodies: list[bytes] = [
        b'{"as_of": "2025-0',  # truncated
        b'{"as_of": "2025-06", "limit": ' + b"9" * 10_000 + b"}",  # beyond any int
        b'{"as_of": "2025-06", "limit": ' + b"9" * 4_000 + b"}",  # a big int that parses
        b'{"as_of": "2025-06", "limit": 1e400}',
        b'{"as_of": "2025-06", "limit": -1e400}',
        b'{"as_of": "2025-06", "limit": NaN}',
        b'{"as_of": "2025-06", "household_keys": ' + deep + b"}",
        b'{"as_of": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        json.dumps({"as_of": "x" * 1_000_000}).encode(),  # 1 MB string, under the limit
        json.dumps({"as_of": AS_OF, "household_keys": ["\x00" * 64]}).encode(),
        json.dumps({"as_of": "2025\x00-06"}).encode(),
        json.dumps({"as_of": AS_OF, "household_keys": ["h_" + "0" * 20] * 5001}).encode(),
        json.dumps({"as_of": AS_OF, "household_keys": []}).encode(),
        json.dumps({"as_of": AS_OF, "explain": "maybe"}).encode(),
        json.dumps({"as_of": 202506}).encode(),
        json.dumps({"as_of": None}).encode(),
        json.dumps({"as_of": "9999-12"}).encode(),
        json.dumps({"as_of": "2025-02-30"}).encode(),
        b'{"as_of": "2025-06", "as_of": "nope"}',  # duplicate key: the last one wins
        b"\xef\xbb\xbf" + json.dumps({"as_of": AS_OF}).encode(),  # BOM
        b'{"as_of": "\xff\xfe"}',  # not UTF-8
        b"[]",
        b'"2025-06"',
        b"null",
        b"1",
        b"{",
        b"\x00" * 100,
    ]
    for route in ("/score", "/explain", "/alerts"):
        for body in bodies:
            r = http.post(route, content=body, headers=JSON)
            assert 400 <= r.status_code < 500, (route, body[:80], r.status_code, r.text[:300])
    for route in ROUTES:  # an empty body is `{}`: only /model needs nothing
        r = http.post(route, content=b"", headers=JSON)
        assert r.status_code == (200 if route in ("/model", "/alerts") else 400), route
    assert http.get("/readyz").status_code == 200
    assert_log_clean(server)


_SECRET = st.sampled_from(SECRETS)
_KEY = (
    st.sampled_from(
        ["as_of", "household_keys", "household_key", "explain", "limit", "township", "status"]
    )
    | _SECRET
)
_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([AS_OF, "2025-06-15", "0000-01", UNKNOWN, ""])
    | _SECRET
    | st.text(max_size=20)
)
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEY, inner, max_size=3),
    max_leaves=8,
)


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), body=st.dictionaries(_KEY, _VALUE, max_size=5))
def test_any_json_object_gets_an_answer_and_no_echo(
    http: httpx.Client, route: str, body: dict[str, Any]
) -> None:
    r = http.post(route, json=body)
    assert r.status_code in (200, 400, 404), (route, body, r.status_code, r.text[:300])
    if r.status_code != 200:
        for secret in SECRETS:
            assert secret not in r.text, (route, body, r.text)


# -- bounded bodies ------------------------------------------------------------------------
def _worker(server: RunningServer) -> int:
    """The pid of the BentoML worker (the process that reads bodies): circus starts it as a
    child of `bentoml serve`, in a session of its own."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # not a process, or gone
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.process.pid and b"_bentoml_impl.worker" in cmdline:
            found.append(int(proc.name))
    assert len(found) == 1, found
    return found[0]


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_bodies_over_the_limit_are_413_and_never_read(
    http: httpx.Client,
    server: RunningServer,
    settings: Settings,  # noqa: F811
) -> None:
    limit = settings.api_max_body_bytes
    assert limit == 1_048_576  # the default: ~8x the largest valid request (5,000 keys)
    worker = _worker(server)
    before = _peak_rss(worker)
    r = http.post("/score", content=b"x" * (limit + 1), headers=JSON)  # Content-Length
    assert r.status_code == 413 and "api_max_body_bytes" in _error(r)
    r = http.post("/nowhere", content=b"x" * (limit + 1))  # any path: refused before routing
    assert r.status_code == 413
    chunk = b'{"as_of": "' + b"x" * (1 << 20)

    def chunked(megabytes: int) -> Iterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(megabytes):
            yield chunk

    for _ in range(3):
        r = http.post("/score", content=chunked(200), headers=JSON)
        assert r.status_code == 413, r.text
    # the 200 MB bodies were never held: the worker's peak memory barely moved
    assert _peak_rss(worker) - before < 64 << 20, (before, _peak_rss(worker))
    # a body just under the limit is read and answered
    r = http.post("/score", json={"as_of": "x" * (limit - 100)})
    assert r.status_code == 400 and _error(r) == "as_of: not a month; use YYYY-MM"
    assert http.post("/score", json={"as_of": AS_OF, "limit": 1}).status_code == 200
    assert_log_clean(server)


# -- bounded /metrics ----------------------------------------------------------------------
def test_unknown_paths_do_not_grow_metrics(http: httpx.Client, server: RunningServer) -> None:
    rng = random.Random(11)
    http.get("/warm-up")  # the first unknown path adds the `other` series (one per status)
    http.post("/warm-up", json={})
    before = http.get("/metrics").text
    paths = ["/" + "".join(rng.choices(string.ascii_lowercase, k=14)) for _ in range(200)]
    for i, path in enumerate(paths):
        r = http.get(path) if i % 2 else http.post(path, json={})
        assert r.status_code == 404, (path, r.status_code)
    after = http.get("/metrics").text
    # only counter values changed (was: ~3.6 kB of new series per path)
    assert len(after) - len(before) < 2_000, (len(before), len(after))
    assert not any(path in after for path in paths)
    odd = [
        f"/{RAW_ID}",
        f"/score/{RAW_ID}",
        "/static_content/" + RAW_HOUSEHOLD,
        f"/explain/{UNKNOWN}",
        "/%E7%8E%8B%E5%B0%8F%E6%98%8E",
        "/../../etc/passwd",
        "/score/",  # 307 to /score
        "/SCORE",
        "/metrics/x",
    ]
    for path in odd:
        assert http.post(path, json={}).status_code in (404, 405, 307), path
        assert http.get(path).status_code in (404, 405, 307), path
    after = http.get("/metrics").text
    labels = set(re.findall(r'endpoint="([^"]*)"', after))
    assert labels <= {
        *ROUTES,
        "/",
        "/docs.json",
        "/metrics",
        "/livez",
        "/readyz",
        "/static_content",
        "other",
    }, labels
    assert RAW_ID not in after and RAW_HOUSEHOLD not in after
    # the known routes still route: the Swagger UI, its files, the schema, the probes
    for path in ("/", "/docs.json", "/static_content/swagger-ui.css", "/livez", "/readyz"):
        assert http.get(path).status_code == 200, path
    log = _log(server)
    assert "path=other" in log and not any(path in log for path in paths)
    assert_log_clean(server)


# -- in process: the messages and labels themselves ----------------------------------------
_RULE = re.compile(
    r"as_of: (not a month; use YYYY-MM|no such day; use YYYY-MM"
    r"|month \d\d is not 01-12; use YYYY-MM|year \d{4} is outside 1900-2999)"
)


@hsettings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30) | st.from_regex(r"\d{4}-\d{2}(-\d{2})?", fullmatch=True))
def test_as_of_errors_name_the_rule_never_the_value(text: str) -> None:
    try:
        parse_as_of(text)
    except BadRequestError as err:
        assert _RULE.fullmatch(str(err)), str(err)  # no room for the value itself


def test_metric_labels_are_the_routes_or_other() -> None:
    routes = frozenset(ROUTES)
    assert [metric_label(p, routes) for p in ROUTES] == list(ROUTES)
    for known in ("/", "/docs.json", "/metrics", "/livez", "/readyz"):
        assert metric_label(known, routes) == known
    assert metric_label("/static_content/swagger-ui.css", routes) == "/static_content"
    for unknown in (f"/{RAW_ID}", "/score/", "/score/x", "/SCORE", "", "/static_content"):
        assert metric_label(unknown, routes) == OTHER
