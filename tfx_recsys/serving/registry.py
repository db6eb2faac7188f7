"""Where `recsys recommend` finds a running `recsys serve` for its model.

Each server, once it has loaded its model, writes one small JSON file,
`<registry dir>/<pid>.json` ({"url", "model_name", "model_dir", "pid"}), and
removes it when it stops. A server killed outright leaves its file behind;
the next lookup removes it (no process has that pid). The directory is
$RECSYS_SERVER_REGISTRY, else `servers/` in the cache directory
(~/.cache/tfx-recsys). Standard library only: the lookup runs before
anything heavy is imported.
"""

import dataclasses
import json
import os
import tempfile
from typing import List, Optional

REGISTRY_ENV_VAR = "RECSYS_SERVER_REGISTRY"


@dataclasses.dataclass(frozen=True)
class ServerEntry:
    """One running server: where it listens and what it serves."""

    url: str          # http://host:port
    model_name: str   # /v1/models/<model_name>
    model_dir: str    # the version directories' parent it serves
    pid: int


def registry_dir() -> str:
    explicit = os.environ.get(REGISTRY_ENV_VAR)
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    from tfx_recsys.data.movielens import default_cache_dir

    return os.path.join(default_cache_dir(), "servers")


def _same_dir(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)


def register(url: str, model_name: str, model_dir: str) -> str:
    """Records this process as a server of `model_dir`; returns the file to
    pass to `unregister` when it stops."""
    directory = registry_dir()
    os.makedirs(directory, exist_ok=True)
    entry = ServerEntry(url, model_name, _same_dir(model_dir), os.getpid())
    path = os.path.join(directory, f"{entry.pid}.json")
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp",
                                     delete=False) as f:
        json.dump(dataclasses.asdict(entry), f)
    os.replace(f.name, path)  # a reader never sees half a file
    return path


def unregister(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def servers(model_dir: Optional[str] = None) -> List[ServerEntry]:
    """The live servers (of `model_dir`, if given), newest file first; files
    of servers that are gone are removed."""
    directory = registry_dir()
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")]
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                entry = ServerEntry(**json.load(f))
            modified = os.path.getmtime(path)
        except (OSError, ValueError, TypeError):
            continue  # removed meanwhile, or not ours
        if not _alive(entry.pid):
            unregister(path)
        elif model_dir is None or entry.model_dir == _same_dir(model_dir):
            found.append((modified, entry))
    return [entry for _, entry in sorted(found, key=lambda m: -m[0])]
