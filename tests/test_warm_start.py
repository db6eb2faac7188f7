"""Warm start of the retrieval models (tfx_recsys/models/warm_start.py).

The row carry, the compatibility facts and the executor's record are checked
on hand-made arrays; the trainers on the tiny hand-made data of
test_models.py, trained once, then again on changed data (an item gone, a
new one, the vocabularies reordered) starting from the first model.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.test_models import (DATASET, EVENTS, ITEMS, _fn_args, transform_dir,  # noqa: F401
                               write_transform)
from tfx_recsys import config
from tfx_recsys.models import features, ncf, softmax, towers, training, two_tower, warm_start

# --------------------------------------------------------------------------
# carry_rows


def _table(rows, dim=3, offset=0.0):
    """[rows, dim] whose row r is filled with offset + r (rows tell apart)."""
    return np.repeat(np.arange(rows, dtype=np.float32)[:, None] + offset, dim, axis=1)


def test_surviving_ids_keep_their_row_new_ids_their_fresh_row():
    old_tokens = np.array([b"a", b"b", b"c"])
    new_tokens = np.array([b"c", b"d", b"a"])  # reordered, b gone, d new
    old, fresh = _table(3), _table(3, offset=100.0)
    weights, counts = warm_start.carry_rows(old, old_tokens, new_tokens, fresh)
    np.testing.assert_array_equal(weights[0], old[2])  # c moved from row 2 to 0
    np.testing.assert_array_equal(weights[2], old[0])  # a moved from row 0 to 2
    np.testing.assert_array_equal(weights[1], fresh[1])  # d: as initialised
    assert counts == warm_start.RowCounts(surviving=2, new=1, vanished=1)
    np.testing.assert_array_equal(fresh, _table(3, offset=100.0))  # not modified


def test_a_table_that_grew_and_its_oov_row_carry_over():
    old_tokens = warm_start.row_tokens([b"x", b"y"], rows=3)
    new_tokens = warm_start.row_tokens([b"y", b"z", b"x"], rows=4)
    assert old_tokens[-1] == new_tokens[-1] == warm_start.OOV_TOKEN % 0
    old = _table(3)
    weights, counts = warm_start.carry_rows(old, old_tokens, new_tokens, _table(4, offset=50.0))
    np.testing.assert_array_equal(weights, [old[1], _table(4, offset=50.0)[1], old[0], old[2]])
    assert counts == (3, 1, 0)


def test_tokens_are_bytes_of_any_length_and_need_not_be_sorted():
    old_tokens = np.array([b"zz-long-token", b"", b"m"])
    weights, counts = warm_start.carry_rows(_table(3), old_tokens, np.array([b"", b"zz-long-token"]),
                                            _table(2, offset=9.0))
    np.testing.assert_array_equal(weights, [_table(3)[1], _table(3)[0]])
    assert counts == (2, 0, 1)


def test_nothing_survives_an_empty_table():
    weights, counts = warm_start.carry_rows(np.zeros((0, 2)), np.array([], dtype=bytes),
                                            np.array([b"a"]), np.ones((1, 2)))
    np.testing.assert_array_equal(weights, np.ones((1, 2)))
    assert counts == (0, 1, 0)


def test_a_vocabulary_needs_its_rows():
    with pytest.raises(ValueError, match="3 rows for a vocabulary of 4"):
        warm_start.row_tokens([b"a", b"b", b"c", b"d"], rows=3)


def test_vocabulary_tables_carry_by_token_and_bucket_tables_by_index():
    name = features.vocabulary_name
    assert name(DATASET, "item_id") == "item_id" and name(DATASET, "user_id") == "user_id"
    assert name(DATASET, "occupation") == "occupation"  # categorical
    assert name(DATASET, "genres") == "genres"  # multi_categorical
    assert name(DATASET, "title") == "title"  # text
    assert name(DATASET, "zip_code") is None  # hashed (1000 buckets)
    assert name(DATASET, "age") is None and name(DATASET, "release_year") is None
    assert name(DATASET, "seconds_since_previous") is None


def _index_table(rows):
    return warm_start._RowTable(tf.Variable(_table(rows, dim=2, offset=7.0)), "zip_code", None)


def _state(rows, vocabulary=None):
    return warm_start.State({}, {"zip_code_embedding": {"rows": rows, "vocabulary": vocabulary}},
                            {"table.zip_code_embedding.weights": _table(rows, dim=2)})


def test_bucket_tables_carry_whole_when_their_row_count_is_unchanged():
    weights, phrase = warm_start._carry("zip_code_embedding", _index_table(4), None,
                                        _state(4))
    np.testing.assert_array_equal(weights, _table(4, dim=2))
    assert phrase == ""  # listed under "by index"
    weights, phrase = warm_start._carry("zip_code_embedding", _index_table(5), None,
                                        _state(4))
    assert weights is None and phrase == "zip_code not carried (4 buckets before, 5 now)"
    weights, phrase = warm_start._carry("zip_code_embedding", _index_table(4), None,
                                        _state(4, vocabulary="zip_code"))
    assert weights is None and phrase == "zip_code not carried (zip_code before, buckets now)"


# --------------------------------------------------------------------------
# Compatibility


FACTS = {"format": 1, "model": "two_tower", "embedding_dim": 8, "feature_dim": 4,
         "towers": {"query_tower": {"features": {"user_id": "user_id_embedding"},
                                    "hidden_layers": [8], "output_dim": 8}},
         "tables": {"user_id_embedding": {"encoding": "user_id", "dim": 8}},
         "dense": {"query_tower/hidden_0/kernel": [8, 8]}}


def _changed(**changes):
    import copy

    facts = copy.deepcopy(FACTS)
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = facts
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value
    return facts


def test_facts_that_differ_are_named_in_one_phrase():
    assert warm_start.incompatibility(FACTS, _changed()) is None
    assert warm_start.incompatibility(FACTS, _changed(embedding_dim=16)) == \
        "embedding_dim 8 in the base model, 16 now"
    assert warm_start.incompatibility(FACTS, _changed(model="softmax")) == \
        "model two_tower in the base model, softmax now"
    assert warm_start.incompatibility(
        FACTS, _changed(towers__query_tower__features__age="age_embedding")) == \
        "towers.query_tower.features.age only in this model"
    assert warm_start.incompatibility(FACTS, _changed(towers__query_tower__hidden_layers=[8, 4])) \
        == "towers.query_tower.hidden_layers [8] in the base model, [8, 4] now"
    assert warm_start.incompatibility(FACTS, _changed(tables__user_id_embedding=None)) == \
        "tables.user_id_embedding only in the base model"


def test_a_base_model_without_state_is_a_cold_start(tmp_path):
    """A model from before warm start: nothing is read into the model (None
    here: it is not even looked at)."""
    serving = tmp_path / "old" / "Format-Serving"
    serving.mkdir(parents=True)
    line = warm_start.warm_start(None, None, None, str(serving))
    assert line.startswith(f"cold start: no usable warm-start state in {tmp_path / 'old'}")
    assert "NotFoundError" in line and "\n" not in line
    assert not warm_start.is_warm(line)


def test_warm_start_epochs_default_to_half_the_epochs():
    assert config.warm_start_epochs(config.TwoTowerConfig(epochs=10)) == 5
    assert config.warm_start_epochs(config.SoftmaxConfig(epochs=1)) == 1
    assert config.warm_start_epochs(config.TwoTowerConfig(epochs=10, warm_start_epochs=3)) == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="warm_start_epochs must be"):
            config.TwoTowerConfig(warm_start_epochs=bad)
    custom_config = config.SoftmaxConfig(warm_start_epochs=4).to_custom_config()
    assert config.SoftmaxConfig.from_custom_config(custom_config).warm_start_epochs == 4


def test_the_executor_records_the_outcome_on_the_model(tmp_path):
    from tfx.types import standard_artifacts

    from tfx_recsys.components.trainer_with_epochs import executor

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    executor.record_warm_start(model)  # nothing written: e.g. the NCF ranker
    assert not model.has_custom_property(warm_start.OUTCOME_PROPERTY)
    warm_start.write_outcome(os.path.join(model.uri, "Format-Serving"), "warm start from x: y")
    executor.record_warm_start(model)
    assert model.get_string_custom_property(warm_start.OUTCOME_PROPERTY) == "warm start from x: y"


# --------------------------------------------------------------------------
# The trainers, on tiny data

# The second training's data: i4 is gone, i5 is new, i3 becomes the most
# frequent item (first in the frequency-ordered vocabulary), new genres and
# title words appear and old ones vanish.
CHANGED_ITEMS = {**{k: v for k, v in ITEMS.items() if k != "i4"},
                 "i5": (["Western"], "Unforgiven (1992)", [1992.0])}
CHANGED_EVENTS = [e for e in EVENTS if e[1] != "i4"] + [
    ("u1", "i3", 120), ("u2", "i3", 4100), ("u1", "i5", 130), ("u2", "i5", 4200)]


@pytest.fixture(scope="module")
def changed_transform_dir(tmp_path_factory):
    return write_transform(str(tmp_path_factory.mktemp("changed_transform")),
                           CHANGED_EVENTS, CHANGED_ITEMS)


def _serving_dir(root, name):
    """<root>/<name>/Format-Serving, as the Trainer lays out a Model artifact."""
    return str(root / name / "Format-Serving")


def _built(module, hparams_class, transform, serving_dir, **hparams):
    """(hparams, inputs, model) as run_fn has them before training."""
    fn_args = _fn_args(transform, serving_dir, **hparams)
    hparams = hparams_class.from_custom_config(fn_args.custom_config)
    training.set_seed(hparams.seed)
    inputs = training.training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    return hparams, inputs, module.build_model(hparams, inputs)


def _rows_by_token(transform, vocabulary, weights):
    """{token: row} of a table whose rows follow `vocabulary` of `transform`."""
    output = tft.TFTransformOutput(transform)
    tokens = warm_start.row_tokens(output.vocabulary_by_name(vocabulary), len(weights))
    return dict(zip(tokens.tolist(), np.asarray(weights).reshape(len(weights), -1)))


def _tables(model):
    return {t.name: t for t in model.submodules if isinstance(t, towers.EmbeddingTable)}


@pytest.mark.integration
def test_two_tower_starts_from_the_base_models_rows(transform_dir, changed_transform_dir,  # noqa: F811
                                                    tmp_path):
    base_dir = _serving_dir(tmp_path, "base")
    two_tower.run_fn(_fn_args(transform_dir, base_dir))
    state = warm_start.read_state(warm_start.state_dir(base_dir))
    assert state.facts["model"] == "two_tower"
    assert warm_start.read_outcome(base_dir) == "cold start: no base model; 2 epochs"

    hparams, inputs, model = _built(two_tower, config.TwoTowerConfig, changed_transform_dir,
                                    _serving_dir(tmp_path, "next"))
    line = warm_start.warm_start(model, inputs, hparams, base_dir)
    assert warm_start.is_warm(line), line
    assert "item_id 4 of 5 rows carried, 1 new, 1 dropped" in line
    assert "by index: age, release_year, zip_code" in line
    # Fresh rows: the same model built again, without the base model.
    _, _, fresh = _built(two_tower, config.TwoTowerConfig, changed_transform_dir,
                         _serving_dir(tmp_path, "fresh"))
    warm_start.build(fresh, inputs)

    tables, fresh_tables = _tables(model), _tables(fresh)
    for name, vocabulary in (("item_id", "item_id"), ("user_id", "user_id"),
                             ("genres", "genres"), ("title", "title")):
        old = dict(zip(state.arrays[f"table.{name}_embedding.tokens"].tolist(),
                       state.arrays[f"table.{name}_embedding.weights"]))
        new = _rows_by_token(changed_transform_dir, vocabulary,
                             tables[f"{name}_embedding"].embeddings.numpy())
        initial = _rows_by_token(changed_transform_dir, vocabulary,
                                 fresh_tables[f"{name}_embedding"].embeddings.numpy())
        for token, row in new.items():
            np.testing.assert_array_equal(row, old.get(token, initial[token]),
                                          err_msg=f"{name} {token!r}")
    item_vocabulary = tft.TFTransformOutput(changed_transform_dir).vocabulary_by_name("item_id")
    old_items = state.arrays["table.item_id_embedding.tokens"].tolist()
    assert item_vocabulary.index(b"i3") != old_items.index(b"i3")  # a reorder was carried
    assert b"i5" in item_vocabulary and b"i4" not in item_vocabulary
    np.testing.assert_array_equal(tables["zip_code_embedding"].embeddings.numpy(),
                                  state.arrays["table.zip_code_embedding.weights"])
    np.testing.assert_array_equal(model.query_tower.hidden[0].kernel.numpy(),
                                  state.arrays["dense.query_tower/hidden_0/kernel"])


@pytest.mark.integration
def test_run_fn_trains_warm_epochs_and_leaves_the_state_for_the_next(
        transform_dir, changed_transform_dir, tmp_path):  # noqa: F811
    base_dir = _serving_dir(tmp_path, "base")
    two_tower.run_fn(_fn_args(transform_dir, base_dir, epochs=1))
    next_dir = _serving_dir(tmp_path, "next")
    fn_args = _fn_args(changed_transform_dir, next_dir, epochs=4, warm_start_epochs=1)
    fn_args.base_model = base_dir
    two_tower.run_fn(fn_args)
    outcome = warm_start.read_outcome(next_dir)
    assert outcome.startswith(f"warm start from {base_dir}: ") and outcome.endswith("; 1 epoch")
    assert tf.saved_model.load(next_dir).signatures  # the model itself is saved
    assert not os.path.exists(os.path.join(next_dir, warm_start.STATE_DIR))  # not shipped
    state = warm_start.read_state(warm_start.state_dir(next_dir))
    assert b"i5" in state.arrays["table.item_id_embedding.tokens"].tolist()

    # Another embedding size: a cold start, whatever the state holds.
    hparams, inputs, model = _built(two_tower, config.TwoTowerConfig, changed_transform_dir,
                                    _serving_dir(tmp_path, "wider"), embedding_dim=16)
    line = warm_start.warm_start(model, inputs, hparams, base_dir)
    assert line == (f"cold start: the base model {base_dir} does not fit: "
                    "embedding_dim 8 in the base model, 16 now")
    _, _, fresh = _built(two_tower, config.TwoTowerConfig, changed_transform_dir,
                         _serving_dir(tmp_path, "fresh"), embedding_dim=16)
    warm_start.build(fresh, inputs)
    for left, right in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(left.numpy(), right.numpy())  # as built


@pytest.mark.integration
def test_softmax_carries_its_item_biases_by_token(transform_dir, changed_transform_dir,  # noqa: F811
                                                  tmp_path):
    base_dir = _serving_dir(tmp_path, "base")
    softmax.run_fn(_fn_args(transform_dir, base_dir, epochs=1))
    state = warm_start.read_state(warm_start.state_dir(base_dir))
    hparams, inputs, model = _built(softmax, config.SoftmaxConfig, changed_transform_dir,
                                    _serving_dir(tmp_path, "next"))
    line = warm_start.warm_start(model, inputs, hparams, base_dir)
    assert "item_bias 4 of 5 rows carried, 1 new, 1 dropped" in line, line
    old = dict(zip(state.arrays["table.item_bias.tokens"].tolist(),
                   state.arrays["table.item_bias.weights"][:, 0]))
    new = _rows_by_token(changed_transform_dir, "item_id", model.item_bias.numpy())
    assert new[b"i5"] == 0.0  # a new item's bias starts at zero
    for token in (b"i1", b"i2", b"i3", warm_start.OOV_TOKEN % 0):
        assert new[token] == old[token], token
    # A two-tower base model does not start a softmax.
    other = _serving_dir(tmp_path, "two_tower")
    two_tower.run_fn(_fn_args(transform_dir, other, epochs=1))
    hparams, inputs, model = _built(softmax, config.SoftmaxConfig, changed_transform_dir,
                                    _serving_dir(tmp_path, "again"))
    assert warm_start.warm_start(model, inputs, hparams, other).endswith(
        "model two_tower in the base model, softmax now")


TINY_RANKER = {"epochs": 1, "batch_size": 8, "factors": 4, "mlp_layers": [8, 4]}


@pytest.mark.integration
def test_the_ncf_ranker_trains_from_scratch_beside_a_base_model(transform_dir,  # noqa: F811
                                                               tmp_path):
    serving_dir = _serving_dir(tmp_path, "ranker")
    fn_args = _fn_args(transform_dir, serving_dir, **TINY_RANKER)
    fn_args.base_model = _serving_dir(tmp_path, "no-such-model")
    ncf.run_fn(fn_args)
    assert tf.saved_model.load(serving_dir).signatures
    assert warm_start.read_outcome(serving_dir) is None  # no warm_start property
