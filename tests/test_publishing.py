"""Versioned, atomic model directories."""

import os

import pytest

from tfx_recsys.components.scann_pusher import publishing


def _stage(model_dir, version, content="model"):
    staged = publishing.staging_dir(str(model_dir), version)
    with open(os.path.join(staged, "saved_model.pb"), "w") as f:
        f.write(content)
    return staged


def test_publish_renames_a_complete_staging_dir_into_place(tmp_path):
    staged = _stage(tmp_path, 7)
    assert publishing.versions(str(tmp_path)) == []  # staging is not a version
    path = publishing.publish(staged, str(tmp_path), 7)
    assert (tmp_path / "7" / "saved_model.pb").read_text() == "model"
    assert path == str(tmp_path / "7") and not os.path.exists(staged)
    with pytest.raises(FileExistsError):
        publishing.publish(_stage(tmp_path, 7), str(tmp_path), 7)


def test_new_versions_increase_across_sibling_dirs(tmp_path):
    future = 10**12
    publishing.publish(_stage(tmp_path / "a", future), str(tmp_path / "a"), future)
    assert publishing.new_version([str(tmp_path / "a"), str(tmp_path / "b")]) == future + 1


def test_prune_keeps_the_newest_and_clears_stale_staging(tmp_path):
    for version in (1, 2, 3):
        publishing.publish(_stage(tmp_path, version), str(tmp_path), version)
    _stage(tmp_path, 4)  # an interrupted push
    assert publishing.prune(str(tmp_path), keep=2) == [1]
    assert sorted(os.listdir(tmp_path)) == ["2", "3"]
    assert publishing.latest_version_dir(str(tmp_path)) == str(tmp_path / "3")


def test_republish_brings_an_old_version_back_as_the_newest(tmp_path):
    publishing.publish(_stage(tmp_path, 1, "old"), str(tmp_path), 1)
    publishing.publish(_stage(tmp_path, 2, "bad"), str(tmp_path), 2)
    publishing.republish(str(tmp_path), 1, 3)
    assert (tmp_path / "3" / "saved_model.pb").read_text() == "old"
    assert publishing.versions(str(tmp_path)) == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="no version 9"):
        publishing.republish(str(tmp_path), 9, 4)
