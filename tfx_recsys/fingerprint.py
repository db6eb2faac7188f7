"""A hash of the model code, so TFX's cache notices when it changes.

Transform and Trainer get their code as dotted paths, which stay the same when
the code behind them is edited; putting this hash in their custom_config makes
it part of their cache keys.
"""

import hashlib
import os

_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def code_fingerprint(directory: str = _MODELS_DIR) -> str:
    """sha256 over the names and contents of the .py files under `directory`."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]
