"""The dataset config parser: checked-in configs, errors, round trips, columns."""

import copy
import dataclasses
import errno
import os

import pytest

from tfx_recsys import dataset_config as dc


def minimal():
    """The smallest valid config, as plain data."""
    return {
        "name": "tiny", "format": "csv",
        "interactions": {"path": "i.csv", "user": "u", "item": "i",
                         "timestamp": "t"},
        "users": {"path": "u.csv", "key": "u"},
        "items": {"path": "it.csv", "key": "i",
                  "features": {"genres": {"kind": "multi_categorical"}}},
    }


def with_change(path, value):
    """minimal() with the value at `path` (a dotted key) set."""
    raw = copy.deepcopy(minimal())
    *parents, last = path.split(".")
    target = raw
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return raw


@pytest.mark.parametrize("name", ["movielens-100k", "synthetic"])
def test_checked_in_configs_load(name):
    config = dc.load(dc.builtin_path(name))
    assert config.name == name and config.format == "csv"
    assert config.interactions.rating == "rating"
    assert config.users.feature("zip_code").hash_buckets == 1000
    assert config.items.feature("genres").kind == "multi_categorical"
    assert config.split == dc.Split() and config.history_length == 50


def test_defaults_of_a_minimal_config():
    config = dc.from_dict(minimal())
    assert config.split.kind == "per_user_temporal"
    assert config.split.eval_fraction == 0.2
    assert config.history_length == 50
    assert config.max_rejected_fraction == 0.01
    assert config.interactions.rating is None
    assert config.items.feature("genres").separator == "|"


def test_round_trip_through_json_keeps_every_field():
    raw = with_change("users.features", {
        "age": {"kind": "numeric", "buckets": 4},
        "home": {"kind": "categorical", "hash_buckets": 50, "column": "zip"},
        "signup": "timestamp"})
    raw["interactions"].update(rating="r", min_rating=3.5)
    raw["split"] = {"kind": "global_time", "cut_timestamp": 1000, "seed": 7,
                    "eval_fraction": 0.1}
    raw["history"] = {"length": 0}
    raw["max_rejected_fraction"] = 0.5
    config = dc.from_dict(raw)
    assert dc.DatasetConfig.from_json(config.to_json()) == config
    assert dc.from_dict(config.to_dict()) == config
    assert config.users.feature("home").source_column == "zip"
    assert config.users.feature("age").source_column == "age"


def test_shorthand_feature_kind():
    config = dc.from_dict(with_change("users.features", {"gender": "categorical"}))
    assert config.users.feature("gender") == dc.Feature("gender", "categorical")


def test_unknown_option_names_it_and_suggests_the_close_one():
    with pytest.raises(dc.ConfigError) as error:
        dc.from_dict(with_change("interactions.timestmp", "t"), source="d.yaml")
    message = str(error.value)
    assert message.startswith("d.yaml: interactions.timestmp: unknown option")
    assert "did you mean 'timestamp'?" in message


def test_unknown_top_level_option():
    raw = minimal()
    raw["histroy"] = {"length": 3}
    with pytest.raises(dc.ConfigError, match="histroy: unknown option.*'history'"):
        dc.from_dict(raw)


@pytest.mark.parametrize("path, value, expected", [
    ("items.features.genres.kind", "multi_categorial",
     "'multi_categorial' is not one of .*did you mean 'multi_categorical'"),
    ("format", "parket", "format: 'parket' is not one of csv, parquet, tfrecord "
     r"\(did you mean 'parquet'\?\)"),
    ("split.kind", "leave_one_out", "split.kind: 'leave_one_out' is not one of"),
])
def test_bad_kind_or_format(path, value, expected):
    with pytest.raises(dc.ConfigError, match=expected):
        dc.from_dict(with_change(path, value))


@pytest.mark.parametrize("name", dc.RESERVED_NAMES)
def test_reserved_feature_names_are_refused_with_the_way_out(name):
    with pytest.raises(dc.ConfigError) as error:
        dc.from_dict(with_change("users.features", {name: "categorical"}))
    message = str(error.value)
    assert f"users.features.{name}: the name is reserved" in message
    assert f"`column: {name}`" in message


def test_a_reserved_column_can_be_read_under_another_name():
    config = dc.from_dict(with_change(
        "users.features", {"user_rating": {"kind": "numeric", "column": "rating"}}))
    assert config.users.feature("user_rating").source_column == "rating"


def test_a_feature_in_both_tables_is_refused():
    raw = with_change("users.features", {"genres": "categorical"})
    with pytest.raises(dc.ConfigError, match="'genres' appears in both users and items"):
        dc.from_dict(raw)


@pytest.mark.parametrize("path, value, expected", [
    ("interactions.min_rating", 4, "min_rating needs interactions.rating"),
    ("split.eval_fraction", 1.0, "eval_fraction must be between 0 and 1"),
    ("split.cut_timestamp", 5, "cut_timestamp applies only to kind global_time"),
    ("history.length", -1, "history.length: must be at least 0"),
    ("history.length", True, "history.length: expected an integer"),
    ("max_rejected_fraction", 2, "must be between 0.0 and 1.0"),
    ("users.path", 3, "users.path: expected text"),
    ("items.features.genres.buckets", "ten", "expected an integer"),
    ("users", "u.csv", "users must be a mapping"),
])
def test_bad_values_name_the_field(path, value, expected):
    with pytest.raises(dc.ConfigError, match=expected):
        dc.from_dict(with_change(path, value))


def test_missing_required_field():
    raw = minimal()
    del raw["interactions"]["item"]
    with pytest.raises(dc.ConfigError, match="interactions.item: missing; it is required"):
        dc.from_dict(raw)


def test_load_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(dc.ConfigError, match="no such dataset config file"):
        dc.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(dc.ConfigError, match=f"{bad}: not valid YAML"):
        dc.load(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(dc.ConfigError, match="must be a mapping"):
        dc.load(str(empty))


def test_example_columns_follow_the_config():
    config = dc.load(dc.builtin_path("movielens-100k"))
    columns = {c.name: c for c in config.interaction_columns()}
    assert list(columns) == ["user_id", "item_id", "timestamp", "rating", "age",
                             "gender", "occupation", "zip_code", "genres",
                             "title", "release_year", "history",
                             "seconds_since_previous"]
    assert columns["timestamp"] == dc.ExampleColumn("timestamp", "int64", True)
    assert columns["age"] == dc.ExampleColumn("age", "float", False)
    assert columns["title"].required and columns["gender"].dtype == "bytes"
    assert columns["genres"].multivalued and columns["genres"].max_values is None
    assert columns["history"] == dc.ExampleColumn("history", "bytes", False, 50)
    assert [c.name for c in config.user_columns()] == [
        "user_id", "age", "gender", "occupation", "zip_code"]
    assert [c.name for c in config.item_columns()] == [
        "item_id", "genres", "title", "release_year"]

    bare = dataclasses.replace(dc.from_dict(minimal()), history_length=0)
    names = [c.name for c in bare.interaction_columns()]
    assert "rating" not in names and "history" not in names
    assert "seconds_since_previous" in names


# --------------------------------------------------------------------------
# A config stays in its folder; its YAML says each thing once


@pytest.mark.parametrize("path, problem", [
    ("/etc/shadow", "is absolute"),
    ("../../../../etc/passwd", "leads out with '..'"),
    ("data/../../x.csv", "leads out with '..'"),
    ("", "names no file"),
])
def test_table_paths_must_stay_in_the_data_directory(path, problem):
    with pytest.raises(dc.ConfigError) as error:
        dc.from_dict(with_change("users.path", path), source="d.yaml")
    message = str(error.value)
    assert message.startswith(f"d.yaml: users.path: {path!r} {problem}; table paths "
                              "are relative to the data directory")
    assert "`allow_paths_outside_data: true`" in message


def test_allow_paths_outside_data_lets_them_through_and_round_trips():
    raw = with_change("users.path", "/mnt/shared/users.csv")
    raw["allow_paths_outside_data"] = True
    config = dc.from_dict(raw)
    assert config.users.path == "/mnt/shared/users.csv"
    assert dc.DatasetConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 101, "tab\tname"])
def test_the_name_is_an_identifier(name):
    with pytest.raises(dc.ConfigError, match="name: .* is not a dataset name: it names "
                                             "the schema file"):
        dc.from_dict(with_change("name", name))


def test_csv_options_and_keep_duplicates_round_trip_and_default_away():
    raw = with_change("csv", {"delimiter": ";", "encoding": "cp1252"})
    raw["interactions"]["keep_duplicates"] = True
    config = dc.from_dict(raw)
    assert config.csv == dc.Csv(";", "cp1252") and config.interactions.keep_duplicates
    assert dc.from_dict(config.to_dict()) == config
    # Options left at their defaults are not written: the JSON (ExampleGen's
    # cache key) of an existing config does not change.
    plain = dc.from_dict(minimal()).to_dict()
    assert "csv" not in plain and "keep_duplicates" not in plain["interactions"]
    assert "allow_paths_outside_data" not in plain


@pytest.mark.parametrize("options, expected", [
    ({"delimiter": ";;"}, "csv.delimiter: ';;' must be one character"),
    ({"delimiter": '"'}, "must be one character, not a quote"),
    ({"encoding": "klingon"}, "csv.encoding: 'klingon' is not a known text encoding"),
    ({"encoding": "utf-16"}, "UTF-16 and UTF-32 are not supported"),
    ({"quote": "'"}, "csv.quote: unknown option"),
])
def test_bad_csv_options(options, expected):
    with pytest.raises(dc.ConfigError, match=expected):
        dc.from_dict(with_change("csv", options))


def test_csv_options_with_another_format_are_refused():
    raw = with_change("csv", {"delimiter": ";"})
    raw["format"] = "parquet"
    with pytest.raises(dc.ConfigError, match="csv: applies only to `format: csv`"):
        dc.from_dict(raw)


def test_keep_duplicates_must_be_true_or_false():
    with pytest.raises(dc.ConfigError, match="keep_duplicates: expected true or false"):
        dc.from_dict(with_change("interactions.keep_duplicates", "yes please"))


def test_a_duplicate_yaml_key_is_one_line_naming_the_key_and_both_lines(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: tiny\nformat: csv\ninteractions:\n  path: i.csv\n  user: u\n"
                    "  item: i\n  timestamp: t\n  user: v\n")
    with pytest.raises(dc.ConfigError) as error:
        dc.load(str(path))
    assert str(error.value) == (f"{path}, line 8: duplicate key 'user' (first on "
                                "line 5); give each key once.")


def test_unreadable_config_files_are_one_line(tmp_path, monkeypatch):
    loop = tmp_path / "loop.yaml"
    os.symlink(loop, loop)
    with pytest.raises(dc.ConfigError, match=f"{loop}: a symlink loop"):
        dc.load(str(loop))
    with pytest.raises(dc.ConfigError, match=f"{tmp_path}: is a directory"):
        dc.load(str(tmp_path))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\n")
    with pytest.raises(dc.ConfigError, match="line 2: not UTF-8 text"):
        dc.load(str(binary))

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(dc, "open", denied, raising=False)
    with pytest.raises(dc.ConfigError, match=f"{binary}: permission denied."):
        dc.load(str(binary))


def test_yaml_errors_do_not_quote_the_file(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("root:x:0:0:TOPSECRET: [unclosed\n")
    with pytest.raises(dc.ConfigError) as error:
        dc.load(str(secret))
    assert "TOPSECRET" not in str(error.value)
    assert "not valid YAML" in str(error.value) and "at line 2, column 1" in str(error.value)
