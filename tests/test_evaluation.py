"""RetrievalEvaluator's pure logic: corpus, cases, slices and the blessing gate."""

import numpy as np
import pytest

from tfx_recsys import config
from tfx_recsys.components.retrieval_evaluator import evaluation


def _row(user, item, **extra):
    return {"user_id": [user], "item_id": [item], **extra}


def _corpus(counts):
    rows = [{"item_id": [f"i{i}"], "genres": ["g"]} for i in range(len(counts))]
    return evaluation.build_corpus(rows, {f"i{i}": c for i, c in enumerate(counts) if c})


def test_corpus_counts_ranks_and_buckets():
    corpus = _corpus([6, 0, 3, 1, 2])
    np.testing.assert_array_equal(corpus.train_counts, [6, 0, 3, 1, 2])
    np.testing.assert_array_equal(corpus.popularity_rank, [1, 5, 2, 4, 3])
    # 12 interactions: i0 alone holds the first third (head); i2 starts at 6 of
    # 12 (torso); i4 at 9 (>= 8: tail), and so is i3; never-seen i1 is tail.
    assert corpus.popularity_bucket == ["head", "tail", "torso", "tail", "tail"]


def test_corpus_refuses_train_items_outside_it():
    with pytest.raises(ValueError, match="not in the item corpus"):
        evaluation.build_corpus([{"item_id": ["i0"]}], {"i9": 1})


def test_user_cases_and_slices():
    corpus = _corpus([1, 1, 1, 1])
    case = evaluation.make_user_case(["i0", "i1"], [_row("u1", "i2", age=[30])], corpus)
    assert (case.seen, case.relevant, case.user_row["age"]) == ([0, 1], [2], [30])
    assert evaluation.user_slices(case) == ["overall", "user_activity:1-4", "user:warm"]
    cold = evaluation.make_user_case([], [_row("u2", "i3")], corpus)
    assert evaluation.user_slices(cold)[1:] == ["user_activity:0", "user:cold"]
    assert evaluation.make_user_case(["i0"], [], corpus) is None
    assert [evaluation.activity_bucket(n) for n in (0, 1, 4, 5, 99, 100)] == \
        ["0", "1-4", "1-4", "5-19", "20-99", "100+"]


def test_accumulate_slices_users_and_item_pairs():
    corpus = _corpus([5, 3, 1, 0])
    cases = [evaluation.make_user_case(["i0"], [_row("u1", "i1"), _row("u1", "i3")], corpus),
             evaluation.make_user_case([], [_row("u2", "i0")], corpus)]
    scores = np.tile(corpus.train_counts.astype(np.float32), (2, 1))  # most popular
    result = evaluation.accumulate(cases, scores, corpus, ks=[1, 2])
    overall = result["overall"].result(len(corpus))
    # u1 (i0 excluded) gets [i1, i2]: i1 hit at rank 0 -> recall@1 1/2;
    # u2 gets [i0, i1]: hit at rank 0 -> recall@1 1.
    assert overall["recall@1"] == pytest.approx((0.5 + 1) / 2)
    assert overall["num_users"] == 2
    assert result["user:cold"].result(4)["num_users"] == 1
    assert result["item_popularity:tail"].result()["recall@2"] == 0.0  # i3
    assert result["item_popularity:head"].result()["recall@1"] == 1.0  # i0 for u2


GATE = config.BlessingConfig(metric="recall@10", min_value=0.1,
                             beat_baselines=("most_popular",), max_regression=0.01)


@pytest.mark.parametrize("value, last, blessed, failing", [
    (0.30, None, True, []),
    (0.30, 0.305, True, []),                 # within the allowed regression
    (0.30, 0.32, False, ["last blessed"]),   # regressed
    (0.20, None, False, ["most_popular"]),   # does not beat the baseline
    (0.05, None, False, ["threshold", "most_popular"]),
])
def test_blessing_gate(value, last, blessed, failing):
    decision, checks = evaluation.decide_blessing(
        {"recall@10": value}, {"most_popular": {"recall@10": 0.25}},
        {"recall@10": last} if last is not None else None, GATE)
    assert decision is blessed
    failed = [c for c in checks if c.startswith("FAILED")]
    assert len(failed) == len(failing)
    for check, word in zip(failed, failing):
        assert word in check


def test_unknown_blessing_metric_names_the_choices():
    with pytest.raises(ValueError, match="recall@7.*choose one of"):
        evaluation.decide_blessing({"recall@10": 1.0}, {}, None,
                                   config.BlessingConfig(metric="recall@7"))


def test_scoring_batches_fit_the_memory_budget():
    assert evaluation.batch_size_for(1_000_000, budget_bytes=1 << 27) == 33
    assert evaluation.batch_size_for(100) == 512


def test_baselines_are_fitted_on_train_pairs_and_score_users_by_their_history():
    corpus = _corpus([0, 0, 0, 0])
    pairs = [("u1", "i0"), ("u1", "i1"), ("u2", "i0"), ("u2", "i1"), ("u3", "i2"),
             ("u3", "i0")]
    fitted = evaluation.fit_baselines(pairs, corpus)
    assert set(fitted) == {"most_popular", "item_knn", "ease"}
    case = evaluation.make_user_case(["i1"], [_row("u9", "i0")], corpus)
    knn = evaluation.baseline_scores(fitted["item_knn"], [case], len(corpus))
    # i1 co-occurs with i0 (twice), never with i2 or i3.
    assert knn.shape == (1, 4) and knn[0, 0] > 0 and knn[0, 2] == knn[0, 3] == 0
    popular = evaluation.baseline_scores(fitted["most_popular"], [case], len(corpus))
    np.testing.assert_array_equal(popular[0], [3, 2, 1, 0])
    assert evaluation.skipped_baselines(4) == {}
    assert "ease" in evaluation.skipped_baselines(10**6)


def test_a_baseline_that_was_not_computed_fails_its_check():
    gate = config.BlessingConfig(metric="recall@10", beat_baselines=("ease",))
    blessed, checks = evaluation.decide_blessing({"recall@10": 0.5}, {}, None, gate)
    assert not blessed and any("ease was not computed" in c for c in checks)


def test_the_component_refuses_unknown_baselines():
    from tfx import v1 as tfx

    from tfx_recsys.components.retrieval_evaluator.component import RetrievalEvaluator

    channel = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples)
    model = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
    with pytest.raises(ValueError, match="unknown baselines.*popular"):
        RetrievalEvaluator(model=model, examples=channel, items=channel,
                           blessing=config.BlessingConfig(beat_baselines=("popular",)))
