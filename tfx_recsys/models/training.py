"""What both trainers share: seeding, the transformed train data, the features
a model reads, warm start (warm_start.py), and saving it behind raw-feature
signatures (export.py)."""

import dataclasses
from typing import Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from tfx_recsys import config
from tfx_recsys.dataset_config import HISTORY, SECONDS_SINCE_PREVIOUS, DatasetConfig
from tfx_recsys.models import export, features, warm_start

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
    # Fixed-width byte arrays per batch: no Python object per train example.
    users, items, timestamps = [], [], []
    for batch in keys.as_numpy_iterator():
        users.append(batch[features.RAW_USER_ID].ravel().astype(bytes))
        items.append(batch[features.RAW_ITEM_ID].ravel().astype(bytes))
        timestamps.append(batch[features.RAW_TIMESTAMP].ravel())
    if not users:
        return export.UserHistory([], [], [])
    return export.UserHistory(*export.latest_items(
        np.concatenate(users), np.concatenate(items), np.concatenate(timestamps),
        dataset.history_length))


def train_and_save(fn_args, hparams, build_model) -> None:
    """What every run_fn does: seed, read the features, build the model with
    `build_model(hparams, inputs)`, fit it and save it behind the raw-feature
    signatures, with its warm-start state beside it.

    With fn_args.base_model (the last blessed model's Format-Serving, when
    the pipeline warm-starts) the model starts from that model's weights
    where they fit (warm_start.py) and trains config.warm_start_epochs
    passes; else, or when they do not fit, `hparams.epochs` from scratch.
    The outcome line goes to the log and to the model's warm_start/ (the
    Trainer records it on the Model artifact).
    """
    set_seed(hparams.seed)
    inputs = training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    model = build_model(hparams, inputs)
    base_model = getattr(fn_args, "base_model", None)
    # A cold run builds its weights inside fit(), exactly as before warm start.
    outcome = (warm_start.warm_start(model, inputs, hparams, base_model) if base_model
               else f"{warm_start.COLD}: no base model")
    epochs = (config.warm_start_epochs(hparams) if warm_start.is_warm(outcome)
              else hparams.epochs)
    outcome += f"; {epochs} epoch{'s' if epochs != 1 else ''}"
    _announce(outcome)
    model.compile(optimizer=optimizer(hparams.optimizer, hparams.learning_rate))
    model.fit(train_dataset(fn_args, inputs, hparams.batch_size, hparams.seed),
              epochs=epochs, verbose=2)
    save(model, fn_args, inputs, hparams.use_recency)
    warm_start.save_state(model, inputs, hparams, fn_args.serving_model_dir)
    warm_start.write_outcome(fn_args.serving_model_dir, outcome)


def _announce(line: str) -> None:
    """To the Trainer's log, whichever of absl's or stdout a runner keeps."""
    logging.info("%s", line)
    print(line, flush=True)


def save(model, fn_args, inputs: TrainingInputs, use_recency: bool) -> None:
    """Saves `model` (query_vectors / candidate_vectors) with raw signatures."""
    module = export.ExportModule(model, inputs.dataset, fn_args.transform_output,
                                 user_history(fn_args, inputs.dataset), use_recency)
    export.save(module, fn_args.serving_model_dir, inputs.dataset)


# Embedding tables with at least this many rows get lazy (row-wise) updates.
LAZY_UPDATE_MIN_ROWS = 50_000


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that, for a large embedding table, updates only the batch's rows.

    Keras' Adam (and SGD) turn a sparse gradient into a dense update of the
    whole table every step (decaying every row's moments and moving every
    row), so a step costs O(table rows): on 2 cores 216 ms at a million
    64-wide rows against 2 ms at 10,000. Here tables with at least
    `lazy_min_rows` rows get the lazy variant (as in TF Addons' LazyAdam):
    the rows in the batch get the usual Adam update from their own moments,
    the other rows and their moments are left as they are. Smaller tables
    and dense weights get Keras' Adam unchanged, so models of MovieLens size
    train exactly as before.
    """

    def __init__(self, learning_rate=0.001, lazy_min_rows: int = LAZY_UPDATE_MIN_ROWS,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.lazy_min_rows = lazy_min_rows

    def update_step(self, gradient, variable):
        if not (isinstance(gradient, tf.IndexedSlices)
                and variable.shape[0] >= self.lazy_min_rows):
            return super().update_step(gradient, variable)
        # The optimizer has already summed duplicate indices.
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        rows = gradient.indices
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * gradient.values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(gradient.values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    def get_config(self):
        return {**super().get_config(), "lazy_min_rows": self.lazy_min_rows}


class SparseSGD(tf.keras.optimizers.SGD):
    """Plain SGD (no momentum) whose sparse updates touch only the batch's
    rows. Keras' SGD keeps a momentum slot even at momentum 0 and updates
    every row from it each step; without momentum that dense update adds
    zeros, so this gives the same weights at O(batch) cost."""

    def __init__(self, learning_rate=0.01, **kwargs):
        super().__init__(learning_rate, momentum=0.0, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        variable.scatter_sub(tf.IndexedSlices(gradient.values * lr, gradient.indices))


def optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    """Adagrad, or Adam with lazy updates of large tables (LazyAdam)."""
    optimizers = {"adagrad": tf.keras.optimizers.Adagrad, "adam": LazyAdam}
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(optimizers)}")
    return optimizers[name](learning_rate)
