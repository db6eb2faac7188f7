"""What both trainers share: seeding, the transformed train data, the features
a model reads, and saving it behind raw-feature signatures (export.py)."""

import dataclasses
from typing import Tuple

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from tfx_recsys.dataset_config import HISTORY, SECONDS_SINCE_PREVIOUS, DatasetConfig
from tfx_recsys.models import export, features

_HISTORY_BATCH = 8192


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow; deterministic ops from here on."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """What run_fn reads before it builds a model.

    query_features, candidate_features: the encoded columns each tower reads
      (features.TransformedFeature), after use_history / use_recency.
    num_items: rows of the item id encoding (vocabulary + OOV, or hash buckets).
    """

    dataset: DatasetConfig
    transform_output: tft.TFTransformOutput
    query_features: Tuple[features.TransformedFeature, ...]
    candidate_features: Tuple[features.TransformedFeature, ...]
    num_items: int


def training_inputs(fn_args, use_history: bool, use_recency: bool) -> TrainingInputs:
    dataset = features.dataset_from_custom_config(fn_args.custom_config)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    described = features.transformed_features(dataset, transform_output)
    dropped = ({HISTORY} if not use_history else set()) | (
        {SECONDS_SINCE_PREVIOUS} if not use_recency else set())
    if use_recency and not any(f.name == SECONDS_SINCE_PREVIOUS for f in described):
        raise ValueError("use_recency needs seconds_since_previous in the examples")
    query = tuple(f for f in described
                  if f.tower == features.QUERY and f.name not in dropped)
    candidate = tuple(f for f in described if f.tower == features.CANDIDATE)
    num_items = next(f.rows for f in candidate if f.name == "item_id")
    return TrainingInputs(dataset, transform_output, query, candidate, num_items)


def train_dataset(fn_args, inputs: TrainingInputs, batch_size: int,
                  seed: int) -> tf.data.Dataset:
    """Transformed train examples, shuffled with `seed`, one pass per epoch:
    dict of int64 [batch] ids and SparseTensor [batch, None] bags."""
    return fn_args.data_accessor.tf_dataset_factory(
        fn_args.train_files,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=True,
                                       shuffle_seed=seed, num_epochs=1),
        inputs.transform_output.transformed_metadata.schema)


def user_history(fn_args, dataset: DatasetConfig) -> export.UserHistory:
    """The serving history table, from the raw keys of the train examples."""
    schema = schema_utils.schema_from_feature_spec({
        features.RAW_USER_ID: tf.io.FixedLenFeature([], tf.string),
        features.RAW_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        features.RAW_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64)})
    keys = fn_args.data_accessor.tf_dataset_factory(
        fn_args.train_files,
        tfxio.TensorFlowDatasetOptions(batch_size=_HISTORY_BATCH, shuffle=False,
                                       num_epochs=1), schema)
    users, items, timestamps = [], [], []
    for batch in keys.as_numpy_iterator():
        users.extend(batch[features.RAW_USER_ID].ravel())
        items.extend(batch[features.RAW_ITEM_ID].ravel())
        timestamps.extend(batch[features.RAW_TIMESTAMP].ravel())
    return export.UserHistory(*export.latest_items(users, items, timestamps,
                                                   dataset.history_length))


def train_and_save(fn_args, hparams, build_model) -> None:
    """What every run_fn does: seed, read the features, build the model with
    `build_model(hparams, inputs)`, fit it for `hparams.epochs` passes over the
    train split and save it behind the raw-feature signatures."""
    set_seed(hparams.seed)
    inputs = training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    model = build_model(hparams, inputs)
    model.compile(optimizer=optimizer(hparams.optimizer, hparams.learning_rate))
    model.fit(train_dataset(fn_args, inputs, hparams.batch_size, hparams.seed),
              epochs=hparams.epochs, verbose=2)
    save(model, fn_args, inputs, hparams.use_recency)


def save(model, fn_args, inputs: TrainingInputs, use_recency: bool) -> None:
    """Saves `model` (query_vectors / candidate_vectors) with raw signatures."""
    module = export.ExportModule(model, inputs.dataset, fn_args.transform_output,
                                 user_history(fn_args, inputs.dataset), use_recency)
    export.save(module, fn_args.serving_model_dir, inputs.dataset)


def optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    optimizers = {"adagrad": tf.keras.optimizers.Adagrad,
                  "adam": tf.keras.optimizers.Adam}
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(optimizers)}")
    return optimizers[name](learning_rate)
