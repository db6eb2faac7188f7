"""The evaluation record that travels with each pushed version."""

import json
import os

from tfx_recsys import served_evaluation

RECORD = served_evaluation.EvaluationRecord(
    model_path="/pipeline/Trainer/model/7/Format-Serving",
    overall={"recall@10": 0.25, "ndcg@10": 0.125, "num_users": 40.0},
    metric="recall@10", blessed=True)


def _publish(serving_dir, version, record=None):
    """A version directory as the pusher leaves it (with or without a record)."""
    version_dir = os.path.join(serving_dir, str(version))
    os.makedirs(version_dir)
    with open(os.path.join(version_dir, "saved_model.pb"), "wb"):
        pass
    if record is not None:
        blessing = os.path.join(serving_dir, f"blessing-{version}")
        served_evaluation.write_blessing_record(blessing, record)
        assert served_evaluation.copy_to_version(blessing, version_dir)
    return version_dir


def test_the_record_goes_from_the_blessing_into_the_version_and_back(tmp_path):
    serving = str(tmp_path / "serving" / "retrieval")
    assert served_evaluation.newest_served(serving) is None  # nothing published
    version_dir = _publish(serving, 100, RECORD)
    with open(os.path.join(version_dir, served_evaluation.VERSION_RECORD)) as f:
        assert json.load(f)["overall"]["recall@10"] == 0.25
    served = served_evaluation.newest_served(serving)
    assert served == served_evaluation.ServedRecord(100, version_dir, RECORD)


def test_only_the_newest_version_counts(tmp_path):
    serving = str(tmp_path / "retrieval")
    _publish(serving, 100, RECORD)
    os.makedirs(os.path.join(serving, ".staging-300"))  # a push in progress
    newer = served_evaluation.EvaluationRecord("/other/model", {"recall@10": 0.5},
                                               "recall@10", True)
    _publish(serving, 200, newer)
    assert served_evaluation.newest_served(serving).record == newer
    # The newest carries no record (pushed before records were written): it
    # is what servers load, so there is no reference, not an older one.
    _publish(serving, 250)
    assert served_evaluation.newest_served(serving) is None


def test_a_blessing_without_a_record_copies_nothing(tmp_path):
    blessing = tmp_path / "blessing"
    blessing.mkdir()
    version = tmp_path / "1"
    assert not served_evaluation.copy_to_version(str(blessing), str(version))
    assert not version.exists()


def test_the_record_round_trips_as_json():
    assert served_evaluation.EvaluationRecord.from_json(RECORD.to_json()) == RECORD
