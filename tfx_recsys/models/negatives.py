"""Negative sampling and the sampled ranking evaluation of NCF (He et al. 2017).

Implicit feedback has only positives: a (user, item) pair is observed or not.
NCF trains a binary classifier on the observed pairs (label 1) and, every
epoch, `per_positive` fresh items per positive drawn uniformly from the items
that user never interacted with (label 0). Its evaluation ranks each held-out
item among `num_negatives` (99 in the paper) sampled unobserved items.

Everything works on integer id arrays; a pair (user, item) is known by its key
user * num_items + item (int64), and the observed pairs by their sorted unique
keys, so a membership test is one vectorised np.searchsorted. NumPy only: no
TensorFlow, so this module is cheap to import and easy to test.

Ids are indices: users in [0, num_users), items in [0, num_items), num_items
being the number of rows of the item embedding. When some of those rows are
not real items (an OOV row of a vocabulary, padding), pass the real ones as
`candidate_items`: only they are ever sampled.
"""

from typing import Optional, Tuple

import numpy as np

# Rejection rounds before the few slots still rejected are sampled exactly
# from their user's complement (only users who saw nearly every item get
# there: with a fraction p of the items seen, a slot survives k rounds with
# probability p ** k).
_MAX_REJECTION_ROUNDS = 32


def observed_keys(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted unique int64 keys user * num_items + item of the observed pairs.

    Args:
      users, items: int [n], the pairs (duplicates are fine).
      num_items: the item id range [0, num_items).
    Returns:
      int64 [number of distinct pairs], sorted ascending.
    """
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise ValueError(f"users and items differ in length: {users.size} != {items.size}")
    _check_range(items, num_items, "item")
    return _sorted_unique(users * num_items + items)


def sample_negatives(users: np.ndarray, observed: np.ndarray, num_items: int,
                     per_positive: int, seed: int, epoch: int,
                     candidate_items: Optional[np.ndarray] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform negatives: `per_positive` unobserved items per positive's user.

    Args:
      users: int [n], the user of each positive.
      observed: int64 [k], observed_keys() of every pair the user must not be
        given as a negative (at least the training pairs).
      num_items: the item id range, as in observed_keys().
      per_positive: negatives per positive.
      seed, epoch: the draw is a function of (seed, epoch) only, and differs
        between epochs.
      candidate_items: int [c], the items negatives are drawn from (default:
        every id in [0, num_items)); pass the real item ids when some rows are
        OOV or padding.
    Returns:
      (neg_users, neg_items), int64 [n * per_positive] each:
      neg_users = np.repeat(users, per_positive), and each neg_items entry is
      uniform over the candidates that user never interacted with. Entries
      are independent: a user may get the same negative twice.
    Raises:
      ValueError: if a user has interacted with every candidate item.
    """
    rng = np.random.default_rng([seed, epoch])
    return _sample_negatives(rng, users, observed, num_items, per_positive,
                             candidate_items)


def training_examples(users: np.ndarray, items: np.ndarray, observed: np.ndarray,
                      num_items: int, per_positive: int, seed: int, epoch: int,
                      candidate_items: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of NCF training data: the positives and fresh negatives, shuffled.

    Args: as sample_negatives(); items: int [n], the positives' items.
    Returns:
      (user_ids int64 [m], item_ids int64 [m], labels float32 [m]) with
      m = n * (1 + per_positive): label 1 for the n positives, 0 for the
      epoch's negatives (the same ones sample_negatives(seed, epoch) draws),
      in an order shuffled by the same (seed, epoch) generator.
    """
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise ValueError(f"users and items differ in length: {users.size} != {items.size}")
    rng = np.random.default_rng([seed, epoch])
    neg_users, neg_items = _sample_negatives(rng, users, observed, num_items,
                                             per_positive, candidate_items)
    order = rng.permutation(users.size + neg_users.size)
    user_ids = np.concatenate([users, neg_users])[order]
    item_ids = np.concatenate([items, neg_items])[order]
    # The first users.size rows before shuffling are the positives (this
    # spares a third random gather, ~1.5 s at 50M examples).
    labels = (order < users.size).astype(np.float32)
    return user_ids, item_ids, labels


def sampled_ranking_cases(eval_users: np.ndarray, eval_items: np.ndarray,
                          observed: np.ndarray, num_items: int,
                          num_negatives: int = 99, seed: int = 0,
                          candidate_items: Optional[np.ndarray] = None) -> np.ndarray:
    """The NCF paper's evaluation lists: each held-out item among sampled negatives.

    Args:
      eval_users, eval_items: int [n], the held-out pairs (one per user in the
        paper's leave-one-out protocol).
      observed: int64 [k], observed_keys() of the training pairs AND the
        held-out pairs (the held-out item itself is excluded in any case).
      num_items, candidate_items: as in sample_negatives().
      num_negatives: sampled items per held-out pair.
      seed: the lists are a function of the seed only.
    Returns:
      int64 [n, 1 + num_negatives]: column 0 is the held-out item, columns
      1.. are num_negatives distinct items, uniform among the candidates the
      user never interacted with. Score them and pass the scores to
      hit_rate_and_ndcg().
    Raises:
      ValueError: if a user has fewer than num_negatives unobserved candidates.
    """
    eval_users = np.asarray(eval_users, dtype=np.int64).ravel()
    eval_items = np.asarray(eval_items, dtype=np.int64).ravel()
    if eval_users.shape != eval_items.shape:
        raise ValueError(f"eval_users and eval_items differ in length: "
                         f"{eval_users.size} != {eval_items.size}")
    candidates = _candidates(candidate_items, num_items)
    _check_range(eval_users, None, "user")
    _check_range(eval_items, num_items, "item")
    # The held-out item must never be its own negative, observed or not.
    observed = _sorted_unique(np.concatenate(
        [_as_keys(observed), eval_users * num_items + eval_items]))
    _check_enough_unobserved(eval_users, observed, num_items, candidates,
                             needed=num_negatives)
    rng = np.random.default_rng(seed)
    n = eval_users.size
    negatives = candidates[rng.integers(0, candidates.size, size=(n, num_negatives))]
    for _ in range(_MAX_REJECTION_ROUNDS):
        invalid = _invalid_list_entries(negatives, eval_users, observed, num_items)
        rows, cols = np.nonzero(invalid)
        if rows.size == 0:
            break
        negatives[rows, cols] = candidates[rng.integers(0, candidates.size, size=rows.size)]
    else:
        # Lists of users who saw nearly every candidate: fill them exactly.
        invalid = _invalid_list_entries(negatives, eval_users, observed, num_items)
        for row in np.flatnonzero(invalid.any(axis=1)):
            allowed = np.setdiff1d(
                _unobserved(eval_users[row], observed, num_items, candidates),
                negatives[row][~invalid[row]])
            negatives[row, invalid[row]] = rng.choice(
                allowed, size=int(invalid[row].sum()), replace=False)
    return np.concatenate([eval_items[:, None], negatives], axis=1)


def hit_rate_and_ndcg(scores: np.ndarray, k: int = 10) -> Tuple[float, float]:
    """HR@k and NDCG@k of sampled ranking lists (a single relevant item each).

    Args:
      scores: float [n, 1 + m], the scores of sampled_ranking_cases(): column
        0 is the held-out item's.
      k: the cutoff.
    Returns:
      (hit rate, NDCG), floats: with rank = the number of other items scored
      >= the held-out item (ties count against it, so a constant scorer gets
      nothing), HR@k = mean(rank < k) and
      NDCG@k = mean(1 / log2(rank + 2) if rank < k else 0).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [n > 0, 1 + m], got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    rank = np.sum(scores[:, 1:] >= scores[:, :1], axis=1)
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(np.mean(hit)), float(np.mean(ndcg))


# ----------------------------------------------------------------------------


def _sample_negatives(rng: np.random.Generator, users, observed, num_items: int,
                      per_positive: int, candidate_items) -> Tuple[np.ndarray, np.ndarray]:
    """sample_negatives() with a given generator (training_examples shares it)."""
    users = np.asarray(users, dtype=np.int64).ravel()
    observed = _as_keys(observed)
    candidates = _candidates(candidate_items, num_items)
    if per_positive < 0:
        raise ValueError(f"per_positive must be >= 0, got {per_positive}")
    _check_range(users, None, "user")
    # Checked up front: rejection sampling would loop forever on such a user.
    _check_enough_unobserved(users, observed, num_items, candidates, needed=1)

    # Sample in user order: the membership tests of one user then all fall in
    # the same short run of `observed`, which stays in cache. Against keys in
    # random order np.searchsorted is cache-miss bound (for 10M positives, 40M
    # lookups: ~45 s in random order, ~2 s grouped by user).
    order = _stable_order(users)
    neg_users = np.repeat(users if order is None else users[order], per_positive)
    neg_items = candidates[rng.integers(0, candidates.size, size=neg_users.size)]
    # Redraw only the rejected slots; the slots still pending shrink
    # geometrically, so this costs a few vectorised passes over the arrays.
    pending = np.flatnonzero(_is_observed(neg_users, neg_items, observed, num_items))
    for _ in range(_MAX_REJECTION_ROUNDS):
        if pending.size == 0:
            break
        neg_items[pending] = candidates[rng.integers(0, candidates.size, size=pending.size)]
        pending = pending[_is_observed(neg_users[pending], neg_items[pending],
                                       observed, num_items)]
    if pending.size:
        # Users who saw nearly every candidate: draw from their complement.
        for user in np.unique(neg_users[pending]):
            slots = pending[neg_users[pending] == user]
            allowed = _unobserved(user, observed, num_items, candidates)
            neg_items[slots] = allowed[rng.integers(0, allowed.size, size=slots.size)]
    if order is None:
        return neg_users, neg_items
    # Back to the positives' order: positive j's negatives at j*k .. j*k+k-1.
    in_place = np.empty_like(neg_items)
    in_place.reshape(users.size, per_positive)[order] = neg_items.reshape(
        users.size, per_positive)
    return np.repeat(users, per_positive), in_place


def _stable_order(users: np.ndarray) -> Optional[np.ndarray]:
    """A stable argsort of `users` (int64 [n]), or None if already sorted."""
    if np.all(users[1:] >= users[:-1]):
        return None
    n = users.size
    if users.max() >= np.iinfo(np.int64).max // n:
        return np.argsort(users, kind="stable")
    # Sorting the composite keys user * n + position is a stable argsort,
    # and np.sort on int64 is an order of magnitude faster than np.argsort.
    return np.sort(users * n + np.arange(n)) % n


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for int64 [n]: sort + mask (np.unique itself takes
    ~10 s on 10M int64 here against ~0.1 s for np.sort)."""
    values = np.sort(values)
    keep = np.ones(values.size, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _is_observed(users: np.ndarray, items: np.ndarray, observed: np.ndarray,
                 num_items: int) -> np.ndarray:
    """bool [n]: whether each (user, item) key is in the sorted `observed`."""
    keys = users * num_items + items
    if observed.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    position = np.searchsorted(observed, keys)
    # A key above every observed key gets position == size: clip, then compare.
    return observed[np.minimum(position, observed.size - 1)] == keys


def _invalid_list_entries(negatives: np.ndarray, users: np.ndarray,
                          observed: np.ndarray, num_items: int) -> np.ndarray:
    """bool [n, m]: negatives that are observed, or a repeat of an earlier
    column of the same row (the first copy stays)."""
    invalid = _is_observed(np.broadcast_to(users[:, None], negatives.shape),
                           negatives, observed, num_items)
    # Duplicates: sort each row (stable, so equal values keep their column
    # order), flag every value equal to its predecessor, map back to columns.
    order = np.argsort(negatives, axis=1, kind="stable")
    ordered = np.take_along_axis(negatives, order, axis=1)
    repeat_sorted = np.zeros(negatives.shape, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return invalid | repeat


def _unobserved(user: int, observed: np.ndarray, num_items: int,
                candidates: np.ndarray) -> np.ndarray:
    """The candidates `user` never interacted with (sorted int64)."""
    # A user's keys are one contiguous run of the sorted keys.
    start, stop = np.searchsorted(observed, [user * num_items, (user + 1) * num_items])
    return np.setdiff1d(candidates, observed[start:stop] - user * num_items,
                        assume_unique=True)


def _check_enough_unobserved(users: np.ndarray, observed: np.ndarray, num_items: int,
                             candidates: np.ndarray, needed: int) -> None:
    """Raises ValueError naming the users with fewer than `needed` unobserved
    candidates (counted from the observed keys: no per-user loop)."""
    if users.size == 0:
        return
    observed_users = observed // num_items
    observed_items = observed % num_items
    # Only observed pairs whose item is a candidate reduce the choice.
    if candidates.size == num_items:  # every item is a candidate
        counted = np.ones(observed.shape, dtype=bool)
    else:
        position = np.minimum(np.searchsorted(candidates, observed_items),
                              candidates.size - 1)
        counted = candidates[position] == observed_items
    width = int(max(users.max(), observed_users.max(initial=-1))) + 1
    seen = np.bincount(observed_users[counted], minlength=width)
    asked = np.flatnonzero(np.bincount(users, minlength=width))  # distinct users
    short = asked[candidates.size - seen[asked] < needed]
    if short.size:
        names = ", ".join(str(u) for u in short[:10]) + (" ..." if short.size > 10 else "")
        raise ValueError(
            f"user {names}: fewer than {needed} of the {candidates.size} candidate "
            f"items are unobserved, so no {needed} negative(s) can be sampled "
            f"({short.size} such user(s); drop them or widen candidate_items)")


def _candidates(candidate_items, num_items: int) -> np.ndarray:
    """Sorted unique int64 candidate items (default: range(num_items))."""
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}")
    if candidate_items is None:
        return np.arange(num_items, dtype=np.int64)
    candidates = _sorted_unique(np.asarray(candidate_items, dtype=np.int64).ravel())
    if candidates.size == 0:
        raise ValueError("candidate_items is empty")
    _check_range(candidates, num_items, "candidate item")
    return candidates


def _as_keys(observed) -> np.ndarray:
    observed = np.asarray(observed, dtype=np.int64).ravel()
    if observed.size > 1 and np.any(observed[1:] <= observed[:-1]):
        raise ValueError("observed must be sorted unique keys: use observed_keys()")
    return observed


def _check_range(ids: np.ndarray, size: Optional[int], what: str) -> None:
    if ids.size and (ids.min() < 0 or (size is not None and ids.max() >= size)):
        bound = f"[0, {size})" if size is not None else ">= 0"
        raise ValueError(f"{what} ids must be in {bound}, got {ids.min()}..{ids.max()}")
