"""Fixtures for the training tests: small panels and a pre-migrated MLflow SQLite store."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite DB, built once per test session.

    MLflow's schema migrations take 10-20 s; copying a migrated file takes milliseconds.
    Under xdist the workers share the session folder and a file lock.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    template = root / "doudi_training_mlflow_template.db"
    with (root / "doudi_training_mlflow_template.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            from mlflow import MlflowClient

            building = root / "doudi_training_mlflow_building.db"
            MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments()
            building.rename(template)
    return template


@pytest.fixture
def mlflow_store(mlflow_template: Path, tmp_path: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of a fresh store for one test."""
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, db)
    return f"sqlite:///{db}", (tmp_path / "artifacts").as_uri()
