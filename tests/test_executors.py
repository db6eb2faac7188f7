"""Executors of the custom components, run directly on tiny data."""

import collections
import csv
import dataclasses
import json
import math
import os

import numpy as np
import pytest
from google.protobuf import json_format, message
from tfx.types import standard_artifacts

from tfx_recsys import config, dataset_config, examples_io
from tfx_recsys.components.interactions_example_gen import component as example_gen
from tfx_recsys.components.interactions_example_gen import executor as example_gen_executor
from tfx_recsys.components.retrieval_evaluator import beam_scoring
from tfx_recsys.components.retrieval_evaluator import evaluation as evaluation_logic
from tfx_recsys.components.retrieval_evaluator import executor as evaluator_executor
from tfx_recsys.components.scann_pusher import executor as pusher_executor
from tfx_recsys.components.scann_pusher import publishing
from tfx_recsys import run_summary

BEAM_ARGS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
# Executors built here skip TFX's sdist as local_runner's do (beam_staging).
pytestmark = pytest.mark.usefixtures("local_beam_staging")


def _artifact(kind, uri):
    artifact = kind()
    artifact.uri = str(uri)
    os.makedirs(artifact.uri, exist_ok=True)
    return artifact


def _run_example_gen(data_dir, out_dir, refit=False, split=None):
    """Examples, items (and with `refit`, refit_examples) of the synthetic
    config, its split replaced by `split` when given."""
    dataset = dataset_config.load(dataset_config.builtin_path("synthetic"))
    if split is not None:
        dataset = dataclasses.replace(dataset, split=split)
    component = example_gen.InteractionsExampleGen(input_base=data_dir,
                                                   dataset=dataset.to_json(),
                                                   with_refit_examples=refit)
    # As the orchestrator passes them: protos as JSON strings.
    properties = {k: (json_format.MessageToJson(v) if isinstance(v, message.Message) else v)
                  for k, v in component.exec_properties.items()}
    examples = _artifact(standard_artifacts.Examples, out_dir / "examples")
    items = _artifact(standard_artifacts.Examples, out_dir / "items")
    users = _artifact(standard_artifacts.Examples, out_dir / "users")
    refit_examples = _artifact(standard_artifacts.Examples, out_dir / "refit")
    executor = example_gen_executor.Executor(
        example_gen_executor.Executor.Context(beam_pipeline_args=BEAM_ARGS,
                                              tmp_dir=str(out_dir / "tmp")))
    executor.Do({}, {"examples": [examples], "items": [items], "users": [users],
                     "refit_examples": [refit_examples]}, properties)
    return (examples, items, refit_examples) if refit else (examples, items)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_example_gen_joins_and_splits_every_interaction_by_time(tiny_data, tmp_path):
    examples, items = _run_example_gen(tiny_data, tmp_path)
    train = list(examples_io.read_rows(examples.uri, config.TRAIN_SPLIT))
    evaluation = list(examples_io.read_rows(examples.uri, config.EVAL_SPLIT))
    raw = _read_csv(os.path.join(tiny_data, "interactions.csv"))
    assert len(train) + len(evaluation) == len(raw)  # nothing dropped

    per_user = collections.Counter(r["user_id"] for r in raw)
    eval_per_user = collections.Counter(examples_io.scalar(r, "user_id") for r in evaluation)
    for user, count in per_user.items():
        assert eval_per_user.get(user, 0) == math.floor(0.2 * count)
    latest_train = collections.defaultdict(int)
    for row in train:
        user = examples_io.scalar(row, "user_id")
        latest_train[user] = max(latest_train[user], examples_io.scalar(row, "timestamp"))
    assert all(examples_io.scalar(r, "timestamp") >= latest_train[examples_io.scalar(r, "user_id")]
               for r in evaluation)

    users = {r["user_id"]: r for r in _read_csv(os.path.join(tiny_data, "users.csv"))}
    row = train[0]
    assert examples_io.scalar(row, "age") == float(users[examples_io.scalar(row, "user_id")]["age"])

    corpus = list(examples_io.read_rows(items.uri, config.ITEMS_SPLIT))
    item_rows = _read_csv(os.path.join(tiny_data, "items.csv"))
    assert sorted(examples_io.scalar(r, "item_id") for r in corpus) == \
        sorted(r["item_id"] for r in item_rows)
    assert json.loads(items.split_names) == [config.ITEMS_SPLIT]


def test_example_gen_refit_examples_hold_every_interaction_history_across_the_cut(
        tiny_data, tmp_path):
    """The final fit's data, with a global cut: every accepted interaction
    once (users and items seen only after the cut included), as train, each
    history running up to the interaction before, across the cut."""
    examples, _, refit = _run_example_gen(tiny_data, tmp_path, refit=True,
                                          split=dataset_config.Split("global_time", 0.2))
    splits = {split: list(examples_io.read_rows(examples.uri, split))
              for split in (config.TRAIN_SPLIT, config.EVAL_SPLIT)}
    refit_rows = list(examples_io.read_rows(refit.uri, config.TRAIN_SPLIT))
    assert json.loads(refit.split_names) == [config.TRAIN_SPLIT]

    def key(row):
        return tuple(examples_io.scalar(row, f) for f in ("user_id", "item_id", "timestamp"))

    assert sorted(map(key, refit_rows)) == sorted(map(key, splits["train"] + splits["eval"]))
    eval_keys = {key(r)[:2] for r in splits["eval"]}
    # Histories cross the cut: some hold items taken after it.
    assert any(any((examples_io.scalar(r, "user_id"), item) in eval_keys
                   for item in r.get("history", [])) for r in refit_rows)
    by_user = collections.defaultdict(list)
    for row in refit_rows:
        by_user[examples_io.scalar(row, "user_id")].append(row)
    for rows in by_user.values():
        for row in rows:
            earlier = sorted((examples_io.scalar(r, "timestamp"), examples_io.scalar(r, "item_id"))
                             for r in rows if examples_io.scalar(r, "timestamp")
                             < examples_io.scalar(row, "timestamp"))
            assert row.get("history", []) == [item for _, item in earlier][-50:]
    # Without the final fit, the output is there and empty.
    _run_example_gen(tiny_data, tmp_path / "plain")
    assert os.listdir(tmp_path / "plain" / "refit") == ["Split-train"]
    assert not os.listdir(tmp_path / "plain" / "refit" / "Split-train")


def _latest_outputs(root, component, key):
    store = run_summary.open_store(root)
    execution = run_summary.latest_execution(store, component)
    return run_summary.output_artifacts(store, execution, key)


def _input_dict_from_run(root):
    return {
        "model": _latest_outputs(root, "Trainer", "model"),
        "examples": _latest_outputs(root, "InteractionsExampleGen", "examples"),
        "items": _latest_outputs(root, "InteractionsExampleGen", "items"),
    }


def _as_tfx(mlmd_artifacts, kind):
    result = []
    for a in mlmd_artifacts:
        artifact = kind()
        artifact.set_mlmd_artifact(a)
        result.append(artifact)
    return result


def _evaluate(tiny_run, tmp_path, baseline=None, gate=None, ranker=False, **properties):
    found = _input_dict_from_run(tiny_run.root)
    inputs = {"model": _as_tfx(found["model"], standard_artifacts.Model),
              "examples": _as_tfx(found["examples"], standard_artifacts.Examples),
              "items": _as_tfx(found["items"], standard_artifacts.Examples)}
    if baseline is not None:
        inputs["baseline_model"] = [baseline]
    if ranker:
        inputs["ranking_model"] = _as_tfx(_latest_outputs(tiny_run.root, "RankingTrainer",
                                                          "model"), standard_artifacts.Model)
    evaluation = _artifact(standard_artifacts.ModelEvaluation, tmp_path / "eval")
    blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    gate = gate or config.BlessingConfig(metric="recall@10")
    evaluator_executor.Executor(
        evaluator_executor.Executor.Context(beam_pipeline_args=BEAM_ARGS,
                                            tmp_dir=str(tmp_path / "tmp"))).Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"top_ks": "[1, 5, 10]", "blessing_config": json.dumps(dataclasses.asdict(gate)),
         **properties})
    with open(tmp_path / "eval" / "metrics.json") as f:
        return json.load(f), blessing, found


def test_evaluator_writes_sliced_metrics_for_model_and_baseline_and_a_blessing(
        tiny_run, tmp_path):
    report, blessing, _ = _evaluate(tiny_run, tmp_path)
    overall = report["model"]["overall"]
    assert set(overall) >= {"recall@5", "ndcg@10", "mrr@10", "hit_rate@1",
                            "top_k_accuracy@10", "coverage@10", "novelty@10",
                            "diversity@10"}
    assert overall["num_items"] == 80 and overall["num_users"] == report["num_eval_users"] > 0
    assert set(report["baselines"]) == {"most_popular", "item_knn", "ease"}
    assert report["baselines_skipped"] == {}
    assert report["last_blessed"] is None
    slices = report["model"]["slices"]
    assert "user:warm" in slices and any(s.startswith("user_activity:") for s in slices)
    assert sum(slices[s]["num_pairs"] for s in slices if s.startswith("item_popularity:")) \
        == overall["num_pairs"]
    blessed = blessing.get_int_custom_property("blessed")
    assert blessed == int(overall["recall@10"] >
                          report["baselines"]["most_popular"]["overall"]["recall@10"])
    assert os.path.exists(tmp_path / "blessing" / ("BLESSED" if blessed else "NOT_BLESSED"))


def test_evaluator_embeds_items_in_chunks_with_the_same_results(
        tiny_run, tmp_path, monkeypatch):
    whole, _, _ = _evaluate(tiny_run, tmp_path / "whole", ranker=True)
    monkeypatch.setattr(beam_scoring, "ITEM_CHUNK", 7)  # 80 items: 12 chunks
    chunked, _, _ = _evaluate(tiny_run, tmp_path / "chunked", ranker=True)
    # Equal up to float noise (Beam may batch users differently per run).
    assert json.dumps(chunked["model"], sort_keys=True) != "{}"
    for name in ("model", "ranking"):
        assert _flat(chunked[name]) == pytest.approx(_flat(whole[name]), rel=1e-5, abs=1e-7)


def _flat(nested, prefix=""):
    """{"a": {"b": 1}} -> {"a/b": 1} (numbers only, NaN as None)."""
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix + key] = None if math.isnan(value) else value
    return flat


def test_evaluator_draws_at_most_max_eval_users_the_same_every_time(tiny_run, tmp_path):
    everyone, _, _ = _evaluate(tiny_run, tmp_path / "all")
    total = everyone["num_eval_users"]
    assert everyone["eval_users_total"] == total > 6
    drawn, _, _ = _evaluate(tiny_run, tmp_path / "drawn", max_eval_users=5)
    again, _, _ = _evaluate(tiny_run, tmp_path / "again", max_eval_users=5)
    assert drawn["num_eval_users"] == 5 and drawn["eval_users_total"] == total
    assert drawn["model"]["overall"] == again["model"]["overall"]
    assert drawn["baselines"]["item_knn"]["overall"]["num_users"] == 5


def test_evaluator_scores_a_large_corpus_ranker_on_sampled_items_only(
        tiny_run, tmp_path, monkeypatch):
    # The tiny corpus is too small for 99 negatives: the protocol with 9.
    monkeypatch.setattr(evaluation_logic, "SAMPLED_NEGATIVES", 9)
    full, _, _ = _evaluate(tiny_run, tmp_path / "full", ranker=True)
    monkeypatch.setattr(evaluation_logic, "RANKER_FULL_CORPUS_MAX_ITEMS", 10)
    sampled, _, _ = _evaluate(tiny_run, tmp_path / "sampled", ranker=True)
    assert full["ranking"]["ranker_full_corpus"] and not sampled["ranking"]["ranker_full_corpus"]
    ranker = sampled["ranking"]["ranker"]["overall"]
    assert "ndcg@10" not in ranker and "ndcg@10" in full["ranking"]["ranker"]["overall"]
    for name in ("sampled_hit_rate@10", "sampled_ndcg@10"):  # same users, same items
        assert ranker[name] == pytest.approx(full["ranking"]["ranker"]["overall"][name],
                                             abs=1e-6)
    assert sampled["ranking"]["two_stage"] == full["ranking"]["two_stage"]


def test_evaluator_output_is_readable_by_tfma(tiny_run, tmp_path):
    import tensorflow_model_analysis as tfma

    report, _, _ = _evaluate(tiny_run, tmp_path)
    records = list(tfma.load_metrics(str(tmp_path / "eval")))
    overall = [r for r in records if not r.slice_key.single_slice_keys]
    values = {(m.key.model_name, m.key.name): m.value.double_value.value
              for r in overall for m in r.metric_keys_and_values}
    assert values[("model", "recall@10")] == pytest.approx(report["model"]["overall"]["recall@10"])
    assert ("most_popular", "ndcg@5") in values


def test_evaluator_compares_against_the_last_blessed_model(tiny_run, tmp_path):
    found = _input_dict_from_run(tiny_run.root)
    same_model = standard_artifacts.Model()
    same_model.uri = found["model"][0].uri  # another artifact of the same model
    gate = config.BlessingConfig(metric="recall@10", beat_baselines=(), max_regression=0.0)
    report, blessing, _ = _evaluate(tiny_run, tmp_path, baseline=same_model, gate=gate)
    assert report["last_blessed"]["overall"]["recall@10"] == \
        pytest.approx(report["model"]["overall"]["recall@10"])
    assert blessing.get_int_custom_property("blessed") == 1  # equal is no regression
    assert any("last blessed" in c for c in report["blessing"]["checks"])


def _blessing(tmp_path, blessed):
    blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / f"blessing{blessed}")
    blessing.set_int_custom_property("blessed", blessed)
    return blessing


def _run_pusher(tiny_run, tmp_path, blessed, gate=config.IndexGateConfig(), name="pushed",
                model="Trainer", evaluated_model=None):
    found = _input_dict_from_run(tiny_run.root)
    pushed = _artifact(standard_artifacts.PushedModel, tmp_path / name)
    serving = tmp_path / "serving" / "retrieval"
    evaluated = ({"evaluated_model": _as_tfx(_latest_outputs(tiny_run.root, evaluated_model,
                                                             "model"), standard_artifacts.Model)}
                 if evaluated_model else {})
    pusher_executor.Executor().Do(
        {"model": _as_tfx(_latest_outputs(tiny_run.root, model, "model"),
                          standard_artifacts.Model),
         "model_blessing": [_blessing(tmp_path, blessed)],
         "items": _as_tfx(found["items"], standard_artifacts.Examples),
         "examples": _as_tfx(found["examples"], standard_artifacts.Examples), **evaluated},
        {"pushed_model": [pushed]},
        {"serving_dir": str(serving), "top_k": 10,
         "index_gate": json.dumps(dataclasses.asdict(gate))})
    return pushed, serving


def test_pusher_does_not_push_an_unblessed_model(tiny_run, tmp_path):
    pushed, serving = _run_pusher(tiny_run, tmp_path, blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert "not blessed" in pushed.get_string_custom_property("reason")
    assert not serving.exists()


@pytest.mark.parametrize("gate, words", [
    (config.IndexGateConfig(target_recall=1.01), "no ScaNN setting reached"),
    (config.IndexGateConfig(max_latency_ms=0.0), "latency"),
])
def test_pusher_does_not_push_an_index_that_fails_its_gate(tiny_run, tmp_path, gate, words):
    pushed, serving = _run_pusher(tiny_run, tmp_path, blessed=1, gate=gate)
    assert pushed.get_int_custom_property("pushed") == 0
    assert words in pushed.get_string_custom_property("reason")
    assert not serving.exists() or not os.listdir(serving)
    with open(tmp_path / "pushed" / "index_tuning.json") as f:
        assert json.load(f)["trials"]


def test_pusher_publishes_scann_brute_force_and_embeddings_and_keeps_n(tiny_run, tmp_path):
    gate = config.IndexGateConfig(keep_versions=1)
    first, serving = _run_pusher(tiny_run, tmp_path, blessed=1, gate=gate, name="first")
    assert first.get_int_custom_property("pushed") == 1
    version = first.get_string_custom_property("pushed_version")
    assert (serving / version / "saved_model.pb").exists()
    assert (tmp_path / "serving" / "retrieval_bruteforce" / version / "saved_model.pb").exists()
    embeddings = tmp_path / "serving" / "retrieval_embeddings" / version
    assert np.load(embeddings / "item_embeddings.npy").shape[0] == 80
    assert len((embeddings / "item_ids.txt").read_text().split()) == 80
    assert first.get_float_custom_property("index_recall") >= 0.95
    assert first.get_int_custom_property("index_recall_k") == 10
    assert first.get_float_custom_property("serving_latency_ms_p50") > 0
    assert first.get_int_custom_property("num_items") == 80

    # The same model again: already served, so no new version.
    again, _ = _run_pusher(tiny_run, tmp_path, blessed=1, gate=gate, name="again")
    assert again.get_string_custom_property("pushed_version") == version
    assert again.get_string_custom_property("reason") == "already serving this model"

    # A version made from something else (here: its record removed) is
    # replaced by a new one, and keep_versions=1 prunes it.
    os.remove(serving / version / publishing.SOURCE_FILE)
    second, _ = _run_pusher(tiny_run, tmp_path, blessed=1, gate=gate, name="second")
    newer = second.get_string_custom_property("pushed_version")
    assert int(newer) > int(version)
    for model in ("retrieval", "retrieval_bruteforce", "retrieval_embeddings"):
        assert os.listdir(tmp_path / "serving" / model) == [newer]


def test_pusher_ships_a_refit_that_ranks_the_eval_split_better_and_refuses_a_broken_one(
        tiny_run, tmp_path):
    pushed, serving = _run_pusher(tiny_run, tmp_path, blessed=1, name="refit",
                                  model="RefitTrainer", evaluated_model="Trainer")
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("served_model") == "refit"
    evaluated = pushed.get_float_custom_property("refit_check_evaluated_recall")
    assert pushed.get_float_custom_property("refit_check_refit_recall") > evaluated > 0
    # The other way round, the "refit" never saw the eval split and ranks it
    # worse than the "evaluated" model, which did: not pushed.
    broken, _ = _run_pusher(tiny_run, tmp_path, blessed=1, name="broken",
                            model="Trainer", evaluated_model="RefitTrainer")
    assert broken.get_int_custom_property("pushed") == 0
    assert "the refit looks broken" in broken.get_string_custom_property("reason")
    assert os.listdir(serving) == [pushed.get_string_custom_property("pushed_version")]


def test_example_gen_writes_the_same_records_in_the_same_order_every_run(tiny_data, tmp_path):
    runs = [_run_example_gen(tiny_data, tmp_path / f"run{i}") for i in range(2)]
    for split, artifact_index in ((config.TRAIN_SPLIT, 0), (config.EVAL_SPLIT, 0),
                                  (config.ITEMS_SPLIT, 1)):
        first, second = (list(examples_io.read_rows(run[artifact_index].uri, split))
                         for run in runs)
        assert first == second and first
