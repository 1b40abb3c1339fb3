"""The served model's local copy (`doudi.registry.load_served`): kept on every load, served
when the registry cannot be reached, never when the registry refuses, and never another
workspace's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from doudi import registry
from doudi.errors import UserError
from doudi.settings import Settings
from tests.serving.test_api import settings  # noqa: F401 - the shared monthly workspace

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Settings:  # noqa: F811
    """The shared workspace's key and registry, with a cache of its own."""
    return settings.model_copy(update={"home": tmp_path / "home",
                                       "pseudonym_key_file": settings.key_file})


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow retries an HTTP registry for minutes by default; one refusal is the outage here
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _margins(artifact: object, rows: np.ndarray) -> np.ndarray:
    return np.asarray(artifact.booster.predict(rows, raw_score=True))  # type: ignore[attr-defined]


def test_the_copy_is_served_when_the_registry_is_down(own: Settings, no_retries: None) -> None:
    uri = registry.served_uri(own)
    live = registry.load_served(uri, own)
    assert live.fallback is None and live.label and live.label.endswith("/1")
    saved = json.loads((own.cache_dir / registry.SERVED_COPY / "served.json").read_text())
    assert saved["label"] == live.label

    down = own.model_copy(update={"mlflow_tracking_uri": UNREACHABLE})
    cached = registry.load_served(uri, down)
    assert cached.fallback is not None and "registry unreachable" in cached.fallback
    assert live.label in cached.fallback and cached.label == live.label
    rows = np.random.default_rng(0).normal(size=(50, live.artifact.booster.num_feature()))
    assert np.array_equal(_margins(cached.artifact, rows), _margins(live.artifact, rows))


def test_no_copy_no_model(own: Settings, no_retries: None) -> None:
    down = own.model_copy(update={"mlflow_tracking_uri": UNREACHABLE})
    with pytest.raises(registry.RegistryUnreachableError, match="cannot reach the model registry"):
        registry.load_served(registry.served_uri(own), down)


def test_a_refusal_is_not_an_outage(own: Settings) -> None:
    registry.load_served(registry.served_uri(own), own)  # a copy exists
    with pytest.raises(UserError):
        registry.load_served(f"models:/{registry.workspace(own).model_name}/99", own)


def test_another_workspaces_copy_is_refused(own: Settings, no_retries: None) -> None:
    registry.load_served(registry.served_uri(own), own)
    meta = own.cache_dir / registry.SERVED_COPY / "model" / "meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, registry.WORKSPACE_KEY: "0" * 12}))
    down = own.model_copy(update={"mlflow_tracking_uri": UNREACHABLE})
    with pytest.raises(UserError, match="workspace"):
        registry.load_served(registry.served_uri(own), down)


def test_doudi_serve_starts_on_the_copy_only_when_there_is_one(
    own: Settings, no_retries: None,
) -> None:
    from serving.server import check_model

    down = own.model_copy(update={"mlflow_tracking_uri": UNREACHABLE})
    with pytest.raises(registry.RegistryUnreachableError):
        check_model(down)  # no copy yet: one line, exit 2
    registry.load_served(registry.served_uri(own), own)
    check_model(down)  # a copy: a warning, and the server starts on it
