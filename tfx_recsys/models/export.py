"""What both trainers save: raw-feature signatures over a trained model.

The SavedModel's signatures are generated from the dataset config; each takes
one raw column per input, shape [batch], and applies the Transform graph
inside:

  query_embedding(user_id, <each user feature>)
      -> {"embedding": float32 [batch, dim]}
      The user's history (their last `history.length` train items) is looked
      up inside the model, in a table built from the training data; unknown
      users get an empty history.
  query_embedding_with_history(user_id, <each user feature>, history)
      -> the same, with history string [batch, None] from the request
      (padded with "", oldest first).
  candidate_embedding(item_id, <each item feature>)
      -> {"embedding": float32 [batch, dim]}

Raw columns by feature kind: id, categorical, text -> string;
multi_categorical -> string, the categories joined with the feature's
separator (as in items.csv); numeric -> float32, NaN = missing; timestamp ->
int64, MISSING_INT = missing. With recency (use_recency), query_embedding also
takes `timestamp` int64 (the request time, seconds; the model subtracts the
user's last train timestamp) and query_embedding_with_history takes
`seconds_since_previous` int64 (negative = unknown).

The dataset config is saved beside the model (DATASET_CONFIG_FILE) and inside
it (`dataset_config_json`), so callers can build raw columns from the model
alone (tfx_recsys/embedding.py).
"""

import os
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tfx_recsys.dataset_config import (HISTORY, ITEM_ID, SECONDS_SINCE_PREVIOUS,
                                       USER_ID, DatasetConfig, Feature)
from tfx_recsys.serving.contract import (  # noqa: F401  (export.X names)
    CANDIDATE_SIGNATURE, MISSING_INT, QUERY_SIGNATURE, QUERY_WITH_HISTORY_SIGNATURE,
    RETRIEVAL_SIGNATURES)

SIGNATURES = RETRIEVAL_SIGNATURES
REQUEST_TIMESTAMP = "timestamp"
DATASET_CONFIG_FILE = os.path.join("assets.extra", "dataset.json")

_DTYPES = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}


# --------------------------------------------------------------------------
# Input signatures


def _spec(name: str, dtype, shape=(None,)) -> tf.TensorSpec:
    return tf.TensorSpec(shape, dtype, name=name)


def query_input_specs(dataset: DatasetConfig, with_history: bool,
                      use_recency: bool) -> Dict[str, tf.TensorSpec]:
    """Raw inputs of a query signature, by name (see the module docstring)."""
    specs = {USER_ID: _spec(USER_ID, tf.string)}
    specs.update({f.name: _spec(f.name, _DTYPES[f.dtype]) for f in dataset.user_features})
    if with_history:
        specs[HISTORY] = _spec(HISTORY, tf.string, (None, None))
    if use_recency:
        name = SECONDS_SINCE_PREVIOUS if with_history else REQUEST_TIMESTAMP
        specs[name] = _spec(name, tf.int64)
    return specs


def candidate_input_specs(dataset: DatasetConfig) -> Dict[str, tf.TensorSpec]:
    """Raw inputs of candidate_embedding, by name."""
    specs = {ITEM_ID: _spec(ITEM_ID, tf.string)}
    specs.update({f.name: _spec(f.name, _DTYPES[f.dtype]) for f in dataset.item_features})
    return specs


# --------------------------------------------------------------------------
# Request columns -> what the Transform graph parses


def _present(value: tf.Tensor) -> tf.Tensor:
    """Which request values are given: not "", not NaN, not MISSING_INT."""
    if value.dtype == tf.string:
        return tf.strings.length(value) > 0
    if value.dtype.is_floating:
        return ~tf.math.is_nan(value)
    return value != MISSING_INT


def _to_raw(value: tf.Tensor, spec, present: tf.Tensor = None):
    """A request column [batch] or [batch, n] -> the raw feature spec's form.

    VarLenFeature: SparseTensor [batch, n] of the present values;
    FixedLenFeature: dense, reshaped to [batch] + spec.shape.
    """
    present = _present(value) if present is None else present
    if isinstance(spec, tf.io.VarLenFeature):
        if value.shape.rank == 1:
            value, present = value[:, None], present[:, None]
        indices = tf.where(present)
        values = tf.gather_nd(value, indices)
        if values.dtype != spec.dtype:
            values = tf.cast(values, spec.dtype)
        return tf.SparseTensor(indices, values, tf.shape(value, out_type=tf.int64))
    if value.dtype != spec.dtype:
        value = tf.cast(value, spec.dtype)
    return tf.reshape(value, [-1] + list(spec.shape))


def _split_categories(joined: tf.Tensor, feature: Feature) -> tf.Tensor:
    """string [batch] of joined categories -> string [batch, n], "" padded."""
    return tf.strings.split(joined, sep=feature.separator).to_tensor(default_value="")


# --------------------------------------------------------------------------
# The users' histories, looked up at serving time


def latest_items(user_ids: Iterable[bytes], item_ids: Iterable[bytes],
                 timestamps: Iterable[int], length: int
                 ) -> Tuple[List[bytes], List[List[bytes]], List[int]]:
    """Each user's last `length` items by (timestamp, item id), oldest first.

    Returns (users sorted, their item lists, their latest timestamps). One
    sort of fixed-width arrays, so ten million events take a few hundred MB,
    not a Python object per event.
    """
    def array(values, dtype):
        return np.asarray(values if isinstance(values, np.ndarray)
                          else list(values)).astype(dtype)

    users, items, times = array(user_ids, bytes), array(item_ids, bytes), array(
        timestamps, np.int64)
    if users.size == 0:
        return [], [], []
    order = np.lexsort((items, times, users))  # by user, then time, then item
    users, items, times = users[order], items[order], times[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], users.size]
    histories = [[bytes(i) for i in items[max(start, end - length):end]] if length else []
                 for start, end in zip(starts, ends)]
    return ([bytes(u) for u in users[starts]], histories,
            [int(t) for t in times[ends - 1]])


class UserHistory(tf.Module):
    """Known users' latest train items and last train timestamp, by raw user id.

    Calling it maps user ids string [batch] to (history string [batch, None],
    "" padded, oldest first; last timestamp int64 [batch], MISSING_INT for
    unknown users, whose history is empty).
    """

    def __init__(self, user_ids: Sequence[bytes], histories: Sequence[Sequence[bytes]],
                 last_timestamps: Sequence[int]):
        super().__init__()
        num_users = len(user_ids)
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(user_ids), tf.string),
                tf.range(num_users, dtype=tf.int64)),
            default_value=num_users)  # the extra, empty row
        self.items = tf.Variable(tf.constant([i for h in histories for i in h], tf.string),
                                 trainable=False, name="history_items")
        self.row_splits = tf.Variable(
            np.cumsum([0] + [len(h) for h in histories] + [0]), dtype=tf.int64,
            trainable=False, name="history_row_splits")
        self.last_timestamp = tf.Variable(list(last_timestamps) + [MISSING_INT],
                                          dtype=tf.int64, trainable=False,
                                          name="last_timestamp")

    def __call__(self, user_ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        rows = self.rows.lookup(user_ids)
        histories = tf.RaggedTensor.from_row_splits(self.items, self.row_splits,
                                                    validate=False)
        return (tf.gather(histories, rows).to_tensor(default_value=""),
                tf.gather(self.last_timestamp, rows))


# --------------------------------------------------------------------------
# The exported module


class ExportModule(tf.Module):
    """A trained model behind raw-feature signatures.

    Args:
      model: has query_vectors(transformed features) -> [batch, dim] and
        candidate_vectors(transformed features) -> [batch, dim].
      dataset: the dataset config (input signatures, raw column conventions).
      transform_output_dir: Transform's output (the graph applied inside).
      history: the serving-time history table.
      use_recency: whether the model reads seconds_since_previous.
    """

    def __init__(self, model, dataset: DatasetConfig, transform_output_dir: str,
                 history: UserHistory, use_recency: bool):
        super().__init__()
        self.model = model
        self.history = history
        self.dataset_config_json = tf.Variable(dataset.to_json(), trainable=False)
        self._dataset = dataset
        self._use_recency = use_recency
        transform_output = tft.TFTransformOutput(transform_output_dir)
        self._raw_spec = transform_output.raw_feature_spec()
        # One Transform layer per set of fed inputs (tf.Transform requires
        # it), so one TFTransformOutput each: each caches its layer.
        self.query_transform = transform_output.transform_features_layer()
        self.candidate_transform = tft.TFTransformOutput(
            transform_output_dir).transform_features_layer()

    def _raw_user(self, inputs: Dict[str, tf.Tensor], history: tf.Tensor,
                  seconds: tf.Tensor = None) -> Dict:
        names = [USER_ID] + [f.name for f in self._dataset.user_features]
        raw = {name: _to_raw(inputs[name], self._raw_spec[name]) for name in names}
        if HISTORY in self._raw_spec:
            raw[HISTORY] = _to_raw(history, self._raw_spec[HISTORY])
        if seconds is not None:
            raw[SECONDS_SINCE_PREVIOUS] = _to_raw(
                seconds, self._raw_spec[SECONDS_SINCE_PREVIOUS], seconds >= 0)
        return raw

    def _query(self, raw: Dict) -> Dict[str, tf.Tensor]:
        return {"embedding": self.model.query_vectors(self.query_transform(raw))}

    @tf.function
    def query_embedding(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        history, last_timestamp = self.history(inputs[USER_ID])
        seconds = None
        if self._use_recency:
            seconds = tf.where(last_timestamp == MISSING_INT, tf.constant(-1, tf.int64),
                               inputs[REQUEST_TIMESTAMP] - last_timestamp)
        return self._query(self._raw_user(inputs, history, seconds))

    @tf.function
    def query_embedding_with_history(self, inputs: Dict[str, tf.Tensor]
                                     ) -> Dict[str, tf.Tensor]:
        seconds = inputs[SECONDS_SINCE_PREVIOUS] if self._use_recency else None
        return self._query(self._raw_user(inputs, inputs[HISTORY], seconds))

    @tf.function
    def candidate_embedding(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        raw = {ITEM_ID: _to_raw(inputs[ITEM_ID], self._raw_spec[ITEM_ID])}
        for feature in self._dataset.item_features:
            value, spec = inputs[feature.name], self._raw_spec[feature.name]
            if feature.kind == "multi_categorical" and isinstance(spec, tf.io.VarLenFeature):
                value = _split_categories(value, feature)
            raw[feature.name] = _to_raw(value, spec)
        transformed = self.candidate_transform(raw)
        return {"embedding": self.model.candidate_vectors(transformed)}

    def signatures(self) -> Dict[str, object]:
        """Concrete functions by signature name, traced for the config's inputs."""
        dataset, recency = self._dataset, self._use_recency
        return {
            QUERY_SIGNATURE: self.query_embedding.get_concrete_function(
                query_input_specs(dataset, False, recency)),
            QUERY_WITH_HISTORY_SIGNATURE:
                self.query_embedding_with_history.get_concrete_function(
                    query_input_specs(dataset, True, recency)),
            CANDIDATE_SIGNATURE: self.candidate_embedding.get_concrete_function(
                candidate_input_specs(dataset)),
        }


def save(module: ExportModule, serving_model_dir: str, dataset: DatasetConfig) -> None:
    """Writes the SavedModel and, beside it, the dataset config as JSON."""
    tf.saved_model.save(module, serving_model_dir, signatures=module.signatures())
    path = os.path.join(serving_model_dir, DATASET_CONFIG_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(dataset.to_json())
