"""Serving and artifact I/O on an object store's URL, as on a cluster.

No bucket is reachable here, so TensorFlow's in-memory filesystem (`ram://`)
stands in for gs://: TFX's fileio reaches both through tf.io.gfile, and like
an object store it has no real directories and no atomic directory rename.
"""

import json
import os

import numpy as np
import pytest

from tfx_recsys import served_evaluation, storage
from tfx_recsys.components.scann_pusher import publishing


@pytest.fixture(scope="module")
def ram():
    """A ram:// root; TFX's fileio learns the scheme (once per session: the
    registry keeps it, and nothing else uses ram://)."""
    from tfx.dsl.io import filesystem_registry
    from tfx.dsl.io.plugins import tensorflow_gfile

    class RamFilesystem(tensorflow_gfile.TensorflowFilesystem):
        SUPPORTED_SCHEMES = ["ram://"]

    filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY.register(RamFilesystem, 20)
    return f"ram://test-storage-{os.getpid()}"


def test_local_and_remote_paths_are_told_apart():
    assert storage.is_remote("gs://bucket/serving") and storage.is_remote("ram://x")
    assert not storage.is_remote("/mnt/serving") and not storage.is_remote("runs/x")


def test_a_push_publishes_prunes_and_reads_back_on_an_object_store(ram):
    serving = f"{ram}/serving/retrieval"
    dirs = publishing.sibling_dirs(serving)
    assert publishing.versions(serving) == []
    pushed = []
    for _ in range(3):
        for directory in dirs.values():
            storage.makedirs(directory)
        version = publishing.new_version(list(dirs.values()))
        staged = publishing.staging_dir(serving, version)
        with storage.open_file(os.path.join(staged, "saved_model.pb"), "w") as f:
            f.write("model")
        publishing.write_source(staged, {"model_path": f"m{version}"})
        assert publishing.publish(staged, serving, version) == f"{serving}/{version}"
        pushed.append(version)
    assert publishing.versions(serving) == pushed
    newest = publishing.latest_version_dir(serving)
    assert publishing.read_source(newest) == {"model_path": f"m{pushed[-1]}"}
    assert not storage.exists(os.path.join(serving, f".staging-{pushed[-1]}"))
    with pytest.raises(FileExistsError):
        publishing.publish(publishing.staging_dir(serving, pushed[-1]), serving, pushed[-1])
    assert publishing.prune(serving, 2) == pushed[:1]
    assert publishing.versions(serving) == pushed[1:]
    assert publishing.read_source(f"{serving}/404") is None


def test_the_evaluation_record_travels_through_an_object_store(ram):
    serving = f"{ram}/records/retrieval"
    record = served_evaluation.EvaluationRecord("gs://root/Trainer/model/3/Format-Serving",
                                                {"recall@10": 0.5}, "recall@10", True)
    served_evaluation.write_blessing_record(f"{ram}/records/blessing", record)
    assert served_evaluation.copy_to_version(f"{ram}/records/blessing", f"{serving}/7")
    assert served_evaluation.newest_served(serving) == served_evaluation.ServedRecord(
        7, f"{serving}/7", record)


def test_embeddings_and_example_splits_on_an_object_store(ram):
    from tfx_recsys import examples_io
    from tfx_recsys.components.scann_pusher import executor

    embeddings = np.arange(6, dtype=np.float32).reshape(3, 2)
    executor._write_embeddings(f"{ram}/embeddings/1", ["a", "b", "c"], embeddings)
    with storage.open_file(f"{ram}/embeddings/1/item_embeddings.npy", "rb") as f:
        assert (np.load(f) == embeddings).all()
    with storage.open_file(f"{ram}/embeddings/1/item_ids.txt") as f:
        assert f.read() == "a\nb\nc\n"
    for name in ("data-00001.gz", "data-00000.gz"):
        with storage.open_file(f"{ram}/examples/Split-train/{name}", "w") as f:
            f.write("")
    assert examples_io.split_files(f"{ram}/examples", "train") == [
        f"{ram}/examples/Split-train/data-00000.gz", f"{ram}/examples/Split-train/data-00001.gz"]


def test_local_paths_keep_their_plain_file_behaviour(tmp_path):
    source = tmp_path / "a"
    (source / "b").mkdir(parents=True)
    (source / "b" / "c.json").write_text(json.dumps([1]))
    storage.copytree(str(source), str(tmp_path / "copy"))
    storage.rename(str(tmp_path / "copy"), str(tmp_path / "moved"))
    assert storage.listdir(str(tmp_path / "moved")) == ["b"]
    with storage.open_file(str(tmp_path / "moved" / "b" / "c.json")) as f:
        assert json.load(f) == [1]
    storage.rmtree(str(tmp_path / "moved"))
    assert not storage.exists(str(tmp_path / "moved"))
    storage.rmtree(str(tmp_path / "moved"), ignore_errors=True)
