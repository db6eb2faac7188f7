"""Reading the tables a dataset config names: CSV, Parquet or TFRecord files.

Pure Python: the standard library, pyarrow for Parquet (imported only when a
Parquet file is read) and protobuf, no TensorFlow (tf.Example records are
parsed with a local copy of the message definitions), so the CLI can check a
dataset before the pipeline starts.

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

Structural problems (a missing, empty or unreadable file, a file in another
format than configured, a missing column) raise DataError naming the file and
what to do. A CSV row with the wrong number of fields is yielded as a
`Malformed` value instead, so the caller can reject that one row and go on.
"""

import csv
import dataclasses
import difflib
import gzip
import os
import struct
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from tfx_recsys import dataset_config as dc
from tfx_recsys.data.native import DataError, location

TABLES = ("interactions", "users", "items")

_ENCODING = "utf-8"
_BOM = "\ufeff"
# TFRecord: how many records are scanned for feature names (a feature may be
# absent from single records, so the first record alone proves nothing).
_TFRECORD_COLUMN_SCAN = 10_000
_PARQUET_BATCH_ROWS = 10_000
_RAW_PREVIEW_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Malformed:
    """A row that cannot be split into its columns (CSV: wrong field count).

    detail: what is wrong, e.g. "3 fields, the header has 4".
    raw: the row's text, shortened to a preview.
    """

    detail: str
    raw: str


RawRow = Union[Dict[str, Any], Malformed]


@dataclasses.dataclass(frozen=True)
class TableSource:
    """One configured table, located in a data directory.

    table: 'interactions', 'users' or 'items'.
    relative_path: the path as the config gives it.
    path: the absolute path of the file.
    format: 'csv', 'parquet' or 'tfrecord'.
    columns: {name in the examples: column in the file}, in config order.
    """

    table: str
    relative_path: str
    path: str
    format: str
    columns: Mapping[str, str]

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
    """The three tables of `config`, with paths resolved against `data_dir`."""
    directory = os.path.abspath(os.fspath(data_dir))
    result = {}
    for table in TABLES:
        relative = table_spec(config, table).path
        result[table] = TableSource(
            table=table, relative_path=relative,
            path=os.path.normpath(os.path.join(directory, relative)),
            format=config.format, columns=column_map(config, table))
    return result


# --------------------------------------------------------------------------
# Reading


def read_table(source: TableSource) -> Iterator[Tuple[int, RawRow]]:
    """Yields (row number, {name: raw value} or Malformed) for every data row.

    Raises DataError for structural problems (see the module docstring).
    """
    check_file(source)
    readers = {"csv": _read_csv, "parquet": _read_parquet,
               "tfrecord": _read_tfrecord}
    yield from readers[source.format](source)


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
    """Raises DataError unless `source.path` is a non-empty regular file."""
    path = source.path
    if not os.path.exists(path):
        raise DataError(
            f"{path}: no such file. The dataset config's {source.table}.path is "
            f"{source.relative_path!r}, relative to the data directory "
            f"{os.path.dirname(path)}; put the file there or fix the path.")
    if os.path.isdir(path):
        raise DataError(
            f"{path}: is a directory; {source.table}.path must name one "
            f"{source.format} file (sharded tables are not supported).")
    if os.path.getsize(path) == 0:
        raise DataError(
            f"{path}: the file is empty. It should hold the {source.table} "
            f"table as {source.format} with the columns "
            f"{', '.join(source.file_columns)}.")


def sniff_format(path: str) -> str:
    """What the file looks like, judged by its first bytes (for messages).

    One of 'parquet', 'gzip' (a gzipped file: TFRecord or anything else),
    'tfrecord' (framing that checks out), 'text' or 'binary'.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 12 and _tfrecord_length_ok(head[:12]):
        return "tfrecord"
    try:
        head.decode(_ENCODING)
        return "text"
    except UnicodeDecodeError as e:
        # A cut multi-byte character at the end of the sample is still text.
        return "text" if e.start >= len(head) - 3 else "binary"


_SNIFFED = {"parquet": "a Parquet file", "gzip": "gzip-compressed",
            "tfrecord": "a TFRecord file", "text": "a text (CSV) file",
            "binary": "a binary file"}
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
    else:
        hint = f"It looks like {_SNIFFED[sniffed]}, but a damaged one."
    return DataError(
        f"{location(source.path)}: not a readable {source.format} file "
        f"({detail}); the dataset config says `format: {source.format}`. {hint}")


def _missing_columns(source: TableSource, found: Sequence[str],
                     where: str) -> Optional[DataError]:
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
        f"{', '.join(found) or '(none)'}. Fix the file, or the column names "
        "in the dataset config.")


def _preview(text: str) -> str:
    text = text.rstrip("\r\n")
    if len(text) > _RAW_PREVIEW_CHARS:
        return text[:_RAW_PREVIEW_CHARS] + "..."
    return text


# ---- CSV -------------------------------------------------------------------


def _read_csv(source: TableSource) -> Iterator[Tuple[int, RawRow]]:
    if sniff_format(source.path) in ("parquet", "tfrecord", "gzip"):
        raise _wrong_format(source, "not CSV text")
    with open(source.path, "rb") as f:
        reader = csv.reader(_decoded_lines(source, f))
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise _csv_error(source, 1, e) from None
        if not header or not any(h.strip() for h in header):
            raise DataError(
                f"{location(source.path, 1)}: no header row. The first line "
                f"must name the columns ({', '.join(source.file_columns)}).")
        header = [h.strip() for h in header]
        error = _missing_columns(source, header, "The header has")
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
        yield from _csv_rows(source, reader, index, len(header))


def _csv_rows(source: TableSource, reader, index: Mapping[str, int],
              num_fields: int) -> Iterator[Tuple[int, RawRow]]:
    next_line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise _csv_error(source, next_line, e) from None
        line, next_line = next_line, reader.line_num + 1
        if not fields:
            continue  # a blank line
        if len(fields) != num_fields:
            yield line, Malformed(
                detail=f"{len(fields)} fields, the header has {num_fields}",
                raw=_preview(",".join(fields)))
            continue
        yield line, {name: fields[i] for name, i in index.items()}


def _decoded_lines(source: TableSource, binary_file) -> Iterator[str]:
    """The file's lines as text, decoded one at a time (so an encoding error
    names its line); a leading byte-order mark is dropped."""
    for number, raw in enumerate(binary_file, start=1):
        try:
            line = raw.decode(_ENCODING)
        except UnicodeDecodeError as e:
            raise DataError(
                f"{location(source.path, number)}: not valid UTF-8 ({e.reason} "
                f"at byte {e.start} of the line). CSV files must be UTF-8; "
                "re-save the file with that encoding.") from None
        yield line[1:] if number == 1 and line.startswith(_BOM) else line


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
