"""Beam executor of RetrievalEvaluator (TFX glue; Beam graph in
beam_scoring.py, metrics and blessing logic in evaluation.py).

Reads the artifacts, picks the no-regression reference, runs the Beam graph
that scores the eval users, and writes what it measured: metrics.json, the
TFMA records, the metrics as custom properties and the blessing.

The no-regression reference is the resolver's `baseline_model`, or, given a
`serving_dir`, the model served there (served_evaluation.newest_served): its
evaluated model is scored beside the new one; if that no longer loads, its
recorded metrics stand in. The Executor subclasses TFX's Evaluator executor
only so that TFX's Kubeflow v2 entry point treats its blessing as it treats
the Evaluator's: there an artifact's `id` is a hash of its resource name,
and the entry point rewrites the blessing's `current_model_id` to that name
(what Vertex's latest-blessed-model resolver matches) only for subclasses
of that executor. Nothing else of it is used.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_recsys import config, embedding, served_evaluation
from tfx_recsys.components.retrieval_evaluator import beam_scoring, evaluation
from tfx_recsys.components.retrieval_evaluator.beam_scoring import MODEL, RANKER, TWO_STAGE

METRICS_FILE = "metrics.json"
TFMA_METRICS_FILE = "metrics-00000-of-00001.tfrecord"
_PARTIAL_RESULTS = "partial_results.json"
_EVAL_USER_COUNT = "eval_user_count.json"
LAST_BLESSED = "last_blessed"
SERVING_DIR_KEY = "serving_dir"  # the property that selects _served_reference


def _loadable(model_dir: Optional[str]) -> Optional[str]:
    """`model_dir` if this evaluator can embed with its SavedModel, else None
    (e.g. a model exported before the dataset config travelled with it, or
    one whose pipeline root was cleaned up)."""
    if model_dir is None:
        return None
    try:
        missing = embedding.missing_parts(embedding.load(model_dir))
    except Exception as e:  # an unreadable old model must not block new ones
        logging.warning("Last blessed model at %s cannot be loaded: %s", model_dir, e)
        return None
    if missing:
        logging.warning("Last blessed model at %s lacks %s", model_dir, missing)
        return None
    return model_dir


@dataclasses.dataclass(frozen=True)
class _Reference:
    """The no-regression reference: a model to score beside the new one
    (`model_dir`), or only the metrics it was blessed with (`recorded`);
    `facts` go into the report's last_blessed entry."""

    model_dir: Optional[str] = None
    recorded: Optional[Dict[str, float]] = None
    facts: Optional[Dict[str, Any]] = None


def _resolved_reference(baselines: List[types.Artifact], model: types.Artifact) -> _Reference:
    """The resolver's last blessed model, unless it is this very model."""
    last_blessed = baselines[0] if baselines else None
    if last_blessed is None or last_blessed.id == model.id:
        return _Reference()  # none yet, or the resolver found this very model
    return _Reference(
        model_dir=_loadable(path_utils.serving_model_path(last_blessed.uri)),
        facts={"uri": last_blessed.uri, "artifact_id": last_blessed.id})


def _served_reference(serving_dir: str, model_dir: str, metric: str) -> _Reference:
    """The model served from `serving_dir` now, by the record its pusher
    left (served_evaluation): its evaluated model scored again if it loads,
    else its recorded metrics; none if nothing with a record is served, or
    it was evaluated as this very model."""
    served = served_evaluation.newest_served(serving_dir)
    if served is None:
        logging.info("No served version with an evaluation record in %s: no "
                     "regression check", serving_dir)
        return _Reference()
    record = served.record
    if record.model_path.rstrip("/") == model_dir.rstrip("/"):
        return _Reference()  # e.g. a re-run after this model was pushed
    facts = {"uri": record.model_path, "served_version": served.version,
             "served_version_dir": served.version_dir}
    model = _loadable(record.model_path)
    if model is not None:
        return _Reference(model_dir=model, facts=dict(facts, source="scored"))
    if metric not in record.overall:
        logging.warning("Served version %s was recorded without %s and its model "
                        "does not load: no regression check", served.version_dir, metric)
        return _Reference()
    logging.warning("Served version %s: its model does not load; comparing with the "
                    "metrics it was blessed with (other eval users)", served.version_dir)
    return _Reference(recorded=record.overall, facts=dict(facts, source="recorded"))


def _nest(results: Dict[str, Dict[str, Dict[str, float]]], name: str) -> Dict:
    slices = dict(results.get(name, {}))
    return {"overall": slices.pop(evaluation.OVERALL, {}), "slices": slices}


def _without_accuracy(nested: Dict) -> Dict:
    """A served list's metrics less top_k_accuracy: that metric ranks seen
    items too, which a served list leaves out, so it would not compare."""
    def keep(values):
        return {k: v for k, v in values.items() if not k.startswith("top_k_accuracy@")}

    return {"overall": keep(nested["overall"]),
            "slices": {name: keep(values) for name, values in nested["slices"].items()}}


def _write_tfma_metrics(path: str, results) -> None:
    """MetricsForSlice records, so TFMA tools (tfma.load_metrics) read them."""
    import tensorflow as tf
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for (model_name, slice_name), values in sorted(results):
            record = metrics_for_slice_pb2.MetricsForSlice()
            if slice_name != evaluation.OVERALL:
                column, value = slice_name.split(":", 1)
                record.slice_key.single_slice_keys.add(column=column,
                                                       bytes_value=value.encode())
            for metric, number in sorted(values.items()):
                entry = record.metric_keys_and_values.add()
                entry.key.name = metric
                entry.key.model_name = model_name
                entry.value.double_value.value = float(number)
            writer.write(record.SerializeToString())


class Executor(tfx_evaluator_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        items = artifact_utils.get_single_instance(input_dict["items"])
        baselines = input_dict.get("baseline_model") or []
        rankers = input_dict.get("ranking_model") or []
        result = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        ks = json.loads(exec_properties["top_ks"])
        # Fails here, before any work, if a runtime parameter of the gate is
        # unusable (it could not be checked when the pipeline was built).
        gate = evaluation.gate_from_json(exec_properties["blessing_config"],
                                         exec_properties, top_ks=ks)

        model_dirs = {MODEL: path_utils.serving_model_path(model.uri)}
        serving_dir = exec_properties.get(SERVING_DIR_KEY)
        reference = (_served_reference(serving_dir, model_dirs[MODEL], gate.metric)
                     if serving_dir else _resolved_reference(baselines, model))
        if reference.model_dir:
            model_dirs[LAST_BLESSED] = reference.model_dir
        # Under some launchers output directories do not exist yet.
        for artifact in (result, blessing):
            fileio.makedirs(artifact.uri)

        ranking = None
        if rankers:
            ranking = {"model_dir": path_utils.serving_model_path(rankers[0].uri),
                       "rerank": config.RerankConfig(**json.loads(
                           exec_properties.get("rerank") or "{}")),
                       "diversity_feature": exec_properties.get("diversity_feature") or ""}

        partial_path = os.path.join(result.uri, _PARTIAL_RESULTS)
        count_path = os.path.join(result.uri, _EVAL_USER_COUNT)
        max_eval_users = int(exec_properties.get("max_eval_users") or 0)
        with self._make_beam_pipeline() as pipeline:
            _ = beam_scoring.score(pipeline, examples.uri, items.uri, model_dirs, ks,
                                   ranking, exec_properties.get("diversity_feature") or "",
                                   max_eval_users, partial_path, count_path)

        with fileio.open(partial_path) as f:
            partial = [(tuple(key), value) for key, value in json.load(f)]
        fileio.remove(partial_path)
        with fileio.open(count_path) as f:
            eval_users_total = json.load(f)
        fileio.remove(count_path)
        by_model: Dict[str, Dict[str, Dict[str, float]]] = {}
        for (name, slice_name), values in partial:
            by_model.setdefault(name, {})[slice_name] = values

        report = {
            "top_ks": ks,
            "model": _nest(by_model, MODEL),
            "ranking": ({"ranker": _nest(by_model, RANKER),
                         "two_stage": _without_accuracy(_nest(by_model, TWO_STAGE)),
                         "rerank": exec_properties.get("rerank") and json.loads(
                             exec_properties["rerank"]),
                         "ranker_uri": rankers[0].uri,
                         "ranker_full_corpus": evaluation.ranker_full_corpus(
                             int(by_model.get(MODEL, {}).get(evaluation.OVERALL, {})
                                 .get("num_items", 0)))}
                        if TWO_STAGE in by_model else None),
            "baselines": {name: _nest(by_model, name) for name in evaluation.BASELINES
                          if name in by_model},
            "last_blessed": _last_blessed_report(by_model, reference),
        }
        overall = report["model"]["overall"]
        blessed, checks = evaluation.decide_blessing(
            overall, {n: b["overall"] for n, b in report["baselines"].items()},
            report["last_blessed"]["overall"] if report["last_blessed"] else None, gate)
        failed = [c for c in checks if c.startswith("FAILED")]
        reason = "; ".join(failed) if failed else "; ".join(checks)
        report["blessing"] = {"blessed": blessed, "reason": reason, "checks": checks,
                              "gate": dataclasses.asdict(gate)}
        report["num_eval_users"] = overall.get("num_users", 0)
        report["eval_users_total"] = eval_users_total
        report["max_eval_users"] = max_eval_users
        report["num_items"] = overall.get("num_items", 0)
        report["baselines_skipped"] = evaluation.skipped_baselines(report["num_items"])
        logging.info("Blessing: %s (%s)", blessed, reason)

        with fileio.open(os.path.join(result.uri, METRICS_FILE), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        _write_tfma_metrics(os.path.join(result.uri, TFMA_METRICS_FILE), partial)
        for name, value in overall.items():
            result.set_float_custom_property(name, float(value))
        if report["ranking"]:
            for name, value in report["ranking"]["two_stage"]["overall"].items():
                result.set_float_custom_property(f"two_stage_{name}", float(value))
            for name, value in report["ranking"]["ranker"]["overall"].items():
                if name.startswith("sampled_"):
                    result.set_float_custom_property(f"ranker_{name}", float(value))
        _write_blessing(blessing, model, blessed, reason)
        served_evaluation.write_blessing_record(blessing.uri, served_evaluation.EvaluationRecord(
            model_path=model_dirs[MODEL],
            overall={k: float(v) for k, v in overall.items()},
            metric=gate.metric, blessed=blessed))



def _last_blessed_report(by_model, reference: _Reference) -> Optional[Dict]:
    """The report's last_blessed entry: its metrics ("overall", "slices") and
    where they come from; None without a reference."""
    if LAST_BLESSED in by_model:
        return dict(_nest(by_model, LAST_BLESSED), **reference.facts)
    if reference.recorded is not None:
        return dict({"overall": reference.recorded, "slices": {}}, **reference.facts)
    return None


def _write_blessing(blessing: types.Artifact, model: types.Artifact,
                    blessed: bool, reason: str) -> None:
    # Same marks as TFX's Evaluator, so Pusher and resolvers understand them.
    name = "BLESSED" if blessed else "NOT_BLESSED"
    with fileio.open(os.path.join(blessing.uri, name), "w") as f:
        f.write(reason + "\n")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("reason", reason)
    blessing.set_string_custom_property("current_model", model.uri)
    # Locally the Model's ML Metadata id. On Kubeflow v2 `id` is a hash of
    # the artifact's resource name, which TFX's entry point replaces with the
    # name itself (this executor subclasses TFX's Evaluator's for that).
    blessing.set_int_custom_property("current_model_id", model.id)
