"""ScannPusher: ships the two-stage recommender with a ScaNN index it has proven.

Inputs: the retrieval `model` to serve, the evaluator's `model_blessing`,
the `items` corpus from InteractionsExampleGen, `examples` (its eval split
supplies held-out queries; both splits, every accepted interaction, the
served user state: each user's history up to their latest interaction and
their exclusions) and, optionally, the ranking `ranking_model`. With the
final fit, `model` and `ranking_model` are the refit ones and
`evaluated_model` (and `evaluated_ranking_model`) the ones the evaluator
blessed: the refit is pushed only if it ranks the eval split at least as
well as the evaluated model (refit_check.py). If the model is blessed,
the executor embeds every item, tunes ScaNN on the held-out queries for the
retrieval stage's fetch size (the fastest setting whose recall@k against
exact search meets the target), and pushes only if that index also meets the
latency bound (config.IndexGateConfig). The pushed model is
tfx_recsys/serving/two_stage.py's TwoStageRecommender: ScaNN retrieval -> ranker ->
re-ranking (config.RerankConfig) -> top_k. A push writes, under one new
version number, each atomically (staged, then renamed):

  <serving_dir>/<version>/              the ScaNN SavedModel (serving contract)
  <serving_dir>_bruteforce/<version>/   the same model with exact retrieval
  <serving_dir>_embeddings/<version>/   item_ids.txt + item_embeddings.npy

and keeps the newest `keep_versions`. With `refresh` the models are the
ones served now (served_models.py) and only the data is new: the items,
the user state and the index are rebuilt (`recsys refresh`). The PushedModel records the index
settings, recall, latencies and, when not pushed, the reason.
"""

import dataclasses
import json
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config, fingerprint
from tfx_recsys.components.scann_pusher import executor

SERVING_DIR_KEY = "serving_dir"
TOP_K_KEY = "top_k"
INDEX_GATE_KEY = "index_gate"
RANKING_MODEL_KEY = "ranking_model"
EVALUATED_MODEL_KEY = "evaluated_model"
EVALUATED_RANKING_MODEL_KEY = "evaluated_ranking_model"
RERANK_KEY = "rerank"
DIVERSITY_FEATURE_KEY = "diversity_feature"
REFRESH_KEY = executor.REFRESH_KEY


class ScannPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        SERVING_DIR_KEY: ExecutionParameter(type=str),
        TOP_K_KEY: ExecutionParameter(type=int),
        INDEX_GATE_KEY: ExecutionParameter(type=str),  # JSON IndexGateConfig
        RERANK_KEY: ExecutionParameter(type=str, optional=True),  # JSON RerankConfig
        DIVERSITY_FEATURE_KEY: ExecutionParameter(type=str, optional=True),
        REFRESH_KEY: ExecutionParameter(type=int, optional=True),
        # Hash of the executor's code (fingerprint.py): part of the cache key.
        fingerprint.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        standard_component_specs.MODEL_KEY: ChannelParameter(
            type=standard_artifacts.Model),
        standard_component_specs.MODEL_BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.ModelBlessing),
        "items": ChannelParameter(type=standard_artifacts.Examples),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        # Only recorded in the version's source: `recsys recommend` reads the
        # user's row from it without asking ML Metadata.
        "users": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        RANKING_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
        # The blessed models, when `model` and `ranking_model` are their refit.
        EVALUATED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
        EVALUATED_RANKING_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model,
                                                      optional=True),
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
                 index_gate: config.IndexGateConfig = config.IndexGateConfig(),
                 ranking_model: Optional[types.BaseChannel] = None,
                 rerank: config.RerankConfig = config.RerankConfig(),
                 diversity_feature: str = "",
                 evaluated_model: Optional[types.BaseChannel] = None,
                 evaluated_ranking_model: Optional[types.BaseChannel] = None,
                 refresh: bool = False,
                 users: Optional[types.BaseChannel] = None):
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        spec = ScannPusherSpec(
            model=model, model_blessing=model_blessing, items=items,
            examples=examples, users=users, serving_dir=serving_dir, top_k=top_k,
            index_gate=json.dumps(dataclasses.asdict(index_gate)),
            ranking_model=ranking_model,
            evaluated_model=evaluated_model,
            evaluated_ranking_model=evaluated_ranking_model,
            rerank=json.dumps(dataclasses.asdict(rerank), sort_keys=True),
            diversity_feature=diversity_feature,
            refresh=int(refresh) if refresh else None,
            code_fingerprint=fingerprint.component_fingerprint(executor.Executor),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
