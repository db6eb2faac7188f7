"""InteractionsExampleGen's pure rules: parsing, the temporal split, joins."""

import pytest
import tensorflow as tf

from tfx_recsys.components.interactions_example_gen import splitting
from tfx_recsys.data.native import DataError


def _interaction(item, timestamp, user="u1"):
    return {"user_id": user, "item_id": item, "rating": 4.0, "timestamp": timestamp}


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


def test_parse_errors_name_file_line_and_column():
    row = {"user_id": "u1", "item_id": "i1", "rating": "4", "timestamp": "yesterday"}
    with pytest.raises(DataError, match=r"interactions.csv, line 7, column 'timestamp'"):
        splitting.parse_interaction(row, "/data/interactions.csv", 7)
    with pytest.raises(DataError, match=r"line 3, column 'user_id' is empty"):
        splitting.parse_interaction(dict(row, user_id="", timestamp="1"), "/d/i.csv", 3)


def test_items_parse_genres_and_an_unknown_year():
    item = splitting.parse_item({"item_id": "i1", "title": "T", "release_year": "",
                                 "genres": "Drama|Comedy"}, "/d/items.csv", 2)
    assert item == {"item_id": "i1", "title": "T", "release_year": None,
                    "genres": ["Drama", "Comedy"]}


def test_join_reports_interactions_without_feature_rows():
    users = {"u1": {"user_id": "u1", "age": 30}}
    items = {"i1": {"item_id": "i1", "genres": []}}
    joined = splitting.join_features(_interaction("i1", 1), users, items, "/d/i.csv")
    assert joined["age"] == 30
    with pytest.raises(DataError, match="user_id 'u2' has no row in users.csv"):
        splitting.join_features(_interaction("i1", 1, user="u2"), users, items, "/d/i.csv")
    with pytest.raises(DataError, match="item_id 'i9' has no row in items.csv"):
        splitting.join_features(_interaction("i9", 1), users, items, "/d/i.csv")


def test_tf_example_types_and_absent_values():
    row = {"user_id": "u1", "rating": 4.5, "timestamp": 7, "release_year": None,
           "genres": ["Drama", "Comedy"], "title": "Amélie"}
    example = tf.train.Example.FromString(splitting.to_tf_example(row))
    feature = example.features.feature
    assert feature["genres"].bytes_list.value == [b"Drama", b"Comedy"]
    assert feature["timestamp"].int64_list.value == [7]
    assert feature["rating"].float_list.value == [4.5]
    assert feature["title"].bytes_list.value[0].decode() == "Amélie"
    assert "release_year" not in feature
    empty = tf.train.Example.FromString(splitting.to_tf_example({"genres": []}))
    assert "genres" not in empty.features.feature
