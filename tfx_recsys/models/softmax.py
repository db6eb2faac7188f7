"""DNN softmax candidate generator (YouTube-DNN style), trained by TFX Trainer.

The query tower reads the user's features (id, every user feature of the
dataset config, the history bag, optionally the recency bucket) through ReLU
layers into a query vector q [batch, dim]. The model is a softmax over the
whole item corpus whose weight matrix is the item embedding table W [items,
dim], plus a bias b [items]: logit(item) = q . W[item] + b[item]. The
CorpusSoftmax task owns the loss: the full softmax when the corpus has at most
`max_full_softmax_items` rows, else a sampled softmax whose negatives are
drawn by train frequency (Transform's item counts) with the logQ correction.

Exported with the two-tower's signatures (export.py), so the evaluator and
the pusher need nothing special: candidate_embedding(item) = [W[item],
b[item]] and query_embedding = [q, 1], whose dot product is the logit.
"""

from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfx_recsys import config
from tfx_recsys.dataset_config import ITEM_ID
from tfx_recsys.models import features, training, towers
from tfx_recsys.models.features import TransformedFeature


class CorpusSoftmax(tf.keras.layers.Layer, tfrs.tasks.Task):
    """Cross-entropy of the positive item against the item corpus, summed
    over the batch.

    Args:
      item_counts: int [item rows], train interactions per item: the
        sampling distribution of the sampled softmax's negatives.
      max_full_softmax_items: corpora up to this many rows get the full
        softmax (exact, and cheap enough); larger ones the sampled softmax.
      num_sampled: negatives per batch of the sampled softmax.
    """

    def __init__(self, item_counts: np.ndarray, max_full_softmax_items: int,
                 num_sampled: int, name: str = "corpus_softmax"):
        super().__init__(name=name)
        counts = np.maximum(np.asarray(item_counts, np.float64), 0.0)
        self._log_probability = tf.constant(
            np.log(np.maximum(counts, 1e-12) / max(counts.sum(), 1.0)), tf.float32)
        self.full = len(counts) <= max_full_softmax_items
        self._num_sampled = min(num_sampled, len(counts))

    def call(self, queries: tf.Tensor, item_ids: tf.Tensor, weights: tf.Tensor,
             biases: tf.Tensor) -> tf.Tensor:
        """queries float [batch, dim], positive item_ids int64 [batch],
        weights [items, dim], biases [items] -> scalar loss."""
        if self.full:
            logits = tf.matmul(queries, weights, transpose_b=True) + biases
            return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=item_ids, logits=logits))
        return tf.reduce_sum(tf.nn.sampled_softmax_loss(
            weights, biases, labels=item_ids[:, None], inputs=queries,
            num_sampled=self._num_sampled, num_classes=weights.shape[0],
            sampled_values=self._sample(item_ids), remove_accidental_hits=True))

    def _sample(self, item_ids: tf.Tensor):
        """Negatives drawn by train frequency, with replacement, and the
        expected counts sampled_softmax_loss subtracts the log of (logQ)."""
        sampled = tf.random.categorical(self._log_probability[None, :],
                                        self._num_sampled, dtype=tf.int64)[0]
        return (sampled, self._expected_count(item_ids[:, None]),
                self._expected_count(sampled))

    def _expected_count(self, ids: tf.Tensor) -> tf.Tensor:
        """How often each id is drawn among num_sampled draws, same shape as ids."""
        return float(self._num_sampled) * tf.exp(tf.gather(self._log_probability, ids))


class SoftmaxModel(tfrs.Model):
    """Query tower + item softmax weights and biases.

    Args:
      query_tower: towers.Tower, user features -> [batch, dim].
      item_table: towers.EmbeddingTable [item rows, dim], the softmax weights.
      task: CorpusSoftmax.
      oov_ids, id_dropout: as in two_tower.TwoTowerModel (the user id only).
    """

    def __init__(self, query_tower: towers.Tower, item_table: towers.EmbeddingTable,
                 task: CorpusSoftmax, oov_ids: Dict[str, int] = None,
                 id_dropout: float = 0.0):
        super().__init__()
        self._oov_ids, self._id_dropout = dict(oov_ids or {}), id_dropout
        self.query_tower = query_tower
        self.item_table = item_table
        self.item_bias = self.add_weight(name="item_bias", shape=(item_table.rows,),
                                         initializer="zeros")
        self.task = task

    def query_vectors(self, inputs) -> tf.Tensor:
        """Transformed user features -> [q, 1], float32 [batch, dim + 1]."""
        queries = self.query_tower(inputs)
        return tf.concat([queries, tf.ones_like(queries[:, :1])], axis=1)

    def candidate_vectors(self, inputs) -> tf.Tensor:
        """Transformed item id -> [W[item], b[item]], float32 [batch, dim + 1]."""
        item_ids = tf.reshape(inputs[ITEM_ID], [-1])
        return tf.concat([self.item_table(item_ids),
                          tf.gather(self.item_bias, item_ids)[:, None]], axis=1)

    def logits(self, inputs) -> tf.Tensor:
        """Transformed user features -> float32 [batch, items], over the corpus."""
        return (tf.matmul(self.query_tower(inputs), self.item_table.embeddings,
                          transpose_b=True) + self.item_bias)

    def compute_loss(self, inputs, training=False) -> tf.Tensor:
        item_ids = tf.reshape(inputs[ITEM_ID], [-1])
        if training:
            inputs = towers.drop_ids(inputs, self._oov_ids, self._id_dropout)
        return self.task(self.query_tower(inputs), item_ids,
                         self.item_table.embeddings, self.item_bias)


def build_model(hparams: config.SoftmaxConfig, inputs: training.TrainingInputs
                ) -> SoftmaxModel:
    """The query tower of `inputs`' user features, the item table and the task."""
    item_feature = next(f for f in inputs.candidate_features if f.name == ITEM_ID)

    def dim_of(feature: TransformedFeature) -> int:
        wide = feature.table in (features.ITEM_ID, features.USER_ID)
        return hparams.embedding_dim if wide else hparams.feature_dim

    shared = (ITEM_ID,) if hparams.share_item_embeddings else ()
    tables = towers.make_tables((item_feature,) + inputs.query_features, dim_of, shared)
    query_tower = towers.Tower(inputs.query_features, tables, hparams.hidden_layers,
                               hparams.embedding_dim, name="query_tower")
    task = CorpusSoftmax(features.item_counts(inputs.transform_output, inputs.num_items),
                         hparams.max_full_softmax_items, hparams.num_sampled)
    return SoftmaxModel(query_tower, tables[ITEM_ID], task,
                        features.oov_ids(inputs.dataset, inputs.query_features,
                                         names=(features.USER_ID,)),
                        hparams.id_dropout)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: trains the softmax model and saves it.

    fn_args.custom_config: {"dataset": DatasetConfig.to_dict(),
    **config.SoftmaxConfig fields}.
    """
    training.train_and_save(
        fn_args, config.SoftmaxConfig.from_custom_config(fn_args.custom_config), build_model)
