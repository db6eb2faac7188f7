"""Spans: which files a run reads (data/spans.py), the replay writer
(native.write_spans), and what ExampleGen reads and records with them."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import conftest
from tfx_recsys import config, dataset_config, examples_io
from tfx_recsys.components.interactions_example_gen import component as example_gen
from tfx_recsys.components.interactions_example_gen import driver as example_gen_driver
from tfx_recsys.data import native, spans
from tfx_recsys.dataset_config import ConfigError
from tfx_recsys.errors import DataError



def _span_config(window=1, users_path="users.csv", items_path="items.csv"):
    base = dataset_config.load(dataset_config.builtin_path("synthetic"))
    raw = base.to_dict()
    raw["interactions"]["path"] = native.SPAN_INTERACTIONS_PATH
    raw["users"]["path"], raw["items"]["path"] = users_path, items_path
    if window != 1:
        raw["window"] = window
    return dataset_config.from_dict(raw)


def _touch(directory, *paths):
    for path in paths:
        full = os.path.join(directory, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write("x\n")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- resolution ----------------------------------------------------------

def test_select_reads_the_latest_span_or_the_one_asked_for_and_its_window(tmp_path):
    _touch(tmp_path, "spans/1/interactions.csv", "spans/2/interactions.csv",
           "spans/4/interactions.csv", "spans/10/interactions.csv", "users.csv",
           "items.csv", "spans/x/interactions.csv")
    latest = spans.select(_span_config(window=3), tmp_path)
    # Spans 8-10 are the window; 8 and 9 do not exist; 10 sorts after 4.
    assert (latest.span, latest.spans) == (10, (10,))
    assert latest.files["interactions"] == ((10, "spans/10/interactions.csv"),)
    assert latest.files["users"] == ((None, "users.csv"),)
    asked = spans.select(_span_config(window=3), tmp_path, span=4)
    assert (asked.span, asked.spans) == (4, (2, 4))
    assert [c.interactions.path for _, c in asked.configs(_span_config())] == [
        "spans/2/interactions.csv", "spans/4/interactions.csv"]
    with pytest.raises(DataError, match=r"--span 3: no file spans/3/interactions.csv .*"
                                        r"spans found: 1-2, 4, 10\."):
        spans.select(_span_config(), tmp_path, span=3)


def test_a_per_span_table_is_the_latest_at_or_before_the_target(tmp_path):
    _touch(tmp_path, "spans/1/interactions.csv", "spans/2/interactions.csv",
           "spans/3/interactions.csv", "spans/1/items.csv", "spans/3/items.csv",
           "users.csv")
    config = _span_config(items_path="spans/{SPAN}/items.csv")
    assert spans.select(config, tmp_path).files["items"] == ((3, "spans/3/items.csv"),)
    assert spans.select(config, tmp_path, 2).files["items"] == ((1, "spans/1/items.csv"),)
    os.remove(tmp_path / "spans/1/items.csv")
    with pytest.raises(DataError, match="no items table for span 2"):
        spans.select(config, tmp_path, 2)


def test_a_config_without_spans_reads_its_files_and_refuses_a_span(tmp_path):
    config = dataset_config.load(dataset_config.builtin_path("synthetic"))
    selection = spans.select(config, tmp_path)
    assert (selection.span, selection.spans) == (0, (0,))
    assert selection.configs(config) == ((0, config),)
    with pytest.raises(DataError, match="has no spans"):
        spans.select(config, tmp_path, 3)


@pytest.mark.parametrize("change, words", [
    ({"window": 2}, "window: 2 needs spans"),
    ({"users": "spans/{SPAN}/users.csv"}, "users.path has {SPAN} but interactions"),
    ({"interactions": "spans/{SPAN}/{SPAN}.csv"}, "only pattern a table path may hold"),
    ({"interactions": "spans/{VERSION}/x.csv"}, "only pattern a table path may hold"),
])
def test_config_errors_about_spans_name_the_field(change, words):
    raw = dataset_config.load(dataset_config.builtin_path("synthetic")).to_dict()
    for key, value in change.items():
        if key == "window":
            raw["window"] = value
        else:
            raw[key]["path"] = value
    with pytest.raises(ConfigError, match=words.replace("{", r"\{").replace("}", r"\}")):
        dataset_config.from_dict(raw, source="x.yaml")


def test_a_window_round_trips_through_the_config_json():
    config = _span_config(window=3)
    assert dataset_config.DatasetConfig.from_json(config.to_json()) == config
    assert "window" not in dataset_config.load(
        dataset_config.builtin_path("synthetic")).to_dict()


# ---- the replay writer ---------------------------------------------------

def test_write_spans_cuts_by_global_time_into_equal_parts(tiny_data, tmp_path):
    ends = native.write_spans(tiny_data, tmp_path, 4)
    source = _rows(os.path.join(tiny_data, "interactions.csv"))
    parts = [_rows(tmp_path / f"spans/{k}/interactions.csv") for k in range(1, 5)]
    assert sum(len(p) for p in parts) == len(source)
    assert all(abs(len(p) - len(source) / 4) <= 3 for p in parts)
    for earlier, later in zip(parts, parts[1:]):
        assert max(int(r["timestamp"]) for r in earlier) <= min(
            int(r["timestamp"]) for r in later)
    assert ends == [max(int(r["timestamp"]) for r in p) for p in parts]
    assert _rows(tmp_path / "items.csv") == _rows(os.path.join(tiny_data, "items.csv"))


# ---- ExampleGen ----------------------------------------------------------

@pytest.fixture(scope="module")
def span_data(tiny_data, tmp_path_factory):
    """The tiny dataset as 4 spans."""
    directory = tmp_path_factory.mktemp("span_data")
    native.write_spans(tiny_data, directory, 4)
    return directory


def _run(data_dir, out_dir, dataset, range_config=None):
    return conftest.run_example_gen(data_dir, out_dir, dataset, range_config)


@pytest.mark.usefixtures("local_beam_staging")
def test_example_gen_reads_the_window_and_records_its_spans(span_data, tmp_path):
    outputs = _run(span_data, tmp_path, _span_config(window=2))
    examples = outputs["examples"]
    rows = (list(examples_io.read_rows(examples.uri, config.TRAIN_SPLIT))
            + list(examples_io.read_rows(examples.uri, config.EVAL_SPLIT)))
    window = (_rows(span_data / "spans/3/interactions.csv")
              + _rows(span_data / "spans/4/interactions.csv"))
    assert len(rows) == len(window)
    assert sorted(examples_io.scalar(r, "timestamp") for r in rows) == sorted(
        int(r["timestamp"]) for r in window)
    for artifact in outputs.values():
        assert artifact.get_int_custom_property("span") == 4
        assert artifact.get_string_custom_property("spans") == "3,4"
    accounting = json.loads(examples.get_string_custom_property("row_accounting"))
    assert accounting["interactions"]["rows"] == len(window)
    assert accounting["interactions"]["file"] == (
        "spans/3/interactions.csv, spans/4/interactions.csv")


@pytest.mark.usefixtures("local_beam_staging")
def test_example_gen_reads_the_span_asked_for_and_names_a_bad_rows_file(
        span_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(span_data, data)
    with open(data / "spans/2/interactions.csv", "a") as f:
        f.write("u1,not-an-item,5,1\n")
    outputs = _run(data, tmp_path / "out", _span_config(window=2),
                   example_gen.span_range(2))
    assert outputs["examples"].get_string_custom_property("spans") == "1,2"
    with open(os.path.join(outputs["examples"].uri, "rejected_rows.csv")) as f:
        rejected = list(csv.DictReader(f))
    assert [(r["file"], r["reason"]) for r in rejected] == [
        ("spans/2/interactions.csv", "unknown item (no accepted row in items.csv)")]


def test_the_driver_fingerprints_the_files_read_and_a_new_span_changes_it(
        span_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(span_data, data)
    shutil.rmtree(data / "spans/3")
    shutil.move(data / "spans/4", tmp_path / "span4")
    dataset = _span_config(window=2)

    def resolve():
        component = example_gen.InteractionsExampleGen(input_base=str(data),
                                                       dataset=dataset.to_json())
        properties = conftest.exec_properties(component)
        driver = example_gen_driver.SpanWindowDriver.__new__(
            example_gen_driver.SpanWindowDriver)
        return driver.resolve_exec_properties(properties, None, None)

    first = resolve()
    assert first["span"] == 2 and first["version"] is None
    assert "split:interactions-1," in first["input_fingerprint"]
    assert resolve()["input_fingerprint"] == first["input_fingerprint"]
    shutil.move(tmp_path / "span4", data / "spans/4")
    second = resolve()
    assert second["span"] == 4
    assert "split:interactions-1," not in second["input_fingerprint"]
    assert second["input_fingerprint"] != first["input_fingerprint"]


def test_run_for_a_missing_span_fails_in_one_line_before_tensorflow(span_data, tmp_path):
    dataset = tmp_path / "spans.yaml"
    with open(dataset, "w") as f:
        f.write(json.dumps(_span_config(window=2).to_dict()))  # JSON is YAML
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    proc = subprocess.run([recsys, "run", "--data", str(span_data), "--dataset",
                           str(dataset), "--root", str(tmp_path / "root"), "--span", "9"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--span 9: no file spans/9/interactions.csv" in lines[0]
    assert "spans found: 1-4" in lines[0]
