"""RetrievalEvaluator's pure logic: eval data, baseline and the blessing gate."""

import numpy as np
import pytest

from tfx_recsys.components.retrieval_evaluator import evaluation


def _row(user, item, **extra):
    return {"user_id": [user], "item_id": [item], **extra}


def test_eval_data_groups_by_user_over_the_whole_corpus():
    items = [_row(None, f"i{i}") for i in range(4)]  # i3 never interacted with
    train = [_row("u1", "i0"), _row("u1", "i1"), _row("u2", "i0")]
    evaluation_rows = [_row("u2", "i2", age=[40]), _row("u1", "i2"), _row("u2", "i1")]
    data = evaluation.build_eval_data(items, train, evaluation_rows)
    assert [r["user_id"] for r in data.user_rows] == [["u1"], ["u2"]]
    assert data.seen == [[0, 1], [0]]
    assert data.relevant == [[2], [2, 1]]
    np.testing.assert_array_equal(data.train_counts, [2, 1, 0, 0])
    assert data.user_rows[1]["age"] == [40]


def test_most_popular_ranks_by_train_count_and_skips_seen_items():
    items = [_row(None, f"i{i}") for i in range(4)]
    train = [_row("u1", "i0"), _row("u2", "i0"), _row("u2", "i1"), _row("u3", "i3")]
    data = evaluation.build_eval_data(items, train, [_row("u1", "i1"), _row("u2", "i3")])
    result = evaluation.evaluate(evaluation.most_popular_scores(data), data, ks=[1])
    # u1 has seen i0, so its top-1 is the next most popular, i1: a hit.
    # u2 has seen i0 and i1; its top-1 is i3 (count 1 beats i2's 0): a hit.
    assert result["recall@1"] == 1.0


@pytest.mark.parametrize("model_value, blessed", [(0.30, True), (0.20, False), (0.25, False)])
def test_blessing_requires_strictly_beating_the_baseline(model_value, blessed):
    decision, reason = evaluation.decide_blessing(
        {"recall@100": model_value}, {"recall@100": 0.25}, "recall@100")
    assert decision is blessed
    assert "recall@100" in reason and "0.2500" in reason


def test_unknown_blessing_metric_names_the_choices():
    with pytest.raises(ValueError, match="recall@7.*choose one of"):
        evaluation.decide_blessing({"recall@10": 1.0}, {"recall@10": 0.0}, "recall@7")
