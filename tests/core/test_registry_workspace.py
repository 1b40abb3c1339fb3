"""A workspace never uses another workspace's model (`doudi.registry`).

Unit tests of the fingerprint, names and URI parsing; then two workspaces (their own
province and pseudonym key) sharing ONE MLflow store, driven through the real `doudi`
command line (`jobs.cli.main`, in process: exit code and stderr as an operator sees them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doudi import registry
from doudi.errors import UserError
from doudi.registry import ModelRef, Workspace
from doudi.settings import Settings
from tests.jobs.cli import Result, refused
from tests.jobs.cli import doudi as run_doudi
from tests.training.conftest import mlflow_template  # noqa: F401  (a fixture)

AS_OF = "2025-06"  # the small worlds' last month


# -- units ------------------------------------------------------------------------------------
def test_fingerprint_is_hmac_of_the_key_hand_checked() -> None:
    # hmac.new(b"k" * 32, b"doudi-workspace", "sha256").hexdigest()[:12], computed once
    assert registry.fingerprint_of(b"k" * 32) == "ee90fdfca969"
    assert registry.fingerprint_of(bytes(range(32))) == "d86c5b2a2c50"
    ws = Workspace.from_key(b"k" * 32)
    assert (ws.model_name, ws.short) == ("doudi-risk-ee90fdfc", "ee90fdfc")
    assert ws.champion_uri == "models:/doudi-risk-ee90fdfc@champion"
    assert Workspace.from_key(b"k" * 32, "shared").model_name == "shared"


def test_workspace_comes_from_the_pseudonym_key(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "ws")
    with pytest.raises(UserError, match=r"^no pseudonym key at .*run `doudi ingest` first$"):
        registry.workspace(s)
    s.key_file.parent.mkdir(parents=True)
    s.key_file.write_bytes(b"short")
    s.key_file.chmod(0o644)
    # a key other users could read is refused before it is used (train, score, serve too)
    with pytest.raises(UserError, match=r"pseudonym key is open to other users .*chmod 600"):
        registry.workspace(s)
    s.key_file.chmod(0o600)
    with pytest.raises(UserError, match="shorter than 32 bytes"):
        registry.workspace(s)
    s.key_file.write_bytes(b"k" * 32)
    assert registry.workspace(s) == Workspace("ee90fdfca969", "doudi-risk-ee90fdfc")
    # the API follows the workspace unless told otherwise; the name can be pinned
    assert s.api_model_uri is None
    assert registry.served_uri(s) == "models:/doudi-risk-ee90fdfc@champion"
    pinned = s.model_copy(update={"model_name": "risk-gansu", "api_model_uri": "/m"})
    assert registry.workspace(pinned).model_name == "risk-gansu"
    assert registry.served_uri(pinned) == "/m"


@pytest.mark.parametrize(("uri", "ref"), [
    ("models:/doudi-risk-1a2b3c4d@champion", ModelRef("doudi-risk-1a2b3c4d", alias="champion")),
    ("models:/m/12", ModelRef("m", version="12")),
    ("/srv/models/v3", None),
    ("runs:/abc/model", None),
])
def test_parse_uri(uri: str, ref: ModelRef | None) -> None:
    assert registry.parse_uri(uri) == ref


@pytest.mark.parametrize("uri", ["models:/", "models:/m", "models:/m/v1", "models:/m@a/1",
                                 "models:/m/1/2", "models:/m/latest"])
def test_parse_uri_refuses_malformed(uri: str) -> None:
    with pytest.raises(UserError, match=r"expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        registry.parse_uri(uri)


_PART = st.text(st.characters(categories=["L", "N"], include_characters="-_."), min_size=1,
                max_size=20)


@given(name=_PART, alias=_PART, number=st.integers(0, 10**6))
def test_parse_uri_round_trips(name: str, alias: str, number: int) -> None:
    for ref in (ModelRef(name, alias=alias), ModelRef(name, version=str(number))):
        assert registry.parse_uri(ref.uri) == ref


def test_check_meta_one_line_refusals() -> None:
    ours = Workspace.from_key(b"k" * 32)
    registry.check_meta({"workspace": ours.fingerprint}, ours, "m/1")  # ours: fine
    with pytest.raises(UserError) as other:
        registry.check_meta({"workspace": "9f8e7d6c5b4a"}, ours, "m/3")
    assert str(other.value) == ("model m/3 belongs to workspace 9f8e7d6c…, not this one "
                                "(ee90fdfc…); use this workspace's own models "
                                "(doudi models list)")
    with pytest.raises(UserError, match=r"^model /x has no workspace record .*retrain"):
        registry.check_meta({"as_of": "2025-06"}, ours, "/x")
    meta: dict[str, object] = {}
    registry.stamp(meta, ours, ["620102", "620101", "620102"])
    assert meta == {"workspace": "ee90fdfca969", "counties": ["620101", "620102"]}
    assert registry.version_tags(ours, ["b", "a"]) == {"workspace": "ee90fdfca969",
                                                      "counties": "a,b"}


# -- two workspaces, one tracking store ---------------------------------------------------------
def doudi(home: Path, store: str, *args: str, **extra_env: str) -> Result:
    """`doudi ARGS` in workspace `home` with the shared tracking store `store`.

    The two workspaces are built once per run and shared by both xdist workers, so one
    worker's `promote` may hold the lock the other's `score` needs: a command that finds
    the workspace busy waits its turn (as `--wait` would) instead of failing the test."""
    deadline = time.monotonic() + 180
    while True:
        done = run_doudi(home, *args, store=store, **extra_env)
        if " is busy: " not in done.err or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


@dataclass
class World:
    a: Path  # workspace homes
    b: Path
    store: str  # the shared tracking URI
    a_ws: Workspace
    b_ws: Workspace
    b_saw_before_training: str | None  # B's monthly "due" check after only A had trained

    def settings(self, home: Path, **update: object) -> Settings:
        return Settings(home=home, mlflow_tracking_uri=self.store, workers=1, **update)


def _build(root: Path, small_world: Path, template: Path) -> str | None:
    """A (the small world) and B (its own province) ingest and train into one store;
    returns what B's monthly "due" check saw when only A had trained."""
    from jobs.monthly import champion_as_of
    from province import simulate

    shutil.copy(template, root / "mlflow.db")
    store = f"sqlite:///{root / 'mlflow.db'}"
    # B: a province of its own (another seed), its own key
    simulate(root / "province_b", settings=Settings(), households=300, months=30,
             start="2023-01", seed=12)
    for home, raw in ((root / "a", small_world / "raw"), (root / "b", root / "province_b" / "raw")):
        assert doudi(home, store, "ingest", str(raw)).code == 0
    client = registry.client(store)
    seen: object = None
    for home in (root / "a", root / "b"):
        done = doudi(home, store, "train", "--as-of", AS_OF)
        assert done.code == 0, done.err
        # each v1 is its workspace's champion, whatever the gate said (tested elsewhere)
        name = registry.workspace(Settings(home=home)).model_name
        client.set_registered_model_alias(name, "champion", "1")
        if home == root / "a":
            seen = champion_as_of(Settings(home=root / "b", mlflow_tracking_uri=store))
    return None if seen is None else str(seen)


@pytest.fixture(scope="module")
def two(small_world: Path, mlflow_template: Path,  # noqa: F811
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Built once per test run (xdist workers share it through a file lock)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "two_workspaces"
    env = {"DOUDI_MLRUNS_DIR": str(root / "mlruns")}
    with (shared / "two_workspaces.lock").open("w") as lock, mock.patch.dict(os.environ, env):
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            seen = _build(root, small_world, mlflow_template)
            (root / ".ready").write_text(json.dumps(seen))
        seen = json.loads((root / ".ready").read_text())
    store = f"sqlite:///{root / 'mlflow.db'}"
    a, b = root / "a", root / "b"
    yield World(a, b, store, registry.workspace(Settings(home=a)),
                registry.workspace(Settings(home=b)), seen)


def test_each_workspace_trains_and_scores_only_its_own(two: World) -> None:
    assert two.a_ws.fingerprint != two.b_ws.fingerprint
    assert two.a_ws.model_name != two.b_ws.model_name
    # B's monthly "due" check never saw A's champion (the demo's bug: "not due")
    assert two.b_saw_before_training is None
    for home, ws in ((two.a, two.a_ws), (two.b, two.b_ws)):
        done = doudi(home, two.store, "score", "--as-of", AS_OF)
        assert done.code == 0, done.err
        assert f"scored with {ws.model_name}/1 " in done.out
        listed = json.loads(doudi(home, two.store, "models", "list", "--format", "json").out)
        assert listed["model_name"] == ws.model_name
        assert listed["workspace"] == ws.fingerprint
        [row] = listed["versions"]
        assert (row["version"], row["workspace"]) == ("1", "ours")
        assert set(row["aliases"]) == {"challenger", "champion"}
        assert row["as_of"].startswith(AS_OF) and 0.0 <= row["roc_auc"] <= 1.0
        assert row["trained_from"] < row["trained_through"] < AS_OF  # label-final months
    every = json.loads(doudi(two.b, two.store, "models", "list", "--all", "--format",
                             "json").out)["versions"]
    assert {(r["name"], r["workspace"]) for r in every} == {
        (two.b_ws.model_name, "ours"), (two.a_ws.model_name, "other")}
    table = doudi(two.b, two.store, "models", "list")
    assert table.code == 0 and two.b_ws.model_name in table.out and "roc_auc" in table.out


def test_b_cannot_score_promote_or_serve_a_model_of_a(two: World, tmp_path: Path) -> None:
    from serving.api import RiskLookup
    from serving.server import check_model

    a_v1 = f"models:/{two.a_ws.model_name}/1"
    line = (f"model {two.a_ws.model_name}/1 belongs to workspace {two.a_ws.short}…, "
            f"not this one ({two.b_ws.short}…); use this workspace's own models "
            "(doudi models list)")
    assert refused(doudi(two.b, two.store, "score", "--as-of", AS_OF, "--model", a_v1)) \
        == f"doudi: error: {line}"
    refused(doudi(two.b, two.store, "promote", a_v1), line)
    # B told to share A's registered model name: A's versions are still A's
    shared = {"DOUDI_MODEL_NAME": two.a_ws.model_name}
    refused(doudi(two.b, two.store, "promote", "1", **shared), "belongs to workspace")
    refused(doudi(two.b, two.store, "rollback", **shared), "no previous champion")
    refused(doudi(two.b, two.store, "score", "--as-of", AS_OF, **shared),
            f"model {two.a_ws.model_name}/1 belongs to workspace {two.a_ws.short}")
    from jobs.monthly import champion_as_of

    with pytest.raises(UserError, match="belongs to workspace"):  # the "due" check
        champion_as_of(two.settings(two.b, model_name=two.a_ws.model_name))
    # serving A's champion from B: the API refuses before it starts
    serve_a = two.settings(two.b, api_model_uri=two.a_ws.champion_uri)
    with pytest.raises(UserError, match="belongs to workspace"):
        check_model(serve_a)
    with pytest.raises(UserError, match="belongs to workspace"):
        RiskLookup(serve_a)
    # A's model as a folder: its meta.json says whose it is
    a_folder = registry.load_model(a_v1, two.settings(two.a))[0].save(tmp_path / "a_v1")
    refused(doudi(two.b, two.store, "score", "--as-of", AS_OF, "--model", str(a_folder)),
            f"model {a_folder} belongs to workspace {two.a_ws.short}")
    with pytest.raises(UserError, match="belongs to workspace"):
        check_model(two.settings(two.b, api_model_uri=str(a_folder)))
    # B's own champion still scores
    assert doudi(two.b, two.store, "score", "--as-of", AS_OF).code == 0


def test_operator_errors_are_one_line(two: World) -> None:
    refused(doudi(two.b, two.store, "promote", "7"),
            f"{two.b_ws.model_name} has no version 7 (known: 1)")
    refused(doudi(two.b, two.store, "promote", "v1"), "'v1' is not a version number")
    refused(doudi(two.b, two.store, "promote", "models:/x@champion"), "not an alias")
    refused(doudi(two.b, two.store, "models", "list", "--format", "csv"), "table or json")


def test_models_without_a_workspace_record_are_refused_with_retrain(two: World,
                                                                    tmp_path: Path) -> None:
    """Versions registered before the binding (no tag, no meta) are never loaded."""
    shutil.copy(two.store.removeprefix("sqlite:///"), tmp_path / "mlflow.db")  # keep shared
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry.client(store)
    a_folder = registry.load_model(f"models:/{two.a_ws.model_name}/1",
                                   two.settings(two.a))[0].save(tmp_path / "old")
    meta = json.loads((a_folder / "meta.json").read_text(encoding="utf-8"))
    meta.pop("workspace")
    (a_folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    refused(doudi(two.a, store, "score", "--as-of", AS_OF, "--model", str(a_folder)),
            "has no workspace record", "retrain")
    legacy = "doudi-risk"  # the name every workspace shared before
    with contextlib.suppress(Exception):
        client.create_registered_model(legacy)
    mv = client.create_model_version(legacy, a_folder.as_uri(), tags={"as_of": AS_OF})
    client.set_registered_model_alias(legacy, "champion", mv.version)
    refused(doudi(two.a, store, "score", "--as-of", AS_OF, "--model",
                  f"models:/{legacy}@champion"),
            f"model {legacy}/{mv.version} has no workspace record", "retrain")
    refused(doudi(two.a, store, "promote", "1", DOUDI_MODEL_NAME=legacy),
            "has no workspace record")
