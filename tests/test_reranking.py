"""Re-ranking ops: exclusion, score blending, top-k / MMR / genre-cap selection."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfx_recsys.serving import reranking

SELECTORS = ("top_k", "mmr", "genre_cap")


# ---------------------------------------------------------------------------
# Random inputs and plain-Python references
# ---------------------------------------------------------------------------

def random_inputs(seed: int, batch: int = 6, n: int = 12, dims: int = 4, genres: int = 3):
    """Scores with ties, a random validity mask (some rows with few or no
    valid entries), unit embeddings and multi-hot genres (some genre-less)."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(batch, n)), 1).astype(np.float32)  # ties
    valid = rng.random((batch, n)) < rng.uniform(0.0, 1.0, size=(batch, 1))
    valid[0] = True
    embeddings = rng.normal(size=(batch, n, dims)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
    multi_hot = (rng.random((batch, n, genres)) < 0.4).astype(np.float32)
    return scores, valid, embeddings, multi_hot


def select(name: str, scores, valid, embeddings, multi_hot, k: int, **options):
    """Runs one selector eagerly; returns NumPy (indices, selected_valid)."""
    if name == "top_k":
        result = reranking.select_top_k(scores, valid, k)
    elif name == "mmr":
        result = reranking.select_mmr(scores, valid, embeddings, k,
                                      options.get("mmr_lambda", 0.5))
    else:
        result = reranking.select_genre_cap(scores, valid, multi_hot, k,
                                            options.get("cap", 1))
    return tuple(tensor.numpy() for tensor in result)


def reference_mmr(scores, valid, embeddings, k, mmr_lambda):
    """Greedy MMR over one row's valid candidates, in plain NumPy."""
    candidates = [int(i) for i in np.flatnonzero(valid)]
    low, high = scores[candidates].min(), scores[candidates].max()
    relevance = (scores - low) / (high - low)
    picked = []
    while candidates and len(picked) < k:
        def objective(i):
            similarity = max((float(embeddings[i] @ embeddings[j]) for j in picked),
                             default=0.0)
            return mmr_lambda * relevance[i] - (1 - mmr_lambda) * similarity
        best = max(candidates, key=objective)
        picked.append(best)
        candidates.remove(best)
    return picked


def reference_genre_cap(scores, valid, multi_hot, k, cap):
    """The capped greedy pass, then the fill-up, for one row."""
    by_score = sorted(np.flatnonzero(valid), key=lambda i: (-scores[i], i))
    counts = np.zeros(multi_hot.shape[1])
    picked = []
    for i in by_score:
        if len(picked) < k and np.all(counts[multi_hot[i] > 0] < cap):
            picked.append(int(i))
            counts += multi_hot[i] > 0
    fill = [int(i) for i in by_score if i not in picked]
    return (picked + fill)[:k]


def assert_valid_first(indices, selected_valid, valid, k):
    """The property every selector keeps, checked row by row."""
    for row in range(valid.shape[0]):
        expected = min(k, int(valid[row].sum()))
        assert selected_valid[row].tolist() == [True] * expected + [False] * (k - expected)
        chosen = indices[row][selected_valid[row]]
        assert valid[row][chosen].all(), f"row {row} returned an invalid candidate"
        assert len(set(chosen.tolist())) == len(chosen), f"row {row} repeats a candidate"
        assert ((indices[row] >= 0) & (indices[row] < valid.shape[1])).all()


# ---------------------------------------------------------------------------
# Exclusion and scores
# ---------------------------------------------------------------------------

def test_exclusion_mask_padding_duplicates_and_empty_candidates():
    candidates = tf.constant([["a", "b", "", "c", "b"],
                              ["a", "b", "c", "d", ""]])
    excluded = tf.constant([["b", "", "b", ""],   # duplicates and padding
                            ["", "", "", ""]])    # nothing excluded
    mask = reranking.exclusion_mask(candidates, excluded).numpy()
    assert mask.tolist() == [[False, True, True, False, True],
                             [False, False, False, False, True]]


def test_exclusion_mask_without_excluded_columns_and_against_a_reference():
    empty = reranking.exclusion_mask(tf.constant([["a", ""]]),
                                     tf.zeros([1, 0], tf.string)).numpy()
    assert empty.tolist() == [[False, True]]

    rng = np.random.default_rng(0)
    candidates = rng.integers(0, 40, size=(5, 30)).astype(str).astype(object)
    excluded = rng.integers(0, 40, size=(5, 25)).astype(str).astype(object)
    excluded[rng.random(excluded.shape) < 0.3] = ""
    mask = reranking.exclusion_mask(tf.constant(candidates), tf.constant(excluded)).numpy()
    for row in range(5):
        banned = set(excluded[row]) | {""}
        assert mask[row].tolist() == [c in banned for c in candidates[row]]


def test_zscore_ignores_invalid_entries():
    scores = np.array([[1.0, 2.0, 3.0, 1e9],
                       [np.nan, -np.inf, 4.0, 8.0],
                       [5.0, 5.0, 5.0, 5.0],
                       [1.0, 2.0, 3.0, 4.0]], np.float32)
    valid = np.array([[True, True, True, False],
                      [False, False, True, True],
                      [True, True, False, False],
                      [False] * 4])
    z = reranking.zscore(scores, valid).numpy()
    np.testing.assert_allclose(z[0], [-math.sqrt(1.5), 0.0, math.sqrt(1.5), 0.0], rtol=1e-5)
    np.testing.assert_allclose(z[1], [0.0, 0.0, -1.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(z[2], 0.0)   # constant row: std floor, no NaN
    np.testing.assert_array_equal(z[3], 0.0)   # no valid entry
    assert np.isfinite(z).all()


def test_blend_weights_and_unknown_users():
    rng = np.random.default_rng(1)
    retrieval = rng.normal(size=(4, 10)).astype(np.float32)
    ranker = rng.normal(scale=50.0, size=(4, 10)).astype(np.float32)
    valid = np.ones((4, 10), bool)
    use_ranker = np.array([True, False, True, False])

    def order(values):
        return np.argsort(-values, axis=1, kind="stable")

    retrieval_only = reranking.blend(retrieval, ranker, valid, 0.0, use_ranker).numpy()
    ranker_only = reranking.blend(retrieval, ranker, valid, 1.0, use_ranker).numpy()
    half = reranking.blend(retrieval, ranker, valid, 0.5, use_ranker).numpy()

    np.testing.assert_array_equal(order(retrieval_only), order(retrieval))
    np.testing.assert_array_equal(order(ranker_only)[use_ranker], order(ranker)[use_ranker])
    # Users the ranker does not know follow retrieval whatever the weight.
    retrieval_z = reranking.zscore(retrieval, valid).numpy()
    for blended in (ranker_only, half):
        np.testing.assert_allclose(blended[~use_ranker], retrieval_z[~use_ranker])
    np.testing.assert_allclose(
        half[use_ranker],
        0.5 * retrieval_z[use_ranker] + 0.5 * reranking.zscore(ranker, valid).numpy()[use_ranker],
        rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------

def test_select_top_k_orders_valid_first_and_flags_short_rows():
    scores = np.array([[0.1, 0.9, 0.5, 0.7],
                       [0.9, 0.8, 0.1, 0.2],
                       [1.0, 2.0, 3.0, 4.0]], np.float32)
    valid = np.array([[True, False, True, True],
                      [False, True, False, False],
                      [False] * 4])
    indices, selected_valid = (t.numpy() for t in reranking.select_top_k(scores, valid, 3))
    assert indices[0].tolist() == [3, 2, 0]
    assert indices[1][0] == 1 and selected_valid[1].tolist() == [True, False, False]
    assert selected_valid[2].tolist() == [False] * 3

    for seed in range(10):
        scores, valid, embeddings, multi_hot = random_inputs(seed)
        indices, selected_valid = select("top_k", scores, valid, embeddings, multi_hot, k=8)
        assert_valid_first(indices, selected_valid, valid, 8)
        for row in range(len(scores)):
            chosen = indices[row][selected_valid[row]]
            # Best first, and nothing better was left out.
            assert (np.diff(scores[row][chosen]) <= 0).all()
            left_out = np.setdiff1d(np.flatnonzero(valid[row]), chosen)
            if len(left_out) and len(chosen):
                assert scores[row][left_out].max() <= scores[row][chosen].min()


@pytest.mark.parametrize("name", SELECTORS)
def test_selectors_fill_k_slots_when_there_are_fewer_candidates(name):
    scores = np.array([[0.3, 0.9], [0.2, 0.1]], np.float32)
    valid = np.array([[True, True], [False, True]])
    embeddings = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2, np.float32)
    multi_hot = np.ones((2, 2, 1), np.float32)
    indices, selected_valid = select(name, scores, valid, embeddings, multi_hot, k=4)
    assert indices[0, :2].tolist() == [1, 0]
    assert indices[1, 0] == 1
    assert selected_valid.tolist() == [[True, True, False, False],
                                       [True, False, False, False]]
    assert ((indices >= 0) & (indices < 2)).all()


@pytest.mark.parametrize("name", SELECTORS)
def test_selectors_never_return_invalid_items(name):
    for seed in range(25):
        scores, valid, embeddings, multi_hot = random_inputs(seed, n=5 + seed % 11)
        for k in (1, 4, 9):
            indices, selected_valid = select(name, scores, valid, embeddings, multi_hot, k,
                                             mmr_lambda=seed / 25, cap=1 + seed % 2)
            assert_valid_first(indices, selected_valid, valid, k)


def test_mmr_with_lambda_one_is_top_k():
    for seed in range(15):
        scores, valid, embeddings, multi_hot = random_inputs(seed, n=6 + seed)
        expected = select("top_k", scores, valid, embeddings, multi_hot, k=10)
        actual = select("mmr", scores, valid, embeddings, multi_hot, k=10, mmr_lambda=1.0)
        np.testing.assert_array_equal(actual[0], expected[0])
        np.testing.assert_array_equal(actual[1], expected[1])


def test_mmr_picks_the_different_item_before_the_near_duplicate():
    scores = np.array([[1.0, 0.99, 0.5]], np.float32)
    near = np.array([1.0, 0.01, 0.0])
    embeddings = np.stack([[1.0, 0.0, 0.0], near / np.linalg.norm(near),
                           [0.0, 0.0, 1.0]])[np.newaxis].astype(np.float32)
    valid = np.ones((1, 3), bool)
    relevance_first, _ = reranking.select_mmr(scores, valid, embeddings, 3, 1.0)
    diverse, _ = reranking.select_mmr(scores, valid, embeddings, 3, 0.3)
    assert relevance_first.numpy().tolist() == [[0, 1, 2]]
    assert diverse.numpy().tolist() == [[0, 2, 1]]


def test_mmr_matches_a_plain_python_greedy():
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        scores = rng.normal(size=(3, 15)).astype(np.float32)  # no ties
        valid = rng.random((3, 15)) < 0.8
        embeddings = rng.normal(size=(3, 15, 4)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
        mmr_lambda = 0.2 + 0.1 * seed
        indices, selected_valid = (t.numpy() for t in reranking.select_mmr(
            scores, valid, embeddings, 6, mmr_lambda))
        for row in range(3):
            expected = reference_mmr(scores[row], valid[row], embeddings[row], 6, mmr_lambda)
            assert indices[row][selected_valid[row]].tolist() == expected


def test_genre_cap_respects_the_cap_then_fills_up():
    # Genres: 0 = drama, 1 = comedy; item 4 has none.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], np.float32)
    multi_hot = np.array([[[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [1, 0]]], np.float32)
    valid = np.array([[True, True, True, True, True, False]])
    indices, selected_valid = (t.numpy() for t in reranking.select_genre_cap(
        scores, valid, multi_hot, 3, 1))
    # 0 (drama) is taken; 1 and 2 would be a second drama; 3 (comedy); 4 has
    # no genre. The cap can be met, so it is.
    assert indices.tolist() == [[0, 3, 4]]
    assert selected_valid.all()

    indices, selected_valid = (t.numpy() for t in reranking.select_genre_cap(
        scores, valid, multi_hot, 5, 1))
    # The capped pass only finds 3; the best skipped valid items fill up, the
    # invalid item 5 never.
    assert indices.tolist() == [[0, 3, 4, 1, 2]]
    assert selected_valid.all()

    indices, _ = reranking.select_genre_cap(scores, valid, multi_hot, 3, 2)
    assert indices.numpy().tolist() == [[0, 1, 3]]


def test_genre_cap_matches_a_plain_python_greedy():
    for seed in range(12):
        scores, valid, embeddings, multi_hot = random_inputs(seed, n=14, genres=4)
        cap = 1 + seed % 3
        indices, selected_valid = select("genre_cap", scores, valid, embeddings, multi_hot,
                                         k=7, cap=cap)
        for row in range(len(scores)):
            expected = reference_genre_cap(scores[row], valid[row], multi_hot[row], 7, cap)
            assert indices[row][selected_valid[row]].tolist() == expected


def test_selectors_are_savedmodel_safe(tmp_path):
    """Inside signatures with a dynamic candidate count, saved and reloaded."""
    k = 5

    class Reranker(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.bool)])
        def top_k(self, scores, valid):
            return reranking.select_top_k(scores, valid, k)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.bool),
                                      tf.TensorSpec([None, None, 4], tf.float32)])
        def mmr(self, scores, valid, embeddings):
            return reranking.select_mmr(scores, valid, embeddings, k, 0.5)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.bool),
                                      tf.TensorSpec([None, None, 3], tf.float32)])
        def genre_cap(self, scores, valid, multi_hot):
            return reranking.select_genre_cap(scores, valid, multi_hot, k, 1)

    directory = str(tmp_path / "reranker")
    tf.saved_model.save(Reranker(), directory)
    loaded = tf.saved_model.load(directory)
    for n in (3, 12):  # fewer and more candidates than k, one trace
        scores, valid, embeddings, multi_hot = random_inputs(7, n=n)
        calls = {"top_k": (loaded.top_k, (scores, valid)),
                 "mmr": (loaded.mmr, (scores, valid, embeddings)),
                 "genre_cap": (loaded.genre_cap, (scores, valid, multi_hot))}
        for name, (function, arguments) in calls.items():
            indices, selected_valid = (t.numpy() for t in function(*arguments))
            expected = select(name, scores, valid, embeddings, multi_hot, k,
                              mmr_lambda=0.5, cap=1)
            np.testing.assert_array_equal(indices, expected[0], err_msg=name)
            np.testing.assert_array_equal(selected_valid, expected[1], err_msg=name)


def test_gather_rows():
    values = tf.constant([[[1, 1], [2, 2], [3, 3]], [[4, 4], [5, 5], [6, 6]]])
    gathered = reranking.gather_rows(values, tf.constant([[2, 0], [1, 1]]))
    assert gathered.numpy().tolist() == [[[3, 3], [1, 1]], [[5, 5], [5, 5]]]


# ---------------------------------------------------------------------------
# NumPy helpers
# ---------------------------------------------------------------------------

def test_freshness_percentile_ties_and_missing():
    values = np.array([1990.0, np.nan, 2000.0, 2000.0, 2010.0, 1980.0])
    fresh = reranking.freshness_percentile(values)
    assert fresh.dtype == np.float32
    # Non-missing ranks 0..4 with the tie sharing (2 + 3) / 2 = 2.5.
    np.testing.assert_allclose(fresh, [0.25, 0.0, 0.625, 0.625, 1.0, 0.0])
    np.testing.assert_allclose(reranking.freshness_percentile(np.array([3.0, 3.0, np.nan])),
                               [0.5, 0.5, 0.0])
    np.testing.assert_allclose(reranking.freshness_percentile(np.array([np.nan, 7.0])),
                               [0.0, 0.5])
    assert reranking.freshness_percentile(np.array([np.nan, np.nan])).tolist() == [0.0, 0.0]
    assert reranking.freshness_percentile(np.array([])).shape == (0,)


def test_intra_list_diversity_hand_computed():
    a, b, ab, none = frozenset("a"), frozenset("b"), frozenset("ab"), frozenset()
    # List 1: d(a, b) = 1, d(a, ab) = 1/2, d(b, ab) = 1/2 -> mean 2/3.
    # List 2: d(none, none) = 0, d(none, a) = 1 twice -> mean 2/3.
    # List 3: one item, skipped.
    lists = [[a, b, ab], [none, none, a], [a]]
    assert reranking.intra_list_diversity(lists) == pytest.approx(2 / 3)
    assert reranking.intra_list_diversity([[a, a]]) == 0.0
    assert math.isnan(reranking.intra_list_diversity([[a], []]))
