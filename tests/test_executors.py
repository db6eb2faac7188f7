"""Executors of the custom components, run directly on tiny data."""

import collections
import csv
import json
import math
import os
import shutil

import pytest
from google.protobuf import json_format, message
from tfx.types import standard_artifacts

from tfx_recsys import config, examples_io
from tfx_recsys.components.interactions_example_gen import component as example_gen
from tfx_recsys.components.interactions_example_gen import executor as example_gen_executor
from tfx_recsys.components.retrieval_evaluator import executor as evaluator_executor
from tfx_recsys.components.scann_pusher import executor as pusher_executor
from tfx_recsys.data.native import DataError
from tfx_recsys import run_summary

BEAM_ARGS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def _artifact(kind, uri):
    artifact = kind()
    artifact.uri = str(uri)
    os.makedirs(artifact.uri, exist_ok=True)
    return artifact


def _run_example_gen(data_dir, out_dir, eval_fraction=0.2):
    component = example_gen.InteractionsExampleGen(input_base=data_dir,
                                                   eval_fraction=eval_fraction)
    # As the orchestrator passes them: protos as JSON strings.
    properties = {k: (json_format.MessageToJson(v) if isinstance(v, message.Message) else v)
                  for k, v in component.exec_properties.items()}
    examples = _artifact(standard_artifacts.Examples, out_dir / "examples")
    items = _artifact(standard_artifacts.Examples, out_dir / "items")
    executor = example_gen_executor.Executor(
        example_gen_executor.Executor.Context(beam_pipeline_args=BEAM_ARGS,
                                              tmp_dir=str(out_dir / "tmp")))
    executor.Do({}, {"examples": [examples], "items": [items]}, properties)
    return examples, items


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
    assert str(examples_io.scalar(row, "age")) == users[examples_io.scalar(row, "user_id")]["age"]

    corpus = list(examples_io.read_rows(items.uri, config.ITEMS_SPLIT))
    item_rows = _read_csv(os.path.join(tiny_data, "items.csv"))
    assert sorted(examples_io.scalar(r, "item_id") for r in corpus) == \
        sorted(r["item_id"] for r in item_rows)
    assert json.loads(items.split_names) == [config.ITEMS_SPLIT]


def test_example_gen_reports_a_malformed_row_with_file_and_line(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with open(data / "interactions.csv", "a") as f:
        f.write("u1,i1,5,not-a-time\n")
    line = len(open(data / "interactions.csv").read().splitlines())
    with pytest.raises(DataError, match=rf"interactions.csv, line {line}, column 'timestamp'"):
        _run_example_gen(str(data), tmp_path / "out")


def test_example_gen_reports_an_interaction_without_a_user_row(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with open(data / "interactions.csv", "a") as f:
        f.write("ghost,i1,5,1600000000\n")
    with pytest.raises(DataError, match="user_id 'ghost' has no row in users.csv"):
        _run_example_gen(str(data), tmp_path / "out")


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


def test_evaluator_writes_metrics_for_model_and_baseline_and_a_blessing(tiny_run, tmp_path):
    found = _input_dict_from_run(tiny_run.root)
    inputs = {"model": _as_tfx(found["model"], standard_artifacts.Model),
              "examples": _as_tfx(found["examples"], standard_artifacts.Examples),
              "items": _as_tfx(found["items"], standard_artifacts.Examples)}
    evaluation = _artifact(standard_artifacts.ModelEvaluation, tmp_path / "eval")
    blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    evaluator_executor.Executor().Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"top_ks": "[5, 10]", "blessing_metric": "recall@10"})
    with open(tmp_path / "eval" / "metrics.json") as f:
        report = json.load(f)
    assert set(report["model"]) >= {"recall@5", "ndcg@10", "top_k_accuracy@10", "hit_rate@5"}
    assert set(report["baselines"]) == {"most_popular"}
    assert report["num_items"] == 80
    blessed = blessing.get_int_custom_property("blessed")
    assert blessed == int(report["model"]["recall@10"] > report["baselines"]["most_popular"]["recall@10"])
    assert os.path.exists(tmp_path / "blessing" / ("BLESSED" if blessed else "NOT_BLESSED"))


def _blessing(tmp_path, blessed):
    blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / f"blessing{blessed}")
    blessing.set_int_custom_property("blessed", blessed)
    return blessing


def _run_pusher(tiny_run, tmp_path, blessed):
    found = _input_dict_from_run(tiny_run.root)
    pushed = _artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    serving = tmp_path / "serving"
    pusher_executor.Executor().Do(
        {"model": _as_tfx(found["model"], standard_artifacts.Model),
         "model_blessing": [_blessing(tmp_path, blessed)],
         "items": _as_tfx(found["items"], standard_artifacts.Examples),
         "examples": _as_tfx(found["examples"], standard_artifacts.Examples)},
        {"pushed_model": [pushed]}, {"serving_dir": str(serving), "top_k": 10})
    return pushed, serving


def test_pusher_does_not_push_an_unblessed_model(tiny_run, tmp_path):
    pushed, serving = _run_pusher(tiny_run, tmp_path, blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not serving.exists()


def test_pusher_writes_a_new_version_with_saved_model_and_index_recall(tiny_run, tmp_path):
    pushed, serving = _run_pusher(tiny_run, tmp_path, blessed=1)
    assert pushed.get_int_custom_property("pushed") == 1
    version = pushed.get_string_custom_property("pushed_version")
    assert (serving / version / "saved_model.pb").exists()
    assert pushed.get_float_custom_property("index_recall_at_10") >= 0.9
    assert pushed.get_int_custom_property("num_items") == 80
