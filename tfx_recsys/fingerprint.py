"""Hashes of our code, so TFX's cache notices when it changes.

TFX's cache key covers a component's inputs, its properties and the class
path of its executor, not the code behind it. Transform and Trainer get
their code as dotted paths, and our custom components' executors are classes
whose modules can be edited without changing their paths; so the pipeline
puts a hash of the code into each one's properties (Transform's and the
Trainers' custom_config for the model code, a `code_fingerprint` property of
each custom component, the Trainers included, for its executor's code),
which makes it part of their cache keys.

What a hash covers is computed, not listed: the module it starts from and
every module of this package that it imports, directly or through others
(read from the source, imports inside functions included; nothing is
imported).
"""

import ast
import functools
import hashlib
import importlib.util
import os
from typing import Iterable, List, Optional, Set

# The property of each custom component that holds its fingerprint.
CODE_FINGERPRINT_KEY = "code_fingerprint"

# The installed packages of this project, most specific first (setup.py maps
# the top-level pipeline/ and components/ folders into tfx_recsys).
_PACKAGES = ("tfx_recsys.components", "tfx_recsys.pipeline", "tfx_recsys")
_MODELS_PACKAGE = "tfx_recsys.models"


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


@functools.lru_cache(maxsize=None)
def _package_dir(package: str) -> str:
    """Where an installed package of ours lives (its __init__ only is run)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"cannot find the package {package}")
    return list(spec.submodule_search_locations)[0]


def module_file(module: str) -> Optional[str]:
    """The source file of one of this project's modules or packages (its
    __init__.py); None for anything else (TFX, a function's name, ...)."""
    for package in _PACKAGES:
        if module == package or module.startswith(package + "."):
            rest = module[len(package) + 1:].split(".") if module != package else []
            path = os.path.join(_package_dir(package), *rest)
            for candidate in (path + ".py", os.path.join(path, "__init__.py")):
                if os.path.isfile(candidate):
                    return candidate
            return None
    return None


def _imported_modules(path: str) -> Set[str]:
    """The dotted names an import statement anywhere in the file may name."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_closure(modules: Iterable[str]) -> List[str]:
    """`modules` and every module of this project they import, directly or
    through others, sorted by name."""
    pending, found = list(modules), {}
    while pending:
        module = pending.pop()
        if module in found:
            continue
        path = module_file(module)
        if path is None:
            continue
        found[module] = path
        pending.extend(_imported_modules(path))
    return sorted(found)


def modules_fingerprint(modules: Iterable[str]) -> str:
    """sha256 over the names and contents of module_closure(modules)."""
    digest = hashlib.sha256()
    for module in module_closure(modules):
        digest.update(module.encode() + b"\0")
        with open(module_file(module), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _package_modules(package: str) -> List[str]:
    """Every module of `package`, found on disk."""
    top = _package_dir(package)
    modules = []
    for path in _python_files(top):
        parts = os.path.relpath(path, top)[:-len(".py")].split(os.sep)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append(".".join([package] + parts))
    return modules


def code_fingerprint() -> str:
    """The model code's hash (Transform and Trainers): every module of
    tfx_recsys.models and what they import of this project."""
    return modules_fingerprint(_package_modules(_MODELS_PACKAGE))


def component_fingerprint(executor_class: type) -> str:
    """The hash of what a custom component's executor runs: its module and
    what that imports of this project."""
    return modules_fingerprint([executor_class.__module__])
