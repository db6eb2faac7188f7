"""bench/continuous.py's parts that decide the numbers: the replay's spans
and config, which items are new, and the target ratios (the pipeline runs
themselves are `make bench-continuous`)."""

import csv
import os

import pytest

from tests.conftest import bench_module
from tfx_recsys import dataset_config
from tfx_recsys.data import spans


@pytest.fixture(scope="module")
def continuous():
    return bench_module("continuous")


def test_the_replay_is_a_span_dataset_the_pipeline_reads(continuous, tiny_data, tmp_path):
    path = continuous.write_replay(tiny_data, str(tmp_path), 4, 2)
    config = dataset_config.load(path)
    assert config.window == 2 and config.name == "movielens-100k"
    selection = spans.select(config, str(tmp_path), 3)
    assert selection.spans == (2, 3)
    rows = [continuous.span_rows(str(tmp_path), k) for k in range(1, 5)]
    with open(os.path.join(tiny_data, "interactions.csv"), newline="") as f:
        assert sum(map(len, rows)) == len(list(csv.DictReader(f)))


def test_new_items_are_those_first_interacted_with_in_the_span(continuous, tmp_path):
    for span, items in ((1, "ab"), (2, "bc"), (3, "cd")):
        os.makedirs(tmp_path / "spans" / str(span))
        with open(tmp_path / "spans" / str(span) / "interactions.csv", "w") as f:
            f.write("user_id,item_id,rating,timestamp\n")
            f.writelines(f"u,{item},5,{span}\n" for item in items)
    assert continuous.new_items(str(tmp_path), 1) == {"a", "b"}
    assert continuous.new_items(str(tmp_path), 2) == {"c"}
    assert continuous.new_items(str(tmp_path), 3) == {"d"}


def test_cold_roots_are_the_cold_runs_directories_not_their_logs(continuous, tmp_path):
    for name in ("cold-3", "cold-2", "daily"):
        os.makedirs(tmp_path / name)
    (tmp_path / "cold-2-run-1796690481.log").write_text("")
    assert continuous.cold_roots(str(tmp_path)) == [str(tmp_path / "cold-2"),
                                                    str(tmp_path / "cold-3")]


def _scores(recall, new_recall, popular, trainer):
    return {"recall@100": recall, "ndcg@10": 0.1, "new_recall@100": new_recall,
            "most_popular_new_recall@100": popular, "new_item_users": 3,
            "trainer_seconds": trainer, "run_seconds": 100.0}


def test_ratios_and_the_verdict_compare_each_span_with_its_cold_run(continuous):
    rows = {"2": {"cold": _scores(0.50, 0.2, 0.1, 100), "warm": _scores(0.50, 0.3, 0.1, 40),
                  "refresh": _scores(0.45, 0.2, 0.1, 0)},
            "3": {"cold": _scores(0.40, 0.2, 0.1, 100), "warm": _scores(0.38, 0.3, 0.1, 60),
                  "refresh": _scores(0.40, 0.2, 0.1, 0)}}
    means = continuous.ratios(rows)
    assert means["warm recall@100 / cold"] == pytest.approx((1.0 + 0.95) / 2)
    assert means["warm trainer s / cold"] == pytest.approx(0.5)
    assert means["refresh recall@100 / cold"] == pytest.approx((0.9 + 1.0) / 2)
    table = continuous.markdown({"spans": rows, "window": 3})
    assert "| warm recall@100 / cold | 0.975 | >= 0.99 | NOT met |" in table
    assert "| warm trainer s / cold | 0.500 | <= 0.5 | met |" in table
    assert "| refresh recall@100 / cold | 0.950 | >= 0.95 | met |" in table
    assert "| 2 of 2 spans | every span | met |" in table


def test_fewer_epochs_to_the_same_quality_meet_the_trainer_target(continuous):
    rows = {"2": {"cold": _scores(0.50, 0.2, 0.1, 100), "warm": _scores(0.51, 0.3, 0.1, 70),
                  "refresh": _scores(0.45, 0.2, 0.1, 0)}}
    starts = {"trainers": 2, "warm": 2, "warm_epochs": [5], "cold_epochs": [10],
              "cold_lines": []}
    table = continuous.markdown({"spans": rows, "window": 3, "starts": starts})
    assert "| warm trainer s / cold | 0.700 | <= 0.5 | met by fewer epochs: 5 instead of 10" in table
    rows["2"]["warm"]["recall@100"] = 0.45  # fewer epochs, but worse
    table = continuous.markdown({"spans": rows, "window": 3, "starts": starts})
    assert "| warm trainer s / cold | 0.700 | <= 0.5 | NOT met |" in table


def test_new_items_no_list_finds_are_a_tie_not_a_win(continuous):
    rows = {"2": {k: _scores(0.5, 0.2, 0.1, 1) for k in ("cold", "warm", "refresh")},
            "3": {k: _scores(0.5, 0.0, 0.0, 1) for k in ("cold", "warm", "refresh")}}
    assert continuous.new_item_verdict(rows) == (1, ["3"], 2)
    assert "| 1 of 2 spans; no list finds a new item at span(s) 3 | every span | " \
           "met where any list finds one |" in continuous.markdown({"spans": rows})
    rows["3"]["refresh"]["new_recall@100"] = 0.1  # refresh finds one, warm and cold none
    assert continuous.new_item_verdict(rows) == (1, [], 2)
    assert "| 1 of 2 spans | every span | NOT met |" in continuous.markdown({"spans": rows})
