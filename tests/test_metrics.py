"""Top-K metrics against hand-computed values."""

import math

import numpy as np
import pytest

from tfx_recsys import metrics


def test_top_k_items_excludes_seen_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.9, 0.5],
                       [1.0, 0.0, 0.2, 0.3]])
    ranked = metrics.top_k_items(scores, 3, exclude=[[1], []])
    np.testing.assert_array_equal(ranked, [[2, 3, 0], [0, 3, 2]])


def test_ranking_metrics_by_hand():
    # User 0: relevant {2, 5}; ranking [2, 0, 5]: hits at ranks 0 and 2.
    # User 1: relevant {1}; ranking [0, 3, 4]: no hit.
    # User 2: no relevant items: left out of the averages.
    ranked = np.array([[2, 0, 5], [0, 3, 4], [1, 2, 3]])
    result = metrics.ranking_metrics(ranked, [[2, 5], [1], []], ks=[1, 3])
    ndcg_u0_at3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert result["recall@1"] == pytest.approx((0.5 + 0) / 2)
    assert result["recall@3"] == pytest.approx((1.0 + 0) / 2)
    assert result["hit_rate@1"] == pytest.approx(0.5)
    assert result["ndcg@1"] == pytest.approx(0.5)
    assert result["ndcg@3"] == pytest.approx(ndcg_u0_at3 / 2)


def test_perfect_ranking_scores_one():
    ranked = np.array([[3, 1, 0, 2]])
    result = metrics.ranking_metrics(ranked, [[3, 1]], ks=[2, 4])
    assert result["recall@2"] == result["ndcg@2"] == result["ndcg@4"] == 1.0


def test_top_k_accuracy_counts_strictly_higher_scores_without_exclusion():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    # Item 2: one item scores higher -> inside top-2; item 3: three -> outside.
    result = metrics.top_k_accuracy(scores, [[2, 3]], ks=[1, 2, 4])
    assert result == {"top_k_accuracy@1": 0.0, "top_k_accuracy@2": 0.5,
                      "top_k_accuracy@4": 1.0}


def test_evaluate_scores_with_random_scores_matches_chance():
    rng = np.random.default_rng(0)
    users, items = 400, 50
    scores = rng.normal(size=(users, items))
    relevant = [[int(rng.integers(items))] for _ in range(users)]
    result = metrics.evaluate_scores(scores, [[] for _ in range(users)], relevant, [10])
    assert result["recall@10"] == pytest.approx(10 / items, abs=0.05)
    assert result["top_k_accuracy@10"] == pytest.approx(result["recall@10"])
