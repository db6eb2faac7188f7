"""The refit's sanity check: is the model refit on every interaction at least
as good as the evaluated model on the eval split it has now seen?

No TFX here. The pusher ships a model retrained on all interactions (the
final fit) after the evaluator blessed the one trained on the train split.
Nothing can evaluate the refit on data it has not seen, but a refit that
comes out broken (a diverged fit, a wrong vocabulary) shows on the eval
split: having trained on those interactions, it must rank them at least as
well as the evaluated model, which never saw them. Both models are scored
the same way: exact search over the whole corpus, each user's train items
excluded, recall@k of their eval items.
"""

import dataclasses
from typing import Dict, Iterable, List, Mapping, Sequence, Set

import numpy as np

from tfx_recsys import metrics

# Scores held at once while scoring users against the corpus (float32).
_BLOCK_SCORES = 1 << 24


@dataclasses.dataclass(frozen=True)
class RefitCheck:
    """recall@k of both models on the same eval users; passed: refit >= evaluated."""

    k: int
    num_users: int
    evaluated_recall: float
    refit_recall: float

    @property
    def passed(self) -> bool:
        return self.refit_recall >= self.evaluated_recall

    def reason(self) -> str:
        return (f"the refit model's recall@{self.k} on the eval split it was trained "
                f"on, {self.refit_recall:.4f}, is below the evaluated model's "
                f"{self.evaluated_recall:.4f} ({self.num_users} users): the refit "
                f"looks broken")


def eval_recall(queries: np.ndarray, item_embeddings: np.ndarray,
                seen: Sequence[Iterable[int]], relevant: Sequence[Set[int]],
                k: int) -> float:
    """Mean recall@k of `relevant` items over users.

    queries: float [users, dim]; item_embeddings: float [items, dim];
    seen: per user, item indices never ranked; relevant: per user, the
    item indices that count as hits (users with none are skipped).
    """
    rows_per_block = max(1, _BLOCK_SCORES // max(len(item_embeddings), 1))
    recalls = []
    for start in range(0, len(queries), rows_per_block):
        block = slice(start, start + rows_per_block)
        scores = queries[block] @ item_embeddings.T
        ranked = metrics.top_k_items(scores, k, exclude=seen[block])
        for row, items in zip(ranked, relevant[block]):
            if items:
                recalls.append(metrics.user_accuracy(row, items, [k])[f"recall@{k}"])
    return float(np.mean(recalls)) if recalls else 0.0


def item_sets(user_ids: Sequence[str], pairs: Iterable[tuple],
              item_index: Mapping[str, int]) -> List[Set[int]]:
    """Per user of `user_ids`, the corpus indices of their items among
    (user, item) `pairs` (items outside the corpus are left out)."""
    position: Dict[str, int] = {user: row for row, user in enumerate(user_ids)}
    sets: List[Set[int]] = [set() for _ in user_ids]
    for user, item in pairs:
        row = position.get(user)
        if row is not None and item in item_index:
            sets[row].add(item_index[item])
    return sets


def check(evaluated_queries: np.ndarray, evaluated_items: np.ndarray,
          refit_queries: np.ndarray, refit_items: np.ndarray,
          seen: Sequence[Iterable[int]], relevant: Sequence[Set[int]], k: int
          ) -> RefitCheck:
    """Both models' eval recall@k on the same users (see eval_recall); k at
    most a tenth of the corpus, since a list that covers the corpus finds
    every item whatever the model."""
    k = max(1, min(k, len(refit_items) // 10))
    return RefitCheck(
        k=k, num_users=sum(1 for items in relevant if items),
        evaluated_recall=eval_recall(evaluated_queries, evaluated_items, seen, relevant, k),
        refit_recall=eval_recall(refit_queries, refit_items, seen, relevant, k))
