"""The feature registry: the one source of truth for every feature column.

Each spec says where a feature comes from (feed, window, aggregation), what it
means (Chinese label, English description, unit, hardship type), how an
explanation sentence quotes the household's own value (`template_zh`), which
reason `group` it belongs to, and what "no data" means (`missing`):

- `zero`: the feed was delivered and nothing happened -> 0; NaN (and
  `<feed>_feed_missing` = 1) when the feed is absent for the county.
- `nan`: "no such thing yet" (e.g. no income check ever) -> NaN; also NaN when
  the feed is absent for the county.
- `always`: always defined (required feeds, derived indicators).

Every feature column is float64 (booleans as 0/1) so models see one dtype and
NaN can mark missing everywhere; `dtype` records the meaning.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

from doudi.contract import feed as contract_feed

Dtype = Literal["numeric", "categorical", "bool"]
Missing = Literal["zero", "nan", "always"]
HARDSHIP_TYPES: tuple[str, ...] = (
    "medical", "education", "housing", "employment", "disaster",
    "disability", "income", "demography", "assistance", "context",
)

# Key columns every feature frame starts with (not features).
KEY_COLUMNS: tuple[str, ...] = ("household_key", "as_of", "county_code", "village_code")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    feed: str  # source feed ("derived" when combined from several)
    window_months: int | None  # None: the latest state / whole history known at T
    aggregation: str
    unit: str
    dtype: Dtype
    label_zh: str
    description: str
    hardship: str
    template_zh: str
    group: str
    missing: Missing

    def explain(self, value: float) -> str:
        """The Chinese explanation sentence for this household's value."""
        return self.template_zh.format(value=value)


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

_SPECS: list[FeatureSpec] = []


def _f(
    name: str, feed: str, window: int | None, agg: str, unit: str, dtype: Dtype,
    label_zh: str, description: str, hardship: str, template_zh: str, group: str,
    missing: Missing,
) -> None:
    _SPECS.append(FeatureSpec(name, feed, window, agg, unit, dtype, label_zh, description,
                              hardship, template_zh, group, missing))


# -- demography: households + persons (required feeds) --------------------------
_f("household_size", "persons", None, "count current members", "persons", "numeric",
   "家庭人口数", "Members living (or moved in) on the household at T.", "demography",
   "家庭人口 {value:.0f} 人", "household_size", "always")
_f("members_aged_0_5", "persons", None, "count age 0-5", "persons", "numeric",
   "学龄前儿童人数", "Members aged 0-5 (pre-school).", "demography",
   "学龄前儿童 {value:.0f} 人", "children", "always")
_f("members_aged_6_11", "persons", None, "count age 6-11", "persons", "numeric",
   "小学年龄儿童人数", "Members aged 6-11 (primary school age).", "demography",
   "小学年龄儿童 {value:.0f} 人", "children", "always")
_f("members_aged_12_14", "persons", None, "count age 12-14", "persons", "numeric",
   "初中年龄儿童人数", "Members aged 12-14 (junior secondary age).", "demography",
   "初中年龄子女 {value:.0f} 人", "children", "always")
_f("members_aged_15_17", "persons", None, "count age 15-17", "persons", "numeric",
   "高中年龄子女人数", "Members aged 15-17 (senior secondary age).", "demography",
   "高中年龄子女 {value:.0f} 人", "children", "always")
_f("members_aged_65_plus", "persons", None, "count age >= 65", "persons", "numeric",
   "65岁及以上老人数", "Members aged 65 or over.", "demography",
   "65岁及以上老人 {value:.0f} 人", "elderly", "always")
_f("labour_capable_adults", "derived", None, "count age 16-64 without grade 1-2 disability",
   "persons", "numeric", "劳动力人数",
   "Members aged 16-64 without a grade 1-2 disability certificate known at T.", "demography",
   "家庭劳动力 {value:.0f} 人", "labour", "always")
_f("dependency_ratio", "persons", None, "(age <16 + age >=65) / age 16-64", "ratio", "numeric",
   "抚养比", "Dependants per working-age member; NaN when no member is aged 16-64.",
   "demography", "抚养比 {value:.2f}", "labour", "nan")
_f("no_labour_capable_adult", "derived", None, "labour_capable_adults == 0", "flag", "bool",
   "无劳动力", "No member aged 16-64 without severe disability.", "demography",
   "家中无劳动力", "labour", "always")
_f("head_age", "persons", None, "age of head at T", "years", "numeric", "户主年龄",
   "Age of the roster's head at T; NaN when the head is not a current member.", "demography",
   "户主年龄 {value:.0f} 岁", "head", "nan")
_f("head_female", "persons", None, "head sex == F", "flag", "bool", "女性户主",
   "Head of household is female; NaN when the head is not a current member.", "demography",
   "女性户主", "head", "nan")
_f("deaths_12m", "persons", 12, "count deceased with status_date in window", "persons",
   "numeric", "近12个月死亡人数", "Members recorded deceased in the last 12 months.",
   "demography", "近12个月家庭成员去世 {value:.0f} 人", "member_loss", "always")
_f("departures_12m", "persons", 12, "count moved_out with status_date in window", "persons",
   "numeric", "近12个月迁出人数", "Members recorded moved out in the last 12 months.",
   "demography", "近12个月迁出 {value:.0f} 人", "member_loss", "always")
_f("former_poor", "households", None, "poverty_history == former_poor", "flag", "bool",
   "脱贫户", "Household was lifted out of poverty (脱贫户).", "demography",
   "属于脱贫户", "poverty_history", "always")
_f("years_since_lifted", "households", None, "as_of year - lifted_year", "years", "numeric",
   "脱贫年限", "Years since lifted out of poverty; NaN for ordinary households or unknown year.",
   "demography", "脱贫 {value:.0f} 年", "poverty_history", "nan")
_f("relocated", "households", None, "relocated flag", "flag", "bool", "易地搬迁户",
   "Moved under a relocation programme; NaN when the roster leaves it empty.", "demography",
   "易地扶贫搬迁户", "poverty_history", "nan")

# -- health: medical --------------------------------------------------------------
for _w in (1, 3, 6, 12):
    _f(f"medical_oop_{_w}m", "medical", _w, "sum out_of_pocket_yuan", "yuan", "numeric",
       f"近{_w}个月个人自付医疗费用", f"Out-of-pocket medical cost of current members, "
       f"last {_w} month(s).", "medical", f"近{_w}个月个人自付医疗费用 {{value:,.0f}} 元",
       "medical_oop", "zero")
    _f(f"medical_oop_{_w}m_per_capita", "medical", _w, "sum out_of_pocket_yuan / members",
       "yuan/person", "numeric", f"近{_w}个月人均个人自付医疗费用",
       f"Out-of-pocket medical cost per member, last {_w} month(s).", "medical",
       f"近{_w}个月人均个人自付医疗费用 {{value:,.0f}} 元", "medical_oop", "zero")
_f("medical_oop_12m_income_share", "derived", 12,
   "medical_oop_12m / household net income of the latest check", "ratio", "numeric",
   "近12个月自付医疗费用占家庭收入比例",
   "Out-of-pocket cost of 12 months over the household's latest annual net income "
   "(per-capita income x members); NaN without a check or with income <= 0.", "medical",
   "近12个月自付医疗费用占家庭纯收入的 {value:.0%}", "medical_oop", "nan")
_f("medical_total_cost_12m", "medical", 12, "sum total_cost_yuan", "yuan", "numeric",
   "近12个月医疗总费用", "Total medical cost of current members, last 12 months.", "medical",
   "近12个月医疗总费用 {value:,.0f} 元", "medical_cost", "zero")
_f("medical_reimbursed_share_12m", "medical", 12, "sum reimbursed / sum total cost", "ratio",
   "numeric", "近12个月医疗费用报销比例",
   "Share of the 12-month medical cost reimbursed; NaN without cost.", "medical",
   "近12个月医疗费用报销比例 {value:.0%}", "medical_cost", "nan")
_f("medical_inpatient_days_3m", "medical", 3, "sum inpatient_days", "days", "numeric",
   "近3个月住院天数", "Hospital days of current members, last 3 months.", "medical",
   "近3个月住院 {value:.0f} 天", "medical_inpatient", "zero")
_f("medical_inpatient_days_12m", "medical", 12, "sum inpatient_days", "days", "numeric",
   "近12个月住院天数", "Hospital days of current members, last 12 months.", "medical",
   "近12个月住院 {value:.0f} 天", "medical_inpatient", "zero")
_f("medical_outpatient_visits_12m", "medical", 12, "sum outpatient_visits", "visits",
   "numeric", "近12个月门诊次数", "Outpatient visits of current members, last 12 months.",
   "medical", "近12个月门诊 {value:.0f} 次", "medical_inpatient", "zero")
_f("medical_serious_illness_members", "medical", 12,
   "count members with a serious_illness code", "persons", "numeric", "大病慢病人数",
   "Members with a serious or chronic illness code on a claim in the last 12 months.",
   "medical", "家中大病慢病患者 {value:.0f} 人", "medical_serious_illness", "zero")
_f("medical_uninsured_members", "medical", 12, "count members whose latest claim is uninsured",
   "persons", "numeric", "未参保人数",
   "Members whose latest claim of the last 12 months says not insured.", "medical",
   "未参加基本医保 {value:.0f} 人", "medical_uninsured", "zero")

# -- employment -------------------------------------------------------------------
_f("employment_employed_share", "employment", 3,
   "members aged 16-64 whose latest status is any kind of work / members aged 16-64",
   "ratio", "numeric", "劳动年龄人口就业比例",
   "Share of members aged 16-64 whose latest status (last 3 months) is employed, migrant, "
   "self-employed or a public-welfare post; NaN without members aged 16-64.", "employment",
   "劳动年龄成员就业比例 {value:.0%}", "employment_status", "nan")
_f("employment_migrant_share", "employment", 3, "members 16-64 latest status migrant / 16-64",
   "ratio", "numeric", "外出务工比例",
   "Share of members aged 16-64 whose latest status (last 3 months) is migrant work.",
   "employment", "外出务工成员比例 {value:.0%}", "employment_status", "nan")
_f("employment_unemployed_members", "employment", 3, "count latest status unemployed",
   "persons", "numeric", "登记失业人数",
   "Members whose latest status (last 3 months) is registered unemployed.", "employment",
   "登记失业 {value:.0f} 人", "employment_unemployed", "zero")
_f("employment_public_welfare_post_members", "employment", 3,
   "count latest status public_welfare_post", "persons", "numeric", "公益岗位就业人数",
   "Members whose latest status (last 3 months) is a public-welfare post.", "employment",
   "公益岗位就业 {value:.0f} 人", "employment_status", "zero")
_f("employment_unemployed_months_12m", "employment", 12, "sum member-months unemployed",
   "person-months", "numeric", "近12个月失业人月数",
   "Member-months with status unemployed in the last 12 months.", "employment",
   "近12个月累计失业 {value:.0f} 人月", "employment_unemployed", "zero")
_f("employment_wage_3m", "employment", 3, "sum monthly_wage_yuan / 3", "yuan/month", "numeric",
   "近3个月月均工资收入", "Members' known wages per month, average of the last 3 months.",
   "employment", "近3个月家庭月均工资 {value:,.0f} 元", "employment_wage", "zero")
_f("employment_wage_change_3m", "employment", 6,
   "(wages last 3 months - wages 3 months before) / wages 3 months before", "ratio",
   "numeric", "近3个月工资收入变化率",
   "Relative change of wages, last 3 months vs the 3 months before; NaN when the earlier "
   "wages are 0.", "employment", "近3个月工资收入变化 {value:+.0%}", "employment_wage", "nan")
_f("employment_social_insurance_stopped", "employment", 12,
   "count members paying 4-12 months ago, latest of last 3 months not paying", "persons",
   "numeric", "社保断缴人数",
   "Members who paid social insurance 4-12 months ago and whose latest record of the last "
   "3 months says not paid.", "employment", "社保缴费中断 {value:.0f} 人",
   "employment_social_insurance", "zero")

# -- education --------------------------------------------------------------------
_f("education_enrolled_members", "education", 12, "count latest term status enrolled",
   "persons", "numeric", "在校学生人数",
   "Members whose latest term record (last 12 months) is enrolled.", "education",
   "在校学生 {value:.0f} 人", "education_students", "zero")
_f("education_senior_or_higher_members", "education", 12,
   "count enrolled in senior_secondary, vocational or higher", "persons", "numeric",
   "高中及以上在校生人数",
   "Members enrolled (latest term, last 12 months) in senior secondary, vocational or higher "
   "education.", "education", "高中及以上在校生 {value:.0f} 人", "education_students",
   "zero")
_f("education_net_tuition_12m", "education", 12, "sum tuition_yuan - aid_yuan", "yuan",
   "numeric", "近12个月学杂费净支出",
   "Tuition minus student aid over terms starting in the last 12 months (may be negative).",
   "education", "近12个月学杂费扣除资助后 {value:,.0f} 元", "education_cost", "zero")
_f("education_dropouts_12m", "education", 12, "count members with a dropped_out term",
   "persons", "numeric", "近12个月辍学人数",
   "Members with a dropped-out term record in the last 12 months.", "education",
   "近12个月辍学 {value:.0f} 人", "education_dropout", "zero")

# -- housing ----------------------------------------------------------------------
_f("housing_safety_level", "housing", None, "latest safety_grade A=1 B=2 C=3 D=4", "level",
   "numeric", "住房安全等级",
   "Latest assessment's grade as 1 (A) to 4 (D, dangerous); NaN when never assessed.",
   "housing", "住房安全鉴定等级 {value:.0f} 级(1=A,4=D)", "housing_safety", "nan")
_f("housing_dangerous", "housing", None, "latest safety_grade in C, D", "flag", "bool",
   "危房", "Latest assessment is C or D; 0 when never assessed.", "housing",
   "住房鉴定为C/D级危房", "housing_safety", "zero")
_f("housing_assessment_age_months", "housing", None, "months since latest assessed_date",
   "months", "numeric", "距最近住房鉴定月数", "Months since the latest assessment; NaN if none.",
   "housing", "最近一次住房鉴定在 {value:.0f} 个月前", "housing_safety", "nan")
_f("housing_renovation_funded", "housing", None, "latest assessment renovation_funded",
   "flag", "bool", "已获危改补助", "Latest assessment records renovation funding.", "housing",
   "已获危房改造补助", "housing_safety", "zero")

# -- disability -------------------------------------------------------------------
_f("disabled_members", "disability", None, "count members with a certificate", "persons",
   "numeric", "持证残疾人数", "Current members holding a disability certificate.",
   "disability", "持证残疾人 {value:.0f} 人", "disability", "zero")
_f("disabled_members_grade_1_2", "disability", None, "count latest certificate grade 1-2",
   "persons", "numeric", "一二级重度残疾人数", "Members whose latest certificate is grade 1-2.",
   "disability", "一、二级重度残疾 {value:.0f} 人", "disability", "zero")
_f("disabled_members_grade_3_4", "disability", None, "count latest certificate grade 3-4",
   "persons", "numeric", "三四级残疾人数", "Members whose latest certificate is grade 3-4.",
   "disability", "三、四级残疾 {value:.0f} 人", "disability", "zero")
DISABILITY_TYPE_ZH = {
    "visual": "视力", "hearing": "听力", "speech": "言语", "physical": "肢体",
    "intellectual": "智力", "mental": "精神", "multiple": "多重",
}
for _t, _zh in DISABILITY_TYPE_ZH.items():
    _f(f"disabled_members_{_t}", "disability", None, f"count latest type {_t}", "persons",
       "numeric", f"{_zh}残疾人数", f"Members whose latest certificate type is {_t}.",
       "disability", f"{_zh}残疾 {{value:.0f}} 人", "disability_type", "zero")
_f("disability_certified_12m", "disability", 12, "count certificates issued in window",
   "persons", "numeric", "近12个月新办残疾证人数",
   "Members certified in the last 12 months.", "disability",
   "近12个月新办残疾证 {value:.0f} 人", "disability", "zero")
_f("disability_subsidised_members", "disability", None,
   "count latest certificate with living or care subsidy", "persons", "numeric",
   "享受残疾人两项补贴人数", "Members receiving the living or care subsidy.", "disability",
   "享受残疾人补贴 {value:.0f} 人", "disability", "zero")

# -- disasters --------------------------------------------------------------------
_f("disaster_loss_3m", "disasters", 3, "sum loss_yuan", "yuan", "numeric", "近3个月灾害损失",
   "Direct disaster losses, events in the last 3 months.", "disaster",
   "近3个月受灾损失 {value:,.0f} 元", "disaster_loss", "zero")
_f("disaster_loss_12m", "disasters", 12, "sum loss_yuan", "yuan", "numeric",
   "近12个月灾害损失", "Direct disaster losses, events in the last 12 months.", "disaster",
   "近12个月受灾损失 {value:,.0f} 元", "disaster_loss", "zero")
_f("disaster_events_12m", "disasters", 12, "count events", "events", "numeric",
   "近12个月受灾次数", "Disaster events in the last 12 months.", "disaster",
   "近12个月受灾 {value:.0f} 次", "disaster_loss", "zero")
_f("disaster_house_damage_12m", "disasters", 12,
   "max house_damage none=0 minor=1 severe=2 collapsed=3", "level", "numeric",
   "近12个月房屋损毁程度", "Worst house damage of the last 12 months (0 none .. 3 collapsed).",
   "disaster", "近12个月房屋损毁等级 {value:.0f}(3=倒塌)", "disaster_house_damage", "zero")

# -- social assistance ------------------------------------------------------------
PROGRAM_ZH = {"dibao": "低保", "dibao_marginal": "低保边缘", "rigid_expenditure": "刚性支出困难"}
for _p, _zh in PROGRAM_ZH.items():
    _f(f"assistance_{_p}_now", "social_assistance", None, f"spell of {_p} covering T", "flag",
       "bool", f"当前享受{_zh}", f"A {_p} spell covers T.", "assistance", f"当前享受{_zh}",
       "assistance_programmes", "zero")
_f("assistance_monthly_amount_now", "social_assistance", None,
   "sum monthly_amount_yuan of spells covering T (not temporary)", "yuan/month", "numeric",
   "当前月救助金额", "Monthly amount of all assistance spells covering T.", "assistance",
   "当前每月救助金额 {value:,.0f} 元", "assistance_programmes", "zero")
_f("assistance_temporary_12m", "social_assistance", 12, "sum temporary payments",
   "yuan", "numeric", "近12个月临时救助金额", "Temporary assistance paid in the last 12 months.",
   "assistance", "近12个月获临时救助 {value:,.0f} 元", "assistance_temporary", "zero")
_f("assistance_spells_ended_6m", "social_assistance", 6,
   "count non-temporary spells with end_date in window", "spells", "numeric",
   "近6个月停止救助次数", "Assistance spells (not temporary) that ended in the last 6 months.",
   "assistance", "近6个月有 {value:.0f} 项救助停止", "assistance_ended", "zero")

# -- income checks ----------------------------------------------------------------
_f("income_per_capita", "income_checks", None, "latest per_capita_net_income_yuan",
   "yuan/person/year", "numeric", "人均纯收入", "Latest check's per-capita net income.",
   "income", "最近核查人均纯收入 {value:,.0f} 元", "income_level", "nan")
_f("income_to_monitoring_line", "income_checks", None,
   "latest per-capita income / monitoring line of its year", "ratio", "numeric",
   "人均纯收入与监测范围之比",
   "Latest per-capita income over that year's monitoring line (settings.monitoring_line).",
   "income", "人均纯收入为当年监测范围的 {value:.0%}", "income_level", "nan")
_f("income_after_rigid_to_monitoring_line", "income_checks", None,
   "(per-capita income - rigid expenditure / members) / monitoring line", "ratio", "numeric",
   "扣除刚性支出后人均收入与监测范围之比",
   "Latest per-capita income net of rigid expenditure per member over the line; NaN "
   "without rigid expenditure.", "income",
   "扣除刚性支出后人均收入为监测范围的 {value:.0%}", "income_level", "nan")
_f("income_per_capita_change", "income_checks", None, "latest - previous check", "yuan",
   "numeric", "人均纯收入变化", "Per-capita income change from the previous check.", "income",
   "人均纯收入较上次核查变化 {value:+,.0f} 元", "income_change", "nan")
_f("income_per_capita_change_pct", "income_checks", None,
   "(latest - previous) / |previous|", "ratio", "numeric", "人均纯收入变化率",
   "Relative per-capita income change from the previous check.", "income",
   "人均纯收入较上次核查变化 {value:+.0%}", "income_change", "nan")
_f("income_rigid_expenditure_ratio", "income_checks", None,
   "rigid_expenditure / (sum of four income components)", "ratio", "numeric",
   "刚性支出占纯收入比例",
   "Rigid expenditure over household net income; NaN when income <= 0 or no rigid figure.",
   "income", "刚性支出占家庭纯收入的 {value:.0%}", "income_rigid", "nan")
_f("income_wage_share", "income_checks", None, "wage income / net income", "ratio", "numeric",
   "工资性收入占比", "Wage share of net income; NaN when income <= 0.", "income",
   "工资性收入占 {value:.0%}", "income_structure", "nan")
_f("income_check_age_months", "income_checks", None, "months since latest period_end",
   "months", "numeric", "距最近收入核查月数", "Months since the latest check's period end.",
   "income", "最近一次收入核查在 {value:.0f} 个月前", "income_level", "nan")

# -- agriculture ------------------------------------------------------------------
_f("agri_cultivated_land_mu", "agriculture", None, "latest year's cultivated_land_mu", "mu",
   "numeric", "耕地面积", "Cultivated land of the latest year known.", "income",
   "耕地 {value:.1f} 亩", "agriculture", "nan")
_f("agri_livestock_units", "agriculture", None, "latest year's livestock_units", "units",
   "numeric", "牲畜存栏", "Livestock units of the latest year known.", "income",
   "牲畜存栏 {value:.1f}", "agriculture", "nan")
_f("agri_livestock_change", "agriculture", None, "latest - previous year livestock_units",
   "units", "numeric", "牲畜存栏变化", "Livestock change from the previous year known.",
   "income", "牲畜存栏较上年变化 {value:+.1f}", "agriculture", "nan")
_f("agri_cooperative_member", "agriculture", None, "latest year's cooperative_member", "flag",
   "bool", "合作社成员", "Member of a cooperative in the latest year known.", "income",
   "加入农民合作社", "agriculture", "nan")
_f("agri_industry_support_yuan", "agriculture", None, "latest year's industry_support_yuan",
   "yuan", "numeric", "产业帮扶资金", "Industry support funds of the latest year known.",
   "income", "获产业帮扶资金 {value:,.0f} 元", "agriculture", "nan")

# -- assets (exclusion signals) -----------------------------------------------------
ASSET_ZH = {
    "vehicle": "非农用车辆", "urban_housing": "城镇商品房",
    "commercial_property": "商铺", "business_registration": "经营主体",
}
for _a, _zh in ASSET_ZH.items():
    _f(f"assets_{_a}", "assets", None, f"count {_a} records of members", "records", "numeric",
       f"{_zh}数", f"Records of type {_a} for current members known at T.", "income",
       f"家庭成员名下{_zh} {{value:.0f}} 项", "assets", "zero")
_f("assets_value", "assets", None, "sum value_yuan", "yuan", "numeric", "登记财产价值",
   "Recorded value of members' assets (unknown values count 0).", "income",
   "家庭成员名下财产价值 {value:,.0f} 元", "assets", "zero")

# -- monitoring history -------------------------------------------------------------
_f("monitoring_times_identified", "monitoring_events", None, "count identified events",
   "events", "numeric", "历史纳入监测次数", "Times identified for monitoring before T.",
   "context", "曾 {value:.0f} 次被纳入监测", "monitoring_history", "always")
_f("monitoring_months_since_eliminated", "monitoring_events", None,
   "months since the latest risk_eliminated", "months", "numeric", "风险消除后月数",
   "Months since the latest risk elimination; NaN if never eliminated.", "context",
   "风险消除已 {value:.0f} 个月", "monitoring_history", "nan")

# -- village and county context (known at T) ----------------------------------------
_f("village_shock_share_3m", "derived", 3, "share of village households with a shock",
   "ratio", "numeric", "本村近3个月遭遇冲击户比例",
   "Share of the village's roster households with a disaster, a death, a hospital stay or "
   "a registered unemployed member in the last 3 months (absent feeds count as no shock).",
   "context", "本村近3个月遭遇冲击的农户占 {value:.0%}", "village_context", "always")
_f("village_identified_share_12m", "monitoring_events", 12,
   "share of village households identified in window", "ratio", "numeric",
   "本村近12个月新纳入监测户比例",
   "Share of the village's roster households identified in the last 12 months.", "context",
   "本村近12个月新纳入监测农户占 {value:.0%}", "village_context", "always")
_f("county_unemployed_share_3m", "employment", 3,
   "county members latest status unemployed / members with a status", "ratio", "numeric",
   "本县近3个月登记失业比例",
   "County share of people with an employment record (last 3 months) registered unemployed.",
   "context", "本县登记失业比例 {value:.1%}", "county_context", "nan")
_f("county_unemployed_share_change", "employment", 6,
   "county unemployed share last 3 months - the 3 months before", "ratio", "numeric",
   "本县登记失业比例变化",
   "Change of the county unemployed share, last 3 months vs the 3 months before.",
   "context", "本县登记失业比例变化 {value:+.1%}", "county_context", "nan")
_f("county_disaster_loss_3m_per_household", "disasters", 3,
   "county disaster losses / roster households", "yuan/household", "numeric",
   "本县近3个月户均灾害损失", "County disaster losses of 3 months per roster household.",
   "context", "本县近3个月户均受灾损失 {value:,.0f} 元", "county_context", "zero")

# -- feed absence indicators ----------------------------------------------------------
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
for _feed in OPTIONAL_FEEDS:
    _f(f"{_feed}_feed_missing", _feed, None, "no rows for the county in the delivery window",
       "flag", "bool", f"{contract_feed(_feed).title_zh}数据缺失",
       f"The {_feed} feed is absent for the county at T (its features are NaN).",
       _FEED_HARDSHIP[_feed], f"本县{contract_feed(_feed).title_zh}数据缺失", "feed_missing",
       "always")

FEATURES: tuple[FeatureSpec, ...] = tuple(_SPECS)
BY_NAME: dict[str, FeatureSpec] = {s.name: s for s in FEATURES}


def feature_names() -> list[str]:
    """Feature column names in registry order."""
    return [s.name for s in FEATURES]


def group_column_names() -> list[str]:
    return [g.name for g in GROUP_COLUMNS]


def _version() -> str:
    payload = json.dumps(
        {"features": [asdict(s) for s in FEATURES], "groups": [asdict(g) for g in GROUP_COLUMNS]},
        ensure_ascii=False, sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


REGISTRY_VERSION: str = _version()


def _check() -> None:
    """Fail at import on a malformed registry (duplicates, unknown hardship type)."""
    if len(BY_NAME) != len(FEATURES):
        raise ValueError("duplicate feature names in the registry")
    for s in FEATURES:
        if s.hardship not in HARDSHIP_TYPES:
            raise ValueError(f"{s.name}: unknown hardship type {s.hardship!r}")


_check()
