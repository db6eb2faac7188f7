"""Calling the Trainer's SavedModel signatures on Python rows, in batches."""

from typing import Dict, Sequence

import numpy as np

from tfx_recsys import config
from tfx_recsys.examples_io import genres_string, scalar

_BATCH = 4096


def load(model_dir: str):
    """Loads a Trainer SavedModel (the two-tower export)."""
    import tensorflow as tf

    return tf.saved_model.load(model_dir)


def _batched(fn, columns: Dict[str, list], dtypes: Dict[str, object]) -> np.ndarray:
    import tensorflow as tf

    size = len(next(iter(columns.values())))
    outputs = []
    for start in range(0, size, _BATCH):
        batch = {name: tf.constant(values[start:start + _BATCH], dtypes[name])
                 for name, values in columns.items()}
        outputs.append(fn(**batch)["embedding"].numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def user_columns(user_rows: Sequence[Dict[str, list]]) -> Dict[str, list]:
    """Raw request columns (users.csv) from example rows."""
    columns = {name: [scalar(r, name, "") for r in user_rows]
               for name in config.USER_STRING_FEATURES}
    columns.update({name: [scalar(r, name, 0) for r in user_rows]
                    for name in config.USER_INT_FEATURES})
    return columns


def embed_users(model, user_rows: Sequence[Dict[str, list]]) -> np.ndarray:
    """float32 [users, dim] query embeddings of raw user feature rows."""
    import tensorflow as tf

    columns = user_columns(user_rows)
    dtypes = {name: (tf.int64 if name in config.USER_INT_FEATURES else tf.string)
              for name in columns}
    return _batched(model.query_embedding, columns, dtypes)


def embed_items(model, item_rows: Sequence[Dict[str, list]]) -> np.ndarray:
    """float32 [items, dim] candidate embeddings of raw item rows."""
    import tensorflow as tf

    columns = {"item_id": [scalar(r, "item_id") for r in item_rows],
               "genres": [genres_string(r) for r in item_rows]}
    return _batched(model.candidate_embedding, columns,
                    {"item_id": tf.string, "genres": tf.string})
