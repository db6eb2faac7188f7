"""Beam executor of RetrievalEvaluator (TFX glue; logic in evaluation.py).

The eval split is grouped by user and scored in batches on Beam workers, so
eval sets larger than memory work; the item corpus (whose embeddings every
score needs) is a side input. Per-slice accumulators are merged with a
CombineFn; only the small final metrics come back to this process.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import apache_beam as beam
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_recsys import config, embedding, examples_io, two_stage
from tfx_recsys.components.retrieval_evaluator import evaluation

METRICS_FILE = "metrics.json"
TFMA_METRICS_FILE = "metrics-00000-of-00001.tfrecord"
_PARTIAL_RESULTS = "partial_results.json"
MODEL = "model"
LAST_BLESSED = "last_blessed"
RANKER = "ranker"        # the ranking model alone, over the whole corpus
TWO_STAGE = "two_stage"  # what is served: retrieval -> ranker -> re-ranking


class _ReadRows(beam.PTransform):
    """Raw rows ({feature: values}) of one split of an Examples artifact."""

    def __init__(self, examples_uri: str, split: str):
        super().__init__()
        self._pattern = os.path.join(examples_uri, f"Split-{split}", "*")

    def expand(self, pipeline):
        return (pipeline
                | "Read" >> beam.io.ReadFromTFRecord(self._pattern)
                | "Parse" >> beam.Map(examples_io.parse_row))


class _ScoreUsers(beam.DoFn):
    """Scores batches of eval users for every model and baseline.

    Folds the metrics into accumulators and emits ((model name, slice),
    accumulator) once per slice per batch.
    """

    def __init__(self, model_dirs: Dict[str, str], ks: List[int],
                 ranking: Optional[Dict[str, Any]] = None):
        self._model_dirs = model_dirs
        self._ks = ks
        # {"model_dir", "rerank" (RerankConfig), "diversity_feature"} or None.
        self._ranking = ranking

    def setup(self):
        self._models = {name: embedding.load(path)
                        for name, path in self._model_dirs.items()}
        self._ranker = (two_stage.load_ranker(self._ranking["model_dir"])
                        if self._ranking else None)
        self._item_embeddings = None
        self._two_stage = None

    def _build_two_stage(self, corpus, train_rows):
        """The served recommender with exact retrieval (module two_stage)."""
        retrieval = self._models[MODEL]
        embeddings = self._item_embeddings[MODEL]
        item_ids = [examples_io.scalar(r, "item_id") for r in corpus.rows]
        rerank = self._ranking["rerank"]
        return two_stage.build_from_rows(
            retrieval, self._ranker, two_stage.ExactIndex(item_ids, embeddings, 1),
            corpus.rows, embeddings, train_rows, rerank, max(self._ks),
            self._ranking["diversity_feature"])

    def process(self, cases, corpus, fitted_baselines, train_rows=None):
        if self._item_embeddings is None:  # side inputs arrive with elements
            self._item_embeddings = {name: embedding.embed_items(model, corpus.rows)
                                     for name, model in self._models.items()}
            if self._ranker is not None:
                self._two_stage = self._build_two_stage(corpus, train_rows)
        chunk = evaluation.batch_size_for(len(corpus))
        for start in range(0, len(cases), chunk):
            batch = cases[start:start + chunk]
            rows = [c.user_row for c in batch]
            scores = {name: evaluation.baseline_scores(baseline, batch, corpus)
                      for name, baseline in fitted_baselines.items()}
            for name, model in self._models.items():
                queries = embedding.embed_users(model, rows)
                scores[name] = queries @ self._item_embeddings[name].T
            if self._ranker is not None:
                scores[RANKER] = two_stage.ranker_scores(
                    self._ranker, [examples_io.scalar(r, "user_id") for r in rows],
                    [examples_io.scalar(r, "item_id") for r in corpus.rows])
                scores[TWO_STAGE] = evaluation.list_scores(
                    two_stage.recommend_rows(self._two_stage, rows), corpus)
            for name, block in scores.items():
                for slice_name, accumulator in evaluation.accumulate(
                        batch, block, corpus, self._ks,
                        sampled=name != TWO_STAGE).items():
                    yield (name, slice_name), accumulator


class _MergeAccumulators(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, merged, accumulator):
        return accumulator if merged is None else merged.merge(accumulator)

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = accumulator if merged is None else merged.merge(accumulator)
        return merged

    def extract_output(self, merged):
        return merged


def _write_partial_results(results, path: str) -> None:
    with fileio.open(path, "w") as f:
        json.dump([[list(key), value] for key, value in results], f)


def _loadable(model_dir: Optional[str]) -> Optional[str]:
    """`model_dir` if this evaluator can embed with its SavedModel, else None
    (e.g. a model exported before the dataset config travelled with it)."""
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


class Executor(base_beam_executor.BaseBeamExecutor):

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
        last_blessed = baselines[0] if baselines else None
        if last_blessed is not None and last_blessed.id == model.id:
            last_blessed = None  # the resolver found this very model
        last_blessed_dir = _loadable(
            path_utils.serving_model_path(last_blessed.uri) if last_blessed else None)
        if last_blessed_dir:
            model_dirs[LAST_BLESSED] = last_blessed_dir

        ranking = None
        if rankers:
            ranking = {"model_dir": path_utils.serving_model_path(rankers[0].uri),
                       "rerank": config.RerankConfig(**json.loads(
                           exec_properties.get("rerank") or "{}")),
                       "diversity_feature": exec_properties.get("diversity_feature") or ""}

        partial_path = os.path.join(result.uri, _PARTIAL_RESULTS)
        with self._make_beam_pipeline() as pipeline:
            train = (pipeline
                     | "ReadTrain" >> _ReadRows(examples.uri, config.TRAIN_SPLIT)
                     | "TrainPairs" >> beam.Map(lambda r: (
                         examples_io.scalar(r, "user_id"), examples_io.scalar(r, "item_id"))))
            counts = (train | "TrainItems" >> beam.Values()
                      | "CountItems" >> beam.combiners.Count.PerElement())
            corpus = (pipeline
                      | "ReadItems" >> _ReadRows(items.uri, config.ITEMS_SPLIT)
                      | "ItemList" >> beam.combiners.ToList()
                      | "Corpus" >> beam.Map(
                          evaluation.build_corpus, beam.pvalue.AsDict(counts),
                          exec_properties.get("diversity_feature") or ""))
            evals = (pipeline
                     | "ReadEval" >> _ReadRows(examples.uri, config.EVAL_SPLIT)
                     | "KeyEval" >> beam.Map(lambda r: (examples_io.scalar(r, "user_id"), r)))
            cases = ({"train": train, "eval": evals}
                     | "ByUser" >> beam.CoGroupByKey()
                     | "Cases" >> beam.FlatMap(
                         lambda kv, corpus: [c for c in [evaluation.make_user_case(
                             kv[1]["train"], list(kv[1]["eval"]), corpus)] if c],
                         beam.pvalue.AsSingleton(corpus)))
            fitted_baselines = (train
                                | "TrainList" >> beam.combiners.ToList()
                                | "FitBaselines" >> beam.Map(
                                    evaluation.fit_baselines,
                                    beam.pvalue.AsSingleton(corpus)))
            side_inputs = [beam.pvalue.AsSingleton(corpus),
                           beam.pvalue.AsSingleton(fitted_baselines)]
            if ranking:
                # What the served model's exclusions and freshness are built from.
                side_inputs.append(beam.pvalue.AsList(
                    pipeline
                    | "ReadTrainForRanking" >> _ReadRows(examples.uri, config.TRAIN_SPLIT)
                    | "SlimTrain" >> beam.Map(two_stage.slim_row)))
            _ = (cases
                 | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
                 | "Score" >> beam.ParDo(_ScoreUsers(model_dirs, ks, ranking), *side_inputs)
                 | "Merge" >> beam.CombinePerKey(_MergeAccumulators())
                 | "Finish" >> beam.Map(lambda kv, corpus: (kv[0], kv[1].result(len(corpus))),
                                        beam.pvalue.AsSingleton(corpus))
                 | "Collect" >> beam.combiners.ToList()
                 | "Write" >> beam.Map(_write_partial_results, partial_path))

        with fileio.open(partial_path) as f:
            partial = [(tuple(key), value) for key, value in json.load(f)]
        fileio.remove(partial_path)
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
                         "ranker_uri": rankers[0].uri}
                        if TWO_STAGE in by_model else None),
            "baselines": {name: _nest(by_model, name) for name in evaluation.BASELINES
                          if name in by_model},
            "last_blessed": (dict(_nest(by_model, LAST_BLESSED), uri=last_blessed.uri,
                                  artifact_id=last_blessed.id)
                             if LAST_BLESSED in by_model else None),
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
