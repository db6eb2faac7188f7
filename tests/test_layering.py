"""The package's dependencies run one way: contracts, then data and models,
then evaluation and the served model, then components, the pipeline, and
the app. This test reads every import of every module (those inside
functions too, without importing anything) and fails on an upward import or
a cycle, naming the modules."""

import ast
import os
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Source folder -> the package it installs as (see setup.py).
SOURCE_ROOTS = {"tfx_recsys": "tfx_recsys", "pipeline": "tfx_recsys.pipeline",
                "components": "tfx_recsys.components"}

# Lowest first; a module may import its own layer and those below. The first
# prefix that matches a module decides its layer.
LAYERS = [
    ("contracts", ["tfx_recsys.config", "tfx_recsys.dataset_config",
                   "tfx_recsys.errors", "tfx_recsys.storage", "tfx_recsys.memory",
                   "tfx_recsys.platform_compat", "tfx_recsys.fingerprint",
                   "tfx_recsys.serving.contract"]),
    ("data and models", ["tfx_recsys.data", "tfx_recsys.models",
                         "tfx_recsys.examples_io", "tfx_recsys.metrics"]),
    ("evaluation and the served model", [
        "tfx_recsys.baselines", "tfx_recsys.embedding", "tfx_recsys.served_evaluation",
        "tfx_recsys.serving.two_stage", "tfx_recsys.serving.reranking"]),
    ("components", ["tfx_recsys.components"]),
    ("pipeline", ["tfx_recsys.pipeline"]),
    ("app", ["tfx_recsys.cli", "tfx_recsys.kubeflow_commands", "tfx_recsys.report", "tfx_recsys.run_summary",
             "tfx_recsys.lineage", "tfx_recsys.serving"]),
]


def _modules() -> Dict[str, str]:
    """{dotted module name: file} of the package."""
    modules = {}
    for folder, package in SOURCE_ROOTS.items():
        top = os.path.join(REPO, folder)
        for directory, _, files in os.walk(top):
            for name in files:
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(directory, name), top)[:-3]
                parts = [package] + relative.split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = os.path.join(directory, name)
    return modules


def _imports(path: str, known: Set[str]) -> Set[str]:
    """The package's modules that the file at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in known)
    return found


def _layer(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


MODULES = _modules()
# A package's __init__ that imports nothing is only a namespace: importing
# `from tfx_recsys import config` names it, and that is not a dependency.
_EMPTY_PACKAGES = {m for m, p in MODULES.items()
                   if p.endswith("__init__.py") and not _imports(p, set(MODULES))}
GRAPH = {m: _imports(p, set(MODULES)) - _EMPTY_PACKAGES - {m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        if module not in _EMPTY_PACKAGES:
            _layer(module)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
              for m in sorted(GRAPH) for t in sorted(GRAPH[m])
              if _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_cycle():
    visiting, done, cycles = [], set(), []

    def visit(module):
        if module in done:
            return
        if module in visiting:
            cycles.append(" -> ".join(visiting[visiting.index(module):] + [module]))
            return
        visiting.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("source, target", [
    ("tfx_recsys.metrics", "tfx_recsys.cli"),          # upward
    ("tfx_recsys.data.tables", "tfx_recsys.data.ingest"),  # with ingest -> tables, a cycle
])
def test_the_checks_catch_what_they_are_for(source, target):
    GRAPH[source].add(target)
    try:
        with pytest.raises(AssertionError):
            test_no_module_imports_from_a_layer_above_its_own()
            test_there_is_no_import_cycle()
    finally:
        GRAPH[source].discard(target)
