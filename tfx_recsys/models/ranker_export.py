"""What the ranking Trainer saves: an id-based ranker behind raw-id signatures.

The SavedModel has one signature:

  score(user_id string [batch], item_id string [batch, n])
      -> {"scores": float32 [batch, n], the probability that the user
             interacts with the item,
          "logits": float32 [batch, n], the same before the sigmoid,
          "known_user": bool [batch], whether the user has training
             interactions (for other users the scores carry no information
             and the served model keeps retrieval's order)}

The Transform graph maps the raw ids to the model's ids inside, so the ids
are the ones of the data files. `item_id` may be padded with "" (scored, but
meaningless). The dataset config is saved beside the model, as for the
retrieval models.
"""

import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from tfx_recsys.dataset_config import ITEM_ID, USER_ID, DatasetConfig
from tfx_recsys.models import export, features
from tfx_recsys.serving.contract import RANKER_SIGNATURE

SCORE_SIGNATURE = RANKER_SIGNATURE
_READ_BATCH = 65536


def read_train_ids(fn_args, transform_output: tft.TFTransformOutput):
    """The train split's encoded (user, item) pairs and raw user ids.

    Returns (users int64 [n], items int64 [n], raw user ids bytes [n]).
    """
    schema = schema_utils.schema_from_feature_spec({
        USER_ID: tf.io.FixedLenFeature([], tf.int64),
        ITEM_ID: tf.io.FixedLenFeature([], tf.int64),
        features.RAW_USER_ID: tf.io.FixedLenFeature([], tf.string)})
    batches = fn_args.data_accessor.tf_dataset_factory(
        fn_args.train_files,
        tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH, shuffle=False,
                                       num_epochs=1), schema)
    users, items, raw_users = [], [], []
    for batch in batches.as_numpy_iterator():
        users.append(batch[USER_ID].ravel())
        items.append(batch[ITEM_ID].ravel())
        raw_users.append(batch[features.RAW_USER_ID].ravel())
    if not users:
        raise ValueError(f"the train split at {fn_args.train_files} has no examples")
    return np.concatenate(users), np.concatenate(items), np.concatenate(raw_users)


class RankerExportModule(tf.Module):
    """A trained NCF model behind the raw-id `score` signature.

    Args:
      model: Keras model, {"user": int64 [m], "item": int64 [m]} -> the
        logit float32 [m] via `logits_fn`.
      logits_fn: (model, inputs) -> logits float32 [m].
      transform_output_dir: Transform's output (maps raw ids to model ids).
      known_users: raw ids of the users with training interactions.
      dataset: the dataset config, saved with the model.
    """

    def __init__(self, model, logits_fn, transform_output_dir: str,
                 known_users: Sequence[bytes], dataset: DatasetConfig):
        super().__init__()
        self.model = model
        self._logits_fn = logits_fn
        self.dataset_config_json = tf.Variable(dataset.to_json(), trainable=False)
        self._raw_spec = tft.TFTransformOutput(transform_output_dir).raw_feature_spec()
        # One Transform layer per set of fed inputs (tf.Transform requires it).
        self.user_transform = tft.TFTransformOutput(
            transform_output_dir).transform_features_layer()
        self.item_transform = tft.TFTransformOutput(
            transform_output_dir).transform_features_layer()
        users = sorted(set(known_users))
        self.known_users = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(users or [b""], tf.string),
                tf.constant([True] * len(users) or [False])), default_value=False)

    def _encode(self, layer, name: str, values: tf.Tensor) -> tf.Tensor:
        """Raw ids string [m] -> model ids int64 [m]."""
        return layer({name: export._to_raw(values, self._raw_spec[name],
                                           tf.ones_like(values, tf.bool))})[name]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=ITEM_ID)])
    def score(self, user_id: tf.Tensor, item_id: tf.Tensor) -> Dict[str, tf.Tensor]:
        shape = tf.shape(item_id)
        users = self._encode(self.user_transform, USER_ID, user_id)
        items = self._encode(self.item_transform, ITEM_ID, tf.reshape(item_id, [-1]))
        logits = self._logits_fn(self.model, {
            "user": tf.repeat(users, shape[1]), "item": items})
        logits = tf.reshape(tf.cast(logits, tf.float32), shape)
        return {"scores": tf.sigmoid(logits), "logits": logits,
                "known_user": self.known_users.lookup(user_id)}


def save(module: RankerExportModule, serving_model_dir: str,
         dataset: DatasetConfig) -> None:
    tf.saved_model.save(module, serving_model_dir,
                        signatures={SCORE_SIGNATURE: module.score.get_concrete_function()})
    path = os.path.join(serving_model_dir, export.DATASET_CONFIG_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(dataset.to_json())
