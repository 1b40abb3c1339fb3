"""One builder per registry feed, returning exactly that feed's registry names; the code
lists the features name are the contract's; "a spell covers T" has one definition."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from doudi.contract import ASSET_TYPE, DISABILITY_TYPE, FEEDS, PROGRAM, RISK_TYPES
from doudi.months import Month
from doudi.settings import PROJECT_ROOT, Settings
from features import registry as reg
from features.asof import spell_covers
from features.build import absence_indicators
from features.builders import BUILDERS
from features.codes import contract_codes, contract_levels
from features.county import CountyAsOf, load_county
from tests.features.test_features_feeds import OTHER_COUNTY, build_world
from tests.features.warehouse_fixture import COUNTY

T = Month.parse("2024-06")


@pytest.fixture(scope="module", params=[COUNTY, OTHER_COUNTY])
def county(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> CountyAsOf:
    """The hand-made world at T: a county with every feed, and one with absent feeds."""
    warehouse = build_world(tmp_path_factory.mktemp("builders"))
    history = load_county(warehouse, request.param, T.end, T.end)
    return CountyAsOf(history, T.end, Settings(workers=1))


def test_every_registry_feed_has_one_builder_and_no_other_feed_has_one() -> None:
    assert set(BUILDERS) == set(reg.FEATURE_FEEDS)


def test_each_builder_returns_exactly_its_feeds_registry_names(county: CountyAsOf) -> None:
    built: dict[str, np.ndarray] = {}
    for feed in (*(f for f in reg.FEATURE_FEEDS if f != reg.DERIVED), reg.DERIVED):
        columns = BUILDERS[feed](county, built)
        assert sorted(columns) == sorted(s.name for s in reg.built_from(feed)), feed
        assert all(np.shape(v) == (county.n,) for v in columns.values()), feed
        built.update(columns)
    indicators = absence_indicators(county)
    assert sorted(indicators) == sorted(s.name for s in reg.FEATURES if s.is_absence_indicator)
    assert sorted([*built, *indicators]) == sorted(reg.feature_names())


def test_the_absent_feeds_county_says_so(county: CountyAsOf) -> None:
    indicators = absence_indicators(county)
    absent = {feed for feed, delivered in county.delivered.items() if not delivered}
    assert {n for n, v in indicators.items() if v.all()} == {
        reg.FEED_MISSING.name(f) for f in absent}
    if county.history.county == OTHER_COUNTY:  # build_world delivers no medical there
        assert "medical" in absent
    else:
        assert not absent


def test_generated_blocks_are_registry_features_from_the_contracts_codes() -> None:
    families = (reg.MEMBERS_AGED, reg.MEDICAL_OOP, reg.MEDICAL_OOP_PER_CAPITA,
                reg.DISABLED_BY_TYPE, reg.ASSISTANCE_NOW, reg.ASSETS_BY_TYPE, reg.FEED_MISSING)
    for family in families:
        assert set(family.names().values()) <= set(reg.BY_NAME), family.template
    assert reg.MEDICAL_OOP.name(12) == "medical_oop_12m"
    assert reg.MEMBERS_AGED.name((6, 11)) == "members_aged_6_11"
    assert reg.DISABLED_BY_TYPE.codes == tuple(DISABILITY_TYPE)
    assert reg.ASSETS_BY_TYPE.codes == tuple(ASSET_TYPE)
    assert set(reg.ASSISTANCE_NOW.codes) == set(PROGRAM) - {"tekun", "temporary"}
    assert reg.BY_NAME["assistance_dibao_now"].label_zh == "当前享受" + str(PROGRAM["dibao"])


def test_display_names_must_cover_exactly_the_contracts_codes() -> None:
    with pytest.raises(ValueError, match="not the contract's codes"):
        reg._names_of_codes(DISABILITY_TYPE, {"visual": "视力"})
    names = reg._names_of_codes({"b": None, "a": None}, {"a": "甲", "b": "乙"})
    assert list(names) == ["b", "a"]  # the contract's order


def test_hardship_types_stand_for_contract_risk_types() -> None:
    assert set(reg.HARDSHIP_RISK_TYPE) == set(reg.HARDSHIP_TYPES)
    for spec in reg.FEATURES:
        assert spec.risk_type is None or spec.risk_type in RISK_TYPES, spec.name
    assert reg.BY_NAME["medical_oop_12m"].risk_type == "illness"
    assert reg.BY_NAME["village_shock_share_3m"].risk_type is None


def test_code_checks_refuse_what_the_contract_does_not_have() -> None:
    assert contract_codes("persons", "status", "living") == ("living",)
    with pytest.raises(ValueError, match="not contract codes"):
        contract_codes("persons", "status", "alive")
    with pytest.raises(ValueError, match="contract codes"):
        contract_levels("housing", "safety_grade", {"A": 1.0, "B": 2.0, "C": 3.0})


def _enum_codes_by_column() -> dict[str, set[str]]:
    codes: dict[str, set[str]] = {}
    for feed in FEEDS:
        for column in feed.columns:
            if column.enum:
                codes.setdefault(column.name, set()).update(column.enum)
    return codes


def test_every_code_the_features_name_inline_is_a_contract_code() -> None:
    """`is_one_of(frame, "column", "code", ...)` literals anywhere in features/."""
    enum_codes = _enum_codes_by_column()
    named = []
    for path in sorted((PROJECT_ROOT / "features").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "is_one_of" and len(node.args) >= 3):
                continue
            column = node.args[1]
            for arg in node.args[2:]:
                if isinstance(column, ast.Constant) and isinstance(arg, ast.Constant):
                    named.append((path.name, node.lineno, column.value, arg.value))
    assert len(named) > 10  # the walk found the builders' codes
    wrong = [n for n in named if n[3] not in enum_codes.get(n[2], set())]
    assert not wrong, wrong


def test_a_spell_covers_the_day_from_its_start_to_its_end_inclusive() -> None:
    t = date(2024, 3, 31)
    start = np.array(["2024-01-01", "2024-01-01", "2024-01-01", "2024-04-01", "2024-03-31",
                      "2024-01-01"], dtype="datetime64[D]")
    end = np.array(["NaT", "2024-03-30", "2024-03-31", "NaT", "NaT", "2024-06-30"],
                   dtype="datetime64[D]")
    expected = [True, False, True, False, True, True]
    assert spell_covers(start, end, t).tolist() == expected
    # pandas timestamps (nanoseconds, NaT for open spells) say the same
    as_pandas = spell_covers(pd.Series(pd.to_datetime(start)), pd.Series(pd.to_datetime(end)), t)
    assert as_pandas.tolist() == expected



_ENTRY = """
[[feature]]
name = "{name}"
feed = "persons"
aggregation = "count"
unit = "persons"
label_zh = "人数"
description = "People."
hardship = "demography"
template_zh = "{{value:.0f}} 人"
group = "people"
missing = "always"
"""


def test_registry_file_loads_plain_entries_and_expands_blocks_code_by_code(
        tmp_path: Path) -> None:
    block = """
[[feature]]
family = "MEDICAL_OOP"
feed = "medical"
window_months = "{w}"
aggregation = "sum"
unit = "yuan"
label_zh = "近{w}个月"
description = "Last {w} months."
hardship = "medical"
template_zh = "近{w}个月 {{value:,.0f}} 元"
group = "medical_oop"
missing = "zero"
"""
    per_member = block.replace('"MEDICAL_OOP"', '"MEDICAL_OOP_PER_CAPITA"\nwith_previous = true')
    path = tmp_path / "registry.toml"
    path.write_text(_ENTRY.format(name="people") + block + per_member, encoding="utf-8")
    loaded = reg._load(path)
    assert [d.name for d in loaded] == ["people", "medical_oop_1m", "medical_oop_1m_per_capita",
                                        "medical_oop_3m", "medical_oop_3m_per_capita",
                                        "medical_oop_6m", "medical_oop_6m_per_capita",
                                        "medical_oop_12m", "medical_oop_12m_per_capita"]
    three = loaded[3]
    assert three.window_months == 3 and three.label_zh == "近3个月"
    assert three.explain(1234.0) == "近3个月 1,234 元"
    assert loaded[0].template_zh == "{value:.0f} 人" and loaded[0].window_months is None


def test_registry_file_refuses_unknown_or_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(_ENTRY.format(name="people") + 'colour = "red"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"people.*colour"):
        reg._load(path)
    path.write_text(_ENTRY.format(name="people").replace('unit = "persons"\n', ""),
                    encoding="utf-8")
    with pytest.raises(ValueError, match="unit"):
        reg._load(path)
    path.write_text('[[feature]]\nfamily = "MEDICAL_OOP"\nwith_previous = true\n',
                    encoding="utf-8")
    with pytest.raises(ValueError, match="with_previous"):
        reg._load(path)
