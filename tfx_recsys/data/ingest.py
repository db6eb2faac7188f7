"""Row-level rules of ingestion: typed rows, rejected rows and their report.

Pure Python (no TFX, Beam or TensorFlow): InteractionsExampleGen's executor
calls these for every row, the tests call them directly.

A raw row (from `tables.read_table`) becomes a typed row, {name: value}:

| name / kind                    | value                                       |
|--------------------------------|---------------------------------------------|
| user_id, item_id (keys)        | str, non-empty                              |
| timestamp (interactions)       | int seconds, 0 <= t <= now + 1 day          |
| rating                         | float, finite, required                     |
| id, categorical, text          | str ('' when missing)                       |
| multi_categorical              | list of str (split on `separator`; [] when missing) |
| numeric                        | float, finite, or None when missing         |
| timestamp (a feature)          | int, or None when missing                   |

A row that breaks a rule is not typed but rejected: `Reject(file, row,
column, reason, raw)`, with `reason` one of a few short categories (the
REASON_* constants, and the unknown-user/item reasons of `join`) so that the
report can count them. A row is rejected for its first problem only, so the
rejected share of a table counts rows, not problems. Feature tables (users,
items) keep the first row of each key and reject later ones.

Rows are never changed silently: every row read is either typed, rejected,
or (interactions below `min_rating`) counted as filtered.
"""

import collections
import csv
import datetime
import io
import json
import math
import re
import time
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, NamedTuple,
                    Optional, Tuple, Union)

from tfx_recsys import dataset_config as dc
from tfx_recsys.data import tables
from tfx_recsys.data.native import DataError

REJECTED_ROWS_FILE = "rejected_rows.csv"
REJECTED_COLUMNS = ("file", "row", "column", "reason", "raw")

REASON_MALFORMED = "malformed row (wrong number of fields)"
REASON_EMPTY_ID = "empty id"
REASON_MISSING = "missing value"
REASON_NOT_INTEGER = "not an integer"
REASON_NOT_NUMBER = "not a number"
REASON_NOT_FINITE = "not a finite number"
REASON_TIMESTAMP_RANGE = "timestamp negative or in the future"
REASON_MANY_VALUES = "more than one value"
REASON_NOT_UTF8 = "not valid UTF-8"
REASON_DUPLICATE_KEY = "duplicate key"

# How far in the future an interaction timestamp may be (clock skew).
FUTURE_TOLERANCE_SECONDS = 86_400
# Rejected rows quoted in a failure message, per table.
FIRST_REJECTED_SHOWN = 5
_RAW_CHARS = 200

Row = Dict[str, Any]


class Reject(NamedTuple):
    """One rejected row.

    table: 'interactions', 'users' or 'items'.
    file: the table's path as the config gives it.
    row: the row number (see tables.py: CSV line, or record number).
    column: the file's column with the problem ('' for the whole row).
    reason: a short category (REASON_*, or join's unknown user/item).
    raw: the offending value (or row), shortened.
    """

    table: str
    file: str
    row: int
    column: str
    reason: str
    raw: str


class _Bad(Exception):
    """A value that breaks a rule: its reason category."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------
# Values


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(REASON_NOT_UTF8) from None
    return value


def _scalar(raw: Any) -> Any:
    """The one value of `raw`: lists (Parquet, TFRecord) must hold at most one;
    None or an empty list is None; bytes are decoded."""
    if isinstance(raw, (list, tuple)):
        if len(raw) > 1:
            raise _Bad(REASON_MANY_VALUES)
        raw = raw[0] if raw else None
    return _decode(raw)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    """A scalar as text: integral floats without '.0' (ids read by pandas as
    floats), other values with str()."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(REASON_NOT_FINITE)
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_id(raw: Any) -> str:
    """A key: non-empty text (whitespace only counts as empty)."""
    value = _scalar(raw)
    if _is_missing(value):
        raise _Bad(REASON_EMPTY_ID)
    return _text(value)


def parse_text(raw: Any) -> str:
    """An id, categorical or text feature: text, '' when missing."""
    return _text(_scalar(raw))


def parse_bag(raw: Any, separator: str) -> List[str]:
    """A multi_categorical feature: each value split on `separator`, empty
    pieces dropped, order kept; a list (Parquet, TFRecord) is flattened."""
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    result = []
    for value in values:
        value = _decode(value)
        if value is not None:
            result.extend(p for p in _text(value).split(separator) if p != "")
    return result


_INTEGER = re.compile(r"[+-]?\d+\Z")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)\Z", re.IGNORECASE)


def parse_integer(raw: Any) -> Optional[int]:
    """An integer, or None when missing. Integral floats (Parquet) are
    accepted; datetimes (Parquet timestamp columns) become epoch seconds,
    a naive one taken as UTC."""
    value = _scalar(raw)
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise _Bad(REASON_NOT_INTEGER)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(REASON_NOT_FINITE)
        if value.is_integer():
            return int(value)
        raise _Bad(REASON_NOT_INTEGER)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return math.floor(value.timestamp())
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    raise _Bad(REASON_NOT_INTEGER)


def parse_number(raw: Any) -> Optional[float]:
    """A finite float, or None when missing."""
    value = _scalar(raw)
    if _is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if _NON_FINITE.match(text):
            raise _Bad(REASON_NOT_FINITE)
        if not _NUMBER.match(text):
            raise _Bad(REASON_NOT_NUMBER)
        value = text
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Bad(REASON_NOT_NUMBER) from None
    if not math.isfinite(number):
        raise _Bad(REASON_NOT_FINITE)
    return number


def _required(parse):
    def parse_required(raw):
        value = parse(raw)
        if value is None:
            raise _Bad(REASON_MISSING)
        return value
    return parse_required


def _interaction_timestamp(now: float):
    latest = now + FUTURE_TOLERANCE_SECONDS

    def parse(raw):
        value = _required(parse_integer)(raw)
        if not 0 <= value <= latest:
            raise _Bad(REASON_TIMESTAMP_RANGE)
        return value
    return parse


def _feature_parser(feature: dc.Feature):
    if feature.kind == "multi_categorical":
        return lambda raw: parse_bag(raw, feature.separator)
    if feature.kind == "numeric":
        return parse_number
    if feature.kind == "timestamp":
        return parse_integer
    return parse_text


def raw_text(raw: Any) -> str:
    """A raw value as one line of text for the rejected-rows file."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    elif isinstance(raw, (list, tuple)):
        raw = "[" + ", ".join(raw_text(v) for v in raw) + "]"
    text = "" if raw is None else str(raw)
    return text if len(text) <= _RAW_CHARS else text[:_RAW_CHARS] + "..."


# --------------------------------------------------------------------------
# Rows


class RowParser:
    """Types the raw rows of one table following the config."""

    def __init__(self, config: dc.DatasetConfig, table: str,
                 now: Optional[float] = None):
        self.table = table
        self.file = tables.table_spec(config, table).path
        self.columns = tables.column_map(config, table)
        now = time.time() if now is None else now
        if table == "interactions":
            self._parsers = {dc.USER_ID: parse_id, dc.ITEM_ID: parse_id,
                             dc.TIMESTAMP: _interaction_timestamp(now)}
            if dc.RATING in self.columns:
                self._parsers[dc.RATING] = _required(parse_number)
        else:
            spec = tables.table_spec(config, table)
            key = dc.USER_ID if table == "users" else dc.ITEM_ID
            self._parsers = {key: parse_id,
                             **{f.name: _feature_parser(f) for f in spec.features}}

    def parse(self, number: int, raw: tables.RawRow) -> Union[Row, Reject]:
        """The typed row, or the Reject of its first problem."""
        if isinstance(raw, tables.Malformed):
            return self.reject(number, "", REASON_MALFORMED, raw.raw)
        row = {}
        for name, parse in self._parsers.items():
            try:
                row[name] = parse(raw[name])
            except _Bad as bad:
                return self.reject(number, self.columns[name], bad.reason,
                                   raw_text(raw[name]))
        return row

    def reject(self, number: int, column: str, reason: str, raw: str) -> Reject:
        return Reject(self.table, self.file, number, column, reason, raw)


def parse_table(config: dc.DatasetConfig, table: str, data_dir: str,
                now: Optional[float] = None
                ) -> Iterator[Tuple[int, Union[Row, Reject]]]:
    """Yields (row number, typed row or Reject) for every row of one table,
    in file order. In users and items, a key seen before is a Reject
    (REASON_DUPLICATE_KEY): the first row of a key wins.

    Raises DataError for structural problems (tables.read_table).
    """
    source = tables.sources(config, data_dir)[table]
    parser = RowParser(config, table, now)
    key = None if table == "interactions" else (
        dc.USER_ID if table == "users" else dc.ITEM_ID)
    first_row: Dict[str, int] = {}
    for number, raw in tables.read_table(source):
        row = parser.parse(number, raw)
        if key is not None and not isinstance(row, Reject):
            if row[key] in first_row:
                row = parser.reject(
                    number, source.columns[key], REASON_DUPLICATE_KEY,
                    f"{raw_text(row[key])} (first on row {first_row[row[key]]})")
            else:
                first_row[row[key]] = number
        yield number, row


def below_min_rating(row: Row, config: dc.DatasetConfig) -> bool:
    """The implicit-feedback rule: True when the interaction is not a
    positive (rating below `interactions.min_rating`)."""
    threshold = config.interactions.min_rating
    return threshold is not None and row[dc.RATING] < threshold


def unknown_reason(table_path: str, what: str) -> str:
    """The reject reason of an interaction whose user or item is unknown."""
    return f"unknown {what} (no accepted row in {table_path})"


def unknown_key(number: int, interaction: Row, users: Mapping[str, Row],
                items: Mapping[str, Row], config: dc.DatasetConfig) -> Optional[Reject]:
    """A Reject when the interaction's user or item has no accepted row in
    its table, else None."""
    spec = config.interactions
    for key, table, column, what in ((dc.USER_ID, users, spec.user, "user"),
                                     (dc.ITEM_ID, items, spec.item, "item")):
        if interaction[key] not in table:
            path = (config.users if what == "user" else config.items).path
            return Reject("interactions", spec.path, number, column,
                          unknown_reason(path, what), raw_text(interaction[key]))
    return None


def with_features(row: Row, users: Mapping[str, Row], items: Mapping[str, Row]) -> Row:
    """The row with its user's and item's features (the row's own values win)."""
    return {**users[row[dc.USER_ID]], **items[row[dc.ITEM_ID]], **row}


def join(number: int, interaction: Row, users: Mapping[str, Row],
         items: Mapping[str, Row], config: dc.DatasetConfig
         ) -> Union[Row, Reject]:
    """The interaction with its user's and item's features, or a Reject when
    either has no accepted row in its table."""
    reject = unknown_key(number, interaction, users, items, config)
    return reject if reject is not None else with_features(interaction, users, items)


# --------------------------------------------------------------------------
# The report


def sort_rejects(rejects: Iterable[Reject]) -> List[Reject]:
    """Rejects in table order (interactions, users, items), then row."""
    return sorted(rejects, key=lambda r: (tables.TABLES.index(r.table), r.row,
                                          r.column, r.reason))


def rejected_rows_csv(rejects: Iterable[Reject]) -> str:
    """The rejected-rows file: header REJECTED_COLUMNS, one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REJECTED_COLUMNS)
    for r in sort_rejects(rejects):
        writer.writerow((r.file, r.row, r.column, r.reason, r.raw))
    return out.getvalue()


def build_report(config: dc.DatasetConfig, rejects: Iterable[Reject],
                 counts: Mapping[str, Tuple[int, int]],
                 examples: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """What ingestion did, as JSON-ready data.

    counts: {table: (rows read, rows filtered below min_rating)}.
    examples: {split: examples written}.

    Returns {"rejected_rows": total, "rejected_summary": {"<file>: <reason>":
    count}, "filtered_below_min_rating": n, "examples": {...}, "tables":
    {table: {"file", "rows", "rejected", "first_rejected": [[row, column,
    reason, raw], ...]}}}.
    """
    ordered = sort_rejects(rejects)
    summary = collections.Counter(f"{r.file}: {r.reason}" for r in ordered)
    report_tables = {}
    for table in tables.TABLES:
        rows, _ = counts.get(table, (0, 0))
        mine = [r for r in ordered if r.table == table]
        report_tables[table] = {
            "file": tables.table_spec(config, table).path, "rows": rows,
            "rejected": len(mine),
            "first_rejected": [[r.row, r.column, r.reason, r.raw]
                               for r in mine[:FIRST_REJECTED_SHOWN]]}
    return {"rejected_rows": len(ordered),
            "rejected_summary": dict(summary),
            "filtered_below_min_rating": sum(f for _, f in counts.values()),
            "examples": dict(examples or {}),
            "tables": report_tables}


def check_report(report: Mapping[str, Any], config: dc.DatasetConfig,
                 data_dir: str, rejected_rows_path: str) -> None:
    """Fails (DataError) when a table's rejected share exceeds
    `max_rejected_fraction`, or when no training example is left.

    The message names each offending file, the count, the first rejected
    rows and where the full list is.
    """
    sources = tables.sources(config, data_dir)
    limit = config.max_rejected_fraction
    problems = []
    # Feature tables first: their rejects cascade into unknown users/items.
    for table in ("users", "items", "interactions"):
        entry = report["tables"][table]
        rows, rejected = entry["rows"], entry["rejected"]
        if rows and rejected / rows > limit:
            first = "; ".join(
                f"row {row} ({f'column {column!r}: ' if column else ''}{reason}"
                f"{f', {raw!r}' if raw else ''})"
                for row, column, reason, raw in entry["first_rejected"])
            problems.append(
                f"{sources[table].path}: {rejected} of {rows} rows rejected "
                f"({rejected / rows:.1%}), more than max_rejected_fraction "
                f"{limit:g} allows. First rejected: {first}")
    if problems:
        raise DataError(
            " | ".join(problems) + f". All rejected rows are listed in "
            f"{rejected_rows_path}. Fix those rows, or raise "
            "max_rejected_fraction in the dataset config if losing them is "
            "acceptable.")
    if not report["examples"].get("train"):
        entry = report["tables"]["interactions"]
        raise DataError(
            f"{sources['interactions'].path}: no training example left "
            f"({entry['rows']} rows read, {entry['rejected']} rejected, "
            f"{report['filtered_below_min_rating']} below min_rating, the rest "
            f"assigned to eval by the {config.split.kind} split). Check the "
            "data and the split settings.")


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
