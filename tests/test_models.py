"""Transform's preprocessing_fn, both retrieval models and their exported
signatures, on tiny hand-made data (the MovieLens-100K dataset config)."""

import functools
import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
from tfx_bsl.public import tfxio

from tfx_recsys import config, dataset_config, embedding
from tfx_recsys.models import export, features, softmax, towers, training, two_tower

DATASET = dataset_config.load(dataset_config.builtin_path("movielens-100k"))

# The raw examples as ExampleGen writes them: required columns have shape
# [1]; numeric features, bags and the behaviour features may be absent.
RAW_SPEC = {
    "user_id": tf.io.FixedLenFeature([1], tf.string),
    "item_id": tf.io.FixedLenFeature([1], tf.string),
    "timestamp": tf.io.FixedLenFeature([1], tf.int64),
    "rating": tf.io.FixedLenFeature([1], tf.float32),
    "age": tf.io.VarLenFeature(tf.float32),
    "gender": tf.io.FixedLenFeature([1], tf.string),
    "occupation": tf.io.FixedLenFeature([1], tf.string),
    "zip_code": tf.io.FixedLenFeature([1], tf.string),
    "genres": tf.io.VarLenFeature(tf.string),
    "title": tf.io.FixedLenFeature([1], tf.string),
    "release_year": tf.io.VarLenFeature(tf.float32),
    "history": tf.io.VarLenFeature(tf.string),
    "seconds_since_previous": tf.io.VarLenFeature(tf.int64),
}
USERS = {"u1": ([20.0], "F", "writer", "10001"),
         "u2": ([35.0], "M", "doctor", "20002"),
         "u3": ([], "M", "writer", "30003")}  # age unknown
ITEMS = {"i1": (["Drama"], "Toy Story (1995)", [1995.0]),
         "i2": (["Drama", "Comedy"], "Heat! (1995)", [1995.0]),
         "i3": ([], "Casino", []),  # no genre, year unknown
         "i4": (["Comedy"], "Babe (1995)", [1980.0])}
EVENTS = [("u1", "i1", 10), ("u1", "i2", 20), ("u1", "i4", 100),
          ("u2", "i2", 15), ("u2", "i3", 25), ("u2", "i1", 4000),
          ("u3", "i1", 5), ("u3", "i3", 7), ("u3", "i4", 7), ("u3", "i2", 9)]
CUSTOM_CONFIG = {"dataset": DATASET.to_dict()}
TINY = {"epochs": 2, "batch_size": 4, "embedding_dim": 8, "feature_dim": 4,
        "hidden_layers": [8]}


def _earlier(user, timestamp, events=EVENTS):
    """The user's items strictly before `timestamp`, oldest first."""
    return [i for _, i in sorted((t, i) for u, i, t in events
                                 if u == user and t < timestamp)]


def _raw_instance(user, item, timestamp, events=EVENTS, items=ITEMS):
    age, gender, occupation, zip_code = USERS[user]
    genres, title, year = items[item]
    earlier = [t for u, _, t in events if u == user and t < timestamp]
    return {"user_id": [user], "item_id": [item], "timestamp": [timestamp],
            "rating": [4.0], "age": age, "gender": [gender],
            "occupation": [occupation], "zip_code": [zip_code], "genres": genres,
            "title": [title], "release_year": year,
            "history": _earlier(user, timestamp, events),
            "seconds_since_previous": [timestamp - max(earlier)] if earlier else []}


class _DataAccessor:
    """What TFX Trainer's fn_args.data_accessor does, on plain TFRecord files."""

    @staticmethod
    def tf_dataset_factory(file_pattern, options, schema):
        return tfxio.TFExampleRecord(file_pattern, schema=schema).TensorFlowDataset(options)


@pytest.fixture(scope="module")
def transform_dir(tmp_path_factory):
    """Runs preprocessing_fn with tf.Transform on EVENTS (the train split) and
    writes the transformed examples to <dir>/train.tfrecord."""
    return write_transform(str(tmp_path_factory.mktemp("transform")))


def write_transform(output, events=EVENTS, items=ITEMS):
    """Transform's output for `events` (the train split) of `items` in
    `output`, and the transformed examples in <output>/train.tfrecord."""
    raw_metadata = dataset_metadata.DatasetMetadata.from_feature_spec(RAW_SPEC)
    with tft_beam.Context(temp_dir=os.path.join(output, "tmp")):
        (transformed, transformed_metadata), transform_fn = (
            ([_raw_instance(*event, events, items) for event in events], raw_metadata)
            | tft_beam.AnalyzeAndTransformDataset(functools.partial(
                features.preprocessing_fn, custom_config=CUSTOM_CONFIG)))
        _ = transform_fn | tft_beam.WriteTransformFn(output)
    metadata_io.write_metadata(raw_metadata, os.path.join(
        output, tft.TFTransformOutput.RAW_METADATA_DIR))
    coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
    with tf.io.TFRecordWriter(os.path.join(output, "train.tfrecord")) as writer:
        for instance in transformed:
            writer.write(coder.encode(instance))
    return output


def _fn_args(transform_dir, model_dir, **hparams):
    return types.SimpleNamespace(
        train_files=[os.path.join(transform_dir, "train.tfrecord")],
        transform_output=transform_dir, serving_model_dir=str(model_dir),
        data_accessor=_DataAccessor(), custom_config={**CUSTOM_CONFIG, **TINY, **hparams})


@pytest.fixture(scope="module")
def two_tower_dir(transform_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("two_tower")
    two_tower.run_fn(_fn_args(transform_dir, model_dir))
    return str(model_dir)


def _transform(transform_dir, raw):
    """Applies the Transform graph to raw columns ([batch] or sparse)."""
    output = tft.TFTransformOutput(transform_dir)
    spec = output.raw_feature_spec()
    fed = {}
    for name, values in raw.items():
        if isinstance(spec[name], tf.io.VarLenFeature):
            fed[name] = tf.ragged.constant(values, spec[name].dtype).to_sparse()
        else:
            fed[name] = tf.constant(values, spec[name].dtype)[:, None]
    return output.transform_features_layer()(fed)


# --------------------------------------------------------------------------
# Transform


def test_vocabularies_are_fitted_on_train_with_an_oov_bucket(transform_dir):
    output = tft.TFTransformOutput(transform_dir)
    assert output.vocabulary_size_by_name("user_id") == 3
    assert set(output.vocabulary_by_name("genres")) == {b"Drama", b"Comedy"}
    result = _transform(transform_dir, {"user_id": ["u2", "stranger"],
                                        "item_id": ["i1", "unseen"],
                                        "occupation": ["writer", "astronaut"]})
    assert result["user_id"].numpy()[0] < 3 and result["user_id"].numpy()[1] == 3
    assert result["item_id"].numpy()[1] == 4  # 4 items + the OOV bucket
    assert result["occupation"].numpy()[1] == 2


def test_text_is_lower_cased_word_tokens(transform_dir):
    vocabulary = tft.TFTransformOutput(transform_dir).vocabulary_by_name("title")
    assert set(vocabulary) == {b"toy", b"story", b"1995", b"heat", b"casino", b"babe"}
    result = _transform(transform_dir, {"title": ["TOY story!", "Unknown words"]})
    ids = tf.sparse.to_dense(result["title"], default_value=-1).numpy()
    toy, story = vocabulary.index(b"toy"), vocabulary.index(b"story")
    assert sorted(ids[0]) == sorted([toy, story])
    assert list(ids[1]) == [len(vocabulary)] * 2  # OOV


def test_missing_numeric_values_get_their_own_bucket(transform_dir):
    result = _transform(transform_dir, {"release_year": [[1995.0], [], [1980.0]],
                                        "age": [[], [35.0], [20.0]]})
    years, ages = result["release_year"].numpy(), result["age"].numpy()
    assert years[1] == 10 and years[0] < 10 and years[2] < years[0]  # 10 buckets
    assert ages[0] == 8 and ages[1] < 8 and ages[2] < ages[1]  # 8 buckets


def test_history_shares_the_item_vocabulary(transform_dir):
    result = _transform(transform_dir, {"item_id": ["i3", "i1", "nope"],
                                        "history": [["i3"], ["i1"], ["nope"]]})
    history = tf.sparse.to_dense(result["history"]).numpy()[:, 0]
    np.testing.assert_array_equal(history, result["item_id"].numpy())


def test_hashed_features_use_to_hash_bucket_fast(transform_dir):
    result = _transform(transform_dir, {"zip_code": ["10001", "never-seen"]})
    expected = tf.strings.to_hash_bucket_fast(["10001", "never-seen"], 1000)
    np.testing.assert_array_equal(result["zip_code"].numpy(), expected.numpy())


def test_recency_is_log2_buckets_with_a_missing_bucket():
    seconds = tf.constant([0, 1, 3, 4, 2 ** 40, 7], tf.int64)
    present = tf.constant([True, True, True, True, True, False])
    np.testing.assert_array_equal(
        features.recency_buckets(seconds, present).numpy(),
        [0, 1, 2, 2, features.RECENCY_BUCKETS - 1, features.RECENCY_BUCKETS])


def test_item_frequencies_come_from_transform(transform_dir):
    output = tft.TFTransformOutput(transform_dir)
    vocabulary = output.vocabulary_by_name("item_id")
    counts = features.item_counts(output, len(vocabulary) + 1)
    expected = [sum(item == token.decode() for _, item, _ in EVENTS) for token in vocabulary]
    np.testing.assert_array_equal(counts, expected + [0])
    probability = features.item_probability(output, len(vocabulary) + 1)
    np.testing.assert_allclose(probability, np.array(expected + [1]) / (len(EVENTS) + 1))


def test_transformed_features_describe_every_model_input(transform_dir):
    described = {f.name: f for f in features.transformed_features(
        DATASET, tft.TFTransformOutput(transform_dir))}
    assert {n for n, f in described.items() if f.tower == features.QUERY} == {
        "user_id", "age", "gender", "occupation", "zip_code", "history",
        "seconds_since_previous"}
    assert {n for n, f in described.items() if f.tower == features.CANDIDATE} == {
        "item_id", "genres", "title", "release_year"}
    assert described["history"] == features.TransformedFeature(
        "history", features.QUERY, True, 5, "item_id")
    assert described["item_id"].rows == 5 and not described["item_id"].is_bag
    assert described["zip_code"].rows == 1000
    assert described["release_year"].rows == 11 and described["age"].rows == 9
    assert described["title"].is_bag and described["title"].rows == 7
    assert described["seconds_since_previous"].rows == features.RECENCY_BUCKETS + 1


def test_custom_config_must_carry_the_dataset():
    with pytest.raises(ValueError, match="dataset"):
        features.dataset_from_custom_config({"code_fingerprint": "x"})


# --------------------------------------------------------------------------
# Hyperparameters and the history table


def test_hyperparameters_round_trip_through_custom_config():
    hparams = config.TwoTowerConfig(hidden_layers=(32, 16), use_recency=True)
    custom_config = {"dataset": DATASET.to_dict(), "code_fingerprint": "abc",
                     **hparams.to_custom_config()}
    custom_config["hidden_layers"] = list(custom_config["hidden_layers"])  # JSON
    assert config.TwoTowerConfig.from_custom_config(custom_config) == hparams
    assert config.SoftmaxConfig.from_custom_config({"num_sampled": 7}).num_sampled == 7


def test_latest_items_keeps_each_users_last_items_in_time_order():
    users, histories, last = export.latest_items(
        [b"b", b"a", b"a", b"a", b"b"], [b"x", b"z", b"y", b"w", b"v"],
        [5, 3, 1, 3, 2], length=2)
    assert users == [b"a", b"b"]
    assert histories == [[b"w", b"z"], [b"v", b"x"]]  # ties by item id
    assert last == [3, 5]


# --------------------------------------------------------------------------
# Two-tower


def _user_request(users=("u1", "stranger")):
    return {"user_id": tf.constant(list(users)),
            "age": tf.constant([20.0, float("nan")][:len(users)]),
            "gender": tf.constant(["F", "X"][:len(users)]),
            "occupation": tf.constant(["writer", ""][:len(users)]),
            "zip_code": tf.constant(["10001", "99999"][:len(users)])}


def test_two_tower_signatures_take_raw_features(two_tower_dir):
    model = tf.saved_model.load(two_tower_dir)
    assert set(model.signatures) == set(export.SIGNATURES)
    queries = model.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"]
    assert queries.shape == (2, 8)
    candidates = model.signatures[export.CANDIDATE_SIGNATURE](
        item_id=tf.constant(["i1", "i3", "unseen"]),
        genres=tf.constant(["Drama|Comedy", "", "Western"]),
        title=tf.constant(["Toy Story (1995)", "Casino", ""]),
        release_year=tf.constant([1995.0, float("nan"), 2001.0]))["embedding"]
    assert candidates.shape == (3, 8)
    assert np.all(np.isfinite(candidates.numpy()))
    np.testing.assert_allclose(np.linalg.norm(candidates.numpy(), axis=1), 1.0, rtol=1e-5)
    with open(os.path.join(two_tower_dir, export.DATASET_CONFIG_FILE)) as f:
        assert dataset_config.DatasetConfig.from_json(f.read()) == DATASET


def test_stored_history_equals_history_from_the_request(two_tower_dir):
    model = tf.saved_model.load(two_tower_dir)
    lookup = model.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"]
    stored = [_earlier("u1", 10 ** 9), []]  # u1's train items; nothing for a stranger
    with_history = model.signatures[export.QUERY_WITH_HISTORY_SIGNATURE](
        **_user_request(), history=tf.ragged.constant(stored, tf.string).to_tensor(""))
    np.testing.assert_allclose(lookup.numpy(), with_history["embedding"].numpy(), atol=1e-6)
    other = model.signatures[export.QUERY_WITH_HISTORY_SIGNATURE](
        **_user_request(), history=tf.constant([["i3"], [""]]))["embedding"]
    assert not np.allclose(other.numpy()[0], lookup.numpy()[0])
    np.testing.assert_allclose(other.numpy()[1], lookup.numpy()[1], atol=1e-6)


def test_recency_comes_from_the_request_time_or_the_given_gap(transform_dir, tmp_path):
    two_tower.run_fn(_fn_args(transform_dir, tmp_path / "recency", use_recency=True,
                              epochs=1))
    model = tf.saved_model.load(str(tmp_path / "recency"))
    # u1's last train interaction is at 100; the stranger has none.
    lookup = model.signatures[export.QUERY_SIGNATURE](
        **_user_request(), timestamp=tf.constant([130, 5], tf.int64))["embedding"]
    given = model.signatures[export.QUERY_WITH_HISTORY_SIGNATURE](
        **_user_request(), history=tf.constant([_earlier("u1", 10 ** 9), ["", "", ""]]),
        seconds_since_previous=tf.constant([30, -1], tf.int64))["embedding"]
    np.testing.assert_allclose(lookup.numpy(), given.numpy(), atol=1e-6)


def test_embedding_helpers_build_raw_columns_from_rows(two_tower_dir):
    model = embedding.load(two_tower_dir)
    user_rows = [{"user_id": ["u1"], "age": [20.0], "gender": ["F"],
                  "occupation": ["writer"], "zip_code": ["10001"],
                  "history": _earlier("u1", 10 ** 9), "item_id": ["i3"]},
                 {"user_id": ["stranger"], "gender": ["X"], "occupation": [""],
                  "zip_code": ["99999"]}]
    users = embedding.embed_users(two_tower_dir, user_rows)
    expected = model.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"]
    np.testing.assert_allclose(users, expected.numpy(), atol=1e-6)
    item_rows = [{"item_id": [item], "genres": genres, "title": [title], "release_year": year}
                 for item, (genres, title, year) in ITEMS.items()]
    items = embedding.embed_items(model, item_rows)
    direct = model.signatures[export.CANDIDATE_SIGNATURE](
        item_id=tf.constant(list(ITEMS)),
        genres=tf.constant(["|".join(g) for g, _, _ in ITEMS.values()]),
        title=tf.constant([t for _, t, _ in ITEMS.values()]),
        release_year=tf.constant([y[0] if y else float("nan")
                                  for _, _, y in ITEMS.values()]))["embedding"]
    np.testing.assert_allclose(items, direct.numpy(), atol=1e-6)


def _weights(model_dir):
    checkpoint = os.path.join(model_dir, "variables", "variables")
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name)
            for name, _ in tf.train.list_variables(checkpoint) if "model" in name}


def test_training_is_deterministic_for_a_seed(transform_dir, two_tower_dir, tmp_path):
    two_tower.run_fn(_fn_args(transform_dir, tmp_path / "again"))
    first, second = _weights(two_tower_dir), _weights(str(tmp_path / "again"))
    assert first and first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# --------------------------------------------------------------------------
# Id dropout: the OOV rows learn what a new user or item looks like


def test_oov_ids_are_the_vocabulary_ids_oov_row(transform_dir):
    described = features.transformed_features(DATASET, tft.TFTransformOutput(transform_dir))
    rows = {f.name: f.rows for f in described}
    assert features.oov_ids(DATASET, described) == {
        "user_id": rows["user_id"] - 1, "item_id": rows["item_id"] - 1}
    # zip_code is hashed: no OOV row to drop to.
    assert features.oov_ids(DATASET, described, names=("user_id", "zip_code")) == {
        "user_id": rows["user_id"] - 1}


def test_drop_ids_replaces_ids_by_the_oov_id_at_the_rate():
    tf.random.set_seed(0)
    ids = tf.range(20_000, dtype=tf.int64)
    inputs = {"user_id": ids, "age": ids}
    assert towers.drop_ids(inputs, {"user_id": -1}, 0.0) is inputs
    dropped = towers.drop_ids(inputs, {"user_id": -1}, 0.25)
    out = dropped["user_id"].numpy()
    assert abs((out == -1).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(out[out != -1], ids.numpy()[out != -1])
    assert dropped["age"] is ids  # not named: untouched


@pytest.mark.parametrize("id_dropout", [0.0, 0.5])
def test_only_id_dropout_trains_the_oov_rows(transform_dir, tmp_path, id_dropout):
    hparams = config.TwoTowerConfig.from_custom_config({**TINY, "id_dropout": id_dropout})
    fn_args = _fn_args(transform_dir, tmp_path, **hparams.to_custom_config())
    training.set_seed(hparams.seed)
    inputs = training.training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    model = two_tower.build_model(hparams, inputs)
    model.compile(optimizer=training.optimizer("adam", 0.01))
    data = training.train_dataset(fn_args, inputs, 4, 0)
    model.evaluate(data, verbose=0)  # builds the tables
    tables = {t.encoding: t for t in model.query_tower.tables + model.candidate_tower.tables}
    oov = {name: tables[name].embeddings[-1].numpy() for name in ("user_id", "item_id")}
    model.fit(data, epochs=2, verbose=0)
    for name, before in oov.items():
        moved = not np.array_equal(tables[name].embeddings[-1].numpy(), before)
        assert moved == (id_dropout > 0), name


def test_id_dropout_is_a_share():
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="id_dropout must be"):
            config.TwoTowerConfig(id_dropout=bad)


# --------------------------------------------------------------------------
# DNN softmax


def test_softmax_exported_dot_product_is_the_logit(transform_dir, tmp_path):
    hparams = config.SoftmaxConfig.from_custom_config({**TINY, "epochs": 1})
    fn_args = _fn_args(transform_dir, tmp_path / "softmax", **hparams.to_custom_config())
    training.set_seed(hparams.seed)
    inputs = training.training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    model = softmax.build_model(hparams, inputs)
    assert model.task.full
    model.compile(optimizer=training.optimizer("adam", 0.01))
    model.fit(training.train_dataset(fn_args, inputs, 4, 0), epochs=1, verbose=0)
    training.save(model, fn_args, inputs, use_recency=False)

    loaded = tf.saved_model.load(str(tmp_path / "softmax"))
    queries = loaded.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"]
    vocabulary = [t.decode() for t in inputs.transform_output.vocabulary_by_name("item_id")]
    candidates = loaded.signatures[export.CANDIDATE_SIGNATURE](
        item_id=tf.constant(vocabulary + ["unseen"]), genres=tf.constant([""] * 5),
        title=tf.constant([""] * 5), release_year=tf.constant([0.0] * 5))["embedding"]
    assert queries.shape == (2, 9) and candidates.shape == (5, 9)
    np.testing.assert_array_equal(queries.numpy()[:, -1], 1.0)

    raw = {"user_id": ["u1", "stranger"], "age": [[20.0], []], "gender": ["F", "X"],
           "occupation": ["writer", ""], "zip_code": ["10001", "99999"],
           "history": [_earlier("u1", 10 ** 9), []]}
    logits = model.logits(_transform(transform_dir, raw))
    np.testing.assert_allclose(queries.numpy() @ candidates.numpy().T, logits.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_softmax_run_fn_trains_and_exports(transform_dir, tmp_path):
    softmax.run_fn(_fn_args(transform_dir, tmp_path / "model"))
    model = tf.saved_model.load(str(tmp_path / "model"))
    assert set(model.signatures) == set(export.SIGNATURES)
    assert model.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"].shape == (2, 9)


def test_corpus_softmax_full_loss_is_the_cross_entropy_and_sampled_is_finite():
    rng = np.random.default_rng(0)
    queries = tf.constant(rng.normal(size=(3, 4)), tf.float32)
    weights = tf.constant(rng.normal(size=(6, 4)), tf.float32)
    biases = tf.constant(rng.normal(size=6), tf.float32)
    labels = tf.constant([0, 2, 5], tf.int64)
    full = softmax.CorpusSoftmax(np.arange(1, 7), max_full_softmax_items=6, num_sampled=3)
    logits = queries.numpy() @ weights.numpy().T + biases.numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(3), labels.numpy()].sum()
    np.testing.assert_allclose(full(queries, labels, weights, biases).numpy(), expected,
                               rtol=1e-5)
    sampled = softmax.CorpusSoftmax(np.arange(1, 7), max_full_softmax_items=5, num_sampled=3)
    assert not sampled.full
    assert np.isfinite(sampled(queries, labels, weights, biases).numpy())


# --------------------------------------------------------------------------
# The served model (components/scann_pusher/index.py)


def test_served_model_takes_the_trainer_query_inputs(two_tower_dir, tmp_path):
    from tfx_recsys.components.scann_pusher import index

    model = embedding.load(two_tower_dir)
    assert embedding.missing_parts(model) == []
    item_ids = list(ITEMS)
    items = model.signatures[export.CANDIDATE_SIGNATURE](
        item_id=tf.constant(item_ids), genres=tf.constant([""] * 4),
        title=tf.constant([""] * 4), release_year=tf.constant([1990.0] * 4))["embedding"]
    index.save(index.BruteForceRecommender(model, item_ids, items.numpy(), k=2),
               str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    assert set(served.signatures) == {index.SERVING_SIGNATURE,
                                      index.SERVING_WITH_HISTORY_SIGNATURE}
    queries = model.signatures[export.QUERY_SIGNATURE](**_user_request())["embedding"]
    best = np.argsort(-(queries.numpy() @ items.numpy().T), axis=1)[:, :2]
    top = served.signatures[index.SERVING_SIGNATURE](**_user_request())["item_ids"]
    assert top.numpy().tolist() == [[item_ids[i].encode() for i in row] for row in best]
    with_history = served.signatures[index.SERVING_WITH_HISTORY_SIGNATURE](
        **_user_request(), history=tf.constant([_earlier("u1", 10 ** 9), ["", "", ""]]))
    assert with_history["item_ids"].numpy().tolist() == top.numpy().tolist()
    latency = index.signature_latency_ms(str(tmp_path / "served"),
                                         [{"user_id": "u1", "age": None}], repeats=3)
    assert latency["p50"] > 0
