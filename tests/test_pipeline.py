"""The whole pipeline in-process on tiny synthetic data, checked through MLMD."""

import os
import shutil
import subprocess
import sys

import pytest

from ml_metadata.proto import metadata_store_pb2

from tfx_recsys import config, examples_io, run_summary

COMPONENTS = ["InteractionsExampleGen", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "AnomaliesGate", "Transform", "Trainer",
              "RankingTrainer", "RetrievalEvaluator", "RefitTransform", "RefitTrainer",
              "RefitRankingTrainer", "ScannPusher"]


def _producer(store, artifact_id):
    """The execution that output an artifact."""
    events = [e for e in store.get_events_by_artifact_ids([artifact_id])
              if e.type == metadata_store_pb2.Event.OUTPUT]
    assert len(events) == 1
    return store.get_executions_by_id([events[0].execution_id])[0]


def _examples_uri(root: str) -> str:
    store = run_summary.open_store(root)
    execution = run_summary.latest_execution(store, "InteractionsExampleGen")
    [examples] = run_summary.output_artifacts(store, execution, "examples")
    return examples.uri


def test_every_component_executed(tiny_run):
    store = run_summary.open_store(tiny_run.root)
    for component in COMPONENTS:
        executions = run_summary.executions_of(store, component)
        assert executions, f"{component} never ran"
        assert executions[-1].last_known_state == metadata_store_pb2.Execution.COMPLETE


def test_pushed_model_lineage_leads_back_to_example_gen(tiny_run):
    store = run_summary.open_store(tiny_run.root)
    pusher = run_summary.latest_execution(store, "ScannPusher")
    [pushed] = run_summary.output_artifacts(store, pusher, "pushed_model")
    assert run_summary.property_value(pushed, "pushed") == 1
    # The pusher records every fact of the serving contract (`reason` says
    # why nothing was pushed, so a push has none).
    from tfx_recsys.serving import contract

    missing = [name for name in contract.PUSHED_PROPERTIES
               if run_summary.property_value(pushed, name) is None]
    assert missing == ["reason"]

    # PushedModel <- ScannPusher <- Model <- Trainer <- transformed examples
    # <- Transform <- Examples <- InteractionsExampleGen.
    trail, frontier = set(), [pushed.id]
    while frontier:
        execution = _producer(store, frontier.pop())
        trail.add(run_summary.node_id(store, execution))
        frontier += [a.id for a in run_summary.input_artifacts(store, execution)]
    assert {"ScannPusher", "Trainer", "RankingTrainer", "Transform",
            "InteractionsExampleGen"} <= trail


def test_evaluation_measures_the_ranker_and_the_served_two_stage_list(tiny_run):
    import json

    store = run_summary.open_store(tiny_run.root)
    evaluator = run_summary.latest_execution(store, "RetrievalEvaluator")
    [evaluation] = run_summary.output_artifacts(store, evaluator, "evaluation")
    with open(os.path.join(evaluation.uri, "metrics.json")) as f:
        report = json.load(f)
    ranking = report["ranking"]
    model = report["model"]["overall"]
    for name in ("two_stage", "ranker"):
        overall = ranking[name]["overall"]
        assert overall["num_users"] == model["num_users"] > 0
        assert 0.0 <= overall["ndcg@10"] <= 1.0
    assert ranking["rerank"]["candidates"] == config.RerankConfig().candidates
    # The property reads back with six decimals (seen: 0.394368 for
    # 0.3943675...), so compare to that.
    assert run_summary.property_value(evaluation, "two_stage_ndcg@10") == \
        pytest.approx(ranking["two_stage"]["overall"]["ndcg@10"], abs=1e-6)


def test_pushed_model_is_the_refit_and_lineage_names_the_evaluated_one(tiny_run):
    """The pusher's `model` is the RefitTrainer's (trained on every
    interaction); its `evaluated_model` is the Trainer's, the one the
    evaluator blessed."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = run_summary.open_store(tiny_run.root)
    pusher = run_summary.latest_execution(store, "ScannPusher")
    inputs = {}
    for event in store.get_events_by_execution_ids([pusher.id]):
        if event.type == pb.Event.INPUT:
            key = event.path.steps[0].key
            inputs[key] = run_summary.node_id(store, _producer(store, event.artifact_id))
    assert inputs["model"] == "RefitTrainer" and inputs["ranking_model"] == "RefitRankingTrainer"
    assert inputs["evaluated_model"] == "Trainer"
    assert inputs["evaluated_ranking_model"] == "RankingTrainer"
    evaluator = run_summary.latest_execution(store, "RetrievalEvaluator")
    evaluated = {run_summary.node_id(store, _producer(store, a.id))
                 for a in run_summary.input_artifacts(store, evaluator)
                 if a.type_id == store.get_artifact_type("Model").id}
    assert evaluated == {"Trainer", "RankingTrainer"}
    result = run_summary.summary(tiny_run.root)
    assert result["served_model"] == "refit"
    assert result["refit_check_refit_recall"] > result["refit_check_evaluated_recall"]
    assert "the final fit" in run_summary.served_line(result)


def test_refit_knows_the_items_first_seen_in_the_eval_period(tiny_run):
    """The evaluated model's vocabulary is the train split's; the refit's
    holds every user and item of both splits."""
    import tensorflow_transform as tft

    store = run_summary.open_store(tiny_run.root)

    def vocabulary(transform, name):
        execution = run_summary.latest_execution(store, transform)
        [graph] = run_summary.output_artifacts(store, execution, "transform_graph")
        return {v.decode() for v in tft.TFTransformOutput(graph.uri).vocabulary_by_name(name)}

    ids = {split: {field: {examples_io.scalar(r, field) for r in
                           examples_io.read_rows(_examples_uri(tiny_run.root), split)}
                   for field in ("user_id", "item_id")} for split in ("train", "eval")}
    eval_only_items = ids["eval"]["item_id"] - ids["train"]["item_id"]
    assert eval_only_items  # the tiny data has some: the check is not vacuous
    assert not eval_only_items & vocabulary("Transform", "item_id")
    for field in ("user_id", "item_id"):
        assert ids["train"][field] | ids["eval"][field] <= vocabulary("RefitTransform", field)


# Every signature of both pushed twins (ScaNN and exact), in a fresh process
# with only TensorFlow and ScaNN: {twin: {signature: [[item ids] per user]}}.
_SERVE_EVERY_SIGNATURE = """
import json, sys, tensorflow as tf, scann
assert not any(m.startswith(("tfx", "tensorflow_recommenders", "tensorflow_transform"))
               for m in sys.modules), "serving must not need the training stack"
users = dict(user_id=tf.constant(["u1", "someone-new"]), age=tf.constant([30.0, 40.0]),
             gender=tf.constant(["F", "M"]), occupation=tf.constant(["writer", "?"]),
             zip_code=tf.constant(["1", "2"]))
extra = {"serving_default": {}, "serving_with_history": {"history": tf.constant([[""]] * 2)},
         "serving_with_exclusions": {"exclude": tf.constant([[""]] * 2)}}
result = {}
for twin, path in json.loads(sys.argv[1]).items():
    model = tf.saved_model.load(path)
    result[twin] = {}
    for name, inputs in extra.items():
        out = model.signatures[name](**users, **inputs)
        assert out["item_ids"].dtype == tf.string and out["scores"].dtype == tf.float32
        result[twin][name] = [[i.decode() for i in row] for row in out["item_ids"].numpy()]
print(json.dumps(result))
"""


def test_served_model_loads_in_a_fresh_process_with_only_tensorflow_and_scann(
        tiny_run, tiny_data):
    import json

    [version] = os.listdir(tiny_run.serving_dir)
    twins = {"scann": os.path.join(tiny_run.serving_dir, version),
             "exact": os.path.join(tiny_run.serving_dir + "_bruteforce", version)}
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", _SERVE_EVERY_SIGNATURE, json.dumps(twins)],
                          capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    # The tiny corpus has 80 items, fewer than the default k of 100, so the
    # served model returns all of them to a new user: the index covers the
    # whole items.csv. A known user gets every item but the ones they
    # interacted with, in either split (what they did up to now), then ""
    # padding.
    with open(os.path.join(tiny_data, "items.csv")) as f:
        item_ids = {line.split(",")[0] for line in f.read().splitlines()[1:]}
    seen = {split: {examples_io.scalar(row, "item_id")
                    for row in examples_io.read_rows(_examples_uri(tiny_run.root), split)
                    if examples_io.scalar(row, "user_id") == "u1"}
            for split in ("train", "eval")}
    assert seen["eval"] - seen["train"]  # items u1 took only in the eval period
    seen = seen["train"] | seen["eval"]
    for twin, signatures in served.items():
        for name, (known, new) in signatures.items():
            assert len(new) == 80 and set(new) == item_ids, (twin, name)
            returned = [i for i in known if i]
            assert sorted(returned) == sorted(item_ids - seen), (twin, name)
            assert known[len(returned):] == [""] * (80 - len(returned)), (twin, name)


def test_clean_data_has_no_anomalies(tiny_run):
    assert run_summary.summary(tiny_run.root)["anomalies"] == {}


def test_a_worse_model_is_neither_blessed_nor_pushed(tiny_run, tmp_path):
    """Second run on the same data with a worse model (one epoch): the
    evaluator compares it with the last blessed model and refuses it."""
    from tfx_recsys import config
    from tfx_recsys.pipeline import local_runner

    root = tmp_path / "root"
    shutil.copytree(tiny_run.root, root)
    data_dir = run_summary.data_path(run_summary.open_store(str(root)))
    before = os.listdir(root / "serving" / "retrieval")
    local_runner.run(data_dir, str(root),
                     training=config.TwoTowerConfig(epochs=1, batch_size=256, seed=7),
                     top_ks=(5, 10, 50), blessing=config.BlessingConfig(metric="recall@10"))
    result = run_summary.summary(str(root))
    evaluation = result["evaluation"]
    assert evaluation["last_blessed"] is not None
    assert evaluation["model"]["overall"]["recall@10"] < \
        evaluation["last_blessed"]["overall"]["recall@10"]
    assert evaluation["blessing"]["blessed"] is False
    assert "last blessed" in evaluation["blessing"]["reason"]
    assert result["pushed"] is False and "not blessed" in result["reason"]
    assert os.listdir(root / "serving" / "retrieval") == before


def test_runs_with_nothing_changed_reuse_the_cache_and_push_nothing_new(tiny_run, tmp_path):
    """The second run differs in one input only: the resolver now finds a
    blessed model (the first run's), so the evaluator and pusher run again,
    and the pusher sees that model is already served. The third run reuses
    every component."""
    from tfx_recsys import config, lineage
    from tfx_recsys.pipeline import local_runner

    root = tmp_path / "root"
    shutil.copytree(tiny_run.root, root)
    data_dir = run_summary.data_path(run_summary.open_store(str(root)))
    versions = os.listdir(root / "serving" / "retrieval")
    events = []
    for _ in range(2):
        events.append([])
        local_runner.run(data_dir, str(root),
                         training=config.TwoTowerConfig(epochs=5, batch_size=256),
                         top_ks=(5, 10, 50), blessing=config.BlessingConfig(metric="recall@10"),
                         progress=lambda node, event: events[-1].append((node, event)))
    store = run_summary.open_store(str(root))
    *_, second, third = lineage.runs(store)
    assert second["cached"] == len(COMPONENTS) - 2 and second["failed"] == 0
    assert third["cached"] == len(COMPONENTS) and third["failed"] == 0
    # The progress callback saw what ML Metadata recorded (the resolver, a
    # system node, runs too and is never cached).
    for run_events, run in zip(events, (second, third)):
        assert [n for n, e in run_events if e == "running"] == \
            [n for n, e in run_events if e == "finished"]
        assert {n for n, e in run_events if e == "finished"} == \
            set(COMPONENTS) | {"latest_blessed_model_resolver"}
        assert len([e for _, e in run_events if e == "cached"]) == run["cached"]
    assert ("RetrievalEvaluator", "cached") not in events[0]
    assert ("RetrievalEvaluator", "cached") in events[1]
    assert os.listdir(root / "serving" / "retrieval") == versions
    assert run_summary.summary(str(root))["reason"] == "already serving this model"


# A run with each component in a process of its own, in a fresh Python:
# prints which children it started and whether it imported TensorFlow itself.
_RUN_PER_COMPONENT = """
import json, logging, sys
from tfx_recsys import config
from tfx_recsys.pipeline import component_processes, local_runner

children, events = [], []
class Children(logging.Handler):
    def emit(self, record):
        if record.msg == component_processes.CHILD_PROCESS_MESSAGE:
            children.append(record.args[0])
logging.getLogger("absl").setLevel(logging.INFO)
logging.getLogger("absl").addHandler(Children())
local_runner.run(sys.argv[1], sys.argv[2],
                 training=config.TwoTowerConfig(epochs=5, batch_size=256),
                 top_ks=(5, 10, 50), blessing=config.BlessingConfig(metric="recall@10"),
                 enable_cache=False, process_per_component=True,
                 progress=lambda node, event: events.append([node, event]))
print(json.dumps({"children": children, "events": events,
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def test_same_data_and_seed_give_identical_metrics(tiny_run, tiny_data, tmp_path):
    """A second, uncached run from scratch reproduces every metric exactly,
    though it runs each component in a process of its own (tiny_run ran all
    in one): the mode changes where components run, not what they compute.
    The run's own process only starts them: it never imports TensorFlow."""
    import json

    temp_dir = tmp_path / "temp"  # the run's temp dir
    temp_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_PER_COMPONENT, tiny_data, str(tmp_path / "again")],
        capture_output=True, text=True, env=dict(os.environ, TMPDIR=str(temp_dir)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["children"][0] == "compile"
    assert {"InteractionsExampleGen", "ImportSchemaGen", "ExampleValidator",
            "AnomaliesGate", "Transform", "Trainer", "RankingTrainer",
            "RetrievalEvaluator", "ScannPusher"} <= set(run["children"])
    assert not run["tensorflow"]
    # Progress: each child's component running, then finished; nothing cached.
    assert [n for n, e in run["events"] if e == "running"] == run["children"][1:]
    assert [n for n, e in run["events"] if e == "finished"] == run["children"][1:]
    assert not [n for n, e in run["events"] if e == "cached"]
    # The children's temp files (TensorFlow's autograph sources...) went
    # with the run's work dir: they end with os._exit, which skips atexit.
    assert not os.listdir(temp_dir)
    first, again = (run_summary.summary(root)["evaluation"]
                    for root in (tiny_run.root, str(tmp_path / "again")))
    def metrics(evaluation):
        return {"model": evaluation["model"], "baselines": evaluation["baselines"],
                "two_stage": evaluation["ranking"]["two_stage"],
                "ranker": evaluation["ranking"]["ranker"]}

    assert json.dumps(metrics(first), sort_keys=True) == \
        json.dumps(metrics(again), sort_keys=True)


@pytest.mark.integration
def test_anomalies_stop_the_run_before_transform_with_a_readable_summary(
        tiny_data, tmp_path):
    """A schema whose gender domain allows only "M": ExampleValidator finds
    the other values, AnomaliesGate stops the run and says so in a line per
    anomaly; Transform never runs."""
    from tfx_recsys import dataset_config
    from tfx_recsys.data import schema
    from tfx_recsys.errors import DataError
    from tfx_recsys.pipeline import local_runner

    dataset = dataset_config.load(dataset_config.builtin_path("synthetic"))
    text = schema.schema_text(dataset).replace(
        'name: "gender"\n', 'name: "gender"\n  string_domain {\n    value: "M"\n  }\n', 1)
    assert "string_domain" in text
    strict = tmp_path / "strict.pbtxt"
    strict.write_text(text)
    root = tmp_path / "root"
    with pytest.raises(DataError) as raised:
        local_runner.run(tiny_data, str(root), dataset=dataset, schema=str(strict))
    message = str(raised.value)
    assert "ExampleValidator found" in message and "the run stops before training" in message
    assert "split 'train': feature 'gender'" in message
    assert str(strict) in message
    store = run_summary.open_store(str(root))
    assert not run_summary.executions_of(store, "Transform")
