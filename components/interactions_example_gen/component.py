"""InteractionsExampleGen: the native three-CSV dataset as TFX Examples.

A FileBasedExampleGen whose executor reads `interactions.csv`, `users.csv` and
`items.csv` together, joins each interaction with its user's and item's
features, and splits by time per user (see `splitting.py`). It has a second
output, `items`: one example per row of `items.csv`, the candidate corpus that
evaluation and the ScaNN index cover (every item, not only those that occur in
one split).
"""

from typing import Optional

from tfx import types
from tfx.components.example_gen import component as example_gen_component
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config
from tfx_recsys.components.interactions_example_gen import executor

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
ITEMS_KEY = "items"
EVAL_FRACTION_KEY = "eval_fraction"


class InteractionsExampleGenSpec(types.ComponentSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        EVAL_FRACTION_KEY: ExecutionParameter(type=float),
    }
    INPUTS = {}
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ITEMS_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


def _input_config() -> example_gen_pb2.Input:
    # Both splits name all three files: the driver fingerprints them for
    # caching, and the executor assigns each interaction to its split by time.
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=config.TRAIN_SPLIT, pattern="*.csv"),
        example_gen_pb2.Input.Split(name=config.EVAL_SPLIT, pattern="*.csv"),
    ])


class InteractionsExampleGen(example_gen_component.FileBasedExampleGen):
    """Ingests a native dataset directory; outputs `examples` and `items`."""

    SPEC_CLASS = InteractionsExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str,
                 eval_fraction: float = config.EVAL_FRACTION,
                 range_config: Optional[object] = None):
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        spec = InteractionsExampleGenSpec(
            input_base=input_base,
            input_config=_input_config(),
            output_config=example_gen_pb2.Output(),
            custom_config=None,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            eval_fraction=eval_fraction,
            examples=types.Channel(type=standard_artifacts.Examples),
            items=types.Channel(type=standard_artifacts.Examples))
        # Skip FileBasedExampleGen.__init__, which builds its own spec.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
