"""Visit capacity per township (issue 13): default shares, the configured table, the
allocation within each township and what it gives up against the province-wide top k."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact
from doudi.settings import Settings, TierSettings
from serving.capacity import (
    allocate,
    capacity_report,
    configured_capacities,
    proportional_capacities,
    province_capacity,
    read_capacity_table,
    township_capacities,
    townships_of,
)
from serving.scoring import TIER_NONE, assign_tiers, score
from serving.store import list_alerts, open_store
from tests.jobs.cli import doudi, refused
from tests.serving.export_world import TOWNSHIP_A, TOWNSHIP_B, write_world
from tests.serving.scoring_fixtures import AS_OF, feature_frame, train_artifact

TOWNSHIPS = ("620102001", "620102002", "620102003", "620103001")


@cache
def model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25)


def ranks_of(risk: np.ndarray) -> np.ndarray:
    """Province ranks as `assign_tiers` gives them (highest risk first, then position)."""
    order = np.lexsort((np.arange(len(risk)), -risk))
    rank = np.empty(len(risk), dtype=np.int64)
    rank[order] = np.arange(1, len(risk) + 1)
    return rank


def province_top(rank: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """The province-wide top k: the k best-ranked eligible households."""
    chosen = np.flatnonzero(eligible)
    top = np.zeros(len(rank), dtype=bool)
    top[chosen[np.argsort(rank[chosen])[:k]]] = True
    return top


@dataclasses.dataclass(frozen=True)
class World:
    """Households with risks and townships, capacities, and the min_alert_risk floor."""

    risk: np.ndarray
    townships: np.ndarray
    capacities: dict[str, int]
    floor: float

    @property
    def rank(self) -> np.ndarray:
        return ranks_of(self.risk)

    @property
    def eligible(self) -> np.ndarray:
        return self.risk >= self.floor

    def allocated(self) -> np.ndarray:
        return allocate(self.rank, self.townships, self.capacities, self.eligible)


worlds = st.integers(1, 120).flatmap(lambda n: st.builds(
    World,
    st.lists(st.floats(0, 1), min_size=n, max_size=n).map(np.array),
    st.lists(st.sampled_from(TOWNSHIPS), min_size=n, max_size=n).map(np.array),
    st.fixed_dictionaries({t: st.integers(0, 8) for t in TOWNSHIPS}),
    st.floats(0, 0.5),
))


# -- default capacities -----------------------------------------------------------------------

def test_proportional_shares_hand_computed() -> None:
    # quotas 1.5, 0.9, 0.6: whole parts 1, 0, 0; the 2 left go to the largest remainders.
    assert proportional_capacities({"A": 5, "B": 3, "C": 2}, 3) == {"A": 1, "B": 1, "C": 1}
    # quotas 2.5, 2.5: equal remainders, equal sizes: the smaller code first.
    assert proportional_capacities({"B": 50, "A": 50}, 5) == {"A": 3, "B": 2}
    # quotas 0.5 and 0.25 + 0.25: the larger remainder wins.
    assert proportional_capacities({"A": 2, "B": 1, "C": 1}, 1) == {"A": 1, "B": 0, "C": 0}
    assert proportional_capacities({"A": 4}, 0) == {"A": 0}


@settings(max_examples=200, deadline=None)
@given(counts=st.dictionaries(st.sampled_from(TOWNSHIPS), st.integers(0, 5000), min_size=1),
       share=st.floats(0, 1))
def test_proportional_shares_sum_exactly(counts: dict[str, int], share: float) -> None:
    households = sum(counts.values())
    total = math.floor(households * share)
    shares = proportional_capacities(counts, total)
    assert set(shares) == set(counts)
    assert sum(shares.values()) == (total if households else 0)
    for code, n in counts.items():  # within one of the exact quota, never above the count
        quota = total * n / households if households else 0
        assert math.floor(quota) <= shares[code] <= math.ceil(quota) and shares[code] <= n


def test_default_capacities_total_todays_capacity() -> None:
    townships = np.array(["620102001"] * 17 + ["620102002"] * 5 + ["620103001"] * 178)
    s = Settings()  # 5% of 200 = 10 visits: quotas 0.85, 0.25, 8.9; the 2 left: .9, .85
    assert province_capacity(200, s) == 10
    assert township_capacities(townships, s) == {"620102001": 1, "620102002": 0,
                                                 "620103001": 9}


def test_townships_of_village_codes() -> None:
    assert townships_of(["620102001003", "620102002001"]).tolist() == ["620102001", "620102002"]


# -- the allocation ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(world=worlds)
def test_allocation_stays_within_each_township(world: World) -> None:
    alerted, eligible, rank = world.allocated(), world.eligible, world.rank
    capacities, townships = world.capacities, world.townships
    assert not (alerted & ~eligible).any()  # the min_alert_risk floor holds
    assert alerted.sum() <= sum(capacities.values())
    for code in TOWNSHIPS:
        mine = townships == code
        assert (alerted & mine).sum() == min(capacities[code], (eligible & mine).sum())
        # within the township, the alerted are its best-ranked eligible households
        left_out = mine & eligible & ~alerted
        if (alerted & mine).any() and left_out.any():
            assert rank[alerted & mine].max() < rank[left_out].min()
            assert world.risk[alerted & mine].min() >= world.risk[left_out].max()


@settings(max_examples=300, deadline=None)
@given(world=worlds, k_share=st.floats(0, 1))
def test_enough_room_everywhere_gives_the_province_top_k(world: World, k_share: float) -> None:
    """Capacities that hold every township's members of the province's top k (k = their
    sum): the allocation is that top k, and nothing is given up."""
    risk, townships, rank, eligible = world.risk, world.townships, world.rank, world.eligible
    top = province_top(rank, eligible, math.floor(k_share * eligible.sum()))
    capacities = {code: int((top & (townships == code)).sum()) for code in TOWNSHIPS}
    alerted = allocate(rank, townships, capacities, eligible)
    assert (alerted == top).all()
    report = capacity_report(risk, rank, alerted, townships, capacities, eligible)
    assert report.expected_loss == 0 and report.displaced == 0
    assert report.capacity == top.sum() == report.alerted


@settings(max_examples=300, deadline=None)
@given(world=worlds)
def test_what_the_allocation_gives_up_is_never_negative(world: World) -> None:
    risk, rank, alerted = world.risk, world.rank, world.allocated()
    report = capacity_report(risk, rank, alerted, world.townships, world.capacities,
                             world.eligible)
    present = {code: world.capacities[code] for code in set(world.townships.tolist())}
    k = sum(present.values())
    assert report.capacity == k
    top = province_top(rank, world.eligible, k)
    assert report.expected_loss >= 0
    assert report.expected_loss == pytest.approx(risk[top].sum() - risk[alerted].sum(),
                                                 abs=1e-9)
    by = report.by_township.set_index("township_code")
    assert by["alerted"].sum() == alerted.sum() and by["province_top_k"].sum() == top.sum()
    full = [c for c, cap in present.items()
            if cap > 0 and (alerted & (world.townships == c)).sum() == cap]
    assert report.at_capacity == len(full)


def test_expected_loss_hand_computed() -> None:
    # T1 holds the three riskiest households but one visit; T2 two visits. k = 3.
    risk = np.array([0.9, 0.8, 0.7, 0.3, 0.1, 0.01])
    townships = np.array(["T1", "T1", "T1", "T2", "T2", "T2"])
    capacities = {"T1": 1, "T2": 2}
    rank, eligible = ranks_of(risk), risk >= 0.02  # the last is below the floor
    alerted = allocate(rank, townships, capacities, eligible)
    assert alerted.tolist() == [True, False, False, True, True, False]
    report = capacity_report(risk, rank, alerted, townships, capacities, eligible)
    # top 3: 0.9 + 0.8 + 0.7 = 2.4; allocated: 0.9 + 0.3 + 0.1 = 1.3; given up 1.1
    assert report.expected_top_k == pytest.approx(2.4)
    assert report.expected_alerted == pytest.approx(1.3)
    assert report.expected_loss == pytest.approx(1.1)
    assert (report.capacity, report.alerted, report.displaced) == (3, 3, 2)
    assert (report.townships, report.at_capacity) == (2, 2)
    assert report.by_township.to_dict("records") == [
        {"township_code": "T1", "households": 3, "capacity": 1, "alerted": 1,
         "province_top_k": 3, "at_capacity": True, "expected_positives_alerted": 0.9,
         "expected_positives_province_top_k": pytest.approx(2.4)},
        {"township_code": "T2", "households": 3, "capacity": 2, "alerted": 2,
         "province_top_k": 0, "at_capacity": True,
         "expected_positives_alerted": pytest.approx(0.4),
         "expected_positives_province_top_k": 0.0},
    ]
    assert "gives up 1.10 expected true positive(s)" in report.line()


# -- tiers stay the province's ----------------------------------------------------------------

def test_tiers_are_province_wide_alerts_per_township() -> None:
    s = Settings(capacity_pct=5, tiers=TierSettings(
        red_top_pct=1, orange_top_pct=3, yellow_top_pct=5, red_min_risk=0.9,
        min_alert_risk=0.02))
    # 200 households: red = rank 1-2, orange = rank 3-6, capacity 10. Township A holds
    # the eight riskiest but 3 visits; B gets 7 visits for its best (ranks 9 and on).
    risk = np.array([0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3] + [0.2 - i / 1000
                                                                  for i in range(192)])
    townships = np.array(["A"] * 8 + ["B"] * 192)
    rank, tier = assign_tiers(risk, s, townships=townships, capacities={"A": 3, "B": 7})
    assert rank[:10].tolist() == list(range(1, 11))
    assert tier[:8].tolist() == ["red", "red", "orange"] + [TIER_NONE] * 5  # A is full
    # B's households keep their province tier: beyond the orange share, they are yellow,
    # even past the province's top 10 (ranks 11-15).
    assert tier[8:15].tolist() == ["yellow"] * 7 and (tier[15:] == TIER_NONE).all()
    # Without townships the province is one township: today's top 10.
    _, one = assign_tiers(risk, s)
    assert (one[:10] != TIER_NONE).all() and (one[10:] == TIER_NONE).all()


def test_score_follows_a_configured_table() -> None:
    frame = feature_frame(400, seed=3)
    townships = townships_of(frame["village_code"])
    counts = Counter(townships.tolist())
    roomy = dict(counts)  # room for everyone eligible
    roomy["620102002"] = 0
    out = score(frame, model(), Settings(workers=1, rule_capacity_pct=0), AS_OF,
                capacities=roomy)
    model_alert = out["source"].isin(["model", "both"]).to_numpy()
    assert not (model_alert & (townships == "620102002")).any()
    others = townships != "620102002"
    eligible = out["risk"].to_numpy() >= Settings().tiers.min_alert_risk
    assert (model_alert[others] == eligible[others]).all()
    # The default: each township's share of the province's 5% (20 of 400).
    default = score(frame, model(), Settings(workers=1, rule_capacity_pct=0), AS_OF)
    shares = township_capacities(townships, Settings())
    assert sum(shares.values()) == 20
    alerted = Counter(townships[default["alerted"].to_numpy()].tolist())
    assert all(alerted[code] <= shares[code] for code in shares)


# -- the configured table ---------------------------------------------------------------------

def table(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "capacity.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_the_table_is_read_with_blank_lines_bom_or_gbk(tmp_path: Path) -> None:
    text = "capacity,township_code\r\n4,620102001\r\n\r\n0,620102002\r\n"
    for encoding in ("utf-8", "utf-8-sig", "gbk"):
        assert read_capacity_table(table(tmp_path, text, encoding),
                                   known=TOWNSHIPS) == {"620102001": 4, "620102002": 0}


@pytest.mark.parametrize(("text", "row", "rule"), [
    ("township_code,capacity\n620102001,3\n620199001,2\n", 3,
     "township 620199001 is not on the households roster"),
    ("township_code,capacity\n620102001,-1\n", 2, "capacity must be 0 or more visits, not -1"),
    ("township_code,capacity\n620102001,2.5\n", 2,
     "capacity must be a whole number of visits, not '2.5'"),
    ("township_code,capacity\n62010200,2\n", 2,
     "township_code must have 9 digits, not '62010200'"),
    ("township_code,capacity\n620102001,2\n620102001,3\n", 3,
     "township 620102001 is listed twice (rows 2 and 3)"),
    ("乡镇,容量\n620102001,2\n", 1,
     "the header must be township_code,capacity, not 乡镇,容量"),
])
def test_a_bad_table_names_file_row_and_rule(tmp_path: Path, text: str, row: int,
                                             rule: str) -> None:
    path = table(tmp_path, text)
    with pytest.raises(UserError) as refused_table:
        read_capacity_table(path, known=TOWNSHIPS)
    assert str(refused_table.value) == f"{path}: row {row}: {rule}"


def test_the_mapping_wins_over_the_file_and_is_checked(tmp_path: Path) -> None:
    path = table(tmp_path, "township_code,capacity\n620102001,3\n620102002,1\n")
    s = Settings(township_capacity_file=path, township_capacity={"620102002": 5})
    assert configured_capacities(s, known=TOWNSHIPS) == {"620102001": 3, "620102002": 5}
    # Townships the table does not name keep their proportional share.
    townships = np.array(["620102001"] * 10 + ["620102002"] * 10 + ["620103001"] * 80)
    assert township_capacities(townships, s) == {"620102001": 3, "620102002": 5,
                                                 "620103001": 4}
    with pytest.raises(UserError, match=r"^setting township_capacity \(DOUDI_TOWNSHIP_CAPACITY"
                       r"\): 620102003: capacity must be 0 or more visits, not -2$"):
        configured_capacities(Settings(township_capacity={"620102003": -2}))


# -- `doudi score` with a table ---------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Settings, Path]:
    from doudi import registry

    settings = write_world(tmp_path / "ws")
    settings.key_file.parent.mkdir(parents=True)
    settings.key_file.write_bytes(b"k" * 32)
    settings.key_file.chmod(0o600)
    artifact = dataclasses.replace(model(), meta=dict(model().meta))
    registry.stamp(artifact.meta, registry.workspace(settings))
    return settings, artifact.save(tmp_path / "model")


def score_with(settings: Settings, model_dir: Path, capacity_file: Path):
    return doudi(settings.home, "score", "--as-of", "2026-06", "--allow-undelivered",
                 "--model", str(model_dir), "--allow-non-champion",
                 DOUDI_TOWNSHIP_CAPACITY_FILE=str(capacity_file),
                 DOUDI_TIERS__MIN_ALERT_RISK="0", DOUDI_RULE_CAPACITY_PCT="0")


def test_score_refuses_a_township_off_the_roster(workspace, tmp_path: Path) -> None:
    settings, model_dir = workspace
    path = table(tmp_path, f"township_code,capacity\n{TOWNSHIP_A},2\n620199001,1\n")
    refused(score_with(settings, model_dir, path),
            f"{path}: row 3: township 620199001 is not on the households roster")
    with open_store(settings=Settings(home=settings.home)) as store:
        assert list_alerts(store).empty  # nothing scored into the store


def test_score_allocates_by_the_table(workspace, tmp_path: Path) -> None:
    settings, model_dir = workspace
    path = table(tmp_path, f"township_code,capacity\n{TOWNSHIP_A},0\n{TOWNSHIP_B},4\n")
    done = score_with(settings, model_dir, path)
    assert done.code == 0, done.err
    with open_store(settings=Settings(home=settings.home)) as store:
        alerts = list_alerts(store)
    assert len(alerts) == 4
    assert set(alerts["village_code"].str[:9]) == {TOWNSHIP_B}
