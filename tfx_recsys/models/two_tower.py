"""Two-tower retrieval model (TensorFlow Recommenders), trained by TFX Trainer.

The query tower embeds a user (id, gender, occupation, age bucket); the
candidate tower embeds an item (id, bag of genres). Training is in-batch
softmax: each batch's other items are the negatives. Because popular items
appear as negatives more often, the logits are corrected by the log of each
item's sampling probability (logQ correction), and a batch's duplicate items
are not counted as negatives of each other (accidental hits).

Top-K metrics are not computed while training (they score the whole corpus on
every batch); the RetrievalEvaluator computes them once, on the eval split.

`run_fn` is the entry point. The SavedModel it writes has two signatures that
take raw features (the CSV columns) and apply the Transform graph inside:
  query_embedding(user_id, age, gender, occupation, zip_code) -> embedding [batch, dim]
  candidate_embedding(item_id, genres) -> embedding [batch, dim]
with genres a '|'-separated string per item, as in items.csv.
"""

from typing import Dict

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from tfx_recsys import config
from tfx_recsys.data import native
from tfx_recsys.models import features

QUERY_SIGNATURE = "query_embedding"
CANDIDATE_SIGNATURE = "candidate_embedding"
_SIDE_FEATURE_DIM = 8

# Raw user features (the users.csv columns), each [batch]: the input of the
# query signature here and of the served model's serving_default.
QUERY_INPUT_SIGNATURE = [
    tf.TensorSpec([None], tf.string, "user_id"),
    tf.TensorSpec([None], tf.int64, "age"),
    tf.TensorSpec([None], tf.string, "gender"),
    tf.TensorSpec([None], tf.string, "occupation"),
    tf.TensorSpec([None], tf.string, "zip_code"),
]


def _ids(tensor: tf.Tensor) -> tf.Tensor:
    """[batch, 1] ids -> [batch]."""
    return tf.reshape(tensor, [-1])


class QueryTower(tf.keras.Model):
    """User features [batch, 1] each -> query embedding [batch, dim]."""

    def __init__(self, vocab_sizes: Dict[str, int], dim: int):
        super().__init__()
        self._embeddings = {
            name: tf.keras.layers.Embedding(
                vocab_sizes[name], dim if name == "user_id" else _SIDE_FEATURE_DIM,
                name=f"{name}_embedding")
            for name in features.USER_FEATURES}
        self._projection = tf.keras.layers.Dense(dim, name="query_projection")

    def call(self, inputs):
        parts = [self._embeddings[name](_ids(inputs[name]))
                 for name in features.USER_FEATURES]
        return self._projection(tf.concat(parts, axis=1))


class CandidateTower(tf.keras.Model):
    """Item id [batch, 1] and genre bag (sparse [batch, None]) -> [batch, dim]."""

    def __init__(self, vocab_sizes: Dict[str, int], dim: int):
        super().__init__()
        self._item_embedding = tf.keras.layers.Embedding(
            vocab_sizes["item_id"], dim, name="item_id_embedding")
        self._genre_table = self.add_weight(
            name="genre_embedding", shape=(vocab_sizes[features.GENRES], dim),
            initializer="uniform")
        self._projection = tf.keras.layers.Dense(dim, name="candidate_projection")

    def call(self, inputs):
        item = self._item_embedding(_ids(inputs["item_id"]))
        # Mean of the item's genre embeddings; an item with none gets zeros.
        genres = tf.nn.safe_embedding_lookup_sparse(
            self._genre_table, inputs[features.GENRES], combiner="mean")
        return self._projection(tf.concat([item, genres], axis=1))


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval with logQ correction.

    Args:
      query_tower, candidate_tower: the towers (same output dimension).
      item_probability: float32 [item vocabulary rows], the probability that
        an item is a batch's candidate (its share of training interactions).
    """

    def __init__(self, query_tower, candidate_tower, item_probability):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self._item_probability = tf.constant(item_probability, tf.float32)
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True)

    def compute_loss(self, inputs, training=False):
        item_ids = _ids(inputs["item_id"])
        return self.task(
            self.query_tower(inputs), self.candidate_tower(inputs),
            candidate_sampling_probability=tf.gather(self._item_probability,
                                                     item_ids),
            candidate_ids=item_ids, compute_metrics=False)


def _dataset(file_pattern, data_accessor, tf_transform_output, batch_size,
             seed) -> tf.data.Dataset:
    """Transformed examples, batched: dict of [batch, 1] ids and sparse genres."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=True,
                                       shuffle_seed=seed, num_epochs=1),
        tf_transform_output.transformed_metadata.schema)


def item_probability(dataset: tf.data.Dataset, num_items: int) -> tf.Tensor:
    """Share of interactions per item id, float32 [num_items]; zero counts -> 1."""
    counts = tf.zeros([num_items], tf.int64)
    for batch in dataset:
        counts += tf.math.bincount(_ids(batch["item_id"]), minlength=num_items,
                                   maxlength=num_items, dtype=tf.int64)
    counts = tf.maximum(counts, 1)
    return tf.cast(counts, tf.float32) / tf.cast(tf.reduce_sum(counts), tf.float32)


class ExportModule(tf.Module):
    """What the Trainer saves: both towers behind raw-feature signatures."""

    def __init__(self, model: TwoTowerModel, transform_output_dir: str):
        super().__init__()
        self.query_tower = model.query_tower
        self.candidate_tower = model.candidate_tower
        # One Transform layer per signature: each is traced for a different
        # subset of the raw features (the rest are filled in and unused).
        self.query_transform = tft.TFTransformOutput(
            transform_output_dir).transform_features_layer()
        self.candidate_transform = tft.TFTransformOutput(
            transform_output_dir).transform_features_layer()

    @tf.function(input_signature=QUERY_INPUT_SIGNATURE)
    def query_embedding(self, user_id, age, gender, occupation, zip_code):
        raw = {"user_id": user_id, "age": age, "gender": gender,
               "occupation": occupation, "zip_code": zip_code}
        raw = {name: tf.reshape(value, [-1, 1]) for name, value in raw.items()}
        return {"embedding": self.query_tower(self.query_transform(raw))}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, "item_id"),
        tf.TensorSpec([None], tf.string, "genres"),
    ])
    def candidate_embedding(self, item_id, genres):
        bags = tf.strings.split(genres, sep=native.GENRE_SEPARATOR)
        bags = tf.ragged.boolean_mask(bags, tf.strings.length(bags) > 0)
        raw = {"item_id": tf.reshape(item_id, [-1, 1]),
               features.GENRES: bags.to_sparse()}
        return {"embedding": self.candidate_tower(self.candidate_transform(raw))}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: trains the two-tower model and saves it.

    Hyperparameters come from `fn_args.custom_config` (see
    config.TwoTowerConfig); training runs for `epochs` passes over the train
    split.
    """
    hparams = config.TwoTowerConfig.from_custom_config(fn_args.custom_config)
    tf.keras.utils.set_random_seed(hparams.seed)
    tf.config.experimental.enable_op_determinism()

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocab_sizes = {name: features.vocabulary_size(tf_transform_output, name)
                   for name in features.CATEGORICAL_FEATURES + (features.GENRES,)}
    vocab_sizes[features.AGE_BUCKET] = features.AGE_BUCKETS

    train = _dataset(fn_args.train_files, fn_args.data_accessor,
                     tf_transform_output, hparams.batch_size, hparams.seed)
    model = TwoTowerModel(
        QueryTower(vocab_sizes, hparams.embedding_dim),
        CandidateTower(vocab_sizes, hparams.embedding_dim),
        item_probability(train, vocab_sizes["item_id"]))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(hparams.learning_rate))
    model.fit(train, epochs=hparams.epochs, verbose=2)

    export = ExportModule(model, fn_args.transform_output)
    tf.saved_model.save(export, fn_args.serving_model_dir, signatures={
        QUERY_SIGNATURE: export.query_embedding,
        CANDIDATE_SIGNATURE: export.candidate_embedding,
    })
