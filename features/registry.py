"""The feature registry: the one source of truth for every feature column.

Each definition says where a feature comes from (feed, window, aggregation), what it
means (Chinese label, English description, unit, hardship type), how an
explanation sentence quotes the household's own value (`template_zh`), which
reason `group` it belongs to, what "no data" means (`missing`) and, where the
description documents absence as a signal, what a missing value tells the caseworker
(`absent_zh`; elsewhere a missing value is never a reason):

- `zero`: the feed was delivered and nothing happened -> 0; NaN (and
  `<feed>_feed_missing` = 1) when the feed is absent for the county.
- `nan`: "no such thing yet" (e.g. no income check ever) -> NaN; also NaN when
  the feed is absent for the county.
- `always`: always defined (required feeds, derived indicators).

Every feature column is float64 (booleans as 0/1) so models see one dtype and
NaN can mark missing everywhere; `dtype` records the meaning.

The definitions are data: `registry.toml` beside this module, in column order. Blocks
generated from one name template (one column per window or contract code) are the
`FeatureFamily`s here: the file's block entries and the feature builders
(`features.builders`) both take the names from them. Code lists come from
`doudi.contract`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

from doudi.contract import ASSET_TYPE, DISABILITY_TYPE, FEED_NAMES, PROGRAM, RISK_TYPES
from doudi.contract import feed as contract_feed
from features.codes import TEKUN, TEMPORARY

Dtype = Literal["numeric", "categorical", "bool"]
Missing = Literal["zero", "nan", "always"]

# The registry's hardship types (what a feature speaks to) and the contract's risk type
# (`doudi.contract.RISK_TYPES`) each stands for when scoring names an alert's types from
# its reasons (None: village/county context speaks to no household hardship).
HARDSHIP_RISK_TYPE: Mapping[str, str | None] = {
    "medical": "illness",
    "education": "education",
    "housing": "housing",
    "employment": "unstable_employment",
    "disaster": "disaster",
    "disability": "disability",
    "income": "other",
    "demography": "labor_shortage",
    "assistance": "other",
    "context": None,
}
HARDSHIP_TYPES: tuple[str, ...] = tuple(HARDSHIP_RISK_TYPE)

# Key columns every feature frame starts with (not features).
KEY_COLUMNS: tuple[str, ...] = ("household_key", "as_of", "county_code", "village_code")
# The feed of features combined from several feeds.
DERIVED = "derived"
# The reason group of the `<feed>_feed_missing` indicators.
FEED_MISSING_GROUP = "feed_missing"


@dataclass(frozen=True, kw_only=True)
class FeatureDefinition:
    """One feature column: where it comes from, what it means, how it is explained."""

    name: str
    feed: str  # source feed (DERIVED when combined from several)
    window_months: int | None = None  # None: the latest state / whole history known at T
    aggregation: str
    unit: str
    dtype: Dtype = "numeric"
    label_zh: str
    description: str
    hardship: str
    template_zh: str
    group: str
    missing: Missing
    # What a missing value (NaN, the feed delivered) says, where the description documents
    # absence as a signal (e.g. "never assessed"); "" = a missing value is not a reason.
    absent_zh: str = ""

    def explain(self, value: float) -> str:
        """The Chinese explanation sentence for this household's value."""
        return self.template_zh.format(value=value)

    @property
    def risk_type(self) -> str | None:
        """The contract risk type this feature's hardship stands for (None: context)."""
        return HARDSHIP_RISK_TYPE[self.hardship]

    @property
    def is_absence_indicator(self) -> bool:
        """A `<feed>_feed_missing` indicator (set for every optional feed, not by a builder)."""
        return self.group == FEED_MISSING_GROUP


Code = TypeVar("Code", int, str, tuple[int, int])


@dataclass(frozen=True)
class FeatureFamily(Generic[Code]):
    """Features named from one template, one per code (a window, a contract code, a range).
    `placeholders` gives a code's values for the `{...}` of its registry.toml block."""

    template: str
    codes: tuple[Code, ...]
    placeholders: Callable[[Code], Mapping[str, object]] = field(compare=False, repr=False)

    def name(self, code: Code) -> str:
        return self.template.format(*code) if isinstance(code, tuple) else self.template.format(
            code)

    def names(self) -> dict[Code, str]:
        """Code -> feature name, in registry order."""
        return {code: self.name(code) for code in self.codes}


@dataclass(frozen=True)
class GroupColumn:
    """An attribute the fairness audit slices by: kept beside, not inside, the features."""

    name: str
    label_zh: str
    description: str


GROUP_COLUMNS: tuple[GroupColumn, ...] = (
    GroupColumn("group_head_ethnic_minority", "户主为少数民族",
                "Head's ethnicity is recorded and is not 汉族 (NaN when not recorded)."),
    GroupColumn("group_head_elderly", "老年户主", "Head of household aged 65 or over at T."),
    GroupColumn("group_disabled_member", "有残疾成员",
                "At least one current member holds a disability certificate known at T."),
    GroupColumn("group_former_poor", "脱贫户", "Roster poverty_history is former_poor."),
    GroupColumn("group_relocated", "易地搬迁户",
                "Roster says relocated (NaN when the roster leaves it empty)."),
)

# -- the generated blocks --------------------------------------------------------------
# (lowest age, highest age) -> 中文 label, 中文 in the explanation, school stage
_AGE_BANDS: dict[tuple[int, int], dict[str, str]] = {
    (0, 5): {"label_zh": "学龄前儿童人数", "said": "学龄前儿童", "stage": "pre-school"},
    (6, 11): {"label_zh": "小学年龄儿童人数", "said": "小学年龄儿童",
              "stage": "primary school age"},
    (12, 14): {"label_zh": "初中年龄儿童人数", "said": "初中年龄子女",
               "stage": "junior secondary age"},
    (15, 17): {"label_zh": "高中年龄子女人数", "said": "高中年龄子女",
               "stage": "senior secondary age"},
}


def _names_of_codes(codes: Mapping[str, str | None], names: dict[str, str]) -> dict[str, str]:
    """Display names of contract codes, in the contract's order; refused unless `names`
    covers exactly the contract's codes (a code the contract gains needs a name here)."""
    if set(names) != set(codes):
        raise ValueError(f"display names {sorted(names)} are not the contract's codes "
                         f"{sorted(codes)}")
    return {code: names[code] for code in codes}


# Display names of contract codes the contract leaves without a Chinese term (its terms
# are the spellings ingest accepts, so they are not added there).
DISABILITY_TYPE_ZH = _names_of_codes(DISABILITY_TYPE, {
    "visual": "视力", "hearing": "听力", "speech": "言语", "physical": "肢体",
    "intellectual": "智力", "mental": "精神", "multiple": "多重",
})
ASSET_TYPE_ZH = _names_of_codes(ASSET_TYPE, {
    "vehicle": "非农用车辆", "urban_housing": "城镇商品房",
    "commercial_property": "商铺", "business_registration": "经营主体",
})
OPTIONAL_FEEDS: tuple[str, ...] = (
    "medical", "employment", "education", "housing", "disability", "disasters",
    "social_assistance", "income_checks", "agriculture", "assets",
)
_FEED_HARDSHIP = {
    "medical": "medical", "employment": "employment", "education": "education",
    "housing": "housing", "disability": "disability", "disasters": "disaster",
    "social_assistance": "assistance", "income_checks": "income", "agriculture": "income",
    "assets": "income",
}


def _window(months: int) -> dict[str, object]:
    return {"w": months}


MEMBERS_AGED = FeatureFamily("members_aged_{}_{}", tuple(_AGE_BANDS),
                             lambda band: {"lo": band[0], "hi": band[1], **_AGE_BANDS[band]})
MEDICAL_OOP = FeatureFamily("medical_oop_{}m", (1, 3, 6, 12), _window)
MEDICAL_OOP_PER_CAPITA = FeatureFamily("medical_oop_{}m_per_capita", MEDICAL_OOP.codes, _window)
DISABLED_BY_TYPE = FeatureFamily("disabled_members_{}", tuple(DISABILITY_TYPE_ZH),
                                 lambda kind: {"code": kind, "zh": DISABILITY_TYPE_ZH[kind]})
# Programmes of running spells (features.codes says why tekun and temporary are not).
ASSISTANCE_NOW = FeatureFamily(
    "assistance_{}_now", tuple(p for p in PROGRAM if p not in (TEKUN, TEMPORARY)),
    lambda programme: {"code": programme, "zh": PROGRAM[programme]})
ASSETS_BY_TYPE = FeatureFamily("assets_{}", tuple(ASSET_TYPE_ZH),
                               lambda kind: {"code": kind, "zh": ASSET_TYPE_ZH[kind]})
FEED_MISSING = FeatureFamily(
    "{}_feed_missing", OPTIONAL_FEEDS,
    lambda feed: {"feed": feed, "title": contract_feed(feed).title_zh,
                  "hardship": _FEED_HARDSHIP[feed]})


# -- loading registry.toml -----------------------------------------------------------------
REGISTRY_FILE = Path(__file__).with_name("registry.toml")
# Families a registry.toml block may name.
FAMILIES: dict[str, FeatureFamily[Any]] = {
    "MEMBERS_AGED": MEMBERS_AGED, "MEDICAL_OOP": MEDICAL_OOP,
    "MEDICAL_OOP_PER_CAPITA": MEDICAL_OOP_PER_CAPITA, "DISABLED_BY_TYPE": DISABLED_BY_TYPE,
    "ASSISTANCE_NOW": ASSISTANCE_NOW, "ASSETS_BY_TYPE": ASSETS_BY_TYPE,
    "FEED_MISSING": FEED_MISSING,
}
_BLOCK_KEYS = ("family", "with_previous")


def _definition(entry: Mapping[str, Any]) -> FeatureDefinition:
    try:
        return FeatureDefinition(**entry)
    except TypeError as e:  # a field missing or unknown
        raise ValueError(f"{REGISTRY_FILE.name}: {entry.get('name')}: {e}") from None


def _expand(block: list[dict[str, Any]]) -> list[FeatureDefinition]:
    """A block's columns: for each code of its families, one column per entry in turn."""
    families = [FAMILIES[entry["family"]] for entry in block]
    if any(f.codes != families[0].codes for f in families):
        raise ValueError(f"{REGISTRY_FILE.name}: a with_previous block's families have "
                         "different codes")
    out = []
    for code in families[0].codes:
        for entry, family in zip(block, families, strict=True):
            values = family.placeholders(code)
            fields = {k: v.format(**values) if isinstance(v, str) else v
                      for k, v in entry.items() if k not in _BLOCK_KEYS}
            if "window_months" in fields:
                fields["window_months"] = int(fields["window_months"])
            out.append(_definition({"name": family.name(code), **fields}))
    return out


def _load(path: Path) -> tuple[FeatureDefinition, ...]:
    """The definitions of registry.toml in order, family blocks expanded."""
    blocks: list[list[dict[str, Any]]] = []
    for entry in tomllib.loads(path.read_text(encoding="utf-8"))["feature"]:
        if entry.get("with_previous") and blocks and "family" in blocks[-1][0]:
            blocks[-1].append(entry)
        elif entry.get("with_previous"):
            raise ValueError(f"{path.name}: with_previous after no family block")
        else:
            blocks.append([entry])
    out: list[FeatureDefinition] = []
    for block in blocks:
        out += _expand(block) if "family" in block[0] else [_definition(block[0])]
    return tuple(out)


FEATURES: tuple[FeatureDefinition, ...] = _load(REGISTRY_FILE)
BY_NAME: dict[str, FeatureDefinition] = {s.name: s for s in FEATURES}
# Feeds in the order their first feature appears (DERIVED among them).
FEATURE_FEEDS: tuple[str, ...] = tuple(dict.fromkeys(s.feed for s in FEATURES))


def feature_names() -> list[str]:
    """Feature column names in registry order."""
    return [s.name for s in FEATURES]


def built_from(feed: str) -> tuple[FeatureDefinition, ...]:
    """The features the builder of `feed` computes: the feed's own, bar its absence indicator."""
    return tuple(s for s in FEATURES if s.feed == feed and not s.is_absence_indicator)


def group_column_names() -> list[str]:
    return [g.name for g in GROUP_COLUMNS]


def _version() -> str:
    payload = json.dumps(
        {"features": [asdict(s) for s in FEATURES], "groups": [asdict(g) for g in GROUP_COLUMNS]},
        ensure_ascii=False, sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


REGISTRY_VERSION: str = _version()


def code_version() -> str:
    """A digest of the features package's source and registry: anything kept from earlier
    feature output (the monitor's reference profile) is stale when it changes."""
    digest = hashlib.sha256()
    for path in [*sorted(REGISTRY_FILE.parent.glob("*.py")), REGISTRY_FILE]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _check() -> None:
    """Fail at import on a malformed registry: duplicate names, a value outside its field's
    choices (feed, hardship, dtype, missing, window), an absence text where NaN is not a
    documented signal, a hardship standing for no contract risk type, a programme the
    contract gives no Chinese name."""
    if len(BY_NAME) != len(FEATURES):
        raise ValueError("duplicate feature names in the registry")
    for s in FEATURES:
        choices = {"feed": (*FEED_NAMES, DERIVED), "hardship": HARDSHIP_TYPES,
                   "dtype": get_args(Dtype), "missing": get_args(Missing)}
        for name, allowed in choices.items():
            if getattr(s, name) not in allowed:
                raise ValueError(f"{s.name}: unknown {name} {getattr(s, name)!r}")
        if s.window_months is not None and not (isinstance(s.window_months, int)
                                                and s.window_months > 0):
            raise ValueError(f"{s.name}: window_months must be a number of months")
        if s.absent_zh and s.missing != "nan":
            raise ValueError(f"{s.name}: absent_zh needs missing = \"nan\" (NaN otherwise "
                             "means only that the feed is absent)")
    for hardship, risk_type in HARDSHIP_RISK_TYPE.items():
        if risk_type is not None and risk_type not in RISK_TYPES:
            raise ValueError(f"hardship {hardship}: {risk_type!r} is not a contract risk type")
    unnamed = [p for p in ASSISTANCE_NOW.codes if not PROGRAM[p]]
    if unnamed:
        raise ValueError(f"programmes without a Chinese name in the contract: {unnamed}")


_check()
