"""Strong simple baselines for implicit-feedback retrieval, in NumPy/SciPy.

Why: a learned retrieval model is only worth its cost if it beats what a few
lines of linear algebra get from the same interactions. "Most popular" is the
floor every recommender must clear; item-based kNN and EASE are the classic
strong baselines, and on small and medium catalogues (MovieLens-sized) they
are routinely hard to beat (Dacrema et al., RecSys 2019; Steck, WWW 2019).
They are reported beside every model with the project's own metric code
(`tfx_recsys.metrics`), on the same per-user temporal split as the pipeline
(`load_split` reads a dataset through its config with ExampleGen's reader
and row rules, and reuses its splitting rule).

All three share one API, so they can be used interchangeably:

    model = Ease().fit(train)            # train: csr [users, items], binary
    scores = model.scores(train[rows])   # float32 [len(rows), items]

Models score users by their interaction rows only, so any user (including
one not in `train`) can be scored from their history. Scores of a user's own
items are not masked here: exclusion of seen items is the evaluator's job
(`metrics.top_k_items(..., exclude=seen)`), as for every other model.

Everything is deterministic (no randomness; ties go to the lower item index).
Reference numbers, MovieLens-100K with the pipeline's split (eval fraction
0.2: 943 users x 1,682 items, 80,367 train interactions, all items scored,
train items excluded), default settings, fit times on a 2-core CPU:

    model        fit s   recall@10  recall@50  recall@100  ndcg@10
    MostPopular  0.00    0.0625     0.2007     0.3218      0.1158
    ItemKnn      0.07    0.1135     0.3190     0.4768      0.1827
    Ease         0.5     0.1161     0.3731     0.5369      0.1912

    python -m tfx_recsys.baselines DATA_DIR [--dataset NAME_OR_YAML]
                                       # prints metrics per baseline
"""

import argparse
import dataclasses
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from tfx_recsys import dataset_config as dc
from tfx_recsys import errors, metrics
from tfx_recsys.data import ingest, splitting, tables

DEFAULT_EASE_L2 = 500.0
DEFAULT_EASE_MAX_ITEMS = 20_000
DEFAULT_KNN_NEIGHBORS = 100
DEFAULT_KNN_SHRINKAGE = 0.0
# ItemKnn's similarity is built in blocks of item rows holding about this
# many co-occurring item pairs (a few hundred MiB of sparse entries).
_KNN_BLOCK_ENTRIES = 1 << 22


def interaction_matrix(user_indices: Sequence[int], item_indices: Sequence[int],
                       num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary user-item matrix from (user, item) index pairs.

    Implicit feedback: an interaction is a 1 whatever its rating, and a pair
    seen several times still counts once (a repeat view is not more evidence
    of relevance here, and EASE/cosine assume 0/1 entries).

    Args:
      user_indices, item_indices: int [interactions], 0-based.
      num_users, num_items: the matrix shape (items never interacted with are
        all-zero columns: they stay in the corpus).
    Returns:
      float32 csr_matrix [num_users, num_items] with sorted indices.
    Raises:
      ValueError if the lengths differ or an index is out of range.
    """
    users = np.asarray(user_indices, dtype=np.int64).ravel()
    items = np.asarray(item_indices, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise ValueError(f"user_indices ({users.size}) and item_indices "
                         f"({items.size}) must have the same length")
    for name, values, size in (("user", users, num_users), ("item", items, num_items)):
        if values.size and (values.min() < 0 or values.max() >= size):
            raise ValueError(f"{name} indices must be in [0, {size}); got "
                             f"[{values.min()}, {values.max()}]")
    matrix = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)),
                           shape=(num_users, num_items), dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _as_csr(matrix, name: str) -> sp.csr_matrix:
    """A float32 CSR copy of a sparse or dense 2-D matrix."""
    result = sp.csr_matrix(matrix, dtype=np.float32)
    if result.ndim != 2:
        raise ValueError(f"{name} must be 2-D [users, items]")
    return result


class _Baseline:
    """Shared checks: `fit` before `scores`, same number of items in both."""

    num_items: Optional[int] = None

    def _start_fit(self, train) -> sp.csr_matrix:
        train = _as_csr(train, "train")
        self.num_items = train.shape[1]
        return train

    def _user_rows(self, user_rows) -> sp.csr_matrix:
        if self.num_items is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit first")
        rows = _as_csr(user_rows, "user_rows")
        if rows.shape[1] != self.num_items:
            raise ValueError(f"user_rows has {rows.shape[1]} item columns; the "
                             f"model was fitted on {self.num_items}")
        return rows


class MostPopular(_Baseline):
    """Every user gets the items with the most train users, in that order.

    The floor a personalised model must clear: it needs no model at all.
    Same scores as RetrievalEvaluator's `most_popular` baseline when the
    train data has no repeated (user, item) pairs.
    """

    def fit(self, train) -> "MostPopular":
        """train: csr [users, items]; counts are column sums."""
        train = self._start_fit(train)
        self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
        return self

    def scores(self, user_rows) -> np.ndarray:
        """float32 [users, items]: the train counts, the same for every user."""
        rows = self._user_rows(user_rows)
        return np.tile(self.counts, (rows.shape[0], 1))


class ItemKnn(_Baseline):
    """Item-based k-nearest-neighbours with cosine similarity.

    As in Sarwar et al. (WWW 2001) and Deshpande & Karypis (TOIS 2004):

        sim(i, j) = |U_i ∩ U_j| / (sqrt|U_i| * sqrt|U_j| + shrinkage)

    (U_i: the train users of item i; with a binary matrix this is the cosine
    of columns i and j). `shrinkage` > 0 damps similarities supported by few
    common users. Each item keeps only its `k_neighbors` most similar other
    items (self-similarity is 0), which removes the noise of weak
    co-occurrences and keeps the model sparse: [items, items] with at most
    k_neighbors entries per row. A user's score for item j is the sum over
    their items i of sim(i, j) when j is among i's neighbours:

        scores = user_rows @ similarity

    Defaults: k_neighbors=100 and no shrinkage. On MovieLens-100K (temporal
    split, eval fractions 0.2 and 0.3) k from 50 to 400 is within 0.025 on
    recall@10/50/100, and shrinkage 10 or 50 only lowered every metric;
    100 is the usual literature default and keeps the model small.

    The similarity is computed from sparse co-occurrence counts in blocks of
    item rows sized so each block holds about `_KNN_BLOCK_ENTRIES`
    co-occurring pairs: time and memory grow with the number of co-occurring
    item pairs (the sum over users of their item count squared), never with
    items x items, so a catalogue of a million items works. `block_size`
    (item rows per block) overrides the sizing.
    """

    def __init__(self, block_size: Optional[int] = None):
        self.block_size = block_size

    def fit(self, train, k_neighbors: int = DEFAULT_KNN_NEIGHBORS,
            shrinkage: float = DEFAULT_KNN_SHRINKAGE) -> "ItemKnn":
        """Builds `self.similarity`, float32 csr [items, items].

        train: csr [users, items], binary (weights are used as given).
        Ties at the k-th neighbour go to the lower item index; items with
        fewer than `k_neighbors` positive similarities keep only those.
        """
        if k_neighbors < 1:
            raise ValueError("k_neighbors must be at least 1")
        if shrinkage < 0:
            raise ValueError("shrinkage must be >= 0")
        train = self._start_fit(train)
        num_items = train.shape[1]
        k = min(k_neighbors, max(num_items - 1, 1))
        norms = np.sqrt(np.asarray(train.multiply(train).sum(axis=0),
                                   dtype=np.float64).ravel())
        by_user = train.astype(np.float64)             # [users, items]
        by_item = by_user.T.tocsr()                     # [items, users]
        # The result's arrays, filled block by block: at most k entries per
        # row, so no concatenation (which would hold the similarities twice).
        # Pages past the last entry are never written, so never resident.
        cols = np.empty(num_items * k, np.int32)
        values = np.empty(num_items * k, np.float32)
        per_row = np.zeros(num_items, np.int64)
        filled = 0
        for start, stop in self._blocks(by_item, by_user):
            # Co-occurrence of this block's items with every item: sparse [b, items].
            dots = (by_item[start:stop] @ by_user).tocoo()
            r, c = dots.row.astype(np.int64), dots.col.astype(np.int64)
            denominator = norms[r + start] * norms[c] + shrinkage
            sim = np.divide(dots.data, denominator, out=np.zeros_like(dots.data),
                            where=denominator > 0)
            keep = (sim > 0) & (c != r + start)  # no item is its own neighbour
            r, c, sim = r[keep], c[keep], sim[keep]
            chosen = top_k_per_row(r, c, sim, k)  # sorted by row, then column
            cols[filled:filled + len(chosen)] = c[chosen]
            values[filled:filled + len(chosen)] = sim[chosen]
            filled += len(chosen)
            per_row[start:stop] = np.bincount(r[chosen], minlength=stop - start)
        index_type = np.int32 if filled < np.iinfo(np.int32).max else np.int64
        indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(index_type)
        self.similarity = sp.csr_matrix(
            (values[:filled], cols[:filled].astype(index_type, copy=False), indptr),
            shape=(num_items, num_items), dtype=np.float32)
        return self

    def _blocks(self, by_item: sp.csr_matrix, by_user: sp.csr_matrix):
        """(start, stop) item ranges of about _KNN_BLOCK_ENTRIES co-occurring
        pairs each (an upper bound: sum over the item's users of their item
        counts), or of `block_size` items."""
        num_items = by_item.shape[0]
        if self.block_size:
            bounds = list(range(0, num_items, self.block_size)) + [num_items]
        else:
            items_per_user = np.diff(by_user.indptr).astype(np.float64)
            pairs = np.cumsum(by_item @ items_per_user)
            bounds = [0]
            while bounds[-1] < num_items:
                before = pairs[bounds[-1] - 1] if bounds[-1] else 0.0
                stop = int(np.searchsorted(pairs, before + _KNN_BLOCK_ENTRIES, "right"))
                bounds.append(min(max(stop, bounds[-1] + 1), num_items))
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]

    def scores(self, user_rows) -> np.ndarray:
        """float32 [users, items]: user_rows @ similarity."""
        rows = self._user_rows(user_rows)
        return np.asarray((rows @ self.similarity).toarray(), dtype=np.float32)


def top_k_per_row(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                  k: int) -> np.ndarray:
    """int [m]: positions of each row's k largest entries of a sparse matrix
    given as (rows, cols, values), ordered by row, then column.

    Ties at the k-th value go to lower column indices, so exactly
    min(k, entries in the row) are kept per row. One O(n log n) sort.
    """
    order = np.lexsort((cols, -values, rows))
    sorted_rows = rows[order]
    row_start = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank = np.arange(len(order)) - row_start
    chosen = order[rank < k]
    return chosen[np.lexsort((cols[chosen], rows[chosen]))]


class Ease(_Baseline):
    """EASE: Embarrassingly Shallow Autoencoders (Steck, WWW 2019).

    A linear item-item model B [items, items] with zero diagonal that
    reconstructs each user's row, X ≈ X B, under an L2 penalty λ||B||².
    The zero diagonal is what stops the trivial solution B = I (an item
    predicting itself); the problem then has the closed form

        P = (XᵀX + λI)⁻¹,   B = I - P · diag(1 / diag(P))

    i.e. B_ij = -P_ij / P_jj off the diagonal and B_jj = 0. Scores are
    X_u B. Negative weights are kept: they encode "users of i rarely take
    j", which is part of why EASE beats kNN.

    λ: Steck used 200-1000 on ML-20M/Netflix/MSD (500 for ML-20M, 1000 for
    Netflix); larger and denser data wants more. 500 (the default) is also
    on the plateau for MovieLens-100K with the pipeline's temporal split:
    λ in 200-1000 is within 0.012 of the best recall@10/50/100 for eval
    fractions 0.2 and 0.3, and 500 has the best recall@50/100 on both; 50
    and 2000 are worse. Much smaller data may prefer 50-200.

    Cost: XᵀX and its inverse are dense [items, items], O(items²) memory and
    O(items³) time, so corpora above `max_items` (default 20,000, about
    ML-20M's catalogue: ~6 GiB at peak, minutes of CPU) are refused; use
    ItemKnn for those, or raise `max_items` if the machine can take it.
    """

    def __init__(self, max_items: int = DEFAULT_EASE_MAX_ITEMS):
        self.max_items = max_items

    def fit(self, train, l2: float = DEFAULT_EASE_L2) -> "Ease":
        """Builds `self.weights`, float32 [items, items] with zero diagonal.

        train: csr [users, items], binary. Raises ValueError for l2 <= 0 and
        for more than `max_items` items.
        """
        if l2 <= 0:
            raise ValueError("l2 must be positive (it also makes XᵀX + λI invertible)")
        train = _as_csr(train, "train")
        num_items = train.shape[1]
        if num_items > self.max_items:
            gib = 2 * 8 * num_items ** 2 / 2 ** 30
            raise ValueError(
                f"EASE needs a dense {num_items}x{num_items} inverse (O(items²) "
                f"memory, about {gib:.1f} GiB here, and O(items³) time); this "
                f"corpus has {num_items} items, above max_items={self.max_items}. "
                "Use ItemKnn for large catalogues, or pass a larger max_items "
                "to Ease() if the machine has the memory.")
        self._start_fit(train)
        # float64 throughout: XᵀX + λI can be badly conditioned for small λ.
        gram = (train.T @ train).astype(np.float64).toarray()    # XᵀX [items, items]
        gram[np.diag_indices(num_items)] += l2
        precision = np.linalg.inv(gram)                            # P
        del gram   # peak memory: two dense float64 [items, items]
        precision /= -np.diag(precision).copy()[None, :]           # B_ij = -P_ij / P_jj
        np.fill_diagonal(precision, 0.0)
        self.weights = precision.astype(np.float32)
        return self

    def scores(self, user_rows) -> np.ndarray:
        """float32 [users, items]: user_rows @ weights."""
        rows = self._user_rows(user_rows)
        return np.asarray(rows @ self.weights, dtype=np.float32)


# --------------------------------------------------------------------------
# Evaluation on a configured dataset, with the pipeline's split


@dataclasses.dataclass
class Split:
    """A dataset split per user by time, as InteractionsExampleGen does.

    train: float32 csr [users, items], binary train interactions.
    relevant: per user (row of `train`), their distinct eval items, in time
      order; empty for users without eval interactions.
    user_ids, item_ids: raw ids of the rows and columns; the columns are
      every accepted row of the items table (the corpus), in file order.
    report: ingest.build_report of the read (row accounting, rejects).
    """

    train: sp.csr_matrix
    relevant: List[List[int]]
    user_ids: List[str]
    item_ids: List[str]
    report: Dict[str, Any] = dataclasses.field(default_factory=dict)


def load_split(data_dir: str, eval_fraction: float = 0.2,
               config: Optional[dc.DatasetConfig] = None) -> Split:
    """Reads a dataset and applies the pipeline's per-user temporal split.

    config: the dataset config (default: datasets/synthetic.yaml, which
      describes the native three CSV files that MovieLens and the synthetic
      generator write).

    Rows go through ExampleGen's reader and rules (`tables`, `ingest`):
    rejected rows and interactions of unknown users or items are skipped,
    exact duplicates removed, interactions below min_rating left out, and
    more rejected rows than max_rejected_fraction is a DataError. Per user,
    interactions ordered by (timestamp, item_id); the last
    floor(eval_fraction * n) are eval (`splitting.split_user_history`).
    """
    config = config or dc.load(dc.builtin_path("synthetic"))
    tables.validate_dataset(config, data_dir)
    now = time.time()
    rejects: List[ingest.Reject] = []
    counts = {}
    keys: Dict[str, Dict[str, None]] = {}
    for table, key in (("users", dc.USER_ID), ("items", dc.ITEM_ID)):
        keys[table], rows = {}, 0
        for _, row in ingest.parse_table(config, table, data_dir, now):
            rows += 1
            if isinstance(row, ingest.Reject):
                rejects.append(row)
            else:
                keys[table][row[key]] = None
        counts[table] = (rows, 0)
    histories: Dict[str, list] = {}
    rows = filtered = 0
    for number, row in ingest.parse_table(config, "interactions", data_dir, now):
        rows += 1
        if isinstance(row, ingest.Reject):
            rejects.append(row)
        elif ingest.below_min_rating(row, config):
            filtered += 1
        else:
            reject = ingest.unknown_key(number, row, keys["users"], keys["items"], config)
            if reject is not None:
                rejects.append(reject)
            else:
                histories.setdefault(row[dc.USER_ID], []).append((number, row))
    counts["interactions"] = (rows, filtered)

    item_ids = list(keys["items"])
    item_index = {item_id: i for i, item_id in enumerate(item_ids)}
    user_ids = sorted(histories)
    users, items, relevant = [], [], []
    examples = {"train": 0, "eval": 0}
    for u, user_id in enumerate(user_ids):
        kept, duplicates = ingest.drop_duplicates(histories.pop(user_id), config)
        rejects += duplicates
        eval_items: Dict[int, None] = {}
        for split, interaction in splitting.split_user_history(
                [row for _, row in kept], eval_fraction):
            examples[split] += 1
            item = item_index[interaction[dc.ITEM_ID]]
            if split == "train":
                users.append(u)
                items.append(item)
            else:
                eval_items[item] = None
        relevant.append(list(eval_items))
    report = ingest.build_report(
        config, rejects, counts, examples,
        {"interactions": examples["train"] + examples["eval"],
         "users": len(keys["users"]), "items": len(item_ids)})
    ingest.check_accounting(report)
    ingest.check_report(report, config, data_dir, rejected_rows_path=None)
    train = interaction_matrix(users, items, len(user_ids), len(item_ids))
    return Split(train=train, relevant=relevant, user_ids=user_ids,
                 item_ids=item_ids, report=report)


def evaluate(model, split: Split, ks: Sequence[int] = (10, 50, 100)
             ) -> Dict[str, float]:
    """`metrics.evaluate_scores` of a fitted model on a split's eval users.

    Users with eval items are scored from their train rows against the whole
    corpus; their train items are excluded from the ranking.
    """
    users = [u for u, rel in enumerate(split.relevant) if rel]
    rows = split.train[users]
    seen = [rows.indices[rows.indptr[i]:rows.indptr[i + 1]] for i in range(len(users))]
    counts = np.asarray(split.train.sum(axis=0)).ravel()
    return metrics.evaluate_scores(model.scores(rows), seen,
                                   [split.relevant[u] for u in users], ks,
                                   train_counts=counts)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Prints recall/ndcg of the three baselines (default settings); a data
    or config problem is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="the directory holding the tables")
    parser.add_argument("--dataset", default="synthetic",
                        help="a dataset config: a name in datasets/ or a YAML "
                             "file (default: synthetic, the native CSV files)")
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        config = dc.load(args.dataset if args.dataset.endswith((".yaml", ".yml"))
                         else dc.builtin_path(args.dataset))
        split = load_split(args.data_dir, args.eval_fraction, config)
    except errors.UserError as e:
        print(f"baselines: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{split.train.shape[0]} users x {split.train.shape[1]} items, "
          f"{split.train.nnz} train interactions")
    ks = (10, 50, 100)
    columns = [f"recall@{k}" for k in ks] + ["ndcg@10"]
    print(f"{'model':<12}{'fit s':>8}" + "".join(f"{c:>11}" for c in columns))
    for model in (MostPopular(), ItemKnn(), Ease()):
        start = time.perf_counter()
        model.fit(split.train)
        seconds = time.perf_counter() - start
        result = evaluate(model, split, ks)
        print(f"{type(model).__name__:<12}{seconds:>8.2f}"
              + "".join(f"{result[c]:>11.4f}" for c in columns))


if __name__ == "__main__":
    main()
