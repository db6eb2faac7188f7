"""Reading the pipeline's raw tf.Examples back into Python rows.

The Evaluator and the Pusher need whole tables in memory (the item corpus,
each user's history), which is fine at MovieLens scale; they read them here.
"""

import functools
import os
from typing import Dict, Iterator, List, Sequence

from tfx_recsys import storage
from tfx_recsys.data import native


def split_files(examples_uri: str, split: str) -> List[str]:
    """The gzipped TFRecord files of one split of an Examples artifact."""
    directory = os.path.join(examples_uri, f"Split-{split}")
    files = sorted(os.path.join(directory, f) for f in storage.listdir(directory))
    if not files:
        raise FileNotFoundError(f"no files in split {split!r} at {directory}")
    return files


def _decode(feature) -> list:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        return [v.decode("utf-8") for v in feature.bytes_list.value]
    if kind == "int64_list":
        return list(feature.int64_list.value)
    if kind == "float_list":
        return list(feature.float_list.value)
    return []


def parse_row(serialized: bytes) -> Dict[str, list]:
    """A serialized tf.Example as {feature name: list of values}."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    return {name: _decode(feature)
            for name, feature in example.features.feature.items()}


def parse_fields(serialized: bytes, names) -> Dict[str, list]:
    """parse_row for the features in `names` only (absent ones left out):
    decoding a few scalars is much cheaper than a whole row with its history."""
    from tensorflow.core.example import example_pb2

    features = example_pb2.Example.FromString(serialized).features.feature
    return {name: _decode(features[name]) for name in names if name in features}


def read_records(examples_uri: str, split: str) -> Iterator[bytes]:
    """Yields each serialized tf.Example of a split."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(split_files(examples_uri, split),
                                      compression_type="GZIP")
    yield from dataset.as_numpy_iterator()


# --------------------------------------------------------------------------
# Without TensorFlow: the CLI's quick paths (`recsys recommend` through a
# running server) read a few rows where importing TensorFlow (seconds) would
# cost more than everything else together.


@functools.lru_cache(maxsize=None)
def _example_message():
    """tf.Example's message class, declared here in a pool of its own (the
    same fields and numbers as tensorflow/core/example/*.proto), so parsing
    needs only protobuf: TensorFlow's example_pb2 imports all of TensorFlow."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tfx_recsys/example.proto", package="tensorflow", syntax="proto3")

    def message(name, *fields):
        proto = file.message_type.add(name=name)
        for number, (field_name, kind, label, type_name) in enumerate(fields, 1):
            proto.field.add(name=field_name, number=number, type=kind, label=label,
                            type_name=type_name)
        return proto

    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    message("BytesList", ("value", field.TYPE_BYTES, repeated, None))
    message("FloatList", ("value", field.TYPE_FLOAT, repeated, None))
    message("Int64List", ("value", field.TYPE_INT64, repeated, None))
    feature = message("Feature", *[
        (name, field.TYPE_MESSAGE, optional, f".tensorflow.{kind}")
        for name, kind in (("bytes_list", "BytesList"), ("float_list", "FloatList"),
                           ("int64_list", "Int64List"))])
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = message("Features", ("feature", field.TYPE_MESSAGE, repeated,
                                    ".tensorflow.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=optional,
                    type_name=".tensorflow.Feature")
    message("Example", ("features", field.TYPE_MESSAGE, optional, ".tensorflow.Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.Example"))


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset ("masked")."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecords(path: str) -> Iterator[bytes]:
    """Yields the records of one gzipped TFRecord file, checksums checked,
    without TensorFlow: each record is a little-endian uint64 length, its
    masked CRC, the data and the data's masked CRC."""
    import gzip
    import struct

    with storage.open_file(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header")
            length, length_crc = struct.unpack("<QI", header)
            data, footer = f.read(length), f.read(4)
            if (_masked_crc(header[:8]) != length_crc or len(data) < length
                    or len(footer) < 4
                    or _masked_crc(data) != struct.unpack("<I", footer)[0]):
                raise ValueError(f"{path}: corrupt or truncated TFRecord")
            yield data


def read_rows_without_tensorflow(examples_uri: str, split: str
                                 ) -> Iterator[Dict[str, list]]:
    """read_rows without importing TensorFlow (URLs still go through TFX's
    fileio, which does): the same rows, parsed by a declared tf.Example."""
    example = _example_message()
    for path in split_files(examples_uri, split):
        for record in tfrecords(path):
            yield {name: _decode(feature) for name, feature
                   in example.FromString(record).features.feature.items()}


_ROWS_PER_BATCH = 8192


def _python_columns(batch, names: Sequence[str]) -> Dict[str, list]:
    """{name: per row, its list of values or None where absent} of an Arrow
    record batch of tf.Examples (bytes as UTF-8 text)."""
    import pyarrow as pa

    columns = {}
    for name in names:
        column = batch.column(batch.schema.get_field_index(name))
        value_type = column.type.value_type
        if pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type):
            column = column.cast(pa.large_list(pa.large_string()))
        columns[name] = column.to_pylist()
    return columns


def read_rows(examples_uri: str, split: str,
              fields: Sequence[str] = ()) -> Iterator[Dict[str, list]]:
    """Yields each example of a split as {feature name: list of values}
    (parse_row's rows); only the features in `fields` when given.

    Decoded a batch at a time to Arrow by tfx_bsl (C++), then to Python:
    2-9x faster than parsing each record in Python (more the fewer the
    fields), the same rows."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder()
    dataset = tf.data.TFRecordDataset(split_files(examples_uri, split),
                                      compression_type="GZIP").batch(_ROWS_PER_BATCH)
    for records in dataset.as_numpy_iterator():
        try:
            batch = decoder.DecodeBatch(list(records))
        except RuntimeError:  # a feature of two kinds in one batch: one by one
            for record in records:
                yield parse_fields(record, fields) if fields else parse_row(record)
            continue
        present = batch.schema.names
        names = [n for n in fields if n in present] if fields else present
        columns = _python_columns(batch, names)
        for i in range(batch.num_rows):
            yield {name: values[i] for name, values in columns.items()
                   if values[i] is not None}


def scalar(row: Dict[str, list], name: str, default=None):
    """The single value of a feature, or `default` if it is absent."""
    values = row.get(name) or []
    return values[0] if values else default


def genres_string(row: Dict[str, list]) -> str:
    """An item's genres joined as in items.csv (the serving contract)."""
    return native.GENRE_SEPARATOR.join(row.get("genres", []))
