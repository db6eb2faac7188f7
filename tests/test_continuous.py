"""Continuous training end to end on tiny data in spans: a cold run on span
2, a warm-started run on span 3, a refresh on span 4 that brings a new item
and new interactions, and a refresh killed half-way.

One shared root (module fixture): each step builds on the one before, as a
team's daily runs do."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfx_recsys import config, dataset_config, lineage, run_summary
from tfx_recsys.components.scann_pusher import publishing
from tfx_recsys.data import native

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_beam_staging")]

NEW_ITEM = "item-new-in-span-4"
NEW_ITEM_USERS = ("u1", "u2", "u3")
WINDOW = 2
# Small and quick: no ranking stage, no final fit; every run's model pushed.
SETTINGS = dict(ranking_run_fn=None, refit=False,
                blessing=config.BlessingConfig(beat_baselines=(), max_regression=1.0))


def _span_dataset(data_dir) -> dataset_config.DatasetConfig:
    raw = dataset_config.load(dataset_config.builtin_path("synthetic")).to_dict()
    raw["interactions"]["path"] = native.SPAN_INTERACTIONS_PATH
    raw["items"]["path"] = "spans/{SPAN}/items.csv"
    raw["window"] = WINDOW
    return dataset_config.from_dict(raw)


@pytest.fixture(scope="module")
def span_data(tiny_data, tmp_path_factory):
    """The tiny dataset as 4 spans; the items table per span; span 4 brings
    NEW_ITEM, interacted with by NEW_ITEM_USERS after everything else."""
    directory = tmp_path_factory.mktemp("continuous_data")
    native.write_spans(tiny_data, directory, 4)
    for k in range(1, 5):
        shutil.copy(directory / "items.csv", directory / f"spans/{k}/items.csv")
    os.remove(directory / "items.csv")
    with open(directory / "spans/4/items.csv", "a") as f:
        f.write(f"{NEW_ITEM},A new film,2024,Drama\n")
    with open(directory / "spans/4/interactions.csv", newline="") as f:
        latest = max(int(r["timestamp"]) for r in csv.DictReader(f))
    with open(directory / "spans/4/interactions.csv", "a") as f:
        for n, user in enumerate(NEW_ITEM_USERS, 1):
            f.write(f"{user},{NEW_ITEM},5,{latest + n}\n")
    return directory, latest


def _run(data_dir, root, **settings):
    from tfx_recsys.pipeline import local_runner

    local_runner.run(str(data_dir), str(root), dataset=_span_dataset(data_dir),
                     **{**SETTINGS, **settings})
    return run_summary.summary(str(root))


@pytest.fixture(scope="module")
def daily(span_data, tmp_path_factory):
    """Span 2 cold, span 3 warm, span 4 refreshed; what each left."""
    data_dir, _ = span_data
    root = tmp_path_factory.mktemp("continuous_root")
    serving = os.path.join(root, "serving", config.MODEL_NAME)
    steps = {"cold": _run(data_dir, root, span=2)}
    steps["cold_version"] = publishing.latest_version_dir(serving)
    steps["warm"] = _run(data_dir, root, span=3, warm_start=True)
    steps["warm_version"] = publishing.latest_version_dir(serving)
    steps["refresh"] = _run(data_dir, root, refresh=True)
    steps["refresh_version"] = publishing.latest_version_dir(serving)
    return root, steps


def _trainer_models(store):
    trainer = [e for e in store.get_executions()
               if store.get_execution_types_by_id([e.type_id])[0].name.endswith("Trainer")]
    return [run_summary.output_artifacts(store, e, "model")[0]
            for e in sorted(trainer, key=lambda e: e.id)]


def test_each_run_records_its_spans_and_the_warm_run_starts_from_the_cold_one(daily):
    root, steps = daily
    assert steps["cold"]["pushed"] and steps["warm"]["pushed"]
    store = run_summary.open_store(str(root))
    cold, warm = _trainer_models(store)
    assert "cold start" in run_summary.property_value(cold, "warm_start")
    line = run_summary.property_value(warm, "warm_start")
    assert line.startswith("warm start from"), line
    assert cold.uri in line
    runs = lineage.runs(store)
    assert [r.get("spans") for r in runs] == ["1,2", "2,3", "3,4"]
    assert [r["kind"] for r in runs] == ["full", "full", "refresh"]
    tree = lineage.model_lineage(store, os.path.basename(steps["warm_version"]))
    # Spans 2-3 directly, span 1 through the model it started from.
    assert lineage.learned_spans(tree) == [1, 2, 3]
    assert lineage.format_tree(tree).startswith("learned from spans: 1, 2, 3")


def test_a_refresh_pushes_the_new_item_and_histories_that_end_with_it(daily, span_data):
    import scann  # noqa: F401 (registers the ScaNN ops the served model uses)
    import tensorflow as tf

    root, steps = daily
    _, latest = span_data
    refresh = steps["refresh"]
    assert refresh["pushed"] and refresh["served_model"] == "refresh"
    assert steps["refresh_version"] != steps["warm_version"]
    version = os.path.basename(steps["refresh_version"])
    embeddings = os.path.join(root, "serving", config.MODEL_NAME
                              + publishing.EMBEDDINGS_SUFFIX, version)
    with open(os.path.join(embeddings, "item_ids.txt")) as f:
        item_ids = f.read().split()
    assert NEW_ITEM in item_ids
    vectors = np.load(os.path.join(embeddings, "item_embeddings.npy"))
    assert np.abs(vectors[item_ids.index(NEW_ITEM)]).sum() > 0  # content features
    # The served model is the warm run's, with the new user state.
    source = publishing.read_source(steps["refresh_version"])
    assert source["model_path"] == publishing.read_source(steps["warm_version"])["model_path"]
    served = tf.saved_model.load(steps["refresh_version"])
    history = served.history
    items = history.items.numpy()
    splits = history.row_splits.numpy()
    last_items = {items[end - 1] for start, end in zip(splits, splits[1:]) if end > start}
    assert NEW_ITEM.encode() in last_items
    assert history.last_timestamp.numpy().max() == latest + len(NEW_ITEM_USERS)


def test_a_refresh_killed_half_way_leaves_the_served_version_as_it_was(
        daily, span_data, tmp_path):
    root, steps = daily
    data_dir, _ = span_data
    serving = os.path.join(root, "serving", config.MODEL_NAME)
    before = sorted(os.listdir(serving))
    dataset = tmp_path / "spans.yaml"
    with open(dataset, "w") as f:
        f.write(_span_dataset(data_dir).to_json())
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    # Unchanged data would be a cache hit: span 3 makes the pusher work.
    process = subprocess.Popen(
        [recsys, "refresh", "--data", str(data_dir), "--dataset", str(dataset),
         "--root", str(root), "--span", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    staged = None
    while time.monotonic() < deadline and process.poll() is None:
        staged = [n for n in os.listdir(serving) if n.startswith(publishing.STAGING_PREFIX)]
        if staged:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert staged, "the refresh ended before it staged a version"
    assert [n for n in sorted(os.listdir(serving))
            if not n.startswith(publishing.STAGING_PREFIX)] == before
    assert publishing.latest_version_dir(serving) == steps["refresh_version"]
