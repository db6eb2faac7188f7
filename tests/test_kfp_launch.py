"""The compiled specs, run task by task as a cluster runs them (kfp_launcher).

For each target (the open-source KFP backend's `.yaml`, Vertex's `.json`),
the spec `recsys compile` writes is executed on the tiny synthetic data, one
process per task, twice against one "deployment" (the launcher's store and
cache, one serving dir):

  run 1: the spec's defaults but small epochs (runtime parameters);
  run 2: epochs, blessing metric and max_regression changed.

Run 2 must find run 1's served model as its no-regression reference (on
kubeflow through the serving dir's evaluation record, on Vertex through the
resolver tasks, which match the blessing's current_model_id to the Model's
resource name), and its changed parameters must reach the tasks; unchanged
tasks are cache hits.

The tasks run inside the image (kubeflow/Dockerfile) when `make image` has
built one from this very code (its source label matches), else in this venv
(test_the_tasks_ran_in_the_image then skips and says why). The two targets
are launched side by side, at most SLOTS task processes at a time: each
task's start (importing TensorFlow and TFX, 15-25 s) dominates on tiny data,
and one target's chain of tasks alone leaves a core idle. About 12 minutes
on two cores (the tables of every run are printed with -s).
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent import futures
from typing import Dict

import pytest

from tfx_recsys import config, dataset_config
from tfx_recsys.components.scann_pusher import publishing
from tfx_recsys.pipeline import kubeflow_runner

sys.path.insert(0, os.path.dirname(__file__))
import kfp_launcher  # noqa: E402

TARGETS = {"kubeflow": ".yaml", "vertex": ".json"}
IMAGE = os.environ.get("RECSYS_TEST_IMAGE", "localhost/tfx-recsys:latest")
FIRST = {"epochs": 1, "ranker_epochs": 1}
SECOND = {"epochs": 2, "ranker_epochs": 1, "blessing_metric": "ndcg@10",
          "max_regression": 1.0}
# Tasks of one run side by side (as a cluster runs them), and task processes
# of both targets' launches at once (two cores, about 1.4 GB each at most).
PARALLEL = 2
SLOTS = 3
RESOLVER = "latest_blessed_model_resolver"
# The tasks run 2 re-executes: what its changed parameters feed, and what
# runs every time. The rest are cache hits.
RERUN = {"kubeflow": {kubeflow_runner.FINGERPRINT_TASK, "Trainer", "RefitTrainer",
                      "RetrievalEvaluator", "ScannPusher"},
         "vertex": {"Trainer", "RefitTrainer", "RetrievalEvaluator", "ScannPusher",
                    f"{RESOLVER}-model-blessing-resolver", f"{RESOLVER}-model-resolver"}}


@dataclasses.dataclass
class Launched:
    target: str
    spec_path: str
    serving_dir: str
    where: str  # "image ..." or "venv (why)"
    first: kfp_launcher.RunResult
    second: kfp_launcher.RunResult


def _image_state() -> str:
    """"" when IMAGE is built from this code, else why the venv is used."""
    if shutil.which("podman") is None:
        return "no podman here"
    label = subprocess.run(
        ["podman", "image", "inspect", "--format",
         "{{ index .Labels \"%s\" }}" % kubeflow_runner.SOURCE_LABEL, IMAGE],
        capture_output=True, text=True)
    if label.returncode != 0:
        return f"no image {IMAGE} (make image builds it)"
    if label.stdout.strip() != kubeflow_runner.image_source_fingerprint():
        return f"{IMAGE} was built from other code (make image rebuilds it)"
    return ""


def _compile(target: str, base, tiny_data: str, in_image: bool):
    """(spec path, serving dir) of `target`'s spec for the tiny data."""
    dataset = dataset_config.load(dataset_config.builtin_path("synthetic"))
    serving_dir = str(base / "serving" / config.MODEL_NAME)
    spec_path = kubeflow_runner.compile_pipeline(
        str(base / f"spec{TARGETS[target]}"), image=IMAGE,
        pipeline_root=str(base / "pipeline"), data_path=tiny_data,
        serving_dir=serving_dir, target=target, dataset=dataset,
        schema_path=(kubeflow_runner.image_schema_path(dataset.name) if in_image
                     else os.path.join(config.SCHEMA_DIR, f"{dataset.name}.pbtxt")),
        training=config.TwoTowerConfig(epochs=3, batch_size=256),
        top_ks=(5, 10, 50),
        # An 80-item corpus: the gate cannot ask to beat the baselines.
        blessing=config.BlessingConfig(metric="recall@10", beat_baselines=()))
    return spec_path, serving_dir


@pytest.fixture(scope="module")
def launches(tiny_data, tmp_path_factory) -> Dict[str, Launched]:
    """Both targets, each run twice (FIRST, SECOND), launched side by side."""
    why_not_image = _image_state()
    in_image = not why_not_image
    where = f"image {IMAGE}" if in_image else f"venv ({why_not_image})"
    slots = threading.BoundedSemaphore(SLOTS)
    launchers = {}
    for target in TARGETS:  # compiling imports TFX: one at a time, here
        base = tmp_path_factory.mktemp(f"kfp_{target}")
        spec_path, serving_dir = _compile(target, base, tiny_data, in_image)
        launchers[target] = (spec_path, serving_dir, kfp_launcher.Launcher(
            spec_path, str(base / "launcher"), image=IMAGE if in_image else None,
            mounts=[tiny_data, str(base)], parallel=PARALLEL, slots=slots))

    def twice(target):
        return [launchers[target][2].run(parameters) for parameters in (FIRST, SECOND)]

    with futures.ThreadPoolExecutor(len(TARGETS)) as pool:
        runs = {target: pool.submit(twice, target) for target in TARGETS}
        runs = {target: future.result() for target, future in runs.items()}
    for target, (first, second) in runs.items():
        for run, parameters in ((first, FIRST), (second, SECOND)):
            print(f"\n{target} {run.run_id} {parameters} ({where})\n{run.table()}")
    return {target: Launched(target, launchers[target][0], launchers[target][1], where,
                             *runs[target]) for target in TARGETS}


@pytest.fixture(params=list(TARGETS))
def launched(request, launches) -> Launched:
    return launches[request.param]


def _input(task: kfp_launcher.TaskResult) -> dict:
    return task.executor_input["inputs"]


def _metrics(task: kfp_launcher.TaskResult) -> dict:
    [evaluation] = task.outputs["evaluation"]
    with open(os.path.join(evaluation["uri"], "metrics.json")) as f:
        return json.load(f)


def test_every_task_runs_and_a_version_is_published(launched):
    first = launched.first.tasks
    spec, _, _ = kfp_launcher.load_spec(launched.spec_path)
    assert set(first) == set(spec["root"]["dag"]["tasks"])
    resolvers = {n for n in first if n.startswith(RESOLVER)}
    assert {t.state for n, t in first.items() if n not in resolvers} == {"SUCCEEDED"}
    # Nothing blessed yet: the resolvers find nothing, and there is no reference.
    assert {first[n].state for n in resolvers} <= {"SKIPPED"}
    assert _metrics(first["RetrievalEvaluator"])["last_blessed"] is None
    [pushed] = first["ScannPusher"].outputs["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1
    version = int(pushed["metadata"]["pushed_version"])
    # The three outputs of a push, each with the version.
    for model_dir in publishing.sibling_dirs(launched.serving_dir).values():
        assert version in publishing.versions(model_dir)
    assert os.path.exists(os.path.join(launched.serving_dir, str(version), "saved_model.pb"))


def test_the_second_run_compares_with_the_model_the_first_run_served(launched):
    from tfx_recsys import served_evaluation

    first, second = launched.first.tasks, launched.second.tasks
    [first_model] = first["Trainer"].outputs["model"]
    reference = _metrics(second["RetrievalEvaluator"])["last_blessed"]
    assert reference is not None and reference["overall"]["ndcg@10"] >= 0
    first_version = int(first["ScannPusher"].outputs["pushed_model"][0]["metadata"]
                        ["pushed_version"])
    if launched.target == "kubeflow":
        # The evaluation record the pusher kept with the served version names
        # the model run 1 evaluated; run 2 scored it again on its users.
        assert reference["served_version"] == first_version
        assert reference["source"] == "scored"
        assert reference["uri"].startswith(first_model["uri"])
        assert "baseline_model" not in _input(second["RetrievalEvaluator"])["artifacts"]
    else:
        # Vertex: the blessing names the Model by its resource name, which
        # the resolver's query matches (not TFX's hash of it).
        [blessing] = first["RetrievalEvaluator"].outputs["blessing"]
        assert blessing["metadata"]["current_model_id"] == first_model["name"]
        [baseline] = _input(second["RetrievalEvaluator"])["artifacts"]["baseline_model"][
            "artifacts"]
        assert baseline["name"] == first_model["name"]
        assert reference["uri"] == first_model["uri"]
    # Run 2 was blessed and pushed too: its record is the one served now.
    served = served_evaluation.newest_served(launched.serving_dir)
    assert served.version > first_version and served.record.metric == "ndcg@10"
    [second_model] = second["Trainer"].outputs["model"]
    assert served.record.model_path.startswith(second_model["uri"])


def test_changed_runtime_parameters_reach_the_tasks(launched):
    for run, parameters in ((launched.first, FIRST), (launched.second, SECOND)):
        epochs = parameters["epochs"]
        for trainer in ("Trainer", "RefitTrainer"):
            task = run.tasks[trainer]
            assert _input(task)["parameterValues"]["epochs"] == epochs
            with open(os.path.join(task.task_dir, f"{trainer}.log")) as f:
                log = f.read()
            # Keras trained that many epochs (one summary line each).
            assert len(re.findall(r" - \S+/epoch - ", log)) == epochs, trainer
        gate = _metrics(run.tasks["RetrievalEvaluator"])["blessing"]["gate"]
        assert gate["metric"] == parameters.get("blessing_metric", "recall@10")
        assert gate["max_regression"] == parameters.get("max_regression", 0.0)


def test_the_second_run_reruns_only_what_changed(launched):
    second = launched.second.tasks
    rerun = {n for n, t in second.items() if t.state == "SUCCEEDED"}
    assert rerun == RERUN[launched.target]
    assert {t.state for n, t in second.items() if n not in rerun} == {"CACHED"}
    if launched.target == "vertex":  # the driver ran before the cache check
        assert second["InteractionsExampleGen"].seconds > 0


def test_changed_data_changes_example_gens_input(launched, tiny_data, tmp_path):
    """The fingerprint the pipeline hands ExampleGen (the DataFingerprint
    task's on kubeflow, the driver's on Vertex) is what TFX's input
    processor computes; a changed file changes it, and with it ExampleGen's
    cache key."""
    from tfx_recsys.pipeline import data_fingerprint

    example_gen = launched.first.tasks["InteractionsExampleGen"]
    values = _input(example_gen)["parameterValues"]
    assert values["input_fingerprint"] == data_fingerprint.fingerprint(
        tiny_data, values["input_config"])["input_fingerprint"]
    changed = tmp_path / "data"
    shutil.copytree(tiny_data, changed)  # the same names, sizes and times
    assert data_fingerprint.fingerprint(str(changed), values["input_config"]) == \
        data_fingerprint.fingerprint(tiny_data, values["input_config"])
    with open(changed / "interactions.csv", "a") as f:
        f.write("u1,i1,4,1\n")
    assert data_fingerprint.fingerprint(str(changed), values["input_config"])[
        "input_fingerprint"] != values["input_fingerprint"]


def test_the_tasks_ran_in_the_image(launched):
    if not launched.where.startswith("image"):
        pytest.skip(f"tasks ran in the {launched.where}")
    # ImportSchemaGen read the schema the image holds, which is not on this host.
    task = launched.first.tasks["ImportSchemaGen"]
    schema = _input(task)["parameterValues"]["schema_file"]
    assert schema == kubeflow_runner.image_schema_path("synthetic")
    assert task.state == "SUCCEEDED" and not os.path.exists(schema)
