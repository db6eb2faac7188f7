"""Pure logic of RetrievalEvaluator: eval data, baseline, blessing decision.

No TFX here; the executor reads artifacts and calls these functions.
"""

import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tfx_recsys import metrics
from tfx_recsys.examples_io import scalar


@dataclasses.dataclass
class EvalData:
    """Everything the evaluation needs, indexed by corpus position.

    item_rows: the corpus, one raw row per item of items.csv.
    user_rows: one raw row per eval user (their user features).
    seen: per eval user, corpus indices of their train items (excluded
      from their ranking).
    relevant: per eval user, corpus indices of their eval items.
    train_counts: int [items], training interactions per corpus item.
    """

    item_rows: List[dict]
    user_rows: List[dict]
    seen: List[List[int]]
    relevant: List[List[int]]
    train_counts: np.ndarray


def build_eval_data(item_rows: Sequence[dict], train_rows, eval_rows) -> EvalData:
    """Groups train and eval interactions by user over the item corpus."""
    index = {scalar(row, "item_id"): i for i, row in enumerate(item_rows)}
    counts = np.zeros(len(item_rows), np.int64)
    seen_by_user: Dict[str, List[int]] = {}
    for row in train_rows:
        item = index[scalar(row, "item_id")]
        counts[item] += 1
        seen_by_user.setdefault(scalar(row, "user_id"), []).append(item)
    relevant_by_user: Dict[str, List[int]] = {}
    user_row: Dict[str, dict] = {}
    for row in eval_rows:
        user = scalar(row, "user_id")
        relevant_by_user.setdefault(user, []).append(index[scalar(row, "item_id")])
        user_row.setdefault(user, row)
    users = sorted(relevant_by_user)
    return EvalData(
        item_rows=list(item_rows),
        user_rows=[user_row[u] for u in users],
        seen=[seen_by_user.get(u, []) for u in users],
        relevant=[relevant_by_user[u] for u in users],
        train_counts=counts)


def most_popular_scores(data: EvalData) -> np.ndarray:
    """The most-popular baseline: every user scores items by train count."""
    return np.tile(data.train_counts.astype(np.float32),
                   (len(data.user_rows), 1))


def model_scores(query_embeddings: np.ndarray,
                 item_embeddings: np.ndarray) -> np.ndarray:
    """Dot-product scores float [users, items] (exact, the whole corpus)."""
    return query_embeddings @ item_embeddings.T


def evaluate(scores: np.ndarray, data: EvalData, ks: Sequence[int]) -> Dict[str, float]:
    return metrics.evaluate_scores(scores, data.seen, data.relevant, ks)


def decide_blessing(model: Dict[str, float], baseline: Dict[str, float],
                    metric: str) -> Tuple[bool, str]:
    """Blessed only if the model beats the baseline on `metric` (strictly)."""
    if metric not in model:
        raise ValueError(f"blessing metric {metric!r} is not computed; "
                         f"choose one of {sorted(model)}")
    if model[metric] > baseline[metric]:
        return True, (f"{metric} {model[metric]:.4f} beats most-popular "
                      f"{baseline[metric]:.4f}")
    return False, (f"{metric} {model[metric]:.4f} does not beat most-popular "
                   f"{baseline[metric]:.4f}")
