"""Transform: the feature contract shared by every model, driven by the dataset config.

`preprocessing_fn(inputs, custom_config)` is the one entry point (TFX
Transform calls it with `custom_config["dataset"]` = DatasetConfig.to_dict()).
Every analyzer runs on the train split only. Per feature kind
(dataset_config.KINDS):

  id, categorical    vocabulary + one OOV bucket -> one id; or
                     tf.strings.to_hash_bucket_fast when hash_buckets > 0
  multi_categorical  the same, per category -> a bag (SparseTensor of ids)
  text               lower-cased word tokens (punctuation removed), the
                     `max_tokens` most frequent in a vocabulary + OOV -> a bag
  numeric, timestamp quantile buckets [0, buckets); missing -> bucket `buckets`

and the behaviour features ExampleGen adds:

  history                 the user's earlier train items, mapped through the
                          item_id vocabulary itself -> a bag of item ids that
                          share ids (and may share embeddings) with item_id
  seconds_since_previous  log2 buckets [0, RECENCY_BUCKETS); missing ->
                          bucket RECENCY_BUCKETS

Item frequencies (train interactions per encoded item id) are stored as a
frequency vocabulary, so trainers get the logQ / sampled-softmax correction
without a pass over the data (`item_counts`). The raw user id, item id and
timestamp pass through under RAW_* names: trainers build each user's history
table for serving from them; they are not model inputs.

`transformed_features(dataset, tf_transform_output)` describes the encoded
columns (tower, single id or bag, embedding rows); both trainers and the
tests use it.
"""

import dataclasses
import math
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tfx_recsys import dataset_config
from tfx_recsys.dataset_config import (HISTORY, ITEM_ID, SECONDS_SINCE_PREVIOUS,
                                       USER_ID, DatasetConfig, Feature)

NUM_OOV_BUCKETS = 1
QUANTILE_EPSILON = 0.01
# seconds_since_previous -> floor(log2(1 + seconds)), capped: 2^31 s is 68 years.
RECENCY_BUCKETS = 32
# Frequency vocabulary of the encoded item ids ("count id" per line).
ITEM_FREQUENCY_VOCABULARY = "item_id_frequency"

# Raw keys passed through for the serving history table (not model inputs).
RAW_USER_ID = "raw_user_id"
RAW_ITEM_ID = "raw_item_id"
RAW_TIMESTAMP = "raw_timestamp"

QUERY = "query"
CANDIDATE = "candidate"


@dataclasses.dataclass(frozen=True)
class TransformedFeature:
    """One encoded column as a model sees it.

    name: the transformed column (the raw feature's name).
    tower: QUERY (user side) or CANDIDATE (item side).
    is_bag: True: int64 SparseTensor [batch, None] of ids (embedded as their
      mean); False: int64 [batch], one id.
    rows: embedding rows the ids need (every id is in [0, rows)).
    table: the encoding the ids come from; features with the same table
      share ids (history uses item_id's), so they may share embeddings.
    """

    name: str
    tower: str
    is_bag: bool
    rows: int
    table: str


def dataset_from_custom_config(custom_config: Optional[Mapping]) -> DatasetConfig:
    """The DatasetConfig that the pipeline put into a component's custom_config."""
    if not custom_config or "dataset" not in custom_config:
        raise ValueError("custom_config has no 'dataset' entry: the pipeline must "
                         "pass DatasetConfig.to_dict() to Transform and Trainer.")
    return dataset_config.from_dict(custom_config["dataset"], source="custom_config")


# --------------------------------------------------------------------------
# Reading raw columns (dense [batch, 1] or [batch], or sparse [batch, None])


def _scalar(x, default) -> Tuple[tf.Tensor, tf.Tensor]:
    """A single-valued raw column -> (values [batch], present bool [batch]).

    Absent values (an empty sparse row) become `default`; NaN counts as absent.
    """
    if isinstance(x, tf.RaggedTensor):
        x = x.to_sparse()
    if isinstance(x, tf.SparseTensor):
        batch = tf.cast(x.dense_shape[0], tf.int32)
        counts = tf.math.bincount(tf.cast(x.indices[:, 0], tf.int32),
                                  minlength=batch, maxlength=batch)
        dense = tf.sparse.to_dense(x, default_value=default)
        # At least one column, also when every row of the batch is empty.
        dense = tf.concat([dense, tf.fill([batch, 1], tf.constant(default, x.dtype))], 1)
        values, present = dense[:, 0], counts > 0
    else:
        values = tf.reshape(x, [-1])
        present = tf.ones_like(values, tf.bool)
    if values.dtype.is_floating:
        present &= ~tf.math.is_nan(values)
    return values, present


def _bag(x, separator: Optional[str] = None) -> tf.SparseTensor:
    """A multi-valued string column -> SparseTensor [batch, None], no empty strings.

    A dense column holds one string per row, split on `separator` when given.
    """
    if isinstance(x, tf.RaggedTensor):
        x = x.to_sparse()
    if not isinstance(x, tf.SparseTensor):
        x = tf.reshape(x, [-1])
        x = (tf.strings.split(x, sep=separator) if separator
             else tf.RaggedTensor.from_tensor(x[:, None])).to_sparse()
    return tf.sparse.retain(x, tf.strings.length(x.values) > 0)


def _tokens(text: tf.Tensor) -> tf.SparseTensor:
    """string [batch] -> lower-cased word tokens, SparseTensor [batch, None].

    Punctuation and symbols separate words: "Toy Story (1995)" -> toy, story, 1995.
    """
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[\pP\pS]", " ")
    return tf.strings.split(text).to_sparse()


# --------------------------------------------------------------------------
# Encoders


def _ids(values, name: str, hash_buckets: int, vocabulary=None):
    """Strings (dense or sparse) -> ids of the same shape.

    Hashing when hash_buckets > 0; else `vocabulary` (a deferred vocabulary
    from tft.vocabulary) or a new vocabulary named `name`, plus one OOV bucket.
    """
    if hash_buckets:
        if isinstance(values, tf.SparseTensor):
            return tf.SparseTensor(values.indices, tf.strings.to_hash_bucket_fast(
                values.values, hash_buckets), values.dense_shape)
        return tf.strings.to_hash_bucket_fast(values, hash_buckets)
    if vocabulary is None:
        vocabulary = tft.vocabulary(values, vocab_filename=name)
    return tft.apply_vocabulary(values, vocabulary, num_oov_buckets=NUM_OOV_BUCKETS)


def _quantile_buckets(values: tf.Tensor, present: tf.Tensor,
                      num_buckets: int) -> tf.Tensor:
    """float [batch] -> int64 [batch]: quantile bucket, `num_buckets` if absent."""
    values = tf.where(present, tf.cast(values, tf.float32), float("nan"))
    boundaries = tft.quantiles(values, num_buckets, QUANTILE_EPSILON)  # NaN ignored
    buckets = tft.apply_buckets(tf.where(present, values, 0.0), boundaries)
    return tf.where(present, tf.cast(buckets, tf.int64), num_buckets)


def recency_buckets(seconds: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """int64 seconds [batch] -> int64 [batch] in [0, RECENCY_BUCKETS]: log2 buckets.

    floor(log2(1 + seconds)), capped at RECENCY_BUCKETS - 1; absent (or
    negative) seconds -> RECENCY_BUCKETS.
    """
    present &= seconds >= 0
    log2 = tf.math.log1p(tf.cast(tf.maximum(seconds, 0), tf.float64)) / math.log(2.0)
    buckets = tf.minimum(tf.cast(tf.floor(log2), tf.int64), RECENCY_BUCKETS - 1)
    return tf.where(present, buckets, RECENCY_BUCKETS)


def _encode_feature(feature: Feature, x):
    """One user or item feature column -> int64 [batch] or SparseTensor bag."""
    kind = feature.kind
    if kind in ("id", "categorical"):
        values, _ = _scalar(x, "")
        return _ids(values, feature.name, feature.hash_buckets)
    if kind == "multi_categorical":
        return _ids(_bag(x, feature.separator), feature.name, feature.hash_buckets)
    if kind == "text":
        values, _ = _scalar(x, "")
        return tft.compute_and_apply_vocabulary(
            _tokens(values), top_k=feature.max_tokens,
            num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=feature.name)
    if kind in ("numeric", "timestamp"):
        default = float("nan") if kind == "numeric" else 0
        values, present = _scalar(x, default)
        return _quantile_buckets(values, present, feature.buckets)
    raise ValueError(f"feature {feature.name!r}: unknown kind {kind!r}")


def _require(inputs: Mapping, name: str):
    if name not in inputs:
        raise KeyError(f"Transform input has no {name!r} column; the schema must "
                       f"declare every column of the dataset config "
                       f"(inputs: {sorted(inputs)})")
    return inputs[name]


def preprocessing_fn(inputs: Dict, custom_config: Optional[Dict] = None) -> Dict:
    """Raw interaction features to model inputs.

    Args:
      inputs: raw columns as parsed with the interactions schema: user_id,
        item_id string, timestamp int64, each user/item feature of the config
        (dense [batch, 1] or sparse [batch, None]); history string sparse
        [batch, None] and seconds_since_previous int64 sparse [batch, <=1],
        both optional.
      custom_config: {"dataset": DatasetConfig.to_dict(), ...}.

    Returns:
      user_id, item_id and each id/categorical/numeric/timestamp feature:
      int64 [batch]; each multi_categorical/text feature and history: int64
      SparseTensor [batch, None]; seconds_since_previous: int64 [batch];
      raw_user_id, raw_item_id string [batch] and raw_timestamp int64 [batch].
    """
    dataset = dataset_from_custom_config(custom_config)
    user_ids, _ = _scalar(_require(inputs, USER_ID), "")
    item_ids, _ = _scalar(_require(inputs, ITEM_ID), "")
    timestamps, _ = _scalar(_require(inputs, dataset_config.TIMESTAMP), 0)

    item_hash = dataset.items.hash_buckets
    item_vocabulary = None if item_hash else tft.vocabulary(item_ids, vocab_filename=ITEM_ID)
    outputs = {
        USER_ID: _ids(user_ids, USER_ID, dataset.users.hash_buckets),
        ITEM_ID: _ids(item_ids, ITEM_ID, item_hash, item_vocabulary),
        RAW_USER_ID: user_ids, RAW_ITEM_ID: item_ids,
        RAW_TIMESTAMP: tf.cast(timestamps, tf.int64),
    }
    # Train interactions per encoded item id: the in-batch sampling distribution.
    tft.vocabulary(tf.strings.as_string(outputs[ITEM_ID]), store_frequency=True,
                   vocab_filename=ITEM_FREQUENCY_VOCABULARY)
    for feature in dataset.user_features + dataset.item_features:
        outputs[feature.name] = _encode_feature(feature, _require(inputs, feature.name))
    if HISTORY in inputs:
        outputs[HISTORY] = _ids(_bag(inputs[HISTORY]), HISTORY, item_hash, item_vocabulary)
    if SECONDS_SINCE_PREVIOUS in inputs:
        seconds, present = _scalar(inputs[SECONDS_SINCE_PREVIOUS], 0)
        outputs[SECONDS_SINCE_PREVIOUS] = recency_buckets(tf.cast(seconds, tf.int64), present)
    return outputs


# --------------------------------------------------------------------------
# What trainers read back


def _vocabulary_rows(tf_transform_output, name: str) -> int:
    return tf_transform_output.vocabulary_size_by_name(name) + NUM_OOV_BUCKETS


def _feature_rows(feature: Feature, tf_transform_output) -> int:
    if feature.kind in ("numeric", "timestamp"):
        return feature.buckets + 1
    if feature.hash_buckets and feature.kind != "text":
        return feature.hash_buckets
    return _vocabulary_rows(tf_transform_output, feature.name)


def _key_rows(table: dataset_config.Table, name: str, tf_transform_output) -> int:
    return table.hash_buckets or _vocabulary_rows(tf_transform_output, name)


def vocabulary_name(dataset: DatasetConfig, table: str) -> Optional[str]:
    """The Transform vocabulary whose rows the ids of encoding `table` (a
    TransformedFeature.table) index, in file order then NUM_OOV_BUCKETS OOV
    rows; None when the ids are hash buckets or numeric buckets, which mean
    the same row by index in every run (for the same bucket count)."""
    if table in (USER_ID, ITEM_ID):
        keys = dataset.users if table == USER_ID else dataset.items
        return None if keys.hash_buckets else table
    if table == SECONDS_SINCE_PREVIOUS:
        return None
    feature = next(f for f in dataset.user_features + dataset.item_features
                   if f.name == table)
    if feature.kind in ("numeric", "timestamp"):
        return None
    return None if feature.hash_buckets and feature.kind != "text" else feature.name


def oov_ids(dataset: DatasetConfig, features: Tuple["TransformedFeature", ...],
            names: Tuple[str, ...] = (USER_ID, ITEM_ID)) -> Dict[str, int]:
    """{feature name: the OOV id} for the single-id `features` named in
    `names` whose ids come from a vocabulary (hash-bucket ids have no OOV row)."""
    return {f.name: f.rows - NUM_OOV_BUCKETS for f in features
            if f.name in names and not f.is_bag
            and vocabulary_name(dataset, f.table) is not None}


def transformed_features(dataset: DatasetConfig, tf_transform_output
                         ) -> Tuple[TransformedFeature, ...]:
    """Every encoded model input: user_id, user features, history and
    seconds_since_previous (when Transform produced them) for the query tower;
    item_id and item features for the candidate tower."""
    present = tf_transform_output.transformed_feature_spec()
    item_rows = _key_rows(dataset.items, ITEM_ID, tf_transform_output)
    result = [TransformedFeature(USER_ID, QUERY, False, _key_rows(
        dataset.users, USER_ID, tf_transform_output), USER_ID)]
    result += [TransformedFeature(f.name, QUERY, f.is_bag,
                                  _feature_rows(f, tf_transform_output), f.name)
               for f in dataset.user_features]
    if HISTORY in present:
        result.append(TransformedFeature(HISTORY, QUERY, True, item_rows, ITEM_ID))
    if SECONDS_SINCE_PREVIOUS in present:
        result.append(TransformedFeature(SECONDS_SINCE_PREVIOUS, QUERY, False,
                                         RECENCY_BUCKETS + 1, SECONDS_SINCE_PREVIOUS))
    result.append(TransformedFeature(ITEM_ID, CANDIDATE, False, item_rows, ITEM_ID))
    result += [TransformedFeature(f.name, CANDIDATE, f.is_bag,
                                  _feature_rows(f, tf_transform_output), f.name)
               for f in dataset.item_features]
    return tuple(result)


def item_counts(tf_transform_output, num_items: int) -> np.ndarray:
    """int64 [num_items]: train interactions per encoded item id (Transform's
    frequency vocabulary; ids never seen in train count 0)."""
    counts = np.zeros(num_items, np.int64)
    path = tf_transform_output.vocabulary_file_by_name(ITEM_FREQUENCY_VOCABULARY)
    with tf.io.gfile.GFile(path, "rb") as f:
        for line in f:
            count, _, item = line.rstrip(b"\n").partition(b" ")
            if item.lstrip(b"-").isdigit() and 0 <= int(item) < num_items:
                counts[int(item)] = int(count)
    return counts


def item_probability(tf_transform_output, num_items: int) -> np.ndarray:
    """float32 [num_items]: each item's share of train interactions, the
    probability that it is a batch's candidate; zero counts are floored to 1."""
    counts = np.maximum(item_counts(tf_transform_output, num_items), 1)
    return (counts / counts.sum()).astype(np.float32)
