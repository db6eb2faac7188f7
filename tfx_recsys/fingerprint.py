"""Hashes of our code, so TFX's cache notices when it changes.

TFX's cache key covers a component's inputs, its properties and the class
path of its executor, not the code behind it. Transform and Trainer get
their code as dotted paths, and our custom components' executors are classes
whose modules can be edited without changing their paths; so the pipeline
puts a hash of the code into each one's properties (Transform's and the
Trainers' custom_config for the model code, a `code_fingerprint` property of
each custom component, the Trainers included, for its executor's code),
which makes it part of their cache keys.
"""

import hashlib
import importlib.util
import os
from typing import Iterable

# The property of each custom component that holds its fingerprint.
CODE_FINGERPRINT_KEY = "code_fingerprint"

_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")

# What each custom component's executor runs: its own package and the
# project modules it uses (dotted names; a package means all its files).
COMPONENT_SOURCES = {
    "InteractionsExampleGen": ("tfx_recsys.components.interactions_example_gen",
                               "tfx_recsys.data", "tfx_recsys.dataset_config",
                               "tfx_recsys.examples_io", "tfx_recsys.storage"),
    "AnomaliesGate": ("tfx_recsys.components.anomalies_gate",),
    # Both Trainers (node ids Trainer, RankingTrainer) are this class; its
    # executor only applies the `epochs` property to custom_config before
    # TFX's GenericExecutor runs. The model code it runs has its own hash in
    # custom_config (code_fingerprint() below).
    "Trainer": ("tfx_recsys.components.trainer_with_epochs",),
    "RetrievalEvaluator": ("tfx_recsys.components.retrieval_evaluator",
                           "tfx_recsys.metrics", "tfx_recsys.baselines",
                           "tfx_recsys.embedding", "tfx_recsys.examples_io",
                           "tfx_recsys.storage", "tfx_recsys.two_stage",
                           "tfx_recsys.reranking",
                           "tfx_recsys.dataset_config", "tfx_recsys.config",
                           "tfx_recsys.memory", "tfx_recsys.models.export",
                           "tfx_recsys.served_evaluation"),
    "ScannPusher": ("tfx_recsys.components.scann_pusher", "tfx_recsys.embedding",
                    "tfx_recsys.examples_io", "tfx_recsys.storage", "tfx_recsys.two_stage",
                    "tfx_recsys.reranking", "tfx_recsys.dataset_config",
                    "tfx_recsys.config", "tfx_recsys.memory", "tfx_recsys.metrics",
                    "tfx_recsys.models.export", "tfx_recsys.served_evaluation"),
}


def _python_files(path: str) -> Iterable[str]:
    """`path` itself, or the .py files under a directory, in a fixed order."""
    if os.path.isfile(path):
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            yield os.path.join(root, name)


def files_fingerprint(paths: Iterable[str]) -> str:
    """sha256 over the names (relative to their top path) and contents of
    the .py files of `paths` (files or directories)."""
    digest = hashlib.sha256()
    for top in paths:
        base = top if os.path.isdir(top) else os.path.dirname(top)
        for path in _python_files(top):
            digest.update(os.path.relpath(path, base).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def code_fingerprint(directory: str = _MODELS_DIR) -> str:
    """The model code's hash (Transform and Trainers): every .py file under
    tfx_recsys/models."""
    return files_fingerprint([directory])


def _source_path(module: str) -> str:
    """A module's file or a package's directory, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module}")
    if spec.submodule_search_locations:
        return os.path.dirname(spec.origin)
    return spec.origin


def component_fingerprint(component: str) -> str:
    """The hash of what `component`'s executor runs (COMPONENT_SOURCES)."""
    return files_fingerprint(_source_path(m) for m in COMPONENT_SOURCES[component])
