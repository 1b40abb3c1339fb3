"""Vectorised row checks: raw column arrays -> typed arrays plus rule violations.

Every parser takes one column of a batch (strings from CSV, native or string
types from Parquet) and returns the typed values (null where invalid) and the
rows that break a rule, as boolean numpy masks. No Python loop runs per row;
loops run over columns, rules or the distinct values of a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from doudi.contract import (
    DIVISION_CODE_PATTERN,
    FALSE_SPELLINGS,
    HOUSEHOLD_ID_PATTERN,
    TRUE_SPELLINGS,
    Column,
    Feed,
    Kind,
)
from doudi.idnumber import EARLIEST_BIRTH


class Action(StrEnum):
    QUARANTINE = "quarantine"  # the row is a data error: kept out, with its reason
    WARNING = "warning"  # not a contract rule: the row is kept and the cell counted
    PENDING = "pending"  # the row waits (ingest.pending) until its referent is known


Where = Callable[[Feed, Column], bool]


def _every(feed: Feed, col: Column) -> bool:
    return True


def _kinds(*kinds: Kind) -> Where:
    return lambda feed, col: col.kind in kinds


@dataclass(frozen=True)
class Rule:
    """One rule ingest enforces. `quote` is the contract's own wording (verbatim, so a
    test can find it in the contract); `note` says how ingest applies it."""

    code: str
    action: Action
    message: str  # never carries the offending value: safe to print and store
    quote: str
    note: str = ""
    basis: str = ""  # where the contract says it, when no sentence can be quoted
    where: Where | None = None  # the columns it checks (None: a row-level rule)
    scope: str = ""  # for row-level rules: what it looks at


# Values ingest finds odd although the contract allows them: counted warnings, the row
# is kept. (feed, column) -> (least, greatest, longest text)
PLAUSIBLE: dict[tuple[str, str], tuple[float | None, float | None, int | None]] = {
    ("households", "lifted_year"): (2013, 2030, None),
    ("persons", "ethnicity"): (None, None, 16),
    ("medical", "outpatient_visits"): (0, None, None),
    ("medical", "serious_illness"): (None, None, 32),
    ("agriculture", "year"): (1990, 2100, None),
    ("agriculture", "cultivated_land_mu"): (0, None, None),
    ("agriculture", "livestock_units"): (0, None, None),
}

RULES: tuple[Rule, ...] = (
    Rule("control_character", Action.QUARANTINE,
         "value holds a control character (U+0000-U+001F or U+007F)",
         "A control character (U+0000-U+001F, U+007F) inside any value is a data error.",
         "checked on the value as written, before anything else; nothing is stripped",
         where=_every),
    Rule("missing_value", Action.QUARANTINE, "required value is empty",
         "",
         "empty, or only spaces, is missing",
         basis="the feed tables: a type without `?` (`str`, `date`, ...) needs a value; "
         "`T?` may be empty", where=lambda feed, col: not col.nullable),
    Rule("id_format", Action.QUARANTINE,
         "not an 18-character ID number (6-digit region, 8-digit birth date, "
         "3-digit sequence, check character 0-9 or X)",
         "6-digit region, 8-digit birth date, 3-digit sequence, check character "
         "(0-9 or X, ISO 7064 MOD 11-2)", "a lower-case x is read as X",
         where=_kinds(Kind.ID)),
    Rule("id_check_char", Action.QUARANTINE, "check character does not match (ISO 7064 MOD 11-2)",
         "A wrong check character is a data error.", where=_kinds(Kind.ID)),
    Rule("id_birth_date", Action.QUARANTINE,
         "ID number holds an impossible birth date (not a calendar date, or after the "
         "row's reported_date)",
         "a wrong check character or an impossible birth date is a data error",
         "impossible: not a calendar date, or after the day the row reached the platform",
         where=_kinds(Kind.ID)),
    Rule("bad_household_id", Action.QUARANTINE,
         "household number is not 1-32 characters from digits, ASCII letters, '-' and '_'",
         "a string of 1-32 characters from digits, ASCII letters, `-` and `_`",
         where=lambda feed, col: col.pattern == HOUSEHOLD_ID_PATTERN),
    Rule("bad_village_code", Action.QUARANTINE, "village code is not 12 digits",
         "`village_code` is the 12-digit statistical division code",
         where=_kinds(Kind.VILLAGE)),
    Rule("bad_division_code", Action.QUARANTINE, "division code is not 6, 9 or 12 digits",
         "6 (county), 9 (township) or 12 (village) digits",
         where=lambda feed, col: col.pattern == DIVISION_CODE_PATTERN),
    Rule("unknown_enum", Action.QUARANTINE,
         "value is not one of the contract's codes or Chinese terms",
         "Enum values are the English codes; where this contract gives a Chinese term "
         "beside a code, that term is accepted too",
         "`risk_types`: every `;`-separated item", where=_kinds(Kind.ENUM, Kind.ENUM_LIST)),
    Rule("bad_date", Action.QUARANTINE,
         "not a calendar date in the form YYYY-MM-DD (months: YYYY-MM)",
         "Dates `YYYY-MM-DD`; months `YYYY-MM`",
         "Parquet may carry native dates", where=_kinds(Kind.DATE, Kind.MONTH)),
    Rule("bad_number", Action.QUARANTINE, "not a number in the form the contract allows",
         "money in yuan (CNY)", "int: whole numbers (`3.0` reads as 3); float and money: "
         "decimal numbers", where=_kinds(Kind.INT, Kind.FLOAT, Kind.MONEY)),
    Rule("bad_bool", Action.QUARANTINE, "not a boolean (true/false, 1/0, 是/否)",
         "booleans `true/false`, `1/0`, `是/否`", "letter case is ignored (`TRUE`)",
         where=_kinds(Kind.BOOL)),
    Rule("negative_money", Action.QUARANTINE,
         "money is negative where the contract does not allow it",
         "non-negative unless stated",
         where=lambda feed, col: col.kind is Kind.MONEY and not col.signed),
    Rule("too_many_decimals", Action.QUARANTINE, "money has more than 2 decimals",
         "Money has at most 2 decimals.", "trailing zeros are not decimals (`1.500`)",
         where=_kinds(Kind.MONEY)),
    Rule("out_of_range", Action.QUARANTINE, "value outside the contract's range",
         "1 (most severe) to 4", "the ranges the contract states: `grade` 1 to 4, "
         "`inpatient_days` non-negative (no upper bound: a long stay is settled at discharge)",
         where=lambda feed, col: col.min_value is not None or col.max_value is not None),
    Rule("unknown_household", Action.PENDING,
         "household is not on the roster yet (households feed, now or before)",
         "rural-revitalization roster",
         "not a data error: records arrive late and the contract does not order the feeds. "
         "A row is stored under the county of its household's village, which only the roster "
         "gives, so it waits in `pending/` (pseudonymised) and the first ingest whose roster "
         "knows the household places it, under its own `reported_date`; rows waiting "
         "`pending_alert_months` delivered months are reported loudly",
         scope="`household_id` of every household-level feed and `persons`"),
    Rule("unknown_person", Action.PENDING,
         "person is not in the persons feed yet (now or before)",
         "One row per change of a person's state",
         "as `unknown_household`: the county comes from the person's household, so the row "
         "waits for a `persons` row (and that row's household) in `pending/`",
         scope="`person_id` of every person-level feed but `persons`"),
    Rule("surrounding_spaces", Action.WARNING,
         "value has leading or trailing spaces (read without them)", "",
         "U+0020 only: other characters are never stripped; a value of spaces is empty",
         where=_every),
    Rule("reported_before_event", Action.WARNING,
         "reported_date is before the event the row describes", "",
         "kept: a row counts as of T only once both its reported_date and its event date "
         "are <= T (e.g. a term or a spell registered before it starts)",
         scope="`reported_date` against the feed's event column"),
    Rule("id_birth_before_1890", Action.WARNING,
         "ID number holds a birth date before 1890", "",
         "a calendar date, so not impossible", where=_kinds(Kind.ID)),
    Rule("id_region_zero", Action.WARNING, "ID number's region starts with 0", "",
         "the region is not checked against any code table", where=_kinds(Kind.ID)),
    Rule("implausible_value", Action.WARNING, "value outside the usual range or length",
         "", "usual: " + ", ".join(
             f"`{f}.{c}` " + " ".join(p for p in (
                 f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else "",
                 f"at most {n} chars" if n is not None else "") if p)
             for (f, c), (lo, hi, n) in PLAUSIBLE.items()),
         where=lambda feed, col: (feed.name, col.name) in PLAUSIBLE),
)
RULE_BY_CODE: dict[str, Rule] = {r.code: r for r in RULES}
RULE_MESSAGES: dict[str, str] = {r.code: r.message for r in RULES}
WARNING_RULES: frozenset[str] = frozenset(
    r.code for r in RULES if r.action is Action.WARNING)

_TRUE = frozenset(s.lower() for s in TRUE_SPELLINGS)
_FALSE = frozenset(s.lower() for s in FALSE_SPELLINGS)
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK_CHARS = np.frombuffer(b"10X98765432", dtype=np.uint8)
_EPOCH = date(1970, 1, 1)
_EARLIEST_BIRTH_DAYS = (EARLIEST_BIRTH - _EPOCH).days


@dataclass
class Violation:
    """Rows (a boolean mask over the batch) breaking `rule` in `column`."""

    column: str
    rule: str
    mask: np.ndarray


@dataclass
class ParsedColumn:
    values: pa.Array
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)


@dataclass
class IdDigits:
    """What an ID column says about each row (valid only where `ok`)."""

    ok: np.ndarray
    birth_days: np.ndarray  # days since 1970-01-01
    male: np.ndarray
    code: np.ndarray  # int64 identity of the number (-1 where not valid)


@dataclass
class ParsedBatch:
    """A batch after the column and row checks of one feed."""

    values: dict[str, pa.Array]
    violations: list[Violation]  # data errors: the row is quarantined
    id_digits: dict[str, IdDigits]
    warnings: list[Violation] = field(default_factory=list)  # counted; the row is kept

    def bad_rows(self, n: int) -> np.ndarray:
        bad = np.zeros(n, dtype=bool)
        for v in self.violations:
            bad |= v.mask
        return bad


# -- small helpers -----------------------------------------------------------
def to_mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null counted as False."""
    filled = pc.fill_null(arr, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _null_like(type_: pa.DataType) -> pa.Scalar:
    return pa.scalar(None, type=type_)


def raw_text(arr: pa.Array) -> pa.Array | None:
    """The strings of a textual column exactly as written; None when not textual."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if pa.types.is_string(arr.type) else None


def as_text(arr: pa.Array) -> pa.Array | None:
    """Strings without surrounding spaces (U+0020 only), empty -> null; None when `arr` is
    not textual. Nothing else is stripped: a control character stays and is an error."""
    text = raw_text(arr)
    if text is None:
        return None
    trimmed = pc.utf8_trim(text, characters=" ")
    return pc.if_else(pc.equal(pc.utf8_length(trimmed), 0), _null_like(pa.string()), trimmed)


def control_characters(arr: pa.Array) -> np.ndarray:
    """Rows whose value as written holds a control character (U+0000-U+001F, U+007F)."""
    text = raw_text(arr)
    if text is None:
        return np.zeros(len(arr), dtype=bool)
    return to_mask(pc.match_substring_regex(text, r"[\x00-\x1f\x7f]"))


def surrounding_spaces(arr: pa.Array) -> np.ndarray:
    """Rows whose value as written starts or ends with a space."""
    text = raw_text(arr)
    if text is None:
        return np.zeros(len(arr), dtype=bool)
    return to_mask(pc.match_substring_regex(text, r"^ | $"))


def _text_of_any(arr: pa.Array) -> pa.Array:
    """Text of a column that may arrive as numbers (e.g. codes written as ints)."""
    text = as_text(arr)
    if text is not None:
        return text
    if pa.types.is_floating(arr.type):
        # 620102001001.0 -> "620102001001": integral floats carry codes, not decimals
        integral = pc.equal(pc.floor(arr), arr)
        arr = pc.if_else(integral, pc.cast(arr, pa.int64(), safe=False), _null_like(pa.int64()))
    result = as_text(pc.cast(arr, pa.string()))
    assert result is not None
    return result


def _matches(text: pa.Array, pattern: str) -> np.ndarray:
    return to_mask(pc.match_substring_regex(text, pattern))


def char_matrix(text: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(n x width uint8 matrix, rows whose text is exactly `width` ASCII bytes).

    Shape checks on fixed-width codes (dates, IDs, village codes) are then numpy
    comparisons instead of a regular expression per value.
    """
    n = len(text)
    fits = to_mask(pc.equal(pc.binary_length(text), width))
    filled = pc.if_else(pa.array(fits), text, "0" * width)
    fixed = pc.cast(filled, pa.binary(width))
    raw = np.frombuffer(fixed.buffers()[1], dtype=np.uint8)
    chars = raw[fixed.offset * width : (fixed.offset + n) * width].reshape(n, width)
    return chars, fits


def _all_digits(chars: np.ndarray) -> np.ndarray:
    return np.asarray(((chars >= 48) & (chars <= 57)).all(axis=1))


def _number(chars: np.ndarray) -> np.ndarray:
    """The decimal number written by each row of digit characters."""
    weights = 10 ** np.arange(chars.shape[1] - 1, -1, -1, dtype=np.int64)
    return (chars.astype(np.int64) - 48) @ weights


def civil_days(
    year: np.ndarray, month: np.ndarray, day: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970-01-01 and whether (year, month, day) is a calendar date."""
    ok = (month >= 1) & (month <= 12) & (day >= 1)
    months = (year.astype(np.int64) - 1970) * 12 + np.where(ok, month, 1) - 1
    start = months.astype("datetime64[M]")
    start_days = start.astype("datetime64[D]").astype(np.int64)
    next_days = (start + np.timedelta64(1, "M")).astype("datetime64[D]").astype(np.int64)
    ok &= day <= next_days - start_days
    return start_days + np.where(ok, day - 1, 0), ok


def _date_array(days: np.ndarray, ok: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.date32(), mask=~ok)


def days_of(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A date32 array as (days since epoch, valid mask)."""
    valid = to_mask(pc.is_valid(arr))
    days = pc.fill_null(arr.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
    return days.astype(np.int64), valid


def _digits(text: pa.Array, start: int, stop: int) -> np.ndarray:
    return np.asarray(
        pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64()).to_numpy(
            zero_copy_only=False
        )
    )


# -- per kind ----------------------------------------------------------------
def parse_date(col: Column, arr: pa.Array, *, month: bool) -> ParsedColumn:
    text = as_text(arr)
    if text is None:  # native Parquet date or timestamp
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            values = arr.cast(pa.date32()) if not pa.types.is_timestamp(arr.type) else (
                pc.cast(pc.floor_temporal(arr, unit="day"), pa.date32())
            )
            if month:  # a date inside the month names the month
                values = pc.cast(pc.floor_temporal(values, unit="month"), pa.date32())
            return ParsedColumn(values)
        text = _text_of_any(arr)
    width = 7 if month else 10
    present = to_mask(pc.is_valid(text))
    chars, fits = char_matrix(text, width)
    digit_cols = [0, 1, 2, 3, 5, 6] + ([] if month else [8, 9])
    dash_cols = [4] if month else [4, 7]
    shaped = fits & _all_digits(chars[:, digit_cols]) & (chars[:, dash_cols] == 45).all(axis=1)
    year = _number(chars[:, 0:4])
    mon = _number(chars[:, 5:7])
    day = np.ones_like(year) if month else _number(chars[:, 8:10])
    days, calendar_ok = civil_days(year, mon, day)
    ok = shaped & calendar_ok & (year >= 1)  # no year 0: not a date anyone can read back
    return ParsedColumn(_date_array(days, ok), [Violation(col.name, "bad_date", present & ~ok)])


def parse_int(col: Column, arr: pa.Array) -> ParsedColumn:
    violations: list[Violation] = []
    if pa.types.is_integer(arr.type):
        values = arr.cast(pa.int64())
    elif pa.types.is_floating(arr.type):
        arr = pc.if_else(pc.is_nan(arr), _null_like(arr.type), arr)
        integral = pc.equal(pc.floor(arr), arr)
        bad = to_mask(pc.is_valid(arr)) & ~to_mask(integral)
        values = pc.if_else(integral, pc.cast(arr, pa.int64(), safe=False), _null_like(pa.int64()))
        violations.append(Violation(col.name, "bad_number", bad))
    else:
        text = _text_of_any(arr)
        present = to_mask(pc.is_valid(text))
        ok = _matches(text, r"^[+-]?\d{1,18}(\.0*)?$")
        cleaned = pc.replace_substring_regex(text, r"\.0*$", "")
        cleaned = pc.if_else(pa.array(ok), cleaned, _null_like(pa.string()))
        values = pc.cast(cleaned, pa.int64())
        violations.append(Violation(col.name, "bad_number", present & ~ok))
    violations += _range_violations(col, values)
    return ParsedColumn(values, violations)


def _numeric_text(arr: pa.Array, pattern: str) -> tuple[pa.Array, np.ndarray, pa.Array | None]:
    """(float64 values, bad-number mask, the text when the input was text)."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        values = arr.cast(pa.float64())
        values = pc.if_else(pc.is_nan(values), _null_like(pa.float64()), values)
        return values, np.zeros(len(arr), dtype=bool), None
    text = _text_of_any(arr)
    present = to_mask(pc.is_valid(text))
    ok = _matches(text, pattern)
    values = pc.cast(pc.if_else(pa.array(ok), text, _null_like(pa.string())), pa.float64())
    return values, present & ~ok, text


def _range_violations(col: Column, values: pa.Array) -> list[Violation]:
    if col.min_value is None and col.max_value is None:
        return []
    out = np.zeros(len(values), dtype=bool)
    if col.min_value is not None:
        out |= to_mask(pc.less(values, col.min_value))
    if col.max_value is not None:
        out |= to_mask(pc.greater(values, col.max_value))
    return [Violation(col.name, "out_of_range", out)]


def parse_float(col: Column, arr: pa.Array) -> ParsedColumn:
    values, bad, _ = _numeric_text(arr, r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
    return ParsedColumn(values, [Violation(col.name, "bad_number", bad), *_range_violations(
        col, values)])


def parse_money(col: Column, arr: pa.Array) -> ParsedColumn:
    values, bad, text = _numeric_text(arr, r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
    violations = [Violation(col.name, "bad_number", bad)]
    if not col.signed:
        violations.append(Violation(col.name, "negative_money", to_mask(pc.less(values, 0))))
    if text is not None:
        # a non-zero digit at the third decimal place or beyond ("1.500" is fine)
        too_fine = _matches(text, r"\.\d{2}\d*[1-9]")
    else:
        cents = pc.multiply(values, 100.0)
        drift = pc.abs(pc.subtract(cents, pc.round(cents)))
        tolerance = pc.max_element_wise(pc.multiply(pc.abs(cents), 1e-9), 1e-6)
        too_fine = to_mask(pc.greater(drift, tolerance))
    violations.append(Violation(col.name, "too_many_decimals", too_fine))
    return ParsedColumn(values, violations)


def parse_bool(col: Column, arr: pa.Array) -> ParsedColumn:
    if pa.types.is_boolean(arr.type):
        return ParsedColumn(arr)
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    text = _text_of_any(arr)
    lower = pc.utf8_lower(text)
    is_true = pc.is_in(lower, value_set=pa.array(sorted(_TRUE)))
    is_false = pc.is_in(lower, value_set=pa.array(sorted(_FALSE)))
    known = to_mask(is_true) | to_mask(is_false)
    present = to_mask(pc.is_valid(text))
    values = pa.array(to_mask(is_true), type=pa.bool_(), mask=~known)
    return ParsedColumn(values, [Violation(col.name, "bad_bool", present & ~known)])


def parse_enum(col: Column, arr: pa.Array) -> ParsedColumn:
    lookup = col.enum_lookup()
    text = _text_of_any(arr)
    index = pc.index_in(text, value_set=pa.array(list(lookup)))
    values = pc.take(pa.array(list(lookup.values())), index)
    bad = to_mask(pc.is_valid(text)) & ~to_mask(pc.is_valid(index))
    return ParsedColumn(values, [Violation(col.name, "unknown_enum", bad)])


def parse_enum_list(col: Column, arr: pa.Array) -> ParsedColumn:
    """`;`-separated codes or terms -> canonical codes joined by ';' in contract order."""
    assert col.enum is not None
    lookup = col.enum_lookup()
    order = {code: i for i, code in enumerate(col.enum)}
    text = _text_of_any(arr)
    n = len(text)
    lists = pc.split_pattern(text, ";")
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False))
    items = pc.utf8_trim(pc.list_flatten(lists), characters=" ")
    nonempty = to_mask(pc.greater(pc.utf8_length(items), 0))
    index = pc.index_in(items, value_set=pa.array(list(lookup)))
    position_of_spelling = pa.array([order[code] for code in lookup.values()], pa.int64())
    position = pc.fill_null(pc.take(position_of_spelling, index), -1).to_numpy(
        zero_copy_only=False
    )
    known = position >= 0
    bad = np.zeros(n, dtype=bool)
    bad[parents[nonempty & ~known]] = True
    bits = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(bits, parents[known], np.left_shift(1, position[known]))
    codes = list(col.enum)
    distinct, inverse = np.unique(bits, return_inverse=True)
    joined = [
        ";".join(codes[i] for i in range(len(codes)) if int(b) >> i & 1) or None
        for b in distinct
    ]
    values = pc.take(pa.array(joined, pa.string()), pa.array(inverse.astype(np.int64)))
    values = pc.if_else(pa.array(bad), _null_like(pa.string()), values)
    return ParsedColumn(values, [Violation(col.name, "unknown_enum", bad)])


_PATTERN_RULES = {HOUSEHOLD_ID_PATTERN: "bad_household_id",
                  DIVISION_CODE_PATTERN: "bad_division_code"}


def parse_str(col: Column, arr: pa.Array) -> ParsedColumn:
    text = _text_of_any(arr)
    violations = []
    if col.pattern is not None:
        shaped = _matches(text, f"^(?:{col.pattern})$")
        bad = to_mask(pc.is_valid(text)) & ~shaped
        violations.append(Violation(col.name, _PATTERN_RULES[col.pattern], bad))
        text = pc.if_else(pa.array(shaped), text, _null_like(pa.string()))
    return ParsedColumn(text, violations)


def plausibility(feed_name: str, col: Column, values: pa.Array) -> np.ndarray:
    """Cells outside the usual range or length (`PLAUSIBLE`): a warning, never an error."""
    limits = PLAUSIBLE.get((feed_name, col.name))
    odd = np.zeros(len(values), dtype=bool)
    if limits is None:
        return odd
    least, greatest, longest = limits
    if least is not None:
        odd |= to_mask(pc.less(values, least))
    if greatest is not None:
        odd |= to_mask(pc.greater(values, greatest))
    if longest is not None:
        odd |= to_mask(pc.greater(pc.utf8_length(values), longest))
    return odd


def parse_village(col: Column, arr: pa.Array) -> ParsedColumn:
    text = _text_of_any(arr)
    chars, fits = char_matrix(text, 12)
    ok = fits & _all_digits(chars)
    bad = to_mask(pc.is_valid(text)) & ~ok
    return ParsedColumn(text, [Violation(col.name, "bad_village_code", bad)])


def parse_id(col: Column, arr: pa.Array, latest_birth_days: np.ndarray) -> tuple[
    ParsedColumn, IdDigits
]:
    """ID numbers: shape, then birth date (not after `latest_birth_days`), then check char."""
    text = pc.utf8_upper(_text_of_any(arr))  # a lower-case x is the same check character
    present = to_mask(pc.is_valid(text))
    chars, fits = char_matrix(text, 18)
    chars = chars.copy()  # the matrix views Arrow's read-only buffer
    last = chars[:, 17]
    shaped = fits & _all_digits(chars[:, :17]) & (
        ((last >= 48) & (last <= 57)) | (last == 88))
    region_zero = shaped & (chars[:, 0] == 48)
    chars[~shaped] = np.frombuffer(b"110105194912310021", dtype=np.uint8)
    digits = chars.astype(np.int64) - 48
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10:12] @ np.array([10, 1])
    day = digits[:, 12:14] @ np.array([10, 1])
    birth_days, calendar_ok = civil_days(year, month, day)
    # impossible: not a calendar date, or born after the row reached the platform
    birth_ok = calendar_ok & (year >= 1) & (birth_days <= latest_birth_days)
    expected = _ID_CHECK_CHARS[(digits[:, :17] @ _ID_WEIGHTS) % 11]
    check_ok = expected == chars[:, 17]
    bad_shape = present & ~shaped
    bad_birth = shaped & ~birth_ok
    bad_check = shaped & birth_ok & ~check_ok
    ok = shaped & birth_ok & check_ok
    values = pc.if_else(pa.array(ok), text, _null_like(pa.string()))
    parsed = ParsedColumn(
        values,
        [
            Violation(col.name, "id_format", bad_shape),
            Violation(col.name, "id_birth_date", bad_birth),
            Violation(col.name, "id_check_char", bad_check),
        ],
        [
            Violation(col.name, "id_birth_before_1890",
                      ok & (birth_days < _EARLIEST_BIRTH_DAYS)),
            Violation(col.name, "id_region_zero", ok & region_zero),
        ],
    )
    # a number per valid ID (17 digits and the check value): exact, sortable, joinable
    check_value = np.where(last == 88, 10, digits[:, 17])
    code = np.where(ok, _number(chars[:, :17]) * 11 + check_value, -1)
    return parsed, IdDigits(ok, birth_days, digits[:, 16] % 2 == 1, code)


def id_codes(valid_ids: pa.Array) -> np.ndarray:
    """The int64 identity (see `parse_id`) of ID numbers known to be valid."""
    chars, _ = char_matrix(pc.utf8_upper(valid_ids), 18)
    last = chars[:, 17]
    check_value = np.where(last == 88, 10, last.astype(np.int64) - 48)
    return np.asarray(_number(chars[:, :17]) * 11 + check_value, dtype=np.int64)


# -- a whole batch -----------------------------------------------------------
def _event_days(kind: Kind, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The first day of the event a row describes (dates, months, or a year)."""
    if kind in (Kind.DATE, Kind.MONTH):
        return days_of(values)
    years = pc.fill_null(values, 1970).to_numpy(zero_copy_only=False).astype(np.int64)
    valid = to_mask(pc.is_valid(values)) & (years >= 1) & (years <= 9999)
    days, _ = civil_days(np.where(valid, years, 1970), np.ones_like(years), np.ones_like(years))
    return days, valid


def parse_batch(spec: Feed, columns: dict[str, pa.Array], n: int, *, today: date) -> ParsedBatch:
    """Check every contract column of one batch (vault-only ones included); absent
    nullable columns become nulls."""
    values: dict[str, pa.Array] = {}
    violations: list[Violation] = []
    warnings: list[Violation] = []
    id_digits: dict[str, IdDigits] = {}

    def parse(col: Column, raw: pa.Array) -> ParsedColumn:
        if col.kind is Kind.ID:
            parsed, id_digits[col.name] = parse_id(col, raw, latest_birth)
            return parsed
        if col.kind in (Kind.DATE, Kind.MONTH):
            return parse_date(col, raw, month=col.kind is Kind.MONTH)
        parser = _PARSERS.get(col.kind, parse_str)
        return parser(col, raw)

    latest_birth = np.full(n, (today - _EPOCH).days, dtype=np.int64)
    reported = parse_date(spec.column("reported_date"), columns["reported_date"], month=False)
    reported_days, reported_ok = days_of(reported.values)
    # an ID's birth date may not be after the row was reported (or, failing that, today)
    latest_birth = np.where(reported_ok, reported_days, latest_birth)

    for col in spec.contract_columns:
        raw = columns.get(col.name)
        if raw is None:
            raw = pa.nulls(n, pa.string())
        parsed = reported if col.name == "reported_date" else parse(col, raw)
        # the control-character rule first: it names the real problem of the cell
        errors = [Violation(col.name, "control_character", control_characters(raw)),
                  *parsed.violations]
        already_bad = np.zeros(n, dtype=bool)
        for v in errors:
            # one rule per cell: the first that applies (e.g. bad_number hides range)
            v.mask = v.mask & ~already_bad
            already_bad |= v.mask
        if not col.nullable:
            # a null that no rule explains was empty in the input (or an empty list)
            missing = ~to_mask(pc.is_valid(parsed.values)) & ~already_bad
            errors.append(Violation(col.name, "missing_value", missing))
            already_bad |= missing
        values[col.name] = parsed.values
        violations += [v for v in errors if v.mask.any()]
        cell_warnings = [Violation(col.name, "surrounding_spaces", surrounding_spaces(raw)),
                         *parsed.warnings,
                         Violation(col.name, "implausible_value",
                                   plausibility(spec.name, col, parsed.values))]
        for w in cell_warnings:
            w.mask = w.mask & ~already_bad  # a broken cell is an error, not also odd
        warnings += [w for w in cell_warnings if w.mask.any()]

    if spec.event_column is not None:
        event_col = spec.column(spec.event_column)
        event_days, event_ok = _event_days(event_col.kind, values[event_col.name])
        early = reported_ok & event_ok & (reported_days < event_days)
        if early.any():
            warnings.append(Violation("reported_date", "reported_before_event", early))
    return ParsedBatch(values, violations, id_digits, warnings)


_PARSERS: dict[Kind, Callable[[Column, pa.Array], ParsedColumn]] = {
    Kind.INT: parse_int,
    Kind.FLOAT: parse_float,
    Kind.MONEY: parse_money,
    Kind.BOOL: parse_bool,
    Kind.ENUM: parse_enum,
    Kind.ENUM_LIST: parse_enum_list,
    Kind.VILLAGE: parse_village,
    Kind.STR: parse_str,
}
