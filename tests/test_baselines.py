"""Baselines (MostPopular, ItemKnn, EASE) against hand and direct computations."""

import math
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from tfx_recsys import baselines, metrics
from tfx_recsys.data import synthetic

# 4 users x 4 items. Item users: i0 {u0,u1,u3}, i1 {u0,u1,u2}, i2 {u1,u2}, i3 {u3}.
TINY = np.array([[1, 1, 0, 0],
                 [1, 1, 1, 0],
                 [0, 1, 1, 0],
                 [1, 0, 0, 1]], dtype=np.float32)


def _random_binary(seed, users, items, density):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < density).astype(np.float32))


def _dense_knn(x, k, shrinkage=0.0):
    """Cosine kNN directly on the dense matrix; ties to the lower index."""
    x = np.asarray(x, np.float64)
    norms = np.sqrt((x * x).sum(axis=0))
    denominator = norms[:, None] * norms[None, :] + shrinkage
    sim = np.divide(x.T @ x, denominator, out=np.zeros((x.shape[1],) * 2),
                    where=denominator > 0)
    np.fill_diagonal(sim, 0.0)
    pruned = np.zeros_like(sim)
    for i, row in enumerate(sim):
        best = np.argsort(-row, kind="stable")[:k]
        best = best[row[best] > 0]
        pruned[i, best] = row[best]
    return pruned


def test_interaction_matrix_is_binary_float32_and_keeps_empty_items():
    matrix = baselines.interaction_matrix([0, 0, 0, 2], [1, 1, 3, 0], 3, 5)
    assert matrix.dtype == np.float32 and matrix.shape == (3, 5)
    np.testing.assert_array_equal(matrix.toarray(), [[0, 1, 0, 1, 0],
                                                     [0, 0, 0, 0, 0],
                                                     [1, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="item indices"):
        baselines.interaction_matrix([0], [5], 3, 5)


def test_most_popular_scores_are_train_counts_for_every_user():
    model = baselines.MostPopular().fit(sp.csr_matrix(TINY))
    scores = model.scores(sp.csr_matrix(TINY[:2]))
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, [[3, 3, 2, 1], [3, 3, 2, 1]])


def test_ease_matches_the_closed_form_computed_directly():
    l2 = 2.0
    model = baselines.Ease().fit(sp.csr_matrix(TINY), l2=l2)
    p = np.linalg.inv(TINY.T.astype(np.float64) @ TINY + l2 * np.eye(4))
    expected = np.eye(4) - p @ np.diag(1.0 / np.diag(p))
    np.testing.assert_allclose(model.weights, expected, atol=1e-6)
    np.testing.assert_array_equal(np.diag(model.weights), 0.0)
    scores = model.scores(sp.csr_matrix(TINY))
    assert scores.dtype == np.float32 and scores.shape == (4, 4)
    np.testing.assert_allclose(scores, TINY @ expected, atol=1e-6)


def test_ease_never_scores_an_item_by_its_own_weight():
    model = baselines.Ease().fit(_random_binary(0, 50, 12, 0.3), l2=5.0)
    for item in range(12):
        alone = sp.csr_matrix(([1.0], ([0], [item])), shape=(1, 12))
        assert model.scores(alone)[0, item] == 0.0


def test_ease_refuses_corpora_above_max_items():
    with pytest.raises(ValueError, match=r"5 items, above max_items=4.*ItemKnn"):
        baselines.Ease(max_items=4).fit(_random_binary(0, 10, 5, 0.5))
    baselines.Ease(max_items=4).fit(_random_binary(0, 10, 4, 0.5))  # at the limit


def test_item_knn_matches_hand_computed_cosines():
    model = baselines.ItemKnn().fit(sp.csr_matrix(TINY), k_neighbors=3)
    s6, s3 = math.sqrt(6), math.sqrt(3)
    # |U_i ∩ U_j| / (sqrt|U_i| sqrt|U_j|); i1 and i3 share no user.
    expected = np.array([[0, 2 / 3, 1 / s6, 1 / s3],
                         [2 / 3, 0, 2 / s6, 0],
                         [1 / s6, 2 / s6, 0, 0],
                         [1 / s3, 0, 0, 0]])
    np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-6)
    # User 0 has i0 and i1: each item scores the sum of their similarity rows.
    np.testing.assert_allclose(model.scores(sp.csr_matrix(TINY[:1]))[0],
                               [2 / 3, 2 / 3, 3 / s6, 1 / s3], rtol=1e-6)
    shrunk = baselines.ItemKnn().fit(sp.csr_matrix(TINY), k_neighbors=3, shrinkage=1.0)
    assert shrunk.similarity[0, 1] == pytest.approx(2 / (3 + 1))


def test_item_knn_keeps_exactly_k_neighbours_the_most_similar_ones():
    train = _random_binary(1, 200, 30, 0.5)   # every pair of items co-occurs
    model = baselines.ItemKnn().fit(train, k_neighbors=5)
    np.testing.assert_array_equal(np.diff(model.similarity.indptr), 5)
    np.testing.assert_allclose(model.similarity.toarray(),
                               _dense_knn(train.toarray(), 5), rtol=1e-6)


def test_top_k_per_row_breaks_ties_by_lower_column():
    # Row 0: values 2, 1, 2, 2 in columns 1..4; row 1: one entry.
    rows = np.array([1, 0, 0, 0, 0])
    cols = np.array([2, 4, 1, 2, 3])
    values = np.array([3.0, 2.0, 2.0, 1.0, 2.0])
    chosen = baselines.top_k_per_row(rows, cols, values, 2)
    assert list(zip(rows[chosen], cols[chosen])) == [(0, 1), (0, 3), (1, 2)]


def test_item_knn_automatic_blocks_equal_one_block(monkeypatch):
    train = _random_binary(3, 60, 30, 0.2)
    whole = baselines.ItemKnn(block_size=30).fit(train, k_neighbors=5)
    monkeypatch.setattr(baselines, "_KNN_BLOCK_ENTRIES", 50)
    blocked = baselines.ItemKnn()
    assert len(blocked._blocks(train.T.tocsr(), train)) > 3
    blocked.fit(train, k_neighbors=5)
    np.testing.assert_array_equal(blocked.similarity.toarray(),
                                  whole.similarity.toarray())


@pytest.mark.parametrize("block_size", [1, 3, 7, None])
def test_item_knn_blockwise_fit_equals_the_dense_computation(block_size):
    train = _random_binary(2, 40, 25, 0.15)
    model = baselines.ItemKnn(block_size=block_size).fit(train, k_neighbors=4,
                                                         shrinkage=2.0)
    np.testing.assert_allclose(model.similarity.toarray(),
                               _dense_knn(train.toarray(), 4, shrinkage=2.0),
                               rtol=1e-6)


@pytest.mark.parametrize("model", [baselines.MostPopular(), baselines.ItemKnn(),
                                   baselines.Ease()])
def test_models_check_fit_and_item_count(model):
    with pytest.raises(RuntimeError, match="call fit first"):
        model.scores(sp.csr_matrix(TINY))
    model.fit(sp.csr_matrix(TINY))
    with pytest.raises(ValueError, match="fitted on 4"):
        model.scores(sp.csr_matrix(np.ones((1, 5))))


@pytest.fixture(scope="module")
def synthetic_split(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("baselines_data"))
    synthetic.generate_synthetic(directory, num_users=300, num_items=400,
                                 num_interactions=12000, seed=0)
    return baselines.load_split(directory, eval_fraction=0.2)


def test_load_split_puts_the_last_fifth_of_each_user_in_eval(synthetic_split):
    split = synthetic_split
    assert split.train.shape == (300, 400)   # cold items stay in the corpus
    train_per_user = np.diff(split.train.indptr)
    for num_train, relevant in zip(train_per_user, split.relevant):
        total = num_train + len(relevant)
        assert len(relevant) == math.floor(0.2 * total)
    assert split.train.nnz + sum(map(len, split.relevant)) == 12000


def test_item_knn_and_ease_beat_most_popular_on_planted_structure(synthetic_split):
    split = synthetic_split
    users = [u for u, rel in enumerate(split.relevant) if rel]
    rows = split.train[users]
    seen = [rows[i].indices for i in range(len(users))]
    relevant = [split.relevant[u] for u in users]
    recall = {}
    for model in (baselines.MostPopular(), baselines.ItemKnn(), baselines.Ease()):
        model.fit(split.train)
        result = metrics.evaluate_scores(model.scores(rows), seen, relevant, [10])
        recall[type(model).__name__] = result["recall@10"]
        # The helper gives the same numbers.
        assert baselines.evaluate(model, split, [10])["recall@10"] == result["recall@10"]
    assert recall["ItemKnn"] > recall["MostPopular"] + 0.02, recall
    assert recall["Ease"] > recall["MostPopular"] + 0.02, recall


def test_load_split_reads_through_the_pipeline_reader_and_rules(tiny_data, tmp_path):
    # The same rows as ExampleGen: exact duplicates removed and counted,
    # an interaction of an unknown item rejected, not fatal.
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    clean = baselines.load_split(tiny_data)
    with open(data / "interactions.csv") as f:
        first = f.read().splitlines()[1]
    with open(data / "interactions.csv", "a") as f:
        f.write(f"{first}\nu1,i999,4,1600000000\n")
    split = baselines.load_split(str(data))
    assert (split.train != clean.train).nnz == 0 and split.relevant == clean.relevant
    entry = split.report["tables"]["interactions"]
    assert (entry["duplicates"], entry["rejected"]) == (1, 1)
    assert entry["rows"] == entry["accepted"] + 2


def test_baselines_main_reports_a_data_problem_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        baselines.main([str(tmp_path / "nope")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("baselines: error: ")
    assert "data directory does not exist" in err[0]
