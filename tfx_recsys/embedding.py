"""Calling the Trainer's SavedModel signatures on Python rows, in batches.

Rows are examples as `examples_io.parse_row` returns them ({feature: list of
values}). The raw columns each signature takes are read from the signature
itself and from the dataset config saved inside the model (models/export.py
describes the conventions): strings as they are ("" if absent), numeric
features as float (NaN if absent), int64 features (MISSING_INT if absent),
multi-categorical item features joined with their separator, history as the
row's list of item ids.
"""

import os
from typing import Dict, Sequence

import numpy as np

from tfx_recsys import dataset_config
from tfx_recsys.examples_io import scalar
from tfx_recsys.serving.contract import (  # noqa: F401  (embedding.X names)
    CANDIDATE_SIGNATURE, MISSING_INT, QUERY_SIGNATURE, QUERY_WITH_HISTORY_SIGNATURE,
    RETRIEVAL_SIGNATURES, missing_value_of)

_BATCH = 4096
# What a model needs for embed_users / embed_items (older exports lack some).
REQUIRED_SIGNATURES = RETRIEVAL_SIGNATURES


def load(model_dir: str):
    """Loads a Trainer SavedModel (two-tower or softmax export)."""
    import tensorflow as tf

    return tf.saved_model.load(model_dir)


def _model(model_or_dir):
    return load(os.fspath(model_or_dir)) if isinstance(
        model_or_dir, (str, os.PathLike)) else model_or_dir


def missing_parts(model) -> list:
    """What `model` lacks to be embedded here: signature names, and
    "dataset_config_json" for exports without their dataset config."""
    missing = [name for name in REQUIRED_SIGNATURES if name not in model.signatures]
    return missing + ([] if hasattr(model, "dataset_config_json")
                      else ["dataset_config_json"])


def dataset_of(model) -> dataset_config.DatasetConfig:
    """The dataset config a Trainer model was trained with (saved inside it)."""
    return dataset_config.DatasetConfig.from_json(
        model.dataset_config_json.numpy().decode("utf-8"))


def input_specs(model, signature: str) -> Dict[str, object]:
    """{input name: tf.TensorSpec} of one of the model's signatures."""
    return dict(model.signatures[signature].structured_input_signature[1])


def missing_value(dtype):
    """The value a raw column holds where the feature is absent."""
    return missing_value_of(dtype.name)


def _single(row: Dict[str, list], name: str, dtype):
    value = scalar(row, name)
    return missing_value(dtype) if value is None else value


def _columns(rows: Sequence[Dict[str, list]], specs: Dict[str, object],
             separators: Dict[str, str] = None) -> Dict[str, list]:
    """Raw columns for `specs` from example rows (lists kept for [batch, None])."""
    separators = separators or {}
    columns = {}
    for name, spec in specs.items():
        if spec.shape.rank == 2:
            columns[name] = [list(row.get(name) or []) for row in rows]
        elif name in separators:
            columns[name] = [separators[name].join(row.get(name) or []) for row in rows]
        else:
            columns[name] = [_single(row, name, spec.dtype) for row in rows]
    return columns


def _tensor(values: list, spec):
    """A column as a tensor; a list column padded with "" to [batch, longest]."""
    import tensorflow as tf

    if spec.shape.rank == 2:
        width = max([len(v) for v in values] + [0])
        values = np.array([list(v) + [""] * (width - len(v)) for v in values],
                          dtype=object).reshape(len(values), width)
    return tf.constant(values, spec.dtype)


def _batched(model, signature: str, columns: Dict[str, list]) -> np.ndarray:
    """float32 [rows, dim]: the signature's "embedding" over `columns`, in batches."""
    fn = model.signatures[signature]
    specs = input_specs(model, signature)
    size = len(next(iter(columns.values())))
    outputs = []
    for start in range(0, size, _BATCH):
        batch = {name: _tensor(values[start:start + _BATCH], specs[name])
                 for name, values in columns.items()}
        outputs.append(fn(**batch)["embedding"].numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def user_columns(user_rows: Sequence[Dict[str, list]], model,
                 signature: str = QUERY_SIGNATURE) -> Dict[str, list]:
    """Raw request columns of a query signature from example rows: exactly
    the inputs of `model`'s `signature`."""
    return _columns(user_rows, input_specs(_model(model), signature))


def embed_users(model_or_dir, user_rows: Sequence[Dict[str, list]]) -> np.ndarray:
    """float32 [users, dim] query embeddings of example rows.

    Uses query_embedding_with_history with each row's own `history` (an eval
    example's history is the user's train items before it).
    """
    model = _model(model_or_dir)
    columns = user_columns(user_rows, model, QUERY_WITH_HISTORY_SIGNATURE)
    return _batched(model, QUERY_WITH_HISTORY_SIGNATURE, columns)


def item_columns(model, item_rows: Sequence[Dict[str, list]]) -> Dict[str, list]:
    """Raw candidate_embedding columns (as in items.csv) from item rows."""
    separators = {f.name: f.separator for f in dataset_of(model).item_features
                  if f.kind == "multi_categorical"}
    return _columns(item_rows, input_specs(model, CANDIDATE_SIGNATURE), separators)


def embed_items(model_or_dir, item_rows: Sequence[Dict[str, list]]) -> np.ndarray:
    """float32 [items, dim] candidate embeddings of raw item rows."""
    model = _model(model_or_dir)
    return _batched(model, CANDIDATE_SIGNATURE, item_columns(model, item_rows))



def request(model, signature: str, rows: Sequence[Dict[str, list]]) -> Dict[str, object]:
    """Tensors for one call of `signature` (e.g. a served model's
    serving_default) on example rows: its inputs, built from the rows."""
    specs = input_specs(model, signature)
    return {name: _tensor(values, specs[name])
            for name, values in _columns(rows, specs).items()}
