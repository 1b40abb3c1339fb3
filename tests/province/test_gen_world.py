"""Statistical sanity of the generated province, the oracle and determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from doudi.errors import UserError
from doudi.settings import Settings
from province import simulate
from province.truth import average_precision, roc_auc
from tests.province.extract_reader import canonical_enum


@pytest.fixture(scope="module")
def clean(small_extract) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return small_extract[2]


def test_households_and_people_are_plausible(clean) -> None:  # type: ignore[no-untyped-def]
    households = clean["households"].drop_duplicates("household_id", keep="first")
    assert households["household_id"].str.len().between(1, 32).all()
    assert households["household_id"].is_unique
    assert households["village_code"].str.match(r"^62\d{10}$").all()
    former = canonical_enum("households", "poverty_history", households["poverty_history"])
    assert 0.30 <= (former == "former_poor").mean() <= 0.50
    lifted = households.loc[former == "former_poor", "lifted_year"].astype(int)
    assert lifted.between(2014, 2020).all()

    persons = clean["persons"].drop_duplicates("person_id", keep="first")
    sizes = persons.groupby("household_id").size()
    assert sizes.between(1, 8).all()
    assert 3.0 <= sizes.mean() <= 4.2
    births = pd.to_datetime(persons["person_id"].str[6:14], format="%Y%m%d")
    ages = (pd.Timestamp("2023-01-01") - births).dt.days / 365.25
    assert ages.min() >= 0 and ages.max() < 105
    assert 30 <= ages.mean() <= 45
    relation = canonical_enum("persons", "relation", persons["relation"])
    assert (relation == "head").sum() == len(sizes)
    ethnicity = persons["ethnicity"][persons["ethnicity"] != ""]
    assert ethnicity.isin(["汉族", "回族", "东乡族", "藏族", "保安族", "撒拉族", "土族"]).all()


def test_base_rate_and_oracle(small_world: Path) -> None:
    summary = json.loads((small_world / "truth" / "summary.json").read_text())
    assert 0.01 <= summary["base_rate"] <= 0.05
    labels = pd.read_parquet(small_world / "truth" / "labels.parquet")
    oracle = pd.read_parquet(small_world / "truth" / "oracle.parquet").merge(
        labels, on=["as_of", "household_id"]
    )
    assert oracle["in_scope"].all()
    assert oracle["probability"].between(0, 1).all()
    auc = roc_auc(oracle["label"].to_numpy(), oracle["probability"].to_numpy())
    assert 0.7 < auc < 0.99  # far better than chance, yet the future is not certain
    assert summary["oracle"]["roc_auc"] == pytest.approx(auc)


def test_identical_bytes_for_the_same_seed(tmp_path: Path) -> None:
    args = {"households": 60, "months": 13, "start": "2024-03", "seed": 5, "settings": Settings()}
    simulate(tmp_path / "a", **args)
    simulate(tmp_path / "b", **args)

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = digests(tmp_path / "a")
    assert len(first) > 50  # every feed, many months
    assert first == digests(tmp_path / "b")


def test_too_few_months_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 12"):
        simulate(tmp_path, households=50, months=11, start="2023-01", seed=1)
    with pytest.raises(UserError, match="YYYY-MM"):
        simulate(tmp_path, households=50, months=12, start="2023/01", seed=1)


def test_auc_helpers_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.2
    score = np.round(rng.random(200) + 0.3 * y, 1)
    pos, neg = score[y], score[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, score) == pytest.approx(pairs / (len(pos) * len(neg)))
    # hand-computed: ranks 0.9(1) 0.8(0) 0.7(1) -> precision 1, 2/3 at recall 0.5, 1
    assert average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3
    )


def test_cli_runs_and_rejects_bad_flags(tmp_path: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        code = "import sys; from jobs.cli import main; sys.argv = ['doudi', *sys.argv[1:]]; main()"
        return subprocess.run(
            [sys.executable, "-c", code, "simulate", *args, "--out", str(tmp_path / "w")],
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad = cli("--households", "40", "--months", "6")
    assert bad.returncode == 2
    assert "at least 12" in bad.stderr
    ok = cli("--households", "40", "--months", "12", "--start", "2024-01", "--seed", "3")
    assert ok.returncode == 0, ok.stderr
    assert "oracle" in ok.stdout and "base rate" in ok.stdout
    assert (tmp_path / "w" / "truth" / "summary.json").is_file()
