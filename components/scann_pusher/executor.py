"""Executor of ScannPusher: TFX glue around index.py.

Reuses the stock Pusher executor's blessing check and push marks.
"""

import os
import tempfile
import time
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from tfx_recsys import config, embedding, examples_io
from tfx_recsys.components.scann_pusher import index as scann_index


def _copy_saved_model(source: str, destination: str) -> None:
    """Copies a SavedModel directory, saved_model.pb last.

    Servers watch for saved_model.pb: until it exists the version is not
    loadable, so they never see a half-written model.
    """
    io_utils.copy_dir(source, destination, deny_regex_patterns=[r"saved_model\.pb"])
    io_utils.copy_file(os.path.join(source, "saved_model.pb"),
                       os.path.join(destination, "saved_model.pb"))


def _new_version(serving_dir: str) -> str:
    """A Unix-time version directory name that does not exist yet."""
    version = int(time.time())
    while fileio.exists(os.path.join(serving_dir, str(version))):
        version += 1
    return str(version)


class Executor(pusher_executor.Executor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return

        items = artifact_utils.get_single_instance(input_dict["items"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        k = int(exec_properties["top_k"])
        serving_dir = exec_properties["serving_dir"]

        trainer_model = embedding.load(self.GetModelPath(input_dict))
        item_rows = list(examples_io.read_rows(items.uri, config.ITEMS_SPLIT))
        item_ids = [examples_io.scalar(r, "item_id") for r in item_rows]
        item_embeddings = embedding.embed_items(trainer_model, item_rows)
        if k > len(item_ids):
            logging.warning("top_k=%d exceeds the corpus of %d items; serving "
                            "all of them", k, len(item_ids))
            k = len(item_ids)
        index = scann_index.build_index(item_ids, item_embeddings, k)

        # Held-out queries: one per eval user.
        users = {}
        for row in examples_io.read_rows(examples.uri, config.EVAL_SPLIT):
            users.setdefault(examples_io.scalar(row, "user_id"), row)
        queries = embedding.embed_users(trainer_model, list(users.values()))
        recall = scann_index.recall_against_exact(index, queries, item_embeddings,
                                                  item_ids, k=10)
        logging.info("ScaNN recall@10 vs exact on %d queries: %.4f",
                     len(queries), recall)

        with tempfile.TemporaryDirectory() as staging:
            scann_index.save(scann_index.ScannRecommender(trainer_model, index),
                             staging)
            version = _new_version(serving_dir)
            destination = os.path.join(serving_dir, version)
            _copy_saved_model(staging, destination)
            _copy_saved_model(staging, pushed.uri)  # archived with the artifact

        self._MarkPushed(pushed, pushed_destination=destination,
                         pushed_version=version)
        pushed.set_float_custom_property("index_recall_at_10", recall)
        pushed.set_int_custom_property("num_items", len(item_ids))
        pushed.set_int_custom_property("top_k", k)
        logging.info("Pushed ScaNN model version %s to %s", version, destination)
