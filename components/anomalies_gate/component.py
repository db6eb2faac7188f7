"""AnomaliesGate: stops the run when ExampleValidator finds anomalies.

ExampleValidator records anomalies but lets the pipeline go on; training on
data that breaks its schema would waste the run and hide the problem. This
component reads ExampleValidator's report and fails with a readable summary
(one line per anomaly, naming split and feature), so Transform, which runs
after it, never sees such data.
"""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import fingerprint
from tfx_recsys.components.anomalies_gate import executor


class AnomaliesGateSpec(types.ComponentSpec):
    PARAMETERS = {
        "schema_path": ExecutionParameter(type=str),
        # Hash of the executor's code (fingerprint.py): part of the cache key.
        fingerprint.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {"anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {}


class AnomaliesGate(base_component.BaseComponent):
    """Fails when `anomalies` (ExampleValidator's output) is not empty.

    Args:
      anomalies: ExampleValidator's `anomalies` channel.
      schema_path: named in the error message (where the schema came from).
    """

    SPEC_CLASS = AnomaliesGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel, schema_path: str = ""):
        super().__init__(spec=AnomaliesGateSpec(
            anomalies=anomalies, schema_path=schema_path,
            code_fingerprint=fingerprint.component_fingerprint(executor.Executor)))
