"""Row-level rules of ingestion: typed rows, rejected rows and their report.

Pure Python (no TFX, Beam or TensorFlow): InteractionsExampleGen's executor
calls these for every row, the tests call them directly.

A raw row (from `tables.read_table`) becomes a typed row, {name: value}:

| name / kind                    | value                                       |
|--------------------------------|---------------------------------------------|
| user_id, item_id (keys)        | str, non-empty, trimmed                     |
| timestamp (interactions)       | int seconds, 0 <= t <= now + 1 day          |
| rating                         | float, finite, required                     |
| id (a feature)                 | str, trimmed ('' when missing)              |
| categorical, text              | str ('' when missing)                       |
| multi_categorical              | list of str (split on `separator`; [] when missing) |
| numeric                        | float, finite, or None when missing         |
| timestamp (a feature)          | int, or None when missing                   |

Missing means empty, whitespace only, or NaN (the text "NaN" in any case,
or a float NaN from Parquet or TFRecord), at ingest as at serving; "inf" is
rejected.

A row that breaks a rule is not typed but rejected: `Reject(file, row,
column, reason, raw)`, with `reason` one of a few short categories (the
REASON_* constants, the CSV ones of `tables`, and the unknown-user/item
reasons of `join`) so that the report can count them. A row is rejected for
its first problem only, so the rejected share of a table counts rows, not
problems; a CSV region that is no row (a quote that swallowed the lines after
it) is rejected line by line.

Exact duplicates are removed and counted, not rejected: in users and items
a row identical to the first row of its key (a row with the same key and
other values is rejected as REASON_DUPLICATE_KEY); in interactions a row
with the same user, item, timestamp and rating as an earlier one
(`drop_duplicates`, unless `interactions.keep_duplicates`).

Every row is accounted for: per table, rows read = accepted + rejected +
duplicates removed + filtered (interactions below `min_rating`);
`check_accounting` fails a run where that does not add up.
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
from tfx_recsys.errors import DataError

REJECTED_ROWS_FILE = "rejected_rows.csv"
REJECTED_COLUMNS = ("file", "row", "column", "reason", "raw")

REASON_MALFORMED = tables.WRONG_FIELD_COUNT
REASON_EMPTY_ID = "empty id"
REASON_MISSING = "missing value"
REASON_NOT_INTEGER = "not an integer"
REASON_NOT_NUMBER = "not a number"
REASON_NOT_FINITE = "not a finite number"
REASON_TIMESTAMP_RANGE = "timestamp negative or in the future"
REASON_TIMESTAMP_UNIT = ("timestamp in milliseconds or finer (seconds since "
                         "the epoch expected)")
REASON_MANY_VALUES = "more than one value"
REASON_NOT_UTF8 = tables.NOT_UTF8
REASON_DUPLICATE_KEY = "duplicate key"
# Not a rejection: an exact repeat, removed and counted apart.
REASON_DUPLICATE = "exact duplicate (removed)"

# Timestamps from here on are taken for milliseconds (or finer) rather than
# seconds: 1e11 seconds is the year 5138, 1e11 milliseconds is 1973.
_FINER_THAN_SECONDS = 10 ** 11

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


class Position(NamedTuple):
    """Where an interaction was read when a run reads several files (spans):
    ordered by span, then row; `file` names it in a Reject."""

    span: int
    row: int
    file: str


def _where(number, config: dc.DatasetConfig) -> Tuple[str, int]:
    """(file, row) of an interaction's number: a Position, or a row number
    of the config's one interactions file."""
    if isinstance(number, Position):
        return number.file, number.row
    return config.interactions.path, number


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
    """None, blank text or a float NaN."""
    return (value is None or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float) and math.isnan(value)))


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
    """A key: non-empty text, trimmed (whitespace only counts as empty)."""
    value = _scalar(raw)
    if _is_missing(value):
        raise _Bad(REASON_EMPTY_ID)
    return _text(value).strip()


def parse_text(raw: Any) -> str:
    """A categorical or text feature: text, '' when missing (a NaN too)."""
    value = _scalar(raw)
    return "" if isinstance(value, float) and math.isnan(value) else _text(value)


def parse_id_feature(raw: Any) -> str:
    """An id feature: text, trimmed like a key, '' when missing."""
    return parse_text(raw).strip()


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
_NAN = re.compile(r"[+-]?nan\Z", re.IGNORECASE)
_INFINITE = re.compile(r"[+-]?(inf|infinity)\Z", re.IGNORECASE)


def _is_nan_text(value: Any) -> bool:
    return isinstance(value, str) and bool(_NAN.match(value.strip()))


def parse_integer(raw: Any) -> Optional[int]:
    """An integer, or None when missing. Integral floats (Parquet) are
    accepted; datetimes (Parquet timestamp columns) become epoch seconds,
    a naive one taken as UTC."""
    value = _scalar(raw)
    if _is_missing(value) or _is_nan_text(value):
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
    """A finite float, or None when missing (NaN included)."""
    value = _scalar(raw)
    if _is_missing(value) or _is_nan_text(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if _INFINITE.match(text):
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
        if value > latest and value >= _FINER_THAN_SECONDS:
            raise _Bad(REASON_TIMESTAMP_UNIT)
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
    if feature.kind == "id":
        return parse_id_feature
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
            return self.reject(number, "", raw.reason, raw.raw)
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
                now: Optional[float] = None,
                stats: Optional[tables.ReadStats] = None
                ) -> Iterator[Tuple[int, Union[Row, Reject]]]:
    """Yields (row number, typed row or Reject) for every row of one table,
    in file order. In users and items the first row of a key wins: a later
    row with the same key is a Reject with REASON_DUPLICATE (an exact copy:
    removed, not rejected) or REASON_DUPLICATE_KEY (other values).

    stats: see tables.ReadStats.
    Raises DataError for structural problems (tables.read_table).
    """
    source = tables.sources(config, data_dir)[table]
    parser = RowParser(config, table, now)
    key = None if table == "interactions" else (
        dc.USER_ID if table == "users" else dc.ITEM_ID)
    # key -> (row number, hash of the typed row): what a later row is
    # compared with, without holding the rows here.
    first_row: Dict[str, Tuple[int, int]] = {}
    for number, raw in tables.read_table(source, stats):
        row = parser.parse(number, raw)
        if key is not None and not isinstance(row, Reject):
            fingerprint = hash(repr(sorted(row.items())))
            if row[key] not in first_row:
                first_row[row[key]] = (number, fingerprint)
            else:
                first, first_fingerprint = first_row[row[key]]
                if fingerprint == first_fingerprint:
                    row = parser.reject(number, "", REASON_DUPLICATE,
                                        f"same as row {first}")
                else:
                    row = parser.reject(
                        number, source.columns[key], REASON_DUPLICATE_KEY,
                        f"{raw_text(row[key])} (first on row {first})")
        yield number, row


def is_duplicate(reject: Reject) -> bool:
    """An exact repeat, removed and counted apart from the rejected rows."""
    return reject.reason == REASON_DUPLICATE


def drop_duplicates(numbered: Iterable[Tuple[int, Row]], config: dc.DatasetConfig
                    ) -> Tuple[List[Tuple[int, Row]], List[Reject]]:
    """Interactions without exact repeats: ((row number, row) kept in row
    order, a REASON_DUPLICATE Reject per repeat). A repeat has the same user,
    item, timestamp and rating as an earlier row; the first row is kept.
    With `interactions.keep_duplicates` every row is kept.

    ExampleGen calls this per user, after the grouping, so that no table of
    every interaction is held for it.
    """
    ordered = sorted(numbered, key=lambda pair: pair[0])
    if config.interactions.keep_duplicates:
        return ordered, []
    kept, duplicates, first = [], [], {}
    for number, row in ordered:
        key = duplicate_key(row)
        if key in first:
            file, line = _where(number, config)
            first_file, first_line = _where(first[key], config)
            same_as = (f"row {first_line}" if first_file == file
                       else f"{first_file} row {first_line}")
            duplicates.append(Reject("interactions", file, line,
                                     "", REASON_DUPLICATE, f"same as {same_as}"))
        else:
            first[key] = number
            kept.append((number, row))
    return kept, duplicates


def duplicate_key(row: Row) -> Tuple:
    """What makes two interactions exact repeats of each other."""
    return (row[dc.USER_ID], row[dc.ITEM_ID], row[dc.TIMESTAMP], row.get(dc.RATING))


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
            file, row = _where(number, config)
            return Reject("interactions", file, row, column,
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
    """The rejected-rows file: header REJECTED_COLUMNS, one line per row
    set aside (the removed duplicates too, with their reason)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REJECTED_COLUMNS)
    for r in sort_rejects(rejects):
        writer.writerow((r.file, r.row, r.column, r.reason, r.raw))
    return out.getvalue()


def build_report(config: dc.DatasetConfig, rejects: Iterable[Reject],
                 counts: Mapping[str, Tuple[int, int]],
                 examples: Optional[Mapping[str, int]] = None,
                 accepted: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """What ingestion did, as JSON-ready data.

    rejects: the rejected rows and the removed duplicates (REASON_DUPLICATE).
    counts: {table: (rows read, rows filtered below min_rating)}.
    examples: {split: examples written}.
    accepted: {table: rows accepted}, counted from what was written (the
      interactions in train and eval, the users and items examples);
      None where not known.

    Returns {"rejected_rows": total, "rejected_summary": {"<file>: <reason>":
    count}, "duplicates_removed": n, "filtered_below_min_rating": n,
    "examples": {...}, "tables": {table: {"file", "rows", "accepted",
    "rejected", "duplicates", "filtered", "first_rejected": [[row, column,
    reason, raw], ...]}}}. Duplicates are not in the rejected counts.
    """
    ordered = sort_rejects(rejects)
    rejected = [r for r in ordered if not is_duplicate(r)]
    summary = collections.Counter(f"{r.file}: {r.reason}" for r in rejected)
    duplicates = collections.Counter(r.table for r in ordered if is_duplicate(r))
    report_tables = {}
    for table in tables.TABLES:
        rows, filtered = counts.get(table, (0, 0))
        mine = [r for r in rejected if r.table == table]
        report_tables[table] = {
            "file": tables.table_spec(config, table).path, "rows": rows,
            "accepted": None if accepted is None else accepted.get(table, 0),
            "rejected": len(mine), "duplicates": duplicates[table],
            "filtered": filtered,
            "first_rejected": [[r.row, r.column, r.reason, r.raw]
                               for r in mine[:FIRST_REJECTED_SHOWN]]}
    return {"rejected_rows": len(rejected),
            "rejected_summary": dict(summary),
            "duplicates_removed": sum(duplicates.values()),
            "filtered_below_min_rating": sum(f for _, f in counts.values()),
            "examples": dict(examples or {}),
            "tables": report_tables}


def accounting(report: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """{table: {"file", "rows", "accepted", "rejected", "duplicates",
    "filtered"}}: the row accounting of a report, for the run summary."""
    keys = ("file", "rows", "accepted", "rejected", "duplicates", "filtered")
    return {table: {k: entry.get(k, 0) for k in keys}
            for table, entry in report["tables"].items()}


class AccountingError(RuntimeError):
    """Rows read and rows accounted for differ: a bug, not a data problem."""


def check_accounting(report: Mapping[str, Any]) -> None:
    """Fails (AccountingError) unless, for each table whose accepted count
    is known, rows read = accepted + rejected + duplicates + filtered."""
    problems = []
    for table, entry in report["tables"].items():
        if entry.get("accepted") is None:
            continue
        total = (entry["accepted"] + entry["rejected"] + entry["duplicates"]
                 + entry["filtered"])
        if total != entry["rows"]:
            problems.append(
                f"{entry['file']}: {entry['rows']} rows read, but {entry['accepted']} "
                f"accepted + {entry['rejected']} rejected + {entry['duplicates']} "
                f"duplicates + {entry['filtered']} below min_rating = {total}")
    if problems:
        raise AccountingError(
            "ingestion lost track of rows (a bug in tfx-recsys; nothing was "
            "published): " + "; ".join(problems))


# What to do about a reason, when it is among a failing table's rejects.
_HINTS = {
    REASON_TIMESTAMP_UNIT: "The timestamps look like milliseconds: the column "
                           "must hold seconds since the epoch (divide by 1000).",
    tables.UNBALANCED_QUOTE: "A '\"' without its closing quote makes the lines "
                             "after it part of one value: fix the quote on the "
                             "first line listed.",
    REASON_NOT_UTF8: "The file may be in another encoding: re-save it as UTF-8, "
                     "or set `csv: {encoding: ...}` (e.g. cp1252) in the dataset "
                     "config.",
}


def check_report(report: Mapping[str, Any], config: dc.DatasetConfig,
                 data_dir: str, rejected_rows_path: Optional[str]) -> None:
    """Fails (DataError) when a table's rejected share exceeds
    `max_rejected_fraction`, or when no training example is left.

    The message names each offending file, the count, the first rejected
    rows, a hint for the reasons that have one and where the full list is
    (rejected_rows_path; None when no list was written). A malformed region
    counts every line it spans, so a quote that swallowed many rows fails
    here. Removed duplicates do not count as rejected.
    """
    sources = tables.sources(config, data_dir)
    limit = config.max_rejected_fraction
    problems, hints = [], []
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
            hints += [hint for reason, hint in _HINTS.items()
                      if any(r[2] == reason for r in entry["first_rejected"])
                      and hint not in hints]
    if problems:
        listed = (f" All rejected rows are listed in {rejected_rows_path}."
                  if rejected_rows_path else "")
        raise DataError(
            " | ".join(problems) + "." + "".join(f" {h}" for h in hints)
            + listed + " Fix those rows, or raise max_rejected_fraction in the "
            "dataset config if losing them is acceptable.")
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
