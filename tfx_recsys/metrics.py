"""Top-K retrieval metrics over a whole item corpus, in NumPy.

The one implementation used for every model and baseline, so numbers are
comparable. Users are scored one batch at a time and folded into a mergeable
`MetricAccumulator`, so the same code runs in a Beam CombineFn (large eval
sets) and in memory (tests, benchmarks).

Definitions, per eval user u with relevant items R_u (their eval items) and a
ranking of the whole corpus from which u's train items are excluded:
  recall@K     = |top_K ∩ R_u| / |R_u|
  ndcg@K       = DCG@K / IDCG@K with binary gains, DCG = Σ 1/log2(rank + 2)
                 over hits at 0-based rank, IDCG over min(K, |R_u|) hits
  hit_rate@K   = 1 if top_K ∩ R_u is not empty
  mrr@K        = 1 / (1 + rank of the first hit), 0 if none in top_K
  novelty@K    = mean popularity rank (1 = most popular in train) of top_K
  diversity@K  = mean pairwise genre distance (1 - Jaccard) within top_K
each averaged over users with at least one relevant item;
  coverage@K   = share of the corpus in at least one user's top_K;
and, as TensorFlow Recommenders' FactorizedTopK defines it, per (user, eval
item) pair with no exclusion of seen items:
  top_k_accuracy@K = 1 if fewer than K corpus items score strictly higher
                     than the eval item.
"""

import itertools
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence

import numpy as np

BEYOND_ACCURACY_K = 10  # novelty and diversity are reported at this cut-off


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
    # float32 scores stay float32 (a float64 copy orders them the same, at
    # twice the memory and time: [32, 1M] blocks at a million items).
    scores = np.asarray(scores)
    scores = np.array(scores, dtype=np.result_type(scores.dtype, np.float32), copy=True)
    for row, items in enumerate(exclude):
        scores[row, list(items)] = -np.inf
    num_items = scores.shape[1]
    k = min(k, num_items)
    result = np.empty((scores.shape[0], k), dtype=np.int64)
    for row, row_scores in enumerate(scores):
        # The k-th best score in O(items); then only items at or above it
        # are sorted, by (-score, index), so ties resolve to lower indices.
        kth_best = np.partition(row_scores, num_items - k)[num_items - k]
        pool = np.flatnonzero(row_scores >= kth_best)
        result[row] = pool[np.lexsort((pool, -row_scores[pool]))][:k]
    return result


def _dcg_discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)


def user_accuracy(ranked: np.ndarray, relevant: Iterable[int],
                  ks: Sequence[int]) -> Dict[str, float]:
    """recall, ndcg, hit_rate and mrr at each K for one user's ranking."""
    relevant = set(relevant)
    max_k = max(ks)
    hits = np.fromiter((item in relevant for item in ranked[:max_k]), bool,
                       count=min(len(ranked), max_k))
    discounts = _dcg_discounts(max_k)
    first_hit = int(np.argmax(hits)) if hits.any() else None
    values = {}
    for k in ks:
        hits_k = hits[:k]
        num_hits = int(hits_k.sum())
        values[f"recall@{k}"] = num_hits / len(relevant)
        values[f"hit_rate@{k}"] = float(num_hits > 0)
        ideal = discounts[:min(k, len(relevant))].sum()
        values[f"ndcg@{k}"] = float(discounts[:len(hits_k)][hits_k].sum() / ideal)
        values[f"mrr@{k}"] = (1.0 / (first_hit + 1)
                              if first_hit is not None and first_hit < k else 0.0)
    return values


def strictly_higher_counts(scores_row: np.ndarray, items: Iterable[int]) -> List[int]:
    """For each item, how many corpus items score strictly higher (no exclusion)."""
    return [int(np.count_nonzero(scores_row > scores_row[item])) for item in items]


def beyond_accuracy(ranked: np.ndarray, popularity_rank: np.ndarray,
                    item_genres: Optional[Sequence[FrozenSet[str]]],
                    k: int = BEYOND_ACCURACY_K) -> Dict[str, float]:
    """novelty@k and (with genres) diversity@k of one user's top-k."""
    top = ranked[:k]
    values = {f"novelty@{k}": float(np.mean(popularity_rank[top]))}
    if item_genres is not None:
        distances = []
        for a, b in itertools.combinations(top, 2):
            union = item_genres[a] | item_genres[b]
            same = len(item_genres[a] & item_genres[b]) / len(union) if union else 1.0
            distances.append(1.0 - same)
        values[f"diversity@{k}"] = float(np.mean(distances)) if distances else 0.0
    return values


def popularity_ranks(train_counts: np.ndarray) -> np.ndarray:
    """1-based rank of each item by train count (most popular = 1; ties by index)."""
    order = np.lexsort((np.arange(len(train_counts)), -train_counts))
    ranks = np.empty(len(train_counts), dtype=np.float64)
    ranks[order] = np.arange(1, len(train_counts) + 1)
    return ranks


class MetricAccumulator:
    """Mergeable sums behind the per-user, per-pair and coverage metrics.

    `add_user` folds in one user; `merge` combines partial results (Beam's
    combiner lifting); `result` gives the averages as a flat dict, plus
    `num_users` and `num_pairs`.
    """

    def __init__(self, ks: Sequence[int]):
        self.ks = tuple(ks)
        self.sums: Dict[str, float] = {}
        self.users = 0
        self.pairs = 0
        self.pair_hits = {k: 0 for k in self.ks}
        self.recommended = {k: set() for k in self.ks}

    def add_user(self, values: Dict[str, float], higher_counts: Sequence[int],
                 ranked: np.ndarray) -> None:
        self.users += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.pairs += len(higher_counts)
        for k in self.ks:
            self.pair_hits[k] += sum(count < k for count in higher_counts)
            self.recommended[k].update(int(i) for i in ranked[:k])

    def merge(self, other: "MetricAccumulator") -> "MetricAccumulator":
        self.users += other.users
        self.pairs += other.pairs
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        for k in self.ks:
            self.pair_hits[k] += other.pair_hits[k]
            self.recommended[k] |= other.recommended[k]
        return self

    def result(self, num_items: int) -> Dict[str, float]:
        out = {name: value / self.users for name, value in self.sums.items()} \
            if self.users else {}
        for k in self.ks:
            out[f"top_k_accuracy@{k}"] = self.pair_hits[k] / self.pairs if self.pairs else 0.0
            out[f"coverage@{k}"] = len(self.recommended[k]) / num_items if num_items else 0.0
        out["num_users"] = self.users
        out["num_pairs"] = self.pairs
        out["num_items"] = num_items
        return out


class PairRecallAccumulator:
    """Micro-averaged recall@K over (user, eval item) pairs: for item slices.

    A pair is a hit at K if the item is in the user's top-K (seen items
    excluded). Slicing by item (e.g. popularity bucket) needs pairs, since a
    user's eval items can fall into different slices.
    """

    def __init__(self, ks: Sequence[int]):
        self.ks = tuple(ks)
        self.pairs = 0
        self.hits = {k: 0 for k in self.ks}

    def add_pair(self, item: int, ranked: np.ndarray) -> None:
        self.pairs += 1
        position = np.flatnonzero(ranked == item)
        for k in self.ks:
            self.hits[k] += int(position.size > 0 and position[0] < k)

    def merge(self, other: "PairRecallAccumulator") -> "PairRecallAccumulator":
        self.pairs += other.pairs
        for k in self.ks:
            self.hits[k] += other.hits[k]
        return self

    def result(self, num_items: int = 0) -> Dict[str, float]:
        out = {f"recall@{k}": (self.hits[k] / self.pairs if self.pairs else 0.0)
               for k in self.ks}
        out["num_pairs"] = self.pairs
        return out


def evaluate_scores(scores: np.ndarray, seen: List[Iterable[int]],
                    relevant: List[List[int]], ks: Sequence[int],
                    train_counts: Optional[np.ndarray] = None,
                    item_genres: Optional[Sequence[FrozenSet[str]]] = None
                    ) -> Dict[str, float]:
    """All overall metrics for one in-memory score matrix [users, items]."""
    num_items = scores.shape[1]
    ranked = top_k_items(scores, max(max(ks), BEYOND_ACCURACY_K), exclude=seen)
    ranks = popularity_ranks(train_counts if train_counts is not None
                             else np.zeros(num_items))
    accumulator = MetricAccumulator(ks)
    for row, rel in enumerate(relevant):
        if not rel:
            continue
        values = user_accuracy(ranked[row], rel, ks)
        values.update(beyond_accuracy(ranked[row], ranks, item_genres))
        accumulator.add_user(values, strictly_higher_counts(scores[row], rel), ranked[row])
    return accumulator.result(num_items)
