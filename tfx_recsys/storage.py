"""Files on a local disk or behind a URL (gs://, s3://, ...), one interface.

On a cluster the pipeline root and the serving dir are often object-store
prefixes; locally they are directories. Local paths go through os and shutil
exactly as before, without importing TensorFlow (so `recsys rollback` stays
fast); URLs go through TFX's fileio (tf.io.gfile and its plugins), imported
when first needed.

On object stores there are no directories to make or rename atomically: a
`rename` of a directory copies and deletes object by object, so a server may
briefly see part of a version there (publish siblings first, the model last).
"""

import os
import shutil
from typing import IO, List


def is_remote(path: str) -> bool:
    """Whether `path` is a URL (scheme://...) rather than a local path."""
    return "://" in str(path)


def _fileio():
    from tfx.dsl.io import fileio

    return fileio


def listdir(path: str) -> List[str]:
    """Entry names in a directory (object stores' trailing "/" removed)."""
    if is_remote(path):
        return [name.rstrip("/") for name in _fileio().listdir(path)]
    return os.listdir(path)


def isdir(path: str) -> bool:
    return _fileio().isdir(path) if is_remote(path) else os.path.isdir(path)


def exists(path: str) -> bool:
    return _fileio().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    """Makes `path` and its parents; fine if it exists."""
    if is_remote(path):
        _fileio().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def rmtree(path: str, ignore_errors: bool = False) -> None:
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    fileio = _fileio()
    try:
        fileio.rmtree(path)
    except Exception:  # fileio raises its own NotFoundError, among others
        if not ignore_errors:
            raise


def rename(source: str, destination: str) -> None:
    """Renames a file or directory: atomic on one local filesystem; on an
    object store a directory is copied and then deleted, object by object
    (what GCS does for a directory rename anyway)."""
    if not (is_remote(source) or is_remote(destination)):
        os.rename(source, destination)
        return
    fileio = _fileio()
    if fileio.isdir(source):
        copytree(source, destination)
        fileio.rmtree(source)
    else:
        fileio.rename(source, destination, overwrite=False)


def open_file(path: str, mode: str = "r") -> IO:
    """open() for a path or URL."""
    return _fileio().open(path, mode) if is_remote(path) else open(path, mode)


def copytree(source: str, destination: str) -> None:
    """Copies a directory tree to `destination`, which must not exist."""
    if not (is_remote(source) or is_remote(destination)):
        shutil.copytree(source, destination)
        return
    fileio = _fileio()
    if fileio.exists(destination):
        raise FileExistsError(destination)
    for directory, _, files in fileio.walk(source):
        relative = os.path.relpath(directory.rstrip("/"), source.rstrip("/"))
        target = destination if relative == "." else os.path.join(destination, relative)
        fileio.makedirs(target)
        for name in files:
            fileio.copy(os.path.join(directory, name), os.path.join(target, name))
