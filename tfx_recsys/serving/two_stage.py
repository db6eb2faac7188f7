"""The served recommender: retrieval -> ranker -> re-ranking -> top-k.

No TFX here. `TwoStageRecommender` is a tf.Module that the pusher saves (with
a ScaNN index) and the evaluator calls in-process (with exact search), so
what is measured is what is served. For a batch of users:

  1. retrieval: the retrieval Trainer's query signature embeds the raw user
     features -> queries float32 [batch, dim]; the index returns the `fetch`
     nearest items (ids string [batch, fetch], scores float32).
  2. exclusion: the user's excluded items (everything they interacted with
     in the data the served state was built from, and/or what they rated
     below a threshold) and the request's own `exclude` ids (and, for
     serving_with_history, the request's history) are removed; the best
     `candidates` items that remain go on. `fetch` = candidates + the most items any
     user excludes + REQUEST_EXCLUSION_SLACK, so exclusions cannot empty the
     candidate list.
  3. ranking: the ranking Trainer's `score` signature scores each candidate;
     final score = (1 - w) * z(retrieval) + w * z(ranker logit) (z-scored
     within the user's candidates; users unknown to the ranker keep
     retrieval's order); plus freshness_weight * the item's freshness
     percentile.
  4. selection of the top k: by score, or maximal marginal relevance over
     the retrieval model's item embeddings, or a per-genre cap.

Signatures (inputs are the retrieval model's query inputs, see
tfx_recsys/models/export.py):

  serving_default(user_id, <each user feature>)      history looked up inside
  serving_with_history(..., history [batch, None])   history from the request
      (its items are never returned, as the user has seen them)
  serving_with_exclusions(user_id, <each user feature>, exclude string
      [batch, None] padded with "")                  extra ids never returned
  outputs: item_ids string [batch, k], scores float32 [batch, k] (the final
      score), retrieval_scores, ranker_scores float32 [batch, k] (the
      ranker's probability; NaN without a ranker or for unknown users).
      When fewer than k items remain after exclusions the list is padded
      with item id "" and score PADDING_SCORE (the lowest float32, so the
      scores stay sorted and JSON-safe).

The served user state (exclusions, and the history serving_default looks
up) is built by the caller: the pusher builds it from every accepted
interaction, so what is served knows what each user did up to the latest
one; the evaluator builds it from the train split, the past of what it
scores.
"""

import dataclasses
import json
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfx_recsys import config, embedding
from tfx_recsys.dataset_config import HISTORY, SECONDS_SINCE_PREVIOUS, USER_ID
from tfx_recsys.models import export
from tfx_recsys.serving import reranking
from tfx_recsys.serving.contract import (  # noqa: F401  (two_stage.X names)
    MISSING_INT, RANKER_SIGNATURE, SERVING_SIGNATURE, SERVING_WITH_EXCLUSIONS_SIGNATURE,
    SERVING_WITH_HISTORY_SIGNATURE)

EXCLUDE = "exclude"
# Request-time exclusions the retrieval fetch makes room for; more can only
# shorten the candidate list, never bring an excluded item back.
REQUEST_EXCLUSION_SLACK = 100
PADDING_SCORE = float(np.finfo(np.float32).min)


# --------------------------------------------------------------------------
# What re-ranking knows about users and items


def excluded_items(train_rows: Iterable[Tuple[str, str, Optional[float]]],
                   rerank: config.RerankConfig) -> Dict[str, list]:
    """Each user's never-again items from (user, item, rating or None) rows:
    every train item with exclude_seen, those rated below dislike_below
    otherwise. Users with nothing excluded are left out."""
    excluded: Dict[str, set] = {}
    for user, item, rating in train_rows:
        disliked = (rerank.dislike_below is not None and rating is not None
                    and rating < rerank.dislike_below)
        if rerank.exclude_seen or disliked:
            excluded.setdefault(user, set()).add(item)
    return {user: sorted(items) for user, items in excluded.items()}


def genre_matrix(genre_sets: Sequence[Iterable[str]]) -> np.ndarray:
    """float32 [items, genres] multi-hot of each item's categories."""
    names = sorted({g for genres in genre_sets for g in genres})
    column = {g: j for j, g in enumerate(names)}
    matrix = np.zeros((len(genre_sets), max(len(names), 1)), np.float32)
    for i, genres in enumerate(genre_sets):
        for g in genres:
            matrix[i, column[g]] = 1.0
    return matrix


class UserItems(tf.Module):
    """Per-user item lists by raw user id: ids string [batch] -> items string
    [batch, None] padded with "" (unknown users: empty)."""

    def __init__(self, items_by_user: Dict[str, Sequence[str]]):
        super().__init__()
        users = sorted(items_by_user)
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(users or [""], tf.string),
                tf.range(max(len(users), 1), dtype=tf.int64)),
            default_value=len(users))  # the extra, empty row
        lengths = [len(items_by_user[u]) for u in users] + [0]
        self.items = tf.Variable(tf.constant(
            [i for u in users for i in items_by_user[u]] or [""], tf.string)[
                :sum(lengths)], trainable=False, name="items")
        self.row_splits = tf.Variable(np.cumsum([0] + lengths), dtype=tf.int64,
                                      trainable=False, name="row_splits")
        self.max_items = max(lengths)

    def __call__(self, user_ids: tf.Tensor) -> tf.Tensor:
        lists = tf.RaggedTensor.from_row_splits(self.items, self.row_splits, validate=False)
        return tf.gather(lists, self.rows.lookup(user_ids)).to_tensor(default_value="")


class ItemCatalog(tf.Module):
    """What re-ranking reads per item, by raw item id.

    Args:
      item_ids: [items] raw ids.
      embeddings: float [items, dim], the retrieval model's candidate
        embeddings (L2-normalised here, for MMR's cosine similarity).
      genres: float [items, genres] multi-hot (genre cap).
      freshness: float [items] in [0, 1] (freshness boost).
    Unknown ids (and "" padding) read a zero row. A part given as None is
    kept zero-width: a re-ranking setting that never reads it should not
    carry another copy of a million items' embeddings into the served model.
    """

    def __init__(self, item_ids: Sequence[str], embeddings: Optional[np.ndarray] = None,
                 genres: Optional[np.ndarray] = None,
                 freshness: Optional[np.ndarray] = None):
        super().__init__()
        num_items = len(item_ids)
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(item_ids), tf.string),
                tf.range(num_items, dtype=tf.int64)),
            default_value=num_items)
        if embeddings is None:
            embeddings = np.zeros((num_items, 0), np.float32)
        else:
            embeddings = embeddings / np.maximum(
                np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        if genres is None:
            genres = np.zeros((num_items, 0), np.float32)
        if freshness is None:
            freshness = np.zeros((num_items,), np.float32)
        self.embeddings = tf.Variable(_with_zero_row(embeddings), trainable=False)
        self.genres = tf.Variable(_with_zero_row(genres), trainable=False)
        self.freshness = tf.Variable(_with_zero_row(freshness[:, None])[:, 0],
                                     trainable=False)

    def lookup(self, item_ids: tf.Tensor) -> tf.Tensor:
        """string [batch, n] -> catalog rows int64 [batch, n]."""
        return self.rows.lookup(item_ids)


def _with_zero_row(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float32)
    return np.concatenate([values, np.zeros((1,) + values.shape[1:], np.float32)])


# --------------------------------------------------------------------------
# The served module


class ExactIndex(tf.Module):
    """Exact top-k: scores = queries [batch, dim] @ items [items, dim]^T.

    Same call as index.ScannIndex: (queries, k) -> (scores [batch, k], item
    ids [batch, k]); the fallback for servers without the ScaNN op, and what
    the evaluator measures with.
    """

    def __init__(self, item_ids: Sequence[str], item_embeddings: np.ndarray, k: int):
        super().__init__()
        self.item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False)
        self.item_embeddings = tf.Variable(np.asarray(item_embeddings, np.float32),
                                           trainable=False)
        self.k = k

    def __call__(self, queries, k=None):
        scores = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=k or self.k)
        return top.values, tf.gather(self.item_ids, top.indices)


class TwoStageRecommender(tf.Module):
    """Retrieval, ranker and re-ranking behind the serving signatures.

    Args:
      retrieval_model: the retrieval Trainer's SavedModel (query signatures).
      index: (queries, k) -> (scores, ids): index.ScannIndex or ExactIndex
        over every item.
      num_items: the corpus size (the most the index can return).
      ranker_model: the ranking Trainer's SavedModel (`score`), or None.
      catalog: ItemCatalog of the same items.
      exclusions: UserItems of each user's excluded items.
      rerank: config.RerankConfig.
      k: items returned per user.
      history: export.UserHistory that serving_default and
        serving_with_exclusions look each user's history up in; None: the
        retrieval model's own table (the history of its train data).
    """

    def __init__(self, retrieval_model, index, num_items: int, ranker_model,
                 catalog: ItemCatalog, exclusions: UserItems,
                 rerank: config.RerankConfig, k: int,
                 history: Optional[export.UserHistory] = None):
        super().__init__()
        self.retrieval_model = retrieval_model
        self.index = index
        self.ranker_model = ranker_model
        self.catalog = catalog
        self.exclusions = exclusions
        self.history = history
        self._with_history_inputs = set(embedding.input_specs(
            retrieval_model, embedding.QUERY_WITH_HISTORY_SIGNATURE))
        self.rerank_json = tf.Variable(_json(rerank), trainable=False)
        self._rerank = rerank
        self.k = min(k, num_items)
        self.candidates = min(max(rerank.candidates, self.k), num_items)
        self.fetch = retrieval_fetch(num_items, k, rerank, exclusions.max_items)

    # -- the stages, on tensors -------------------------------------------

    def _retrieve(self, query_signature: str, inputs: Dict[str, tf.Tensor]):
        queries = self.retrieval_model.signatures[query_signature](**inputs)["embedding"]
        scores, item_ids = self.index(queries, self.fetch)
        # The ScaNN op's outputs have no static rank; re-ranking needs it.
        return tf.ensure_shape(scores, [None, None]), tf.ensure_shape(item_ids, [None, None])

    def _candidates(self, scores, item_ids, excluded):
        """The best `candidates` items that are not excluded:
        (ids string [batch, c], retrieval scores [batch, c], valid [batch, c])."""
        # Non-finite scores: ScaNN's padding when it finds fewer than asked.
        allowed = ~reranking.exclusion_mask(item_ids, excluded) & tf.math.is_finite(scores)
        top, valid = reranking.select_top_k(scores, allowed, self.candidates)
        return (reranking.gather_rows(item_ids, top),
                reranking.gather_rows(scores, top), valid)

    def _rank(self, user_ids, candidate_ids, retrieval_scores, valid):
        """Final scores [batch, c] and the ranker's probabilities [batch, c]."""
        rerank = self._rerank
        if self.ranker_model is None:
            final = reranking.zscore(retrieval_scores, valid)
            ranker_scores = tf.fill(tf.shape(retrieval_scores), float("nan"))
        else:
            ranked = self.ranker_model.signatures[RANKER_SIGNATURE](
                user_id=user_ids, item_id=candidate_ids)
            final = reranking.blend(retrieval_scores, ranked["logits"], valid,
                                    rerank.ranker_weight, ranked["known_user"])
            ranker_scores = tf.where(ranked["known_user"][:, None], ranked["scores"],
                                     float("nan"))
        if rerank.freshness_weight:
            rows = self.catalog.lookup(candidate_ids)
            final += rerank.freshness_weight * tf.gather(self.catalog.freshness, rows)
        return final, ranker_scores

    def _select(self, candidate_ids, final, valid):
        rerank = self._rerank
        if rerank.diversity == "mmr":
            embeddings = tf.gather(self.catalog.embeddings,
                                   self.catalog.lookup(candidate_ids))
            return reranking.select_mmr(final, valid, embeddings, self.k, rerank.mmr_lambda)
        if rerank.diversity == "genre_cap":
            genres = tf.gather(self.catalog.genres, self.catalog.lookup(candidate_ids))
            return reranking.select_genre_cap(final, valid, genres, self.k, rerank.genre_cap)
        return reranking.select_top_k(final, valid, self.k)

    def recommend(self, query_signature: str, inputs: Dict[str, tf.Tensor],
                  request_exclusions: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
        """Raw query inputs -> the serving outputs (module docstring)."""
        user_ids = inputs["user_id"]
        retrieval_scores, item_ids = self._retrieve(query_signature, inputs)
        excluded = self.exclusions(user_ids)
        if request_exclusions is not None:
            excluded = tf.concat([excluded, request_exclusions], axis=1)
        candidate_ids, candidate_scores, valid = self._candidates(
            retrieval_scores, item_ids, excluded)
        final, ranker_scores = self._rank(user_ids, candidate_ids, candidate_scores, valid)
        chosen, chosen_valid = self._select(candidate_ids, final, valid)

        def pick(values, padding):
            picked = reranking.gather_rows(values, chosen)
            return tf.where(chosen_valid, picked, padding)

        return {"item_ids": pick(candidate_ids, ""), "scores": pick(final, PADDING_SCORE),
                "retrieval_scores": pick(candidate_scores, PADDING_SCORE),
                "ranker_scores": pick(ranker_scores, float("nan"))}

    # -- the signatures ---------------------------------------------------

    def _looked_up(self, inputs: Dict[str, tf.Tensor]):
        """serving_default's inputs -> (query signature, its inputs): with a
        served history, each user's history from it and, with recency, the
        seconds from their latest interaction to the request `timestamp`."""
        if self.history is None:
            return embedding.QUERY_SIGNATURE, inputs
        history, last_timestamp = self.history(inputs[USER_ID])
        query = {name: value for name, value in inputs.items()
                 if name in self._with_history_inputs}
        query[HISTORY] = history
        if SECONDS_SINCE_PREVIOUS in self._with_history_inputs:
            query[SECONDS_SINCE_PREVIOUS] = tf.where(
                last_timestamp == MISSING_INT, tf.constant(-1, tf.int64),
                inputs[export.REQUEST_TIMESTAMP] - last_timestamp)
        return embedding.QUERY_WITH_HISTORY_SIGNATURE, query

    @tf.function
    def serve(self, inputs):
        return self.recommend(*self._looked_up(inputs))

    @tf.function
    def serve_with_history(self, inputs):
        # The request's history is what the user has seen: never returned
        # when seen items are excluded.
        seen = inputs[HISTORY] if self._rerank.exclude_seen else None
        return self.recommend(embedding.QUERY_WITH_HISTORY_SIGNATURE, inputs, seen)

    @tf.function
    def serve_with_exclusions(self, inputs):
        query = {name: value for name, value in inputs.items() if name != EXCLUDE}
        return self.recommend(*self._looked_up(query), inputs[EXCLUDE])

    def signatures(self) -> Dict[str, object]:
        """Concrete functions by name, with the retrieval model's query inputs."""
        query = embedding.input_specs(self.retrieval_model, embedding.QUERY_SIGNATURE)
        with_history = embedding.input_specs(self.retrieval_model,
                                             embedding.QUERY_WITH_HISTORY_SIGNATURE)
        with_exclusions = dict(query, **{EXCLUDE: tf.TensorSpec([None, None], tf.string,
                                                                 name=EXCLUDE)})
        return {
            SERVING_SIGNATURE: self.serve.get_concrete_function(query),
            SERVING_WITH_HISTORY_SIGNATURE:
                self.serve_with_history.get_concrete_function(with_history),
            SERVING_WITH_EXCLUSIONS_SIGNATURE:
                self.serve_with_exclusions.get_concrete_function(with_exclusions),
        }


def retrieval_fetch(num_items: int, k: int, rerank: config.RerankConfig,
                    max_excluded: int) -> int:
    """Items the index returns per query: the ranker's candidates, plus room
    for the most items any user excludes and for request-time exclusions."""
    candidates = min(max(rerank.candidates, min(k, num_items)), num_items)
    return min(num_items, candidates + max_excluded + REQUEST_EXCLUSION_SLACK)


def _json(rerank: config.RerankConfig) -> str:
    return json.dumps(dataclasses.asdict(rerank), sort_keys=True)


def build(retrieval_model, ranker_model, index, item_ids: Sequence[str],
          item_embeddings: np.ndarray, genre_sets: Optional[Sequence[Iterable[str]]],
          freshness_values: Optional[np.ndarray],
          train_rows: Iterable[Tuple[str, str, Optional[float]]],
          rerank: config.RerankConfig, k: int,
          history: Optional[export.UserHistory] = None) -> TwoStageRecommender:
    """A TwoStageRecommender from plain values.

    freshness_values: float [items], higher = fresher (a release year, a
      first-appearance timestamp), NaN = unknown; turned into percentiles.
    train_rows: (user id, item id, rating or None) of the data the served
      state holds.
    """
    return build_with_exclusions(retrieval_model, ranker_model, index, item_ids,
                                 item_embeddings, genre_sets, freshness_values,
                                 excluded_items(train_rows, rerank), rerank, k, history)


def build_with_exclusions(retrieval_model, ranker_model, index, item_ids: Sequence[str],
                          item_embeddings: np.ndarray,
                          genre_sets: Optional[Sequence[Iterable[str]]],
                          freshness_values: Optional[np.ndarray],
                          excluded: Mapping[str, Sequence[str]],
                          rerank: config.RerankConfig, k: int,
                          history: Optional[export.UserHistory] = None
                          ) -> TwoStageRecommender:
    """build() with each user's never-again items already gathered.
    genre_sets and freshness_values are only read when `rerank` uses them
    (a genre cap, a freshness weight): None is fine otherwise."""
    catalog = ItemCatalog(
        item_ids,
        embeddings=item_embeddings if rerank.diversity == "mmr" else None,
        genres=genre_matrix(genre_sets) if rerank.diversity == "genre_cap" else None,
        freshness=(reranking.freshness_percentile(freshness_values)
                   if rerank.freshness_weight else None))
    return TwoStageRecommender(retrieval_model, index, len(item_ids), ranker_model,
                               catalog, UserItems(excluded), rerank, k, history)


@dataclasses.dataclass
class UserState:
    """What the served model knows of each user, from their interactions:
    `excluded` (excluded_items), `first_seen` (each item's first timestamp,
    when freshness is the item's first appearance; else empty) and
    `history` (the export.UserHistory serving_default looks up; None unless
    asked for)."""

    excluded: Dict[str, list]
    first_seen: Dict[str, int]
    history: Optional[export.UserHistory]


def user_state(rows: Iterable[dict], rerank: config.RerankConfig,
               history_length: Optional[int] = None) -> UserState:
    """The served user state from raw interaction rows (examples_io rows of
    INTERACTION_FACT_FIELDS), in one streaming pass; the rows are never held.

    history_length: build the history table (each user's latest
      `history_length` items, by time); None: no table.

    Ids are interned: ten million rows name a million items, and each
    exclusion list would otherwise hold its own copy of every id string.
    """
    from tfx_recsys.examples_io import scalar

    first_seen: Dict[str, int] = {}
    wants_first_seen = bool(rerank.freshness_weight) and not rerank.freshness_feature
    events: Tuple[list, list, list] = ([], [], [])

    def interactions():
        for row in rows:
            user = sys.intern(scalar(row, "user_id"))
            item = sys.intern(scalar(row, "item_id"))
            if wants_first_seen or history_length is not None:
                timestamp = scalar(row, "timestamp", 0)
                if wants_first_seen and (item not in first_seen
                                         or timestamp < first_seen[item]):
                    first_seen[item] = timestamp
                if history_length is not None:
                    for values, value in zip(events, (user, item, timestamp)):
                        values.append(value)
            yield user, item, scalar(row, "rating")

    excluded = excluded_items(interactions(), rerank)
    history = None
    if history_length is not None:
        users, items, timestamps = (_utf8(events[0]), _utf8(events[1]),
                                    np.array(events[2], np.int64))
        history = export.UserHistory(*export.latest_items(users, items, timestamps,
                                                          history_length))
    return UserState(excluded, first_seen, history)


def _utf8(ids: List[str]) -> np.ndarray:
    """Fixed-width UTF-8 bytes [n] of string ids (no Python object each)."""
    return np.char.encode(np.array(ids, dtype=str), "utf-8") if ids else np.zeros(0, bytes)


INTERACTION_FACT_FIELDS = ("user_id", "item_id", "timestamp", "rating")


@dataclasses.dataclass
class ItemFacts:
    """What the served model keeps of the item rows, in corpus order:
    ids [items]; genre sets [items] (None unless re-ranking caps genres);
    freshness float [items] (None unless re-ranking boosts freshness)."""

    item_ids: List[str]
    genre_sets: Optional[List[list]]
    freshness: Optional[np.ndarray]


def item_fact_fields(rerank: config.RerankConfig, diversity_feature: str = "") -> List[str]:
    """The item features `item_facts` reads under `rerank`: what a caller
    that streams item rows needs to keep of each."""
    fields = ["item_id"]
    if rerank.diversity == "genre_cap" and diversity_feature:
        fields.append(diversity_feature)
    if rerank.freshness_feature:
        fields.append(rerank.freshness_feature)
    return fields


def item_facts(item_rows: Sequence[dict], first_seen: Mapping[str, int],
               rerank: config.RerankConfig, diversity_feature: str = "") -> ItemFacts:
    """ItemFacts from raw item rows and `user_state`'s first-seen mapping.

    Freshness reads rerank.freshness_feature from the item rows, or the
    item's first timestamp in the interactions when it is "".
    """
    from tfx_recsys.examples_io import scalar

    item_ids = [scalar(r, "item_id") for r in item_rows]
    if rerank.freshness_feature and not any(rerank.freshness_feature in r
                                            for r in item_rows):
        raise ValueError(f"rerank.freshness_feature {rerank.freshness_feature!r} "
                         f"is not an item feature")
    freshness = None
    if rerank.freshness_weight and rerank.freshness_feature:
        freshness = np.array([scalar(r, rerank.freshness_feature, np.nan)
                              for r in item_rows], np.float64)
    elif rerank.freshness_weight:
        freshness = np.array([first_seen.get(i, np.nan) for i in item_ids], np.float64)
    genre_sets = None
    if rerank.diversity == "genre_cap":
        genre_sets = [r.get(diversity_feature, []) if diversity_feature else []
                      for r in item_rows]
    return ItemFacts(item_ids, genre_sets, freshness)


def build_from_item_facts(retrieval_model, ranker_model, index, items: ItemFacts,
                          item_embeddings: np.ndarray,
                          excluded: Mapping[str, Sequence[str]],
                          rerank: config.RerankConfig, k: int,
                          history: Optional[export.UserHistory] = None
                          ) -> TwoStageRecommender:
    """build() from `item_facts` and the exclusions (and history) of a
    `user_state`."""
    return build_with_exclusions(retrieval_model, ranker_model, index, items.item_ids,
                                 item_embeddings, items.genre_sets, items.freshness,
                                 excluded, rerank, k, history)


def load_ranker(model_dir: str):
    """The ranking Trainer's SavedModel; fails clearly without `score`."""
    model = tf.saved_model.load(model_dir)
    if RANKER_SIGNATURE not in model.signatures:
        raise ValueError(f"{model_dir} is not a ranking model: it has no "
                         f"{RANKER_SIGNATURE!r} signature (it has "
                         f"{sorted(model.signatures)})")
    return model


def ranker_scores(ranker, user_ids: Sequence[str], item_ids: Sequence[str],
                  max_pairs: int = 1 << 20) -> np.ndarray:
    """float32 [users, items]: the ranker's probability for every pair."""
    score = ranker.signatures[RANKER_SIGNATURE]
    rows_per_call = max(1, max_pairs // max(len(item_ids), 1))
    items = tf.constant(list(item_ids), tf.string)
    blocks = []
    for start in range(0, len(user_ids), rows_per_call):
        users = tf.constant(list(user_ids[start:start + rows_per_call]), tf.string)
        tiled = tf.tile(items[None], [tf.shape(users)[0], 1])
        blocks.append(score(user_id=users, item_id=tiled)["scores"].numpy())
    return (np.concatenate(blocks) if blocks
            else np.zeros((0, len(item_ids)), np.float32))


def recommend_rows(recommender: TwoStageRecommender, rows: Sequence[dict],
                   signature: str = SERVING_WITH_HISTORY_SIGNATURE) -> List[List[str]]:
    """Each example row's served list (item ids, best first, padding dropped);
    serving_with_history takes the history each row carries."""
    query = (embedding.QUERY_WITH_HISTORY_SIGNATURE
             if signature == SERVING_WITH_HISTORY_SIGNATURE else embedding.QUERY_SIGNATURE)
    function = recommender.signatures()[signature]
    tensors = embedding.request(recommender.retrieval_model, query, rows)
    item_ids = function(**tensors)["item_ids"].numpy()
    return [[i.decode() for i in row if i] for row in item_ids]


def ranker_list_scores(ranker, user_ids: Sequence[str],
                       item_lists: Sequence[Sequence[str]]) -> np.ndarray:
    """float32 [users, n]: the ranker's probability of each user's own list
    of n items (item_lists: [users][n] item ids)."""
    if len(user_ids) == 0:
        return np.zeros((0, 0), np.float32)
    score = ranker.signatures[RANKER_SIGNATURE]
    return score(user_id=tf.constant(list(user_ids), tf.string),
                 item_id=tf.constant(item_lists, tf.string))["scores"].numpy()
