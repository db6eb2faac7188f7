"""Reading the pipeline's raw tf.Examples back into Python rows.

The Evaluator and the Pusher need whole tables in memory (the item corpus,
each user's history), which is fine at MovieLens scale; they read them here.
"""

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


def read_rows(examples_uri: str, split: str,
              fields: Sequence[str] = ()) -> Iterator[Dict[str, list]]:
    """Yields each example of a split as {feature name: list of values}; only
    the features in `fields` when given (parse_fields)."""
    for record in read_records(examples_uri, split):
        yield parse_fields(record, fields) if fields else parse_row(record)


def scalar(row: Dict[str, list], name: str, default=None):
    """The single value of a feature, or `default` if it is absent."""
    values = row.get(name) or []
    return values[0] if values else default


def genres_string(row: Dict[str, list]) -> str:
    """An item's genres joined as in items.csv (the serving contract)."""
    return native.GENRE_SEPARATOR.join(row.get("genres", []))
