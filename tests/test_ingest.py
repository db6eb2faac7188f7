"""Ingestion: the format readers, row rules, the report, and the executor.

Readers and rules are tested directly on small files; the executor runs a
few times on the tiny synthetic dataset (CSV, and converted here to Parquet
and TFRecord), good and broken.
"""

import collections
import csv
import dataclasses
import datetime
import gzip
import json
import math
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from google.protobuf import json_format

from tests import conftest
from tfx_recsys import config as pipeline_config
from tfx_recsys import dataset_config as dc
from tfx_recsys import examples_io
from tfx_recsys.components.interactions_example_gen import component as example_gen
from tfx_recsys.data import ingest, tables
from tfx_recsys.errors import DataError

# Executors built here skip TFX's sdist as local_runner's do (beam_staging).
pytestmark = pytest.mark.usefixtures("local_beam_staging")
NOW = 1_700_000_000
SYNTHETIC = dc.load(dc.builtin_path("synthetic"))
NATIVE_FILES = {"interactions": "interactions.csv", "users": "users.csv",
                "items": "items.csv"}
# Value types of the native columns, for the Parquet and TFRecord copies.
INTEGERS = {"timestamp", "age", "release_year"}
FLOATS = {"rating"}


# --------------------------------------------------------------------------
# Helpers


def write_text(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def typed(column, text):
    """A native CSV field as the Parquet/TFRecord copies store it."""
    if text == "":
        return None
    if column in INTEGERS:
        return int(text)
    return float(text) if column in FLOATS else text


def csv_to_parquet(csv_path, parquet_path):
    rows = read_csv(csv_path)
    columns = {c: [typed(c, r[c]) for r in rows] for c in rows[0]}
    pq.write_table(pa.table(columns), parquet_path)


def csv_to_tfrecord(csv_path, tfrecord_path, compress):
    """One tf.Example per row; genres as a list; empty fields left out."""
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    with tf.io.TFRecordWriter(tfrecord_path, options) as writer:
        for row in read_csv(csv_path):
            example = tf.train.Example()
            for column, text in row.items():
                value = typed(column, text)
                if value is None:
                    continue
                feature = example.features.feature[column]
                if column == "genres":
                    feature.bytes_list.value.extend(g.encode() for g in value.split("|"))
                elif isinstance(value, int):
                    feature.int64_list.value.append(value)
                elif isinstance(value, float):
                    feature.float_list.value.append(value)
                else:
                    feature.bytes_list.value.append(value.encode())
            writer.write(example.SerializeToString())


def converted(data_dir, destination, fmt, compress=False):
    """A copy of a native dataset in another format; returns (dir, config)."""
    os.makedirs(destination, exist_ok=True)
    suffix = {"parquet": ".parquet", "tfrecord": ".tfrecord.gz" if compress else ".tfrecord"}[fmt]
    paths = {}
    for table, name in NATIVE_FILES.items():
        paths[table] = name.replace(".csv", suffix)
        target = os.path.join(destination, paths[table])
        if fmt == "parquet":
            csv_to_parquet(os.path.join(data_dir, name), target)
        else:
            csv_to_tfrecord(os.path.join(data_dir, name), target, compress)
    config = dataclasses.replace(
        SYNTHETIC, format=fmt,
        interactions=dataclasses.replace(SYNTHETIC.interactions, path=paths["interactions"]),
        users=dataclasses.replace(SYNTHETIC.users, path=paths["users"]),
        items=dataclasses.replace(SYNTHETIC.items, path=paths["items"]))
    return str(destination), config


def small_dataset(directory, interactions=None, users=None, items=None):
    """A hand-written native dataset; each table's text can be replaced."""
    write_text(os.path.join(directory, "interactions.csv"), interactions or (
        "user_id,item_id,rating,timestamp\n"
        "u1,i1,4,1000\n"
        "u1,i2,2.5,1001\n"))
    write_text(os.path.join(directory, "users.csv"), users or (
        "user_id,age,gender,occupation,zip_code\n"
        "u1,30,F,writer,01234\n"))
    write_text(os.path.join(directory, "items.csv"), items or (
        "item_id,title,release_year,genres\n"
        'i1,"A, B",1999,Drama|Comedy\n'
        "i2,C,,\n"))
    return str(directory)


def parsed(config, table, data_dir):
    return list(ingest.parse_table(config, table, data_dir, now=NOW))


# --------------------------------------------------------------------------
# Readers


def test_csv_columns_in_any_order_renamed_and_extra_ones_ignored(tmp_path):
    data = small_dataset(tmp_path, interactions=(
        "extra,ts,stars,iid,uid\n"
        "x,1000,4,i1,u1\n"
        "y,1001,2.5,i2,u1\n"))
    config = dataclasses.replace(SYNTHETIC, interactions=dc.Interactions(
        path="interactions.csv", user="uid", item="iid", timestamp="ts",
        rating="stars"))
    source = tables.sources(config, data)["interactions"]
    assert list(tables.read_table(source)) == [
        (2, {"user_id": "u1", "item_id": "i1", "timestamp": "1000", "rating": "4"}),
        (3, {"user_id": "u1", "item_id": "i2", "timestamp": "1001", "rating": "2.5"})]
    assert parsed(config, "interactions", data)[1] == (
        3, {"user_id": "u1", "item_id": "i2", "timestamp": 1001, "rating": 2.5})


def test_typed_feature_rows(tmp_path):
    data = small_dataset(tmp_path)
    assert parsed(SYNTHETIC, "items", data) == [
        (2, {"item_id": "i1", "genres": ["Drama", "Comedy"], "title": "A, B",
             "release_year": 1999.0}),
        (3, {"item_id": "i2", "genres": [], "title": "C", "release_year": None})]
    assert parsed(SYNTHETIC, "users", data) == [
        (2, {"user_id": "u1", "age": 30.0, "gender": "F", "occupation": "writer",
             "zip_code": "01234"})]


def test_a_csv_row_with_the_wrong_field_count_is_yielded_as_malformed(tmp_path):
    data = small_dataset(tmp_path, interactions=(
        "user_id,item_id,rating,timestamp\n"
        "u1,i1,4,1000\n"
        '"u1",i2,4,1001,"oops, more"\n'
        "\n"
        "u1,i2,4,1002\n"))
    rows = parsed(SYNTHETIC, "interactions", data)
    assert [number for number, _ in rows] == [2, 3, 5]
    assert rows[1][1] == ingest.Reject(
        "interactions", "interactions.csv", 3, "", ingest.REASON_MALFORMED,
        '"u1",i2,4,1001,"oops, more"')


def test_a_column_feature_is_read_from_its_configured_column(tmp_path):
    data = small_dataset(tmp_path, users="user_id,Sex\nu1,F\n")
    config = dataclasses.replace(SYNTHETIC, users=dc.Table(
        path="users.csv", key="user_id",
        features=(dc.Feature("gender", "categorical", column="Sex"),)))
    assert parsed(config, "users", data) == [(2, {"user_id": "u1", "gender": "F"})]


@pytest.mark.parametrize("fmt, compress", [("parquet", False), ("tfrecord", False),
                                           ("tfrecord", True)])
def test_parquet_and_tfrecord_give_the_same_rows_as_csv(tiny_data, tmp_path, fmt, compress):
    data, config = converted(tiny_data, tmp_path / fmt, fmt, compress)
    for table in tables.TABLES:
        expected = parsed(SYNTHETIC, table, tiny_data)
        got = parsed(config, table, data)
        # Row numbers differ (CSV: line, others: record); the rows do not.
        assert [row for _, row in got] == [row for _, row in expected], table
        assert [n for n, _ in got] == list(range(1, len(expected) + 1))


def test_a_parquet_column_missing_is_named_with_a_suggestion(tmp_path):
    pq.write_table(pa.table({"user_id": ["u1"], "item": ["i1"], "rating": [4.0],
                             "timestamp": [1000]}), str(tmp_path / "i.parquet"))
    config = dataclasses.replace(
        SYNTHETIC, format="parquet",
        interactions=dataclasses.replace(SYNTHETIC.interactions, path="i.parquet"))
    with pytest.raises(DataError) as error:
        parsed(config, "interactions", str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "i.parquet") in message
    assert "no column 'item_id' (did you mean 'item'?) for interactions.item" in message


def test_a_tfrecord_feature_absent_from_every_record_is_named(tiny_data, tmp_path):
    data, config = converted(tiny_data, tmp_path / "tfr", "tfrecord")
    config = dataclasses.replace(config, users=dataclasses.replace(
        config.users, features=config.users.features + (dc.Feature("ages", "numeric"),)))
    with pytest.raises(DataError, match="no column 'ages' \\(did you mean 'age'\\?\\) "
                                        "for users.features.ages. The first 60 records"):
        parsed(config, "users", data)


def test_a_truncated_tfrecord_file_names_the_damaged_record(tiny_data, tmp_path):
    data, config = converted(tiny_data, tmp_path / "tfr", "tfrecord")
    path = os.path.join(data, config.users.path)
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:-10])
    with pytest.raises(DataError, match="record 60 is truncated or corrupt"):
        parsed(config, "users", data)


def test_a_gzipped_csv_is_explained(tmp_path):
    data = small_dataset(tmp_path)
    path = os.path.join(data, "users.csv")
    with open(path, "rb") as f:
        content = f.read()
    with gzip.open(path, "wb") as f:
        f.write(content)
    with pytest.raises(DataError, match="gzip-compressed: decompress it"):
        parsed(SYNTHETIC, "users", data)


def test_a_tfrecord_file_configured_as_csv_is_explained(tiny_data, tmp_path):
    data, config = converted(tiny_data, tmp_path / "tfr", "tfrecord")
    with pytest.raises(DataError, match="not a readable csv file .* It looks like a "
                                        "TFRecord file: set `format: tfrecord`"):
        parsed(dataclasses.replace(config, format="csv"), "users", data)


def test_a_csv_line_that_is_not_utf8_is_rejected_and_the_next_ones_read(tmp_path):
    data = small_dataset(tmp_path)
    with open(os.path.join(data, "users.csv"), "wb") as f:
        f.write(b"user_id,age,gender,occupation,zip_code\nu1,30,F,caf\xe9,1\n"
                b"u2,31,M,writer,2\n")
    (number, bad), (_, good) = parsed(SYNTHETIC, "users", data)
    assert (number, bad.reason, bad.raw) == (2, ingest.REASON_NOT_UTF8,
                                             "u1,30,F,caf\ufffd,1")
    assert good["user_id"] == "u2"


def test_a_header_that_is_not_utf8_names_the_line_and_the_way_out(tmp_path):
    data = small_dataset(tmp_path)
    with open(os.path.join(data, "users.csv"), "wb") as f:
        f.write(b"user_id,\xe2ge,gender,occupation,zip_code\nu1,30,F,w,1\n")
    with pytest.raises(DataError, match=r"users.csv, line 1: the header is not valid "
                                        r"utf-8 text.*`csv: \{encoding: ...\}`"):
        parsed(SYNTHETIC, "users", data)


# --------------------------------------------------------------------------
# Row rules


BAD_INTERACTIONS = [
    ("u1,i1,4,yesterday", "timestamp", ingest.REASON_NOT_INTEGER),
    ("u1,i1,4,1000.5", "timestamp", ingest.REASON_NOT_INTEGER),
    ("u1,i1,4,", "timestamp", ingest.REASON_MISSING),
    ("u1,i1,4,-1", "timestamp", ingest.REASON_TIMESTAMP_RANGE),
    (f"u1,i1,4,{NOW + 2 * 86_400}", "timestamp", ingest.REASON_TIMESTAMP_RANGE),
    (",i1,4,1000", "user_id", ingest.REASON_EMPTY_ID),
    ("u1,  ,4,1000", "item_id", ingest.REASON_EMPTY_ID),
    ("u1,i1,great,1000", "rating", ingest.REASON_NOT_NUMBER),
    ("u1,i1,1_0,1000", "rating", ingest.REASON_NOT_NUMBER),
    ("u1,i1,NaN,1000", "rating", ingest.REASON_MISSING),     # NaN means missing
    ("u1,i1,inf,1000", "rating", ingest.REASON_NOT_FINITE),
    ("u1,i1,1e999,1000", "rating", ingest.REASON_NOT_FINITE),
    ("u1,i1,,1000", "rating", ingest.REASON_MISSING),
]


@pytest.mark.parametrize("line, column, reason", BAD_INTERACTIONS)
def test_bad_interaction_values_are_rejected_with_their_reason(tmp_path, line, column, reason):
    data = small_dataset(tmp_path, interactions=(
        f"user_id,item_id,rating,timestamp\nu1,i1,4,1000\n{line}\n"))
    (_, good), (number, bad) = parsed(SYNTHETIC, "interactions", data)
    assert good["timestamp"] == 1000
    assert (bad.file, bad.row, bad.column, bad.reason) == (
        "interactions.csv", number, column, reason)
    assert number == 3


def test_timestamps_within_a_day_ahead_are_accepted(tmp_path):
    data = small_dataset(tmp_path, interactions=(
        f"user_id,item_id,rating,timestamp\nu1,i1,4,{NOW + 3600}\nu1,i1,4,0\n"))
    assert [r["timestamp"] for _, r in parsed(SYNTHETIC, "interactions", data)] == [
        NOW + 3600, 0]


def test_bad_feature_values_and_duplicate_keys_are_rejected(tmp_path):
    data = small_dataset(tmp_path, users=(
        "user_id,age,gender,occupation,zip_code\n"
        "u1,30,F,writer,01234\n"
        "u2,old,M,writer,1\n"
        "u3,inf,M,writer,1\n"
        "u1,40,M,lawyer,9\n"
        "u4,,,,\n"))
    rows = parsed(SYNTHETIC, "users", data)
    assert [(r.row, r.column, r.reason, r.raw) for _, r in rows
            if isinstance(r, ingest.Reject)] == [
        (3, "age", ingest.REASON_NOT_NUMBER, "old"),
        (4, "age", ingest.REASON_NOT_FINITE, "inf"),
        (5, "user_id", ingest.REASON_DUPLICATE_KEY, "u1 (first on row 2)")]
    assert rows[0][1]["occupation"] == "writer"      # the first u1 wins
    assert rows[4][1] == {"user_id": "u4", "age": None, "gender": "",
                          "occupation": "", "zip_code": ""}


def test_values_from_typed_formats():
    assert ingest.parse_integer(1.6e9) == 1_600_000_000
    assert ingest.parse_integer([7]) == 7
    assert ingest.parse_integer(datetime.datetime(1970, 1, 2)) == 86_400
    assert ingest.parse_number(True) == 1.0 and ingest.parse_number([b"2.5"]) == 2.5
    assert ingest.parse_id(12.0) == "12" and ingest.parse_id([b"u1"]) == "u1"
    assert ingest.parse_bag([b"A|B", b"C"], "|") == ["A", "B", "C"]
    assert ingest.parse_bag(None, "|") == [] and ingest.parse_text(None) == ""
    for parse, raw, reason in [
            (ingest.parse_integer, 1.5, ingest.REASON_NOT_INTEGER),
            (ingest.parse_integer, True, ingest.REASON_NOT_INTEGER),
            (ingest.parse_number, float("inf"), ingest.REASON_NOT_FINITE),
            (ingest.parse_text, ["a", "b"], ingest.REASON_MANY_VALUES),
            (ingest.parse_id, b"\xff", ingest.REASON_NOT_UTF8),
            (ingest.parse_id, float("nan"), ingest.REASON_EMPTY_ID)]:
        with pytest.raises(ingest._Bad) as bad:
            parse(raw)
        assert bad.value.reason == reason, (parse, raw)


def test_join_rejects_unknown_users_and_items():
    users = {"u1": {"user_id": "u1", "age": 30.0}}
    items = {"i1": {"item_id": "i1", "genres": ["A"]}}
    interaction = {"user_id": "u1", "item_id": "i1", "timestamp": 5, "rating": 4.0}
    assert ingest.join(2, interaction, users, items, SYNTHETIC) == {
        **interaction, "age": 30.0, "genres": ["A"]}
    unknown_user = ingest.join(3, dict(interaction, user_id="u9"), users, items, SYNTHETIC)
    assert unknown_user == ingest.Reject(
        "interactions", "interactions.csv", 3, "user_id",
        "unknown user (no accepted row in users.csv)", "u9")
    unknown_item = ingest.join(4, dict(interaction, item_id="i9"), users, items, SYNTHETIC)
    assert unknown_item.reason == "unknown item (no accepted row in items.csv)"


def test_min_rating_filters_below_the_threshold():
    config = dataclasses.replace(SYNTHETIC, interactions=dataclasses.replace(
        SYNTHETIC.interactions, min_rating=4.0))
    assert ingest.below_min_rating({"rating": 3.5}, config)
    assert not ingest.below_min_rating({"rating": 4.0}, config)
    assert not ingest.below_min_rating({"rating": 1.0}, SYNTHETIC)


def _rejects(table, file, count, first_row=2):
    return [ingest.Reject(table, file, first_row + n, "age", ingest.REASON_NOT_NUMBER, "x")
            for n in range(count)]


def test_report_counts_rejects_by_file_and_reason():
    rejects = _rejects("users", "users.csv", 2) + [ingest.Reject(
        "interactions", "interactions.csv", 9, "", ingest.REASON_MALFORMED, "a,b")]
    report = ingest.build_report(
        SYNTHETIC, reversed(rejects),
        {"users": (200, 0), "items": (10, 0), "interactions": (1000, 7)},
        {"train": 800})
    assert report["rejected_rows"] == 3
    assert report["rejected_summary"] == {
        f"interactions.csv: {ingest.REASON_MALFORMED}": 1,
        f"users.csv: {ingest.REASON_NOT_NUMBER}": 2}
    assert report["filtered_below_min_rating"] == 7
    assert report["tables"]["users"]["first_rejected"][0] == [2, "age", "not a number", "x"]
    ingest.check_report(report, SYNTHETIC, "/data", "/out/r.csv")  # 1% is allowed
    assert ingest.rejected_rows_csv(rejects).splitlines() == [
        "file,row,column,reason,raw",
        f"interactions.csv,9,,{ingest.REASON_MALFORMED},\"a,b\"",
        "users.csv,2,age,not a number,x", "users.csv,3,age,not a number,x"]


def test_check_report_fails_over_the_limit_with_the_first_rows():
    report = ingest.build_report(
        SYNTHETIC, _rejects("users", "users.csv", 7),
        {"users": (100, 0), "items": (10, 0), "interactions": (1000, 0)}, {"train": 9})
    with pytest.raises(DataError) as error:
        ingest.check_report(report, SYNTHETIC, "/data", "/out/rejected_rows.csv")
    message = str(error.value)
    assert message.startswith("/data/users.csv: 7 of 100 rows rejected (7.0%), more "
                              "than max_rejected_fraction 0.01 allows.")
    assert "row 2 (column 'age': not a number, 'x'); row 3" in message
    assert "row 7 " not in message        # only the first five
    assert "listed in /out/rejected_rows.csv" in message


def test_check_report_fails_without_training_examples():
    report = ingest.build_report(SYNTHETIC, [], {"interactions": (5, 5)}, {"train": 0})
    with pytest.raises(DataError, match="interactions.csv: no training example left "
                                        r"\(5 rows read, 0 rejected, 5 below min_rating"):
        ingest.check_report(report, SYNTHETIC, "/data", "/out/r.csv")


# --------------------------------------------------------------------------
# The executor


def run_example_gen(data_dir, out_dir, config=SYNTHETIC):
    """Runs the executor as the orchestrator would; returns the artifacts."""
    outputs = conftest.run_example_gen(data_dir, out_dir, config)
    return outputs["examples"], outputs["items"], outputs["users"]


def rows_of(artifact, split):
    return list(examples_io.read_rows(artifact.uri, split))


def assert_no_history_leak(train, evaluation):
    """Every history item is an earlier train interaction of the same user;
    no eval item is in any history (the tiny data has no repeated pairs)."""
    train_times = collections.defaultdict(dict)
    for row in train:
        train_times[row["user_id"][0]][row["item_id"][0]] = row["timestamp"][0]
    eval_items = {(r["user_id"][0], r["item_id"][0]) for r in evaluation}
    for row in train + evaluation:
        user, timestamp = row["user_id"][0], row["timestamp"][0]
        for item in row.get("history", []):
            assert train_times[user][item] < timestamp
            assert (user, item) not in eval_items
        earlier = [t for t in train_times[user].values() if t < timestamp]
        assert len(row.get("history", [])) == min(len(earlier), 50)
        assert row.get("seconds_since_previous") == (
            [timestamp - max(earlier)] if earlier else None)


def test_example_gen_writes_typed_split_examples_with_history(tiny_data, tmp_path):
    examples, items, users = run_example_gen(tiny_data, tmp_path)
    train = rows_of(examples, "train")
    evaluation = rows_of(examples, "eval")
    raw = read_csv(os.path.join(tiny_data, "interactions.csv"))
    assert len(train) + len(evaluation) == len(raw)

    per_user = collections.Counter(r["user_id"] for r in raw)
    eval_per_user = collections.Counter(r["user_id"][0] for r in evaluation)
    assert all(eval_per_user[u] == math.floor(0.2 * n) for u, n in per_user.items())
    assert_no_history_leak(train, evaluation)
    assert sum(bool(r.get("history")) for r in evaluation) == len(evaluation)

    kinds = {}
    for record in tf.data.TFRecordDataset(examples_io.split_files(examples.uri, "train"),
                                          compression_type="GZIP").as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        kinds.update((n, f.WhichOneof("kind")) for n, f in example.features.feature.items())
    assert kinds["timestamp"] == kinds["seconds_since_previous"] == "int64_list"
    assert kinds["rating"] == kinds["age"] == kinds["release_year"] == "float_list"
    assert kinds["user_id"] == kinds["title"] == kinds["genres"] == "bytes_list"
    assert set(kinds) <= {c.name for c in SYNTHETIC.interaction_columns()}

    raw_users = read_csv(os.path.join(tiny_data, "users.csv"))
    user_rows = rows_of(users, "users")
    assert [r["user_id"][0] for r in user_rows] == [u["user_id"] for u in raw_users]
    assert user_rows[0]["age"] == [float(raw_users[0]["age"])]
    assert json.loads(users.split_names) == ["users"]
    item_rows = rows_of(items, pipeline_config.ITEMS_SPLIT)
    assert [r["item_id"][0] for r in item_rows] == [
        i["item_id"] for i in read_csv(os.path.join(tiny_data, "items.csv"))]

    assert examples.get_int_custom_property("rejected_rows") == 0
    assert examples.get_string_custom_property("rejected_summary") == "{}"
    assert examples.get_int_custom_property("filtered_below_min_rating") == 0
    with open(os.path.join(examples.uri, "rejected_rows.csv")) as f:
        assert f.read() == "file,row,column,reason,raw\n"

    again, _, _ = run_example_gen(tiny_data, tmp_path / "again")
    assert rows_of(again, "train") == train and rows_of(again, "eval") == evaluation


def broken_copy(data_dir, destination):
    """tiny_data with one bad row of each kind appended to its tables.

    Returns (directory, {(file, row): (column, reason)} of the bad rows).
    """
    shutil.copytree(data_dir, destination)
    bad = {
        "users.csv": [("u1,99,F,writer,00000", "user_id", ingest.REASON_DUPLICATE_KEY),
                      ("u999,old,F,writer,00000", "age", ingest.REASON_NOT_NUMBER)],
        "items.csv": [("i999,Title,1999", "", ingest.REASON_MALFORMED)],
        "interactions.csv": [
            ("u1,i1,5,not-a-time", "timestamp", ingest.REASON_NOT_INTEGER),
            ("u1,i1,5,-7", "timestamp", ingest.REASON_TIMESTAMP_RANGE),
            ("u1,i1,nan,1600000000", "rating", ingest.REASON_MISSING),
            (",i1,5,1600000000", "user_id", ingest.REASON_EMPTY_ID),
            ("ghost,i1,5,1600000000", "user_id",
             "unknown user (no accepted row in users.csv)"),
            ("u999,i1,5,1600000000", "user_id",       # its users row was rejected
             "unknown user (no accepted row in users.csv)"),
            ("u1,i999,5,1600000000", "item_id",
             "unknown item (no accepted row in items.csv)")],
    }
    expected = {}
    for name, rows in bad.items():
        path = os.path.join(destination, name)
        with open(path) as f:
            line = len(f.read().splitlines())
        with open(path, "a") as f:
            for text, column, reason in rows:
                f.write(text + "\n")
                line += 1
                expected[(name, line)] = (column, reason)
    return str(destination), expected


def test_example_gen_skips_counts_and_lists_bad_rows(tiny_data, tmp_path):
    data, expected = broken_copy(tiny_data, tmp_path / "data")
    config = dataclasses.replace(
        SYNTHETIC, max_rejected_fraction=0.05,
        interactions=dataclasses.replace(SYNTHETIC.interactions, min_rating=2.0))
    examples, items, users = run_example_gen(data, tmp_path / "out", config)

    listed = read_csv(os.path.join(examples.uri, "rejected_rows.csv"))
    assert {(r["file"], int(r["row"])): (r["column"], r["reason"]) for r in listed} == expected
    assert [r["file"] for r in listed][:7] == ["interactions.csv"] * 7   # table order
    assert examples.get_int_custom_property("rejected_rows") == len(expected)
    summary = json.loads(examples.get_string_custom_property("rejected_summary"))
    assert summary["interactions.csv: unknown user (no accepted row in users.csv)"] == 2
    assert summary["users.csv: duplicate key"] == 1
    assert sum(summary.values()) == len(expected)

    raw = read_csv(os.path.join(tiny_data, "interactions.csv"))
    below = sum(float(r["rating"]) < 2.0 for r in raw)
    assert below > 0
    assert examples.get_int_custom_property("filtered_below_min_rating") == below
    written = rows_of(examples, "train") + rows_of(examples, "eval")
    assert len(written) == len(raw) - below
    assert min(r["rating"][0] for r in written) >= 2.0
    assert len(rows_of(users, "users")) == 60 and len(rows_of(items, "items")) == 80


def test_example_gen_fails_when_too_many_rows_are_rejected(tiny_data, tmp_path):
    data, _ = broken_copy(tiny_data, tmp_path / "data")
    with pytest.raises(DataError) as error:
        run_example_gen(data, tmp_path / "out")      # max_rejected_fraction 0.01
    message = str(error.value)
    rejected_path = tmp_path / "out" / "examples" / "rejected_rows.csv"
    assert message.startswith(f"{data}/users.csv: 2 of 62 rows rejected (3.2%)")
    assert "First rejected: row 62 (column 'user_id': duplicate key, 'u1 (first on row 2)')" \
        in message
    assert f"{data}/items.csv: 1 of 81 rows rejected" in message
    assert f"listed in {rejected_path}" in message
    assert os.path.exists(rejected_path)


def test_example_gen_reports_a_structural_problem_before_reading(tiny_data, tmp_path):
    config = dataclasses.replace(SYNTHETIC, interactions=dataclasses.replace(
        SYNTHETIC.interactions, timestamp="time_stamp"))
    with pytest.raises(DataError, match="no column 'time_stamp' \\(did you mean "
                                        "'timestamp'\\?\\) for interactions.timestamp"):
        run_example_gen(tiny_data, tmp_path, config)


def test_example_gen_reads_parquet_with_a_global_time_split(tiny_data, tmp_path):
    data, config = converted(tiny_data, tmp_path / "data", "parquet")
    config = dataclasses.replace(config, split=dc.Split("global_time", 0.25),
                                 history_length=3)
    examples, _, users = run_example_gen(data, tmp_path / "out", config)
    train, evaluation = rows_of(examples, "train"), rows_of(examples, "eval")
    timestamps = sorted(int(r["timestamp"]) for r in
                        read_csv(os.path.join(tiny_data, "interactions.csv")))
    cut = timestamps[len(timestamps) - math.floor(0.25 * len(timestamps))]
    assert max(r["timestamp"][0] for r in train) < cut <= min(
        r["timestamp"][0] for r in evaluation)
    assert len(train) + len(evaluation) == len(timestamps)
    assert max(len(r.get("history", [])) for r in train + evaluation) == 3
    assert len(rows_of(users, "users")) == 60


def test_example_gen_reads_gzipped_tfrecords_with_leave_last_out(tiny_data, tmp_path):
    data, config = converted(tiny_data, tmp_path / "data", "tfrecord", compress=True)
    config = dataclasses.replace(config, split=dc.Split("leave_last_out"))
    examples, items, _ = run_example_gen(data, tmp_path / "out", config)
    evaluation = rows_of(examples, "eval")
    assert len(evaluation) == 60 and len({r["user_id"][0] for r in evaluation}) == 60
    assert len(rows_of(items, "items")) == 80
    assert_no_history_leak(rows_of(examples, "train"), evaluation)


def test_component_checks_the_config_and_fingerprints_the_configured_files(tiny_data):
    from tfx.components.example_gen import utils
    from tfx.proto import example_gen_pb2

    component = example_gen.InteractionsExampleGen(input_base=tiny_data,
                                                   dataset=SYNTHETIC.to_json())
    assert dc.DatasetConfig.from_json(component.exec_properties["dataset"]) == SYNTHETIC
    splits = json_format.Parse(component.exec_properties["input_config"],
                               example_gen_pb2.Input()).splits
    assert [(s.name, s.pattern) for s in splits] == [
        ("interactions", "interactions.csv"), ("users", "users.csv"), ("items", "items.csv")]
    fingerprint, _, _ = utils.calculate_splits_fingerprint_span_and_version(
        tiny_data, splits)
    assert fingerprint.count("num_files:1,") == 3      # what the driver caches on
    assert set(component.outputs) == {"examples", "items", "users", "refit_examples"}
    with pytest.raises(dc.ConfigError):
        example_gen.InteractionsExampleGen(input_base="/data", dataset='{"name": "x"}')


def test_grouped_interactions_are_packed_small_and_unpacked_whole():
    from tfx_recsys.components.interactions_example_gen import executor

    rated = {"user_id": "u1", "item_id": "i7", "timestamp": 1600000000, "rating": 4.0}
    unrated = {"user_id": "u1", "item_id": "i7", "timestamp": 1600000000}
    for row in (rated, unrated):
        packed = executor._pack((12, row))
        assert executor._unpack("u1", packed) == (12, row)
        assert len(packed) < 60  # the user id travels once, as the group's key
    with pytest.raises(ValueError, match=r"\['source'\] would be lost"):
        executor._pack((1, {**rated, "source": "web"}))


def test_example_gen_accounts_for_every_row_and_removes_exact_duplicates(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    raw = read_csv(os.path.join(tiny_data, "interactions.csv"))
    first_user = [r for r in raw if r["user_id"] == "u1"]
    with open(data / "interactions.csv", "a") as f:     # u1's rows again, ids padded
        for r in first_user:
            f.write(f" {r['user_id']} ,{r['item_id']},{r['rating']},{r['timestamp']}\n")
    with open(data / "users.csv", "a") as f:             # NaN age: missing, user kept
        f.write("u900,NaN,F,writer,00000\n")
    examples, _, users = run_example_gen(data, tmp_path / "out")
    written = rows_of(examples, "train") + rows_of(examples, "eval")
    assert len(written) == len(raw)                      # the copies are gone
    assert examples.get_int_custom_property("duplicates_removed") == len(first_user)
    assert examples.get_int_custom_property("rejected_rows") == 0
    accounting = json.loads(examples.get_string_custom_property("row_accounting"))
    assert accounting["interactions"] == {
        "file": "interactions.csv", "rows": len(raw) + len(first_user),
        "accepted": len(raw), "rejected": 0, "duplicates": len(first_user), "filtered": 0}
    assert accounting["users"]["rows"] == accounting["users"]["accepted"] == 61
    assert "age" not in {k for r in rows_of(users, "users") if r["user_id"] == [b"u900"]
                         for k in r}
    listed = read_csv(os.path.join(examples.uri, "rejected_rows.csv"))
    assert {r["reason"] for r in listed} == {ingest.REASON_DUPLICATE}

    keep = dataclasses.replace(SYNTHETIC, interactions=dataclasses.replace(
        SYNTHETIC.interactions, keep_duplicates=True))
    kept, _, _ = run_example_gen(data, tmp_path / "kept", keep)
    assert len(rows_of(kept, "train") + rows_of(kept, "eval")) == len(raw) + len(first_user)


def test_example_gen_fails_when_a_quote_swallows_rows_and_lists_them(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    path = data / "items.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[10] = lines[10].replace(",", ',"', 1)          # i10,"Item 10,... never closed
    path.write_text("".join(lines))
    with pytest.raises(DataError) as error:
        run_example_gen(data, tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{data}/items.csv: 71 of 80 rows rejected (88.8%)")
    assert "row 11 (unbalanced quote" in message and "row 12 (inside a quoted value" in message
    listed = read_csv(tmp_path / "out" / "examples" / "rejected_rows.csv")
    assert [int(r["row"]) for r in listed if r["file"] == "items.csv"] == list(range(11, 82))
