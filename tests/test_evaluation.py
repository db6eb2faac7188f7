"""RetrievalEvaluator's pure logic: corpus, cases, slices and the blessing gate."""

import dataclasses
import json

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
    corpus = _corpus([3, 2, 1, 0])  # the train counts of `pairs`
    pairs = [("u1", "i0"), ("u1", "i1"), ("u2", "i0"), ("u2", "i1"), ("u3", "i2"),
             ("u3", "i0")]
    fitted = evaluation.fit_baselines(pairs, corpus)
    assert set(fitted) == {"most_popular", "item_knn", "ease"}
    case = evaluation.make_user_case(["i1"], [_row("u9", "i0")], corpus)
    knn = evaluation.baseline_scores(fitted["item_knn"], [case], corpus)
    # i1 co-occurs with i0 (twice), never with i2 or i3: those two tie, and
    # the tie goes to the more popular i2 (a tiny popularity term).
    assert knn.shape == (1, 4) and knn[0, 0] > 0.1
    assert evaluation.TIE_BREAK > knn[0, 2] > knn[0, 3] >= 0
    popular = evaluation.baseline_scores(fitted["most_popular"], [case], corpus)
    np.testing.assert_array_equal(np.round(popular[0]), [3, 2, 1, 0])
    # A user with no train items: item-kNN and EASE fall back to popularity.
    cold = evaluation.make_user_case([], [_row("u8", "i3")], corpus)
    for name in ("item_knn", "ease"):
        ranked = np.argsort(-evaluation.baseline_scores(fitted[name], [cold], corpus)[0])
        assert list(ranked[:3]) == [0, 1, 2], name
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


def test_gate_from_json_takes_fields_given_as_properties_of_their_own():
    text = json.dumps({"beat_baselines": ["most_popular"]})
    properties = {"blessing_metric": "recall@10", "blessing_min_value": 0.1,
                  "max_regression": 0.01, "top_ks": "[10]"}
    assert evaluation.gate_from_json(text, properties, top_ks=[10]) == GATE
    # Without properties (a local pipeline): the whole gate from the JSON.
    whole = json.dumps(dataclasses.asdict(GATE))
    assert evaluation.gate_from_json(whole) == GATE
    assert evaluation.gate_from_json(whole, {"blessing_min_value": None}) == GATE
    # A property wins over the JSON (the component never sends both).
    assert evaluation.gate_from_json(whole, {"blessing_min_value": 0.5}).min_value == 0.5


@pytest.mark.parametrize("properties, words", [
    ({"blessing_metric": "recall@7"}, "blessing gate: unknown metric 'recall@7'.*K in 10"),
    ({"blessing_metric": "auc"}, "blessing gate: unknown metric 'auc'"),
    ({"blessing_min_value": "0.3"}, "blessing gate: min_value must be a number, got '0.3'"),
    ({"max_regression": True}, "blessing gate: max_regression must be a number"),
])
def test_gate_from_json_checks_at_run_time_what_the_build_could_not(properties, words):
    fixed = json.dumps({"beat_baselines": []})
    properties = {"blessing_metric": "recall@10", "blessing_min_value": 0.0,
                  "max_regression": 0.0, **properties}
    with pytest.raises(ValueError, match=words):
        evaluation.gate_from_json(fixed, properties, top_ks=[10])
    with pytest.raises(ValueError, match="blessing gate: no metric, max_regression"):
        evaluation.gate_from_json(json.dumps({"min_value": 0.0}))


def _evaluator(blessing):
    from tfx import v1 as tfx

    from tfx_recsys.components.retrieval_evaluator.component import RetrievalEvaluator

    channel = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples)
    model = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
    return RetrievalEvaluator(model=model, examples=channel, items=channel,
                              blessing=blessing)


def test_the_component_keeps_a_fixed_gate_in_one_json_property():
    properties = _evaluator(GATE).exec_properties
    # The gate is one JSON property (no per-field properties locally).
    assert set(properties) == {"top_ks", "blessing_config", "diversity_feature", "rerank",
                               "code_fingerprint", "max_eval_users", "serving_dir"}
    assert properties["blessing_config"] == json.dumps(dataclasses.asdict(GATE))
    with pytest.raises(ValueError, match="unknown metric 'recall@7'"):
        _evaluator(config.BlessingConfig(metric="recall@7"))


def test_runtime_parameters_of_the_gate_become_properties_of_their_own():
    from tfx.orchestration import data_types

    metric = data_types.RuntimeParameter(name="blessing_metric", ptype=str,
                                         default="recall@100")
    min_value = data_types.RuntimeParameter(name="blessing_min_value", ptype=float,
                                            default=0.2)
    max_regression = data_types.RuntimeParameter(name="max_regression", ptype=float,
                                                 default=0.0)
    properties = _evaluator(dataclasses.replace(
        GATE, metric=metric, min_value=min_value, max_regression=max_regression)
    ).exec_properties
    assert json.loads(properties["blessing_config"]) == {"beat_baselines": ["most_popular"]}
    assert properties["blessing_metric"] is metric
    assert properties["blessing_min_value"] is min_value
    assert properties["max_regression"] is max_regression

    # One field alone: the others stay in the JSON, checked as before.
    properties = _evaluator(dataclasses.replace(GATE, min_value=min_value)).exec_properties
    assert json.loads(properties["blessing_config"]) == {
        "metric": "recall@10", "beat_baselines": ["most_popular"], "max_regression": 0.01}
    assert "blessing_metric" not in properties
    with pytest.raises(ValueError, match="unknown baselines"):
        _evaluator(dataclasses.replace(GATE, metric=metric, beat_baselines=("popular",)))
    # Only those three fields, each of its own type.
    baselines = data_types.RuntimeParameter(name="b", ptype=str, default="ease")
    with pytest.raises(ValueError, match="not for beat_baselines"):
        _evaluator(dataclasses.replace(GATE, beat_baselines=baselines))
    wrong = data_types.RuntimeParameter(name="blessing_min_value", ptype=str, default="0.2")
    with pytest.raises(TypeError, match="blessing_min_value"):
        _evaluator(dataclasses.replace(GATE, min_value=wrong))


# --------------------------------------------------------------------------
# The NCF paper protocol and served lists


def test_sampled_candidates_are_the_held_out_item_then_unseen_trained_items():
    corpus = _corpus([1] * 150 + [0] * 50)  # items 150.. never trained
    interacted = {0, 1, 2, 3}
    sampled = evaluation.sampled_candidates("u1", 3, interacted, corpus)
    assert sampled[0] == 3 and len(sampled) == 1 + evaluation.SAMPLED_NEGATIVES
    negatives = set(sampled[1:].tolist())
    assert len(negatives) == evaluation.SAMPLED_NEGATIVES  # distinct
    assert not negatives & interacted and max(negatives) < 150
    # The same for every model (seeded by the user), different across users.
    np.testing.assert_array_equal(
        sampled, evaluation.sampled_candidates("u1", 3, interacted, corpus))
    assert set(evaluation.sampled_candidates("u2", 3, interacted, corpus)[1:]) != negatives
    # Too few unseen trained items: no sampled case.
    assert evaluation.sampled_candidates("u1", 3, interacted, _corpus([1] * 90)) is None


def test_sampled_metrics_count_ties_against_the_held_out_item():
    scores = np.arange(200, dtype=np.float32)
    sampled = np.array([150] + list(range(99)))  # held-out beats all
    assert evaluation.sampled_metrics(scores, sampled) == {
        "sampled_hit_rate@10": 1.0, "sampled_ndcg@10": 1.0}
    worse = np.array([5] + list(range(100, 199)))  # 99 higher: rank 99
    assert evaluation.sampled_metrics(scores, worse)["sampled_hit_rate@10"] == 0.0
    tied = np.zeros(200, np.float32)
    result = evaluation.sampled_metrics(tied, sampled)
    assert result["sampled_hit_rate@10"] == 0.0  # 99 ties: rank 99


def test_list_scores_rank_a_served_list_first():
    corpus = _corpus([1, 1, 1, 1])
    scores = evaluation.list_scores([["i2", "i0", ""], []], corpus)
    assert scores[0].tolist() == [1.0, -1.0, 2.0, -1.0]
    assert scores[1].tolist() == [-1.0] * 4
    case = evaluation.make_user_case(["i1"], [_row("u1", "i0")], corpus)
    result = evaluation.accumulate([case], scores[:1], corpus, ks=[1, 2], sampled=False)
    overall = result["overall"].result(4)
    assert overall["recall@1"] == 0.0 and overall["recall@2"] == 1.0
    assert "sampled_hit_rate@10" not in overall
