"""Executor of RetrievalEvaluator (TFX glue; logic in evaluation.py)."""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_recsys import config, embedding, examples_io
from tfx_recsys.components.retrieval_evaluator import evaluation

METRICS_FILE = "metrics.json"


def _write_blessing(blessing: types.Artifact, model: types.Artifact,
                    blessed: bool, reason: str) -> None:
    # Same marks as TFX's Evaluator, so Pusher and resolvers understand them.
    name = "BLESSED" if blessed else "NOT_BLESSED"
    with fileio.open(os.path.join(blessing.uri, name), "w") as f:
        f.write(reason + "\n")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("reason", reason)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        items = artifact_utils.get_single_instance(input_dict["items"])
        result = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        ks = json.loads(exec_properties["top_ks"])
        metric = exec_properties["blessing_metric"]

        data = evaluation.build_eval_data(
            list(examples_io.read_rows(items.uri, config.ITEMS_SPLIT)),
            examples_io.read_rows(examples.uri, config.TRAIN_SPLIT),
            examples_io.read_rows(examples.uri, config.EVAL_SPLIT))
        logging.info("Evaluating %d users over %d items", len(data.user_rows),
                     len(data.item_rows))

        loaded = embedding.load(path_utils.serving_model_path(model.uri))
        scores = evaluation.model_scores(embedding.embed_users(loaded, data.user_rows),
                                         embedding.embed_items(loaded, data.item_rows))
        model_metrics = evaluation.evaluate(scores, data, ks)
        baseline_metrics = evaluation.evaluate(
            evaluation.most_popular_scores(data), data, ks)
        blessed, reason = evaluation.decide_blessing(model_metrics,
                                                     baseline_metrics, metric)
        logging.info("Blessing: %s (%s)", blessed, reason)

        report = {
            "model": model_metrics,
            "baselines": {"most_popular": baseline_metrics},
            "blessing": {"blessed": blessed, "metric": metric, "reason": reason},
            "num_eval_users": len(data.user_rows),
            "num_items": len(data.item_rows),
            "top_ks": ks,
        }
        with fileio.open(os.path.join(result.uri, METRICS_FILE), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        for name, value in model_metrics.items():
            result.set_float_custom_property(name, float(value))
        _write_blessing(blessing, model, blessed, reason)
