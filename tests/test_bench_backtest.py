"""bench/backtest.py's parts that decide the numbers: the two cuts, the
scoring of served lists, and which pushed version counts as served (the
pipeline runs themselves are `make bench-backtest`)."""


import pytest

from tests.conftest import bench_module


@pytest.fixture(scope="module")
def backtest():
    return bench_module("backtest")


def _row(user, item, timestamp):
    return {"user_id": user, "item_id": item, "rating": "4", "timestamp": str(timestamp)}


# User a: 10 interactions (2 future), one timestamp tie broken by item_id;
# user b: 5 (1 future); user c: 4 (fewer than 5: none future).
ROWS = ([_row("a", f"i{t}", 100 + t) for t in range(8)]
        + [_row("a", "z", 200), _row("a", "y", 200)]
        + [_row("b", f"j{t}", 10 * t) for t in range(5)]
        + [_row("c", f"k{t}", 300 + t) for t in range(4)])


def _keys(rows):
    return [(r["user_id"], r["item_id"]) for r in rows]


def test_per_user_temporal_holds_out_each_users_latest_fifth(backtest):
    past, future = backtest.cut_interactions(ROWS, "per_user_temporal")
    # a: floor(0.2 * 10) = 2 latest, the tie at 200 ordered y < z;
    # b: floor(0.2 * 5) = 1; c: floor(0.2 * 4) = 0.
    assert _keys(future) == [("a", "z"), ("a", "y"), ("b", "j4")]
    assert sorted(_keys(past) + _keys(future)) == sorted(_keys(ROWS))
    assert len(past) + len(future) == len(ROWS)
    assert past == [r for r in ROWS if r not in future]   # file order, rows as read


def test_per_user_temporal_tie_at_the_boundary_goes_by_item_id(backtest):
    rows = [_row("u", item, 5) for item in ("e", "d", "c", "b", "a")]
    past, future = backtest.cut_interactions(rows, "per_user_temporal")
    assert _keys(future) == [("u", "e")]


def test_global_time_cuts_at_the_fifth_latest_timestamp(backtest):
    # 20 rows: floor(0.2 * 20) = 4 -> the cut is the 4th latest timestamp,
    # 301, and every row at or after it is future (the tie at 302 included).
    rows = ROWS + [_row("b", "late", 302)]
    past, future = backtest.cut_interactions(rows, "global_time")
    assert _keys(future) == [("c", "k1"), ("c", "k2"), ("c", "k3"), ("b", "late")]
    assert len(past) + len(future) == len(rows)
    assert all(int(r["timestamp"]) < 301 for r in past)


def test_unknown_cut_is_refused(backtest):
    with pytest.raises(ValueError, match="unknown cut"):
        backtest.cut_interactions(ROWS, "random")


def test_write_past_keeps_the_header_and_copies_the_tables(backtest, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "users.csv").write_text("user_id,age\na,30\n")
    (source / "items.csv").write_text("item_id,title\ni0,X\n")
    header = ["user_id", "item_id", "rating", "timestamp"]
    backtest.write_past(str(source), str(tmp_path / "data"), header, ROWS[:2])
    assert (tmp_path / "data" / "interactions.csv").read_text() == (
        "user_id,item_id,rating,timestamp\na,i0,4,100\na,i1,4,101\n")
    assert (tmp_path / "data" / "users.csv").read_text() == "user_id,age\na,30\n"
    assert (tmp_path / "data" / "items.csv").read_text() == "item_id,title\ni0,X\n"


def test_scores_by_hand(backtest):
    # u: future {x, y}; top-10 holds x at rank 1 (0-based) and two past items.
    # v: future {w}, not in its list; no past. w (user without a list) counts.
    lists = {"u": ["p1", "x", "p2"] + [f"n{i}" for i in range(7)] + ["y"],
             "v": ["a", "b"]}
    future = {"u": {"x", "y"}, "v": {"w"}}
    past = {"u": {"p1", "p2", "old"}}
    scores = backtest.score_lists(lists, future, past)
    discount = 1 / 1.584962500721156            # 1 / log2(1 + 2)
    ideal = 1 + discount                        # two relevant items
    assert scores["users"] == 2
    assert scores["recall@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert scores["recall@100"] == pytest.approx((2 / 2 + 0) / 2)
    assert scores["ndcg@10"] == pytest.approx((discount / ideal + 0) / 2)
    assert scores["hit_rate@10"] == pytest.approx((1 + 0) / 2)
    assert scores["seen@10"] == pytest.approx((2 + 0) / 2)


def test_a_user_without_a_list_scores_zero(backtest):
    scores = backtest.score_lists({}, {"u": {"x"}}, {})
    assert scores["recall@100"] == 0 and scores["seen@10"] == 0


def test_baselines_exclude_past_items_and_rank_the_whole_catalogue(backtest):
    past = {"a": {"i0", "i1"}, "b": {"i0"}, "c": {"i1", "i2"}}
    lists = backtest.baseline_lists(past, ["a", "b", "new"], ["i0", "i1", "i2", "i3"])
    assert set(lists) == {"ease", "item_knn", "most_popular"}
    for ranked in lists.values():
        assert "i0" not in ranked["a"] and "i1" not in ranked["a"]
        assert sorted(ranked["new"]) == ["i0", "i1", "i2", "i3"]   # cold: all items
    # most popular: i0 and i1 twice, i2 once, i3 never; ties by item order.
    assert lists["most_popular"]["b"] == ["i1", "i2", "i3"]


def test_served_model_is_the_newest_complete_version(backtest, tmp_path):
    models = tmp_path / "serving" / "retrieval"
    assert backtest.served_model_dir(str(tmp_path)) is None
    for name, complete in (("9", True), ("10", True), ("11", False),
                           (".staging-12", True), ("latest", True)):
        (models / name).mkdir(parents=True)
        if complete:
            (models / name / "saved_model.pb").write_bytes(b"")
    # 10 > 9 as numbers; 11 has no saved_model.pb; the others are not versions.
    assert backtest.served_model_dir(str(tmp_path)) == str(models / "10")
