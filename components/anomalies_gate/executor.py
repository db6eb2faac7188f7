"""Executor of AnomaliesGate (TFX glue; the rule is in gate.py)."""

import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from tfx_recsys.components.anomalies_gate import gate

# Where ExampleValidator writes each split's report (its executor's
# DEFAULT_FILE_NAME, under the split's directory).
_REPORT_FILE = "SchemaDiff.pb"


def read_anomalies(anomalies_artifact) -> Dict[str, object]:
    """{split: Anomalies proto} of an ExampleAnomalies artifact."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    result = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(
            artifact_utils.get_split_uri([anomalies_artifact], split), _REPORT_FILE)
        report = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            report.ParseFromString(f.read())
        result[split] = report
    return result


class Executor(base_executor.BaseExecutor):
    """Fails the execution (and so the run) when any split has anomalies."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict["anomalies"])
        gate.check(read_anomalies(anomalies),
                   schema_path=exec_properties.get("schema_path", ""),
                   anomalies_uri=anomalies.uri)
