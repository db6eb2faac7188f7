"""Transform's preprocessing_fn and the two-tower model, on tiny hand-made data."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata

from tfx_recsys import config
from tfx_recsys.models import features, two_tower

ROWS = [  # user, age, gender, occupation, item, genres
    ("u1", 20, "F", "writer", "i1", ["Drama"]),
    ("u1", 20, "F", "writer", "i2", ["Drama", "Comedy"]),
    ("u2", 35, "M", "doctor", "i2", ["Drama", "Comedy"]),
    ("u2", 35, "M", "doctor", "i3", []),
    ("u3", 50, "M", "writer", "i1", ["Drama"]),
    ("u3", 50, "M", "writer", "i3", []),
]


def _raw_instance(user, age, gender, occupation, item, genres):
    return {"user_id": [user], "item_id": [item], "rating": [4.0],
            "timestamp": [1], "age": [age], "gender": [gender],
            "occupation": [occupation], "zip_code": ["00000"], "title": ["t"],
            "release_year": [], "genres": genres}


@pytest.fixture(scope="module")
def transform_dir(tmp_path_factory):
    """Runs preprocessing_fn with tf.Transform on ROWS; returns its output dir."""
    output = str(tmp_path_factory.mktemp("transform"))
    with open(config.INTERACTIONS_SCHEMA) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    metadata = dataset_metadata.DatasetMetadata(schema)
    with tft_beam.Context(temp_dir=os.path.join(output, "tmp")):
        (transformed, _), transform_fn = (
            ([_raw_instance(*r) for r in ROWS], metadata)
            | tft_beam.AnalyzeAndTransformDataset(features.preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(output)
    return output


def test_vocabularies_are_fitted_and_unseen_values_go_to_the_oov_bucket(transform_dir):
    output = tft.TFTransformOutput(transform_dir)
    assert output.vocabulary_size_by_name("user_id") == 3
    assert set(output.vocabulary_by_name("genres")) == {b"Drama", b"Comedy"}
    assert features.vocabulary_size(output, "item_id") == 3 + features.NUM_OOV_BUCKETS
    layer = output.transform_features_layer()
    result = layer({"user_id": tf.constant([["u2"], ["new-user"]]),
                    "item_id": tf.constant([["i1"], ["new-item"]])})
    user_ids = result["user_id"].numpy().ravel()
    assert user_ids[0] < 3 and user_ids[1] == 3
    assert result["item_id"].numpy().ravel()[1] == 3


def test_export_signatures_take_raw_features(transform_dir, tmp_path):
    output = tft.TFTransformOutput(transform_dir)
    sizes = {name: features.vocabulary_size(output, name)
             for name in features.CATEGORICAL_FEATURES + (features.GENRES,)}
    sizes[features.AGE_BUCKET] = features.AGE_BUCKETS
    model = two_tower.TwoTowerModel(two_tower.QueryTower(sizes, 8),
                                    two_tower.CandidateTower(sizes, 8),
                                    np.full([sizes["item_id"]], 0.25, np.float32))
    layer = output.transform_features_layer()
    batch = layer({name: tf.constant([v[0] if v else "" for v in
                                      (_raw_instance(*r)[name] for r in ROWS)])[:, None]
                   for name in ("user_id", "item_id", "gender", "occupation")}
                  | {"age": tf.constant([[r[1]] for r in ROWS], tf.int64),
                     "genres": tf.ragged.constant([r[5] for r in ROWS], tf.string).to_sparse()})
    loss = model.compute_loss(batch)
    assert np.isfinite(loss.numpy())

    export = two_tower.ExportModule(model, transform_dir)
    path = str(tmp_path / "model")
    tf.saved_model.save(export, path, signatures={
        two_tower.QUERY_SIGNATURE: export.query_embedding,
        two_tower.CANDIDATE_SIGNATURE: export.candidate_embedding})
    loaded = tf.saved_model.load(path)
    queries = loaded.signatures[two_tower.QUERY_SIGNATURE](
        user_id=tf.constant(["u1", "stranger"]), age=tf.constant([20, 99], tf.int64),
        gender=tf.constant(["F", "X"]), occupation=tf.constant(["writer", "?"]),
        zip_code=tf.constant(["1", "2"]))["embedding"]
    assert queries.shape == (2, 8)
    candidates = loaded.signatures[two_tower.CANDIDATE_SIGNATURE](
        item_id=tf.constant(["i1", "i3", "unseen"]),
        genres=tf.constant(["Drama|Comedy", "", "Western"]))["embedding"]
    assert candidates.shape == (3, 8)
    assert np.all(np.isfinite(candidates.numpy()))
    # The export computes what the in-memory towers compute.
    direct = model.query_tower(layer({"user_id": tf.constant([["u1"]]),
                                      "gender": tf.constant([["F"]]),
                                      "occupation": tf.constant([["writer"]]),
                                      "age": tf.constant([[20]], tf.int64)}))
    np.testing.assert_allclose(queries.numpy()[0], direct.numpy()[0], rtol=1e-5)


def test_item_probability_counts_shares_and_floors_zero_counts():
    dataset = tf.data.Dataset.from_tensor_slices(
        {"item_id": tf.constant([[0], [0], [2], [0]], tf.int64)}).batch(3)
    probability = two_tower.item_probability(dataset, 4).numpy()
    np.testing.assert_allclose(probability, np.array([3, 1, 1, 1]) / 6)
