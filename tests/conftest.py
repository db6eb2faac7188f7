"""Shared test setup: environment as TFX's own tests set it, tiny data."""

import os
import tempfile

# Before TensorFlow is imported anywhere: Keras 2 for TFRS, quiet C++ logs,
# no gRPC fork handlers (Beam), few threads on a 2-core machine.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# The servers tests start register here, not in the user's cache
# (tfx_recsys/serving/registry.py).
os.environ.setdefault("RECSYS_SERVER_REGISTRY", os.path.join(
    tempfile.mkdtemp(prefix="recsys-test-"), "servers"))

import pytest  # noqa: E402

from tfx_recsys.data import synthetic  # noqa: E402

TINY = dict(num_users=60, num_items=80, num_interactions=1200, seed=3)

# The edit loop's subset is `pytest -m "not integration"` (make test-fast): a
# test is "integration" when it runs a pipeline, trains a model, starts a
# server or a database, or runs a benchmark, i.e. when it uses one of these
# fixtures, is marked slow, or its module says `pytestmark = integration`.
INTEGRATION_FIXTURES = frozenset({
    "tiny_run", "movielens_run", "written_report", "launches", "backtest", "scale",
    "mariadb", "two_worker_run_on_mariadb", "pushed", "server", "direct",
    "transform_dir", "two_tower_dir", "ranker_dir", "two_versions"})


def pytest_collection_modifyitems(items):
    for item in items:
        if (INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.integration)


# Users who take a cold item (in no generated interaction) after everything
# else they did: an item released in the eval period, which only the model
# refit on every interaction knows.
LATE_ITEM_USERS = ("u1", "u2", "u3")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A seeded synthetic dataset in the native format (60 users, 80 items),
    plus a late item (LATE_ITEM_USERS)."""
    import csv

    directory = str(tmp_path_factory.mktemp("tiny_data"))
    synthetic.generate_synthetic(directory, **TINY)
    path = os.path.join(directory, "interactions.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(directory, "items.csv"), newline="") as f:
        cold = sorted({r["item_id"] for r in csv.DictReader(f)} - {r["item_id"] for r in rows})
    latest = max(int(r["timestamp"]) for r in rows)
    with open(path, "a") as f:
        for n, user in enumerate(LATE_ITEM_USERS, 1):
            f.write(f"{user},{cold[0]},5,{latest + n}\n")
    return directory


@pytest.fixture(scope="session")
def tiny_run_temp_dir(tmp_path_factory) -> str:
    """The temp directory (tempfile.gettempdir()) while tiny_run ran."""
    return str(tmp_path_factory.mktemp("tiny_run_temp"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data, tiny_run_temp_dir):
    """One in-process pipeline run on the tiny dataset; returns its RunPaths."""
    import tempfile

    from tfx_recsys import config
    from tfx_recsys.pipeline import local_runner

    root = str(tmp_path_factory.mktemp("tiny_run"))
    saved, tempfile.tempdir = tempfile.tempdir, tiny_run_temp_dir
    try:
        # recall@100 cannot separate models on an 80-item corpus: gate on @10.
        return local_runner.run(tiny_data, root,
                                training=config.TwoTowerConfig(epochs=5, batch_size=256),
                                top_ks=(5, 10, 50),
                                blessing=config.BlessingConfig(metric="recall@10"))
    finally:
        tempfile.tempdir = saved


@pytest.fixture
def local_beam_staging():
    """Executors constructed by a test stage what local_runner lets them:
    no sdist of TFX for the in-process Beam runner (see beam_staging)."""
    from tfx_recsys.pipeline import beam_staging

    with beam_staging.tfx_sdist_only_for_remote_runners():
        yield


def tfx_sdists_under(directory: str):
    """The sdists of TFX that TFX's Beam executors built under `directory`."""
    import glob

    return glob.glob(os.path.join(directory, "*", "build", "tfx"))


def copy_with_extra_row(data_dir, destination, file_name: str, row: str):
    """A copy of a native dataset with `row` appended to one of its files.

    Returns (the copy's directory, the 1-based line number of that row).
    """
    import shutil

    shutil.copytree(data_dir, destination)
    path = os.path.join(destination, file_name)
    with open(path, "a") as f:
        f.write(row + "\n")
    with open(path) as f:
        return str(destination), len(f.read().splitlines())


def bench_module(name: str):
    """bench/<name>.py imported as a module (bench/ is not a package)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluation_metrics(store) -> dict:
    """metrics.json of the latest RetrievalEvaluator execution in `store`."""
    import json

    from tfx_recsys import run_summary

    evaluator = run_summary.latest_execution(store, "RetrievalEvaluator")
    [artifact] = run_summary.output_artifacts(store, evaluator, "evaluation")
    with open(os.path.join(artifact.uri, "metrics.json")) as f:
        return json.load(f)


def exec_properties(component) -> dict:
    """A component's execution properties as the orchestrator passes them:
    protos as JSON strings."""
    from google.protobuf import json_format, message

    return {k: (json_format.MessageToJson(v) if isinstance(v, message.Message) else v)
            for k, v in component.exec_properties.items()}


def run_example_gen(data_dir, out_dir, config, range_config=None) -> dict:
    """InteractionsExampleGen's executor run on `config` as the orchestrator
    would (in-memory Beam); its four output artifacts by key."""
    from tfx.types import standard_artifacts

    from tfx_recsys.components.interactions_example_gen import component, executor

    example_gen = component.InteractionsExampleGen(
        input_base=str(data_dir), dataset=config.to_json(), range_config=range_config)
    outputs = {}
    for key in ("examples", "items", "users", "refit_examples"):
        artifact = standard_artifacts.Examples()
        artifact.uri = str(out_dir / key)
        os.makedirs(artifact.uri)
        outputs[key] = [artifact]
    context = executor.Executor.Context(
        beam_pipeline_args=["--runner=FnApiRunner", "--direct_running_mode=in_memory"],
        tmp_dir=str(out_dir / "tmp"))
    executor.Executor(context).Do({}, outputs, exec_properties(example_gen))
    return {key: artifacts[0] for key, artifacts in outputs.items()}
