"""Every tunable number of the synthetic province, in one documented place.

Rates are per person (or household) per month unless the name says otherwise;
money is yuan. `docs/generator.md` explains each group. The monitoring line is
NOT here: it comes from `Settings.monitoring_line(year)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WorldParams:
    # --- geography ---------------------------------------------------------
    households_per_county: int = 3000  # ~1 county per 3k households, at least 3
    min_counties: int = 3
    households_per_village: int = 180
    villages_per_township: int = 12
    # --- households and people ----------------------------------------------
    former_poor_share: float = 0.40
    relocated_share_of_former_poor: float = 0.12
    hidden_household_share: float = 0.15  # hardship there is rarely noticed
    household_size_weights: tuple[float, ...] = (0.08, 0.17, 0.24, 0.24, 0.15, 0.08, 0.03, 0.01)
    tekun_share_of_lone_elderly: float = 0.55
    # --- labour --------------------------------------------------------------
    wage_local: float = 2900.0
    wage_migrant: float = 4300.0
    wage_seasonal: float = 3100.0
    wage_public_welfare_post: float = 800.0
    self_employed_income: float = 1800.0
    wage_sigma: float = 0.30
    fragility_wage_effect: float = 0.12  # log-wage drop per SD of fragility
    job_loss_local: float = 0.010
    job_loss_migrant: float = 0.013
    job_loss_seasonal: float = 0.018
    business_failure: float = 0.004
    reemployment: float = 0.14
    employer_closure_per_county_month: float = 0.008
    employer_closure_job_loss: float = 0.35
    departure_young_adult: float = 0.0015
    # --- agriculture and disasters -------------------------------------------
    farm_income_per_mu_year: float = 650.0
    livestock_income_per_unit_year: float = 1800.0
    drought_year_per_county: float = 0.12
    drought_farm_loss: float = 0.55
    disaster_per_county_month: float = 0.035  # scaled by the county's proneness
    disaster_household_hit: float = 0.18
    disaster_loss_median: float = 6000.0
    # --- transfers -----------------------------------------------------------
    pension_monthly: float = 153.0
    farm_subsidy_per_mu_year: float = 95.0
    former_poor_subsidy_monthly: float = 60.0
    disability_living_subsidy: float = 100.0
    disability_care_subsidy: float = 100.0
    property_income_monthly_mean: float = 70.0
    # --- health --------------------------------------------------------------
    chronic_onset_base_year: float = 0.003
    chronic_onset_per_year_over_30: float = 0.0007
    chronic_to_serious_year: float = 0.03
    hospital_base: float = 0.003
    hospital_chronic: float = 0.012
    hospital_serious: float = 0.06
    hospital_cost_median: float = 7000.0
    hospital_cost_median_serious: float = 22000.0
    reimbursement_rate: float = 0.62
    critical_illness_extra: float = 0.12  # extra share reimbursed above 15k
    medical_assistance_extra: float = 0.10  # former poor / monitored households
    uninsured_share: float = 0.004
    accident: float = 0.0007
    accident_cost_median: float = 18000.0
    accident_disability: float = 0.25
    disability_after_serious_year: float = 0.02
    certification_delay_max_months: int = 8
    mortality_gompertz_a: float = -9.6  # annual hazard exp(a + b * age)
    mortality_gompertz_b: float = 0.088
    # --- education -----------------------------------------------------------
    senior_secondary_entry: float = 0.62
    vocational_entry: float = 0.22
    higher_entry: float = 0.45
    compulsory_dropout_per_term: float = 0.0015
    tuition_senior_term: float = 900.0
    tuition_higher_term: float = 5500.0  # tuition plus living costs away from home
    tuition_vocational_term: float = 1200.0
    aid_senior_term: float = 1000.0
    aid_higher_term: float = 3000.0
    # --- housing -------------------------------------------------------------
    house_decay_year: float = 0.015
    house_reassessment_year: float = 0.08
    # --- hardship, detection, assistance --------------------------------------
    self_report: float = 0.035
    visit_detect: float = 0.28
    visit_interval_months: tuple[int, ...] = (1, 2, 3, 6)
    warning_oop_threshold: float = 10000.0
    warning_oop_detect: float = 0.45
    warning_income_check_detect: float = 0.55
    hidden_detection_factor: float = 0.15
    false_alarm: float = 0.0006
    false_alarm_near_line_factor: float = 3.0
    identification_delay_max_months: int = 1
    elimination_min_months: int = 6
    elimination_per_month: float = 0.25
    assistance_none_share: float = 0.15
    dibao_per_person_month: float = 330.0
    marginal_per_person_month: float = 150.0
    rigid_support_month: float = 400.0
    temporary_one_off_median: float = 3000.0
    tekun_monthly: float = 650.0
    public_welfare_post_offer: float = 0.25
    # --- records -------------------------------------------------------------
    employment_registered_local: float = 0.75
    employment_registered_migrant: float = 0.45
    employment_registered_other: float = 0.2
    wage_unknown_share: float = 0.15
    correction_share: float = 0.01
    duplicate_share: float = 0.001
    bad_row_share: float = 0.003
    income_check_ordinary_sample: float = 0.30
    outage_months: int = 5  # an optional feed undelivered for one county this long
    phone_missing_share: float = 0.12  # households without a contact phone on the roster
    division_renames_per_year: float = 0.02  # share of divisions renamed per year (min 2)
    # --- simulation ----------------------------------------------------------
    burn_in_months: int = 24  # before the first reported month
    detection_after_burn_in_months: int = 12  # income history must fill first
    oracle_replicates: int = 32
    oracle_max_households: int = 5000
    oracle_last_as_of_months: int = 3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
