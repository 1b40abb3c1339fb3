from pathlib import Path

import pytest

from doudi.settings import Settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("DOUDI_HORIZON_MONTHS", "3")
    s = Settings()
    assert s.home == (tmp_path / "ws").resolve()
    assert s.horizon_months == 3
    assert s.warehouse_dir == s.home / "warehouse"
    assert s.key_file == s.home / "secrets" / "pseudonym.key"


def test_config_file_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "doudi.toml"
    cfg.write_text(
        '[doudi]\nhorizon_months = 9\nhome = "/tmp/from-file"\n'
        "[doudi.monitoring_lines]\n2024 = 7500.0\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DOUDI_CONFIG", str(cfg))
    monkeypatch.setenv("DOUDI_HOME", str(tmp_path / "from-env"))
    s = Settings()
    assert s.horizon_months == 9
    assert s.home == (tmp_path / "from-env").resolve()  # environment wins
    assert s.monitoring_line(2024) == 7500.0


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOUDI_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        Settings()


def test_monitoring_line_uses_nearest_earlier_year() -> None:
    s = Settings(monitoring_lines={2021: 6000.0, 2023: 7000.0})
    assert s.monitoring_line(2022) == 6000.0
    assert s.monitoring_line(2030) == 7000.0
    with pytest.raises(KeyError, match="2019"):
        s.monitoring_line(2019)


def test_tracking_uri_is_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DOUDI_MLFLOW_TRACKING_URI", raising=False)
    uri = Settings().tracking_uri()
    assert uri.startswith("sqlite:////")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://x/y")
    assert Settings().tracking_uri() == "postgresql://x/y"


def test_artifacts_live_beside_a_sqlite_tracking_store(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DOUDI_MLFLOW_TRACKING_URI", raising=False)
    store = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert store.artifact_root() == (tmp_path / "artifacts").as_uri()
    default = Settings(mlruns_dir=tmp_path / "runs")
    assert default.artifact_root() == (tmp_path / "runs" / "artifacts").as_uri()
    remote = Settings(mlflow_tracking_uri="postgresql://x/y", mlruns_dir=tmp_path / "runs")
    assert remote.artifact_root() == (tmp_path / "runs" / "artifacts").as_uri()
