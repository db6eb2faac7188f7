"""The raw-example schema of a dataset, generated from its config.

`schema_text(config)` is the schema (tensorflow_metadata Schema, text
format) of the interaction examples InteractionsExampleGen writes for that
config: ImportSchemaGen imports it and ExampleValidator checks every split
against it. The files in schemas/ are this function's output, checked in so
that a change shows in review; a test keeps them equal to it.

Per column (`DatasetConfig.interaction_columns()`):

* required (user_id, item_id, timestamp, rating, id / categorical / text
  features): present in every example, exactly one value (presence
  min_fraction 1, shape [1]);
* optional scalars (numeric and timestamp features, seconds_since_previous):
  one value when present (value_count 1..1), no fixed shape;
* bags (multi_categorical features, history): at least one value when
  present (history: at most history_length), no fixed shape.

No TensorFlow import: tensorflow_metadata's protos are plain protobuf.
"""

import os

from tfx_recsys import dataset_config as dc

_TYPES = {"bytes": "BYTES", "int64": "INT", "float": "FLOAT"}


def schema_proto(config: dc.DatasetConfig):
    """The Schema proto of the interaction examples of `config`."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    for column in config.interaction_columns():
        feature = schema.feature.add(
            name=column.name, type=schema_pb2.FeatureType.Value(_TYPES[column.dtype]))
        if column.required:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = 1
            feature.shape.dim.add(size=1)
        else:
            feature.value_count.min = 1
            if column.max_values is not None:
                feature.value_count.max = column.max_values
    return schema


def header(config: dc.DatasetConfig) -> str:
    """The comment lines at the top of a generated schema file."""
    return (
        f"# Generated from datasets/{config.name}.yaml by "
        "tfx_recsys.data.schema; do not edit.\n"
        f"# Regenerate: recsys schema --dataset {config.name} > "
        f"schemas/{config.name}.pbtxt\n"
        "#\n"
        "# Raw schema of the interaction examples InteractionsExampleGen "
        "writes:\n"
        "# required features have one value in every example; optional "
        "ones\n"
        "# (numeric features, seconds_since_previous) and bags (history,\n"
        "# multi_categorical features) have no fixed shape.\n")


def schema_text(config: dc.DatasetConfig) -> str:
    """The schema file's text: `header` then the Schema in text format."""
    from google.protobuf import text_format

    return header(config) + text_format.MessageToString(schema_proto(config))


def write_schema(config: dc.DatasetConfig, path: str) -> None:
    """Writes `schema_text(config)` to `path` (via a temporary file, so a
    failure never leaves half a schema)."""
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(schema_text(config))
    os.replace(partial, path)


def main(argv=None) -> None:
    """python -m tfx_recsys.data.schema NAME: prints datasets/NAME.yaml's schema."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m tfx_recsys.data.schema DATASET_NAME")
    sys.stdout.write(schema_text(dc.load(dc.builtin_path(args[0]))))


if __name__ == "__main__":
    main()
