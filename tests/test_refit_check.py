"""The refit's sanity check (components/scann_pusher/refit_check.py), on
hand-computed scores."""

import numpy as np

from tfx_recsys.components.scann_pusher import refit_check

# Three items on a line; a query's score of item i is query * position[i].
ITEMS = np.array([[1.0], [2.0], [3.0]], np.float32)


def test_eval_recall_excludes_seen_items_and_skips_users_without_eval_items():
    queries = np.array([[1.0], [-1.0], [1.0]], np.float32)  # likes high, low, high
    seen = [{2}, set(), set()]
    relevant = [{1}, {2}, set()]
    # User 0: item 2 seen, so top-1 is item 1: a hit. User 1: top-1 is item 0,
    # its eval item 2 is last: a miss. User 2 has no eval item: skipped.
    assert refit_check.eval_recall(queries, ITEMS, seen, relevant, 1) == 0.5
    assert refit_check.eval_recall(queries, ITEMS, seen, relevant, 2) == 0.5
    assert refit_check.eval_recall(queries, ITEMS, [set()] * 3, [set()] * 3, 1) == 0.0


def test_eval_recall_in_blocks_equals_all_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(50, 4)).astype(np.float32)
    items = rng.normal(size=(30, 4)).astype(np.float32)
    seen = [set(rng.choice(30, 3, replace=False)) for _ in range(50)]
    relevant = [set(rng.choice(30, 4, replace=False)) - s for s in seen]
    whole = refit_check.eval_recall(queries, items, seen, relevant, 5)
    monkeypatch.setattr(refit_check, "_BLOCK_SCORES", 70)  # two users a block
    assert refit_check.eval_recall(queries, items, seen, relevant, 5) == whole


def test_the_check_fails_a_refit_that_ranks_the_eval_split_worse():
    seen, relevant = [set()], [{2}]
    good, bad = np.array([[1.0]], np.float32), np.array([[-1.0]], np.float32)
    passed = refit_check.check(bad, ITEMS, good, ITEMS, seen, relevant, k=1)
    assert passed.passed and (passed.evaluated_recall, passed.refit_recall) == (0.0, 1.0)
    failed = refit_check.check(good, ITEMS, bad, ITEMS, seen, relevant, k=1)
    assert not failed.passed
    assert "refit model's recall@1" in failed.reason() and "0.0000" in failed.reason()
    # k is at most a tenth of the corpus (at least 1): a list of the whole
    # corpus finds every item, whatever the model.
    assert refit_check.check(good, ITEMS, good, ITEMS, seen, relevant, k=100).k == 1
    many = np.arange(40, dtype=np.float32)[:, None]
    assert refit_check.check(good, many, good, many, seen, relevant, k=100).k == 4


def test_item_sets_map_pairs_of_the_chosen_users_to_corpus_rows():
    index = {"a": 0, "b": 1}
    pairs = [("u1", "a"), ("u2", "b"), ("u1", "b"), ("u3", "a"), ("u1", "gone")]
    assert refit_check.item_sets(["u1", "u2"], pairs, index) == [{0, 1}, {1}]
