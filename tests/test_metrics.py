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


def test_top_k_items_matches_a_full_stable_sort_with_many_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(20, 50)).astype(float)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(metrics.top_k_items(scores, 7), expected)


def test_user_accuracy_by_hand():
    # Relevant {2, 5}; ranking [2, 0, 5]: hits at ranks 0 and 2.
    values = metrics.user_accuracy(np.array([2, 0, 5]), [2, 5], ks=[1, 3])
    assert values["recall@1"] == 0.5 and values["recall@3"] == 1.0
    assert values["ndcg@1"] == 1.0
    assert values["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert values["mrr@1"] == values["mrr@3"] == 1.0
    late = metrics.user_accuracy(np.array([0, 3, 4]), [4], ks=[1, 3])
    assert late["mrr@1"] == 0.0 and late["mrr@3"] == pytest.approx(1 / 3)
    assert late["hit_rate@1"] == 0.0 and late["hit_rate@3"] == 1.0


def test_top_k_accuracy_counts_strictly_higher_scores_without_exclusion():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    # Item 2: one item scores higher -> inside top-2; item 3: three -> outside.
    result = metrics.evaluate_scores(scores, [[0]], [[2, 3]], ks=[1, 2, 4])
    assert (result["top_k_accuracy@1"], result["top_k_accuracy@2"],
            result["top_k_accuracy@4"]) == (0.0, 0.5, 1.0)
    assert result["num_pairs"] == 2 and result["num_users"] == 1


def test_beyond_accuracy_novelty_diversity_and_coverage():
    counts = np.array([10, 5, 5, 0])
    np.testing.assert_array_equal(metrics.popularity_ranks(counts), [1, 2, 3, 4])
    genres = [frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"}), frozenset()]
    values = metrics.beyond_accuracy(np.array([0, 1, 2]), metrics.popularity_ranks(counts),
                                     genres, k=3)
    assert values["novelty@3"] == pytest.approx(2.0)
    # Pairs: (a, ab) 1 - 1/2; (a, c) 1; (ab, c) 1.
    assert values["diversity@3"] == pytest.approx((0.5 + 1 + 1) / 3)

    scores = np.array([[3.0, 2, 1, 0], [3.0, 2, 1, 0]])
    result = metrics.evaluate_scores(scores, [[], [0]], [[1], [2]], ks=[1, 2],
                                     train_counts=counts)
    assert result["coverage@1"] == pytest.approx(2 / 4)  # items 0 and 1
    assert result["coverage@2"] == pytest.approx(3 / 4)


def test_accumulators_merge_to_the_same_result():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 40))
    relevant = [[int(i)] for i in rng.integers(40, size=30)]
    ranked = metrics.top_k_items(scores, 10)
    whole, left, right = (metrics.MetricAccumulator([1, 10]) for _ in range(3))
    for row in range(30):
        values = metrics.user_accuracy(ranked[row], relevant[row], [1, 10])
        counts = metrics.strictly_higher_counts(scores[row], relevant[row])
        whole.add_user(values, counts, ranked[row])
        (left if row < 12 else right).add_user(values, counts, ranked[row])
    assert left.merge(right).result(40) == pytest.approx(whole.result(40))


def test_pair_recall_is_micro_averaged():
    accumulator = metrics.PairRecallAccumulator([1, 2])
    accumulator.add_pair(5, np.array([5, 1, 2]))
    accumulator.add_pair(2, np.array([5, 1, 2]))
    accumulator.add_pair(1, np.array([5, 1, 2]))
    assert accumulator.result() == {"recall@1": 1 / 3, "recall@2": 2 / 3, "num_pairs": 3}


def test_random_scores_match_chance():
    rng = np.random.default_rng(0)
    users, items = 400, 50
    scores = rng.normal(size=(users, items))
    relevant = [[int(rng.integers(items))] for _ in range(users)]
    result = metrics.evaluate_scores(scores, [[] for _ in range(users)], relevant, [10])
    assert result["recall@10"] == pytest.approx(10 / items, abs=0.05)
    assert result["top_k_accuracy@10"] == pytest.approx(result["recall@10"])
