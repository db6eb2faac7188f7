"""ScannPusher: ships a blessed retrieval model with a ScaNN index it has proven.

Inputs: the Trainer's `model`, the evaluator's `model_blessing`, the `items`
corpus from InteractionsExampleGen, and `examples` (its eval split supplies
held-out queries). If the model is blessed, the executor embeds every item,
tunes ScaNN on the held-out queries (the fastest setting whose recall@k
against exact search meets the target), and pushes only if that index also
meets the latency bound (config.IndexGateConfig). A push writes, under one new
version number, each atomically (staged, then renamed):

  <serving_dir>/<version>/              the ScaNN SavedModel (serving contract)
  <serving_dir>_bruteforce/<version>/   the same model with exact search
  <serving_dir>_embeddings/<version>/   item_ids.txt + item_embeddings.npy

and keeps the newest `keep_versions`. The PushedModel records the index
settings, recall, latencies and, when not pushed, the reason.
"""

import dataclasses
import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config
from tfx_recsys.components.scann_pusher import executor

SERVING_DIR_KEY = "serving_dir"
TOP_K_KEY = "top_k"
INDEX_GATE_KEY = "index_gate"


class ScannPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        SERVING_DIR_KEY: ExecutionParameter(type=str),
        TOP_K_KEY: ExecutionParameter(type=int),
        INDEX_GATE_KEY: ExecutionParameter(type=str),  # JSON IndexGateConfig
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
                 serving_dir: str, top_k: int = config.SERVING_TOP_K,
                 index_gate: config.IndexGateConfig = config.IndexGateConfig()):
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        spec = ScannPusherSpec(
            model=model, model_blessing=model_blessing, items=items,
            examples=examples, serving_dir=serving_dir, top_k=top_k,
            index_gate=json.dumps(dataclasses.asdict(index_gate)),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
