"""The pipeline compiled for Kubeflow Pipelines, checked offline.

No cluster, no Docker, no mocks: the spec KubeflowV2DagRunner writes is parsed
into kfp's own PipelineSpec proto (and loaded with kfp's own loader), and every
Python path it names is imported from the installed package.
"""

import argparse
import importlib
import json
import re
import socket

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tfx_recsys import config
from tfx_recsys.pipeline import kubeflow_runner

IMAGE = "registry.example.com/ml/tfx-recsys:1.2.3"
PIPELINE_ROOT = "gs://test-bucket/tfx-recsys/pipeline"
DATA_PATH = "/mnt/data/movielens"
SERVING_DIR = "/mnt/serving/retrieval"
BEAM_ARGS = ["--runner=FnApiRunner", "--direct_num_workers=2"]
EPOCHS = 3

# The TFX v2 container entry points the spec must call.
EXECUTOR_ENTRYPOINT = ["python", "-m",
                       "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
EXAMPLE_GEN_DRIVER = ["python", "-m",
                      "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"]
RESOLVER_ID = "latest_blessed_model_resolver"
# KubeflowV2DagRunner turns the latest-blessed-model resolver into two
# resolver tasks (blessing query, then the model it names).
RESOLVER_TASKS = {f"{RESOLVER_ID}-model-blessing-resolver",
                  f"{RESOLVER_ID}-model-resolver"}


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


def _tfx_pipeline():
    """The same create_pipeline() the runner compiles (nothing is run)."""
    from tfx_recsys.pipeline.pipeline import create_pipeline

    from tfx_recsys import dataset_config

    dataset = dataset_config.load(dataset_config.builtin_path("movielens-100k"))
    return create_pipeline(pipeline_name=config.PIPELINE_NAME,
                           pipeline_root=PIPELINE_ROOT, data_path=DATA_PATH,
                           dataset=dataset.to_dict(),
                           schema_path=kubeflow_runner.image_schema_path(dataset.name),
                           serving_dir=SERVING_DIR)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> str:
    output = tmp_path_factory.mktemp("kfp") / "tfx-recsys.yaml"
    path = kubeflow_runner.compile_pipeline(
        str(output), image=IMAGE, pipeline_root=PIPELINE_ROOT,
        data_path=DATA_PATH, serving_dir=SERVING_DIR, target="kubeflow",
        beam_pipeline_args=BEAM_ARGS,
        training=config.TwoTowerConfig(epochs=EPOCHS))
    assert path == str(output)
    return path


@pytest.fixture(scope="module")
def spec(spec_path) -> pipeline_spec_pb2.PipelineSpec:
    return _load(spec_path)


def _containers(spec):
    executors = spec.deployment_spec["executors"]
    return {label: executors[label]["container"]
            for label in executors if "container" in executors[label]}


def test_tasks_are_exactly_the_pipeline_components(spec):
    ids = {component.id for component in _tfx_pipeline().components}
    assert RESOLVER_ID in ids
    expected = (ids - {RESOLVER_ID}) | RESOLVER_TASKS
    assert set(spec.root.dag.tasks) == expected
    assert expected == {
        "InteractionsExampleGen", "StatisticsGen", "ImportSchemaGen",
        "ExampleValidator", "AnomaliesGate", "Transform", "Trainer",
        "RetrievalEvaluator", "ScannPusher", *RESOLVER_TASKS}
    # Anomalies stop the run before Transform, on the cluster too.
    assert "AnomaliesGate" in spec.root.dag.tasks["Transform"].dependent_tasks
    # Every task has its component and executor; only the resolver's two are
    # not containers.
    executors = spec.deployment_spec["executors"]
    for name, task in spec.root.dag.tasks.items():
        label = spec.components[task.component_ref.name].executor_label
        kind = "resolver" if name in RESOLVER_TASKS else "container"
        assert kind in executors[label], name
    blessing_query = executors[f"{RESOLVER_ID}-model-blessing-resolver_executor"]
    assert "metadata.blessed.number_value=1" in json.dumps(
        json_format.MessageToDict(blessing_query["resolver"]))


def test_every_container_runs_the_image_and_tfx_entry_points(spec):
    containers = _containers(spec)
    assert len(containers) == len(spec.root.dag.tasks) - len(RESOLVER_TASKS)
    for label, container in containers.items():
        assert container["image"] == IMAGE, label
        assert list(container["command"]) == EXECUTOR_ENTRYPOINT, label
        args = list(container["args"])
        assert args[:2] == ["--executor_class_path", args[1]], label
        assert args[-len(BEAM_ARGS):] == BEAM_ARGS, label
    # The ExampleGen's driver (span, version, fingerprint) runs first, in the
    # same image.
    driver = containers["InteractionsExampleGen_executor"]["lifecycle"]["preCacheCheck"]
    assert list(driver["command"]) == EXAMPLE_GEN_DRIVER
    assert list(driver["args"])[-len(BEAM_ARGS):] == BEAM_ARGS


def test_every_python_path_in_the_spec_imports(spec, spec_path):
    from tfx_recsys.components.interactions_example_gen.component import (
        InteractionsExampleGen)
    from tfx_recsys.components.retrieval_evaluator.component import RetrievalEvaluator
    from tfx_recsys.components.scann_pusher.component import ScannPusher

    containers = _containers(spec)
    executor_paths = {label: list(c["args"])[1] for label, c in containers.items()}
    for component in (InteractionsExampleGen, RetrievalEvaluator, ScannPusher):
        label = f"{component.__name__}_executor"
        assert _resolve(executor_paths[label]) is component.EXECUTOR_SPEC.executor_class
    for path in executor_paths.values():
        assert isinstance(_resolve(path), type), path

    # Entry-point modules, run with `python -m`, and their main().
    for command in (EXECUTOR_ENTRYPOINT, EXAMPLE_GEN_DRIVER):
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


def test_runtime_parameters_are_pipeline_inputs_with_defaults(spec, spec_path):
    declared = spec.root.input_definitions.parameters
    assert set(declared) == set(kubeflow_runner.RUNTIME_PARAMETERS)
    STRING = pipeline_spec_pb2.ParameterType.STRING
    assert declared["data_path"].parameter_type == STRING
    assert declared["data_path"].default_value.string_value == DATA_PATH
    assert declared["serving_dir"].parameter_type == STRING
    assert declared["serving_dir"].default_value.string_value == SERVING_DIR
    assert all(p.is_optional for p in declared.values())
    assert spec.default_pipeline_root == PIPELINE_ROOT

    # Wired into the components they replace.
    tasks = spec.root.dag.tasks
    assert (tasks["InteractionsExampleGen"].inputs.parameters["input_base"]
            .component_input_parameter == "data_path")
    assert (tasks["ScannPusher"].inputs.parameters["serving_dir"]
            .component_input_parameter == "serving_dir")

    # kfp's own loader sees them, with their defaults.
    from kfp import components

    loaded = components.load_component_from_file(spec_path)
    assert {name: spec_.default for name, spec_ in loaded.component_spec.inputs.items()} \
        == {"data_path": DATA_PATH, "serving_dir": SERVING_DIR}

    # What is not a runtime parameter is fixed at compile time.
    custom = json.loads(tasks["Trainer"].inputs.parameters["custom_config"]
                        .runtime_value.constant.string_value)
    assert custom["epochs"] == EPOCHS and custom["code_fingerprint"]
    schema = tasks["ImportSchemaGen"].inputs.parameters["schema_file"]
    assert schema.runtime_value.constant.string_value == \
        kubeflow_runner.image_schema_path("movielens-100k")


def test_submit_checks_parameters_against_the_spec(spec_path):
    assert kubeflow_runner.typed_params(spec_path, {"data_path": "/x"}) == {"data_path": "/x"}
    with pytest.raises(ValueError, match="unknown runtime parameter.*epochs"):
        kubeflow_runner.submit("http://127.0.0.1:1", spec_path, params={"epochs": "5"})
    with pytest.raises(ValueError, match=r"\.yaml"):
        kubeflow_runner.submit("http://127.0.0.1:1", spec_path[:-5] + ".json")


def _parser():
    parser = argparse.ArgumentParser(prog="recsys")
    kubeflow_runner.add_commands(parser.add_subparsers(dest="command", required=True))
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


def test_vertex_json_is_a_pipeline_job(tmp_path):
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
