"""Tests of the data layer: native format, MovieLens conversion, synthetic
data, the fast check of a configured dataset, and the generated schemas.

Everything here runs offline in a few seconds, except the one test marked
`network`, which really downloads MovieLens-100K from PyPI.
"""

import collections
import csv
import hashlib
import os
import subprocess
import zipfile

import pytest

from tfx_recsys import dataset_config
from tfx_recsys.data import ingest, movielens, native, schema, synthetic, tables
from tfx_recsys.errors import DataError

SYNTHETIC = dataset_config.load(dataset_config.builtin_path("synthetic"))
MOVIELENS = dataset_config.load(dataset_config.builtin_path("movielens-100k"))

# --------------------------------------------------------------------------
# Helpers


def write_text(path, text):
    """Writes `text` exactly (no newline translation); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def write_valid_dataset(directory):
    return native.write_dataset(
        directory,
        interactions=[("u1", "i1", 4, 1000), ("u1", "i2", 2.5, 1001)],
        users=[("u1", 30, "F", "writer", "01234")],
        items=[("i1", "A, B", 1999, ["Drama", "Comedy"]),
               ("i2", "C", None, [])])


# Recbole atomic files: tab-separated, `name:type` headers. The fixture has
# the real files' quirks: a comma and non-ASCII in titles, the "unkonwn"
# placeholder item, a year swallowed by the title ("V"), the pseudo-genre
# "unknown", a float-typed timestamp, zip codes with a leading zero or
# letters, and items columns in a different order than the native one.
RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3.5\t891717742.0\n"
    "22\t267\t1\t878887116\n"
    "196\t1412\t5\t881251000\n")
RECBOLE_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "196\t49\tM\twriter\t55105\n"
    "186\t39\tF\texecutive\t00000\n"
    "22\t25\tM\twriter\tT8H1N\n")
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\tclass:token_seq\trelease_year:token\n"
    "242\tKolya\tComedy\t1996\n"
    "302\tL.A. Confidential\tCrime Film-Noir Mystery Thriller\t1997\n"
    "543\tMisérables, Les\tDrama Musical\t1995\n"
    "267\tunkonwn\tunknown\tunkonwn\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\t"
    "Animation Children's\tV\n")


@pytest.fixture
def recbole_dir(tmp_path):
    directory = tmp_path / "atomic"
    write_text(directory / movielens.INTER_FILE, RECBOLE_INTER)
    write_text(directory / movielens.USER_FILE, RECBOLE_USER)
    write_text(directory / movielens.ITEM_FILE, RECBOLE_ITEM)
    return str(directory)


# --------------------------------------------------------------------------
# MovieLens conversion


def test_convert_recbole_writes_exact_native_rows(recbole_dir, tmp_path):
    out = tmp_path / "native"
    paths = movielens.convert_recbole_ml100k(recbole_dir, str(out))

    assert tables.validate_dataset(MOVIELENS, str(out)) == {
        table: paths[f"{table}.csv"] for table in tables.TABLES}
    assert read_csv(paths[native.INTERACTIONS_FILE]) == [
        list(native.INTERACTION_COLUMNS),
        ["196", "242", "3", "881250949"],
        ["186", "302", "3.5", "891717742"],
        ["22", "267", "1", "878887116"],
        ["196", "1412", "5", "881251000"],
    ]
    assert read_csv(paths[native.USERS_FILE]) == [
        list(native.USER_COLUMNS),
        ["196", "49", "M", "writer", "55105"],
        ["186", "39", "F", "executive", "00000"],
        ["22", "25", "M", "writer", "T8H1N"],
    ]
    assert read_csv(paths[native.ITEMS_FILE]) == [
        list(native.ITEM_COLUMNS),
        ["242", "Kolya", "1996", "Comedy"],
        ["302", "L.A. Confidential", "1997", "Crime|Film-Noir|Mystery|Thriller"],
        ["543", "Misérables, Les", "1995", "Drama|Musical"],
        ["267", "unkonwn", "", ""],
        ["1412", "Land Before Time III: The Time of the Great Giving", "1995",
         "Animation|Children's"],
    ]


def test_convert_recbole_quotes_commas_and_writes_utf8(recbole_dir, tmp_path):
    paths = movielens.convert_recbole_ml100k(recbole_dir, str(tmp_path / "n"))
    with open(paths[native.ITEMS_FILE], "rb") as f:
        raw = f.read()
    assert '543,"Misérables, Les",1995,Drama|Musical\n'.encode("utf-8") in raw
    assert b"\r" not in raw


def test_convert_recbole_reports_damaged_line(recbole_dir, tmp_path):
    path = os.path.join(recbole_dir, movielens.INTER_FILE)
    write_text(path, RECBOLE_INTER + "196\t242\t3\n")
    with pytest.raises(DataError) as error:
        movielens.convert_recbole_ml100k(recbole_dir, str(tmp_path / "n"))
    assert f"{path}, line 6" in str(error.value)


def test_convert_recbole_rejects_interaction_with_unknown_item(recbole_dir,
                                                               tmp_path):
    write_text(os.path.join(recbole_dir, movielens.INTER_FILE),
               RECBOLE_INTER + "196\t9999\t3\t881250949\n")
    with pytest.raises(DataError, match="'9999' is not in"):
        movielens.convert_recbole_ml100k(recbole_dir, str(tmp_path / "n"))


def test_convert_recbole_rejects_non_integer_timestamp(recbole_dir, tmp_path):
    write_text(os.path.join(recbole_dir, movielens.INTER_FILE),
               RECBOLE_INTER + "196\t242\t3\t88125.5\n")
    with pytest.raises(DataError, match="line 6, column 'timestamp'"):
        movielens.convert_recbole_ml100k(recbole_dir, str(tmp_path / "n"))


# --------------------------------------------------------------------------
# MovieLens fetching (offline: pip is replaced by a fake)


def make_fake_wheel(directory, atomic_dir):
    """A zip laid out like the recbole wheel, holding the fixture files."""
    wheel = os.path.join(directory, "recbole-1.2.1-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in movielens.ATOMIC_FILES:
            archive.write(os.path.join(atomic_dir, name),
                          f"recbole/dataset_example/ml-100k/{name}")
        archive.writestr("recbole/__init__.py", "raise SystemExit\n")
    return wheel


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def fake_pip(monkeypatch, recbole_dir, tmp_path):
    """Makes `pip download` drop the fake wheel into its -d directory."""
    template = make_fake_wheel(str(tmp_path), recbole_dir)
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256", sha256_of(template))
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        dest = command[command.index("-d") + 1]
        with open(template, "rb") as src, open(
                os.path.join(dest, os.path.basename(template)), "wb") as dst:
            dst.write(src.read())
        return subprocess.CompletedProcess(command, 0, "Saved\n", "")

    monkeypatch.setattr(movielens.subprocess, "run", run)
    return calls


def test_fetch_downloads_converts_and_then_uses_the_cache(fake_pip, tmp_path):
    cache = tmp_path / "cache"
    path = movielens.fetch_movielens_100k(cache_dir=str(cache))

    assert path == str(cache / "movielens-100k")
    assert len(fake_pip) == 1
    assert fake_pip[0][1:] == ["-m", "pip", "download", "--no-deps",
                               "--only-binary=:all:", "recbole==1.2.1", "-d",
                               fake_pip[0][-1]]
    assert sorted(os.listdir(path)) == sorted(
        [".complete", *native.TABLES])       # nothing else from the wheel
    assert os.listdir(cache) == ["movielens-100k"]   # no staging left over
    tables.validate_dataset(MOVIELENS, path)

    assert movielens.fetch_movielens_100k(cache_dir=str(cache)) == path
    assert len(fake_pip) == 1                # second call: no download
    movielens.fetch_movielens_100k(cache_dir=str(cache), force=True)
    assert len(fake_pip) == 2


def test_fetch_redoes_an_incomplete_cache(fake_pip, tmp_path):
    target = tmp_path / "movielens-100k"
    write_text(target / native.INTERACTIONS_FILE, "partial")   # no marker
    movielens.fetch_movielens_100k(cache_dir=str(tmp_path))
    assert len(fake_pip) == 1
    assert len(read_csv(target / native.INTERACTIONS_FILE)) == 5


def test_fetch_rejects_a_wheel_with_another_hash(fake_pip, monkeypatch,
                                                  tmp_path):
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256 .* expected 0000"):
        movielens.fetch_movielens_100k(cache_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "movielens-100k")


def test_fetch_explains_a_pip_failure(monkeypatch, tmp_path):
    def run(command, **kwargs):
        stderr = "".join(f"noise {i}\n" for i in range(50)) + (
            "ERROR: Could not find a version that satisfies the requirement\n")
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(movielens.subprocess, "run", run)
    with pytest.raises(movielens.FetchError) as error:
        movielens.fetch_movielens_100k(cache_dir=str(tmp_path))
    message = str(error.value)
    assert "pip download" in message and "PyPI" in message
    assert "Could not find a version" in message
    assert "noise 1\n" not in message        # only the tail of stderr


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert movielens.default_cache_dir() == str(tmp_path / "explicit")
    monkeypatch.delenv("RECSYS_CACHE_DIR")
    assert movielens.default_cache_dir() == str(tmp_path / "xdg" / "tfx-recsys")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert movielens.default_cache_dir() == str(
        tmp_path / "home" / ".cache" / "tfx-recsys")


@pytest.mark.network
def test_fetch_real_movielens_100k(tmp_path):
    path = movielens.fetch_movielens_100k(cache_dir=str(tmp_path))
    tables.validate_dataset(MOVIELENS, path)
    typed = {table: list(ingest.parse_table(MOVIELENS, table, path))
             for table in tables.TABLES}
    # Every row accepted: no rejects, no duplicates (the quality numbers rest on it).
    assert {t: len(rows) for t, rows in typed.items()} == {
        "interactions": 100_000, "users": 943, "items": 1682}
    assert not [r for rows in typed.values() for _, r in rows
                if isinstance(r, ingest.Reject)]
    items = {row["item_id"]: row for _, row in typed["items"]}
    assert items["1"] == {"item_id": "1", "title": "Toy Story",
                          "release_year": 1995.0,
                          "genres": ["Animation", "Children's", "Comedy"]}
    assert items["267"]["release_year"] is None and items["267"]["genres"] == []
    assert items["1412"]["release_year"] == 1995.0


# --------------------------------------------------------------------------
# validate_dataset (a configured dataset)


def with_format(fmt, **paths):
    """The synthetic config with another format and table paths."""
    import dataclasses

    return dataclasses.replace(SYNTHETIC, format=fmt, **{
        table: dataclasses.replace(getattr(SYNTHETIC, table), path=path)
        for table, path in paths.items()})


def test_validate_dataset_accepts_columns_in_any_order_and_extra_ones(tmp_path):
    write_valid_dataset(str(tmp_path))
    write_text(tmp_path / native.USERS_FILE,
               "zip_code,extra,age,user_id,gender,occupation\n01234,x,30,u1,F,w\n")
    assert tables.validate_dataset(SYNTHETIC, str(tmp_path)) == {
        table: str(tmp_path / f"{table}.csv")
        for table in ("interactions", "users", "items")}


def test_validate_dataset_accepts_what_write_dataset_writes(tmp_path):
    paths = write_valid_dataset(str(tmp_path))
    assert tables.validate_dataset(SYNTHETIC, str(tmp_path)) == {
        table: paths[f"{table}.csv"] for table in tables.TABLES}


def test_validate_dataset_missing_directory(tmp_path):
    with pytest.raises(DataError, match="data directory does not exist"):
        tables.validate_dataset(SYNTHETIC, str(tmp_path / "nope"))


def test_validate_dataset_lists_every_missing_file(tmp_path):
    write_valid_dataset(str(tmp_path))
    os.remove(tmp_path / native.USERS_FILE)
    os.remove(tmp_path / native.ITEMS_FILE)
    with pytest.raises(DataError) as error:
        tables.validate_dataset(SYNTHETIC, str(tmp_path))
    assert str(error.value).startswith(
        f"{tmp_path}: missing users.csv (users.path), items.csv (items.path).")


def test_validate_dataset_empty_file(tmp_path):
    write_valid_dataset(str(tmp_path))
    path = write_text(tmp_path / native.ITEMS_FILE, "")
    with pytest.raises(DataError, match=f"{path}: the file is empty"):
        tables.validate_dataset(SYNTHETIC, str(tmp_path))


def test_validate_dataset_misspelled_column_gets_a_suggestion(tmp_path):
    write_valid_dataset(str(tmp_path))
    path = write_text(tmp_path / native.INTERACTIONS_FILE,
                      "user_id,itemid,rating,Timestamp\nu1,i1,4,1000\n")
    with pytest.raises(DataError) as error:
        tables.validate_dataset(SYNTHETIC, str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{path}: no column 'item_id' (did you mean 'itemid'?) "
                              "for interactions.item; no column 'timestamp' (did you "
                              "mean 'Timestamp'?) for interactions.timestamp.")
    assert "The header has: user_id, itemid, rating, Timestamp." in message


def test_validate_dataset_header_without_rows(tmp_path):
    write_valid_dataset(str(tmp_path))
    path = write_text(tmp_path / native.USERS_FILE,
                      "user_id,age,gender,occupation,zip_code\n\n")
    with pytest.raises(DataError, match=f"{path}: the file has no data rows"):
        tables.validate_dataset(SYNTHETIC, str(tmp_path))


def test_validate_dataset_csv_given_as_parquet_or_tfrecord(tmp_path):
    write_valid_dataset(str(tmp_path))
    for fmt in ("parquet", "tfrecord"):
        with pytest.raises(DataError) as error:
            tables.validate_dataset(with_format(fmt), str(tmp_path))
        message = str(error.value)
        assert message.startswith(f"{tmp_path / native.INTERACTIONS_FILE}: not a "
                                  f"readable {fmt} file")
        assert "It looks like a text (CSV) file: set `format: csv`" in message


def test_validate_dataset_parquet_given_as_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_valid_dataset(str(tmp_path))
    pq.write_table(pa.table({"user_id": ["u1"]}), str(tmp_path / "users.parquet"))
    with pytest.raises(DataError) as error:
        tables.validate_dataset(with_format("csv", users="users.parquet"), str(tmp_path))
    assert "users.parquet: not a readable csv file (not CSV text)" in str(error.value)
    assert "It looks like a Parquet file: set `format: parquet`" in str(error.value)


# --------------------------------------------------------------------------
# Generated schemas


@pytest.mark.parametrize("name", ["movielens-100k", "synthetic"])
def test_checked_in_schema_is_what_the_config_generates(name):
    config = dataset_config.load(dataset_config.builtin_path(name))
    with open(os.path.join(os.path.dirname(dataset_config.DATASETS_DIR), "schemas",
                           f"{name}.pbtxt"), encoding="utf-8") as f:
        checked_in = f.read()
    assert checked_in == schema.schema_text(config), (
        f"schemas/{name}.pbtxt is stale; regenerate it: "
        f"recsys schema --dataset {name} > schemas/{name}.pbtxt")
    assert checked_in.startswith(f"# Generated from datasets/{name}.yaml")
    assert f"recsys schema --dataset {name} > schemas/{name}.pbtxt" in checked_in


def test_schema_follows_the_config(tmp_path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    path = str(tmp_path / "s.pbtxt")
    schema.write_schema(SYNTHETIC, path)
    with open(path) as f:
        parsed = text_format.Parse(f.read(), schema_pb2.Schema())
    features = {f.name: f for f in parsed.feature}
    assert list(features) == [c.name for c in SYNTHETIC.interaction_columns()]
    assert features["timestamp"].type == schema_pb2.INT
    assert features["user_id"].presence.min_fraction == 1.0
    assert [d.size for d in features["user_id"].shape.dim] == [1]
    assert features["age"].type == schema_pb2.FLOAT
    assert not features["age"].HasField("shape") and features["age"].value_count.max == 1
    assert not features["genres"].HasField("shape") and features["genres"].value_count.max == 0
    assert features["history"].value_count.max == SYNTHETIC.history_length
    assert not features["seconds_since_previous"].HasField("presence")


# --------------------------------------------------------------------------
# read_table and write_dataset


def test_read_table_yields_rows_with_their_line_numbers(tmp_path):
    write_text(tmp_path / "items.csv",
               "\ufeffitem_id,title,release_year,genres\r\n"
               'i1,"Two\nlines",2001,A|B\r\n'
               "\r\n"
               "i2,,,\r\n")
    stats = tables.ReadStats()
    rows = list(tables.read_table(tables.sources(SYNTHETIC, str(tmp_path))["items"],
                                  stats))
    assert rows == [
        (2, {"item_id": "i1", "title": "Two\nlines", "release_year": "2001",
             "genres": "A|B"}),
        (5, {"item_id": "i2", "title": "", "release_year": "",
             "genres": ""}),
    ]
    # 5 lines: the header, 2 rows, a blank line, the second line of "Two\nlines".
    assert stats == tables.ReadStats(header_lines=1, blank_lines=1,
                                     continuation_lines=1)


def test_write_dataset_accepts_dicts_and_tuples(tmp_path):
    paths = native.write_dataset(
        str(tmp_path / "out"),
        interactions=[{"user_id": "u1", "item_id": "i1", "rating": 5,
                       "timestamp": 7}],
        users=[{"user_id": "u1", "age": 20, "gender": "M",
                "occupation": "other", "zip_code": "00501"}],
        items=[("i1", 'Say "hi", ok', None, ("Sci-Fi", "War"))])
    assert read_csv(paths[native.INTERACTIONS_FILE])[1] == ["u1", "i1", "5", "7"]
    assert read_csv(paths[native.USERS_FILE])[1] == [
        "u1", "20", "M", "other", "00501"]
    assert read_csv(paths[native.ITEMS_FILE])[1] == [
        "i1", 'Say "hi", ok', "", "Sci-Fi|War"]


def test_write_dataset_refuses_separator_in_genre_name(tmp_path):
    with pytest.raises(ValueError, match="separator"):
        native.write_dataset(str(tmp_path), [], [], [("i1", "t", 1, ["A|B"])])


# --------------------------------------------------------------------------
# Synthetic data


def generate(tmp_path, name="data", **kwargs):
    return synthetic.generate_synthetic(str(tmp_path / name), **kwargs)


def load(paths):
    """{file name: rows as dicts of text} of the files the generator wrote."""
    tables_read = {}
    for name in native.TABLES:
        with open(paths[name], encoding="utf-8", newline="") as f:
            tables_read[name] = list(csv.DictReader(f))
    return tables_read


def file_bytes(paths):
    contents = {}
    for name, path in paths.items():
        with open(path, "rb") as f:
            contents[name] = f.read()
    return contents


@pytest.fixture(scope="module")
def synthetic_tables(tmp_path_factory):
    paths = synthetic.generate_synthetic(
        str(tmp_path_factory.mktemp("synthetic")), num_users=300,
        num_items=500, num_interactions=12_000, seed=3)
    tables.validate_dataset(SYNTHETIC, os.path.dirname(paths[native.USERS_FILE]))
    return load(paths)


def test_synthetic_is_deterministic_per_seed(tmp_path):
    first = file_bytes(generate(tmp_path, "a", seed=7))
    assert file_bytes(generate(tmp_path, "b", seed=7)) == first
    other = file_bytes(generate(tmp_path, "c", seed=8))
    assert all(other[name] != first[name] for name in native.TABLES)


def test_synthetic_defaults_are_small(tmp_path):
    tables = load(generate(tmp_path))
    assert len(tables[native.INTERACTIONS_FILE]) == 5000
    assert len(tables[native.USERS_FILE]) == 200
    assert len(tables[native.ITEMS_FILE]) == 300


def test_synthetic_sizes_as_asked(synthetic_tables):
    assert len(synthetic_tables[native.INTERACTIONS_FILE]) == 12_000
    assert len(synthetic_tables[native.USERS_FILE]) == 300
    assert len(synthetic_tables[native.ITEMS_FILE]) == 500


def test_synthetic_has_no_duplicate_pairs(synthetic_tables):
    pairs = [(r["user_id"], r["item_id"])
             for r in synthetic_tables[native.INTERACTIONS_FILE]]
    assert len(set(pairs)) == len(pairs)


def test_synthetic_interactions_reference_known_users_and_items(
        synthetic_tables):
    interactions = synthetic_tables[native.INTERACTIONS_FILE]
    user_ids = [r["user_id"] for r in synthetic_tables[native.USERS_FILE]]
    item_ids = [r["item_id"] for r in synthetic_tables[native.ITEMS_FILE]]
    assert len(set(user_ids)) == len(user_ids)
    assert len(set(item_ids)) == len(item_ids)
    assert {r["user_id"] for r in interactions} <= set(user_ids)
    assert {r["item_id"] for r in interactions} <= set(item_ids)
    # Some items are cold (in the catalogue, never interacted with).
    assert len({r["item_id"] for r in interactions}) < len(item_ids)


def test_synthetic_popularity_is_skewed(synthetic_tables):
    interactions = synthetic_tables[native.INTERACTIONS_FILE]
    counts = collections.Counter(r["item_id"] for r in interactions)
    top_tenth = len(synthetic_tables[native.ITEMS_FILE]) // 10
    share = sum(c for _, c in counts.most_common(top_tenth)) / len(interactions)
    assert share > 0.25


def test_synthetic_every_user_has_the_minimum(tmp_path, synthetic_tables):
    per_user = collections.Counter(
        r["user_id"] for r in synthetic_tables[native.INTERACTIONS_FILE])
    assert len(per_user) == 300 and min(per_user.values()) >= 5
    tight = load(generate(tmp_path, num_users=50, num_items=40,
                          num_interactions=500, min_interactions_per_user=10))
    per_user = collections.Counter(
        r["user_id"] for r in tight[native.INTERACTIONS_FILE])
    assert len(per_user) == 50 and min(per_user.values()) >= 10


def test_synthetic_values_are_well_formed(synthetic_tables):
    users = synthetic_tables[native.USERS_FILE]
    assert all(18 <= int(u["age"]) <= 70 for u in users)
    assert all(len(u["zip_code"]) == 5 for u in users)
    assert {u["gender"] for u in users} <= set(synthetic.GENDERS)
    items = synthetic_tables[native.ITEMS_FILE]
    for item in items:
        genres = item["genres"].split(native.GENRE_SEPARATOR)
        assert 1 <= len(genres) <= 3 and len(set(genres)) == len(genres)
        assert item["title"] == "Item " + item["item_id"][1:]
    interactions = synthetic_tables[native.INTERACTIONS_FILE]
    assert {r["rating"] for r in interactions} <= set("12345")
    timestamps = [int(r["timestamp"]) for r in interactions]
    assert timestamps == sorted(timestamps)
    start = synthetic.DEFAULT_START_TIMESTAMP
    assert start <= timestamps[0] and timestamps[-1] < start + 365 * 86_400


def test_synthetic_users_concentrate_on_a_genre(synthetic_tables):
    """The planted structure: a user's items mostly share a primary genre,
    far more than the 1/num_genres a structureless dataset would give."""
    primary = {i["item_id"]: i["genres"].split(native.GENRE_SEPARATOR)[0]
               for i in synthetic_tables[native.ITEMS_FILE]}
    by_user = collections.defaultdict(collections.Counter)
    for r in synthetic_tables[native.INTERACTIONS_FILE]:
        by_user[r["user_id"]][primary[r["item_id"]]] += 1
    shares = [c.most_common(1)[0][1] / sum(c.values()) for c in by_user.values()]
    assert sum(shares) / len(shares) > 0.5


def test_synthetic_refuses_impossible_sizes(tmp_path):
    with pytest.raises(ValueError, match="below num_users"):
        generate(tmp_path, num_users=100, num_interactions=499)
    with pytest.raises(ValueError, match="exceeds"):
        generate(tmp_path, num_users=2, num_items=10, num_interactions=21,
                 min_interactions_per_user=1, cold_item_fraction=0)
