"""The identifying text the records carry: names, phone numbers, division names.

All of it is drawn from small built-in character lists with the world's random
stream, so the same seed gives the same names. The names are combinations of
common characters, not a list of real people; the phone numbers are random
digits behind real mobile prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from province import timeutil

# Common Han surnames, most frequent first (drawn with Zipf-like weights).
HAN_SURNAMES = (
    "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐韩冯董程曹袁邓许沈曾彭吕苏卢蒋蔡贾"
    "丁魏薛叶余潘杜戴夏钟汪田任姜范方石姚谭邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷"
)
# Surnames of Hui, Dongxiang, Bonan and Salar families in Linxia and Zhangjiachuan.
MUSLIM_SURNAMES = "马马马马马马冶妥韩何杨穆海白丁金沙王汪唐"
GIVEN_MALE = "建国军伟明华强刚斌勇峰磊涛鹏辉杰亮志海宏平福贵成德生荣喜山林文俊浩宇龙飞东"
GIVEN_FEMALE = "芳娟英秀兰玉梅红霞燕丽艳敏静婷娜琴花萍莉桂凤春慧雪晶丹月娥"
GIVEN_ANY = "小永世彦子家学光庆天新佳金正"
# Tibetan personal names are two common elements and no surname (扎西才让, 卓玛草).
TIBETAN_FIRST = (
    "扎西",
    "才让",
    "尼玛",
    "达瓦",
    "次仁",
    "索南",
    "格桑",
    "旦增",
    "洛桑",
    "桑杰",
    "更登",
    "仁青",
    "贡保",
    "多杰",
)
TIBETAN_MALE = ("多杰", "才让", "东智", "加措", "公保", "当周", "坚措", "旦正", "扎西", "南杰")
TIBETAN_FEMALE = ("卓玛", "拉姆", "措", "吉", "草", "央金", "卓嘎", "德吉", "措毛", "拉毛")
# ETHNICITIES (world.py) positions
HUI, DONGXIANG, TIBETAN, BONAN, SALAR = 1, 2, 3, 4, 5
MUSLIM = (HUI, DONGXIANG, BONAN, SALAR)
# relation codes (contract RELATION order)
HEAD, SPOUSE, CHILD, PARENT, GRANDCHILD, SIBLING = 0, 1, 2, 3, 4, 5

# Mainland mobile prefixes (13x, 15x, 17x, 18x, 19x) in use.
PHONE_PREFIXES = np.array(
    [
        *range(130, 140),
        150,
        151,
        152,
        153,
        *range(155, 160),
        170,
        173,
        175,
        176,
        177,
        178,
        *range(180, 190),
        191,
        193,
        *range(195, 200),
    ]
)

# Place-name stems: first character x second character.
PLACE_FIRST = "兴红新和团胜前东西南北上中下大小高马王李杨柳石沙黄青白金安长永太平三"
PLACE_SECOND = "隆星庄平结利进湾坪沟川岔台峪寨堡坡梁塬滩河山岭洼"
COUNTY_FIRST = "安平永定宁和兴丰泰康庆长广清"
COUNTY_SECOND = "川源山原河阳西远乐水昌谷宁"
COUNTY, TOWNSHIP, VILLAGE = 0, 1, 2


def _zipf(n: int) -> np.ndarray:
    weights = 1.0 / (np.arange(n) + 4.0)
    return weights / weights.sum()


def _chars(text: str) -> pa.Array:
    return pa.array(list(text))


def person_names(
    hh: np.ndarray,
    relation: np.ndarray,
    male: np.ndarray,
    ethnicity: np.ndarray,
    rng: np.random.Generator,
) -> pa.Array:
    """A plausible name per person (surname + one or two given characters).

    Persons are grouped by household with the head first (as `build_world` lays them
    out). Heads, spouses and others keep their own surname; children and grandchildren
    take the father's (usually) or the mother's, siblings and the head's father the
    head's. Tibetan families use two-element names without a surname.
    """
    p = len(hh)
    n = int(hh.max()) + 1 if p else 0
    muslim = np.isin(ethnicity, MUSLIM)
    han_pick = rng.choice(len(HAN_SURNAMES), p, p=_zipf(len(HAN_SURNAMES)))
    muslim_pick = rng.integers(0, len(MUSLIM_SURNAMES), p)
    surnames = pa.array(list(HAN_SURNAMES + MUSLIM_SURNAMES))
    own = np.where(muslim, len(HAN_SURNAMES) + muslim_pick, han_pick)

    head = np.full(n, -1, dtype=np.int64)
    spouse = np.full(n, -1, dtype=np.int64)
    head[hh[relation == HEAD]] = np.flatnonzero(relation == HEAD)
    spouse[hh[relation == SPOUSE]] = np.flatnonzero(relation == SPOUSE)
    head_of = head[hh]
    spouse_of = np.where(spouse[hh] >= 0, spouse[hh], head_of)
    head_male = male[head_of]
    father = np.where(head_male, own[head_of], own[spouse_of])
    mother = np.where(head_male, own[spouse_of], own[head_of])
    from_father = rng.random(p) < 0.92
    lineage = np.where(from_father, father, mother)
    surname = own.copy()
    takes_lineage = (relation == CHILD) | (relation == GRANDCHILD)
    surname[takes_lineage] = lineage[takes_lineage]
    takes_head = (relation == SIBLING) | ((relation == PARENT) & male)
    surname[takes_head] = own[head_of][takes_head]

    first, second = _given_names(male, rng)
    han = pc.binary_join_element_wise(surnames.take(pa.array(surname)), first, second, "")
    return pc.if_else(pa.array(ethnicity == TIBETAN), _tibetan_names(male, rng), han)


def _given_names(male: np.ndarray, rng: np.random.Generator) -> tuple[pa.Array, pa.Array]:
    """One or two given characters by sex: (first, second), the second often empty."""
    p = len(male)
    given_m, given_f, given_any = _chars(GIVEN_MALE), _chars(GIVEN_FEMALE), _chars(GIVEN_ANY)
    first = pc.if_else(
        pa.array(male),
        given_m.take(pa.array(rng.integers(0, len(given_m), p))),
        given_f.take(pa.array(rng.integers(0, len(given_f), p))),
    )
    # the second given character: gendered or neutral; a third of names have none
    second_gendered = pc.if_else(
        pa.array(male),
        given_m.take(pa.array(rng.integers(0, len(given_m), p))),
        given_f.take(pa.array(rng.integers(0, len(given_f), p))),
    )
    second_neutral = given_any.take(pa.array(rng.integers(0, len(given_any), p)))
    roll = rng.random(p)
    empty = pa.repeat(pa.scalar(""), p)
    # neutral characters read as the first of two (永强, 佳丽)
    first_char = pc.if_else(pa.array(roll >= 0.8), second_neutral, first)
    second = pc.if_else(
        pa.array(roll < 0.33), empty, pc.if_else(pa.array(roll >= 0.8), first, second_gendered)
    )
    return first_char, second


def _tibetan_names(male: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Two common name elements, the second by sex; a quarter use the first alone."""
    p = len(male)
    tib_first = pa.array(TIBETAN_FIRST).take(pa.array(rng.integers(0, len(TIBETAN_FIRST), p)))
    tib_second = pc.if_else(
        pa.array(male),
        pa.array(TIBETAN_MALE).take(pa.array(rng.integers(0, len(TIBETAN_MALE), p))),
        pa.array(TIBETAN_FEMALE).take(pa.array(rng.integers(0, len(TIBETAN_FEMALE), p))),
    )
    single = rng.random(p) < 0.25  # one element alone (扎西, 才让)
    return pc.if_else(
        pa.array(single),
        tib_first,
        pc.binary_join_element_wise(tib_first, tib_second, ""),
    )


def phone_numbers(n: int, missing_share: float, rng: np.random.Generator) -> pa.Array:
    """An 11-digit mobile number per household (13x/15x/17x/18x/19x); null for some."""
    prefix = PHONE_PREFIXES[rng.integers(0, len(PHONE_PREFIXES), n)].astype(np.int64)
    number = prefix * 10**8 + rng.integers(0, 10**8, n)
    texts = pa.array(number).cast(pa.string())
    missing = rng.random(n) < missing_share
    return pc.if_else(pa.array(missing), pa.nulls(n, pa.string()), texts)


def synthetic_county_names(count: int, taken: set[str]) -> list[str]:
    """`count` county names (stem + 县) not among `taken`, in a fixed order."""
    out: list[str] = []
    for a in COUNTY_FIRST:
        for b in COUNTY_SECOND:
            name = f"{a}{b}县"
            if a != b and name not in taken and len(out) < count:
                out.append(name)
    k = 0
    while len(out) < count:  # very large worlds: numbered names
        k += 1
        name = f"新{k}县"
        if name not in taken:
            out.append(name)
    return out


@dataclass
class Divisions:
    """Every county, township and village of the world with its names over time.

    `names` is the table of every name any division ever had; `name` the index of the
    name each division has at the start; renames are planned by `plan_renames`.
    """

    codes: np.ndarray  # str: 6, 9 or 12 digits
    level: np.ndarray  # COUNTY, TOWNSHIP, VILLAGE
    county: np.ndarray  # county index
    name: np.ndarray  # index into `names` at the start
    names: list[str]
    # planned renames, in month order: division index, month, new name index
    rename_division: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rename_month: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rename_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _stems() -> list[str]:
    return [a + b for a in PLACE_FIRST for b in PLACE_SECOND]


def build_divisions(
    county_codes: list[str],
    county_names: list[str],
    village_codes: list[str],
    rng: np.random.Generator,
) -> Divisions:
    """Names for every county, township and village code: 县/区, 镇/乡, 村.

    Township 001 of a county is its seat (城关镇); other names are drawn without
    replacement inside their county, so they are unique there.
    """
    stems = _stems()
    townships = sorted({v[:9] for v in village_codes})
    codes = [*county_codes, *townships, *village_codes]
    level = (
        [COUNTY] * len(county_codes) + [TOWNSHIP] * len(townships) + [VILLAGE] * len(village_codes)
    )
    county_at = {c: k for k, c in enumerate(county_codes)}
    county = [county_at[c[:6]] for c in codes]
    names = list(county_names)
    index = list(range(len(county_names)))
    by_county: dict[int, list[int]] = {}
    for k, c in enumerate(county):
        if level[k] != COUNTY:
            by_county.setdefault(c, []).append(k)
    extra: list[tuple[int, str]] = []
    for members in by_county.values():
        picked = rng.choice(len(stems), len(members), replace=False)
        town_kind = rng.random(len(members)) < 0.65
        for k, stem_at, is_town in zip(members, picked, town_kind, strict=True):
            stem = stems[int(stem_at)]
            if level[k] == VILLAGE:
                extra.append((k, stem + "村"))
            elif codes[k].endswith("001"):
                extra.append((k, "城关镇"))
            else:
                extra.append((k, stem + ("镇" if is_town else "乡")))
    name_of = dict(extra)
    for k in range(len(county_names), len(codes)):
        names.append(name_of[k])
        index.append(len(names) - 1)
    return Divisions(
        codes=np.array(codes),
        level=np.array(level, dtype=np.int8),
        county=np.array(county, dtype=np.int32),
        name=np.array(index, dtype=np.int64),
        names=names,
    )


def plan_renames(
    divisions: Divisions,
    start_month: int,
    end_month: int,
    share_per_year: float,
    rng: np.random.Generator,
) -> None:
    """Choose a few townships and villages to rename after the start month.

    A 乡 becomes a 镇 (乡改镇), a 镇 or a village gets a new name. Never in January
    (the month of the annual redelivery), so a rename never ties with another row of
    the same code. At least two renames, so point-in-time naming is always exercised.
    """
    months = [m for m in range(start_month + 1, end_month + 1) if timeutil.calendar_month(m) != 1]
    candidates = np.flatnonzero(divisions.level != COUNTY)
    if not months or not len(candidates):
        return
    years = (end_month - start_month + 1) / 12
    count = max(2, round(share_per_year * len(divisions.codes) * years))
    chosen = rng.choice(candidates, min(count, len(candidates)), replace=False)
    month = np.sort(rng.choice(np.array(months), len(chosen)))
    stems = _stems()
    used: dict[int, set[str]] = {}  # names in use per county: a new name is unique there
    for k, name_at in enumerate(divisions.name):
        used.setdefault(int(divisions.county[k]), set()).add(divisions.names[int(name_at)])
    new_names = []
    for k in chosen:
        old = divisions.names[int(divisions.name[k])]
        taken = used[int(divisions.county[k])]
        new = old[:-1] + "镇" if old.endswith("乡") else old
        if new in taken:
            suffix = "村" if divisions.level[k] == VILLAGE else "镇"
            free = [s + suffix for s in stems if s + suffix not in taken]
            new = free[int(rng.integers(0, len(free)))]
        taken.add(new)
        divisions.names.append(new)
        new_names.append(len(divisions.names) - 1)
    divisions.rename_division = chosen.astype(np.int64)
    divisions.rename_month = month.astype(np.int64)
    divisions.rename_name = np.array(new_names, dtype=np.int64)
