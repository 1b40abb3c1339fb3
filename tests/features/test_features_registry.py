"""The registry is complete and self-consistent; docs/features.md is up to date; CLI."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from doudi.contract import FEED_NAMES
from doudi.months import Month
from doudi.settings import PROJECT_ROOT, Settings
from features import (
    FEATURES,
    KEY_COLUMNS,
    REGISTRY_VERSION,
    build_features,
    feature_names,
    group_column_names,
    scoring_table,
)
from features import registry as reg
from features.docs import render
from jobs.cli import app
from tests.features.test_features_feeds import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("reg"))


def test_every_produced_column_is_registered_and_vice_versa(world: Path) -> None:
    frame = build_features(world, Month.parse("2024-06"), Settings(workers=1))
    assert list(frame.columns) == [*KEY_COLUMNS, *feature_names(), *group_column_names()]
    assert all(frame[c].dtype == "float64" for c in feature_names())


def test_specs_are_well_formed() -> None:
    names = feature_names()
    assert len(names) == len(set(names))
    for spec in FEATURES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.hardship in reg.HARDSHIP_TYPES
        assert spec.dtype in ("numeric", "categorical", "bool")
        assert spec.missing in ("zero", "nan", "always")
        assert spec.feed in (*FEED_NAMES, "derived"), spec.name
        assert spec.label_zh and spec.description and spec.group and spec.unit
        assert re.search(r"[\u4e00-\u9fff]", spec.template_zh), spec.name
        spec.explain(1234.5)  # every template formats a value


def test_template_quotes_the_households_value() -> None:
    spec = reg.BY_NAME["medical_oop_6m_per_capita"]
    assert spec.label_zh == "近6个月人均个人自付医疗费用"
    assert spec.explain(12345.6) == "近6个月人均个人自付医疗费用 12,346 元"


def test_every_feed_feeds_some_feature() -> None:
    used = {s.feed for s in FEATURES}
    # divisions: names for people (features/divisions.py), not a source of features
    assert set(FEED_NAMES) - {"divisions"} <= used


def test_registry_version_is_a_hash_of_the_specs() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", REGISTRY_VERSION)
    assert reg._version() == REGISTRY_VERSION
    original = reg.FEATURES
    try:
        first = dataclasses.replace(original[0], window_months=99)
        reg.FEATURES = (first, *original[1:])
        assert reg._version() != REGISTRY_VERSION
    finally:
        reg.FEATURES = original


def test_docs_features_md_is_up_to_date() -> None:
    committed = (PROJECT_ROOT / "docs" / "features.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate: python -m features.docs > docs/features.md"


def test_scoring_table_holds_in_scope_households(world: Path) -> None:
    table = scoring_table(world, Month.parse("2024-06"), Settings(workers=1))
    assert sorted(table["household_key"]) == ["g1", "h1", "h2", "h5"]
    assert "label" not in table.columns


def test_cli_writes_parquet_for_one_or_many_months(world: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "--as-of", "2024-06", "--warehouse", str(world),
                                 "--out", str(out)], env={"DOUDI_WORKERS": "1"})
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 4 and {"household_key", "as_of", "household_size"} <= set(frame)
    result = runner.invoke(app, ["features", "--as-of", "2024-06", "--from", "2024-04",
                                 "--warehouse", str(world), "--out", str(out)],
                           env={"DOUDI_WORKERS": "1"})
    assert result.exit_code == 0, result.output
    assert sorted({f"{d:%Y-%m}" for d in pd.read_parquet(out)["as_of"]}) == [
        "2024-04", "2024-05", "2024-06"]


def test_features_imports_neither_ingest_nor_training_nor_serving() -> None:
    import ast

    for path in (PROJECT_ROOT / "features").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"ingest", "training", "serving"}, path
