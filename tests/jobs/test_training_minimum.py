"""Too few months to train is one line that says how many are needed; `doudi simulate`'s
documented minimum, `doudi settings` and docs/generator.md quote the same number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doudi.months import Month
from doudi.settings import PROJECT_ROOT, Settings
from jobs.commands.simulate_cmd import DEFAULT_TRAINING_MONTHS, MONTHS_HELP
from tests.jobs.cli import doudi, refused
from training import minimum
from training.core import TrainConfig, make_folds

DEFAULTS = Settings.model_fields
NEEDED = minimum.months_needed(
    DEFAULTS["horizon_months"].default, DEFAULTS["label_allowance_months"].default
)
START = Month.parse("2023-01")


def test_the_arithmetic_is_the_cores() -> None:
    # horizon 6 + allowance 3 + (3 folds x 1 + gap 6 + early stopping 1 + 1 fitting month)
    assert NEEDED == 6 + 3 + (3 + 6 + 1 + 1) == 20
    config = TrainConfig(gap_periods=6)
    assert (config.n_folds, config.fold_periods, config.early_stopping_periods) == (
        minimum.MONTHLY_N_FOLDS, minimum.MONTHLY_FOLD_PERIODS,
        minimum.MONTHLY_EARLY_STOPPING_PERIODS)
    for config in [TrainConfig(n_folds=3, gap_periods=6),
                   TrainConfig(n_folds=4, fold_periods=2, gap_periods=3, early_stopping_periods=2)]:
        periods = minimum.periods_needed(config.n_folds, config.fold_periods,
                                         config.gap_periods, config.early_stopping_periods)
        assert len(make_folds(periods, config)) == config.n_folds
        with pytest.raises(ValueError, match="too few"):
            make_folds(periods - 1, config)


def test_help_settings_and_docs_quote_the_same_minimum(tmp_path: Path) -> None:
    assert DEFAULT_TRAINING_MONTHS == NEEDED
    assert f"at least {NEEDED} " in MONTHS_HELP
    shown = json.loads(doudi(tmp_path, "settings").out)
    assert shown["min_training_months"] == NEEDED
    bigger = json.loads(doudi(tmp_path, "settings", DOUDI_HORIZON_MONTHS="12").out)
    assert bigger["min_training_months"] == minimum.months_needed(12, 3) == 12 + 3 + 17
    docs = (PROJECT_ROOT / "docs" / "generator.md").read_text(encoding="utf-8")
    assert f"at least {NEEDED} months" in docs


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A province of exactly the minimum months, simulated by the CLI (it warns about
    nothing), and a workspace with it ingested."""
    root = tmp_path_factory.mktemp("minimal")
    home = root / "home"
    done = doudi(home, "simulate", "--households", "300", "--months", str(NEEDED),
                 "--start", str(START), "--seed", "11", "--out", str(root / "province"))
    assert done.code == 0, done.err
    assert "too few to train" not in done.err
    done = doudi(home, "ingest", str(root / "province" / "raw"))
    assert done.code == 0, done.err
    return root, home


def test_one_month_less_is_one_line(minimal: tuple[Path, Path], tmp_path: Path) -> None:
    _, home = minimal
    short = START + NEEDED - 2  # NEEDED - 1 months of data, 2023-01 .. short
    refused(doudi(home, "train", "--as-of", str(short)),
            f"training as of {short} needs at least {NEEDED} months of data",
            f"{START} to {short} is {NEEDED - 1}")
    done = doudi(tmp_path, "simulate", "--households", "40", "--months", str(NEEDED - 1),
                 "--out", str(tmp_path / "p"))
    assert done.code == 0, done.err
    assert f"need at least {NEEDED}" in done.err.strip().splitlines()[-1]


def test_the_minimum_trains(minimal: tuple[Path, Path]) -> None:
    _, home = minimal
    last = START + NEEDED - 1
    done = doudi(home, "train", "--as-of", str(last))
    assert done.code == 0, done.err
    assert "registered " in done.out
