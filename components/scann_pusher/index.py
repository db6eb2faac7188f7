"""The retrieval layer: raw user features -> top-K over the item corpus.

The pusher serves tfx_recsys/serving/two_stage.py's TwoStageRecommender, whose
retrieval stage is a `ScannIndex` from here; the retrieval-only recommenders
below are what `make bench-serving` measures the index layer with.

No TFX here. Both models wrap the Trainer's query signatures and one index of
every item's candidate embedding in a tf.Module with two signatures, whose
inputs are those of the Trainer model's query signatures (the dataset
config's user columns, see tfx_recsys/models/export.py):

  serving_default(user_id, <each user feature>): the user's history is
      looked up inside the model (the Trainer's query_embedding);
  serving_with_history(user_id, <each user feature>, history string
      [batch, None] padded with ""): history from the request;
  outputs: item_ids string [batch, k], scores float32 [batch, k].

`ScannRecommender` searches a ScaNN index (needs TensorFlow plus the ScaNN op:
`import scann` before loading); `BruteForceRecommender` scores every item
exactly with a matrix product (plain TensorFlow), the fallback for servers
without the ScaNN op and the reference the ScaNN model is measured against.
"""

import os
import time
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from tfx_recsys import embedding
from tfx_recsys.serving.contract import SERVING_SIGNATURE, SERVING_WITH_HISTORY_SIGNATURE

SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
DATASET_CONFIG_FILE = os.path.join("assets.extra", "dataset.json")


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
    """The Trainer's query signatures followed by a top-k search (`_search`,
    query embeddings [batch, dim] -> {"item_ids", "scores"} [batch, k])."""

    def __init__(self, trainer_model):
        super().__init__()
        self.trainer_model = trainer_model

    def _search(self, queries):
        raise NotImplementedError

    def _embed(self, signature: str, inputs):
        return self.trainer_model.signatures[signature](**inputs)["embedding"]

    @tf.function
    def serve(self, inputs):
        return self._search(self._embed(embedding.QUERY_SIGNATURE, inputs))

    @tf.function
    def serve_with_history(self, inputs):
        return self._search(self._embed(embedding.QUERY_WITH_HISTORY_SIGNATURE, inputs))

    def signatures(self) -> Dict[str, object]:
        """Concrete functions by name, with the Trainer model's query inputs."""
        def traced(function, query_signature: str):
            return function.get_concrete_function(
                embedding.input_specs(self.trainer_model, query_signature))

        return {SERVING_SIGNATURE: traced(self.serve, embedding.QUERY_SIGNATURE),
                SERVING_WITH_HISTORY_SIGNATURE: traced(
                    self.serve_with_history, embedding.QUERY_WITH_HISTORY_SIGNATURE)}


class ScannRecommender(_Recommender):
    def __init__(self, trainer_model, index):
        super().__init__(trainer_model)
        self.index = index

    def _search(self, queries):
        scores, item_ids = self.index(queries)
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

    def _search(self, queries):
        scores = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, top.indices), "scores": top.values}


def save(recommender, path: str) -> None:
    """Writes a served model (this module's, or two_stage.TwoStageRecommender),
    and beside it the retrieval Trainer's dataset config."""
    tf.saved_model.save(recommender, path, signatures=recommender.signatures(),
                        options=SAVE_OPTIONS)
    retrieval_model = getattr(recommender, "retrieval_model", None) or \
        recommender.trainer_model
    config_path = os.path.join(path, DATASET_CONFIG_FILE)
    tf.io.gfile.makedirs(os.path.dirname(config_path))
    with tf.io.gfile.GFile(config_path, "w") as f:
        f.write(embedding.dataset_of(retrieval_model).to_json())


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

    `user_rows` are raw request columns for single users ({feature: value});
    the signature's inputs are taken from them (absent or None: the missing
    value of the input's type), other entries are ignored.
    """
    model = tf.saved_model.load(saved_model_dir)
    serve = model.signatures[SERVING_SIGNATURE]
    specs = serve.structured_input_signature[1]

    def request(row):
        values = {name: row.get(name) for name in specs}
        return {name: tf.constant([embedding.missing_value(spec.dtype)
                                   if values[name] is None else values[name]], spec.dtype)
                for name, spec in specs.items()}

    requests = [request(row) for row in user_rows]
    serve(**requests[0])  # warm-up: traces and initializes tables
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        serve(**requests[i % len(requests)])
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}
