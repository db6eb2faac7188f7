"""The ranking Trainer's run_fn and the served two-stage recommender
(tfx_recsys/serving/two_stage.py), on the tiny hand-made data of test_models.py:
real Transform output, a real two-tower model and a real NCF ranker."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_models import EVENTS, ITEMS, _fn_args, transform_dir  # noqa: F401
from tests.test_models import two_tower_dir  # noqa: F401
from tfx_recsys import config, embedding
from tfx_recsys.components.scann_pusher import index as scann_index
from tfx_recsys.models import ncf, ranker_export
from tfx_recsys.serving import two_stage

ITEM_IDS = list(ITEMS)
TINY_RANKER = {"epochs": 2, "batch_size": 8, "factors": 4, "mlp_layers": [8, 4]}


@pytest.fixture(scope="module")
def ranker_dir(transform_dir, tmp_path_factory):  # noqa: F811
    model_dir = tmp_path_factory.mktemp("ncf")
    ncf.run_fn(_fn_args(transform_dir, model_dir, **TINY_RANKER))
    return str(model_dir)


def _users(*ids):
    return {"user_id": tf.constant(list(ids)),
            "age": tf.constant([20.0] * len(ids)),
            "gender": tf.constant(["F"] * len(ids)),
            "occupation": tf.constant(["writer"] * len(ids)),
            "zip_code": tf.constant(["10001"] * len(ids))}


def _item_embeddings(model):
    return embedding.embed_items(model, [
        {"item_id": [i], "genres": g, "title": [t], "release_year": y}
        for i, (g, t, y) in ITEMS.items()])


def _recommender(two_tower_dir, ranker_dir, rerank=config.RerankConfig(),  # noqa: F811
                 k=4, train=EVENTS):
    retrieval = embedding.load(two_tower_dir)
    ranker = two_stage.load_ranker(ranker_dir) if ranker_dir else None
    items = _item_embeddings(retrieval)
    genres = [g for g, _, _ in ITEMS.values()]
    years = np.array([y[0] if y else np.nan for _, _, y in ITEMS.values()])
    return two_stage.build(retrieval, ranker, two_stage.ExactIndex(ITEM_IDS, items, k),
                           ITEM_IDS, items, genres, years,
                           [(u, i, 4.0) for u, i, _ in train], rerank, k)


def _served(recommender, signature, **inputs):
    return {name: value.numpy()
            for name, value in recommender.signatures()[signature](**inputs).items()}


# --------------------------------------------------------------------------
# The ranker


def test_ranker_scores_raw_ids_and_knows_its_users(ranker_dir):
    ranker = two_stage.load_ranker(ranker_dir)
    out = ranker.signatures[ranker_export.SCORE_SIGNATURE](
        user_id=tf.constant(["u1", "stranger"]),
        item_id=tf.constant([["i1", "i2", "i3"], ["i4", "unseen", ""]]))
    assert out["scores"].shape == (2, 3)
    scores = out["scores"].numpy()
    assert np.all((scores > 0) & (scores < 1))
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-out["logits"].numpy())), rtol=1e-5)
    assert out["known_user"].numpy().tolist() == [True, False]


def test_ranker_run_fn_leaves_out_users_who_saw_every_item():
    users = np.array([0, 0, 1, 1, 1])
    items = np.array([0, 1, 0, 1, 2])
    warnings = []
    kept_users, kept_items = ncf._users_with_negatives(users, items, 3, warnings.append)
    assert kept_users.tolist() == [0, 0] and kept_items.tolist() == [0, 1]
    assert "1 users interacted with all 3 items" in warnings[0]


def test_ranker_scores_match_the_keras_model_pairs(ranker_dir):
    scores = two_stage.ranker_scores(two_stage.load_ranker(ranker_dir), ["u1", "u2"],
                                     ITEM_IDS, max_pairs=4)
    assert scores.shape == (2, 4)
    assert np.all(np.isfinite(scores))


# --------------------------------------------------------------------------
# What re-ranking knows


def test_excluded_items_are_seen_or_disliked():
    rows = [("u1", "a", 5.0), ("u1", "b", 1.0), ("u2", "a", None)]
    seen = two_stage.excluded_items(rows, config.RerankConfig())
    assert seen == {"u1": ["a", "b"], "u2": ["a"]}
    disliked = two_stage.excluded_items(
        rows, config.RerankConfig(exclude_seen=False, dislike_below=2.0))
    assert disliked == {"u1": ["b"]}
    assert two_stage.excluded_items(rows, config.RerankConfig(exclude_seen=False)) == {}


def test_user_state_reads_rows_once_and_genre_matrix():
    rows = ({"user_id": [u], "item_id": [i], "timestamp": [t], "rating": [r]}
            for u, i, t, r in [("u1", "a", 5, 4.0), ("u2", "a", 3, 1.0),
                               ("u1", "b", 9, 5.0)])  # a generator: one pass only
    state = two_stage.user_state(
        rows, config.RerankConfig(exclude_seen=False, dislike_below=2.0,
                                  freshness_weight=0.5))
    assert state.excluded == {"u2": ["a"]} and state.first_seen == {"a": 3, "b": 9}
    assert state.history is None
    matrix = two_stage.genre_matrix([["x", "y"], [], ["y"]])
    assert matrix.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_user_state_skips_first_seen_unless_freshness_reads_it_and_shares_ids():
    rows = [{"user_id": [u], "item_id": ["item-" + i], "timestamp": [t]}
            for u, i, t in [("u1", "a", 5), ("u2", "a", 3)]]
    state = two_stage.user_state(iter(rows), config.RerankConfig())
    assert state.first_seen == {}  # freshness off: nothing to keep per item
    # Two rows' copies of one id become one string object.
    assert state.excluded["u1"][0] is state.excluded["u2"][0]
    state = two_stage.user_state(
        iter(rows), config.RerankConfig(freshness_weight=1.0, freshness_feature="year"))
    assert state.first_seen == {}  # freshness from an item feature


def test_user_state_history_ends_with_each_users_latest_interaction():
    # Rows in any order, as the splits come (train, then eval): by time.
    rows = [{"user_id": [u], "item_id": [i], "timestamp": [t]}
            for u, i, t in [("u1", "a", 5), ("u1", "b", 9), ("ü", "é", 4),
                            ("u1", "later", 50), ("u1", "c", 7)]]
    history = two_stage.user_state(iter(rows), config.RerankConfig(), 3).history
    items, last = history(tf.constant(["u1", "ü", "nobody"]))
    assert items.numpy().tolist() == [[b"c", b"b", b"later"],
                                      ["é".encode(), b"", b""], [b"", b"", b""]]
    assert last.numpy().tolist()[:2] == [50, 4]


def test_item_facts_keep_what_reranking_reads():
    rows = [{"item_id": ["a"], "genres": ["x"], "year": [1990]},
            {"item_id": ["b"], "genres": ["y", "z"]}]
    plain = two_stage.item_facts(rows, {"a": 7}, config.RerankConfig(), "genres")
    assert plain.item_ids == ["a", "b"]
    assert plain.genre_sets is None and plain.freshness is None
    capped = two_stage.item_facts(rows, {}, config.RerankConfig(diversity="genre_cap"),
                                  "genres")
    assert capped.genre_sets == [["x"], ["y", "z"]]
    by_year = two_stage.item_facts(
        rows, {}, config.RerankConfig(freshness_weight=1.0, freshness_feature="year"))
    np.testing.assert_array_equal(by_year.freshness, [1990, np.nan])
    by_first_seen = two_stage.item_facts(rows, {"a": 7},
                                         config.RerankConfig(freshness_weight=1.0))
    np.testing.assert_array_equal(by_first_seen.freshness, [7, np.nan])
    assert two_stage.item_fact_fields(config.RerankConfig(), "genres") == ["item_id"]
    assert two_stage.item_fact_fields(
        config.RerankConfig(diversity="genre_cap", freshness_feature="year"), "genres") == \
        ["item_id", "genres", "year"]
    with pytest.raises(ValueError, match="'month' is not an item feature"):
        two_stage.item_facts(rows, {}, config.RerankConfig(freshness_feature="month"))


def test_catalog_holds_only_the_parts_reranking_reads():
    embeddings = np.ones((3, 4), np.float32)
    catalog = two_stage.ItemCatalog(["a", "b", "c"])
    assert catalog.embeddings.shape == (4, 0) and catalog.genres.shape == (4, 0)
    full = two_stage.ItemCatalog(["a", "b", "c"], embeddings, np.eye(3, dtype=np.float32),
                                 np.array([0.0, 0.5, 1.0]))
    assert full.embeddings.shape == (4, 4) and full.genres.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(full.embeddings.numpy()[:3], axis=1), 1.0)
    assert full.lookup(tf.constant([["c", "zz"]])).numpy().tolist() == [[2, 3]]


def test_retrieval_fetch_makes_room_for_exclusions():
    rerank = config.RerankConfig(candidates=20)
    assert two_stage.retrieval_fetch(1000, 10, rerank, 50) == \
        20 + 50 + two_stage.REQUEST_EXCLUSION_SLACK
    assert two_stage.retrieval_fetch(100, 10, rerank, 50) == 100
    assert two_stage.retrieval_fetch(1000, 30, rerank, 0) == \
        30 + two_stage.REQUEST_EXCLUSION_SLACK


def test_user_items_pads_and_handles_unknown_users():
    table = two_stage.UserItems({"u1": ["a", "b"], "u2": ["c"]})
    out = table(tf.constant(["u2", "nobody", "u1"])).numpy().tolist()
    assert out == [[b"c", b""], [b"", b""], [b"a", b"b"]]
    assert table.max_items == 2
    assert two_stage.UserItems({})(tf.constant(["x"])).shape == (1, 0)


# --------------------------------------------------------------------------
# The served model


def test_seen_items_never_come_back(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _recommender(two_tower_dir, ranker_dir)
    out = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("u1", "u2", "new"))
    assert out["item_ids"].shape == (3, 4)
    for row, user in zip(out["item_ids"], ["u1", "u2", "new"]):
        seen = {i for u, i, _ in EVENTS if u == user}
        returned = [i.decode() for i in row if i]
        assert not seen & set(returned)
        # Everything else comes back, once each; the rest is padding.
        assert sorted(returned) == sorted(set(ITEM_IDS) - seen)
        assert [i for i in row if not i] == [b""] * len(seen)


# The served state holds interactions the models never trained on (the eval
# period, the latest data): u1 then took i3, and "new", a user the models do
# not know, took i2.
LATER = [("u1", "i3", 200), ("new", "i2", 300)]


def _served_state_recommender(two_tower_dir, ranker_dir,  # noqa: F811
                              rerank=config.RerankConfig()):
    """Exact search: ScaNN cannot index four items (the pushed ScaNN model
    and its exact twin are checked in test_pipeline.py)."""
    retrieval = embedding.load(two_tower_dir)
    items = _item_embeddings(retrieval)
    index = two_stage.ExactIndex(ITEM_IDS, items, 4)
    state = two_stage.user_state(
        ({"user_id": [u], "item_id": [i], "timestamp": [t]} for u, i, t in EVENTS + LATER),
        rerank, history_length=3)
    return two_stage.build_with_exclusions(
        retrieval, two_stage.load_ranker(ranker_dir), index, ITEM_IDS, items, None, None,
        state.excluded, rerank, 4, state.history)


def test_items_of_the_served_state_never_come_back_by_any_signature(
        two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _served_state_recommender(two_tower_dir, ranker_dir)
    users = _users("u1", "new")
    histories = tf.constant([["i1", "i2", "i4"], ["", "", ""]])
    outputs = [
        _served(recommender, two_stage.SERVING_SIGNATURE, **users),
        _served(recommender, two_stage.SERVING_WITH_HISTORY_SIGNATURE, **users,
                history=histories),
        _served(recommender, two_stage.SERVING_WITH_EXCLUSIONS_SIGNATURE, **users,
                exclude=tf.constant([[""], [""]]))]
    for out in outputs:
        u1, new = ([i.decode() for i in row if i] for row in out["item_ids"])
        assert u1 == []  # i1, i2, i4 in training, i3 later: all seen
        assert sorted(new) == ["i1", "i3", "i4"]  # i2, taken later, never


def test_served_history_ends_with_the_latest_interaction(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _served_state_recommender(two_tower_dir, ranker_dir)
    history, last = recommender.history(tf.constant(["u1", "new"]))
    assert history.numpy().tolist() == [[b"i2", b"i4", b"i3"], [b"i2", b"", b""]]
    assert last.numpy().tolist() == [200, 300]
    # serving_default asks the retrieval model with that history: the same
    # answer as serving_with_history given it.
    looked_up = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("new"))
    given = _served(recommender, two_stage.SERVING_WITH_HISTORY_SIGNATURE,
                    **_users("new"), history=tf.constant([["i2"]]))
    assert looked_up["item_ids"].tolist() == given["item_ids"].tolist()
    np.testing.assert_allclose(looked_up["retrieval_scores"], given["retrieval_scores"],
                               rtol=1e-5)


def test_the_requests_history_never_comes_back(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _served_state_recommender(two_tower_dir, ranker_dir)
    out = _served(recommender, two_stage.SERVING_WITH_HISTORY_SIGNATURE,
                  **_users("stranger"), history=tf.constant([["i4", "i1"]]))
    assert sorted(i.decode() for i in out["item_ids"][0] if i) == ["i2", "i3"]
    # Seen items may come back only when the settings say so.
    keep_seen = _served_state_recommender(two_tower_dir, ranker_dir,
                                          config.RerankConfig(exclude_seen=False))
    out = _served(keep_seen, two_stage.SERVING_WITH_HISTORY_SIGNATURE,
                  **_users("stranger"), history=tf.constant([["i4", "i1"]]))
    assert sorted(i.decode() for i in out["item_ids"][0]) == ITEM_IDS


def test_request_exclusions_never_come_back(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _recommender(two_tower_dir, ranker_dir)
    out = _served(recommender, two_stage.SERVING_WITH_EXCLUSIONS_SIGNATURE,
                  **_users("new", "new"), exclude=tf.constant([["i2", "i4"], ["", ""]]))
    first = {i.decode() for i in out["item_ids"][0] if i}
    second = {i.decode() for i in out["item_ids"][1] if i}
    assert first == {"i1", "i3"}
    assert second == set(ITEM_IDS)


def test_ranker_weight_zero_keeps_retrieval_order(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _recommender(two_tower_dir, ranker_dir,
                               config.RerankConfig(ranker_weight=0.0, exclude_seen=False))
    out = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("u1"))
    assert np.all(np.diff(out["retrieval_scores"][0]) <= 0)
    ranked = _recommender(two_tower_dir, ranker_dir,
                          config.RerankConfig(ranker_weight=1.0, exclude_seen=False))
    out = _served(ranked, two_stage.SERVING_SIGNATURE, **_users("u1"))
    assert np.all(np.diff(out["ranker_scores"][0]) <= 1e-7)


def test_unknown_users_keep_retrieval_order(two_tower_dir, ranker_dir):  # noqa: F811
    recommender = _recommender(two_tower_dir, ranker_dir,
                               config.RerankConfig(ranker_weight=1.0))
    out = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("new"))
    assert np.all(np.isnan(out["ranker_scores"][0]))
    assert np.all(np.diff(out["retrieval_scores"][0]) <= 0)


def test_diversity_and_freshness_settings_serve(two_tower_dir, ranker_dir):  # noqa: F811
    for rerank in (config.RerankConfig(diversity="mmr", mmr_lambda=0.3),
                   config.RerankConfig(diversity="genre_cap", genre_cap=1),
                   config.RerankConfig(freshness_weight=5.0)):
        recommender = _recommender(two_tower_dir, ranker_dir, rerank)
        out = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("new"))
        assert sorted(i.decode() for i in out["item_ids"][0]) == sorted(ITEM_IDS)
    # A large freshness weight puts the newest items (i1, i2: 1995) first;
    # the oldest (i4: 1980) and the unknown year (i3) share freshness 0.
    fresh = _recommender(two_tower_dir, ranker_dir,
                         config.RerankConfig(freshness_weight=100.0))
    out = _served(fresh, two_stage.SERVING_SIGNATURE, **_users("new"))
    order = [i.decode() for i in out["item_ids"][0]]
    assert set(order[:2]) == {"i1", "i2"} and set(order[2:]) == {"i3", "i4"}


def test_without_a_ranker_the_served_model_is_retrieval_and_reranking(
        two_tower_dir):  # noqa: F811
    recommender = _recommender(two_tower_dir, None)
    out = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("u3", "new"))
    assert [i for i in out["item_ids"][0] if i] == []  # u3 has seen every item
    assert np.all(np.isnan(out["ranker_scores"]))


def test_saved_two_stage_model_reloads_with_the_same_answers(
        two_tower_dir, ranker_dir, tmp_path):  # noqa: F811
    recommender = _recommender(two_tower_dir, ranker_dir,
                               config.RerankConfig(diversity="mmr"))
    expected = _served(recommender, two_stage.SERVING_SIGNATURE, **_users("u2", "new"))
    scann_index.save(recommender, str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    assert set(served.signatures) == {two_stage.SERVING_SIGNATURE,
                                      two_stage.SERVING_WITH_HISTORY_SIGNATURE,
                                      two_stage.SERVING_WITH_EXCLUSIONS_SIGNATURE}
    out = served.signatures[two_stage.SERVING_SIGNATURE](**_users("u2", "new"))
    assert out["item_ids"].numpy().tolist() == expected["item_ids"].tolist()
    np.testing.assert_allclose(out["scores"].numpy(), expected["scores"], rtol=1e-5)
