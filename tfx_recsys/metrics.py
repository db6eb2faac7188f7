"""Top-K retrieval metrics over a whole item corpus, in NumPy.

The one implementation used for every model and baseline, so numbers are
comparable. Definitions (per user u with relevant items R_u, its eval items,
and a ranking of the corpus from which u's train items are excluded):
  recall@K    = |top_K ∩ R_u| / |R_u|
  ndcg@K      = DCG@K / IDCG@K with binary gains, DCG = Σ 1/log2(rank + 2)
                over hits at 0-based rank, IDCG over min(K, |R_u|) hits
  hit_rate@K  = 1 if top_K ∩ R_u is not empty
each averaged over users with at least one relevant item; and, as TensorFlow
Recommenders' FactorizedTopK defines it, per (user, eval item) pair with no
exclusion of seen items:
  top_k_accuracy@K = 1 if fewer than K corpus items score strictly higher
                     than the eval item.
"""

from typing import Dict, Iterable, List, Sequence

import numpy as np


def top_k_items(scores: np.ndarray, k: int, exclude: Sequence[Iterable[int]] = ()
                ) -> np.ndarray:
    """Indices of the k best items per row, best first.

    Args:
      scores: float [users, items].
      k: how many to return (at most `items`).
      exclude: per row, item indices that must not be returned (seen items).
    Returns:
      int [users, k]. Ties are broken by lower item index, so results are
      deterministic.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    for row, items in enumerate(exclude):
        scores[row, list(items)] = -np.inf
    k = min(k, scores.shape[1])
    # Stable sort on the negated scores keeps lower indices first among ties.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _dcg_discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)


def ranking_metrics(top_items: np.ndarray, relevant: List[Iterable[int]],
                    ks: Sequence[int]) -> Dict[str, float]:
    """recall@K, ndcg@K and hit_rate@K for each K, averaged over users.

    Args:
      top_items: int [users, >= max(ks)] ranked item indices per user.
      relevant: per user, the set of relevant item indices (may be empty:
        such users are left out of the averages).
      ks: cut-offs.
    """
    discounts = _dcg_discounts(max(ks))
    sums = {f"{name}@{k}": 0.0 for k in ks
            for name in ("recall", "ndcg", "hit_rate")}
    users = 0
    for ranked, rel in zip(top_items, relevant):
        rel = set(rel)
        if not rel:
            continue
        users += 1
        hits = np.fromiter((item in rel for item in ranked[:max(ks)]), bool,
                           count=min(len(ranked), max(ks)))
        for k in ks:
            hits_k = hits[:k]
            num_hits = hits_k.sum()
            sums[f"recall@{k}"] += num_hits / len(rel)
            sums[f"hit_rate@{k}"] += float(num_hits > 0)
            ideal = discounts[:min(k, len(rel))].sum()
            sums[f"ndcg@{k}"] += (discounts[:len(hits_k)][hits_k].sum() / ideal)
    return {name: (value / users if users else 0.0) for name, value in sums.items()}


def top_k_accuracy(scores: np.ndarray, positives: List[Iterable[int]],
                   ks: Sequence[int]) -> Dict[str, float]:
    """TFRS FactorizedTopK accuracy over (user, positive item) pairs.

    Args:
      scores: float [users, items], no exclusions applied.
      positives: per user, the item indices of their eval interactions
        (an item listed twice counts twice).
    """
    counts = {k: 0 for k in ks}
    pairs = 0
    for row, items in zip(scores, positives):
        for item in items:
            higher = int(np.count_nonzero(row > row[item]))
            pairs += 1
            for k in ks:
                counts[k] += higher < k
    return {f"top_k_accuracy@{k}": (counts[k] / pairs if pairs else 0.0)
            for k in ks}


def evaluate_scores(scores: np.ndarray, seen: List[Iterable[int]],
                    relevant: List[List[int]], ks: Sequence[int]
                    ) -> Dict[str, float]:
    """All metrics of the module for one score matrix [users, items]."""
    ranked = top_k_items(scores, max(ks), exclude=seen)
    return {**ranking_metrics(ranked, relevant, ks),
            **top_k_accuracy(scores, relevant, ks)}
