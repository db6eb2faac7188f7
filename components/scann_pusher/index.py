"""The served models: raw user features -> top-K over the item corpus.

No TFX here. Both models wrap the Trainer's query signature and one index of
every item's candidate embedding in a tf.Module whose `serving_default`
signature is the serving contract:

  inputs:  user_id string [batch], age int64 [batch], gender, occupation,
           zip_code string [batch] (the users.csv columns)
  outputs: item_ids string [batch, k], scores float32 [batch, k]

`ScannRecommender` searches a ScaNN index (needs TensorFlow plus the ScaNN op:
`import scann` before loading); `BruteForceRecommender` scores every item
exactly with a matrix product (plain TensorFlow), the fallback for servers
without the ScaNN op and the reference the ScaNN model is measured against.
"""

import time
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from tfx_recsys.models import two_tower

SERVING_SIGNATURE = "serving_default"
SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])


class ScannIndex(tf.Module):
    """A built ScaNN searcher, the item ids, and how many leaves to search.

    Keeps the very searcher `tuning.tune` measured, so the served recall is
    the measured one. Calling it maps queries [batch, dim] to
    (scores [batch, k], item ids [batch, k]).
    """

    def __init__(self, searcher, item_ids: Sequence[str], k: int,
                 leaves_to_search: int):
        super().__init__()
        self.state = searcher.serialize_to_module()
        self.item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False)
        self.k = k
        self.leaves_to_search = leaves_to_search

    def __call__(self, queries, k=None):
        from scann.scann_ops.py import scann_ops

        searcher = scann_ops.searcher_from_module(self.state)
        result = searcher.search_batched_parallel(
            queries, final_num_neighbors=k or self.k,
            leaves_to_search=self.leaves_to_search)
        return result.distances, tf.gather(self.item_ids, result.indices)


class _Recommender(tf.Module):
    """The Trainer's query tower followed by a top-k search."""

    def __init__(self, trainer_model):
        super().__init__()
        self.trainer_model = trainer_model

    def _queries(self, user_id, age, gender, occupation, zip_code):
        return self.trainer_model.query_embedding(
            user_id=user_id, age=age, gender=gender, occupation=occupation,
            zip_code=zip_code)["embedding"]


class ScannRecommender(_Recommender):
    def __init__(self, trainer_model, index):
        super().__init__(trainer_model)
        self.index = index

    @tf.function(input_signature=two_tower.QUERY_INPUT_SIGNATURE)
    def serve(self, user_id, age, gender, occupation, zip_code):
        scores, item_ids = self.index(
            self._queries(user_id, age, gender, occupation, zip_code))
        return {"item_ids": item_ids, "scores": scores}


class BruteForceRecommender(_Recommender):
    """Exact top-k: scores = queries [batch, dim] @ items [items, dim]^T."""

    def __init__(self, trainer_model, item_ids: Sequence[str],
                 item_embeddings: np.ndarray, k: int):
        super().__init__(trainer_model)
        self.item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False)
        self.item_embeddings = tf.Variable(item_embeddings.astype(np.float32),
                                           trainable=False)
        self.k = k

    @tf.function(input_signature=two_tower.QUERY_INPUT_SIGNATURE)
    def serve(self, user_id, age, gender, occupation, zip_code):
        queries = self._queries(user_id, age, gender, occupation, zip_code)
        scores = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, top.indices), "scores": top.values}


def save(recommender: _Recommender, path: str) -> None:
    tf.saved_model.save(recommender, path,
                        signatures={SERVING_SIGNATURE: recommender.serve},
                        options=SAVE_OPTIONS)


def recall_against_exact(index: ScannIndex, queries: np.ndarray,
                         item_embeddings: np.ndarray, item_ids: Sequence[str],
                         k: int = 10) -> float:
    """Mean overlap of the index's top-k with exact search's top-k."""
    from tfx_recsys.components.scann_pusher import tuning

    if len(queries) == 0:
        return float("nan")
    _, approximate = index(tf.constant(queries, tf.float32), k=k)
    position = {item: i for i, item in enumerate(item_ids)}
    approximate = np.array([[position[i.decode()] for i in row]
                            for row in approximate.numpy()])
    return tuning.recall_at_k(approximate, tuning.exact_top_k(queries, item_embeddings, k))


def signature_latency_ms(saved_model_dir: str, user_rows: Sequence[Dict[str, object]],
                         repeats: int = 100) -> Dict[str, float]:
    """p50/p99 of one-user calls of a saved model's serving signature.

    `user_rows` are raw request columns for single users ({feature: value}).
    """
    model = tf.saved_model.load(saved_model_dir)
    serve = model.signatures[SERVING_SIGNATURE]
    specs = serve.structured_input_signature[1]
    requests = [{name: tf.constant([value], specs[name].dtype)
                 for name, value in row.items()} for row in user_rows]
    serve(**requests[0])  # warm-up: traces and initializes tables
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        serve(**requests[i % len(requests)])
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}
