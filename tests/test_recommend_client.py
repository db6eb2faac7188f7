"""`recsys recommend`'s quick path, piece by piece: reading examples without
TensorFlow, the registry of running servers, the request a client builds."""

import json
import math
import os
import subprocess
import sys

import pytest

from tfx_recsys import examples_io
from tfx_recsys.serving import client, registry
from tfx_recsys.serving.contract import MISSING_INT


def _write_examples(directory, rows):
    """A gzipped TFRecord split of tf.Examples, written by TensorFlow; a
    feature's kind from its first value in any row."""
    import tensorflow as tf

    first = {}
    for row in rows:
        for name, values in row.items():
            if values:
                first.setdefault(name, values[0])
    split = directory / "Split-users"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for row in rows:
            features = {}
            for name, values in row.items():
                if isinstance(first.get(name, b""), (bytes, str)):
                    features[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[v.encode() for v in values]))
                elif isinstance(first[name], float):
                    features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=features)).SerializeToString())
    return str(split / "data.gz")


ROWS = [{"user_id": ["u1"], "age": [31], "score": [0.5], "history": ["i1", "i2", "ü"]},
        {"user_id": ["u2"], "age": [-(2 ** 63)], "score": [], "history": []},
        {"user_id": ["u3"]}]


def test_every_reader_gives_each_records_own_features(tmp_path):
    """read_rows (Arrow batches), read_rows_without_tensorflow and parsing
    each record alike: absent features left out, empty lists kept."""
    _write_examples(tmp_path, ROWS)
    parsed = [examples_io.parse_row(r) for r in examples_io.read_records(str(tmp_path), "users")]
    assert parsed[0] == ROWS[0] and parsed[1]["history"] == [] and parsed[2] == ROWS[2]
    assert list(examples_io.read_rows(str(tmp_path), "users")) == parsed
    assert list(examples_io.read_rows_without_tensorflow(str(tmp_path), "users")) == parsed
    assert list(examples_io.read_rows(str(tmp_path), "users", ("age", "nothing"))) == [
        {"age": [31]}, {"age": [-(2 ** 63)]}, {}]


def test_a_feature_of_two_kinds_is_read_record_by_record(tmp_path):
    # "score" as a float list in one record and an empty bytes list in the
    # next: tfx_bsl's batch decoder refuses the batch, so each record is
    # parsed on its own.
    import tensorflow as tf

    split = tmp_path / "Split-users"
    split.mkdir()
    feature = tf.train.Feature
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for score in (feature(float_list=tf.train.FloatList(value=[0.5])),
                      feature(bytes_list=tf.train.BytesList(value=[]))):
            writer.write(tf.train.Example(features=tf.train.Features(
                feature={"score": score})).SerializeToString())
    assert list(examples_io.read_rows(str(tmp_path), "users")) == [
        {"score": [0.5]}, {"score": []}]


def test_reading_imports_no_tensorflow(tmp_path):
    _write_examples(tmp_path, ROWS)
    code = ("import sys; from tfx_recsys import examples_io; "
            f"rows = list(examples_io.read_rows_without_tensorflow({str(tmp_path)!r}, 'users')); "
            "assert len(rows) == 3 and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_corrupt_record_is_an_error_naming_the_file(tmp_path):
    import gzip

    path = _write_examples(tmp_path, ROWS)
    with gzip.open(path) as f:
        data = bytearray(f.read())
    data[20] ^= 0xFF  # inside the first record's data
    with gzip.open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ValueError, match="data.gz: corrupt or truncated TFRecord"):
        list(examples_io.read_rows_without_tensorflow(str(tmp_path), "users"))


@pytest.fixture
def registry_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.REGISTRY_ENV_VAR, str(tmp_path / "servers"))
    return tmp_path / "servers"


def test_a_registered_server_is_found_by_its_model_dir(registry_dir, tmp_path):
    model_dir = tmp_path / "serving" / "recommender"
    model_dir.mkdir(parents=True)
    path = registry.register("http://127.0.0.1:1", "recommender", str(model_dir))
    [found] = registry.servers(str(model_dir / ".." / "recommender"))
    assert found == registry.ServerEntry("http://127.0.0.1:1", "recommender",
                                         os.path.realpath(model_dir), os.getpid())
    assert registry.servers(str(tmp_path)) == []
    registry.unregister(path)
    assert registry.servers(str(model_dir)) == [] and os.listdir(registry_dir) == []


def test_a_dead_servers_file_is_removed(registry_dir, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    registry_dir.mkdir()
    entry = {"url": "http://127.0.0.1:1", "model_name": "m",
             "model_dir": str(tmp_path), "pid": int(dead.stdout)}
    (registry_dir / f"{entry['pid']}.json").write_text(json.dumps(entry))
    (registry_dir / "other.json").write_text("not json")
    assert registry.servers(str(tmp_path)) == []
    assert sorted(os.listdir(registry_dir)) == ["other.json"]


def _info(dtype, rank):
    return {"dtype": dtype, "tensor_shape": {"dim": [{"size": "-1"}] * rank}}


def test_an_instance_takes_each_input_from_the_row_or_its_missing_value():
    inputs = {"user_id": _info("DT_STRING", 1), "age": _info("DT_INT64", 1),
              "score": _info("DT_FLOAT", 1), "history": _info("DT_STRING", 2),
              "occupation": _info("DT_STRING", 1)}
    assert client.instance(ROWS[0], inputs) == {
        "user_id": "u1", "age": 31, "score": 0.5, "history": ["i1", "i2", "ü"],
        "occupation": ""}
    missing = client.instance({"user_id": ["u3"]}, inputs)
    assert missing["age"] == MISSING_INT and math.isnan(missing["score"])
    assert missing["history"] == []


def test_a_server_that_does_not_answer_is_unavailable():
    nobody = registry.ServerEntry("http://127.0.0.1:9", "m", "/x", 1)
    with pytest.raises(client.ServerUnavailable, match="127.0.0.1:9"):
        client.recommend(nobody, 1, [ROWS[0]])
