"""NCF on integer ids: negative sampling, the sampled ranking metrics, the four
model variants, pretraining and training (tfx_recsys/models/negatives.py and
tfx_recsys/models/ncf.py), on small hand-made or seeded random data."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfx_recsys.config import NCF_VARIANTS, NcfConfig
from tfx_recsys.models import ncf, negatives


def _random_pairs(seed: int, num_users: int = 50, num_items: int = 40, n: int = 600):
    """Random (users, items) int64 [n] with duplicates, items skewed to low ids."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, num_users, n)
    items = np.minimum(rng.geometric(0.08, n) - 1, num_items - 1)
    return users, items


def _pair_set(users, items):
    return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))


# --------------------------------------------------------------------------
# Negative sampling


def test_observed_keys_are_sorted_unique_pair_keys():
    keys = negatives.observed_keys(np.array([2, 0, 2, 1]), np.array([1, 3, 1, 0]), 5)
    assert keys.dtype == np.int64
    np.testing.assert_array_equal(keys, [0 * 5 + 3, 1 * 5 + 0, 2 * 5 + 1])
    with pytest.raises(ValueError, match="item ids"):
        negatives.observed_keys(np.array([0]), np.array([5]), 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negatives_are_never_observed_and_counted_exactly(seed):
    users, items = _random_pairs(seed)
    observed = negatives.observed_keys(users, items, 40)
    neg_users, neg_items = negatives.sample_negatives(
        users, observed, 40, per_positive=4, seed=seed, epoch=0)
    assert neg_users.shape == neg_items.shape == (4 * users.size,)
    # Positive j's negatives are at 4j .. 4j+3, for the same user.
    np.testing.assert_array_equal(neg_users, np.repeat(users, 4))
    assert not _pair_set(neg_users, neg_items) & _pair_set(users, items)
    assert neg_items.min() >= 0 and neg_items.max() < 40


def test_negatives_are_deterministic_per_seed_and_epoch():
    users, items = _random_pairs(3)
    observed = negatives.observed_keys(users, items, 40)

    def draw(seed, epoch):
        return negatives.sample_negatives(users, observed, 40, 4, seed, epoch)[1]

    np.testing.assert_array_equal(draw(7, 0), draw(7, 0))
    assert not np.array_equal(draw(7, 0), draw(7, 1))
    assert not np.array_equal(draw(7, 0), draw(8, 0))


def test_negatives_are_uniform_over_the_unobserved_items():
    # One user who saw items 0, 1, 2 of 10: each other item ~ 1/7 of draws.
    observed = negatives.observed_keys(np.zeros(3), np.arange(3), 10)
    _, neg_items = negatives.sample_negatives(np.zeros(10_000), observed, 10, 7,
                                              seed=0, epoch=0)
    counts = np.bincount(neg_items, minlength=10)
    assert counts[:3].sum() == 0
    np.testing.assert_allclose(counts[3:] / neg_items.size, 1 / 7, atol=0.01)


def test_negatives_come_from_candidate_items_only():
    users, items = _random_pairs(4)
    observed = negatives.observed_keys(users, items, 40)
    candidates = np.arange(1, 40, 3)  # e.g. row 0 being an OOV row
    neg_users, neg_items = negatives.sample_negatives(
        users, observed, 40, 3, seed=0, epoch=0, candidate_items=candidates)
    assert set(neg_items.tolist()) <= set(candidates.tolist())
    assert not _pair_set(neg_users, neg_items) & _pair_set(users, items)


def test_a_user_with_a_single_unobserved_item_always_gets_it():
    # User 1 saw every item of 500 but 4: rejection sampling nearly always
    # gives up on them (the exact fallback draws it); user 0 saw item 0 only.
    seen = np.delete(np.arange(500), 4)
    users = np.r_[np.ones(seen.size, np.int64), 0]
    items = np.r_[seen, 0]
    observed = negatives.observed_keys(users, items, 500)
    neg_users, neg_items = negatives.sample_negatives(users, observed, 500, 2, 0, 0)
    assert set(neg_items[neg_users == 1].tolist()) == {4}
    assert 0 not in set(neg_items[neg_users == 0].tolist())


def test_a_user_who_saw_every_item_is_an_error():
    users = np.array([0, 3, 3, 3])
    items = np.array([1, 0, 1, 2])
    observed = negatives.observed_keys(users, items, 3)
    with pytest.raises(ValueError, match="user 3"):
        negatives.sample_negatives(users, observed, 3, 1, seed=0, epoch=0)
    # Every candidate seen (though not every id): an error too.
    users, items = np.array([5, 5]), np.array([1, 2])
    observed = negatives.observed_keys(users, items, 4)
    with pytest.raises(ValueError, match="user 5"):
        negatives.training_examples(users, items, observed, 4, 1, 0, 0,
                                    candidate_items=np.array([1, 2]))


def test_training_examples_are_the_positives_and_that_epochs_negatives_shuffled():
    users, items = _random_pairs(5)
    observed = negatives.observed_keys(users, items, 40)
    user_ids, item_ids, labels = negatives.training_examples(
        users, items, observed, 40, per_positive=2, seed=9, epoch=3)
    assert user_ids.shape == item_ids.shape == labels.shape == (3 * users.size,)
    assert labels.dtype == np.float32 and set(np.unique(labels)) == {0.0, 1.0}
    positive = labels == 1
    key = lambda u, i: sorted(zip(u.tolist(), i.tolist()))  # noqa: E731
    assert key(user_ids[positive], item_ids[positive]) == key(users, items)
    neg_users, neg_items = negatives.sample_negatives(users, observed, 40, 2, 9, 3)
    assert key(user_ids[~positive], item_ids[~positive]) == key(neg_users, neg_items)
    assert not positive[: users.size].all()  # shuffled, not positives first
    again = negatives.training_examples(users, items, observed, 40, 2, 9, 3)
    for a, b in zip((user_ids, item_ids, labels), again):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Sampled ranking evaluation


def test_sampled_ranking_cases_put_the_held_out_item_among_unobserved_ones():
    users, items = _random_pairs(6, num_users=30, num_items=60, n=300)
    eval_users = np.arange(30)
    eval_items = np.random.default_rng(0).integers(0, 60, 30)
    observed = negatives.observed_keys(np.r_[users, eval_users], np.r_[items, eval_items], 60)
    cases = negatives.sampled_ranking_cases(eval_users, eval_items, observed, 60,
                                            num_negatives=20, seed=1)
    assert cases.shape == (30, 21)
    np.testing.assert_array_equal(cases[:, 0], eval_items)
    seen = _pair_set(np.r_[users, eval_users], np.r_[items, eval_items])
    for user, row in zip(eval_users, cases):
        assert len(set(row[1:].tolist())) == 20  # distinct
        assert not {(user, item) for item in row[1:].tolist()} & seen
    np.testing.assert_array_equal(
        cases, negatives.sampled_ranking_cases(eval_users, eval_items, observed, 60,
                                               num_negatives=20, seed=1))


def test_sampled_ranking_cases_with_exactly_enough_unobserved_items():
    # User 0 saw items 0..995 of 1000 and holds out 996: the negatives are
    # 997, 998, 999 (found by the exact fallback, rejection rarely does).
    observed = negatives.observed_keys(np.zeros(997), np.arange(997), 1000)
    cases = negatives.sampled_ranking_cases([0], [996], observed, 1000, num_negatives=3)
    assert cases[0, 0] == 996 and sorted(cases[0, 1:].tolist()) == [997, 998, 999]
    with pytest.raises(ValueError, match="user 0"):
        negatives.sampled_ranking_cases([0], [996], observed, 1000, num_negatives=4)
    # Candidates restrict the choice as well.
    cases = negatives.sampled_ranking_cases([0], [996], observed, 1000, num_negatives=2,
                                            candidate_items=np.array([0, 997, 999]))
    assert sorted(cases[0, 1:].tolist()) == [997, 999]


def test_hit_rate_and_ndcg_by_hand():
    scores = np.array([[0.9, 0.1, 0.2],    # rank 0
                       [0.3, 0.5, 0.4],    # rank 2
                       [0.5, 0.5, 0.1]])   # a tie counts against it: rank 1
    hr, ndcg = negatives.hit_rate_and_ndcg(scores, k=2)
    assert hr == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1.0 + 0.0 + 1 / np.log2(3)) / 3)
    assert negatives.hit_rate_and_ndcg(scores, k=1) == pytest.approx((1 / 3, 1 / 3))
    assert negatives.hit_rate_and_ndcg(scores, k=3) == pytest.approx(
        (1.0, (1.0 + 0.5 + 1 / np.log2(3)) / 3))
    # A constant scorer never hits below k = the list length.
    assert negatives.hit_rate_and_ndcg(np.ones((4, 10)), k=9) == (0.0, 0.0)


# --------------------------------------------------------------------------
# Models

SMALL = NcfConfig(factors=4, mlp_layers=(8, 6, 4), epochs=1, batch_size=8)


@pytest.mark.parametrize("variant", NCF_VARIANTS)
def test_build_gives_probabilities_of_shape_batch(variant):
    model = ncf.build(dataclasses.replace(SMALL, variant=variant), 7, 11)
    inputs = {"user": tf.constant([0, 6, 3, 3, 1], tf.int64),
              "item": tf.constant([10, 0, 5, 5, 2], tf.int64)}
    probabilities = model(inputs)
    assert probabilities.shape == (5,) and probabilities.dtype == tf.float32
    assert np.all((probabilities.numpy() > 0) & (probabilities.numpy() < 1))
    np.testing.assert_allclose(tf.sigmoid(model.logits(inputs)), probabilities, rtol=1e-6)
    names = {layer.name for layer in model.layers}
    expected = {"mf": {"mf_user_embedding", "mf_item_embedding", "mf_global_bias"},
                "gmf": {"gmf_user_embedding", "gmf_output"},
                "mlp": {"mlp_item_embedding", "mlp_hidden_0", "mlp_hidden_1", "mlp_output"},
                "neumf": {"gmf_item_embedding", "mlp_user_embedding", "mlp_hidden_1",
                          "neumf_output"}}[variant]
    assert expected <= names


def test_build_rejects_a_bad_config():
    with pytest.raises(ValueError, match="variant"):
        ncf.build(dataclasses.replace(SMALL, variant="svd"), 3, 3)
    with pytest.raises(ValueError, match="mlp_layers"):
        ncf.build(dataclasses.replace(SMALL, variant="mlp", mlp_layers=(7, 4)), 3, 3)


def test_l2_adds_a_penalty_per_embedding_table():
    model = ncf.build(dataclasses.replace(SMALL, variant="neumf", l2=0.01), 5, 6)
    assert len(model.losses) == 4
    assert not ncf.build(dataclasses.replace(SMALL, variant="neumf"), 5, 6).losses


def test_pretrained_neumf_logit_blends_gmf_and_mlp_logits():
    rng = np.random.default_rng(0)
    gmf = ncf.build(dataclasses.replace(SMALL, variant="gmf"), 9, 13)
    mlp = ncf.build(dataclasses.replace(SMALL, variant="mlp"), 9, 13)
    # Random weights everywhere (biases included), as if trained.
    for model in (gmf, mlp):
        model.set_weights([rng.normal(size=w.shape).astype(np.float32)
                           for w in model.get_weights()])
    neumf = ncf.build(dataclasses.replace(SMALL, variant="neumf"), 9, 13)
    ncf.init_from_pretrained(neumf, gmf, mlp, alpha=0.3)
    inputs = {"user": tf.constant(rng.integers(0, 9, 64)),
              "item": tf.constant(rng.integers(0, 13, 64))}
    expected = 0.3 * gmf.logits(inputs) + 0.7 * mlp.logits(inputs)
    np.testing.assert_allclose(neumf.logits(inputs), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected a gmf model"):
        ncf.init_from_pretrained(neumf, mlp, mlp, alpha=0.3)


def _two_taste_data(num_users=40, num_items=30, per_user=10, seed=0):
    """Even users like items [0, 15), odd users items [15, 30): each user has
    per_user train items and one held-out item, all from their half."""
    rng = np.random.default_rng(seed)
    half = num_items // 2
    users, items, held_out = [], [], []
    for user in range(num_users):
        liked = rng.choice(half, per_user + 1, replace=False) + (user % 2) * half
        users += [user] * per_user
        items += liked[:per_user].tolist()
        held_out.append(liked[per_user])
    return np.array(users), np.array(items), np.arange(num_users), np.array(held_out)


@pytest.mark.integration
@pytest.mark.parametrize("variant", NCF_VARIANTS)
def test_fit_learns_two_tastes(variant):
    users, items, eval_users, eval_items = _two_taste_data()
    observed = negatives.observed_keys(np.r_[users, eval_users], np.r_[items, eval_items], 30)
    # Every unobserved item: 4 of the user's half, 15 of the other half.
    cases = negatives.sampled_ranking_cases(eval_users, eval_items, observed, 30,
                                            num_negatives=19, seed=0)
    # MLP needs the higher rate: from the paper's N(0, 0.01) embeddings it
    # sits a while on the plateau where it predicts item popularity only.
    config = NcfConfig(variant=variant, factors=4, mlp_layers=(16, 8), epochs=20,
                       batch_size=64, seed=1,
                       learning_rate=0.01 if variant in ("mf", "gmf") else 0.02)
    lines = []
    model = ncf.fit(config, users, items, 40, 30, log=lines.append)
    assert len(lines) == (3 if variant == "neumf" else 1) * 20  # pretraining
    scores = ncf.score(model, np.broadcast_to(eval_users[:, None], cases.shape), cases)
    assert scores.shape == cases.shape
    hr, ndcg = negatives.hit_rate_and_ndcg(scores, k=5)
    # Chance: HR@5 = 5/20. Ranking the user's half first gives rank <= 4.
    assert hr >= 0.8, (hr, ndcg)


@pytest.mark.integration
def test_fit_is_deterministic_for_a_seed():
    users, items, _, _ = _two_taste_data(num_users=12, per_user=5)
    config = NcfConfig(variant="neumf", factors=4, mlp_layers=(8, 4), epochs=2,
                       batch_size=16, seed=5)
    first = ncf.fit(config, users, items, 12, 30, log=lambda line: None)
    second = ncf.fit(config, users, items, 12, 30, log=lambda line: None)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_score_batches_and_keeps_the_shape():
    model = ncf.build(dataclasses.replace(SMALL, variant="gmf"), 5, 6)
    users = np.array([[0, 1, 2], [3, 4, 0]])
    items = np.array([[5, 4, 3], [2, 1, 0]])
    whole = ncf.score(model, users, items)
    assert whole.shape == (2, 3) and whole.dtype == np.float32
    np.testing.assert_allclose(ncf.score(model, users, items, batch_size=4), whole)
    np.testing.assert_allclose(
        whole.ravel(), model({"user": users.ravel(), "item": items.ravel()}), rtol=1e-6)
