"""AnomaliesGate: the rule on protos, and the executor on a written report."""

import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from tfx_recsys.components.anomalies_gate import executor, gate
from tfx_recsys.errors import DataError


def _anomalies(**features) -> anomalies_pb2.Anomalies:
    report = anomalies_pb2.Anomalies()
    for name, (short, long) in features.items():
        info = report.anomaly_info[name]
        info.short_description, info.description = short, long
    return report


def test_no_anomalies_passes():
    gate.check({"train": anomalies_pb2.Anomalies(),
                "eval": anomalies_pb2.Anomalies()})


def test_anomalies_stop_with_one_line_each_naming_split_and_feature():
    with pytest.raises(DataError) as raised:
        gate.check({"train": _anomalies(age=("Unexpected data type",
                                              "Expected INT, got FLOAT")),
                    "eval": _anomalies(gender=("Column dropped",
                                               "The feature was present in fewer examples than expected."))},
                   schema_path="schemas/x.pbtxt", anomalies_uri="/r/anomalies/7")
    message = str(raised.value)
    assert "2 anomal(ies)" in message
    assert ("split 'train': feature 'age': Unexpected data type "
            "(Expected INT, got FLOAT)") in message
    assert "split 'eval': feature 'gender': Column dropped" in message
    assert "schemas/x.pbtxt" in message and "/r/anomalies/7" in message
    assert "anomaly_info" not in message  # a summary, not a proto dump


def test_executor_reads_the_validator_report_of_each_split(tmp_path):
    from tfx.types import standard_artifacts
    from tfx.types import artifact_utils

    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(["train", "eval"])
    for split, report in (("train", anomalies_pb2.Anomalies()),
                          ("eval", _anomalies(rating=("Out-of-range values", "")))):
        os.makedirs(tmp_path / f"Split-{split}")
        (tmp_path / f"Split-{split}" / "SchemaDiff.pb").write_bytes(
            report.SerializeToString())
    with pytest.raises(DataError, match="split 'eval': feature 'rating'"):
        executor.Executor().Do({"anomalies": [artifact]}, {}, {"schema_path": ""})
