"""Names, phone numbers and the divisions feed of the generated province."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doudi import contract
from doudi.idnumber import id_facts
from doudi.settings import Settings
from province import simulate, timeutil
from province.identity import HAN_SURNAMES, MUSLIM_SURNAMES
from province.params import WorldParams
from province.records import Records
from province.world import build_world
from province.writer import BOOL_SPELLINGS, FORMATS, FileStyle, Writer
from tests.province.extract_reader import (
    canonical_enum,
    csv_text,
    find_violations,
    load_bad_rows,
    load_pending_rows,
    read_file,
    read_raw,
)

CJK_NAME = re.compile(r"^[\u4e00-\u9fff]{2,4}$")
MOBILE = re.compile(r"^1[35789]\d{9}$")


@pytest.fixture(scope="module")
def clean(small_extract) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return small_extract[2]


@pytest.fixture(scope="module")
def people(clean: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per person (the roster row) with canonical relation and the ID's sex."""
    persons = clean["persons"].drop_duplicates("person_id", keep="first")
    return persons.assign(
        relation=canonical_enum("persons", "relation", persons["relation"]),
        male=persons["person_id"].map(lambda pid: id_facts(pid).sex == "M"),
        surname=persons["name"].str[0],
    )


def test_every_person_has_a_plausible_name(people: pd.DataFrame) -> None:
    names = people["name"]
    assert (names != "").all()
    assert names.str.match(CJK_NAME).all()
    # a household's ethnicity: what its members' rows say (a few rows leave it empty)
    known = people[people["ethnicity"] != ""].groupby("household_id")["ethnicity"].first()
    not_tibetan = people["household_id"].map(known) != "藏族"
    surnames = set(HAN_SURNAMES + MUSLIM_SURNAMES)
    assert people.loc[not_tibetan, "surname"].isin(surnames).all()
    assert names.nunique() > 0.5 * len(names)  # varied, not a handful of names


def test_household_members_share_the_family_surname(people: pd.DataFrame) -> None:
    han = people.groupby("household_id")["ethnicity"].transform("first") == "汉族"
    frame = people[han]
    heads = frame[frame["relation"] == "head"].set_index("household_id")
    spouses = frame[frame["relation"] == "spouse"].set_index("household_id")
    children = frame[frame["relation"].isin(["child", "grandchild"])]
    head_name = children["household_id"].map(heads["surname"])
    spouse_name = children["household_id"].map(spouses["surname"]).fillna(head_name)
    # children take the head's or the spouse's surname ...
    assert ((children["surname"] == head_name) | (children["surname"] == spouse_name)).all()
    # ... mostly the father's
    head_male = children["household_id"].map(heads["male"])
    father = head_name.where(head_male, spouse_name)
    assert (children["surname"] == father).mean() > 0.8
    # most members of a household (spouses keep their own) share the head's surname
    members = frame[~frame["relation"].isin(["spouse", "other"])]
    assert (members["surname"] == members["household_id"].map(heads["surname"])).mean() > 0.85


def test_phone_numbers_are_mobile_and_mostly_present(clean: dict[str, pd.DataFrame]) -> None:
    households = clean["households"]
    phones = households.drop_duplicates("household_id")["contact_phone"]
    given = phones[phones != ""]
    assert given.str.match(MOBILE).all()
    assert 0.75 < len(given) / len(phones) < 1  # most households; the column is optional
    # a household keeps its number on every roster row
    assert (households.groupby("household_id")["contact_phone"].nunique() <= 1).all()


def test_names_and_phones_are_deterministic_per_seed() -> None:
    def identity(seed: int) -> tuple[list[str | None], list[str | None]]:
        _, registry = build_world(150, 600, WorldParams(), np.random.default_rng(seed))
        return registry.names.to_pylist(), registry.phones.to_pylist()

    first, again, other = identity(4), identity(4), identity(5)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


@settings(max_examples=25, deadline=None)
@given(st.integers(10, 120), st.integers(0, 2**32 - 1))
def test_names_and_phones_hold_their_shape_for_any_world(households: int, seed: int) -> None:
    state, registry = build_world(households, 600, WorldParams(), np.random.default_rng(seed))
    p = state.persons
    names = np.array(registry.names.to_pylist())
    assert all(CJK_NAME.match(n) for n in names)
    phones = [x for x in registry.phones.to_pylist() if x is not None]
    assert all(MOBILE.match(x) for x in phones)
    assert len(registry.phones) == households
    # children and grandchildren carry the surname of the head or the spouse
    head = np.flatnonzero(p.relation == 0)[p.hh]  # one head per household, in order
    spouse_at = np.full(households, -1)
    spouse_at[p.hh[p.relation == 1]] = np.flatnonzero(p.relation == 1)
    spouse = np.where(spouse_at[p.hh] >= 0, spouse_at[p.hh], head)
    child = np.isin(p.relation, (2, 4)) & (p.ethnicity != 3)  # Tibetan names: no surname
    first = np.array([n[0] for n in names])
    assert np.all((first[child] == first[head][child]) | (first[child] == first[spouse][child]))


def test_names_and_phones_written_in_every_format_and_header_style(tmp_path: Path) -> None:
    params = WorldParams(bad_row_share=0.0, duplicate_share=0.0)
    month = timeutil.parse_month("2024-01")
    state, registry = build_world(80, month, params, np.random.default_rng(3))
    roster_day = int(timeutil.first_day(month))
    records = Records(registry, params, np.random.default_rng(4), roster_day)
    records.history(state, month)
    records.roster(state)
    batches = records.pop_reported(roster_day)
    writer = Writer(tmp_path, registry, params, np.random.default_rng(5), [], roster_day)
    for k, fmt in enumerate(FORMATS):
        chinese = fmt == "csv_gbk"
        style = FileStyle(fmt, chinese, BOOL_SPELLINGS[2 if chinese else 0], extras=False)
        for feed_name in ("persons", "households"):
            writer._write_file(feed_name, month + k, batches[feed_name], style)
    writer.close()

    names = dict(zip(registry.person_ids.astype(str), registry.names.to_pylist(), strict=True))
    phones = dict(zip(registry.household_ids.astype(str), registry.phones.to_pylist(), strict=True))
    for k, fmt in enumerate(FORMATS):
        for feed_name, column, key, truth in (
            ("persons", "name", "person_id", names),
            ("households", "contact_phone", "household_id", phones),
        ):
            ext = FileStyle(fmt, False, ("0", "1"), False).extension
            path = tmp_path / feed_name / f"{feed_name}_{timeutil.month_text(month + k)}.{ext}"
            header = contract.feed(feed_name).column(column).alias if fmt == "csv_gbk" else column
            assert header in _raw_header(path), (fmt, feed_name)
            frame = read_file(tmp_path, path).frame
            assert frame[column].tolist() == [truth[v] or "" for v in frame[key]], fmt


def _raw_header(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    return [h.strip('"') for h in csv_text(path).splitlines()[0].split(",")]


def test_divisions_name_every_code_the_world_uses(clean: dict[str, pd.DataFrame]) -> None:
    villages = set(clean["households"]["village_code"])
    expected = villages | {v[:9] for v in villages} | {v[:6] for v in villages}
    divisions = clean["divisions"]
    assert set(divisions["code"]) == expected
    # all of them in the first delivery, on the roster day
    roster_day = clean["households"]["reported_date"].min()
    assert set(divisions.loc[divisions["reported_date"] == roster_day, "code"]) == expected
    suffix = {6: ("县", "区"), 9: ("镇", "乡"), 12: ("村",)}
    for code, name in zip(divisions["code"], divisions["name"], strict=True):
        assert name.endswith(suffix[len(code)]) and len(name) >= 2, (code, name)
    # names are unique among the divisions of one county at any delivery
    per_delivery = divisions.assign(county=divisions["code"].str[:6])
    assert not per_delivery.duplicated(["county", "reported_date", "name"]).any()


def test_renames_are_later_rows_and_the_feed_is_sparse(
    small_world: Path, clean: dict[str, pd.DataFrame]
) -> None:
    divisions = clean["divisions"]
    world = json.loads((small_world / "truth" / "world.json").read_text(encoding="utf-8"))
    renames = world["division_renames"]
    assert renames
    for rename in renames:
        rows = divisions[divisions["code"] == rename["code"]].sort_values("reported_date")
        old_rows = rows[rows["name"] == rename["old_name"]]
        new_rows = rows[rows["name"] == rename["new_name"]]
        assert len(old_rows) and len(new_rows), rename
        first_new = new_rows["reported_date"].min()
        assert first_new.startswith(rename["month"])
        assert old_rows["reported_date"].max() < first_new  # a later row renames it
        # point in time: the latest row known on a day decides the name
        before = rows[rows["reported_date"] < first_new].iloc[-1]["name"]
        assert before == rename["old_name"]
        assert rows.iloc[-1]["name"] == rename["new_name"]
    summary = json.loads((small_world / "truth" / "summary.json").read_text(encoding="utf-8"))
    files = sorted((small_world / "raw" / "divisions").iterdir())
    assert 1 < len(files) < summary["months"]  # not redelivered every month


@pytest.fixture(scope="module")
def defective_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny province with many planted defects (so the rare kinds occur)."""
    out = tmp_path_factory.mktemp("defective_world")
    simulate(
        out,
        households=150,
        months=13,
        start="2024-03",
        seed=3,
        settings=Settings(),
        params=WorldParams(bad_row_share=0.2),
    )
    return out


def test_defects_in_names_and_division_codes_are_listed(defective_world: Path) -> None:
    files = read_raw(defective_world / "raw")
    bad = load_bad_rows(defective_world / "truth")
    kinds = {(b[0], b[3], b[4]) for b in bad}
    assert ("persons", "name", "control_character") in kinds
    assert ("divisions", "code", "bad_division_code") in kinds
    assert ("divisions", "name", "control_character") in kinds
    assert find_violations(files) == bad


def test_ingest_quarantines_exactly_the_listed_rows(defective_world: Path, tmp_path: Path) -> None:
    import ingest
    from ingest.vault import read_table
    from tests.ingest.ingest_world import quarantined

    settings = Settings(home=tmp_path / "ws", pseudonym_key_file=None)
    report = ingest.ingest(defective_world / "raw", settings)
    bad = load_bad_rows(defective_world / "truth")
    pending = load_pending_rows(defective_world / "truth")
    assert report.pending == len(pending)
    # ingest may name a file with a content-hash suffix (`file#1a2b...`)
    assert {(q[0], q[1].split("#")[0], q[2], q[4]) for q in quarantined(settings)} == {
        (b[0], b[1], b[2], b[4]) for b in bad
    }
    stored = set(read_table(settings.vault_dir, "person_names")["name"].to_pylist())
    assert stored and not any(re.search(r"[\x00-\x1f\x7f]", n) for n in stored)
