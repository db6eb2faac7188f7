"""A seeded synthetic dataset in the native format, for tests and demos.

Why synthetic data at all: the pipeline must be runnable (and testable) with
no network, at any size, in seconds. Why this shape: random data would let
no model beat "recommend the most popular items", so nothing could be
checked. The generator therefore plants structure a recommender can learn:

* every item has a primary genre (its cluster) and 0-2 more genres;
* every user has a preferred genre; with probability `genre_affinity` an
  interaction is drawn from the items of that genre, otherwise from all
  items; users' occupation and age lean towards their genre too, so the user
  features carry signal for users with little history;
* item popularity follows a power law (Zipf with `popularity_exponent`),
  inside each genre as well as overall, as in real catalogues;
* ratings are higher for items of the user's genre;
* each user joins at some time and interacts from then until the end of the
  time span, so a per-user temporal split has something to predict; the
  file is in time order.

Sampling is vectorised with numpy (1M interactions take a few seconds, most
of it writing CSV), and everything derives from one `numpy.random.Generator`
seeded with `seed`: the same seed gives byte-identical files.
"""

from typing import Dict, Tuple

import numpy as np

from tfx_recsys.data import native

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
          "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
OCCUPATIONS = ("student", "engineer", "educator", "artist", "programmer",
               "healthcare", "writer", "lawyer", "retired", "other")
GENDERS = ("F", "M")

MIN_AGE, MAX_AGE = 18, 70
MIN_YEAR, MAX_YEAR = 1950, 2020
DEFAULT_START_TIMESTAMP = 1_577_836_800  # 2020-01-01T00:00:00Z
SECONDS_PER_DAY = 86_400

# Chances of an item having 0, 1 or 2 genres beside its primary one.
_EXTRA_GENRE_PROBS = (0.5, 0.35, 0.15)
_UNKNOWN_YEAR_RATE = 0.01    # a few unknown release years, as in real data
_FEATURE_AFFINITY = 0.5      # chance a user's occupation follows their genre
_LATEST_JOIN = 0.7           # users join within the first 70% of the span
_MAX_REJECTION_ROUNDS = 20   # then the few users still short are filled exactly


def generate_synthetic(out_dir: str, num_users: int = 200,
                       num_items: int = 300, num_interactions: int = 5000,
                       seed: int = 0, num_genres: int = 8,
                       start_timestamp: int = DEFAULT_START_TIMESTAMP,
                       time_span_days: float = 365.0,
                       min_interactions_per_user: int = 5,
                       popularity_exponent: float = 1.0,
                       genre_affinity: float = 0.8,
                       cold_item_fraction: float = 0.02) -> Dict[str, str]:
    """Writes a synthetic dataset (native format) into `out_dir`.

    Exactly `num_interactions` distinct (user, item) pairs, every user with
    at least `min_interactions_per_user` of them; all `num_users` users and
    `num_items` items are written. A `cold_item_fraction` of the items
    (the least popular) get no interaction at all, like items just added to
    a catalogue, so the item corpus is larger than the training data's item
    set, as in production. Ids are ``u1``.. and ``i1``..; titles
    ``Item 1``..; genres come from the first `num_genres` of GENRES.

    Returns {native file name: path}. Raises ValueError for impossible sizes.
    """
    if not 0 <= cold_item_fraction < 1:
        raise ValueError("cold_item_fraction must be in [0, 1)")
    num_cold = min(int(cold_item_fraction * num_items), max(num_items - 1, 0))
    _check_arguments(num_users, num_items, num_items - num_cold,
                     num_interactions, num_genres, min_interactions_per_user,
                     popularity_exponent, genre_affinity, time_span_days)
    rng = np.random.default_rng(seed)
    items = _make_items(rng, num_items, num_cold, num_genres,
                        popularity_exponent)
    # Users prefer genres that have (warm) items.
    users = _make_users(rng, num_users, genres=items["clusters"],
                        num_genres=num_genres)
    counts = _interactions_per_user(rng, num_users, num_items - num_cold,
                                    num_interactions, min_interactions_per_user)
    user_idx, item_idx = _sample_pairs(rng, counts, users["genre"], items,
                                       genre_affinity)
    ratings = _ratings(rng, user_idx, item_idx, users["genre"], items)
    timestamps = _timestamps(rng, user_idx, num_users, start_timestamp,
                             int(time_span_days * SECONDS_PER_DAY))
    order = np.lexsort((item_idx, user_idx, timestamps))
    user_ids, item_ids = _ids("u", num_users), _ids("i", num_items)
    interactions = zip(user_ids[user_idx[order]].tolist(),
                       item_ids[item_idx[order]].tolist(),
                       ratings[order].tolist(), timestamps[order].tolist())
    return native.write_dataset(out_dir, interactions,
                                _user_rows(users, user_ids),
                                _item_rows(items, item_ids, num_genres))


def _check_arguments(num_users, num_items, num_warm, num_interactions,
                     num_genres, min_per_user, popularity_exponent,
                     genre_affinity, time_span_days) -> None:
    """Refuses sizes no dataset can satisfy, before any work is done.

    `num_warm` is the number of items that may be interacted with (all but
    the cold ones): it bounds what each user can have.
    """
    if num_users < 1 or num_items < 1:
        raise ValueError("num_users and num_items must be at least 1")
    if not 1 <= num_genres <= len(GENRES):
        raise ValueError(f"num_genres must be between 1 and {len(GENRES)}")
    if not 0 <= min_per_user <= num_warm:
        raise ValueError("min_interactions_per_user must be between 0 and "
                         f"the number of non-cold items ({num_warm})")
    if num_interactions < num_users * min_per_user:
        raise ValueError(
            f"num_interactions ({num_interactions}) is below num_users * "
            f"min_interactions_per_user ({num_users * min_per_user})")
    if num_interactions > num_users * num_warm:
        raise ValueError(
            f"num_interactions ({num_interactions}) exceeds the number of "
            f"distinct (user, non-cold item) pairs ({num_users * num_warm})")
    if popularity_exponent < 0:
        raise ValueError("popularity_exponent must be >= 0")
    if not 0 <= genre_affinity <= 1:
        raise ValueError("genre_affinity must be between 0 and 1")
    if time_span_days <= 0:
        raise ValueError("time_span_days must be positive")


# --------------------------------------------------------------------------
# Entities


def _make_items(rng: np.random.Generator, num_items: int, num_cold: int,
                num_genres: int, exponent: float) -> dict:
    """Item clusters (primary genre), extra genres, popularity, quality, year.

    Primary genres are dealt round-robin, then shuffled, so every genre has
    items (when there are enough items) and clusters are of similar size.
    Popularity is 1/rank**exponent over a random ranking; the `num_cold`
    last-ranked items get popularity 0, so they are never drawn.
    """
    primary = rng.permutation(np.arange(num_items) % num_genres)
    rank = rng.permutation(num_items)
    popularity = 1.0 / (rank + 1.0) ** exponent
    popularity[rank >= num_items - num_cold] = 0.0
    years = rng.integers(MIN_YEAR, MAX_YEAR + 1, size=num_items)
    unknown_year = rng.random(num_items) < _UNKNOWN_YEAR_RATE
    return {
        "primary": primary,
        "extra": _extra_genres(rng, primary, num_genres),
        "popularity": popularity / popularity.sum(),
        "quality": rng.normal(0.0, 0.4, size=num_items),
        "year": np.where(unknown_year, -1, years),
        "clusters": np.unique(primary[popularity > 0]),
    }


def _extra_genres(rng: np.random.Generator, primary: np.ndarray,
                  num_genres: int) -> np.ndarray:
    """(num_items, 2) genre indices beside the primary one; -1 for none."""
    num_items = len(primary)
    keys = rng.random((num_items, num_genres))
    keys[np.arange(num_items), primary] = -1.0   # never repeat the primary
    candidates = np.argsort(-keys, axis=1, kind="stable")[:, :2]
    if candidates.shape[1] < 2:
        candidates = np.pad(candidates, ((0, 0), (0, 2 - candidates.shape[1])))
    how_many = rng.choice(len(_EXTRA_GENRE_PROBS), size=num_items,
                          p=_EXTRA_GENRE_PROBS)
    how_many = np.minimum(how_many, num_genres - 1)
    return np.where(np.arange(2) < how_many[:, None], candidates, -1)


def _make_users(rng: np.random.Generator, num_users: int,
                genres: np.ndarray, num_genres: int) -> dict:
    """Preferred genre (one of `genres`) per user, and features that lean
    towards it."""
    genre = rng.choice(genres, size=num_users)
    # Occupation: half the time the one tied to the genre, else random.
    tied = rng.random(num_users) < _FEATURE_AFFINITY
    occupation = np.where(tied, genre % len(OCCUPATIONS),
                          rng.integers(len(OCCUPATIONS), size=num_users))
    # Age: centred on a genre-specific age spread over the allowed range.
    centre = MIN_AGE + (genre + 0.5) / num_genres * (MAX_AGE - MIN_AGE)
    age = np.clip(np.rint(rng.normal(centre, 8.0)), MIN_AGE, MAX_AGE)
    return {
        "genre": genre,
        "age": age.astype(np.int64),
        "gender": rng.integers(len(GENDERS), size=num_users),
        "occupation": occupation,
        "zip_code": rng.integers(0, 100_000, size=num_users),
    }


def _interactions_per_user(rng: np.random.Generator, num_users: int,
                           capacity: int, total: int,
                           minimum: int) -> np.ndarray:
    """Per-user counts summing to `total`, each in [minimum, capacity].

    Activity is heavy-tailed (log-normal weights), as in real logs. A user
    can interact with each (non-cold) item at most once, so counts above
    `capacity` are capped and the excess handed to users with room left.
    """
    weights = rng.lognormal(0.0, 1.0, size=num_users)
    counts = minimum + rng.multinomial(total - minimum * num_users,
                                       weights / weights.sum())
    while True:
        excess = int(np.maximum(counts - capacity, 0).sum())
        if excess == 0:
            return counts
        counts = np.minimum(counts, capacity)
        room = (capacity - counts).astype(float)
        counts = counts + rng.multinomial(excess, room / room.sum())


# --------------------------------------------------------------------------
# Interactions


def _sample_pairs(rng: np.random.Generator, counts: np.ndarray,
                  user_genre: np.ndarray, items: dict,
                  affinity: float) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) index pairs, counts[u] of them for user u.

    Draws with replacement from each user's item distribution, drops repeats
    and draws again for what is missing (rejection rounds, all vectorised;
    each round only touches the users still short). The rare users still
    short after that (those who need most of the catalogue) are filled by
    exact sampling without replacement.
    """
    num_items = len(items["popularity"])
    sampler = _ItemSampler(items["primary"], items["popularity"])
    need = counts.copy()                  # 0 once a user is complete
    done_users, done_items = [], []
    users = np.empty(0, dtype=np.int64)   # pairs so far of incomplete users
    chosen = np.empty(0, dtype=np.int64)
    for _ in range(_MAX_REJECTION_ROUNDS):
        missing = need - np.bincount(users, minlength=len(need))
        draws = np.ceil(missing * 1.5).astype(np.int64) + (missing > 0) * 2
        new_users = np.repeat(np.arange(len(need)), draws)
        from_genre = rng.random(len(new_users)) < affinity
        new_items = sampler.draw(rng, user_genre[new_users], from_genre)
        users, chosen = _first_distinct(
            np.concatenate([users, new_users]),
            np.concatenate([chosen, new_items]), need, num_items)
        short = np.bincount(users, minlength=len(need)) < need
        complete = ~short[users]
        done_users.append(users[complete])
        done_items.append(chosen[complete])
        users, chosen = users[~complete], chosen[~complete]
        need = np.where(short, need, 0)
        if not short.any():
            break
    return _fill_exactly(rng, np.concatenate(done_users + [users]),
                         np.concatenate(done_items + [chosen]), counts,
                         items["popularity"])


class _ItemSampler:
    """Draws items by popularity, overall or within one genre, vectorised.

    Items are laid out genre by genre with their popularity as widths on
    [0, 1); a uniform number scaled into the span of a genre (or the whole
    line) picks an item with a single searchsorted. Items of popularity 0
    (cold) are left off the line, so they can never be picked.
    """

    def __init__(self, primary: np.ndarray, popularity: np.ndarray):
        warm = np.flatnonzero(popularity > 0)
        self.order = warm[np.argsort(primary[warm], kind="stable")]
        self.cumulative = np.cumsum(popularity[self.order])
        self.cumulative /= self.cumulative[-1]
        sorted_genres = primary[self.order]
        genres = np.arange(primary.max() + 1)
        first = np.searchsorted(sorted_genres, genres, side="left")
        end = np.searchsorted(sorted_genres, genres, side="right")
        padded = np.concatenate([[0.0], self.cumulative])
        self.low, self.high = padded[first], padded[end]

    def draw(self, rng: np.random.Generator, genre: np.ndarray,
             within_genre: np.ndarray) -> np.ndarray:
        low = np.where(within_genre, self.low[genre], 0.0)
        high = np.where(within_genre, self.high[genre], 1.0)
        points = low + rng.random(len(genre)) * (high - low)
        slots = np.searchsorted(self.cumulative, points, side="right")
        return self.order[np.minimum(slots, len(self.order) - 1)]


def _first_distinct(users: np.ndarray, items: np.ndarray, counts: np.ndarray,
                    num_items: int) -> Tuple[np.ndarray, np.ndarray]:
    """Keeps the first occurrence of each pair, then each user's first
    counts[u] pairs. Earlier pairs win, so accepted pairs stay accepted."""
    _, first = np.unique(users * num_items + items, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    by_user = np.argsort(users, kind="stable")
    group_start = np.searchsorted(users[by_user], users[by_user], side="left")
    rank = np.empty(len(users), dtype=np.int64)
    rank[by_user] = np.arange(len(users)) - group_start
    keep = rank < counts[users]
    return users[keep], items[keep]


def _fill_exactly(rng: np.random.Generator, users: np.ndarray,
                  items: np.ndarray, counts: np.ndarray,
                  popularity: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Tops up users still short by sampling unseen items by popularity."""
    missing = counts - np.bincount(users, minlength=len(counts))
    extra_users, extra_items = [users], [items]
    for user in np.flatnonzero(missing):
        weights = popularity.copy()
        weights[items[users == user]] = 0.0
        picked = rng.choice(len(popularity), size=missing[user], replace=False,
                            p=weights / weights.sum())
        extra_users.append(np.full(len(picked), user))
        extra_items.append(picked)
    return np.concatenate(extra_users), np.concatenate(extra_items)


def _ratings(rng: np.random.Generator, user_idx: np.ndarray,
             item_idx: np.ndarray, user_genre: np.ndarray,
             items: dict) -> np.ndarray:
    """1-5 stars: higher for the user's genre and for better items."""
    genre = user_genre[user_idx]
    matches = ((items["primary"][item_idx] == genre)
               | (items["extra"][item_idx] == genre[:, None]).any(axis=1))
    score = (3.0 + np.where(matches, 0.8, -0.4) + items["quality"][item_idx]
             + rng.normal(0.0, 0.8, size=len(user_idx)))
    return np.clip(np.rint(score), 1, 5).astype(np.int64)


def _timestamps(rng: np.random.Generator, user_idx: np.ndarray,
                num_users: int, start: int, span: int) -> np.ndarray:
    """Each user joins at some point, then interacts until the span ends."""
    joined = rng.random(num_users) * _LATEST_JOIN * span
    offset = joined[user_idx] + rng.random(len(user_idx)) * (
        span - joined[user_idx])
    return start + np.minimum(offset.astype(np.int64), span - 1)


# --------------------------------------------------------------------------
# Rows


def _user_rows(users: dict, user_ids: np.ndarray):
    return zip(user_ids.tolist(),
               users["age"].tolist(),
               np.array(GENDERS)[users["gender"]].tolist(),
               np.array(OCCUPATIONS)[users["occupation"]].tolist(),
               [f"{z:05d}" for z in users["zip_code"].tolist()])


def _item_rows(items: dict, item_ids: np.ndarray, num_genres: int):
    names = GENRES[:num_genres]
    for number, (item_id, primary, extra, year) in enumerate(zip(
            item_ids.tolist(), items["primary"].tolist(),
            items["extra"].tolist(), items["year"].tolist()), start=1):
        genres = [names[primary]] + [names[g] for g in extra if g >= 0]
        yield item_id, f"Item {number}", None if year < 0 else year, genres


def _ids(prefix: str, count: int) -> np.ndarray:
    """Ids as an object array, so fancy indexing maps indices to ids."""
    return np.array([f"{prefix}{i + 1}" for i in range(count)], dtype=object)
