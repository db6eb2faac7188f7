"""Beam executor of InteractionsExampleGen (TFX glue; rules in splitting.py)."""

import os
from typing import Any, Dict, List

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import base_example_gen_executor, write_split
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
    """Reads one native CSV file into parsed rows, then spreads them out."""

    def __init__(self, path: str, columns, parse):
        super().__init__()
        self._path, self._columns, self._parse = path, columns, parse

    def expand(self, pipeline):
        return (pipeline
                | "Path" >> beam.Create([self._path])
                | "Parse" >> beam.FlatMap(_read_rows, self._columns, self._parse)
                | "Spread" >> beam.Reshuffle())


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Joins the three tables and splits interactions per user by time."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError(
            "InteractionsExampleGen reads all splits at once in "
            "GenerateExamplesByBeam.")

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        # The base class drives `examples`; the item corpus is written inside
        # the same Beam pipeline (GenerateExamplesByBeam), so it needs the uri.
        self._items_artifact = artifact_utils.get_single_instance(
            output_dict[_ITEMS_KEY])
        self._items_artifact.split_names = artifact_utils.encode_split_names(
            [config.ITEMS_SPLIT])
        super().Do(input_dict, output_dict, exec_properties)
        examples_utils.set_payload_format(self._items_artifact,
                                          example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            self._items_artifact,
            write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: Dict[str, Any]
                               ) -> Dict[str, beam.pvalue.PCollection]:
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
        _ = (items
             | "ItemToExample" >> beam.Map(splitting.to_tf_example)
             | "WriteItems" >> write_split.WriteSplit(
                 os.path.join(self._items_artifact.uri,
                              f"Split-{config.ITEMS_SPLIT}"),
                 example_gen_pb2.FORMAT_TFRECORDS_GZIP, exec_properties))
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
        }
