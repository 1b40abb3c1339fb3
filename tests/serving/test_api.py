"""The scoring API: `RiskLookup` in-process on a real monthly workspace (ingest -> train ->
champion -> score -> alert store), then the real BentoML server as a subprocess."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from doudi import registry
from doudi.errors import UserError
from doudi.idnumber import make_id
from doudi.model_artifact import ModelArtifact
from doudi.months import Month
from doudi.settings import Settings
from features import scoring_table
from serving.api import (
    AlertFilters,
    BadRequestError,
    NotFoundError,
    RiskLookup,
    check_keys,
    key_problem,
)
from serving.explain import Explainer, county_medians, reference_rows
from serving.scoring import load_model, score
from serving.server import running_server
from serving.service import parse_as_of
from serving.store import list_alerts, open_store
from tests.serving.access_fixtures import bearer, platform_key  # noqa: F401  (a fixture)

AS_OF = "2025-06"  # the small world's last month, as an HTTP request names it
MONTH = Month.parse(AS_OF)
MONTH_END = MONTH.end
RAW_ID = make_id("620121", date(1980, 5, 17), 123)
RAW_HOUSEHOLD = "6201210010010007"  # village code + serial: the generator's 户编号
UNKNOWN = "h_" + "0" * 20
CJK = re.compile(r"[\u4e00-\u9fff]")
# the champion, its version label, the month's scoring table, `score`'s output
Expected = tuple[ModelArtifact, str, pd.DataFrame, pd.DataFrame]


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's temp root, shared by the xdist workers (each has a sub-folder of it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _champion_whatever_the_gate_said(made: Settings, raw: Path) -> None:
    """Ingest, train, and make version 1 champion by hand: the 300-household world's test
    block holds a handful of positives, too few for the gate's floor (which refuses it,
    tests/hostile/test_gate_floor.py); these tests need a champion, not a good one.
    `run_monthly` then finds it not due and scores with it."""
    import ingest
    from doudi import registry
    from training.job import train_monthly

    ingest.ingest(raw, made)
    train_monthly(made, MONTH)
    registry.client(made.tracking_uri()).set_registered_model_alias(
        registry.workspace(made).model_name, "champion", "1")


@pytest.fixture(scope="module")
def settings(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A workspace after `doudi monthly` as of 2025-06, built once per run (file lock)."""
    from jobs.monthly import run_monthly

    root = _shared_dir(tmp_path_factory)
    home = root / "api_workspace"
    made = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", workers=1)
    with (root / "api_workspace.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / ".ready").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            _champion_whatever_the_gate_said(made, small_world / "raw")
            run_monthly(made, MONTH, small_world / "raw")
            (home / ".ready").touch()
    return made


@pytest.fixture(scope="module")
def lookup(settings: Settings) -> Iterator[RiskLookup]:
    found = RiskLookup(settings)
    yield found
    found.close()


@pytest.fixture(scope="module")
def expected(settings: Settings) -> Expected:
    """`serving.scoring.score` on the month, computed here independently of the API."""
    artifact, version = load_model(registry.served_uri(settings), settings)
    table = scoring_table(settings.warehouse_dir, MONTH, settings)
    return (
        artifact,
        version,
        table,
        score(table, artifact, settings, MONTH_END, model_version=version),
    )


# -- in process ---------------------------------------------------------------------------
def test_without_keys_the_months_alerts_by_rank(
    lookup: RiskLookup, settings: Settings, expected: Expected
) -> None:
    _, version, _, scored = expected
    alerts = scored[scored["alerted"]].sort_values("rank")
    got = lookup.score(MONTH)
    assert got.as_of == MONTH_END.isoformat()
    assert got.model_version == version == f"{registry.workspace(settings).model_name}/1"
    assert got.in_scope == len(scored) and got.alerted == len(alerts) > 0 and not got.missing
    assert [h.household_key for h in got.households] == alerts["household_key"].tolist()
    assert [h.risk for h in got.households] == alerts["risk"].tolist()
    assert [h.rank for h in got.households] == alerts["rank"].tolist()
    assert [h.tier for h in got.households] == alerts["tier"].tolist()
    assert all(h.alerted and h.tier != "none" for h in got.households)
    assert [[r.text_zh for r in h.reasons] for h in got.households] == [
        [r.text_zh for r in reasons] for reasons in alerts["reasons"]
    ]
    # the same households `doudi monthly` stored as alerts for the month
    with open_store(settings=settings) as store:
        stored = list_alerts(store)
    assert set(stored["household_key"]) == {h.household_key for h in got.households}
    assert lookup.score(MONTH, limit=3).households == got.households[:3]
    # a date in the month is the month
    assert lookup.score(parse_as_of("2025-06-12"), limit=3).households == got.households[:3]


def test_requested_households_get_reasons_on_demand(lookup: RiskLookup, expected: Expected) -> None:
    artifact, _, table, scored = expected
    quiet = scored[~scored["alerted"]].sort_values("rank").head(6)
    alerted = scored[scored["alerted"]].iloc[0]
    keys = [
        *quiet["household_key"],
        UNKNOWN,
        alerted["household_key"],
        quiet["household_key"].iloc[0],
    ]  # repeated: answered once
    got = lookup.score(MONTH, keys)
    assert got.missing == [UNKNOWN]
    assert [h.household_key for h in got.households] == [
        *quiet["household_key"],
        alerted["household_key"],
    ]
    assert [h.risk for h in got.households[:-1]] == quiet["risk"].tolist()
    rows = quiet.index.to_numpy()
    contributions = artifact.contributions(table.iloc[rows])[:, :-1]
    for h, positive in zip(
        got.households[:-1], np.clip(contributions, 0, None).sum(axis=1), strict=True
    ):
        assert not h.alerted and h.tier == "none" and h.risk_types == []
        assert 1 <= len(h.reasons) <= lookup.settings.max_reasons
        assert [r.rank for r in h.reasons] == list(range(1, len(h.reasons) + 1))
        assert sum(r.margin_logodds for r in h.reasons) <= positive + 1e-9
        # points (below the base risk too) are proportional to log-odds within a household
        assert all(r.margin_logodds > 0 for r in h.reasons)
        assert all(r.contribution_pp is not None and "对数几率" not in r.text_zh
                   for r in h.reasons)
        per_logodds = [(r.contribution_pp or 0.0) / r.margin_logodds for r in h.reasons]
        assert max(per_logodds) == pytest.approx(min(per_logodds), rel=1e-9)
        assert all(CJK.search(r.text_zh) for r in h.reasons)
    # exactly what `score` writes for an alert: county medians at T as comparison values
    explainer = Explainer(artifact, max_reasons=lookup.settings.max_reasons)
    reference = reference_rows(
        county_medians(table, artifact.feature_names), table["county_code"].to_numpy()[rows]
    )
    again = explainer.explain(table.iloc[rows], reference=reference)
    assert [[r.text_zh for r in h.reasons] for h in got.households[:-1]] == [
        [r.text_zh for r in reasons] for reasons in again
    ]
    one = lookup.explain(MONTH, quiet["household_key"].iloc[0])
    assert one == got.households[0]
    plain = lookup.score(MONTH, keys, explain=False)
    assert all(h.reasons == [] for h in plain.households)
    assert [h.risk for h in plain.households] == [h.risk for h in got.households]


def test_raw_identifiers_and_bad_input_are_rejected(lookup: RiskLookup) -> None:
    raw = {
        "an ID number": RAW_ID,
        "an old 15-digit ID": RAW_ID[:6] + RAW_ID[8:17],
        "a household number": RAW_HOUSEHOLD,
    }
    for what, value in raw.items():
        with pytest.raises(BadRequestError, match="pseudonyms only") as err:
            lookup.score(MONTH, [UNKNOWN, value])
        assert value not in str(err.value), f"{what} echoed back"
        assert "household_keys[1]" in str(err.value)
    with pytest.raises(BadRequestError, match="pseudonyms only"):
        lookup.explain(MONTH, RAW_ID)
    assert "person pseudonym" in str(key_problem("p_" + "a" * 20))
    assert "lowercase" in str(key_problem("h_" + "A" * 20))
    assert key_problem("h_" + "0123456789abcdef0123") is None
    for month in ("2025/06", "2025-13", "June", "2025-02-30", "25-06", "", "0000-01"):
        with pytest.raises(BadRequestError, match="as_of"):
            parse_as_of(month)
    with pytest.raises(BadRequestError, match="empty"):
        lookup.score(MONTH, [])
    with pytest.raises(BadRequestError, match="at most 2"):
        check_keys([UNKNOWN] * 3, max_households=2)
    with pytest.raises(BadRequestError, match="limit"):
        lookup.score(MONTH, limit=0)
    assert parse_as_of("2025-06-12") == parse_as_of("2025-06") == MONTH


def test_months_without_data_are_not_found(lookup: RiskLookup) -> None:
    with pytest.raises(NotFoundError, match="no in-scope households"):
        lookup.score(Month.parse("2019-01"))  # before the first delivery
    with pytest.raises(NotFoundError, match=r"as_of 2025-07: .* latest delivered month is 2025-06"):
        lookup.score(MONTH + 1)  # not delivered yet: scoring it would pass old data off as new
    with pytest.raises(BadRequestError, match=r"as_of .* is in the future"):
        lookup.score(Month.today() + 1)
    with pytest.raises(NotFoundError, match="not in scope"):
        lookup.explain(MONTH, UNKNOWN)


def test_model_info_and_alert_store(
    lookup: RiskLookup, settings: Settings, expected: Expected
) -> None:
    info = lookup.model_info()
    assert info.model_version == f"{registry.workspace(settings).model_name}/1"
    assert info.model_as_of.startswith("2025-06")
    assert info.feature_count == len(expected[0].feature_names) > 0
    assert info.feature_registry_version and info.calibration_method
    page = lookup.alerts()
    alerts = [a.model_dump() for a in page.alerts]
    assert page.next_cursor is None
    with open_store(settings=settings) as store:
        stored = list_alerts(store)
    assert [a["alert_id"] for a in alerts] == stored["alert_id"].tolist()
    first = alerts[0]
    assert first["as_of"] == MONTH_END.isoformat() and first["status"] == "dispatched"
    assert isinstance(first["risk_types"], list) and isinstance(first["departments"], list)
    township = first["township_code"]
    mine = lookup.alerts(AlertFilters.check(township=township, status="dispatched"),
                         limit=2).alerts
    assert 1 <= len(mine) <= 2 and {a.township_code for a in mine} == {township}
    with pytest.raises(BadRequestError, match="status"):
        AlertFilters.check(status="opened")
    with pytest.raises(BadRequestError, match="township"):
        AlertFilters.check(township="6201")


def test_a_new_champion_is_picked_up(settings: Settings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    shutil.copy(settings.home / "mlflow.db", tmp_path / "mlflow.db")  # leave the shared one
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    now = [0.0]
    mine = settings.model_copy(update={"mlflow_tracking_uri": uri, "api_model_refresh_seconds": 60})
    lookup = RiskLookup(mine, clock=lambda: now[0])
    name = registry.workspace(settings).model_name
    assert lookup.score(MONTH, limit=1).model_version == f"{name}/1"

    client = MlflowClient(tracking_uri=uri)
    current = client.get_model_version(name, "1")
    # a version without this workspace's record: the refresh refuses it, keeps serving 1
    foreign = client.create_model_version(name, str(current.source), run_id=current.run_id)
    client.set_registered_model_alias(name, "champion", foreign.version)
    now[0] = 61.0
    lookup.model_info()  # due: the refresh starts in the background
    lookup.wait_for_refresh()
    assert lookup.model_info().model_version == f"{name}/1"
    new = client.create_model_version(name, str(current.source), run_id=current.run_id,
                                      tags=dict(current.tags))
    client.set_registered_model_alias(name, "champion", new.version)

    now[0] = 90.0  # not due yet: still the cached month of version 1
    assert lookup.score(MONTH, limit=1).model_version == f"{name}/1"
    now[0] = 122.0
    assert lookup.model_info().model_version == f"{name}/1"  # answered now, refreshed behind
    lookup.wait_for_refresh()
    assert lookup.model_info().model_version == f"{name}/{new.version}"
    again = lookup.score(MONTH, limit=1)
    assert again.model_version == f"{name}/{new.version}"
    assert again.households[0].model_version == again.model_version  # rescored, not cached
    # refresh 0: every call re-resolves
    eager = RiskLookup(mine.model_copy(update={"api_model_refresh_seconds": 0}))
    client.set_registered_model_alias(name, "champion", "1")
    eager.model_info()
    eager.wait_for_refresh()
    assert eager.model_info().model_version == f"{name}/1"


def test_serve_command_wiring(tmp_path: Path) -> None:
    from serving.server import check_model, server_command, server_environment

    s = Settings(home=tmp_path / "ws", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    env = server_environment(s, {"PATH": "/bin", "DOUDI_CONFIG": "doudi.toml"})
    assert env["DOUDI_HOME"] == str(s.home) and Path(env["DOUDI_HOME"]).is_absolute()
    assert env["BENTOML_HOME"] == str(s.home / "bentoml")
    assert env["BENTOML_DO_NOT_TRACK"] == env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert Path(env["DOUDI_CONFIG"]).is_absolute() and env["PATH"] == "/bin"
    argv = server_command("127.0.0.1", 3000)
    assert argv[-6:] == [
        "serve",
        "serving.service:DoudiRisk",
        "--host",
        "127.0.0.1",
        "--port",
        "3000",
    ]
    with pytest.raises(UserError, match=r"no pseudonym key at .*run `doudi ingest` first"):
        check_model(s)
    s.key_file.parent.mkdir(parents=True)
    s.key_file.write_bytes(b"k" * 32)
    s.key_file.chmod(0o600)
    with pytest.raises(UserError, match="no model at models:/doudi-risk-ee90fdfc@champion"):
        check_model(s)


# -- the real server ----------------------------------------------------------------------
def _error(response: httpx.Response) -> str:
    """The message of a 4xx body: BentoML 1.4 answers `[{"error": ...}]` for its own
    exceptions and `{"error": ..., "detail": ...}` for schema errors."""
    body = response.json()
    return str((body[0] if isinstance(body, list) else body)["error"])


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`bentoml serve serving.service:DoudiRisk` on a free port; stopped afterwards."""
    log = tmp_path / "server.log"
    try:
        with running_server(settings, log, extra_env={"DOUDI_WORKERS": "1"}) as server:
            yield server.base_url, log
    except RuntimeError as err:  # did not start: the log's end says why
        pytest.fail(str(err))


def test_the_real_server_agrees_with_the_lookup(
    server: tuple[str, Path], lookup: RiskLookup, expected: Expected,
    platform_key: str,  # noqa: F811
) -> None:
    base, log = server
    scored = expected[3]
    quiet = scored[~scored["alerted"]].sort_values("rank")["household_key"].head(3).tolist()
    with httpx.Client(base_url=base, timeout=60, headers=bearer(platform_key)) as http:

        def post(route: str, body: dict[str, Any]) -> httpx.Response:
            return http.post(route, json=body)

        r = post("/score", {"as_of": AS_OF})
        assert r.status_code == 200, r.text
        assert r.json() == lookup.score(MONTH).model_dump(mode="json")
        body = {"as_of": AS_OF, "household_keys": [*quiet, UNKNOWN]}
        r = post("/score", body)
        assert r.status_code == 200, r.text
        assert r.json() == lookup.score(MONTH, [*quiet, UNKNOWN]).model_dump(mode="json")
        assert r.json()["missing"] == [UNKNOWN]
        r = post("/explain", {"as_of": AS_OF, "household_key": quiet[0]})
        assert r.status_code == 200, r.text
        assert r.json() == lookup.explain(MONTH, quiet[0]).model_dump(mode="json")
        r = post("/model", {})
        assert r.status_code == 200, r.text
        mine = lookup.model_info().model_dump(mode="json")
        for key in (
            "model_version",
            "model_as_of",
            "feature_count",
            "calibration_method",
            "feature_registry_version",
        ):
            assert r.json()[key] == mine[key]
        assert r.json()["cached_as_of"] == MONTH_END.isoformat()
        r = post("/alerts", {"limit": 5})
        assert r.status_code == 200, r.text
        assert r.json() == lookup.alerts(limit=5).model_dump(mode="json")

        # errors: 400 for raw identifiers (never echoed, never logged), 404 for no data
        r = post("/score", {"as_of": AS_OF, "household_keys": [RAW_ID]})
        assert r.status_code == 400 and "pseudonyms only" in _error(r)
        r = post("/score", {"as_of": AS_OF, "household_keys": [int(RAW_HOUSEHOLD)]})
        assert r.status_code == 400  # a number where a pseudonym belongs: schema error
        r = post("/explain", {"as_of": AS_OF, "household_key": RAW_ID})
        assert r.status_code == 400 and RAW_ID not in r.text
        r = post("/score", {"as_of": "2019-01"})
        assert r.status_code == 404 and "no in-scope households" in _error(r)
        r = post("/score", {"as_of": "2025-07"})
        assert r.status_code == 404 and "latest delivered month is 2025-06" in _error(r)
        r = post("/score", {"as_of": str(Month.today() + 1)})
        assert r.status_code == 400 and "in the future" in _error(r)
        r = post("/score", {"as_of": "0000-01"})
        assert r.status_code == 400 and "as_of" in _error(r)
        r = post("/score", {"as_of": "2025/06"})
        assert r.status_code == 400 and "as_of" in _error(r)
        r = post("/score", {"as_of": AS_OF, "households": [UNKNOWN]})  # a typo in a field
        assert r.status_code == 400 and "households" not in r.text  # counted, never named
        assert "1 unknown field(s); this endpoint takes only: as_of, household_keys" in r.text
    text = log.read_text(encoding="utf-8", errors="replace")
    assert RAW_ID not in text and RAW_HOUSEHOLD not in text
    # every 4xx above is one WARNING line (method, route, status, field: rule), no stack
    assert "Traceback" not in text and "Exception on" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if " -> 4" in line]
    assert all("WARNING" in line for line in lines), lines
    for expected_line in (
        "POST /score -> 400 (household_keys: InvalidArgument)",
        "POST /score -> 400 (household_keys.0: string_type)",
        "POST /score -> 404 (as_of: NotFound)",
        "POST /score -> 400 (as_of: InvalidArgument)",
        "POST /score -> 400 (body: unknown_field)",
        "POST /explain -> 400 (household_keys: InvalidArgument)",
    ):
        assert any(expected_line in line for line in lines), (expected_line, lines)
    assert "2025/06" not in text and "0000-01" not in text  # request content never logged


def test_the_cached_month_is_kept_out_of_the_cyclic_collector(lookup: RiskLookup) -> None:
    import gc

    gc.unfreeze()
    lookup._month = None  # the next request builds the month again
    lookup.score(MONTH, limit=1)
    # millions of cached objects frozen: no full collection walks them every ~20 s
    assert gc.get_freeze_count() > 10_000
    gc.unfreeze()
