"""ScaNN tuning: settings, exact search, recall, and the chosen setting."""

import numpy as np
import pytest

from tfx_recsys.components.scann_pusher import index, tuning


def _clustered(rng, n, centres, dim=16):
    return (centres[rng.integers(len(centres), size=n)]
            + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    return _clustered(rng, 3000, centres), _clustered(rng, 200, centres)


def test_candidate_settings_grow_and_stay_within_the_corpus():
    settings = tuning.candidate_settings(10_000, 100)
    assert all(s.num_leaves == 100 for s in settings)
    searched = [s.num_leaves_to_search for s in settings]
    assert searched == sorted(searched) and searched[-1] == 100
    assert settings[0].num_reordering_candidates == 400
    tiny = tuning.candidate_settings(20, 100)
    assert tiny[-1].num_reordering_candidates == 20 and tiny[-1].num_leaves >= 1


def test_exact_top_k_and_recall_by_hand():
    items = np.array([[1.0, 0], [0, 1], [0.5, 0.5]])
    np.testing.assert_array_equal(tuning.exact_top_k(np.array([[1.0, 0.1]]), items, 2),
                                  [[0, 2]])
    assert tuning.recall_at_k(np.array([[0, 5], [1, 2]]), np.array([[0, 2], [2, 1]])) == 0.75


def test_tune_picks_the_fastest_setting_meeting_the_target(corpus):
    items, queries = corpus
    candidates = tuning.candidate_settings(len(items), 50)
    searcher = tuning.build_searcher(items, 50, candidates[-1])
    result = tuning.tune(searcher, items, queries, candidates, recall_k=10,
                         target_recall=0.9)
    assert result.chosen is not None and result.chosen.recall >= 0.9
    meeting = [t for t in result.trials if t.recall >= 0.9]
    assert result.chosen.latency_ms_p50 == min(t.latency_ms_p50 for t in meeting)
    assert result.trials[-1].recall >= 0.99  # every leaf searched: nearly exact

    unreachable = tuning.tune(searcher, items, queries, candidates[:1], target_recall=1.01)
    assert unreachable.chosen is None


def test_served_index_has_the_measured_recall(corpus):
    items, queries = corpus
    candidates = tuning.candidate_settings(len(items), 50)
    searcher = tuning.build_searcher(items, 50, candidates[-1])
    result = tuning.tune(searcher, items, queries, candidates, recall_k=10)
    ids = [f"i{i}" for i in range(len(items))]
    served = index.ScannIndex(searcher, ids, 50, result.chosen.settings.num_leaves_to_search)
    assert index.recall_against_exact(served, queries, items, ids, k=10) == \
        pytest.approx(result.chosen.recall)


def test_a_setting_that_cannot_return_k_items_is_never_chosen():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 16))
    items, queries = _clustered(rng, 80, centres), _clustered(rng, 40, centres)
    candidates = tuning.candidate_settings(len(items), 80)  # k = the whole corpus
    searcher = tuning.build_searcher(items, 80, candidates[-1])
    assert tuning.full_result_share(searcher, queries, 80, 1) < 1.0
    assert tuning.full_result_share(searcher, queries, 80, candidates[-1].num_leaves) == 1.0
    result = tuning.tune(searcher, items, queries, candidates, recall_k=10,
                         target_recall=0.0, serving_k=80)
    assert result.chosen.full_share == 1.0
    assert any(t.full_share < 1.0 for t in result.trials)


def test_exact_top_k_in_blocks_is_the_same_as_at_once():
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((37, 8)).astype(np.float32)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    at_once = tuning.exact_top_k(queries, items, 10, block_entries=37 * 500)
    for block_entries in (500, 5 * 500, 11 * 500 + 3):
        np.testing.assert_array_equal(
            tuning.exact_top_k(queries, items, 10, block_entries=block_entries), at_once)
    assert tuning.exact_top_k(queries[:0], items, 10).shape == (0, 10)
