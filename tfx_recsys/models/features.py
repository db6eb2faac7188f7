"""Transform: the feature contract shared by every model.

`preprocessing_fn` is the one entry point (TFX Transform calls it). It turns
raw interaction features into integer ids for embedding tables; vocabularies
are computed on the train split only, and values unseen there map to one
out-of-vocabulary bucket (index = vocabulary size).
"""

import tensorflow as tf
import tensorflow_transform as tft

NUM_OOV_BUCKETS = 1
AGE_BUCKETS = 8

# Vocabularies, by the feature they encode; the Trainer reads their sizes.
CATEGORICAL_FEATURES = ("user_id", "item_id", "gender", "occupation")
GENRES = "genres"
AGE_BUCKET = "age_bucket"

USER_FEATURES = ("user_id", "gender", "occupation", AGE_BUCKET)


def _vocabulary_ids(values, name):
    """[batch, 1] string (or a SparseTensor) -> the same shape of int64 ids."""
    return tft.compute_and_apply_vocabulary(
        values, num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=name)


def preprocessing_fn(inputs):
    """Raw interaction features to model inputs.

    Args:
      inputs: raw features as parsed with `schemas/interactions.pbtxt`:
        user_id, item_id, gender, occupation: string [batch, 1];
        age: int64 [batch, 1]; genres: string SparseTensor [batch, None].
        Other raw columns (rating, timestamp, title, ...) are not used yet.

    Returns:
      user_id, item_id, gender, occupation: int64 [batch, 1] vocabulary ids;
      age_bucket: int64 [batch, 1] in [0, AGE_BUCKETS), quantile buckets;
      genres: int64 SparseTensor [batch, None] of genre ids (a bag).
    """
    outputs = {name: _vocabulary_ids(inputs[name], name)
               for name in CATEGORICAL_FEATURES}
    outputs[GENRES] = _vocabulary_ids(inputs[GENRES], GENRES)
    outputs[AGE_BUCKET] = tft.bucketize(
        tf.cast(inputs["age"], tf.float32), num_buckets=AGE_BUCKETS)
    return outputs


def vocabulary_size(tf_transform_output, name: str) -> int:
    """Rows an embedding table needs for `name`: vocabulary plus OOV bucket."""
    return tf_transform_output.vocabulary_size_by_name(name) + NUM_OOV_BUCKETS
