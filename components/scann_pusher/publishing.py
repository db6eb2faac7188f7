"""Versioned model directories in TF Serving's layout, written atomically.

A model directory holds one numbered subdirectory per version; servers load
the highest number. A version is first written completely into a hidden
staging directory beside the versions, then renamed into place: the rename
is atomic on one filesystem, so a server never sees a half-written version.

Model directories may be local paths or object-store URLs (gs://...): all
I/O goes through tfx_recsys.storage, which uses os and shutil for local
paths (no TensorFlow import) and TFX's fileio for URLs. On an object store a
rename copies object by object: not atomic.

The three directories of a push are siblings (`sibling_dirs`): one serving
root, `os.path.dirname(serving_dir)`, holds them all, so that root is the one
volume or bucket prefix to mount or grant.
"""

import json
import os
import time
from typing import Dict, List, Optional, Sequence

from tfx_recsys import storage

STAGING_PREFIX = ".staging-"
# Where a version records what it was made from. TF Serving ignores
# assets.extra/ inside a SavedModel directory; it exists for such files.
SOURCE_FILE = os.path.join("assets.extra", "tfx_recsys_source.json")

BRUTE_FORCE_SUFFIX = "_bruteforce"
EMBEDDINGS_SUFFIX = "_embeddings"
# Publish the siblings first: when servers see a new ScaNN version, its
# brute-force fallback and embeddings already exist.
PUBLISH_ORDER = ("embeddings", "brute_force", "scann")


def sibling_dirs(serving_dir: str) -> Dict[str, str]:
    """The three model directories a push writes, by role."""
    return {"scann": serving_dir, "brute_force": serving_dir + BRUTE_FORCE_SUFFIX,
            "embeddings": serving_dir + EMBEDDINGS_SUFFIX}


def versions(model_dir: str) -> List[int]:
    """Published versions, oldest first."""
    if not storage.isdir(model_dir):
        return []
    return sorted(int(name) for name in storage.listdir(model_dir) if name.isdigit())


def latest_version_dir(model_dir: str) -> Optional[str]:
    published = versions(model_dir)
    return os.path.join(model_dir, str(published[-1])) if published else None


def new_version(model_dirs: List[str]) -> int:
    """A Unix-time version number newer than any version in `model_dirs`."""
    newest = max((v for d in model_dirs for v in versions(d)), default=0)
    return max(int(time.time()), newest + 1)


def staging_dir(model_dir: str, version: int) -> str:
    """Where to write `version` before it is published; created empty."""
    path = os.path.join(model_dir, f"{STAGING_PREFIX}{version}")
    storage.rmtree(path, ignore_errors=True)
    storage.makedirs(path)
    return path


def publish(staged: str, model_dir: str, version: int) -> str:
    """Renames a staged directory to `<model_dir>/<version>`; returns that path."""
    destination = os.path.join(model_dir, str(version))
    if storage.exists(destination):
        raise FileExistsError(f"version {version} already exists in {model_dir}")
    storage.rename(staged, destination)
    return destination


def prune(model_dir: str, keep: int) -> List[int]:
    """Removes all but the newest `keep` versions (and stale staging dirs)."""
    removed = versions(model_dir)[:-keep] if keep > 0 else []
    for version in removed:
        storage.rmtree(os.path.join(model_dir, str(version)))
    for name in storage.listdir(model_dir):
        if name.startswith(STAGING_PREFIX):
            storage.rmtree(os.path.join(model_dir, name), ignore_errors=True)
    return removed


def republish(model_dir: str, source_version: int, version: int) -> str:
    """Publishes a copy of an existing version under a new, higher number.

    This is how a rollback reaches servers that always load the highest
    version: the old model comes back as the newest one.
    """
    source = os.path.join(model_dir, str(source_version))
    if not storage.isdir(source):
        raise FileNotFoundError(f"no version {source_version} in {model_dir}; "
                                f"there are {versions(model_dir)}")
    staged = staging_dir(model_dir, version)
    storage.rmtree(staged)
    storage.copytree(source, staged)
    return publish(staged, model_dir, version)


def republish_together(model_dirs: Dict[str, str], source_version: int, version: int,
                       order: Sequence[str] = PUBLISH_ORDER) -> Dict[str, str]:
    """Publishes copies of `source_version` as `version` in every one of
    `model_dirs` ({role: model dir}) that has it: all of them or none.

    Every copy is first written completely into a staging directory; only
    then are they renamed into place, in `order` (the ScaNN model last). If a
    copy fails (a full disk), the staged copies are removed and nothing is
    published; if a rename fails, the versions already renamed are taken back
    first. Either way the error is raised and the directories are as they
    were. Returns {role: published path}.
    """
    roles = [role for role in order if role in model_dirs
             and storage.isdir(os.path.join(model_dirs[role], str(source_version)))]
    if not roles:
        raise FileNotFoundError(f"no version {source_version} in any of "
                                f"{sorted(model_dirs.values())}")
    staged: Dict[str, str] = {}
    published: Dict[str, str] = {}
    try:
        for role in roles:
            staged[role] = staging_dir(model_dirs[role], version)
            storage.rmtree(staged[role])
            storage.copytree(os.path.join(model_dirs[role], str(source_version)),
                             staged[role])
        for role in roles:
            published[role] = publish(staged[role], model_dirs[role], version)
    except BaseException:
        for role, path in published.items():
            storage.rename(path, staged[role])
        for path in staged.values():
            storage.rmtree(path, ignore_errors=True)
        raise
    return published


def write_source(version_dir: str, source: dict) -> None:
    """Records what a (staged) version was made from, e.g. the model's uri."""
    path = os.path.join(version_dir, SOURCE_FILE)
    storage.makedirs(os.path.dirname(path))
    with storage.open_file(path, "w") as f:
        f.write(json.dumps(source, sort_keys=True))


def read_source(version_dir: str) -> Optional[dict]:
    path = os.path.join(version_dir, SOURCE_FILE)
    if not storage.exists(path):
        return None
    try:
        with storage.open_file(path) as f:
            return json.loads(f.read())
    except ValueError:
        return None
