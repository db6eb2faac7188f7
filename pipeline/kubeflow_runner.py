"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) or Vertex AI Pipelines.

Thin, like `local_runner.py`: it builds the same `create_pipeline()` and only
chooses the orchestrator (`KubeflowV2DagRunner`, which compiles offline), the
container image and the paths. There is no metadata config: on a cluster, ML
Metadata belongs to the cluster (KFP's store, or Vertex ML Metadata).

  compile_pipeline(output_file, image, ...) -> path of the written spec:
      `.yaml` = KFP v2 pipeline spec (target "kubeflow"),
      `.json` = Vertex AI PipelineJob (target "vertex")
  submit(host, spec_file, run_name, params) -> id of the run started on a KFP
      endpoint (kfp.Client)

`recsys compile` and `recsys submit` are tfx_recsys/kubeflow_commands.py.

Runtime parameters (root input parameters of the spec, with their defaults
from compile_pipeline()'s arguments; an operator sets them per run, see
RUNTIME_PARAMETERS and create_pipeline()'s `runtime_parameters`):

  data_path              InteractionsExampleGen's input_base (the data directory)
  serving_dir            ScannPusher's serving_dir (where versions are published)
  trainer_custom_config  the Trainer's whole custom_config, a JSON string:
                         the hyperparameters (learning_rate, ...), the
                         dataset contract and the code fingerprint
  epochs                 the Trainer's epochs (an int)
  ranker_epochs          the RankingTrainer's epochs (an int; NCF: per stage)
  blessing_metric        RetrievalEvaluator's gate: the metric it compares,
  blessing_min_value     the absolute threshold,
  max_regression         the drop allowed against the last blessed model

KubeflowV2DagRunner wires a `data_types.RuntimeParameter` only where it *is* a
whole, primitive-typed execution property; one nested in a dict, proto or
dataclass is not substituted (TFX serialises it into the surrounding JSON,
where it stays a constant). Hence:

  epochs: the models read it from the Trainer's custom_config, and TFX's
    stock Trainer has no int property that could carry it (TrainArgs.num_steps
    is inside a proto, so a RuntimeParameter there is not substituted
    either). Both Trainers are therefore the project's Trainer
    (components/trainer_with_epochs), TFX's plus an int `epochs` property
    that its executor writes into custom_config's "epochs" before run_fn
    reads it; `epochs` and `ranker_epochs` stand for that property. On the
    cluster it is always set (the parameter has a default), so the "epochs"
    inside trainer_custom_config is overridden: submit() refuses a
    trainer_custom_config whose epochs differs from the epochs the run
    will train.
  the other hyperparameters: the whole custom_config is the parameter
    `trainer_custom_config`: pass the default with values changed. The
    dataset contract and code fingerprint must stay as compiled. The
    RankingTrainer's custom_config is fixed but for ranker_epochs.
  the blessing gate: RetrievalEvaluator keeps its fixed fields in the JSON
    property `blessing_config` and puts each field that a RuntimeParameter
    stands for into a primitive property of its own; the executor checks
    those at run time (the metric against top_ks), since they cannot be
    checked when the pipeline is built. beat_baselines stays fixed at
    compile time (`blessing=`).
  eval_fraction, serving_top_k: their components check the value when the
    pipeline is built (0 < eval_fraction < 1, top_k >= 1), which a
    RuntimeParameter cannot pass. Fixed at compile time.

What each target's spec holds:

  kubeflow  for the open-source KFP v2 backend, which implements container
            and importer executors only and no lifecycle hooks: no resolver
            tasks (the no-regression reference is the model served from
            serving_dir, by the evaluation record the pusher keeps with each
            version: create_pipeline(regression_baseline="served")), and no
            ExampleGen driver hook: a task of its own, DataFingerprint
            (data_fingerprint.py, never cached), fingerprints the input
            files as the driver would and passes the fingerprint to
            InteractionsExampleGen as its input parameter
            `input_fingerprint`, so changed data misses KFP's cache.
            compile_pipeline() refuses to write a spec that breaks the
            backend's rules (open_source_backend_problems()).
  vertex    TFX's spec as it compiles it: the latest-blessed-model resolver
            (two resolver tasks querying Vertex ML Metadata) and the
            ExampleGen driver as a preCacheCheck hook, which Vertex runs.

Heavy imports (TensorFlow, TFX, kfp) happen inside the functions, so the CLI
starts without them.
"""

import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from tfx_recsys import config
from tfx_recsys.components.trainer_with_epochs.epochs import check_epochs  # light

TARGETS = ("kubeflow", "vertex")
# The no-regression reference of each target (create_pipeline's
# regression_baseline): resolvers run on Vertex only.
_REGRESSION_BASELINE = {"kubeflow": "served", "vertex": "resolver"}
# The open-source backend's executor kinds (kubeflow/pipelines
# backend/src/v2/compiler: "non-container and non-importer executor not
# implemented").
OPEN_SOURCE_EXECUTORS = ("container", "importer")
# The task that stands in for the ExampleGen driver on that backend.
FINGERPRINT_TASK = "DataFingerprint"
EXAMPLE_GEN_TASK = "InteractionsExampleGen"
FINGERPRINT_COMMAND = ["python", "-m", "tfx_recsys.pipeline.data_fingerprint"]
EXTENSIONS = {"kubeflow": (".yaml", ".yml"), "vertex": (".json",)}

# Placeholders: nothing runs here, so these only show the expected shape.
# Build and push the image from kubeflow/Dockerfile, then name it with image=.
DEFAULT_IMAGE = "tfx-recsys:latest"
DEFAULT_PIPELINE_ROOT = "gs://YOUR_BUCKET/tfx-recsys/pipeline"
# The data reader and the pusher use plain file I/O (see kubeflow/README.md),
# so these are paths mounted in the pods, e.g. Cloud Storage FUSE on Vertex.
DEFAULT_DATA_PATH = "/gcs/YOUR_BUCKET/tfx-recsys/data"
DEFAULT_SERVING_DIR = "/gcs/YOUR_BUCKET/tfx-recsys/serving/" + config.MODEL_NAME
# kubeflow/Dockerfile copies schemas/ here (the package does not install it).
IMAGE_SCHEMA_DIR = "/opt/tfx-recsys/schemas"


def image_schema_path(dataset_name: str) -> str:
    """Where the image holds the checked-in schema of a dataset config."""
    return f"{IMAGE_SCHEMA_DIR}/{dataset_name}.pbtxt"


# What kubeflow/Dockerfile puts into the image, relative to the repository
# root (directories: their .py files; the schemas one by one).
IMAGE_SOURCES = ("kubeflow/Dockerfile", "setup.py", "requirements/requirements.lock",
                 "tfx_recsys", "pipeline", "components")
# The image's label holding image_source_fingerprint() of what it was built from.
SOURCE_LABEL = "org.tfx-recsys.source-fingerprint"


def image_source_fingerprint(repo_root: str = config.REPO_ROOT) -> str:
    """A hash of what the image is built from (IMAGE_SOURCES and schemas/):
    `make image` stores it in the image's SOURCE_LABEL, so an image built
    from other code can be told apart without running it."""
    from tfx_recsys.fingerprint import files_fingerprint

    schemas = os.path.join(repo_root, "schemas")
    return files_fingerprint(
        [os.path.join(repo_root, p) for p in IMAGE_SOURCES]
        + sorted(os.path.join(schemas, n) for n in os.listdir(schemas)
                 if n.endswith(".pbtxt")))

# Beam inside each component's pod: in-process FnApiRunner (the DirectRunner
# would first try to download Prism at run time). Pass other options (e.g.
# DataflowRunner and its settings) through beam_pipeline_args / --beam-arg.
from tfx_recsys.pipeline.beam_options import DEFAULT_BEAM_ARGS  # noqa: E402  light

# Runtime parameter name -> (type, description). Each replaces the
# create_pipeline() setting of the same name (pipeline.RUNTIME_SETTINGS);
# its default is what compile_pipeline()'s arguments give that setting.
RUNTIME_PARAMETERS = {
    "data_path": (str, "directory with interactions.csv, users.csv, items.csv "
                       "(InteractionsExampleGen input_base; a path mounted in "
                       "the pods)"),
    "serving_dir": (str, "where ScannPusher publishes numbered model versions "
                         "(a path mounted in the pods)"),
    "trainer_custom_config": (str, "the Trainer's custom_config, JSON: the model's "
                                   "hyperparameters (learning_rate, ...), the "
                                   "dataset contract and the code fingerprint; "
                                   "change hyperparameters in the default, keep "
                                   "the rest; its epochs is replaced by the "
                                   "epochs parameter"),
    "epochs": (int, "passes over the train split of the retrieval Trainer "
                    "(replaces epochs in trainer_custom_config)"),
    "ranker_epochs": (int, "passes over the train split of the RankingTrainer "
                           "(NCF: epochs per stage, GMF, MLP and NeuMF with "
                           "pretraining)"),
    "blessing_metric": (str, "the overall metric the blessing gate compares, "
                             "<ranking metric>@<K in top_ks>, e.g. recall@100"),
    "blessing_min_value": (float, "blessing gate: the metric must reach at least "
                                  "this value"),
    "max_regression": (float, "blessing gate: how much the metric may drop "
                              "below the last blessed model's (absolute)"),
}
# A trainer_custom_config value must keep these entries of the default.
_CUSTOM_CONFIG_ENTRIES = ("dataset", "code_fingerprint")
# Runtime parameters that stand for a Trainer's `epochs` property.
_EPOCHS_PARAMETERS = ("epochs", "ranker_epochs")


def _check_target(output_file: str, target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not output_file.endswith(EXTENSIONS[target]):
        raise ValueError(
            f"target {target} writes a {' or '.join(EXTENSIONS[target])} file "
            f"(KubeflowV2DagRunner picks the format by the name), got {output_file}")


def compile_pipeline(
    output_file: str,
    image: str = DEFAULT_IMAGE,
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    data_path: str = DEFAULT_DATA_PATH,
    serving_dir: str = DEFAULT_SERVING_DIR,
    target: str = "kubeflow",
    beam_pipeline_args: Optional[Sequence[str]] = None,
    dataset=None,
    schema_path: Optional[str] = None,
    model: str = config.DEFAULT_MODEL,
    training=None,
    ranking: Optional[config.NcfConfig] = None,
    blessing: config.BlessingConfig = config.BlessingConfig(),
    enable_cache: bool = True,
    **pipeline_settings,
) -> str:
    """Compiles create_pipeline() for KFP v2 or Vertex AI; returns the file's path.

    Args:
      output_file: `.yaml`/`.yml` for target "kubeflow" (a KFP v2 pipeline
        spec), `.json` for target "vertex" (a Vertex PipelineJob).
      image: the image every task runs, built from kubeflow/Dockerfile.
      pipeline_root: artifact root of the runs; the spec's
        defaultPipelineRoot (and the PipelineJob's gcsOutputDirectory).
      data_path, serving_dir: defaults of the runtime parameters of the same
        names; an operator overrides them per run.
      target: "kubeflow" or "vertex".
      beam_pipeline_args: options of the components' Beam pipelines, passed
        through to every container (default DEFAULT_BEAM_ARGS).
      dataset: the data contract (a DatasetConfig; default MovieLens-100K's).
      schema_path: the raw-data schema as seen inside the container (default:
        the dataset's checked-in schema, copied into the image).
      model: a key of config.MODELS: the retrieval model the Trainer runs.
      training: Trainer hyperparameters, an instance of the model's config
        class: with the dataset and the code fingerprint, the default of the
        `trainer_custom_config` runtime parameter; its epochs is the default
        of `epochs`.
      ranking: RankingTrainer hyperparameters (config.NcfConfig; default
        its defaults), fixed but for their epochs, the default of
        `ranker_epochs`.
      blessing: the evaluator's gate; its metric, min_value and
        max_regression are the defaults of the `blessing_metric`,
        `blessing_min_value` and `max_regression` runtime parameters, its
        beat_baselines is fixed.
      enable_cache: let the cluster reuse results of unchanged tasks.
      pipeline_settings: passed to create_pipeline() as they are (top_ks,
        index_gate, serving_top_k; ranking_run_fn=None drops the ranking
        stage and `ranker_epochs`); fixed at compile time. The target picks
        regression_baseline.

    Compile from the commit the image was built from: the dotted paths and the
    code fingerprint (part of the Transform and Trainer cache keys) come from
    the code here.
    """
    _check_target(output_file, target)
    from tfx import v1 as tfx
    from tfx import version as tfx_version
    from tfx.orchestration import data_types
    from tfx.utils import json_utils

    from tfx_recsys import dataset_config
    from tfx_recsys.fingerprint import code_fingerprint
    from tfx_recsys.pipeline.pipeline import create_pipeline, trainer_custom_config

    dataset = dataset or dataset_config.load(
        dataset_config.builtin_path("movielens-100k"))
    run_fn, hyperparameters_class = config.MODELS[model]
    hyperparameters = (training or hyperparameters_class()).to_custom_config()
    fingerprint = code_fingerprint()
    defaults = {
        "data_path": data_path,
        "serving_dir": serving_dir,
        # The very string the Trainer makes of the dict (json_utils, as TFX's).
        "trainer_custom_config": json_utils.dumps(trainer_custom_config(
            hyperparameters, dataset.to_dict(), fingerprint)),
        # What the configs say, so a run with the defaults trains as compiled.
        "epochs": hyperparameters["epochs"],
        "ranker_epochs": (ranking or config.NcfConfig()).epochs,
        "blessing_metric": blessing.metric,
        "blessing_min_value": blessing.min_value,
        "max_regression": blessing.max_regression,
    }
    # Without a ranking stage there is no RankingTrainer to take ranker_epochs.
    has_ranker = bool(pipeline_settings.get("ranking_run_fn", config.NCF_RUN_FN))
    parameters = {
        name: data_types.RuntimeParameter(
            name=name, ptype=ptype, default=ptype(defaults[name]),
            description=description)
        for name, (ptype, description) in RUNTIME_PARAMETERS.items()
        if has_ranker or name != "ranker_epochs"}
    pipeline = create_pipeline(
        pipeline_name=config.PIPELINE_NAME,
        pipeline_root=pipeline_root,
        data_path=data_path,
        dataset=dataset.to_dict(),
        schema_path=schema_path or image_schema_path(dataset.name),
        serving_dir=serving_dir,
        run_fn=run_fn,
        training=hyperparameters,
        ranking=ranking.to_custom_config() if ranking else None,
        code_fingerprint=fingerprint,
        blessing=blessing,
        metadata_connection_config=None,  # ML Metadata is the cluster's
        beam_pipeline_args=list(beam_pipeline_args or DEFAULT_BEAM_ARGS),
        enable_cache=enable_cache,
        runtime_parameters=parameters,
        regression_baseline=_REGRESSION_BASELINE[target],
        **pipeline_settings)

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image,
            # Schema 2.1 (parameterType): the form KFP 2 backends read; TFX
            # 1.21's .yaml writer also fails on the 2.0 form of runtime
            # parameters (KeyError 'parameterType').
            use_pipeline_spec_2_1=True))
    job = runner.run(pipeline, write_out=False)
    spec = job["pipelineSpec"]
    if target == "kubeflow":
        _fingerprint_as_task(spec, image)
        problems = open_source_backend_problems(spec)
        if problems:
            raise ValueError("the spec would not run on the open-source Kubeflow "
                             "Pipelines backend:\n" + "\n".join(problems))
    _complete_spec(spec, parameters.values(), pipeline_root)

    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    _write_spec(job, output_file, f"tfx-recsys, compiled by tfx {tfx_version.__version__}")
    return output_file


def _write_spec(job: dict, output_file: str, description: str) -> None:
    """The .yaml holds the pipeline spec alone (what KFP's API and UI take),
    the .json the whole PipelineJob (what Vertex takes), keys sorted."""
    import yaml

    with open(output_file, "w") as f:
        if output_file.endswith((".yaml", ".yml")):
            f.write(f"# {description}\n")
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
        else:
            json.dump(job, f, sort_keys=True)


def _complete_spec(spec: dict, parameters: Iterable, pipeline_root: str) -> None:
    """Adds what KubeflowV2DagRunner leaves out of the pipeline spec.

    TFX declares each RuntimeParameter as a root input parameter with its type
    only: its default goes nowhere, and the .yaml form drops the PipelineJob's
    runtimeConfig and with it the pipeline root. So KFP would demand every
    parameter at submit time and know no root. Both are fields of the
    pipeline spec itself; the result is checked against kfp's proto.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    declared = spec["root"]["inputDefinitions"]["parameters"]
    for parameter in parameters:
        declared[parameter.name].update(defaultValue=parameter.default,
                                        isOptional=True)
        if parameter.description:
            declared[parameter.name]["description"] = parameter.description
    spec["defaultPipelineRoot"] = pipeline_root
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())


def _fingerprint_as_task(spec: dict, image: str) -> None:
    """Replaces the ExampleGen driver hook by the DataFingerprint task.

    The task reads ExampleGen's own input_base and input_config (and
    range_config) parameters, wired as ExampleGen's are; its output parameter
    becomes ExampleGen's input parameter `input_fingerprint`, declared in the
    component and in the inputs spec TFX's entry point parses (which passes
    it on as an execution property that the executor ignores). Not cached:
    it must look at the data every run."""
    from tfx_recsys.pipeline.data_fingerprint import OUTPUT_KEY

    tasks = spec["root"]["dag"]["tasks"]
    example_gen = tasks[EXAMPLE_GEN_TASK]
    component = spec["components"][example_gen["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    container.pop("lifecycle", None)

    read = [k for k in ("input_base", "input_config", "range_config")
            if k in example_gen["inputs"]["parameters"]]
    label = f"{FINGERPRINT_TASK}_executor"
    spec["components"][FINGERPRINT_TASK] = {
        "executorLabel": label,
        "inputDefinitions": {"parameters": {
            k: component["inputDefinitions"]["parameters"][k] for k in read}},
        "outputDefinitions": {"parameters": {OUTPUT_KEY: {"parameterType": "STRING"}}},
    }
    spec["deploymentSpec"]["executors"][label] = {"container": {
        "image": image, "command": list(FINGERPRINT_COMMAND),
        "args": ["--json_serialized_invocation_args", "{{$}}"]}}
    tasks[FINGERPRINT_TASK] = {  # no cachingOptions: never cached
        "componentRef": {"name": FINGERPRINT_TASK},
        "taskInfo": {"name": FINGERPRINT_TASK},
        "inputs": {"parameters": {k: example_gen["inputs"]["parameters"][k] for k in read}},
    }

    component["inputDefinitions"]["parameters"][OUTPUT_KEY] = {"parameterType": "STRING"}
    example_gen["inputs"]["parameters"][OUTPUT_KEY] = {"taskOutputParameter": {
        "producerTask": FINGERPRINT_TASK, "outputParameterKey": OUTPUT_KEY}}
    example_gen["dependentTasks"] = sorted(
        set(example_gen.get("dependentTasks", [])) | {FINGERPRINT_TASK})
    # TFX's entry point types the execution properties by this copy of the
    # input definitions.
    args = container["args"]
    at = args.index("--json_serialized_inputs_spec_args") + 1
    args[at] = json.dumps(component["inputDefinitions"], indent=2, sort_keys=True)


def open_source_backend_problems(spec: dict) -> List[str]:
    """What the open-source KFP v2 backend would refuse in a pipeline spec
    (the `pipelineSpec` dict): an executor other than container or importer
    (resolver, custom job), a container lifecycle hook (the ExampleGen
    driver), a task whose component or executor is missing, or an input
    taken from a task that does not exist. One line each; [] if none."""
    problems = []
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for label, executor in sorted(executors.items()):
        kinds = sorted(executor)
        if kinds != ["container"] and kinds != ["importer"]:
            problems.append(f"executor {label}: {' and '.join(kinds) or 'no'} executor "
                            f"(the backend implements {' and '.join(OPEN_SOURCE_EXECUTORS)} "
                            "executors only)")
        hooks = executor.get("container", {}).get("lifecycle")
        if hooks:
            problems.append(f"executor {label}: lifecycle hook(s) {', '.join(sorted(hooks))} "
                            "(the backend runs none)")

    def check_dag(dag: dict, where: str) -> None:
        tasks = dag.get("tasks", {})
        for name, task in sorted(tasks.items()):
            component = spec.get("components", {}).get(
                task.get("componentRef", {}).get("name", ""))
            if component is None:
                problems.append(f"task {where}{name}: no component "
                                f"{task.get('componentRef', {}).get('name')!r}")
                continue
            if "dag" in component:
                check_dag(component["dag"], f"{where}{name}/")
            elif component.get("executorLabel") not in executors:
                problems.append(f"task {where}{name}: no executor "
                                f"{component.get('executorLabel')!r}")
            inputs = task.get("inputs", {})
            for kind, key in (("artifacts", "taskOutputArtifact"),
                              ("parameters", "taskOutputParameter")):
                for input_name, source in sorted(inputs.get(kind, {}).items()):
                    producer = source.get(key, {}).get("producerTask")
                    if producer is not None and producer not in tasks:
                        problems.append(f"task {where}{name}: input {input_name} from "
                                        f"unknown task {producer!r}")
            for upstream in task.get("dependentTasks", []):
                if upstream not in tasks:
                    problems.append(f"task {where}{name}: depends on unknown task "
                                    f"{upstream!r}")

    check_dag(spec.get("root", {}).get("dag", {}), "")
    return problems


def declared_parameters(spec_file: str) -> Dict[str, dict]:
    """Root input parameters of a compiled .yaml spec: name -> ParameterSpec dict."""
    import yaml

    try:
        with open(spec_file) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
    except yaml.YAMLError as e:
        raise ValueError(f"{spec_file} is not valid YAML: {e}") from None
    specs = [d for d in documents if "pipelineInfo" in d]
    if len(specs) != 1:
        raise ValueError(f"{spec_file} holds no KFP pipeline spec")
    return dict(specs[0].get("root", {}).get("inputDefinitions", {})
                .get("parameters", {}))


def typed_params(spec_file: str, params: Mapping[str, object]) -> Dict[str, object]:
    """Checks names against the spec; converts strings to the declared types."""
    declared = declared_parameters(spec_file)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"unknown runtime parameter(s) {', '.join(unknown)}: "
                         f"{spec_file} declares {', '.join(sorted(declared))}")
    convert = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float}
    result = {}
    for name, value in params.items():
        kind = declared[name].get("parameterType")
        try:
            result[name] = (convert[kind](value)
                            if kind in convert and isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"runtime parameter {name} is {kind}, got {value!r}") from None
    for name in _EPOCHS_PARAMETERS:
        if name in result:
            result[name] = check_epochs(result[name], f"runtime parameter {name}")
    if "trainer_custom_config" in result:
        _check_custom_config(result["trainer_custom_config"],
                             _run_epochs(declared, result))
    return result


def _run_epochs(declared: Mapping[str, dict], params: Mapping[str, object]):
    """The epochs the run's Trainer will train: the `epochs` given, else the
    spec's default (a YAML number, possibly 3.0); None for a spec compiled
    without the parameter."""
    if "epochs" in params:
        return params["epochs"]
    default = declared.get("epochs", {}).get("defaultValue")
    return None if default is None else int(default)


def _check_custom_config(value, epochs) -> None:
    """A trainer_custom_config value is a JSON object that keeps the entries
    run_fn needs (else the run would fail only once it reaches the Trainer),
    and does not ask for other epochs than `epochs`, the epochs parameter's
    value for the run, which replaces its "epochs" entry (else that change
    would be silently ignored)."""
    try:
        custom_config = json.loads(value)
    except (TypeError, ValueError):
        custom_config = None
    if not isinstance(custom_config, dict):
        raise ValueError("runtime parameter trainer_custom_config must be a JSON "
                         f"object (the spec's default with changes), got {value!r:.80}")
    missing = [k for k in _CUSTOM_CONFIG_ENTRIES if k not in custom_config]
    if missing:
        raise ValueError(f"runtime parameter trainer_custom_config lacks "
                         f"{', '.join(missing)}: keep the spec's default entries and "
                         "change only hyperparameters")
    asked = custom_config.get("epochs")
    if epochs is not None and asked is not None and asked != epochs:
        raise ValueError(f"trainer_custom_config asks for epochs {asked!r}, but the "
                         f"epochs runtime parameter ({epochs}) replaces it: set "
                         f"epochs={asked} instead")


def submit(host: str, spec_file: str, run_name: Optional[str] = None,
           params: Optional[Mapping[str, object]] = None) -> str:
    """Starts a run of a compiled `.yaml` spec on a KFP endpoint; returns its id.

    `params` set runtime parameters by name (strings are converted to the
    types the spec declares; unknown names are an error). Parameters not
    given take their defaults from the spec, as does the pipeline root.
    A Vertex `.json` PipelineJob is submitted with Vertex AI's own tools.
    """
    if not spec_file.endswith((".yaml", ".yml")):
        raise ValueError(f"submit takes a KFP v2 .yaml spec, got {spec_file} "
                         "(a Vertex .json PipelineJob goes to Vertex AI)")
    arguments = typed_params(spec_file, params or {})
    import kfp

    client = kfp.Client(host=host)
    result = client.create_run_from_pipeline_package(
        spec_file, arguments=arguments, run_name=run_name)
    return result.run_id
