"""InteractionsExampleGen's pure rules: the splits, behaviour features, examples."""

import collections
import random

import pytest
import tensorflow as tf

from tfx_recsys import dataset_config as dc
from tfx_recsys.data import splitting


def _interaction(item, timestamp, user="u1"):
    return {"user_id": user, "item_id": item, "rating": 4.0, "timestamp": timestamp}


# --------------------------------------------------------------------------
# per_user_temporal


def test_latest_fifth_of_each_user_goes_to_eval_in_time_order():
    history = [_interaction(f"i{t}", t) for t in (50, 10, 40, 20, 30, 60, 70, 90, 80, 100)]
    splits = splitting.split_user_history(history, 0.2)
    assert [row["timestamp"] for _, row in splits] == sorted(r["timestamp"] for r in history)
    assert [s for s, _ in splits] == ["train"] * 8 + ["eval"] * 2
    assert {r["timestamp"] for s, r in splits if s == "eval"} == {90, 100}


def test_ties_on_timestamp_are_broken_by_item_id():
    history = [_interaction("b", 5), _interaction("a", 5), _interaction("c", 1),
               _interaction("d", 0), _interaction("e", 0)]
    splits = splitting.split_user_history(history, 0.2)
    assert splits[-1] == ("eval", _interaction("b", 5))


def test_users_with_fewer_than_five_interactions_stay_in_train():
    splits = splitting.split_user_history([_interaction(f"i{t}", t) for t in range(4)], 0.2)
    assert {s for s, _ in splits} == {"train"}


def test_no_eval_interaction_precedes_a_train_interaction_of_its_user():
    history = [_interaction(f"i{t}", t % 7) for t in range(23)]
    splits = splitting.split_user_history(history, 0.2)
    last_train = max(r["timestamp"] for s, r in splits if s == "train")
    assert all(r["timestamp"] >= last_train for s, r in splits if s == "eval")


# --------------------------------------------------------------------------
# leave_last_out, global_time, random


def test_leave_last_out_holds_out_the_latest_by_time_then_item():
    history = [_interaction("b", 9), _interaction("a", 9), _interaction("c", 3)]
    assert splitting.split_leave_last_out(history) == [
        ("train", _interaction("c", 3)), ("train", _interaction("a", 9)),
        ("eval", _interaction("b", 9))]


def test_leave_last_out_keeps_a_single_interaction_in_train():
    assert splitting.split_leave_last_out([_interaction("a", 1)]) == [
        ("train", _interaction("a", 1))]
    assert splitting.split_leave_last_out([]) == []


def test_global_time_cut_is_the_eval_fraction_quantile():
    assert splitting.global_time_cut(range(10), 0.2) == 8       # 8 and 9 -> eval
    assert splitting.global_time_cut([5, 1, 3, 2, 4], 0.4) == 4
    assert splitting.global_time_cut([7, 7, 7], 0.2) == 8       # floor(0.6) = 0: no eval
    with pytest.raises(ValueError):
        splitting.global_time_cut([], 0.2)


def test_global_time_puts_everything_at_or_after_the_cut_in_eval():
    history = [_interaction(f"i{t}", t) for t in (4, 1, 5, 3)]
    splits = splitting.split_at_time(history, cut=4)
    assert [(s, r["timestamp"]) for s, r in splits] == [
        ("train", 1), ("train", 3), ("eval", 4), ("eval", 5)]


def test_random_split_is_deterministic_seeded_and_near_the_fraction():
    history = [_interaction(f"i{n}", n, user=f"u{n % 17}") for n in range(4000)]
    first = splitting.split_random(history, 0.2, seed=1)
    assert first == splitting.split_random(list(reversed(history)), 0.2, seed=1)
    share = sum(s == "eval" for s, _ in first) / len(first)
    assert 0.17 < share < 0.23
    other = splitting.split_random(history, 0.2, seed=2)
    assert [s for s, _ in other] != [s for s, _ in first]
    assert splitting.in_random_eval("u1", "i1", 5, 42, 0.2) == \
        splitting.in_random_eval("u1", "i1", 5, 42, 0.2)


def test_split_user_dispatches_on_the_kind():
    history = [_interaction(f"i{t}", t) for t in range(10)]
    assert splitting.split_user(history, dc.Split("per_user_temporal", 0.3)) == \
        splitting.split_user_history(history, 0.3)
    assert splitting.split_user(history, dc.Split("leave_last_out"))[-1][0] == "eval"
    assert splitting.split_user(history, dc.Split("global_time"), cut=9)[-2][0] == "train"
    assert splitting.split_user(history, dc.Split("random", seed=3)) == \
        splitting.split_random(history, 0.2, 3)
    with pytest.raises(ValueError, match="needs the cut"):
        splitting.split_user(history, dc.Split("global_time"))


# --------------------------------------------------------------------------
# Behaviour features


def _features(pairs):
    return [(s, r["item_id"], r["history"], r["seconds_since_previous"])
            for s, r in pairs]


def test_history_holds_earlier_train_items_and_the_gap_to_the_latest():
    assigned = [("train", _interaction("a", 10)), ("eval", _interaction("e", 50)),
                ("train", _interaction("b", 20)), ("train", _interaction("c", 30))]
    assert _features(splitting.add_behaviour_features(assigned, 50)) == [
        ("train", "a", [], None),
        ("train", "b", ["a"], 10),
        ("train", "c", ["a", "b"], 10),
        ("eval", "e", ["a", "b", "c"], 20),
    ]


def test_refit_examples_are_every_interaction_with_history_up_to_the_one_before():
    """The final fit's rows: nothing held out, so the rows eval would hold
    are there too, and their histories include the earlier ones."""
    interactions = [_interaction("e", 30), _interaction("a", 0), _interaction("b", 10),
                    _interaction("c", 10), _interaction("d", 20)]
    refit = [("train", row) for row in splitting.refit_examples(interactions, 50)]
    assert _features(refit) == [
        ("train", "a", [], None),
        ("train", "b", ["a"], 10),
        ("train", "c", ["a"], 10),
        ("train", "d", ["a", "b", "c"], 10),
        ("train", "e", ["a", "b", "c", "d"], 10),
    ]
    assert [r["history"] for r in splitting.refit_examples(interactions, 2)][-1] == \
        ["c", "d"]


def test_equal_timestamps_are_not_history_of_each_other():
    assigned = [("train", _interaction("a", 5)), ("train", _interaction("b", 5)),
                ("train", _interaction("c", 7)), ("eval", _interaction("d", 7)),
                ("eval", _interaction("e", 9))]
    assert _features(splitting.add_behaviour_features(assigned, 50)) == [
        ("train", "a", [], None),
        ("train", "b", [], None),
        ("train", "c", ["a", "b"], 2),
        ("eval", "d", ["a", "b"], 2),
        ("eval", "e", ["a", "b", "c"], 2),   # never eval item d
    ]


def test_history_keeps_the_latest_history_length_items():
    assigned = [("train", _interaction(f"i{t}", t)) for t in range(6)]
    result = splitting.add_behaviour_features(assigned, 2)
    assert [r["history"] for _, r in result] == [
        [], ["i0"], ["i0", "i1"], ["i1", "i2"], ["i2", "i3"], ["i3", "i4"]]
    assert all(r["history"] == [] for _, r in
               splitting.add_behaviour_features(assigned, 0))
    assert [r["seconds_since_previous"] for _, r in
            splitting.add_behaviour_features(assigned, 0)] == [None, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("split", [
    dc.Split("per_user_temporal", 0.3), dc.Split("leave_last_out"),
    dc.Split("random", 0.3, seed=5), dc.Split("global_time", 0.3)])
def test_no_history_leaks_eval_items_or_the_future(split):
    """Property check on random histories with many ties, for every kind."""
    rng = random.Random(0)
    rows = [_interaction(f"i{n}", rng.randrange(30), user=f"u{rng.randrange(12)}")
            for n in range(600)]   # item ids unique: an item is one interaction
    cut = splitting.global_time_cut([r["timestamp"] for r in rows], 0.3)
    by_user = collections.defaultdict(list)
    for row in rows:
        by_user[row["user_id"]].append(row)
    examples = [pair for history in by_user.values()
                for pair in splitting.user_examples(history, split, 8, cut)]
    assert sorted(r["item_id"] for _, r in examples) == sorted(r["item_id"] for r in rows)
    train_time = {r["item_id"]: (r["user_id"], r["timestamp"])
                  for s, r in examples if s == "train"}
    eval_items = {r["item_id"] for s, r in examples if s == "eval"}
    assert eval_items and train_time
    for _, row in examples:
        assert len(row["history"]) <= 8
        assert not set(row["history"]) & eval_items
        for item in row["history"]:
            user, timestamp = train_time[item]
            assert user == row["user_id"] and timestamp < row["timestamp"]
        earlier = [t for i, (u, t) in train_time.items()
                   if u == row["user_id"] and t < row["timestamp"]]
        expected_gap = row["timestamp"] - max(earlier) if earlier else None
        assert row["seconds_since_previous"] == expected_gap
        assert len(row["history"]) == min(8, len(earlier))


# --------------------------------------------------------------------------
# tf.Examples


def test_tf_example_types_and_absent_values():
    columns = [dc.ExampleColumn("user_id", "bytes", True),
               dc.ExampleColumn("rating", "float", True),
               dc.ExampleColumn("timestamp", "int64", True),
               dc.ExampleColumn("release_year", "float", False),
               dc.ExampleColumn("genres", "bytes", False, None),
               dc.ExampleColumn("title", "bytes", True),
               dc.ExampleColumn("history", "bytes", False, 5)]
    row = {"user_id": "u1", "rating": 4.5, "timestamp": 7, "release_year": None,
           "genres": ["Drama", "Comedy"], "title": "Amélie", "history": [],
           "not_a_column": "x"}
    feature = tf.train.Example.FromString(
        splitting.to_tf_example(row, columns)).features.feature
    assert feature["genres"].bytes_list.value == [b"Drama", b"Comedy"]
    assert feature["timestamp"].int64_list.value == [7]
    assert feature["rating"].float_list.value == [4.5]
    assert feature["title"].bytes_list.value[0].decode() == "Amélie"
    assert set(feature) == {"user_id", "rating", "timestamp", "genres", "title"}
