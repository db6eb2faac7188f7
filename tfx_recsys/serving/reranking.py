"""Re-ranking: the served model's last stage, as batched TensorFlow ops.

The served SavedModel is two-stage: retrieval fetches n candidates per user,
a ranker scores them, and re-ranking (this module) turns both scores into the
final top-k list (see `tfx_recsys.config.RerankConfig` for the settings):

  1. `exclusion_mask`: drop the items the user must not be shown (seen or
     disliked items, padding).
  2. `blend`: mix the retrieval score and the ranker logit on a common scale
     (per-user z-scores, `zscore`).
  3. Pick k items: `select_top_k` (plain), `select_mmr` (maximal marginal
     relevance over item embeddings) or `select_genre_cap` (at most `cap`
     items per genre).

Conventions, so every function can live inside a `tf.function` that is saved
as a SavedModel signature:
  * Batch = users: every tensor's first axis is the user, b. The candidate
    axis, n, may be dynamic (None in the signature); k (the list length) is a
    static Python int.
  * TensorFlow ops only: no NumPy and no Python `if` on tensor values. The
    greedy selectors loop with `tf.while_loop`, which runs as a Python loop
    in eager mode and as one graph loop inside a `tf.function`.
  * `valid`, bool [b, n], says which candidates may be returned at all. A
    selector never returns an invalid candidate while a valid one remains;
    where a row has fewer than k valid candidates it fills the list with
    invalid ones and flags them False in `selected_valid`. Indices in those
    flagged slots are only guaranteed to be in [0, n) (n >= 1), so gathering
    with them is safe; mask what they gather.
  * Candidate scores should be finite; a NaN score of a valid candidate is
    treated as the lowest possible score rather than poisoning the row.

Two NumPy helpers live here too because they are about re-ranking:
`freshness_percentile` (run at export time, to turn an item feature such as
a release year into a [0, 1] freshness) and `intra_list_diversity` (the
metric that shows what the diversity options did).
"""

import itertools
from typing import Callable, FrozenSet, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

# z-scores divide by the standard deviation; a row whose valid scores are all
# equal would divide by zero without this floor.
STD_FLOOR = 1e-6

# Lower than every valid candidate's key (see `_selection_key`).
_NEG_INF = float("-inf")


# ---------------------------------------------------------------------------
# Masks and scores
# ---------------------------------------------------------------------------

def exclusion_mask(candidate_ids: tf.Tensor, excluded_ids: tf.Tensor) -> tf.Tensor:
    """True where a candidate is in its row's excluded list.

    Args:
      candidate_ids: string [b, n], the retrieval candidates of each user.
      excluded_ids: string [b, m], the items each user must not be shown
        (e.g. their training items), padded with "". A "" entry is padding
        and excludes nothing; duplicates are harmless.
    Returns:
      bool [b, n]: True where the candidate is excluded. A "" candidate is
      always excluded, since "" is padding.

    Why not compare every candidate with every excluded id? That [b, n, m]
    string equality takes ~2.7 s and b*n*m bytes for b=256, n=m=1000 on a CPU.
    Instead each row's excluded ids are hashed to int64 and sorted, and every
    candidate is binary-searched among them: O(b (n + m) log m), ~25 ms for
    the same sizes. The hit is then confirmed by comparing the strings
    themselves, so a hash collision can never exclude a wrong item. (It could
    in theory hide one excluded id behind another excluded id of the same
    row with the same 63-bit hash: probability about m^2 / 2^64 per user.)
    """
    candidate_ids = tf.convert_to_tensor(candidate_ids, tf.string)
    excluded_ids = tf.convert_to_tensor(excluded_ids, tf.string)
    # One extra "" column: every row then has an entry to search (m may be
    # 0), and a "" candidate always finds its match, i.e. is excluded.
    batch = tf.shape(excluded_ids)[0]
    excluded_ids = tf.concat([excluded_ids, tf.fill([batch, 1], "")], axis=1)

    excluded_hashes = _hash_ids(excluded_ids)                    # [b, m + 1]
    order = tf.argsort(excluded_hashes, axis=1, stable=True)
    sorted_hashes = tf.gather(excluded_hashes, order, batch_dims=1)
    sorted_ids = tf.gather(excluded_ids, order, batch_dims=1)

    # Where each candidate's hash would go in the sorted list: if the
    # candidate is excluded, its own entry sits exactly there.
    positions = tf.searchsorted(sorted_hashes, _hash_ids(candidate_ids),
                                side="left")                     # [b, n]
    positions = tf.minimum(positions, tf.shape(sorted_ids)[1] - 1)
    return tf.equal(tf.gather(sorted_ids, positions, batch_dims=1), candidate_ids)


def _hash_ids(ids: tf.Tensor) -> tf.Tensor:
    """int64 fingerprints of string ids, same shape."""
    return tf.strings.to_hash_bucket_fast(ids, tf.int64.max)


def zscore(scores: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Per-row z-scores computed over the valid entries only.

    Args:
      scores: float [b, n].
      valid: bool [b, n]; invalid entries neither count towards the row's
        mean and standard deviation nor keep their value.
    Returns:
      float32 [b, n]: (score - mean) / max(std, STD_FLOOR) where valid, 0
      elsewhere (they are masked later anyway). Rows without a valid entry
      are all 0. The standard deviation is the population one (divide by
      the count).
    """
    scores = tf.cast(scores, tf.float32)
    valid = tf.convert_to_tensor(valid, tf.bool)
    weights = tf.cast(valid, tf.float32)
    # tf.where rather than scores * weights: an invalid -inf or NaN score
    # times 0 would be NaN and leak into the row's mean.
    kept = tf.where(valid, scores, 0.0)
    count = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
    mean = tf.reduce_sum(kept, axis=1, keepdims=True) / count
    centred = tf.where(valid, scores - mean, 0.0)
    variance = tf.reduce_sum(tf.square(centred), axis=1, keepdims=True) / count
    std = tf.maximum(tf.sqrt(variance), STD_FLOOR)
    return centred / std


def blend(retrieval_scores: tf.Tensor, ranker_logits: tf.Tensor, valid: tf.Tensor,
          ranker_weight: float, use_ranker: tf.Tensor) -> tf.Tensor:
    """The final relevance: retrieval and ranker scores on a common scale.

    The two models' scores live on unrelated scales (dot products vs.
    logits), so each is z-scored within the user's valid candidates before
    mixing; `ranker_weight` then means the same for every user.

    Args:
      retrieval_scores: float [b, n].
      ranker_logits: float [b, n].
      valid: bool [b, n], the candidates that count (see `zscore`).
      ranker_weight: w in [0, 1] (Python float or scalar tensor).
      use_ranker: bool [b]: False for users the ranker does not know, whose
        logits are meaningless; they get the retrieval order alone.
    Returns:
      float32 [b, n]: (1 - w) * z(retrieval) + w * z(ranker) in rows where
      use_ranker, z(retrieval) elsewhere; 0 at invalid entries.
    """
    weight = tf.cast(ranker_weight, tf.float32)
    retrieval_z = zscore(retrieval_scores, valid)
    ranker_z = zscore(ranker_logits, valid)
    blended = (1.0 - weight) * retrieval_z + weight * ranker_z
    use_ranker = tf.convert_to_tensor(use_ranker, tf.bool)
    return tf.where(use_ranker[:, tf.newaxis], blended, retrieval_z)


def freshness_percentile(values: np.ndarray) -> np.ndarray:
    """Each item's percentile rank by value, in [0, 1] (NumPy, export time).

    Args:
      values: float [items], e.g. release years; NaN = missing.
    Returns:
      float32 [items]: (mean rank - 1) / (count - 1) over the non-missing
      items, with 1-based ranks in ascending order, so the smallest value
      gets 0 and the largest 1. Ties share their mean rank, hence the same
      percentile; as a consequence all-equal values get 0.5, and so does a
      lone non-missing item (the middle, as it is neither old nor new).
      Missing values get 0.0: an item of unknown age earns no freshness
      bonus.
    """
    values = np.asarray(values, dtype=np.float64)
    result = np.zeros(values.shape, dtype=np.float32)
    present = ~np.isnan(values)
    count = int(present.sum())
    if count == 0:
        return result
    if count == 1:
        result[present] = 0.5
        return result

    distinct, group_of, group_sizes = np.unique(values[present], return_inverse=True,
                                                return_counts=True)
    # A group of tied values occupies 0-based ranks [start, end); its members
    # share the mean of those ranks.
    group_ends = np.cumsum(group_sizes)
    group_starts = group_ends - group_sizes
    mean_rank = (group_starts + group_ends - 1) / 2.0
    result[present] = (mean_rank[group_of.reshape(-1)] / (count - 1)).astype(np.float32)
    return result


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------

def gather_rows(values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Per-row gather: values [b, n, ...], indices int [b, k] -> [b, k, ...]."""
    return tf.gather(values, indices, batch_dims=1)


def select_top_k(scores: tf.Tensor, valid: tf.Tensor, k: int
                 ) -> Tuple[tf.Tensor, tf.Tensor]:
    """The k best valid candidates per row, best first.

    Args:
      scores: float [b, n]; higher is better.
      valid: bool [b, n].
      k: list length, a Python int >= 1 (n may be smaller: see the module
        docstring).
    Returns:
      indices: int32 [b, k] into the candidate axis; ties go to the lower
        index.
      selected_valid: bool [b, k]; False in the slots a row could not fill
        with a valid candidate (always a suffix of the row).
    """
    n = tf.shape(scores)[1]
    scores, valid = _pad_candidates(k, scores, valid)
    # Invalid entries get -inf, below every valid key, so top_k takes all
    # valid candidates before any invalid one.
    _, indices = tf.math.top_k(_selection_key(scores, valid), k=k, sorted=True)
    return _finish_selection(indices, valid, n)


def select_mmr(scores: tf.Tensor, valid: tf.Tensor, embeddings: tf.Tensor, k: int,
               mmr_lambda: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Greedy maximal marginal relevance (MMR): relevant but varied lists.

    Each step picks the candidate maximising
        lambda * relevance - (1 - lambda) * (max cosine similarity to the
                                             candidates already picked),
    so a near-duplicate of an item already in the list loses to a slightly
    less relevant but different one. Relevance is the score min-max
    normalised to [0, 1] over the row's valid candidates, so lambda means
    the same whatever the scale of the scores. Ties on the objective go to
    the higher raw score, then to the lower index: with lambda = 1 the list
    is exactly `select_top_k`'s.

    Args:
      scores: float [b, n]; higher is better.
      valid: bool [b, n].
      embeddings: float [b, n, d], the candidates' item embeddings, assumed
        L2-normalised (so a dot product is a cosine similarity).
      k: list length, a Python int >= 1. The loop is a `tf.while_loop`, so
        k = 100 costs one graph loop, not 100 unrolled copies.
      mmr_lambda: in [0, 1] (Python float or scalar tensor); 1 = relevance
        only.
    Returns:
      (indices int32 [b, k], selected_valid bool [b, k]) as `select_top_k`.
      Cost: k steps of O(b * n * d).
    """
    n = tf.shape(scores)[1]
    scores, valid, embeddings = _pad_candidates(k, scores, valid, embeddings)
    embeddings = tf.cast(embeddings, tf.float32)
    mmr_lambda = tf.cast(mmr_lambda, tf.float32)
    key = _selection_key(scores, valid)
    relevance = _min_max_relevance(key, valid)

    def choose(available, max_similarity):
        objective = mmr_lambda * relevance - (1.0 - mmr_lambda) * max_similarity
        # Unavailable candidates get -inf. So does a NaN objective (from NaN
        # embeddings), which would otherwise fail every comparison; such a
        # candidate still beats the invalid ones on `key`.
        objective = tf.where(available & ~tf.math.is_nan(objective), objective, _NEG_INF)
        return [objective, key]

    def update(max_similarity, chosen):
        chosen_embedding = gather_rows(embeddings, chosen)       # [b, d]
        similarity = tf.einsum("bnd,bd->bn", embeddings, chosen_embedding)
        # Clipped to [-1, 1] so the -1 starting value below is a true floor
        # even for embeddings that are only approximately normalised.
        return tf.maximum(max_similarity, tf.clip_by_value(similarity, -1.0, 1.0))

    # -1 is the lowest cosine similarity: "nothing picked yet". On the first
    # step it shifts every objective by the same amount, changing nothing.
    no_similarity = tf.fill(tf.shape(key), -1.0)
    indices = _greedy_select(k, valid, choose, update, no_similarity)
    return _finish_selection(indices, valid, n)


def select_genre_cap(scores: tf.Tensor, valid: tf.Tensor, genres: tf.Tensor, k: int,
                     cap: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Greedy by score with at most `cap` items per genre, when possible.

    Candidates are taken best score first; one is skipped while adding it
    would make any of its genres appear more than `cap` times in the list.
    Items without a genre are never capped. If this capped pass cannot fill
    k slots, the rest is filled with the best remaining valid candidates by
    score, appended after the capped ones: the cap is a preference, never a
    reason to return fewer items, or invalid (excluded) items while valid
    ones remain.

    Args:
      scores: float [b, n]; higher is better.
      valid: bool [b, n].
      genres: multi-hot [b, n, g], bool or numeric (non-zero = has the genre).
      k: list length, a Python int >= 1.
      cap: the most items per genre, a Python int >= 1 (or int tensor).
    Returns:
      (indices int32 [b, k], selected_valid bool [b, k]) as `select_top_k`.
      Cost: k steps of O(b * n * g).
    """
    n = tf.shape(scores)[1]
    scores, valid, genres = _pad_candidates(k, scores, valid, genres)
    genres = tf.cast(tf.cast(genres, tf.bool), tf.float32)      # 0/1 multi-hot
    cap = tf.cast(cap, tf.float32)
    key = _selection_key(scores, valid)

    def choose(available, genre_counts):
        full = tf.cast(genre_counts >= cap, tf.float32)          # [b, g]
        # > 0 where a candidate has at least one genre that is already full.
        blocked = tf.einsum("bng,bg->bn", genres, full) > 0.0
        # Tier 2: valid and within the cap; 1: valid but over it (the
        # fill-up); 0: invalid. Only then by score.
        tier = tf.cast(available, tf.float32) * (2.0 - tf.cast(blocked, tf.float32))
        return [tier, key]

    def update(genre_counts, chosen):
        # Invalid picks count too; harmless, as they only happen once a row
        # has no valid candidate left.
        return genre_counts + gather_rows(genres, chosen)        # [b, g]

    # Once the fill-up starts every remaining valid item is blocked, and
    # counts only grow, so it stays blocked: picking tier 2 while any is left
    # and tier 1 afterwards is exactly "capped pass, then fill up".
    no_counts = tf.zeros([tf.shape(genres)[0], tf.shape(genres)[2]])  # [b, g]
    indices = _greedy_select(k, valid, choose, update, no_counts)
    return _finish_selection(indices, valid, n)


# ---------------------------------------------------------------------------
# Selection helpers
# ---------------------------------------------------------------------------

def _pad_candidates(k: int, scores: tf.Tensor, valid: tf.Tensor, *per_candidate: tf.Tensor
                    ) -> List[tf.Tensor]:
    """Pads the candidate axis (axis 1) to at least k entries.

    The padding is invalid, so it is only ever picked where a row runs out
    of valid candidates; this lets every selector return k slots even when
    a (dynamic) n is smaller than k. Returns [scores, valid, *per_candidate]
    padded with 0 / False.
    """
    missing = tf.maximum(k - tf.shape(scores)[1], 0)

    def pad(tensor):
        tensor = tf.convert_to_tensor(tensor)
        paddings = [[0, 0], [0, missing]] + [[0, 0]] * (tensor.shape.rank - 2)
        return tf.pad(tensor, paddings)

    scores = pad(tf.cast(scores, tf.float32))
    valid = pad(tf.convert_to_tensor(valid, tf.bool))
    return [scores, valid] + [pad(tensor) for tensor in per_candidate]


def _selection_key(scores: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """float32 [b, n]: the scores, with every invalid entry below every valid one.

    Valid scores are clamped to finite values (NaN -> the lowest float) and
    invalid entries become -inf, strictly lower, so ordering by this key
    never puts an invalid candidate before a valid one.
    """
    lowest, highest = tf.float32.min, tf.float32.max
    finite = tf.where(tf.math.is_nan(scores), lowest,
                      tf.clip_by_value(scores, lowest, highest))
    return tf.where(valid, finite, _NEG_INF)


def _min_max_relevance(key: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """float32 [b, n]: the key rescaled to [0, 1] over each row's valid entries.

    Computed in float64 so max - min cannot overflow even for extreme finite
    scores. A row whose valid scores are all equal gets relevance 1; invalid
    entries get an arbitrary value (callers mask them).
    """
    key = tf.cast(key, tf.float64)
    low = tf.reduce_min(tf.where(valid, key, np.inf), axis=1, keepdims=True)
    high = tf.reduce_max(tf.where(valid, key, -np.inf), axis=1, keepdims=True)
    spread = high - low
    relevance = tf.where(valid & (spread > 0.0),
                         (key - low) / tf.where(spread > 0.0, spread, 1.0), 1.0)
    return tf.cast(relevance, tf.float32)


def _lexicographic_argmax(keys: Sequence[tf.Tensor], eligible: tf.Tensor) -> tf.Tensor:
    """int32 [b]: per row, the eligible position that is best by `keys`.

    keys: float [b, n] tensors, compared in order (the second only breaks
    ties of the first, and so on); remaining ties go to the lowest index.
    (tf.argmax does not promise which of several equal maxima it returns.)
    eligible: bool [b, n], with at least one True per row.
    """
    candidates = eligible
    for key in keys:
        masked = tf.where(candidates, key, _NEG_INF)
        best = tf.reduce_max(masked, axis=1, keepdims=True)
        candidates = candidates & tf.equal(masked, best)
    n = tf.shape(eligible)[1]
    positions = tf.range(n)[tf.newaxis, :]
    return tf.reduce_min(tf.where(candidates, positions, n), axis=1)


def _greedy_select(k: int, valid: tf.Tensor,
                   choose: Callable[[tf.Tensor, tf.Tensor], Sequence[tf.Tensor]],
                   update: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                   initial_state: tf.Tensor) -> tf.Tensor:
    """Picks k candidates per row one at a time; returns int32 [b, k].

    choose(available, state) gives the ranking keys of one step (see
    `_lexicographic_argmax`), with available = valid and not yet picked;
    already picked candidates are never eligible again. update(state,
    chosen int32 [b]) folds the step's picks into the state. Requires n >= k
    (see `_pad_candidates`), so each step has an unpicked candidate.
    """
    picked = tf.zeros_like(valid)
    chosen_so_far = tf.TensorArray(tf.int32, size=k)

    def step(i, picked, state, chosen_so_far):
        keys = choose(valid & ~picked, state)
        chosen = _lexicographic_argmax(keys, ~picked)            # [b]
        picked = picked | tf.one_hot(chosen, tf.shape(valid)[1], on_value=True,
                                     off_value=False, dtype=tf.bool)
        return i + 1, picked, update(state, chosen), chosen_so_far.write(i, chosen)

    _, _, _, chosen_so_far = tf.while_loop(
        lambda i, *_: i < k, step, (tf.constant(0), picked, initial_state, chosen_so_far),
        maximum_iterations=k)
    return tf.transpose(chosen_so_far.stack())                   # [k, b] -> [b, k]


def _finish_selection(indices: tf.Tensor, padded_valid: tf.Tensor, n: tf.Tensor
                      ) -> Tuple[tf.Tensor, tf.Tensor]:
    """(indices int32 [b, k], selected_valid bool [b, k]) from padded picks.

    Picks of padding (only where n < k, always flagged invalid) are clamped
    into [0, n) so the caller can gather with every index.
    """
    indices = tf.cast(indices, tf.int32)
    selected_valid = gather_rows(padded_valid, indices)
    return tf.minimum(indices, n - 1), selected_valid


# ---------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------

def intra_list_diversity(ranked_genre_sets: Sequence[Sequence[FrozenSet]]) -> float:
    """Mean intra-list diversity of re-ranked lists (NumPy/Python).

    Args:
      ranked_genre_sets: per list, the genre set of each item in it.
    Returns:
      The mean over lists of the mean pairwise Jaccard distance
      1 - |A & B| / |A | B| between the lists' items; two genre-less items
      are at distance 0 (nothing tells them apart). Lists with fewer than 2
      items are skipped; nan if no list counts. Same definition as
      diversity@K in `tfx_recsys.metrics`.
    """
    per_list = []
    for genre_sets in ranked_genre_sets:
        if len(genre_sets) < 2:
            continue
        distances = [_jaccard_distance(a, b) for a, b in itertools.combinations(genre_sets, 2)]
        per_list.append(np.mean(distances))
    return float(np.mean(per_list)) if per_list else float("nan")


def _jaccard_distance(a: FrozenSet, b: FrozenSet) -> float:
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0
