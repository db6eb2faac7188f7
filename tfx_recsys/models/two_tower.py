"""Two-tower retrieval model (TensorFlow Recommenders), trained by TFX Trainer.

Query tower: user id, every user feature of the dataset config and the
history bag (mean of item embeddings; optionally the recency bucket) ->
ReLU layers -> [batch, embedding_dim]. Candidate tower: item id and every
item feature (genres bag, title tokens bag, year bucket, ...) -> ReLU layers
-> [batch, embedding_dim]. Both optionally L2-normalised.

Training is in-batch softmax (the TFRS Retrieval task owns the loss): each
batch's other items are the negatives; logits are divided by a temperature
and corrected by the log of each item's sampling probability (logQ, from
Transform's item frequencies), and a batch's duplicates of the positive item
are not counted as its negatives (accidental hits). Top-K metrics are not
computed while training; the RetrievalEvaluator computes them once.

`run_fn` is the entry point; the SavedModel's signatures (query_embedding,
query_embedding_with_history, candidate_embedding) take raw features, see
export.py.
"""

from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfx_recsys import config
from tfx_recsys.dataset_config import ITEM_ID
from tfx_recsys.models import export, features, training, towers
from tfx_recsys.models.features import TransformedFeature

QUERY_SIGNATURE = export.QUERY_SIGNATURE
QUERY_WITH_HISTORY_SIGNATURE = export.QUERY_WITH_HISTORY_SIGNATURE
CANDIDATE_SIGNATURE = export.CANDIDATE_SIGNATURE


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval with logQ correction.

    Args:
      query_tower, candidate_tower: towers.Tower (same output dimension).
      item_probability: float32 [item rows], the probability that an item is
        a batch's candidate (its share of train interactions).
      temperature: logits are divided by it.
      oov_ids, id_dropout: while training, each id of the features in
        oov_ids ({name: OOV id}) becomes the OOV id with probability
        id_dropout (towers.drop_ids).
    """

    def __init__(self, query_tower: towers.Tower, candidate_tower: towers.Tower,
                 item_probability: np.ndarray, temperature: float = 1.0,
                 oov_ids: Dict[str, int] = None, id_dropout: float = 0.0):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self._item_probability = tf.constant(item_probability, tf.float32)
        self._oov_ids, self._id_dropout = dict(oov_ids or {}), id_dropout
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True,
                                         temperature=temperature)

    def query_vectors(self, inputs) -> tf.Tensor:
        """Transformed user features -> float32 [batch, dim]."""
        return self.query_tower(inputs)

    def candidate_vectors(self, inputs) -> tf.Tensor:
        """Transformed item features -> float32 [batch, dim]."""
        return self.candidate_tower(inputs)

    def compute_loss(self, inputs, training=False) -> tf.Tensor:
        # The true ids still name the candidates: a dropped item is neither
        # its own accidental hit nor sampled as often as the OOV id.
        item_ids = tf.reshape(inputs[ITEM_ID], [-1])
        if training:
            inputs = towers.drop_ids(inputs, self._oov_ids, self._id_dropout)
        return self.task(
            self.query_vectors(inputs), self.candidate_vectors(inputs),
            candidate_sampling_probability=tf.gather(self._item_probability, item_ids),
            candidate_ids=item_ids, compute_metrics=False)


def build_model(hparams: config.TwoTowerConfig, inputs: training.TrainingInputs
                ) -> TwoTowerModel:
    """The towers of `inputs`' features with `hparams`' sizes, and the task."""

    def dim_of(feature: TransformedFeature) -> int:
        wide = feature.table in (features.ITEM_ID, features.USER_ID)
        return hparams.embedding_dim if wide else hparams.feature_dim

    shared = (ITEM_ID,) if hparams.share_item_embeddings else ()
    tables = towers.make_tables(inputs.candidate_features + inputs.query_features,
                                dim_of, shared)

    def tower(tower_features, name):
        return towers.Tower(tower_features, tables, hparams.hidden_layers,
                            hparams.embedding_dim, hparams.normalize, name=name)

    return TwoTowerModel(
        tower(inputs.query_features, "query_tower"),
        tower(inputs.candidate_features, "candidate_tower"),
        features.item_probability(inputs.transform_output, inputs.num_items)
        ** hparams.logq_weight,
        hparams.temperature,
        features.oov_ids(inputs.dataset, inputs.query_features + inputs.candidate_features),
        hparams.id_dropout)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: trains the two-tower model and saves it.

    fn_args.custom_config: {"dataset": DatasetConfig.to_dict(),
    **config.TwoTowerConfig fields}; training runs `epochs` passes over the
    train split.
    """
    training.train_and_save(
        fn_args, config.TwoTowerConfig.from_custom_config(fn_args.custom_config), build_model)
