"""Warm start of the retrieval models: a Trainer given the last blessed model
(fn_args.base_model) starts from its weights instead of random ones.

After training, `save_state` writes what a later run needs next to the
SavedModel, in <model artifact>/warm_start/, a sibling of Format-Serving (so
the pusher, which ships Format-Serving, never ships it):

  state.json   {"facts": compatibility facts (describe), "tables": per row
               table its rows and the vocabulary its rows follow (or null)}
  state.npz    "table.<name>.weights": float32 [rows, dim] per row table;
               "table.<name>.tokens": fixed-width bytes [rows], the token
               of each row of a vocabulary table, OOV rows last (OOV_TOKEN);
               "dense.<tower>/<layer>/<kernel|bias>": every dense weight.
               Plain arrays: loaded with allow_pickle=False.
  outcome.txt  how this model's own training started, one line; the
               Trainer's executor records it on the Model artifact.

A row table is a variable whose rows are ids: every EmbeddingTable, and the
softmax's item_bias (one float per item row, stored as [rows, 1]). A table
whose ids come from a Transform vocabulary is carried by token (vocabularies
are frequency-ordered, so an id's row moves between runs): `carry_rows`. One
of hash buckets or numeric buckets is carried by index, when its row count
is unchanged.

`warm_start(model, inputs, hparams, base_model_dir)` is the entry point of a
run with a base model: it returns one line saying what it did. A missing or
unreadable state, or a base model of another shape, leaves the model as
built: a cold start.
"""

import dataclasses
import io
import json
import os
import zipfile
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfx_recsys import config
from tfx_recsys.dataset_config import ITEM_ID, DatasetConfig
from tfx_recsys.models import features, towers

STATE_DIR = "warm_start"
FACTS_FILE = "state.json"
ARRAYS_FILE = "state.npz"
OUTCOME_FILE = "outcome.txt"
# The Model artifact's custom property that holds the outcome line.
OUTCOME_PROPERTY = "warm_start"
FORMAT = 1
# Token of OOV row i: it starts with a NUL byte, which no vocabulary line holds.
OOV_TOKEN = b"\x00oov:%d"
WARM = "warm start from"
COLD = "cold start"
_TABLE_SUFFIX = "_embedding"
# What reading a missing, partial or damaged state raises.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile,
               tf.errors.OpError)


def state_dir(serving_model_dir: str) -> str:
    """<model artifact>/warm_start, for the artifact's <...>/Format-Serving."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), STATE_DIR)


def is_warm(outcome: str) -> bool:
    """Whether `outcome` (a line of warm_start) says the weights were carried."""
    return outcome.startswith(WARM)


# --------------------------------------------------------------------------
# Carrying rows over (pure NumPy)


class RowCounts(NamedTuple):
    """Rows of the new table whose token the old one had (surviving), rows
    it did not have (new), and old rows whose token is gone (vanished)."""

    surviving: int
    new: int
    vanished: int


def carry_rows(old_weights: np.ndarray, old_tokens: np.ndarray, new_tokens: np.ndarray,
               fresh_weights: np.ndarray) -> Tuple[np.ndarray, RowCounts]:
    """A new table whose surviving tokens keep their old row.

    Args:
      old_weights: [old rows, dim], the base model's table.
      old_tokens: bytes [old rows], the token of each of its rows.
      new_tokens: bytes [new rows], the token of each row of the new table.
      fresh_weights: [new rows, dim], the new table as initialised.
      Tokens are unique within each array (the OOV rows have their own).

    Returns:
      ([new rows, dim] weights: a token's old row wherever the old table had
      the token, at whatever index, else its fresh row; RowCounts).
    """
    old_tokens = np.asarray(old_tokens, dtype=bytes)
    new_tokens = np.asarray(new_tokens, dtype=bytes)
    weights = np.array(fresh_weights, copy=True)
    found = np.zeros(len(new_tokens), bool)
    if len(old_tokens) and len(new_tokens):
        # Binary search in the sorted old tokens: no Python object per row.
        order = np.argsort(old_tokens, kind="stable")
        position = np.minimum(np.searchsorted(old_tokens[order], new_tokens),
                              len(old_tokens) - 1)
        found = old_tokens[order][position] == new_tokens
        weights[found] = np.asarray(old_weights)[order[position[found]]]
    surviving = int(found.sum())
    return weights, RowCounts(surviving, len(new_tokens) - surviving,
                              len(old_tokens) - surviving)


def row_tokens(vocabulary: List[bytes], rows: int) -> np.ndarray:
    """bytes [rows]: a vocabulary's tokens in file order, then OOV_TOKEN for
    each of the rows after them."""
    if rows < len(vocabulary):
        raise ValueError(f"a table of {rows} rows for a vocabulary of {len(vocabulary)}")
    return np.array(list(vocabulary) + [OOV_TOKEN % i for i in range(rows - len(vocabulary))],
                    dtype=bytes)


# --------------------------------------------------------------------------
# The model's weights, by stable names


@dataclasses.dataclass(frozen=True)
class _RowTable:
    variable: tf.Variable  # [rows, dim], or [rows] for a bias
    encoding: str          # the features.TransformedFeature.table of its ids
    vocabulary: Optional[str]  # features.vocabulary_name: None = by index

    @property
    def rows(self) -> int:
        return int(self.variable.shape[0])


def _row_tables(model, dataset: DatasetConfig) -> Dict[str, _RowTable]:
    """Every EmbeddingTable by layer name, and the softmax's item_bias."""
    found = {m.name: (m.embeddings, m.encoding)
             for m in model.submodules if isinstance(m, towers.EmbeddingTable)}
    if getattr(model, "item_bias", None) is not None:
        found["item_bias"] = (model.item_bias, ITEM_ID)
    return {name: _RowTable(variable, encoding, features.vocabulary_name(dataset, encoding))
            for name, (variable, encoding) in sorted(found.items())}


def _towers(model) -> List[towers.Tower]:
    return sorted((m for m in model.submodules if isinstance(m, towers.Tower)),
                  key=lambda tower: tower.name)


def _dense_weights(model) -> Dict[str, tf.Variable]:
    """Every tower layer's kernel and bias, by "<tower>/<layer>/<kernel|bias>"
    (not by variable name, which depends on where Keras built the layer)."""
    return {f"{tower.name}/{layer.name}/{part}": getattr(layer, part)
            for tower in _towers(model) for layer in [*tower.hidden, tower.projection]
            for part in ("kernel", "bias")}


def build(model, inputs) -> None:
    """Creates the weights Keras creates at the first call (the towers' Dense
    layers) by calling both sides on one example of id 0. The initializers
    were seeded when the layers were made, so this draws nothing new.

    inputs: training.TrainingInputs (its query and candidate features).
    """
    example = {}
    for feature in inputs.query_features + inputs.candidate_features:
        example[feature.name] = (
            tf.SparseTensor([[0, 0]], tf.constant([0], tf.int64), [1, 1])
            if feature.is_bag else tf.zeros([1], tf.int64))
    model.query_vectors(example)
    model.candidate_vectors(example)


def _kind(hparams) -> str:
    """"two_tower" or "softmax" (config.MODELS) for the hyperparameters' class."""
    return next((name for name, (_, cls) in config.MODELS.items() if type(hparams) is cls),
                type(hparams).__name__)


def describe(model, dataset: DatasetConfig, hparams) -> dict:
    """The compatibility facts of a built model, as JSON reads them back:
    two models of equal facts have weights of equal shapes, but for the rows
    of their row tables."""
    facts = {
        "format": FORMAT,
        "model": _kind(hparams),
        "embedding_dim": hparams.embedding_dim,
        "feature_dim": hparams.feature_dim,
        "towers": {tower.name: {
            "features": {name: table.name
                         for name, table in zip(tower.feature_names, tower.tables)},
            "hidden_layers": [layer.units for layer in tower.hidden],
            "output_dim": tower.projection.units} for tower in _towers(model)},
        "tables": {name: {"encoding": table.encoding,
                          "dim": int(np.prod(table.variable.shape[1:]))}
                   for name, table in _row_tables(model, dataset).items()},
        "dense": {path: list(variable.shape)
                  for path, variable in _dense_weights(model).items()},
    }
    return json.loads(json.dumps(facts))


def incompatibility(base: dict, current: dict) -> Optional[str]:
    """The first difference between two models' facts (describe), as a
    phrase, or None when the base model's weights fit the current model."""
    return _first_difference(base, current, "")


def _first_difference(base, current, path: str) -> Optional[str]:
    if isinstance(base, dict) and isinstance(current, dict):
        for key in list(current) + [k for k in base if k not in current]:
            where = f"{path}.{key}" if path else key
            if key not in current:
                return f"{where} only in the base model"
            if key not in base:
                return f"{where} only in this model"
            found = _first_difference(base[key], current[key], where)
            if found:
                return found
        return None
    return None if base == current else f"{path} {base} in the base model, {current} now"


# --------------------------------------------------------------------------
# The state on disk


@dataclasses.dataclass(frozen=True)
class State:
    """A saved state: facts (describe), tables ({name: {"rows", "vocabulary"}})
    and arrays (the npz's, by key)."""

    facts: dict
    tables: Dict[str, dict]
    arrays: Dict[str, np.ndarray]


def _tokens(transform_output, tables: Dict[str, _RowTable]) -> Dict[str, Optional[np.ndarray]]:
    """Per row table, the token of each row (bytes [rows]), or None for a
    table carried by index; each vocabulary file is read once."""
    read = {}
    for table in tables.values():
        if table.vocabulary is not None and table.vocabulary not in read:
            read[table.vocabulary] = row_tokens(
                transform_output.vocabulary_by_name(table.vocabulary), table.rows)
    return {name: read.get(table.vocabulary) for name, table in tables.items()}


def save_state(model, inputs, hparams, serving_model_dir: str) -> str:
    """Writes the trained model's warm-start state into
    state_dir(serving_model_dir) and returns that directory.

    inputs: training.TrainingInputs (the dataset and Transform's output);
    hparams: the model's config (TwoTowerConfig or SoftmaxConfig).
    """
    directory = state_dir(serving_model_dir)
    tables = _row_tables(model, inputs.dataset)
    tokens = _tokens(inputs.transform_output, tables)
    arrays, rows = {}, {}
    for name, table in tables.items():
        arrays[f"table.{name}.weights"] = table.variable.numpy().reshape(table.rows, -1)
        if tokens[name] is not None:
            arrays[f"table.{name}.tokens"] = tokens[name]
        rows[name] = {"rows": table.rows, "vocabulary": table.vocabulary}
    for path, variable in _dense_weights(model).items():
        arrays[f"dense.{path}"] = variable.numpy()
    tf.io.gfile.makedirs(directory)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(os.path.join(directory, ARRAYS_FILE), "wb") as f:
        f.write(buffer.getvalue())
    # The facts last: a state with facts is a whole one.
    with tf.io.gfile.GFile(os.path.join(directory, FACTS_FILE), "w") as f:
        json.dump({"facts": describe(model, inputs.dataset, hparams), "tables": rows}, f,
                  indent=1)
    return directory


def read_state(directory: str) -> State:
    """The state save_state wrote into `directory`; one of _UNREADABLE when
    there is none or it is damaged."""
    with tf.io.gfile.GFile(os.path.join(directory, FACTS_FILE)) as f:
        saved = json.load(f)
    with tf.io.gfile.GFile(os.path.join(directory, ARRAYS_FILE), "rb") as f:
        data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return State(saved["facts"], saved["tables"], {k: arrays[k] for k in arrays.files})


def write_outcome(serving_model_dir: str, line: str) -> None:
    """Records how the model in serving_model_dir started (read_outcome)."""
    directory = state_dir(serving_model_dir)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, OUTCOME_FILE), "w") as f:
        f.write(line + "\n")


def read_outcome(serving_model_dir: str) -> Optional[str]:
    """The line write_outcome recorded for the model, or None (a model
    trained without it, e.g. the NCF ranker)."""
    path = os.path.join(state_dir(serving_model_dir), OUTCOME_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read().strip()


# --------------------------------------------------------------------------
# The entry point


def _label(name: str) -> str:
    return name[:-len(_TABLE_SUFFIX)] if name.endswith(_TABLE_SUFFIX) else name


def _carry(name: str, table: _RowTable, tokens: Optional[np.ndarray],
           base: State) -> Tuple[Optional[np.ndarray], str]:
    """One row table's new weights from the base state (None: keep it as
    initialised) and a phrase for the summary ("" when carried by index).
    tokens: bytes [rows], the token of each of the table's rows, or None."""
    old = base.arrays[f"table.{name}.weights"]
    before = base.tables[name]
    vocabulary = table.vocabulary
    if vocabulary is not None and before["vocabulary"] == vocabulary:
        weights, counts = carry_rows(old, base.arrays[f"table.{name}.tokens"], tokens,
                                     table.variable.numpy().reshape(table.rows, -1))
        return weights, (f"{_label(name)} {counts.surviving:,} of {table.rows:,} rows "
                         f"carried, {counts.new:,} new, {counts.vanished:,} dropped")
    if vocabulary is None and before["vocabulary"] is None and before["rows"] == table.rows:
        return old, ""
    why = (f"{before['rows']:,} buckets before, {table.rows:,} now"
           if vocabulary is None and before["vocabulary"] is None
           else f"{before['vocabulary'] or 'buckets'} before, {vocabulary or 'buckets'} now")
    return None, f"{_label(name)} not carried ({why})"


def warm_start(model, inputs, hparams, base_model_dir: str) -> str:
    """Starts `model` (built by a run_fn's build_model, not trained) from the
    state saved with the base model at base_model_dir (its Format-Serving).

    Every row table and dense weight is carried over when the base model's
    facts equal this one's (describe); else nothing is, and the model stays
    as built. Returns one line: "warm start from <dir>: item_id 1,650 of
    1,682 rows carried, 32 new, 3 dropped; ...", or "cold start: <why>".
    """
    directory = state_dir(base_model_dir)
    try:
        base = read_state(directory)
    except _UNREADABLE as error:
        first = (str(error).strip().splitlines() or [""])[0]
        return (f"{COLD}: no usable warm-start state in {directory} "
                f"({type(error).__name__}: {first})")
    build(model, inputs)
    reason = incompatibility(base.facts, describe(model, inputs.dataset, hparams))
    if reason:
        return f"{COLD}: the base model {base_model_dir} does not fit: {reason}"

    tables = _row_tables(model, inputs.dataset)
    tokens = _tokens(inputs.transform_output, tables)
    carried, phrases, by_index = {}, [], []
    try:
        for name, table in tables.items():
            weights, phrase = _carry(name, table, tokens[name], base)
            if weights is not None:
                carried[name] = weights
            if phrase:
                phrases.append(phrase)
            else:
                by_index.append(_label(name))
        dense = {path: base.arrays[f"dense.{path}"]
                 for path in _dense_weights(model)}
    except KeyError as error:
        return f"{COLD}: the warm-start state in {directory} lacks {error}"
    # Assigned only now, all or nothing.
    for name, weights in carried.items():
        tables[name].variable.assign(weights.reshape(tables[name].variable.shape))
    for path, variable in _dense_weights(model).items():
        variable.assign(dense[path])
    if by_index:
        phrases.append(f"by index: {', '.join(by_index)}")
    phrases.append(f"{len(dense)} dense weights")
    return f"{WARM} {base_model_dir}: " + "; ".join(phrases)
