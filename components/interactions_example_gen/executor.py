"""Beam executor of InteractionsExampleGen (TFX glue; rules in splitting.py).

It replaces the ExampleGen base executor's Do: that one writes through TFX's
WriteSplit, which reshuffles the records randomly, so two runs on the same
data would write them in different orders and train different models.
"""

import os
from typing import Any, Dict, List

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import write_split
from tfx.dsl.components.base import base_beam_executor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from tfx_recsys import config
from tfx_recsys.components.interactions_example_gen import splitting
from tfx_recsys.data import native

_ITEMS_KEY = "items"  # component.ITEMS_KEY; imported there, not here, to avoid a cycle


def _read_rows(path: str, columns, parse):
    """Yields parsed rows of one CSV file; errors name the file and line."""
    for line, row in native.read_table(path, columns):
        yield parse(row, path, line)


class _ReadTable(beam.PTransform):
    """Reads one native CSV file into parsed rows, in file order."""

    def __init__(self, path: str, columns, parse):
        super().__init__()
        self._path, self._columns, self._parse = path, columns, parse

    def expand(self, pipeline):
        return (pipeline
                | "Path" >> beam.Create([self._path])
                | "Parse" >> beam.FlatMap(_read_rows, self._columns, self._parse))


class _WriteRecords(beam.PTransform):
    """Writes serialized examples as gzipped TFRecords, in arrival order.

    Unlike TFX's WriteSplit this does not reshuffle: the split is already
    deterministic, and keeping the order makes a run on the same data write
    the same files, so training on them is reproducible.
    """

    def __init__(self, split_uri: str):
        super().__init__()
        self._prefix = os.path.join(split_uri, "data_tfrecord")

    def expand(self, records):
        return records | "Write" >> beam.io.WriteToTFRecord(
            self._prefix, file_name_suffix=".gz",
            compression_type=beam.io.filesystem.CompressionTypes.GZIP)


class Executor(base_beam_executor.BaseBeamExecutor):
    """Joins the three tables and splits interactions per user by time.

    Writes `examples` (splits train and eval) and `items` (split items, one
    example per row of items.csv) in one Beam pipeline.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        items = artifact_utils.get_single_instance(output_dict[_ITEMS_KEY])
        outputs = {config.TRAIN_SPLIT: examples, config.EVAL_SPLIT: examples,
                   config.ITEMS_SPLIT: items}
        examples.split_names = artifact_utils.encode_split_names(
            [config.TRAIN_SPLIT, config.EVAL_SPLIT])
        items.split_names = artifact_utils.encode_split_names([config.ITEMS_SPLIT])
        with self._make_beam_pipeline() as pipeline:
            for split, records in self._generate(pipeline, exec_properties).items():
                _ = records | f"Write[{split}]" >> _WriteRecords(
                    artifact_utils.get_split_uri([outputs[split]], split))
        for artifact in (examples, items):
            examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
            examples_utils.set_file_format(
                artifact,
                write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))

    def _generate(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                  ) -> Dict[str, beam.pvalue.PCollection]:
        """Serialized tf.Examples per split: train, eval and items."""
        paths = native.validate_dataset_dir(exec_properties["input_base"])
        eval_fraction = float(exec_properties["eval_fraction"])
        interactions_path = paths[native.INTERACTIONS_FILE]

        users = (pipeline
                 | "ReadUsers" >> _ReadTable(paths[native.USERS_FILE],
                                             native.USER_COLUMNS,
                                             splitting.parse_user)
                 | "KeyUsers" >> beam.Map(lambda u: (u["user_id"], u)))
        items = pipeline | "ReadItems" >> _ReadTable(
            paths[native.ITEMS_FILE], native.ITEM_COLUMNS, splitting.parse_item)
        keyed_items = items | "KeyItems" >> beam.Map(lambda i: (i["item_id"], i))

        split_rows = (pipeline
                      | "ReadInteractions" >> _ReadTable(
                          interactions_path, native.INTERACTION_COLUMNS,
                          splitting.parse_interaction)
                      | "ByUser" >> beam.Map(lambda r: (r["user_id"], r))
                      | "GroupByUser" >> beam.GroupByKey()
                      | "SplitByTime" >> beam.FlatMap(
                          lambda kv: splitting.split_user_history(kv[1],
                                                                  eval_fraction))
                      | "Join" >> beam.Map(
                          lambda kv, users, items: (
                              kv[0], splitting.join_features(
                                  kv[1], users, items, interactions_path)),
                          users=beam.pvalue.AsDict(users),
                          items=beam.pvalue.AsDict(keyed_items)))
        train, evaluation = split_rows | "Partition" >> beam.Partition(
            lambda kv, _: 0 if kv[0] == config.TRAIN_SPLIT else 1, 2)
        return {
            config.TRAIN_SPLIT: train | "TrainToExample" >> beam.Map(
                lambda kv: splitting.to_tf_example(kv[1])),
            config.EVAL_SPLIT: evaluation | "EvalToExample" >> beam.Map(
                lambda kv: splitting.to_tf_example(kv[1])),
            config.ITEMS_SPLIT: items | "ItemToExample" >> beam.Map(
                splitting.to_tf_example),
        }
