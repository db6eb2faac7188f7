"""The served model: raw user features -> ScaNN top-K over the item corpus.

No TFX here. `build_recommender` wraps the Trainer's query signature and a
ScaNN index of every item's candidate embedding into one tf.Module whose
`serving_default` signature is the serving contract:

  inputs:  user_id string [batch], age int64 [batch], gender, occupation,
           zip_code string [batch] (the users.csv columns)
  outputs: item_ids string [batch, k], scores float32 [batch, k]

The SavedModel needs only TensorFlow and the ScaNN op (`import scann`) to load.
"""

import math
from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfx_recsys.models import two_tower

SERVING_SIGNATURE = "serving_default"
SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])


def scann_settings(num_items: int, k: int) -> Dict[str, int]:
    """Tree and reordering sizes for a corpus of `num_items`.

    About sqrt(N) leaves; enough leaves searched that the searched points
    cover at least 20 k candidates (or 5% of the corpus); exact re-scoring of
    the best 4 k. Small corpora are therefore searched (nearly) exhaustively.
    """
    num_leaves = max(1, min(num_items, round(math.sqrt(num_items))))
    fraction = min(1.0, max(0.05, 20.0 * k / max(num_items, 1)))
    return {
        "num_leaves": num_leaves,
        "num_leaves_to_search": max(1, min(num_leaves, math.ceil(num_leaves * fraction))),
        "num_reordering_candidates": min(num_items, 4 * k),
    }


def build_index(item_ids, item_embeddings: np.ndarray, k: int):
    """A TFRS ScaNN layer over the corpus (dot-product similarity)."""
    settings = scann_settings(len(item_ids), k)
    index = tfrs.layers.factorized_top_k.ScaNN(
        k=k, distance_measure="dot_product", **settings)
    index.index(tf.constant(item_embeddings, tf.float32),
                tf.constant(list(item_ids), tf.string))
    return index


class ScannRecommender(tf.Module):
    """The query tower of the Trainer's model followed by the ScaNN index."""

    def __init__(self, trainer_model, index):
        super().__init__()
        self.trainer_model = trainer_model
        self.index = index

    @tf.function(input_signature=two_tower.QUERY_INPUT_SIGNATURE)
    def serve(self, user_id, age, gender, occupation, zip_code):
        queries = self.trainer_model.query_embedding(
            user_id=user_id, age=age, gender=gender, occupation=occupation,
            zip_code=zip_code)["embedding"]
        scores, item_ids = self.index(queries)
        return {"item_ids": item_ids, "scores": scores}


def save(recommender: ScannRecommender, path: str) -> None:
    tf.saved_model.save(recommender, path,
                        signatures={SERVING_SIGNATURE: recommender.serve},
                        options=SAVE_OPTIONS)


def recall_against_exact(index, queries: np.ndarray,
                         item_embeddings: np.ndarray, item_ids, k: int = 10) -> float:
    """Mean overlap of ScaNN's top-k with exact dot-product search's top-k."""
    if len(queries) == 0:
        return float("nan")
    _, approx = index(tf.constant(queries, tf.float32), k=k)
    exact = np.argsort(-(queries @ item_embeddings.T), axis=1, kind="stable")[:, :k]
    ids = np.asarray(list(item_ids), dtype=object)
    overlap = [len(set(a.decode() for a in row_approx) & set(ids[row_exact])) / k
               for row_approx, row_exact in zip(approx.numpy(), exact)]
    return float(np.mean(overlap))
