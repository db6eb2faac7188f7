"""Choosing ScaNN settings that meet a recall target, measured, not guessed.

An approximate index trades recall for speed. `build_searcher` builds one
ScaNN tree-AH searcher (ScaNN's TensorFlow op) over the item embeddings;
`tune` searches it with a growing number of leaves, measures each setting's
recall@k against exact search and its single-query latency on held-out
queries, and returns the fastest setting that meets the recall target. The
served model keeps this very searcher and the chosen number of leaves
(index.py), so what was measured is what is served. No TFX here.
"""

import dataclasses
import math
import time
from typing import List, Optional, Sequence

import numpy as np

# Shares of the tree's leaves searched, cheapest first.
_SEARCH_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_LATENCY_QUERIES = 200


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """A ScaNN tree-AH index: leaves, leaves searched, exactly re-scored."""

    num_leaves: int
    num_leaves_to_search: int
    num_reordering_candidates: int


@dataclasses.dataclass(frozen=True)
class Trial:
    settings: IndexSettings
    recall: float          # recall@k against exact search, mean over queries
    latency_ms_p50: float  # median single-query search time
    latency_ms_p99: float
    # Share of queries that get all serving_k neighbours. Searching few leaves
    # of a small corpus can reach fewer than k items; ScaNN pads the rest.
    full_share: float = 1.0


@dataclasses.dataclass
class TuningResult:
    chosen: Optional[Trial]  # None: no setting met the recall target
    trials: List[Trial]
    exact_latency_ms_p50: float
    num_queries: int


def candidate_settings(num_items: int, serving_k: int) -> List[IndexSettings]:
    """Settings to try, cheapest first.

    About sqrt(N) leaves (at least enough that each holds a few items), a
    growing share of them searched, and the best max(4 k, 100) candidates
    re-scored exactly (so the served scores are exact dot products).
    """
    num_leaves = max(1, min(num_items // 8 or 1, round(math.sqrt(num_items))))
    reorder = min(num_items, max(4 * serving_k, 100))
    searched = sorted({max(1, min(num_leaves, math.ceil(num_leaves * f)))
                       for f in _SEARCH_FRACTIONS})
    return [IndexSettings(num_leaves, n, reorder) for n in searched]


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int,
                block_entries: int = 1 << 24) -> np.ndarray:
    """int [queries, k]: exact dot-product top-k (brute force), best first.

    Queries go in blocks of about `block_entries` scores: at a million items
    500 queries at once held 2 GB of scores and 4 GB of partition indices."""
    rows = max(1, block_entries // max(len(items), 1))
    blocks = [_exact_top_k_block(queries[start:start + rows], items, k)
              for start in range(0, len(queries), rows)]
    return np.concatenate(blocks) if blocks else np.zeros((0, k), np.int64)


def _exact_top_k_block(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ items.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[:k]) & set(e)) / k
                          for a, e in zip(approximate, exact)]))


def _time_single_queries(search, queries: np.ndarray) -> np.ndarray:
    """Milliseconds per single query, one measurement each."""
    times = []
    for query in queries[:_LATENCY_QUERIES]:
        start = time.perf_counter()
        search(query)
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def build_searcher(items: np.ndarray, serving_k: int, settings: IndexSettings):
    """A ScaNN searcher (TensorFlow op) whose tree has `settings.num_leaves`.

    How many leaves a query visits is chosen per search, so one searcher
    serves every candidate setting with the same num_leaves.
    """
    import tensorflow as tf
    from scann.scann_ops.py import scann_ops

    builder = scann_ops.builder(tf.constant(items, tf.float32), serving_k, "dot_product")
    builder = builder.tree(num_leaves=settings.num_leaves,
                           num_leaves_to_search=settings.num_leaves,
                           training_sample_size=len(items))
    return (builder.score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(settings.num_reordering_candidates).build())


def full_result_share(searcher, queries: np.ndarray, k: int,
                      leaves_to_search: int) -> float:
    """Share of queries for which the search returns k real neighbours."""
    import tensorflow as tf

    distances = searcher.search_batched(tf.constant(queries, tf.float32),
                                        final_num_neighbors=k,
                                        leaves_to_search=leaves_to_search).distances
    return float(np.mean(np.all(np.isfinite(distances.numpy()), axis=1)))


def search(searcher, queries: np.ndarray, k: int, leaves_to_search: int) -> np.ndarray:
    """int [queries, k] approximate top-k indices."""
    import tensorflow as tf

    return searcher.search_batched(tf.constant(queries, tf.float32),
                                   final_num_neighbors=k,
                                   leaves_to_search=leaves_to_search).indices.numpy()


def tune(searcher, items: np.ndarray, queries: np.ndarray,
         candidates: Sequence[IndexSettings], recall_k: int = 10,
         target_recall: float = 0.95, serving_k: int = 0) -> TuningResult:
    """The fastest candidate whose recall@recall_k meets the target and that
    returns `serving_k` real neighbours for every query (if serving_k > 0).

    Args:
      searcher: from build_searcher with the candidates' num_leaves.
      items: float32 [items, dim] candidate embeddings (the index content).
      queries: float32 [queries, dim] held-out query embeddings.
      candidates: settings to try (see candidate_settings).
    """
    items = np.ascontiguousarray(items, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    recall_k = min(recall_k, len(items))
    exact = exact_top_k(queries, items, recall_k)
    exact_ms = _time_single_queries(lambda q: exact_top_k(q[None], items, recall_k),
                                    queries)
    trials = []
    for settings in candidates:
        leaves = settings.num_leaves_to_search
        recall = recall_at_k(search(searcher, queries, recall_k, leaves), exact)
        latency = _time_single_queries(
            lambda q: search(searcher, q[None], recall_k, leaves), queries)
        full = (full_result_share(searcher, queries, min(serving_k, len(items)), leaves)
                if serving_k else 1.0)
        trials.append(Trial(settings, recall, float(np.percentile(latency, 50)),
                            float(np.percentile(latency, 99)), full))
    meeting = [t for t in trials if t.recall >= target_recall and t.full_share == 1.0]
    chosen = min(meeting, key=lambda t: t.latency_ms_p50) if meeting else None
    return TuningResult(chosen, trials, float(np.percentile(exact_ms, 50)),
                        len(queries))
