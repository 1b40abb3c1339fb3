"""The input data contract (`docs/data-contract.md`) as code: one source of truth.

Every feed the departments deliver is described once here: its columns with
Chinese aliases, logical types, enum codes (with accepted Chinese terms), record
key and the column whose date a row's `reported_date` may not precede. The
generator writes it, ingest validates against it, and the docs are generated
from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache


class Kind(StrEnum):
    """Logical column types of the contract."""

    ID = "id"  # 18-character resident identity number (GB 11643-1999)
    STR = "str"
    VILLAGE = "village"  # 12-digit statistical division code
    ENUM = "enum"
    ENUM_LIST = "enum_list"  # ';'-separated enum codes
    DATE = "date"  # YYYY-MM-DD
    MONTH = "month"  # YYYY-MM
    INT = "int"
    FLOAT = "float"
    MONEY = "money"  # yuan, at most 2 decimals, non-negative unless signed
    BOOL = "bool"


@dataclass(frozen=True)
class Column:
    name: str
    alias: str
    kind: Kind
    nullable: bool = False
    # enum code -> accepted Chinese term (None when the contract gives none)
    enum: Mapping[str, str | None] | None = None
    signed: bool = False  # money that may be negative
    sensitive: bool = False  # personal identifier: never leaves ingest in clear
    min_value: float | None = None
    max_value: float | None = None
    # the shape a text value must have (a full-match regular expression) and the
    # contract's words for it
    pattern: str | None = None
    pattern_text: str = ""
    # sensitive column kept only in the identity vault: never written to the warehouse
    vault_only: bool = False

    def enum_lookup(self) -> dict[str, str]:
        """Accepted spelling -> canonical code (codes and their Chinese terms)."""
        assert self.enum is not None
        lookup = {code: code for code in self.enum}
        lookup.update({zh: code for code, zh in self.enum.items() if zh})
        return lookup


@dataclass(frozen=True)
class Feed:
    name: str
    title_zh: str
    department: str
    required: bool
    key: tuple[str, ...]
    contract_columns: tuple[Column, ...]  # every column of the contract, in its order
    grain: str
    # Column holding the date of the event a row describes: reported_date may
    # not precede it (for MONTH columns: not before the month's first day).
    event_column: str | None = None
    notes: str = ""
    person_level: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "person_level", "person_id" in self.column_names)

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns that travel past ingest (the warehouse's): all but vault-only ones."""
        return tuple(c for c in self.contract_columns if not c.vault_only)

    @property
    def vault_columns(self) -> tuple[Column, ...]:
        """Sensitive columns kept only in the identity vault (names, phone numbers)."""
        return tuple(c for c in self.contract_columns if c.vault_only)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.contract_columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def header_lookup(self) -> dict[str, str]:
        """Accepted header (canonical or Chinese alias) -> canonical name (every contract
        column, vault-only ones included)."""
        out = {c.name: c.name for c in self.contract_columns}
        out.update({c.alias: c.name for c in self.contract_columns})
        return out


# Sensitive personal information: names and phone numbers never travel past ingest
# (contract, "Layout and common rules"). Where a feed's contract names such a column
# (`persons.name`, `households.contact_phone`) it goes to the identity vault; in any
# other feed it is an unknown extra column whose values are never read.
SENSITIVE_EXTRA_COLUMNS: frozenset[str] = frozenset(
    {"name", "姓名", "contact_phone", "联系电话", "phone", "手机号", "电话", "address", "住址"}
)

TRUE_SPELLINGS = frozenset({"true", "1", "是", "True", "TRUE"})
FALSE_SPELLINGS = frozenset({"false", "0", "否", "False", "FALSE"})


def _reported() -> Column:
    return Column("reported_date", "上报日期", Kind.DATE)


def _person() -> Column:
    return Column("person_id", "身份证号", Kind.ID, sensitive=True)


HOUSEHOLD_ID_PATTERN = r"[0-9A-Za-z_-]{1,32}"
DIVISION_CODE_PATTERN = r"[0-9]{6}|[0-9]{9}|[0-9]{12}"
# A 12-digit village code's first 6 digits are its county's code, its first 9 its township's.
TOWNSHIP_DIGITS = 9


def township_of(village_code: str) -> str:
    """The township of a village (or of a township: its own code): the first 9 digits."""
    return village_code[:TOWNSHIP_DIGITS]


def _household() -> Column:
    return Column(
        "household_id", "户编号", Kind.STR, sensitive=True, pattern=HOUSEHOLD_ID_PATTERN,
        pattern_text="1-32 characters from digits, ASCII letters, `-` and `_`",
    )


def _money(name: str, alias: str, *, nullable: bool = False, signed: bool = False) -> Column:
    return Column(name, alias, Kind.MONEY, nullable=nullable, signed=signed)


def _bool(name: str, alias: str, *, nullable: bool = False) -> Column:
    return Column(name, alias, Kind.BOOL, nullable=nullable)


def _enum(
    name: str, alias: str, values: Mapping[str, str | None], *, nullable: bool = False
) -> Column:
    return Column(name, alias, Kind.ENUM, nullable=nullable, enum=values)


POVERTY_HISTORY = {"former_poor": "脱贫户", "ordinary": "一般农户"}
RELATION = {
    "head": None,
    "spouse": None,
    "child": None,
    "parent": None,
    "grandchild": None,
    "sibling": None,
    "other": None,
}
SEX = {"M": None, "F": None}
PERSON_STATUS = {"living": None, "deceased": None, "moved_out": None, "moved_in": None}
EMPLOYMENT_STATUS = {
    "employed_local": None,
    "migrant": "外出务工",
    "self_employed": None,
    "unemployed": "登记失业",
    "public_welfare_post": "公益岗",
    "not_in_labor_force": None,
}
EDUCATION_STAGE = {
    "preschool": None,
    "primary": None,
    "junior_secondary": None,
    "senior_secondary": None,
    "vocational": None,
    "higher": None,
}
EDUCATION_STATUS = {"enrolled": None, "dropped_out": "辍学", "suspended": None, "graduated": None}
SAFETY_GRADE = {"A": None, "B": None, "C": None, "D": "危房"}
DISABILITY_TYPE = {
    "visual": None,
    "hearing": None,
    "speech": None,
    "physical": None,
    "intellectual": None,
    "mental": None,
    "multiple": None,
}
HAZARD = {
    "flood": None,
    "drought": None,
    "hail": None,
    "frost": None,
    "landslide": None,
    "earthquake": None,
    "fire": None,
    "other": None,
}
HOUSE_DAMAGE = {"none": None, "minor": None, "severe": None, "collapsed": None}
PROGRAM = {
    "dibao": "低保",
    "tekun": "特困供养",
    "dibao_marginal": "低保边缘",
    "rigid_expenditure": "刚性支出困难",
    "temporary": "临时救助",
}
ASSET_TYPE = {
    "vehicle": None,
    "urban_housing": None,
    "commercial_property": None,
    "business_registration": None,
}
MONITORING_EVENT = {"identified": "纳入监测", "risk_eliminated": "风险消除"}
MONITORING_CATEGORY = {
    "unstable_former_poor": "脱贫不稳定户",
    "marginal": "边缘易致贫户",
    "sudden_hardship": "突发严重困难户",
}
RISK_TYPES = {
    "illness": "因病",
    "disability": "因残",
    "education": "因学",
    "disaster": "因灾",
    "accident": "因意外事故",
    "unstable_employment": "因务工就业不稳",
    "industry_failure": "因产业项目失败",
    "labor_shortage": "缺劳动力",
    "housing": "住房安全",
    "drinking_water": "饮水安全",
    "other": "其他",
}
DETECTION_SOURCE = {
    "self_report": "农户自主申报",
    "grassroots_visit": "干部排查",
    "department_warning": "部门筛查预警",
}


FEEDS: tuple[Feed, ...] = (
    Feed(
        "households",
        "农户",
        "rural revitalization (roster)",
        True,
        ("household_id",),
        (
            _household(),
            Column("village_code", "村代码", Kind.VILLAGE),
            Column("head_person_id", "户主身份证号", Kind.ID, sensitive=True),
            _enum("poverty_history", "脱贫属性", POVERTY_HISTORY),
            Column("lifted_year", "脱贫年度", Kind.INT, nullable=True),
            _bool("relocated", "易地搬迁", nullable=True),
            Column("contact_phone", "联系电话", Kind.STR, nullable=True, sensitive=True,
                   vault_only=True),
            _reported(),
        ),
        grain="household",
    ),
    Feed(
        "persons",
        "户籍人口",
        "public security (household registry)",
        True,
        ("person_id",),
        (
            _person(),
            _household(),
            _enum("relation", "与户主关系", RELATION),
            _enum("sex", "性别", SEX, nullable=True),
            Column("birth_date", "出生日期", Kind.DATE, nullable=True),
            Column("ethnicity", "民族", Kind.STR, nullable=True),
            Column("name", "姓名", Kind.STR, nullable=True, sensitive=True, vault_only=True),
            _enum("status", "户籍状态", PERSON_STATUS),
            Column("status_date", "变动日期", Kind.DATE),
            _reported(),
        ),
        grain="person x change of state",
        event_column="status_date",
        notes="Latest status_date first, then latest reported_date, describes the person.",
    ),
    Feed(
        "medical",
        "医保结算",
        "medical insurance",
        False,
        ("person_id", "month"),
        (
            _person(),
            Column("month", "结算月份", Kind.MONTH),
            _bool("insured", "是否参保"),
            Column("outpatient_visits", "门诊次数", Kind.INT),
            # a long stay is settled at discharge: may exceed the days of the month
            Column("inpatient_days", "住院天数", Kind.INT, min_value=0),
            _money("total_cost_yuan", "医疗总费用"),
            _money("reimbursed_yuan", "报销金额"),
            _money("out_of_pocket_yuan", "个人自付"),
            Column("serious_illness", "大病慢病", Kind.STR, nullable=True),
            _reported(),
        ),
        grain="person x month",
        event_column="month",
    ),
    Feed(
        "employment",
        "就业",
        "human resources and social security",
        False,
        ("person_id", "month"),
        (
            _person(),
            Column("month", "月份", Kind.MONTH),
            _enum("status", "就业状态", EMPLOYMENT_STATUS),
            _money("monthly_wage_yuan", "月工资", nullable=True),
            _bool("social_insurance_paid", "社保缴费", nullable=True),
            _reported(),
        ),
        grain="person x month",
        event_column="month",
    ),
    Feed(
        "education",
        "学籍",
        "education",
        False,
        ("person_id", "term"),
        (
            _person(),
            Column("term", "学期", Kind.MONTH),
            _enum("stage", "学段", EDUCATION_STAGE),
            _enum("status", "学籍状态", EDUCATION_STATUS),
            _money("tuition_yuan", "学杂费"),
            _money("aid_yuan", "资助金额"),
            _reported(),
        ),
        grain="person x term (terms start in March or September)",
        event_column="term",
    ),
    Feed(
        "housing",
        "农村住房安全鉴定",
        "housing and construction",
        False,
        ("household_id", "assessed_date"),
        (
            _household(),
            Column("assessed_date", "鉴定日期", Kind.DATE),
            _enum("safety_grade", "安全等级", SAFETY_GRADE),
            _bool("renovation_funded", "危改补助"),
            _reported(),
        ),
        grain="household x assessment",
        event_column="assessed_date",
    ),
    Feed(
        "disability",
        "残疾人证",
        "disabled persons' federation",
        False,
        ("person_id", "certified_date"),
        (
            _person(),
            Column("certified_date", "发证日期", Kind.DATE),
            _enum("disability_type", "残疾类别", DISABILITY_TYPE),
            Column("grade", "残疾等级", Kind.INT, min_value=1, max_value=4),
            _bool("living_subsidy", "生活补贴"),
            _bool("care_subsidy", "护理补贴"),
            _reported(),
        ),
        grain="person x certificate",
        event_column="certified_date",
    ),
    Feed(
        "disasters",
        "灾情",
        "emergency management",
        False,
        ("household_id", "event_date", "hazard"),
        (
            _household(),
            Column("event_date", "受灾日期", Kind.DATE),
            _enum("hazard", "灾种", HAZARD),
            _money("loss_yuan", "直接损失"),
            _enum("house_damage", "房屋损毁", HOUSE_DAMAGE),
            _reported(),
        ),
        grain="household x event",
        event_column="event_date",
        notes="A later row revises the loss.",
    ),
    Feed(
        "social_assistance",
        "社会救助",
        "civil affairs",
        False,
        ("household_id", "program", "start_date"),
        (
            _household(),
            _enum("program", "救助类型", PROGRAM),
            Column("start_date", "开始日期", Kind.DATE),
            Column("end_date", "结束日期", Kind.DATE, nullable=True),
            _money("monthly_amount_yuan", "救助金额"),
            _reported(),
        ),
        grain="household x programme spell",
        event_column="start_date",
        notes=(
            "A spell is closed by a later row with end_date; temporary has end_date = start_date."
        ),
    ),
    Feed(
        "income_checks",
        "收入核查",
        "rural revitalization",
        False,
        ("household_id", "period_end"),
        (
            _household(),
            Column("period_end", "核查期末", Kind.MONTH),
            _money("per_capita_net_income_yuan", "人均纯收入", signed=True),
            _money("wage_income_yuan", "工资性收入"),
            _money("operating_income_yuan", "经营性收入", signed=True),
            _money("property_income_yuan", "财产性收入"),
            _money("transfer_income_yuan", "转移性收入"),
            _money("rigid_expenditure_yuan", "刚性支出", nullable=True),
            _reported(),
        ),
        grain="household x check (12 months ending period_end)",
        event_column="period_end",
    ),
    Feed(
        "agriculture",
        "农业经营",
        "agriculture",
        False,
        ("household_id", "year"),
        (
            _household(),
            Column("year", "年度", Kind.INT),
            Column("cultivated_land_mu", "耕地亩数", Kind.FLOAT),
            Column("livestock_units", "牲畜存栏", Kind.FLOAT),
            _bool("cooperative_member", "合作社成员"),
            _money("industry_support_yuan", "产业帮扶资金"),
            _reported(),
        ),
        grain="household x year",
        event_column="year",
    ),
    Feed(
        "assets",
        "财产比对",
        "real estate, vehicles, market entities",
        False,
        ("person_id", "record_date", "asset_type"),
        (
            _person(),
            Column("record_date", "登记日期", Kind.DATE),
            _enum("asset_type", "财产类型", ASSET_TYPE),
            _money("value_yuan", "价值", nullable=True),
            _reported(),
        ),
        grain="person x record",
        event_column="record_date",
    ),
    Feed(
        "divisions",
        "行政区划",
        "civil affairs",
        False,
        ("code",),
        (
            Column(
                "code", "区划代码", Kind.STR, pattern=DIVISION_CODE_PATTERN,
                pattern_text="6 (county), 9 (township) or 12 (village) digits",
            ),
            Column("name", "名称", Kind.STR),
            _reported(),
        ),
        grain="division",
        notes="Names of counties, townships and villages (public, not personal data); "
        "a renamed division is a new row with a later reported_date.",
    ),
    Feed(
        "monitoring_events",
        "防返贫监测对象认定/风险消除",
        "rural revitalization (monitoring)",
        True,
        ("household_id", "event_date", "event"),
        (
            _household(),
            Column("event_date", "认定日期", Kind.DATE),
            _enum("event", "事件", MONITORING_EVENT),
            _enum("category", "监测类型", MONITORING_CATEGORY),
            Column("risk_types", "风险类型", Kind.ENUM_LIST, enum=RISK_TYPES),
            _enum("source", "发现途径", DETECTION_SOURCE),
            _reported(),
        ),
        grain="household x event",
        event_column="event_date",
        notes="risk_types is never empty on an identified row.",
    ),
)

FEED_NAMES: tuple[str, ...] = tuple(f.name for f in FEEDS)
REQUIRED_FEEDS: tuple[str, ...] = tuple(f.name for f in FEEDS if f.required)


@cache
def _by_name() -> dict[str, Feed]:
    return {f.name: f for f in FEEDS}


def feed(name: str) -> Feed:
    """The feed spec called `name` (KeyError naming the known feeds otherwise)."""
    try:
        return _by_name()[name]
    except KeyError:
        raise KeyError(f"unknown feed {name!r}; known: {', '.join(FEED_NAMES)}") from None
