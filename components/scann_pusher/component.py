"""ScannPusher: pushes a blessed retrieval model as a ScaNN-indexed SavedModel.

Inputs: the Trainer's `model`, the evaluator's `model_blessing`, the `items`
corpus from InteractionsExampleGen, and `examples` (its eval split supplies
held-out queries for the index's recall check). If the model is blessed, the
executor embeds every item, builds a ScaNN index, wraps it with the query
tower into one serving SavedModel (see index.py) and writes it to
`<serving_dir>/<version>/` (TF Serving layout, saved_model.pb written last).
The PushedModel records the index's recall@10 against exact search.
"""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config
from tfx_recsys.components.scann_pusher import executor

SERVING_DIR_KEY = "serving_dir"
TOP_K_KEY = "top_k"


class ScannPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        SERVING_DIR_KEY: ExecutionParameter(type=str),
        TOP_K_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        standard_component_specs.MODEL_KEY: ChannelParameter(
            type=standard_artifacts.Model),
        standard_component_specs.MODEL_BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.ModelBlessing),
        "items": ChannelParameter(type=standard_artifacts.Examples),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        standard_component_specs.PUSHED_MODEL_KEY: ChannelParameter(
            type=standard_artifacts.PushedModel),
    }


class ScannPusher(base_component.BaseComponent):
    """Builds the ScaNN serving model of a blessed model and pushes it."""

    SPEC_CLASS = ScannPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 items: types.BaseChannel, examples: types.BaseChannel,
                 serving_dir: str, top_k: int = config.SERVING_TOP_K):
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        spec = ScannPusherSpec(
            model=model, model_blessing=model_blessing, items=items,
            examples=examples, serving_dir=serving_dir, top_k=top_k,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
