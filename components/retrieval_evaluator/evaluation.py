"""Pure logic of RetrievalEvaluator: the corpus, eval users, slices, blessing.

No TFX or Beam here; the executor wires these functions into a Beam pipeline
and the tests call them on plain values.

Slices (besides `overall`):
  user_activity:<bucket>   users by their number of train interactions
  user:cold / user:warm    users with no / some train interactions
  item_popularity:<head|torso|tail>
                           (user, eval item) pairs by the item's train
                           popularity: head items carry the first third of
                           train interactions, torso the next, tail the rest
                           (and every item never seen in train); micro-averaged
                           recall@K only, since one user's items span buckets.
"""

import dataclasses
import json
import zlib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfx_recsys import baselines, config, metrics
from tfx_recsys.examples_io import scalar

OVERALL = "overall"
ACTIVITY_EDGES = (1, 5, 20, 100)  # bucket lower bounds beyond 0
MOST_POPULAR = "most_popular"
ITEM_KNN = "item_knn"
EASE = "ease"
BASELINES = (MOST_POPULAR, ITEM_KNN, EASE)


@dataclasses.dataclass
class Corpus:
    """Every item of items.csv with what evaluation needs, by corpus index.

    item_ids: the items' ids; index: id -> corpus index. (Not the item rows:
      a million of them would travel with every copy of the corpus; the
      scoring step reads them itself, see beam_scoring._ScoreUsers.)
    train_counts: int [items], training interactions per item.
    popularity_rank: float [items], 1 = most popular in train.
    popularity_bucket: per item, 'head', 'torso' or 'tail'.
    genre_sets: per item, its categories in the diversity feature (a
      multi-valued item feature such as genres), for intra-list diversity.
    """

    item_ids: List[str]
    index: Dict[str, int]
    train_counts: np.ndarray
    popularity_rank: np.ndarray
    popularity_bucket: List[str]
    genre_sets: List[frozenset]

    @property
    def trained_items(self) -> np.ndarray:
        """int [n]: corpus indices of the items with train interactions."""
        return np.flatnonzero(self.train_counts > 0)

    def __len__(self):
        return len(self.item_ids)


@dataclasses.dataclass
class UserCase:
    """One eval user: raw features, seen (train) and relevant (eval) items.

    sampled: the NCF paper protocol's 100 items (corpus indices): the
      user's first eval item, then SAMPLED_NEGATIVES items they never
      interacted with, drawn from the items with train interactions; None
      when there are too few such items.
    """

    user_row: dict
    seen: List[int]
    relevant: List[int]
    sampled: Optional[np.ndarray] = None


def popularity_buckets(train_counts: np.ndarray) -> List[str]:
    """head / torso / tail by cumulative share of train interactions."""
    order = np.lexsort((np.arange(len(train_counts)), -train_counts))
    share_before = np.cumsum(train_counts[order]) - train_counts[order]
    total = max(int(train_counts.sum()), 1)
    buckets = [""] * len(train_counts)
    for item, before in zip(order, share_before):
        if train_counts[item] == 0 or before >= 2 * total / 3:
            buckets[item] = "tail"
        elif before >= total / 3:
            buckets[item] = "torso"
        else:
            buckets[item] = "head"
    return buckets


def build_corpus(item_rows: Sequence[dict], train_counts_by_id: Dict[str, int],
                 diversity_feature: str = "genres") -> Corpus:
    item_ids = [scalar(row, "item_id") for row in item_rows]
    index = {item_id: i for i, item_id in enumerate(item_ids)}
    unknown = set(train_counts_by_id) - set(index)
    if unknown:
        raise ValueError(f"{len(unknown)} train items are not in the item corpus, "
                         f"e.g. {sorted(unknown)[:3]}")
    counts = np.zeros(len(item_rows), np.int64)
    for item_id, count in train_counts_by_id.items():
        counts[index[item_id]] = count
    return Corpus(item_ids=item_ids, index=index, train_counts=counts,
                  popularity_rank=metrics.popularity_ranks(counts),
                  popularity_bucket=popularity_buckets(counts),
                  genre_sets=[frozenset(row.get(diversity_feature, []))
                              for row in item_rows])


def earliest_row(eval_rows: Sequence[dict]) -> dict:
    """The user's earliest eval example (ties: the lower item id)."""
    return min(eval_rows, key=lambda r: (scalar(r, "timestamp", 0),
                                         str(scalar(r, "item_id"))))


def make_user_case(train_item_ids: Iterable[str], eval_rows: Sequence[dict],
                   corpus: Corpus) -> Optional[UserCase]:
    """A user's case, or None if they have no eval interactions.

    The query is the user's earliest eval example: its features (history
    included) are what a request at the start of the eval period would carry.
    """
    if not eval_rows:
        return None
    return user_case(train_item_ids, earliest_row(eval_rows),
                     [scalar(r, "item_id") for r in eval_rows], corpus)


def user_case(train_item_ids: Iterable[str], first_row: dict,
              eval_item_ids: Sequence[str], corpus: Corpus) -> UserCase:
    """make_user_case from the earliest eval row and every eval item id."""
    seen = sorted({corpus.index[i] for i in train_item_ids})
    relevant = [corpus.index[i] for i in eval_item_ids]
    held_out = corpus.index[scalar(first_row, "item_id")]
    return UserCase(user_row=first_row, seen=seen, relevant=relevant,
                    sampled=sampled_candidates(str(scalar(first_row, "user_id")),
                                               held_out, set(seen) | set(relevant),
                                               corpus))


def sample_key(user_id: str) -> int:
    """Order in which users are drawn when the eval users are capped: a
    seeded hash of the id, so the same users are drawn in every run and
    whatever the runner's element order."""
    return zlib.crc32(f"eval-sample:{user_id}".encode())


# The NCF paper's protocol: the held-out item among 99 sampled negatives.
SAMPLED_NEGATIVES = 99
SAMPLED_K = 10
SAMPLED_SEED = 0


def sampled_candidates(user_id: str, held_out: int, interacted: set, corpus: Corpus,
                       num_negatives: Optional[int] = None) -> Optional[np.ndarray]:
    """int [1 + num_negatives]: `held_out`, then distinct items with train
    interactions that the user never interacted with, drawn uniformly with a
    seed derived from the user id (the same negatives for every model).
    num_negatives: SAMPLED_NEGATIVES unless given."""
    if num_negatives is None:
        num_negatives = SAMPLED_NEGATIVES
    pool = corpus.trained_items
    if len(pool) - len(interacted) < num_negatives + len(interacted) // 100 + 1:
        return None
    rng = np.random.default_rng([SAMPLED_SEED, zlib.crc32(user_id.encode())])
    chosen: List[int] = []
    taken = set(interacted)
    while len(chosen) < num_negatives:  # rejection: the pool is mostly free
        for item in rng.choice(pool, size=2 * (num_negatives - len(chosen))):
            if item not in taken and len(chosen) < num_negatives:
                taken.add(int(item))
                chosen.append(int(item))
    return np.array([held_out] + chosen, np.int64)


def sampled_metrics(scores_row: np.ndarray, sampled: np.ndarray,
                    k: int = SAMPLED_K) -> Dict[str, float]:
    """HR@k and NDCG@k of the held-out item (sampled[0]) among the sampled
    items; ties count against it."""
    return sampled_list_metrics(scores_row[sampled], k)


def sampled_list_metrics(values: np.ndarray, k: int = SAMPLED_K) -> Dict[str, float]:
    """sampled_metrics from the sampled items' scores, held-out item first."""
    rank = int(np.sum(values[1:] >= values[0]))
    hit = rank < k
    return {f"sampled_hit_rate@{k}": float(hit),
            f"sampled_ndcg@{k}": float(1.0 / np.log2(rank + 2)) if hit else 0.0}


def accumulate_sampled(cases: Sequence[UserCase], sampled_scores: np.ndarray
                       ) -> Dict[str, object]:
    """Accumulators of the sampled protocol alone, for a model too costly to
    score over the whole corpus. sampled_scores: float [len(cases), 100],
    the scores of each case's `sampled` items (rows of cases without them
    are ignored)."""
    result: Dict[str, object] = {}
    for row, case in enumerate(cases):
        if case.sampled is None:
            continue
        values = sampled_list_metrics(sampled_scores[row])
        for name in user_slices(case):
            result.setdefault(name, metrics.MetricAccumulator([])).add_user(
                values, [], np.zeros(0, np.int64))
    return result


def list_scores(recommended: Sequence[Sequence[str]], corpus: Corpus) -> np.ndarray:
    """float32 [users, items] that rank each user's recommended list (best
    first) above everything else, for the metrics of a served top-k list:
    k - position for listed items, -1 for the rest ("" padding skipped)."""
    scores = np.full((len(recommended), len(corpus)), -1.0, np.float32)
    for row, items in enumerate(recommended):
        listed = [corpus.index[i] for i in items if i]
        scores[row, listed] = len(listed) - np.arange(len(listed), dtype=np.float32)
    return scores


def activity_bucket(num_train: int) -> str:
    """'0', '1-4', '5-19', '20-99', '100+' by the user's train interactions."""
    if num_train == 0:
        return "0"
    for low, high in zip(ACTIVITY_EDGES, ACTIVITY_EDGES[1:]):
        if num_train < high:
            return f"{low}-{high - 1}"
    return f"{ACTIVITY_EDGES[-1]}+"


def user_slices(case: UserCase) -> List[str]:
    return [OVERALL, f"user_activity:{activity_bucket(len(case.seen))}",
            "user:cold" if not case.seen else "user:warm"]


def fit_baselines(train_pairs: Iterable[Tuple[str, str]], corpus: Corpus
                  ) -> Dict[str, object]:
    """Most-popular, item-kNN and EASE fitted on (user id, item id) pairs."""
    users: Dict[str, int] = {}
    rows, columns = [], []
    for user_id, item_id in train_pairs:
        rows.append(users.setdefault(user_id, len(users)))
        columns.append(corpus.index[item_id])
    return fit_baselines_on_indices(np.array(rows, np.int64),
                                    np.array(columns, np.int64), corpus)


def fit_baselines_on_indices(user_codes: np.ndarray, item_indices: np.ndarray,
                             corpus: Corpus) -> Dict[str, object]:
    """Most-popular, item-kNN and EASE fitted on the train interactions.

    user_codes: int [interactions], any code that tells users apart (e.g. a
      hash of the id); item_indices: int [interactions], corpus indices.
    EASE needs a dense items x items inverse; above its size limit it is left
    out (see `skipped_baselines`).
    """
    _, rows = np.unique(user_codes, return_inverse=True)
    train = baselines.interaction_matrix(rows, item_indices, int(rows.max(initial=-1)) + 1,
                                         len(corpus))
    fitted = {MOST_POPULAR: baselines.MostPopular().fit(train),
              ITEM_KNN: baselines.ItemKnn().fit(train)}
    if len(corpus) <= baselines.DEFAULT_EASE_MAX_ITEMS:
        fitted[EASE] = baselines.Ease().fit(train)
    return fitted


# Above this many items the ranker is not scored over the whole corpus
# (users x items network evaluations), only on the sampled protocol's items.
RANKER_FULL_CORPUS_MAX_ITEMS = 20_000


def ranker_full_corpus(num_items: int) -> bool:
    return num_items <= RANKER_FULL_CORPUS_MAX_ITEMS


def skipped_baselines(num_items: int) -> Dict[str, str]:
    """Baselines `fit_baselines` leaves out for a corpus of `num_items`, and why."""
    if num_items > baselines.DEFAULT_EASE_MAX_ITEMS:
        return {EASE: f"{num_items} items exceed EASE's limit of "
                      f"{baselines.DEFAULT_EASE_MAX_ITEMS} (dense items x items inverse)"}
    return {}


# Popularity breaks the baselines' ties: at most this much is added to a score.
TIE_BREAK = 1e-6


def baseline_scores(model, cases: Sequence[UserCase], corpus: Corpus) -> np.ndarray:
    """float32 [len(cases), items]: a fitted baseline scores users by their
    train items; ties go to the more popular item.

    Without the tie-break, item-kNN and EASE give a user with no (or no
    co-occurring) train items all-zero scores, ranked in corpus order; with
    it they fall back to most-popular, as a strong baseline should.
    """
    num_items = len(corpus)
    rows = baselines.interaction_matrix(
        [row for row, case in enumerate(cases) for _ in case.seen],
        [item for case in cases for item in case.seen], len(cases), num_items)
    counts = corpus.train_counts.astype(np.float32)
    tie_break = TIE_BREAK * counts / max(float(counts.max()), 1.0)
    return model.scores(rows) + tie_break


def accumulate(cases: Sequence[UserCase], scores: np.ndarray, corpus: Corpus,
               ks: Sequence[int], sampled: bool = True) -> Dict[str, object]:
    """Folds one batch of users into accumulators, keyed by slice.

    scores: float [len(cases), items], exact dot products (or baseline scores).
    sampled: also the paper protocol's sampled_hit_rate@10 / sampled_ndcg@10
      (False for scores that only order a top-k list).
    """
    depth = max(max(ks), metrics.BEYOND_ACCURACY_K)
    ranked = metrics.top_k_items(scores, depth, exclude=[c.seen for c in cases])
    result: Dict[str, object] = {}
    for row, case in enumerate(cases):
        values = metrics.user_accuracy(ranked[row], case.relevant, ks)
        values.update(metrics.beyond_accuracy(ranked[row], corpus.popularity_rank,
                                              corpus.genre_sets))
        if sampled and case.sampled is not None:
            values.update(sampled_metrics(scores[row], case.sampled))
        higher = metrics.strictly_higher_counts(scores[row], case.relevant)
        for name in user_slices(case):
            result.setdefault(name, metrics.MetricAccumulator(ks)).add_user(
                values, higher, ranked[row])
        for item in case.relevant:
            name = f"item_popularity:{corpus.popularity_bucket[item]}"
            result.setdefault(name, metrics.PairRecallAccumulator(ks)).add_pair(
                item, ranked[row])
    return result


def batch_size_for(num_items: int, budget_bytes: int = 1 << 27) -> int:
    """Users per scoring batch so a [users, items] float32 block fits `budget_bytes`."""
    return int(np.clip(budget_bytes // (4 * max(num_items, 1)), 1, 512))


# --------------------------------------------------------------------------
# The blessing gate


def decide_blessing(model: Dict[str, float], baselines: Dict[str, Dict[str, float]],
                    last_blessed: Optional[Dict[str, float]],
                    gate: config.BlessingConfig) -> Tuple[bool, List[str]]:
    """Applies every check of `gate` to overall metrics; returns (blessed, reasons).

    Checks: `metric` >= `min_value` (absolute); `metric` strictly above each
    baseline in `beat_baselines`; and, if a blessed model exists,
    `metric` >= its value - `max_regression` (no regression). Each reason line
    says which check passed or failed and with what numbers.
    """
    metric = gate.metric
    if metric not in model:
        raise ValueError(f"blessing metric {metric!r} is not computed; "
                         f"choose one of {sorted(model)}")
    value = model[metric]
    checks = [(value >= gate.min_value,
               f"{metric} {value:.4f} {'>=' if value >= gate.min_value else '<'} "
               f"threshold {gate.min_value:.4f}")]
    for name in gate.beat_baselines:
        if metric not in baselines.get(name, {}):
            checks.append((False, f"baseline {name} was not computed, so the model "
                           "cannot be shown to beat it"))
            continue
        other = baselines[name][metric]
        checks.append((value > other, f"{metric} {value:.4f} "
                       f"{'beats' if value > other else 'does not beat'} {name} {other:.4f}"))
    if last_blessed is not None:
        floor = last_blessed[metric] - gate.max_regression
        checks.append((value >= floor, f"{metric} {value:.4f} "
                       f"{'>=' if value >= floor else '<'} last blessed "
                       f"{last_blessed[metric]:.4f} - {gate.max_regression:.4f}"))
    else:
        checks.append((True, "no blessed model yet: no regression check"))
    return all(ok for ok, _ in checks), [("ok: " if ok else "FAILED: ") + text
                                         for ok, text in checks]


# BlessingConfig fields that may come as execution properties of their own
# (so that a Kubeflow RuntimeParameter can stand for each): field -> property.
GATE_PROPERTIES = {"metric": "blessing_metric", "min_value": "blessing_min_value",
                   "max_regression": "max_regression"}


def gate_from_json(text: str, properties: Optional[Mapping[str, object]] = None,
                   top_ks: Optional[Sequence[int]] = None) -> config.BlessingConfig:
    """The gate: the `blessing_config` JSON, with the fields that `properties`
    (execution properties, see GATE_PROPERTIES; None = not given) carry.

    Also checks what the component could not check when the pipeline was
    built, since a RuntimeParameter stood for it: each of metric, min_value
    and max_regression is given, metric is a string, the thresholds are
    numbers and, with `top_ks`, metric is "<ranking metric>@<K in top_ks>".
    """
    fields = json.loads(text)
    for field, name in GATE_PROPERTIES.items():
        value = (properties or {}).get(name)
        if value is not None:
            fields[field] = value
    missing = [field for field in GATE_PROPERTIES if field not in fields]
    if missing:
        raise ValueError(f"blessing gate: no {', '.join(missing)} (neither in "
                         "blessing_config nor as a property of its own)")
    if not isinstance(fields["metric"], str):
        raise ValueError(f"blessing gate: metric must be a string, got "
                         f"{fields['metric']!r}")
    if top_ks is not None:
        try:
            config.check_metric_name(fields["metric"], top_ks)
        except ValueError as e:
            raise ValueError(f"blessing gate: {e}") from None
    for field in ("min_value", "max_regression"):
        if isinstance(fields[field], bool) or not isinstance(fields[field], (int, float)):
            raise ValueError(f"blessing gate: {field} must be a number, got "
                             f"{fields[field]!r}")
    fields["beat_baselines"] = tuple(fields.get("beat_baselines", ()))
    return config.BlessingConfig(**fields)

