"""Executor of ScannPusher: TFX glue around tuning.py, index.py, publishing.py
and refit_check.py.

Reuses the stock Pusher executor's blessing check and push marks. The gates:
the model must be blessed, a refit model must pass refit_check, and the
tuned ScaNN index must reach the recall target and the latency bound; the
figures go onto the PushedModel in MLMD whether or not it is pushed.
"""

import dataclasses
import itertools
import json
import os
from typing import Any, Dict, List

import numpy as np
from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils

from tfx.dsl.io import fileio

from tfx_recsys import config, embedding, examples_io, memory, served_evaluation, storage
from tfx_recsys.components.scann_pusher import index as scann_index
from tfx_recsys.components.scann_pusher import publishing, refit_check, tuning
from tfx_recsys.serving import two_stage

TUNING_FILE = "index_tuning.json"
MAX_QUERIES = 1000  # held-out queries used to tune and check the index
MIN_SPLIT_QUERIES = 40  # fewer: tune and check on the same queries
REFIT_CHECK_K = 100  # the refit check compares recall@100 on the eval split
# PushedModel property: "refit" (the model refit on every interaction) or
# "evaluated" (the model the evaluator blessed).
SERVED_MODEL_PROPERTY = "served_model"
_INTERACTION_SPLITS = (config.TRAIN_SPLIT, config.EVAL_SPLIT)
# Exec property: 1 when the push refreshes served models with new data.
REFRESH_KEY = "refresh"


def _held_out_users(examples_uri: str) -> List[dict]:
    """One raw row per eval user (sorted by id, at most MAX_QUERIES).

    Two passes, so that only the chosen users' rows (which carry their
    history) are kept whole."""
    all_users = {examples_io.scalar(r, "user_id") for r in
                 examples_io.read_rows(examples_uri, config.EVAL_SPLIT, ("user_id",))}
    chosen = set(sorted(all_users)[:MAX_QUERIES])
    users = {}
    for row in examples_io.read_rows(examples_uri, config.EVAL_SPLIT):
        user = examples_io.scalar(row, "user_id")
        if user in chosen and user not in users:
            users[user] = row
    return [users[u] for u in sorted(users)]


def _user_item_pairs(examples_uri: str, split: str):
    """(user id, item id) of each interaction of a split."""
    for row in examples_io.read_rows(examples_uri, split, ("user_id", "item_id")):
        yield examples_io.scalar(row, "user_id"), examples_io.scalar(row, "item_id")


def _check_refit(evaluated_model_path: str, refit_queries: np.ndarray,
                 refit_items: np.ndarray, users: List[dict], item_rows: List[dict],
                 item_ids: List[str], examples_uri: str) -> refit_check.RefitCheck:
    """refit_check.check of the evaluated model against the refit one, on the
    held-out users (`users`, one eval row each, already embedded by the
    refit as `refit_queries`)."""
    user_ids = [examples_io.scalar(u, "user_id") for u in users]
    item_index = {item: row for row, item in enumerate(item_ids)}
    seen, relevant = (refit_check.item_sets(user_ids, _user_item_pairs(examples_uri, split),
                                            item_index) for split in _INTERACTION_SPLITS)
    evaluated = embedding.load(evaluated_model_path)
    return refit_check.check(embedding.embed_users(evaluated, users),
                             embedding.embed_items(evaluated, item_rows),
                             refit_queries, refit_items, seen, relevant, REFIT_CHECK_K)


def _write_embeddings(path: str, item_ids, item_embeddings: np.ndarray) -> None:
    """Candidate embeddings with their ids, for external vector databases."""
    with storage.open_file(os.path.join(path, "item_embeddings.npy"), "wb") as f:
        np.save(f, item_embeddings.astype(np.float32))
    with storage.open_file(os.path.join(path, "item_ids.txt"), "w") as f:
        f.write("\n".join(item_ids) + "\n")


class Executor(pusher_executor.Executor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        fileio.makedirs(pushed.uri)  # not made by every launcher
        gate = config.IndexGateConfig(**json.loads(exec_properties["index_gate"]))
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            pushed.set_string_custom_property("reason", "the model is not blessed")
            return

        model_path = self.GetModelPath(input_dict)
        rankers = input_dict.get("ranking_model") or []
        items = artifact_utils.get_single_instance(input_dict["items"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        # The models and the data a version is made from: the same models
        # on new data (a refresh) make a new version.
        source = {"model_path": model_path,
                  "ranking_model_path": (path_utils.serving_model_path(rankers[0].uri)
                                         if rankers else None),
                  "rerank": exec_properties.get("rerank") or "",
                  "examples": examples.uri, "items": items.uri}
        if input_dict.get("users"):
            source["users"] = artifact_utils.get_single_instance(input_dict["users"]).uri
        dirs = publishing.sibling_dirs(exec_properties["serving_dir"])
        serving_now = publishing.latest_version_dir(dirs["scann"])
        if serving_now and publishing.read_source(serving_now) == source:
            # E.g. a re-run after the first one blessed this very model.
            logging.info("%s already serves this model; nothing to push", serving_now)
            self._MarkPushed(pushed, pushed_destination=serving_now,
                             pushed_version=os.path.basename(serving_now))
            pushed.set_string_custom_property("reason", "already serving this model")
            return

        rerank = config.RerankConfig(**json.loads(exec_properties.get("rerank") or "{}"))
        trainer_model = embedding.load(model_path)
        ranker = (two_stage.load_ranker(path_utils.serving_model_path(rankers[0].uri))
                  if rankers else None)
        evaluated = input_dict.get("evaluated_model") or []
        pushed.set_string_custom_property(
            SERVED_MODEL_PROPERTY, "refresh" if exec_properties.get(REFRESH_KEY)
            else "refit" if evaluated else "evaluated")
        if evaluated:
            pushed.set_string_custom_property(
                "evaluated_model_uri", path_utils.serving_model_path(evaluated[0].uri))
        # The served user state, from every accepted interaction (both
        # splits) in one streaming pass, four fields parsed: each user's
        # history up to their latest interaction, exclusions, first-seen times.
        state = two_stage.user_state(
            itertools.chain.from_iterable(
                examples_io.read_rows(examples.uri, split, two_stage.INTERACTION_FACT_FIELDS)
                for split in _INTERACTION_SPLITS),
            rerank, history_length=embedding.dataset_of(trainer_model).history_length)
        excluded = state.excluded
        item_rows = list(examples_io.read_rows(items.uri, config.ITEMS_SPLIT))
        item_embeddings = embedding.embed_items(trainer_model, item_rows)
        item_facts = two_stage.item_facts(item_rows, state.first_seen,
                                          rerank, exec_properties.get("diversity_feature") or "")
        item_ids = item_facts.item_ids
        users = _held_out_users(examples.uri)
        queries = embedding.embed_users(trainer_model, users)
        if evaluated:
            checked = _check_refit(path_utils.serving_model_path(evaluated[0].uri),
                                   queries, item_embeddings, users, item_rows, item_ids,
                                   examples.uri)
            pushed.set_int_custom_property("refit_check_k", checked.k)
            pushed.set_float_custom_property("refit_check_evaluated_recall",
                                             checked.evaluated_recall)
            pushed.set_float_custom_property("refit_check_refit_recall",
                                             checked.refit_recall)
            logging.info("Refit check, recall@%d on %d eval users: evaluated %.4f, "
                         "refit %.4f", checked.k, checked.num_users,
                         checked.evaluated_recall, checked.refit_recall)
            if not checked.passed:
                return self._refuse(pushed, checked.reason())
        del item_rows
        state.first_seen.clear()
        k = min(int(exec_properties["top_k"]), len(item_ids))
        # The index serves the retrieval stage: `fetch` items per query.
        fetch = two_stage.retrieval_fetch(len(item_ids), k, rerank,
                                          max(map(len, excluded.values()), default=0))
        columns = embedding.user_columns(users, trainer_model)
        requests = [{name: values[i] for name, values in columns.items()}
                    for i in range(len(users))]
        # Tune on half of the held-out users and check on the other half: the
        # cheapest setting that just reaches the target on the users it was
        # chosen on tends to fall short on others.
        tune_queries, check_queries = ((queries[::2], queries[1::2])
                                       if len(queries) >= MIN_SPLIT_QUERIES
                                       else (queries, queries))

        candidates = tuning.candidate_settings(len(item_ids), fetch)
        searcher = tuning.build_searcher(item_embeddings, fetch, candidates[-1])
        tuned = tuning.tune(searcher, item_embeddings, tune_queries, candidates,
                            gate.recall_k, gate.target_recall, serving_k=fetch)
        with fileio.open(os.path.join(pushed.uri, TUNING_FILE), "w") as f:
            json.dump({"trials": [dataclasses.asdict(t) for t in tuned.trials],
                       "chosen": dataclasses.asdict(tuned.chosen) if tuned.chosen else None,
                       "exact_latency_ms_p50": tuned.exact_latency_ms_p50,
                       "num_queries": tuned.num_queries,
                       "retrieval_fetch": fetch,
                       "gate": dataclasses.asdict(gate)}, f, indent=2)
        pushed.set_float_custom_property("exact_search_latency_ms_p50",
                                         tuned.exact_latency_ms_p50)
        if tuned.chosen is None:
            best = max(t.recall for t in tuned.trials)
            return self._refuse(pushed, f"no ScaNN setting reached recall@{gate.recall_k} "
                                f">= {gate.target_recall} with all {fetch} items returned "
                                f"(best recall {best:.3f})")

        index = scann_index.ScannIndex(searcher, item_ids, fetch,
                                       tuned.chosen.settings.num_leaves_to_search)
        recall_k = min(gate.recall_k, k)
        recall = scann_index.recall_against_exact(index, check_queries, item_embeddings,
                                                  item_ids, k=recall_k)
        for name, value in dataclasses.asdict(tuned.chosen.settings).items():
            pushed.set_int_custom_property(f"index_{name}", value)
        pushed.set_float_custom_property("index_recall", recall)
        pushed.set_int_custom_property("index_recall_k", recall_k)
        pushed.set_float_custom_property("index_latency_ms_p50", tuned.chosen.latency_ms_p50)
        pushed.set_int_custom_property("num_items", len(item_ids))
        pushed.set_int_custom_property("top_k", k)
        pushed.set_int_custom_property("retrieval_fetch", fetch)
        pushed.set_int_custom_property("two_stage", int(ranker is not None))
        pushed.set_string_custom_property("rerank", json.dumps(
            dataclasses.asdict(rerank), sort_keys=True))
        logging.info("ScaNN %s: recall@%d %.4f, %.3f ms per query (exact: %.3f ms)",
                     tuned.chosen.settings, gate.recall_k, recall,
                     tuned.chosen.latency_ms_p50, tuned.exact_latency_ms_p50)
        full = tuning.full_result_share(searcher, check_queries, fetch,
                                        tuned.chosen.settings.num_leaves_to_search)
        if full < 1.0:
            return self._refuse(pushed, f"ScaNN returns fewer than {fetch} items for "
                                f"{1 - full:.1%} of check queries")
        if recall < gate.target_recall:
            return self._refuse(pushed, f"ScaNN recall@{recall_k} {recall:.3f} on "
                                f"check queries < target {gate.target_recall}")
        if tuned.chosen.latency_ms_p50 > gate.max_latency_ms:
            return self._refuse(pushed, f"ScaNN latency p50 {tuned.chosen.latency_ms_p50:.3f} "
                                f"ms > bound {gate.max_latency_ms} ms")

        for directory in dirs.values():
            storage.makedirs(directory)
        version = publishing.new_version(list(dirs.values()))
        staged = {role: publishing.staging_dir(d, version) for role, d in dirs.items()}
        # Each served model holds the item catalogue and every user's
        # exclusions: build, save and drop one at a time.
        served_indexes = {"scann": lambda: index,
                          "brute_force": lambda: two_stage.ExactIndex(
                              item_ids, item_embeddings, k)}
        for role, make_index in served_indexes.items():
            scann_index.save(two_stage.build_from_item_facts(
                trainer_model, ranker, make_index(), item_facts, item_embeddings,
                excluded, rerank, k, state.history), staged[role])
            memory.release_free_memory()
            memory.log_memory("ScannPusher", f"{role} model saved")
        publishing.write_source(staged["scann"], source)
        # What the evaluated model was blessed with travels with the version:
        # the no-regression reference where no resolver runs.
        served_evaluation.copy_to_version(
            artifact_utils.get_single_instance(
                input_dict[standard_component_specs.MODEL_BLESSING_KEY]).uri,
            staged["scann"])
        _write_embeddings(staged["embeddings"], item_ids, item_embeddings)
        # Latency is measured on the saved model alone, as a server loads it.
        del served_indexes, trainer_model, ranker, searcher, index, excluded, item_facts
        del state
        del item_embeddings
        memory.release_free_memory()
        latency = scann_index.signature_latency_ms(staged["scann"], requests)
        pushed.set_float_custom_property("serving_latency_ms_p50", latency["p50"])
        pushed.set_float_custom_property("serving_latency_ms_p99", latency["p99"])

        for role in publishing.PUBLISH_ORDER:
            publishing.publish(staged[role], dirs[role], version)
            publishing.prune(dirs[role], gate.keep_versions)
        destination = os.path.join(dirs["scann"], str(version))
        io_utils.copy_dir(destination, os.path.join(pushed.uri, "model"))
        self._MarkPushed(pushed, pushed_destination=destination,
                         pushed_version=str(version))
        pushed.set_string_custom_property("brute_force_destination",
                                          os.path.join(dirs["brute_force"], str(version)))
        pushed.set_string_custom_property("embeddings_destination",
                                          os.path.join(dirs["embeddings"], str(version)))
        logging.info("Pushed version %d to %s (serving p50 %.2f ms)", version,
                     destination, latency["p50"])

    def _refuse(self, pushed: types.Artifact, reason: str) -> None:
        logging.warning("Not pushed: %s", reason)
        self._MarkNotPushed(pushed)
        pushed.set_string_custom_property("reason", reason)
