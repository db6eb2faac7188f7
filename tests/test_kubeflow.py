"""The pipeline compiled for Kubeflow Pipelines, checked offline.

No cluster, no Docker, no mocks: the spec KubeflowV2DagRunner writes is parsed
into kfp's own PipelineSpec proto (and loaded with kfp's own loader), and every
Python path it names is imported from the installed package.
"""

import argparse
import importlib
import json
import os
import re
import socket

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tfx_recsys import config, kubeflow_commands
from tfx_recsys.pipeline import kubeflow_runner

IMAGE = "registry.example.com/ml/tfx-recsys:1.2.3"
PIPELINE_ROOT = "gs://test-bucket/tfx-recsys/pipeline"
DATA_PATH = "/mnt/data/movielens"
SERVING_DIR = "/mnt/serving/retrieval"
BEAM_ARGS = ["--runner=FnApiRunner", "--direct_num_workers=2"]
EPOCHS = 3
BLESSING = config.BlessingConfig(metric="ndcg@50", min_value=0.25,
                                 beat_baselines=("most_popular", "ease"),
                                 max_regression=0.01)

# The TFX v2 container entry points the spec must call.
EXECUTOR_ENTRYPOINT = ["python", "-m",
                       "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
EXAMPLE_GEN_DRIVER = ["python", "-m",
                      "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"]
RESOLVER_ID = "latest_blessed_model_resolver"
# KubeflowV2DagRunner turns the latest-blessed-model resolver into two
# resolver tasks (blessing query, then the model it names): Vertex only.
RESOLVER_TASKS = {f"{RESOLVER_ID}-model-blessing-resolver",
                  f"{RESOLVER_ID}-model-resolver"}
# The open-source backend's stand-in for the ExampleGen driver hook.
FINGERPRINT = kubeflow_runner.FINGERPRINT_TASK


def _load(path: str):
    """The pipeline spec of a compiled .yaml (and its platform spec, if any)."""
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    specs = [d for d in documents if "pipelineInfo" in d]
    platforms = [d for d in documents if "platforms" in d]
    assert len(specs) == 1 and len(specs) + len(platforms) == len(documents)
    # Strict parse: an unknown field or wrong type fails here.
    spec = json_format.ParseDict(specs[0], pipeline_spec_pb2.PipelineSpec())
    for platform in platforms:
        json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    return spec


def _resolve(dotted: str):
    """Imports the longest module prefix of `dotted`, then getattr the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name) and (
                    e.name == module_name or module_name.startswith(e.name + ".")):
                continue  # not a module: the rest is attributes
            raise
        for attribute in parts[i:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def _tfx_pipeline(regression_baseline="served"):
    """The same create_pipeline() the runner compiles for a target (nothing
    is run): "served" for kubeflow, "resolver" for vertex."""
    from tfx_recsys.pipeline.pipeline import create_pipeline

    from tfx_recsys import dataset_config

    dataset = dataset_config.load(dataset_config.builtin_path("movielens-100k"))
    return create_pipeline(pipeline_name=config.PIPELINE_NAME,
                           pipeline_root=PIPELINE_ROOT, data_path=DATA_PATH,
                           dataset=dataset.to_dict(),
                           schema_path=kubeflow_runner.image_schema_path(dataset.name),
                           serving_dir=SERVING_DIR,
                           regression_baseline=regression_baseline)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> str:
    output = tmp_path_factory.mktemp("kfp") / "tfx-recsys.yaml"
    path = kubeflow_runner.compile_pipeline(
        str(output), image=IMAGE, pipeline_root=PIPELINE_ROOT,
        data_path=DATA_PATH, serving_dir=SERVING_DIR, target="kubeflow",
        beam_pipeline_args=BEAM_ARGS,
        training=config.TwoTowerConfig(epochs=EPOCHS), blessing=BLESSING)
    assert path == str(output)
    return path


@pytest.fixture(scope="module")
def spec(spec_path) -> pipeline_spec_pb2.PipelineSpec:
    return _load(spec_path)


def _containers(spec, executors_only=True):
    """Container specs by executor label; with `executors_only`, those that
    run a TFX executor (all but DataFingerprint's)."""
    executors = spec.deployment_spec["executors"]
    return {label: executors[label]["container"]
            for label in executors if "container" in executors[label]
            and not (executors_only and label == f"{FINGERPRINT}_executor")}


def test_tasks_are_exactly_the_pipeline_components(spec):
    ids = {component.id for component in _tfx_pipeline().components}
    assert RESOLVER_ID not in ids  # no resolver for the open-source backend
    expected = ids | {FINGERPRINT}
    assert set(spec.root.dag.tasks) == expected
    assert expected == {
        FINGERPRINT, "InteractionsExampleGen", "StatisticsGen", "ImportSchemaGen",
        "ExampleValidator", "AnomaliesGate", "Transform", "Trainer",
        "RankingTrainer", "RetrievalEvaluator", "RefitTransform", "RefitTrainer",
        "RefitRankingTrainer", "ScannPusher"}
    # Anomalies stop the run before Transform, on the cluster too.
    assert "AnomaliesGate" in spec.root.dag.tasks["Transform"].dependent_tasks
    # Every task has its component and a container executor.
    executors = spec.deployment_spec["executors"]
    for name, task in spec.root.dag.tasks.items():
        label = spec.components[task.component_ref.name].executor_label
        assert set(executors[label]) == {"container"}, name


def _open_source_backend_violations(spec) -> list:
    """The open-source KFP v2 backend's rules, applied here independently of
    kubeflow_runner (backend/src/v2/compiler: only container and importer
    executors; no lifecycle hooks are run): what it would refuse."""
    violations = []
    for label, executor in json_format.MessageToDict(spec.deployment_spec)[
            "executors"].items():
        violations += [f"{label}: {kind}" for kind in executor
                       if kind not in ("container", "importer")]
        if "lifecycle" in executor.get("container", {}):
            violations.append(f"{label}: lifecycle")
    return violations


def test_the_kubeflow_spec_keeps_the_open_source_backends_rules(spec, spec_path, tmp_path):
    assert _open_source_backend_violations(spec) == []
    with open(spec_path) as f:
        [document] = [d for d in yaml.safe_load_all(f) if d]
    assert kubeflow_runner.open_source_backend_problems(document) == []
    # The Vertex spec breaks exactly those rules, and the check says so.
    job = kubeflow_runner.compile_pipeline(
        str(tmp_path / "job.json"), image=IMAGE, pipeline_root=PIPELINE_ROOT,
        data_path=DATA_PATH, serving_dir=SERVING_DIR, target="vertex")
    with open(job) as f:
        vertex = json.load(f)["pipelineSpec"]
    vertex_spec = json_format.ParseDict(vertex, pipeline_spec_pb2.PipelineSpec())
    assert sorted(_open_source_backend_violations(vertex_spec)) == sorted(
        [f"{task}_executor: resolver" for task in RESOLVER_TASKS]
        + ["InteractionsExampleGen_executor: lifecycle"])
    problems = kubeflow_runner.open_source_backend_problems(vertex)
    assert len(problems) == 3 and all(
        "resolver executor" in p or "lifecycle hook(s) preCacheCheck" in p
        for p in problems), problems


def test_every_container_runs_the_image_and_tfx_entry_points(spec):
    containers = _containers(spec)
    assert len(containers) == len(spec.root.dag.tasks) - 1
    for label, container in containers.items():
        assert container["image"] == IMAGE, label
        assert list(container["command"]) == EXECUTOR_ENTRYPOINT, label
        args = list(container["args"])
        assert args[:2] == ["--executor_class_path", args[1]], label
        assert args[-len(BEAM_ARGS):] == BEAM_ARGS, label
        assert "lifecycle" not in container, label


def test_data_fingerprint_task_stands_in_for_the_example_gen_driver(spec):
    """Never cached, it reads ExampleGen's own input parameters and hands
    the fingerprint to ExampleGen, whose cache key it becomes part of."""
    tasks = spec.root.dag.tasks
    fingerprint, example_gen = tasks[FINGERPRINT], tasks["InteractionsExampleGen"]
    assert not fingerprint.caching_options.enable_cache
    assert example_gen.caching_options.enable_cache
    for name in ("input_base", "input_config"):
        assert fingerprint.inputs.parameters[name] == example_gen.inputs.parameters[name]
    assert fingerprint.inputs.parameters["input_base"].component_input_parameter \
        == "data_path"
    source = example_gen.inputs.parameters["input_fingerprint"].task_output_parameter
    assert (source.producer_task, source.output_parameter_key) == (
        FINGERPRINT, "input_fingerprint")
    assert FINGERPRINT in example_gen.dependent_tasks
    component = spec.components[example_gen.component_ref.name]
    assert component.input_definitions.parameters["input_fingerprint"].parameter_type \
        == STRING
    produced = spec.components[fingerprint.component_ref.name].output_definitions
    assert produced.parameters["input_fingerprint"].parameter_type == STRING
    # TFX's entry point types execution properties by its copy of the inputs spec.
    container = _containers(spec)["InteractionsExampleGen_executor"]
    args = list(container["args"])
    inputs_spec = json.loads(args[args.index("--json_serialized_inputs_spec_args") + 1])
    assert inputs_spec["parameters"]["input_fingerprint"] == {"parameterType": "STRING"}
    runner = _containers(spec, executors_only=False)[f"{FINGERPRINT}_executor"]
    assert runner["image"] == IMAGE
    assert list(runner["command"]) == kubeflow_runner.FINGERPRINT_COMMAND
    assert list(runner["args"]) == ["--json_serialized_invocation_args", "{{$}}"]


def test_the_regression_gate_reads_the_served_model_on_kubeflow(spec):
    evaluator = spec.root.dag.tasks["RetrievalEvaluator"]
    assert "baseline_model" not in evaluator.inputs.artifacts
    assert evaluator.inputs.parameters["serving_dir"].component_input_parameter \
        == "serving_dir"


def test_every_python_path_in_the_spec_imports(spec, spec_path):
    from tfx_recsys.components.interactions_example_gen.component import (
        InteractionsExampleGen)
    from tfx_recsys.components.retrieval_evaluator.component import RetrievalEvaluator
    from tfx_recsys.components.scann_pusher.component import ScannPusher

    containers = _containers(spec)
    executor_paths = {label: list(c["args"])[1] for label, c in containers.items()}
    from tfx_recsys.components.trainer_with_epochs.component import Trainer

    for component in (InteractionsExampleGen, RetrievalEvaluator, ScannPusher):
        label = f"{component.__name__}_executor"
        assert _resolve(executor_paths[label]) is component.EXECUTOR_SPEC.executor_class
    # Every Trainer runs the executor that applies the epochs property.
    for label in ("Trainer_executor", "RankingTrainer_executor", "RefitTrainer_executor",
                  "RefitRankingTrainer_executor"):
        assert _resolve(executor_paths[label]) is Trainer.EXECUTOR_SPEC.executor_class
    for path in executor_paths.values():
        assert isinstance(_resolve(path), type), path

    # Entry-point modules, run with `python -m`, and their main().
    for command in (EXECUTOR_ENTRYPOINT, EXAMPLE_GEN_DRIVER,
                    kubeflow_runner.FINGERPRINT_COMMAND):
        assert callable(importlib.import_module(command[2]).main)

    # The model code, by dotted path in the task parameters.
    tasks = spec.root.dag.tasks
    preprocessing = tasks["Transform"].inputs.parameters["preprocessing_fn"]
    run_fn = tasks["Trainer"].inputs.parameters["run_fn"]
    assert preprocessing.runtime_value.constant.string_value == config.PREPROCESSING_FN
    assert run_fn.runtime_value.constant.string_value == config.TWO_TOWER_RUN_FN
    assert callable(_resolve(config.PREPROCESSING_FN))
    assert callable(_resolve(config.TWO_TOWER_RUN_FN))

    # Anything else in the file that looks like a tfx / tfx_recsys module path
    # (artifact type titles such as tfx.Examples are not module paths).
    with open(spec_path) as f:
        text = f.read()
    dotted = set(re.findall(r"(?<![\w.])tfx(?:_recsys)?(?:\.[a-z_]\w*)+(?:\.[A-Za-z_]\w*)*",
                            text))
    assert {config.PREPROCESSING_FN, config.TWO_TOWER_RUN_FN,
            *executor_paths.values()} <= dotted
    for path in dotted:
        _resolve(path)

    # The component classes themselves live in importable modules (not
    # __main__), so a spec built elsewhere names the same code.
    for component in _tfx_pipeline().components:
        cls = type(component)
        assert getattr(importlib.import_module(cls.__module__), cls.__name__) is cls


def test_the_image_build_imports_every_module_the_spec_runs(spec):
    """kubeflow/Dockerfile fails its build unless these import: it must name
    every executor and model module the spec points at."""
    with open(os.path.join(config.REPO_ROOT, "kubeflow", "Dockerfile")) as f:
        checked = set(re.findall(r"'([\w.]+)'", f.read()))
    needed = {list(c["args"])[1].rsplit(".", 1)[0] for c in _containers(spec).values()}
    needed.add(kubeflow_runner.FINGERPRINT_COMMAND[2])
    tasks = spec.root.dag.tasks
    for task, parameter in (("Transform", "preprocessing_fn"), ("Trainer", "run_fn"),
                            ("RankingTrainer", "run_fn")):
        value = tasks[task].inputs.parameters[parameter].runtime_value.constant.string_value
        needed.add(value.rsplit(".", 1)[0])
    needed = {m for m in needed if m.startswith("tfx_recsys")}
    assert needed and needed <= checked, sorted(needed - checked)


STRING = pipeline_spec_pb2.ParameterType.STRING
DOUBLE = pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
INT = pipeline_spec_pb2.ParameterType.NUMBER_INTEGER
RANKER_EPOCHS = config.NcfConfig().epochs  # compile_pipeline's default ranking
# Runtime parameter -> (type, task, the task's input parameter it replaces).
WIRING = {
    "data_path": (STRING, "InteractionsExampleGen", "input_base"),
    "serving_dir": (STRING, "ScannPusher", "serving_dir"),
    "trainer_custom_config": (STRING, "Trainer", "custom_config"),
    "epochs": (INT, "Trainer", "epochs"),
    "ranker_epochs": (INT, "RankingTrainer", "epochs"),
    "blessing_metric": (STRING, "RetrievalEvaluator", "blessing_metric"),
    "blessing_min_value": (DOUBLE, "RetrievalEvaluator", "blessing_min_value"),
    "max_regression": (DOUBLE, "RetrievalEvaluator", "max_regression"),
}


def _default_trainer_config(spec) -> dict:
    declared = spec.root.input_definitions.parameters
    return json.loads(declared["trainer_custom_config"].default_value.string_value)


def test_runtime_parameters_are_pipeline_inputs_with_defaults(spec, spec_path):
    declared = spec.root.input_definitions.parameters
    assert set(declared) == set(kubeflow_runner.RUNTIME_PARAMETERS) == set(WIRING)
    defaults = {name: json_format.MessageToDict(p.default_value)
                for name, p in declared.items()}
    trainer_config = defaults.pop("trainer_custom_config")
    assert defaults == {"data_path": DATA_PATH, "serving_dir": SERVING_DIR,
                        "epochs": EPOCHS, "ranker_epochs": RANKER_EPOCHS,
                        "blessing_metric": "ndcg@50", "blessing_min_value": 0.25,
                        "max_regression": 0.01}
    # The epochs default is the one in the custom_config it replaces.
    assert json.loads(trainer_config)["epochs"] == EPOCHS
    assert all(p.is_optional and p.description for p in declared.values())
    assert spec.default_pipeline_root == PIPELINE_ROOT

    # Each is wired into the task input it replaces, declared with its type
    # by the task's component too.
    tasks = spec.root.dag.tasks
    for name, (kind, task, parameter) in WIRING.items():
        assert declared[name].parameter_type == kind, name
        assert (tasks[task].inputs.parameters[parameter].component_input_parameter
                == name), name
        component = spec.components[tasks[task].component_ref.name]
        assert component.input_definitions.parameters[parameter].parameter_type == kind
    # The final fit trains with the same settings: its Trainers read the same
    # parameters; the data fingerprint reads the data, the evaluator the
    # served model. No other task reads them.
    also = (("trainer_custom_config", "RefitTrainer", "custom_config"),
            ("epochs", "RefitTrainer", "epochs"),
            ("ranker_epochs", "RefitRankingTrainer", "epochs"),
            ("data_path", FINGERPRINT, "input_base"),
            ("serving_dir", "RetrievalEvaluator", "serving_dir"))
    for name, task, parameter in also:
        assert tasks[task].inputs.parameters[parameter].component_input_parameter == name
    readers = {(task, parameter) for task, t in tasks.items()
               for parameter, p in t.inputs.parameters.items()
               if p.component_input_parameter}
    assert readers == {(task, parameter) for _, task, parameter in WIRING.values()} | {
        (task, parameter) for _, task, parameter in also}

    # kfp's own loader sees them, with their defaults.
    from kfp import components

    loaded = components.load_component_from_file(spec_path)
    assert {name: spec_.default for name, spec_ in loaded.component_spec.inputs.items()} \
        == {"data_path": DATA_PATH, "serving_dir": SERVING_DIR,
            "trainer_custom_config": trainer_config, "epochs": EPOCHS,
            "ranker_epochs": RANKER_EPOCHS, "blessing_metric": "ndcg@50",
            "blessing_min_value": 0.25, "max_regression": 0.01}

    # What is not a runtime parameter is fixed at compile time.
    gate = json.loads(tasks["RetrievalEvaluator"].inputs.parameters["blessing_config"]
                      .runtime_value.constant.string_value)
    assert gate == {"beat_baselines": ["most_popular", "ease"]}
    schema = tasks["ImportSchemaGen"].inputs.parameters["schema_file"]
    assert schema.runtime_value.constant.string_value == \
        kubeflow_runner.image_schema_path("movielens-100k")


def test_trainer_config_default_is_what_the_trainer_gets_without_parameters(spec):
    """The default is the very custom_config a pipeline without runtime
    parameters (a local run) hands the Trainer: dataset, fingerprint, epochs."""
    from tfx_recsys import dataset_config
    from tfx_recsys.fingerprint import code_fingerprint
    from tfx_recsys.pipeline.pipeline import create_pipeline

    dataset = dataset_config.load(dataset_config.builtin_path("movielens-100k"))
    local = create_pipeline(
        pipeline_name=config.PIPELINE_NAME, pipeline_root=PIPELINE_ROOT,
        data_path=DATA_PATH, dataset=dataset.to_dict(), schema_path="schema.pbtxt",
        serving_dir=SERVING_DIR,
        training=config.TwoTowerConfig(epochs=EPOCHS).to_custom_config(),
        code_fingerprint=code_fingerprint())
    [trainer] = [c for c in local.components if c.id == "Trainer"]
    declared = spec.root.input_definitions.parameters
    assert (declared["trainer_custom_config"].default_value.string_value
            == trainer.exec_properties["custom_config"])
    custom = _default_trainer_config(spec)
    assert custom["dataset"] == dataset.to_dict() and custom["code_fingerprint"]
    assert config.TwoTowerConfig.from_custom_config(custom) == \
        config.TwoTowerConfig(epochs=EPOCHS)


def test_ranker_epochs_follows_the_ranking_stage(tmp_path):
    """Its default is `ranking`'s epochs; without a ranking stage it is not
    declared (no RankingTrainer would read it)."""
    ranked = _load(kubeflow_runner.compile_pipeline(
        str(tmp_path / "ranked.yaml"), ranking=config.NcfConfig(epochs=4)))
    declared = ranked.root.input_definitions.parameters
    assert declared["ranker_epochs"].default_value.number_value == 4
    assert declared["ranker_epochs"].parameter_type == INT
    # Only its epochs: the rest of the ranker's custom_config is the config's.
    ranker_config = json.loads(ranked.root.dag.tasks["RankingTrainer"].inputs
                               .parameters["custom_config"].runtime_value.constant
                               .string_value)
    assert config.NcfConfig.from_custom_config(ranker_config) == config.NcfConfig(epochs=4)

    plain = _load(kubeflow_runner.compile_pipeline(
        str(tmp_path / "plain.yaml"), ranking_run_fn=None))
    assert "RankingTrainer" not in plain.root.dag.tasks
    assert set(plain.root.input_definitions.parameters) == \
        set(kubeflow_runner.RUNTIME_PARAMETERS) - {"ranker_epochs"}


def test_create_pipeline_takes_runtime_parameters_only_for_known_settings():
    from tfx.orchestration import data_types

    from tfx_recsys.pipeline import pipeline

    arguments = dict(pipeline_name="p", pipeline_root=PIPELINE_ROOT, data_path=DATA_PATH,
                     dataset={}, schema_path="s", serving_dir=SERVING_DIR)
    rate = data_types.RuntimeParameter(name="learning_rate", ptype=float, default=0.1)
    with pytest.raises(ValueError, match="'learning_rate'.*trainer_custom_config"):
        pipeline.create_pipeline(**arguments, runtime_parameters={"learning_rate": rate})
    as_int = data_types.RuntimeParameter(name="max_regression", ptype=int, default=0)
    with pytest.raises(TypeError, match="max_regression.*ptype float"):
        pipeline.create_pipeline(**arguments, runtime_parameters={"max_regression": as_int})
    as_float = data_types.RuntimeParameter(name="epochs", ptype=float, default=3.0)
    with pytest.raises(TypeError, match="epochs.*ptype int"):
        pipeline.create_pipeline(**arguments, runtime_parameters={"epochs": as_float})
    ranker_epochs = data_types.RuntimeParameter(name="ranker_epochs", ptype=int, default=3)
    with pytest.raises(ValueError, match="ranker_epochs needs the ranking stage"):
        pipeline.create_pipeline(**arguments, ranking_run_fn=None,
                                 runtime_parameters={"ranker_epochs": ranker_epochs})


def test_submit_checks_parameters_against_the_spec(spec, spec_path):
    assert kubeflow_runner.typed_params(spec_path, {"data_path": "/x"}) == {"data_path": "/x"}
    # Strings (from --param) become the declared numbers.
    assert kubeflow_runner.typed_params(
        spec_path, {"blessing_min_value": "0.3", "max_regression": "0",
                    "blessing_metric": "recall@50"}) == {
        "blessing_min_value": 0.3, "max_regression": 0.0, "blessing_metric": "recall@50"}
    with pytest.raises(ValueError, match="blessing_min_value is NUMBER_DOUBLE"):
        kubeflow_runner.typed_params(spec_path, {"blessing_min_value": "high"})
    # epochs travels inside trainer_custom_config: the default, changed.
    with pytest.raises(ValueError, match="unknown runtime parameter.*learning_rate"):
        kubeflow_runner.submit("http://127.0.0.1:1", spec_path,
                               params={"learning_rate": "0.1"})
    # epochs and ranker_epochs are ints of their own, checked before submitting.
    assert kubeflow_runner.typed_params(spec_path, {"epochs": "5", "ranker_epochs": 2}) \
        == {"epochs": 5, "ranker_epochs": 2}
    with pytest.raises(ValueError, match="epochs is NUMBER_INTEGER, got '2.5'"):
        kubeflow_runner.typed_params(spec_path, {"epochs": "2.5"})
    with pytest.raises(ValueError, match="runtime parameter ranker_epochs must be an "
                                         "int >= 1.*got 0"):
        kubeflow_runner.typed_params(spec_path, {"ranker_epochs": "0"})
    # Other hyperparameters still travel in trainer_custom_config.
    custom = json.dumps({**_default_trainer_config(spec), "learning_rate": 0.01})
    assert kubeflow_runner.typed_params(spec_path, {"trainer_custom_config": custom}) \
        == {"trainer_custom_config": custom}
    # Its epochs is replaced by the epochs parameter: a different value there
    # would be ignored, so it is refused unless epochs says the same.
    custom = json.dumps({**_default_trainer_config(spec), "epochs": 7})
    with pytest.raises(ValueError, match=r"epochs 7, but the epochs runtime parameter "
                                         rf"\({EPOCHS}\) replaces it: set epochs=7"):
        kubeflow_runner.typed_params(spec_path, {"trainer_custom_config": custom})
    assert kubeflow_runner.typed_params(
        spec_path, {"trainer_custom_config": custom, "epochs": "7"}) == {
        "trainer_custom_config": custom, "epochs": 7}
    with pytest.raises(ValueError, match="lacks dataset, code_fingerprint"):
        kubeflow_runner.typed_params(spec_path, {"trainer_custom_config": '{"epochs": 7}'})
    with pytest.raises(ValueError, match="must be a JSON object"):
        kubeflow_runner.typed_params(spec_path, {"trainer_custom_config": "epochs=7"})
    with pytest.raises(ValueError, match=r"\.yaml"):
        kubeflow_runner.submit("http://127.0.0.1:1", spec_path[:-5] + ".json")


def _parser():
    parser = argparse.ArgumentParser(prog="recsys")
    kubeflow_commands.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_submit_command_without_a_cluster_fails_in_one_line(spec_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _parser().parse_args(["submit", "--host", f"http://127.0.0.1:{port}",
                                 "--spec", spec_path, "--param", f"data_path={DATA_PATH}"])
    assert args.param == [("data_path", DATA_PATH)]
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("recsys: error: cannot reach Kubeflow Pipelines at ")
    assert err.count("\n") == 1


def test_vertex_json_is_a_pipeline_job_with_the_resolver_and_driver(tmp_path):
    path = kubeflow_runner.compile_pipeline(
        str(tmp_path / "job.json"), image=IMAGE, pipeline_root=PIPELINE_ROOT,
        data_path=DATA_PATH, serving_dir=SERVING_DIR, target="vertex")
    with open(path) as f:
        job = json.load(f)
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
    assert set(spec.root.input_definitions.parameters) == set(
        kubeflow_runner.RUNTIME_PARAMETERS)
    assert {c["image"] for c in _containers(spec).values()} == {IMAGE}
    # TFX's pipeline as it compiles it: the resolver's two tasks and the
    # ExampleGen driver hook (span, version, fingerprint), run by Vertex.
    ids = {c.id for c in _tfx_pipeline("resolver").components}
    assert RESOLVER_ID in ids
    assert set(spec.root.dag.tasks) == (ids - {RESOLVER_ID}) | RESOLVER_TASKS
    executors = spec.deployment_spec["executors"]
    blessing_query = executors[f"{RESOLVER_ID}-model-blessing-resolver_executor"]
    assert "metadata.blessed.number_value=1" in json.dumps(
        json_format.MessageToDict(blessing_query["resolver"]))
    # The model query matches the blessing's current_model_id to a Model's
    # resource name, which the entry point writes for Evaluator subclasses.
    model_query = executors[f"{RESOLVER_ID}-model-resolver_executor"]
    assert "name=\"{{$.inputs.artifacts['input'].metadata['current_model_id']}}\"" in \
        json.dumps(json_format.MessageToDict(model_query["resolver"])).replace('\\"', '"')
    from tfx.components.evaluator import executor as tfx_evaluator

    from tfx_recsys.components.retrieval_evaluator import executor as evaluator
    assert issubclass(evaluator.Executor, tfx_evaluator.Executor)
    evaluator_task = spec.root.dag.tasks["RetrievalEvaluator"]
    assert evaluator_task.inputs.artifacts["baseline_model"].task_output_artifact \
        .producer_task == f"{RESOLVER_ID}-model-resolver"
    assert "serving_dir" not in evaluator_task.inputs.parameters
    driver = _containers(spec)["InteractionsExampleGen_executor"]["lifecycle"]["preCacheCheck"]
    assert list(driver["command"]) == EXAMPLE_GEN_DRIVER
    assert FINGERPRINT not in spec.root.dag.tasks


def test_target_and_extension_must_agree(tmp_path):
    with pytest.raises(ValueError, match="yaml"):
        kubeflow_runner.compile_pipeline(str(tmp_path / "p.json"), target="kubeflow")
    with pytest.raises(ValueError, match="json"):
        kubeflow_runner.compile_pipeline(str(tmp_path / "p.yaml"), target="vertex")
    with pytest.raises(ValueError, match="target"):
        kubeflow_runner.compile_pipeline(str(tmp_path / "p.yaml"), target="argo")


def test_compile_command_writes_the_spec(tmp_path, capsys):
    output = tmp_path / "out" / "pipeline.yaml"
    args = _parser().parse_args(
        ["compile", "--target", "kubeflow", "--image", IMAGE, "--output", str(output),
         "--pipeline-root", PIPELINE_ROOT, "--data", DATA_PATH,
         "--serving-dir", SERVING_DIR, "--beam-arg=--runner=FnApiRunner",
         "--beam-arg=--direct_num_workers=2"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"{output}\n"
    spec = _load(str(output))
    assert spec.root.input_definitions.parameters["data_path"].default_value \
        .string_value == DATA_PATH
    for container in _containers(spec).values():
        assert container["image"] == IMAGE
        assert list(container["args"])[-2:] == BEAM_ARGS

    bad = _parser().parse_args(["compile", "--target", "vertex", "--output",
                                str(tmp_path / "p.yaml")])
    assert bad.func(bad) == 1
    assert "writes a .json file" in capsys.readouterr().err
