"""Reading the tables a dataset config names: CSV, Parquet or TFRecord files.

Pure Python: the standard library, pyarrow for Parquet (imported only when a
Parquet file is read) and protobuf, no TensorFlow (tf.Example records are
parsed with a local copy of the message definitions), so the CLI can check a
dataset before the pipeline starts. This is the one reader of tables: the
pipeline, the CLI's check and the baselines all read through it.

A table is read through its column map {name in the examples: column in the
file} (`column_map`): the config's column names become the canonical names
`user_id`, `item_id`, `timestamp`, `rating` (features keep their names), and
columns the config does not name are ignored. `read_table` yields
(row number, {name: raw value}):

* row number: for CSV the line on which the row starts (the header is line
  1), as an editor shows it; for Parquet and TFRecord the 1-based record
  number;
* raw value: CSV: the field's text ('' when empty); Parquet: the Python value
  pyarrow gives (str, int, float, bool, bytes, datetime, list or None);
  TFRecord: the feature's list of values (bytes, int or float; None when the
  record lacks the feature). Typing the values is `ingest.py`'s job.

A config stays in its folder: `sources` resolves each table path against the
data directory, symlinks included, and refuses one that leads out of it
(unless the config sets `allow_paths_outside_data`).

Structural problems (a missing, empty or unreadable file, a file in another
format than configured, a missing column) raise DataError naming the file and
what to do. A CSV row that cannot be split into its columns is yielded as a
`Malformed` value instead, so the caller can reject it and go on, and every
physical line is accounted for: a quoted value that swallows the lines after
it (a `"` without its closing quote) yields one Malformed per line it spans,
never one row for all of them (`ReadStats` counts the lines that are no row).
"""

import csv
import dataclasses
import difflib
import gzip
import os
import struct
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from tfx_recsys import dataset_config as dc
from tfx_recsys.errors import DataError, location, os_problem, stat_problem

TABLES = ("interactions", "users", "items")

_BOM = "\ufeff"
# TFRecord: how many records are scanned for feature names (a feature may be
# absent from single records, so the first record alone proves nothing).
_TFRECORD_COLUMN_SCAN = 10_000
_PARQUET_BATCH_ROWS = 10_000
_RAW_PREVIEW_CHARS = 200

# Why a CSV line is Malformed (reason categories of the rejected rows).
WRONG_FIELD_COUNT = "malformed row (wrong number of fields)"
UNBALANCED_QUOTE = "unbalanced quote (its value runs over the next lines)"
INSIDE_QUOTE = "inside a quoted value opened on an earlier line"
BAD_QUOTING = "bad quoting"
NOT_UTF8 = "not valid UTF-8"
# Characters a file may be delimited with instead of the configured one.
_OTHER_DELIMITERS = (";", "\t", "|", ",")


def not_decodable(encoding: str) -> str:
    """The reason category of a line that is not text in `encoding`."""
    return NOT_UTF8 if _codec(encoding) == "utf-8" else f"not valid {encoding}"


@dataclasses.dataclass(frozen=True)
class Malformed:
    """A row that cannot be split into its columns (CSV only).

    reason: one of the categories above (WRONG_FIELD_COUNT, ...).
    raw: the line's text, shortened to a preview.
    """

    reason: str
    raw: str


RawRow = Union[Dict[str, Any], Malformed]


@dataclasses.dataclass
class ReadStats:
    """The physical lines of a CSV file that `read_table` yields no row for:
    header_lines + rows yielded + blank_lines + continuation_lines = the
    lines of the file. continuation_lines are the second and later lines of
    accepted quoted values that hold a line break."""

    header_lines: int = 0
    blank_lines: int = 0
    continuation_lines: int = 0


@dataclasses.dataclass(frozen=True)
class TableSource:
    """One configured table, located in a data directory.

    table: 'interactions', 'users' or 'items'.
    relative_path: the path as the config gives it.
    path: the absolute path of the file.
    format: 'csv', 'parquet' or 'tfrecord'.
    columns: {name in the examples: column in the file}, in config order.
    csv: CSV delimiter and encoding.
    """

    table: str
    relative_path: str
    path: str
    format: str
    columns: Mapping[str, str]
    csv: dc.Csv = dc.Csv()

    @property
    def file_columns(self) -> List[str]:
        """The distinct file columns to read, in config order."""
        return list(dict.fromkeys(self.columns.values()))

    def config_field(self, name: str) -> str:
        """Where the config sets the file column of `name` (for messages)."""
        if self.table == "interactions":
            field = {dc.USER_ID: "user", dc.ITEM_ID: "item",
                     dc.TIMESTAMP: "timestamp", dc.RATING: "rating"}[name]
            return f"interactions.{field}"
        if name in (dc.USER_ID, dc.ITEM_ID):
            return f"{self.table}.key"
        return f"{self.table}.features.{name}"


def column_map(config: dc.DatasetConfig, table: str) -> Dict[str, str]:
    """{name in the examples: column in the file} of one table."""
    if table == "interactions":
        interactions = config.interactions
        columns = {dc.USER_ID: interactions.user, dc.ITEM_ID: interactions.item,
                   dc.TIMESTAMP: interactions.timestamp}
        if interactions.rating is not None:
            columns[dc.RATING] = interactions.rating
        return columns
    spec = table_spec(config, table)
    key = dc.USER_ID if table == "users" else dc.ITEM_ID
    return {key: spec.key, **{f.name: f.source_column for f in spec.features}}


def table_spec(config: dc.DatasetConfig, table: str):
    """The config section of `table` (Interactions or Table)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; one of {', '.join(TABLES)}")
    return getattr(config, table)


def sources(config: dc.DatasetConfig, data_dir: str) -> Dict[str, TableSource]:
    """The three tables of `config`, with paths resolved against `data_dir`.

    Raises DataError for a path that resolves (through `..` or a symlink)
    outside `data_dir`, unless the config allows it.
    """
    directory = os.path.abspath(os.fspath(data_dir))
    result = {}
    for table in TABLES:
        relative = table_spec(config, table).path
        path = os.path.normpath(os.path.join(directory, relative))
        if not config.allow_paths_outside_data:
            _check_inside(directory, path, table, relative)
        result[table] = TableSource(
            table=table, relative_path=relative, path=path,
            format=config.format, columns=column_map(config, table),
            csv=config.csv)
    return result


def _check_inside(directory: str, path: str, table: str, relative: str) -> None:
    real_directory, real = os.path.realpath(directory), os.path.realpath(path)
    if os.path.commonpath([real_directory, real]) == real_directory:
        return
    through = "" if real == path else f" (it resolves to {real})"
    raise DataError(
        f"{path}: {table}.path {relative!r} leads outside the data directory "
        f"{directory}{through}. A dataset config reads only files inside its "
        "data directory (--data): move or copy the file there, or set "
        "`allow_paths_outside_data: true` in the dataset config.")


# --------------------------------------------------------------------------
# Checking a configured dataset


def validate_dataset(config: dc.DatasetConfig, data_dir: str) -> Dict[str, str]:
    """Checks the tables of a dataset config in `data_dir`, fast.

    Every configured file must be inside the data directory, exist (all
    missing ones are reported at once), be readable, non-empty, in the
    configured format, have the configured columns (a misspelled one comes
    with the close match) and at least one data row. Only the header (CSV),
    the footer (Parquet) or the first records (TFRecord) are read; row-level
    problems are ExampleGen's.

    Returns {table: absolute path} for 'interactions', 'users' and 'items'.
    Raises DataError naming the file and what to do.
    """
    directory = os.path.abspath(os.fspath(data_dir))
    problem = stat_problem(directory)
    if problem is None and not os.path.isdir(directory):
        problem = "is not a directory"
    if problem is not None:
        what = {"no such file": "does not exist", "is not a directory": problem}.get(
            problem, f"cannot be used: {problem}")
        raise DataError(
            f"{directory}: the data directory {what}. Pass the directory that "
            f"holds the tables the dataset config {config.name!r} names.")
    located = sources(config, directory)
    missing = [s for s in located.values() if stat_problem(s.path) == "no such file"]
    if missing:
        raise DataError(
            f"{directory}: missing "
            + ", ".join(f"{s.relative_path} ({s.table}.path)" for s in missing)
            + f". The dataset config {config.name!r} names these files relative "
            "to the data directory; put them there or fix the paths.")
    for source in located.values():
        check_table(source)
    return {table: source.path for table, source in located.items()}


# --------------------------------------------------------------------------
# Reading


def read_table(source: TableSource, stats: Optional[ReadStats] = None
               ) -> Iterator[Tuple[int, RawRow]]:
    """Yields (row number, {name: raw value} or Malformed) for every data row.

    stats: filled in with the CSV lines that are no row (see ReadStats).
    Raises DataError for structural problems (see the module docstring),
    including a file the operating system will not read.
    """
    check_file(source)
    try:
        if source.format == "csv":
            yield from _read_csv(source, stats if stats is not None else ReadStats())
        elif source.format == "parquet":
            yield from _read_parquet(source)
        else:
            yield from _read_tfrecord(source)
    except OSError as e:
        raise _unreadable(source, e) from None


def check_table(source: TableSource) -> None:
    """The fast structural check: the file exists, is not empty, is in the
    configured format, has the configured columns and at least one data row.

    Reads the header (CSV), the footer (Parquet) or the first records
    (TFRecord), not the whole file.
    """
    for _ in read_table(source):
        return
    raise DataError(
        f"{location(source.path)}: the file has no data rows. The {source.table} "
        "table needs at least one; check that the right file was given.")


def check_file(source: TableSource) -> None:
    """Raises DataError unless `source.path` is a non-empty regular file
    that can be opened."""
    path = source.path
    problem = stat_problem(path)
    if problem == "no such file":
        raise DataError(
            f"{path}: no such file. The dataset config's {source.table}.path is "
            f"{source.relative_path!r}, relative to the data directory "
            f"{os.path.dirname(path)}; put the file there or fix the path.")
    if problem is not None:
        raise DataError(f"{path}: cannot be read: {problem}. Check the file "
                        f"that {source.table}.path names.")
    if os.path.isdir(path):
        raise DataError(
            f"{path}: is a directory; {source.table}.path must name one "
            f"{source.format} file (sharded tables are not supported).")
    if os.path.getsize(path) == 0:
        raise DataError(
            f"{path}: the file is empty. It should hold the {source.table} "
            f"table as {source.format} with the columns "
            f"{', '.join(source.file_columns)}.")
    try:
        open(path, "rb").close()
    except OSError as e:
        raise _unreadable(source, e) from None


def _unreadable(source: TableSource, error: OSError) -> DataError:
    return DataError(
        f"{source.path}: cannot be read: {os_problem(error)}. Make the file "
        f"readable by the user running the pipeline, or fix {source.table}.path.")


def sniff_format(path: str) -> str:
    """What the file looks like, judged by its first bytes (for messages).

    One of 'parquet', 'gzip' (a gzipped file: TFRecord or anything else),
    'tfrecord' (framing that checks out), 'utf16' (a UTF-16 or UTF-32
    byte-order mark), 'text' or 'binary'.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return "utf16"
    if len(head) >= 12 and _tfrecord_length_ok(head[:12]):
        return "tfrecord"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError as e:
        # A cut multi-byte character at the end of the sample is still text.
        return "text" if e.start >= len(head) - 3 else "binary"


_SNIFFED = {"parquet": "a Parquet file", "gzip": "gzip-compressed",
            "tfrecord": "a TFRecord file", "text": "a text (CSV) file",
            "utf16": "UTF-16 text", "binary": "a binary file"}
# The `format` to configure for what a file looks like.
_FORMAT_OF = {"parquet": "parquet", "tfrecord": "tfrecord", "text": "csv"}


def _wrong_format(source: TableSource, detail: str) -> DataError:
    """A file that cannot be read in the configured format; says what it
    looks like instead and which `format` would read it."""
    sniffed = sniff_format(source.path)
    actual = _FORMAT_OF.get(sniffed)
    if actual is not None and actual != source.format:
        hint = (f"It looks like {_SNIFFED[sniffed]}: set `format: {actual}` in "
                "the dataset config, or convert the file.")
    elif sniffed == "gzip" and source.format != "tfrecord":
        hint = (f"It is gzip-compressed: decompress it ({source.format} files "
                "are read uncompressed).")
    elif sniffed == "utf16":
        hint = "It is UTF-16 text: re-save it as UTF-8."
    else:
        hint = f"It looks like {_SNIFFED[sniffed]}, but a damaged one."
    return DataError(
        f"{location(source.path)}: not a readable {source.format} file "
        f"({detail}); the dataset config says `format: {source.format}`. {hint}")


def _missing_columns(source: TableSource, found: Sequence[str],
                     where: str, hint: str = "") -> Optional[DataError]:
    """DataError naming each configured column not in `found`, or None.

    Each missing column comes with the config field that names it and, when
    one is close (difflib, or the same name in another case), a suggestion.
    """
    found = [str(c) for c in found]
    problems, reported = [], set()
    for name, column in source.columns.items():
        if column in found or column in reported:
            continue
        reported.add(column)
        close = difflib.get_close_matches(column, found, n=1, cutoff=0.6)
        close = close or [c for c in found if c.lower() == column.lower()][:1]
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"no column '{column}'{suggestion} for "
                        f"{source.config_field(name)}")
    if not problems:
        return None
    return DataError(
        f"{location(source.path)}: {'; '.join(problems)}. {where}: "
        f"{_preview(', '.join(found)) or '(none)'}. {hint}Fix the file, or the "
        "column names in the dataset config.")


def _delimiter_hint(source: TableSource, header: Sequence[str]) -> str:
    """When the header is one column holding another delimiter: which
    `csv.delimiter` would split it."""
    if len(header) != 1:
        return ""
    for other in _OTHER_DELIMITERS:
        if other != source.csv.delimiter and other in header[0]:
            return (f"The header is one column containing {other!r}: the file "
                    f"looks {other!r}-delimited; set `csv: {{delimiter: "
                    f"{_yaml_char(other)}}}` in the dataset config. ")
    return ""


def _yaml_char(char: str) -> str:
    return '"\\t"' if char == "\t" else f'"{char}"'


def _preview(text: str) -> str:
    text = text.rstrip("\r\n")
    if len(text) > _RAW_PREVIEW_CHARS:
        return text[:_RAW_PREVIEW_CHARS] + "..."
    return text


# ---- CSV -------------------------------------------------------------------


def _codec(encoding: str) -> str:
    import codecs

    return codecs.lookup(encoding).name


class _Lines:
    """The file's lines as text, one at a time, remembering the lines the
    csv reader took since `taken` was last cleared: (line number, text,
    decoded). A line that is not text in the encoding is decoded with
    replacement characters and marked, so the row it belongs to is rejected
    while the quoting of the lines after it stays right."""

    def __init__(self, binary_file, encoding: str):
        self._lines = iter(binary_file)
        self._encoding = encoding
        self.number = 0
        self.taken: List[Tuple[int, str, bool]] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self.number += 1
        try:
            text, decoded = raw.decode(self._encoding), True
        except UnicodeDecodeError:
            text, decoded = raw.decode(self._encoding, errors="replace"), False
        if self.number == 1 and text.startswith(_BOM):
            text = text[1:]
        self.taken.append((self.number, text, decoded))
        return text


def _read_csv(source: TableSource, stats: ReadStats) -> Iterator[Tuple[int, RawRow]]:
    sniffed = sniff_format(source.path)
    if sniffed in ("parquet", "tfrecord", "gzip", "utf16"):
        raise _wrong_format(source, "not CSV text")
    with open(source.path, "rb") as f:
        lines = _Lines(f, source.csv.encoding)
        dialect = dict(delimiter=source.csv.delimiter, strict=True)
        reader = csv.reader(lines, **dialect)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise _csv_error(source, 1, e) from None
        if lines.taken and not all(decoded for _, _, decoded in lines.taken):
            raise DataError(
                f"{location(source.path, 1)}: the header is not valid "
                f"{source.csv.encoding} text. Re-save the file as UTF-8, or set "
                "`csv: {encoding: ...}` in the dataset config to the file's "
                "encoding (e.g. cp1252).")
        if not header or not any(h.strip() for h in header):
            raise DataError(
                f"{location(source.path, 1)}: no header row. The first line "
                f"must name the columns ({', '.join(source.file_columns)}).")
        stats.header_lines = len(lines.taken)
        header = [h.strip() for h in header]
        error = _missing_columns(source, header, "The header has",
                                 _delimiter_hint(source, header))
        if error:
            raise error
        duplicated = sorted({c for c in source.file_columns if header.count(c) > 1})
        if duplicated:
            raise DataError(
                f"{location(source.path, 1)}: column(s) "
                f"{', '.join(repr(c) for c in duplicated)} appear more than once "
                "in the header; which one to read is ambiguous. Rename or drop "
                "the copies.")
        index = {name: header.index(column)
                 for name, column in source.columns.items()}
        yield from _csv_rows(source, reader, lines, index, len(header), dialect, stats)


def _csv_rows(source: TableSource, reader, lines: _Lines, index: Mapping[str, int],
              num_fields: int, dialect: Mapping[str, Any], stats: ReadStats
              ) -> Iterator[Tuple[int, RawRow]]:
    """One row per record; a record that cannot be a row yields one
    Malformed per physical line it spans."""
    undecodable = not_decodable(source.csv.encoding)
    while True:
        lines.taken.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "field limit" in str(e):
                raise _field_limit(source, lines.taken, e) from None
            # The quote opened on the first line never closes properly.
            yield from _region(lines.taken, BAD_QUOTING if len(lines.taken) == 1
                               else UNBALANCED_QUOTE)
            continue
        taken = list(lines.taken)
        first = taken[0][0]
        if not all(decoded for _, _, decoded in taken):
            for number, text, _ in taken:
                yield number, Malformed(undecodable, _preview(text))
        elif len(taken) == 1:
            if not fields or not taken[0][1].strip():
                stats.blank_lines += 1
            elif len(fields) != num_fields:
                yield first, Malformed(WRONG_FIELD_COUNT, _preview(taken[0][1]))
            else:
                yield first, {name: fields[i] for name, i in index.items()}
        elif len(fields) != num_fields or any(
                _looks_like_a_row(text, num_fields, dialect) for _, text, _ in taken[1:]):
            yield from _region(taken, UNBALANCED_QUOTE)
        else:
            # A quoted value with line breaks in it, legitimately.
            stats.continuation_lines += len(taken) - 1
            yield first, {name: fields[i] for name, i in index.items()}


def _region(taken: Sequence[Tuple[int, str, bool]], reason: str
            ) -> Iterator[Tuple[int, Malformed]]:
    """One Malformed per line of a record that cannot be a row: the first
    with `reason`, the lines its quote swallowed as INSIDE_QUOTE."""
    for i, (number, text, _) in enumerate(taken):
        yield number, Malformed(reason if i == 0 else INSIDE_QUOTE, _preview(text))


def _looks_like_a_row(text: str, num_fields: int, dialect: Mapping[str, Any]) -> bool:
    """A line inside a quoted value that is a whole row on its own, read
    alone or up to its first quote (where the value would close): the quote
    that opened the value most likely lacks its closing `"` and swallowed
    it (or a stray quote shifted which quotes pair up)."""
    line = text.rstrip("\r\n")
    for candidate in (line, line.split('"', 1)[0]):
        if candidate.strip() and len(next(csv.reader(
                [candidate], delimiter=dialect["delimiter"]))) == num_fields:
            return True
    return False


def _field_limit(source: TableSource, taken, error: csv.Error) -> DataError:
    first, last = taken[0][0], taken[-1][0]
    return DataError(
        f"{location(source.path, first)}: a quoted value runs from line {first} "
        f"past line {last} ({error}): most likely a '\"' without its closing "
        "quote on that line. Fix the quoting there.")


def _csv_error(source: TableSource, line: int, error: csv.Error) -> DataError:
    return DataError(
        f"{location(source.path, line)}: cannot be read as CSV ({error}). "
        "Check the quoting around that line.")


# ---- Parquet ---------------------------------------------------------------


def _read_parquet(source: TableSource) -> Iterator[Tuple[int, RawRow]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as e:
        raise _wrong_format(source, str(e).splitlines()[0]) from None
    names = parquet.schema_arrow.names
    error = _missing_columns(source, names, "The file's columns are")
    if error:
        raise error
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS,
                                          columns=source.file_columns):
            columns = {c: batch.column(c).to_pylist()
                       for c in source.file_columns}
            for i in range(batch.num_rows):
                number += 1
                yield number, {name: columns[column][i]
                               for name, column in source.columns.items()}
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{location(source.path)}: cannot read the Parquet data after "
            f"record {number} ({str(e).splitlines()[0]}). The file may be "
            "damaged; write it again.") from None


# ---- TFRecord ----------------------------------------------------------------


def _read_tfrecord(source: TableSource) -> Iterator[Tuple[int, RawRow]]:
    example_class = _example_class()
    with open(source.path, "rb") as raw_file:
        compressed = raw_file.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    with opener(source.path, "rb") as f:
        records = _examples(source, _tfrecords(source, f), example_class)
        # Look ahead for the column check: a feature may be absent from
        # single records, so one record proves nothing.
        ahead, seen = [], set()
        for record in records:
            ahead.append(record)
            seen.update(record[1].features.feature.keys())
            if len(ahead) >= _TFRECORD_COLUMN_SCAN:
                break
        if ahead:
            error = _missing_columns(
                source, sorted(seen),
                f"The first {len(ahead)} records have the features")
            if error:
                raise error
        for number, example in ahead:
            yield number, _example_row(source, example)
        for number, example in records:
            yield number, _example_row(source, example)


def _example_row(source: TableSource, example) -> Dict[str, Any]:
    features = example.features.feature
    row = {}
    for name, column in source.columns.items():
        if column not in features:
            row[name] = None
            continue
        feature = features[column]
        kind = feature.WhichOneof("kind")
        row[name] = list(getattr(feature, kind).value) if kind else []
    return row


def _examples(source: TableSource, records, example_class):
    from google.protobuf import message

    for number, data in records:
        try:
            yield number, example_class.FromString(data)
        except message.DecodeError:
            raise DataError(
                f"{location(source.path)}: record {number} is not a "
                "tf.Example. The TFRecord file must hold serialized "
                "tf.train.Example records.") from None


def _tfrecords(source: TableSource, f) -> Iterator[Tuple[int, bytes]]:
    """Yields (record number, payload) of a TFRecord stream, checking CRCs.

    Framing: uint64 length, uint32 masked crc32c of the length, the payload,
    uint32 masked crc32c of the payload (all little-endian).
    """
    number = 0
    while True:
        header = _read_bytes(source, f, 12)
        if not header:
            return
        number += 1
        if len(header) < 12 or not _tfrecord_length_ok(header):
            if number == 1:
                raise _wrong_format(source, "the first record's framing is invalid")
            raise DataError(
                f"{location(source.path)}: record {number} is damaged (its "
                "length check fails). The file may be truncated or corrupt; "
                "write it again.")
        length = struct.unpack("<Q", header[:8])[0]
        data = _read_bytes(source, f, length)
        footer = _read_bytes(source, f, 4)
        if len(data) < length or len(footer) < 4 or (
                struct.unpack("<I", footer)[0] != _masked_crc(data)):
            raise DataError(
                f"{location(source.path)}: record {number} is truncated or "
                "corrupt (its data check fails); write the file again.")
        yield number, data


def _read_bytes(source: TableSource, f, size: int) -> bytes:
    """f.read(size); a gzip stream's errors become DataError."""
    try:
        return f.read(size)
    except (OSError, EOFError) as e:
        raise DataError(
            f"{location(source.path)}: cannot be decompressed ({e}). The "
            "file may be truncated or corrupt; write it again.") from None


def _tfrecord_length_ok(header: bytes) -> bool:
    return struct.unpack("<I", header[8:12])[0] == _masked_crc(header[:8])


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_EXAMPLE_CLASS = None


def _example_class():
    """tf.train.Example's message class, built from its definition here so
    that reading needs no TensorFlow (whose import takes seconds). The wire
    format is the same; the package name differs to avoid clashing with
    TensorFlow's own definitions when both are loaded."""
    global _EXAMPLE_CLASS
    if _EXAMPLE_CLASS is not None:
        return _EXAMPLE_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfx_recsys/example.proto", package="tfx_recsys.example",
        syntax="proto3")

    def add_message(name, fields, nested=()):
        message_type = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, label, oneof in fields:
            f = message_type.field.add(name=field_name, number=number, type=kind,
                                       label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return message_type

    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    add_message("BytesList", [("value", 1, field.TYPE_BYTES, None, repeated, None)])
    add_message("FloatList", [("value", 1, field.TYPE_FLOAT, None, repeated, None)])
    add_message("Int64List", [("value", 1, field.TYPE_INT64, None, repeated, None)])
    feature = add_message("Feature", [
        ("bytes_list", 1, field.TYPE_MESSAGE, ".tfx_recsys.example.BytesList", optional, 0),
        ("float_list", 2, field.TYPE_MESSAGE, ".tfx_recsys.example.FloatList", optional, 0),
        ("int64_list", 3, field.TYPE_MESSAGE, ".tfx_recsys.example.Int64List", optional, 0)])
    feature.oneof_decl.add(name="kind")
    features = add_message("Features", [
        ("feature", 1, field.TYPE_MESSAGE, ".tfx_recsys.example.Features.FeatureEntry",
         repeated, None)])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=optional,
                    type_name=".tfx_recsys.example.Feature")
    add_message("Example", [("features", 1, field.TYPE_MESSAGE,
                             ".tfx_recsys.example.Features", optional, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    _EXAMPLE_CLASS = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tfx_recsys.example.Example"))
    return _EXAMPLE_CLASS
