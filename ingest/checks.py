"""Vectorised row checks: raw column arrays -> typed arrays plus rule violations.

Every parser takes one column of a batch (strings from CSV, native or string
types from Parquet) and returns the typed values (null where invalid) and the
rows that break a rule, as boolean numpy masks. No Python loop runs per row;
loops run over columns, rules or the distinct values of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from doudi.contract import FALSE_SPELLINGS, TRUE_SPELLINGS, Column, Feed, Kind
from doudi.idnumber import EARLIEST_BIRTH

# Rule code -> what it means; messages never carry the offending value, so they
# are safe to print even when the value is a personal identifier.
RULE_MESSAGES: dict[str, str] = {
    "id_format": "not an 18-character ID number (6-digit region, 8-digit birth date, "
    "3-digit sequence, check character 0-9 or X)",
    "id_check_char": "check character does not match (ISO 7064 MOD 11-2)",
    "id_birth_date": "ID number holds an impossible birth date (before 1890, after the "
    "report, or not a calendar date)",
    "unknown_enum": "value is not one of the contract's codes or Chinese terms",
    "bad_date": "not a calendar date in the form YYYY-MM-DD (months: YYYY-MM)",
    "bad_number": "not a number in the form the contract allows",
    "bad_bool": "not a boolean (true/false, 1/0, 是/否)",
    "bad_village_code": "village code is not 12 digits",
    "negative_money": "money is negative where the contract does not allow it",
    "too_many_decimals": "money has more than 2 decimals",
    "missing_value": "required value is empty",
    "out_of_range": "value outside the contract's range or length",
    "reported_before_event": "reported_date is before the event the row describes",
    "unknown_household": "household is not on the roster (households feed, now or before)",
    "unknown_person": "person is unknown to the persons feed (now or before)",
}

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
    violations: list[Violation]
    id_digits: dict[str, IdDigits]

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


def as_text(arr: pa.Array) -> pa.Array | None:
    """Trimmed strings with empty -> null; None when `arr` is not textual."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        return None
    trimmed = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(pc.utf8_length(trimmed), 0), _null_like(pa.string()), trimmed)


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
    items = pc.utf8_trim_whitespace(pc.list_flatten(lists))
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


def parse_str(col: Column, arr: pa.Array) -> ParsedColumn:
    text = _text_of_any(arr)
    violations = []
    if col.max_length is not None:
        long = to_mask(pc.greater(pc.utf8_length(text), col.max_length))
        violations.append(Violation(col.name, "out_of_range", long))
    return ParsedColumn(text, violations)


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
    shaped = fits & (chars[:, 0] != 48) & _all_digits(chars[:, :17]) & (
        ((last >= 48) & (last <= 57)) | (last == 88))
    chars[~shaped] = np.frombuffer(b"110105194912310021", dtype=np.uint8)
    digits = chars.astype(np.int64) - 48
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10:12] @ np.array([10, 1])
    day = digits[:, 12:14] @ np.array([10, 1])
    birth_days, calendar_ok = civil_days(year, month, day)
    birth_ok = calendar_ok & (birth_days >= _EARLIEST_BIRTH_DAYS) & (
        birth_days <= latest_birth_days
    )
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
    """Check every contract column of one batch; absent nullable columns become nulls."""
    values: dict[str, pa.Array] = {}
    violations: list[Violation] = []
    id_digits: dict[str, IdDigits] = {}

    reported = parse_date(spec.column("reported_date"), columns["reported_date"], month=False)
    reported_days, reported_ok = days_of(reported.values)
    # an ID's birth date may not be after the row was reported (or, failing that, today)
    latest_birth = np.where(reported_ok, reported_days, (today - _EPOCH).days)

    for col in spec.columns:
        raw = columns.get(col.name)
        if raw is None:
            raw = pa.nulls(n, pa.string())
        if col.name == "reported_date":
            parsed = reported
        elif col.kind is Kind.ID:
            parsed, id_digits[col.name] = parse_id(col, raw, latest_birth)
        elif col.kind is Kind.DATE:
            parsed = parse_date(col, raw, month=False)
        elif col.kind is Kind.MONTH:
            parsed = parse_date(col, raw, month=True)
        elif col.kind is Kind.INT:
            parsed = parse_int(col, raw)
        elif col.kind is Kind.FLOAT:
            parsed = parse_float(col, raw)
        elif col.kind is Kind.MONEY:
            parsed = parse_money(col, raw)
        elif col.kind is Kind.BOOL:
            parsed = parse_bool(col, raw)
        elif col.kind is Kind.ENUM:
            parsed = parse_enum(col, raw)
        elif col.kind is Kind.ENUM_LIST:
            parsed = parse_enum_list(col, raw)
        elif col.kind is Kind.VILLAGE:
            parsed = parse_village(col, raw)
        else:
            parsed = parse_str(col, raw)
        already_bad = np.zeros(n, dtype=bool)
        for v in parsed.violations:
            # one rule per cell: the first that applies (e.g. bad_number hides range)
            v.mask = v.mask & ~already_bad
            already_bad |= v.mask
        if not col.nullable:
            # a null that no rule explains was empty in the input (or an empty list)
            missing = ~to_mask(pc.is_valid(parsed.values)) & ~already_bad
            parsed.violations.append(Violation(col.name, "missing_value", missing))
        values[col.name] = parsed.values
        violations += [v for v in parsed.violations if v.mask.any()]

    if spec.event_column is not None:
        event_col = spec.column(spec.event_column)
        event_days, event_ok = _event_days(event_col.kind, values[event_col.name])
        early = reported_ok & event_ok & (reported_days < event_days)
        if early.any():
            violations.append(Violation("reported_date", "reported_before_event", early))
    return ParsedBatch(values, violations, id_digits)
