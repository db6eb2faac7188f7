"""RetrievalEvaluator: factorized top-K over the whole item corpus, two gates.

TFMA's Evaluator scores one example at a time and cannot rank a whole
corpus, so this component does. In a Beam pipeline it groups the eval split by
user, embeds every corpus item and each batch of eval users with the Trainer's
SavedModel, ranks the whole corpus per user (their train items excluded) and
folds the metrics of `tfx_recsys.metrics` into per-slice accumulators, for the
model, the most-popular baseline and, if there is one, the last blessed model,
all on the same users.

Blessing (config.BlessingConfig): absolute threshold, beat the baselines, and
no regression against the last blessed model; the reasons are recorded.
That model comes either from a resolver (`baseline_model`: TFX's
latest-blessed-model resolver, locally and on Vertex) or, where no resolver
runs (the open-source Kubeflow Pipelines backend), from the serving dir
(`serving_dir`): the newest published version's evaluation record
(tfx_recsys/served_evaluation.py), whose evaluated model is scored beside the
new one, or, if it no longer loads, whose recorded metrics are compared. The
gate travels as one JSON property, `blessing_config`; on Kubeflow a
`data_types.RuntimeParameter` may stand for its metric, min_value or
max_regression, and each such field becomes a primitive property of its own
(`blessing_metric`, `blessing_min_value`, `max_regression`), checked by the
executor at run time instead of here.

Outputs: `evaluation` (ModelEvaluation) holds `metrics.json` (documented in
the README) and `metrics-*.tfrecord` (TFMA MetricsForSlice, readable with
`tfma.load_metrics`); `blessing` (ModelBlessing) carries the `blessed` custom
property that the Pusher and TFX's latest-blessed-model resolver read, and
`evaluation_record.json`, which the pusher copies into the version it publishes.
"""

import dataclasses
import json
from typing import Optional, Sequence, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config, fingerprint
from tfx_recsys.components.retrieval_evaluator import evaluation, executor

MODEL_KEY = "model"
BASELINE_MODEL_KEY = "baseline_model"
EXAMPLES_KEY = "examples"
ITEMS_KEY = "items"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
TOP_KS_KEY = "top_ks"
BLESSING_CONFIG_KEY = "blessing_config"
DIVERSITY_FEATURE_KEY = "diversity_feature"
RANKING_MODEL_KEY = "ranking_model"
RERANK_KEY = "rerank"
MAX_EVAL_USERS_KEY = "max_eval_users"
SERVING_DIR_KEY = executor.SERVING_DIR_KEY
BLESSING_METRIC_KEY = evaluation.GATE_PROPERTIES["metric"]
BLESSING_MIN_VALUE_KEY = evaluation.GATE_PROPERTIES["min_value"]
MAX_REGRESSION_KEY = evaluation.GATE_PROPERTIES["max_regression"]


class RetrievalEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        TOP_KS_KEY: ExecutionParameter(type=str),  # JSON list of ints
        # JSON BlessingConfig, less the fields given as properties below.
        BLESSING_CONFIG_KEY: ExecutionParameter(type=str),
        # BlessingConfig fields that a RuntimeParameter stands for; set only
        # then (so local pipelines keep the same properties and cache keys).
        BLESSING_METRIC_KEY: ExecutionParameter(type=str, optional=True),
        BLESSING_MIN_VALUE_KEY: ExecutionParameter(type=float, optional=True),
        MAX_REGRESSION_KEY: ExecutionParameter(type=float, optional=True),
        DIVERSITY_FEATURE_KEY: ExecutionParameter(type=str),
        RERANK_KEY: ExecutionParameter(type=str, optional=True),  # JSON RerankConfig
        MAX_EVAL_USERS_KEY: ExecutionParameter(type=int, optional=True),
        # Where the pusher publishes: the no-regression reference is the
        # model served there (set instead of a baseline_model resolver).
        SERVING_DIR_KEY: ExecutionParameter(type=str, optional=True),
        # Hash of the executor's code (fingerprint.py): part of the cache key.
        fingerprint.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model,
                                             optional=True),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ITEMS_KEY: ChannelParameter(type=standard_artifacts.Examples),
        RANKING_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model,
                                            optional=True),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class RetrievalEvaluator(base_beam_component.BaseBeamComponent):
    """Evaluates a retrieval model against the whole corpus and blesses it.

    Args:
      model: the Trainer's model.
      examples: raw examples with `train` and `eval` splits.
      items: the item corpus (InteractionsExampleGen's `items`).
      baseline_model: the last blessed model (from a resolver), optional.
      serving_dir: where the pusher publishes (a path or a RuntimeParameter),
        optional, instead of `baseline_model`: the no-regression reference
        is then the model served there (for backends without resolvers).
      top_ks: cut-offs of every metric.
      blessing: the gate's checks. Its metric, min_value and max_regression
        may each be a `data_types.RuntimeParameter` (str, float, float): that
        field becomes a property of its own and is checked at run time.
      diversity_feature: multi-valued item feature whose categories measure
        intra-list diversity (e.g. genres); "" for none.
      ranking_model: the ranking Trainer's model, optional. With it the
        evaluator also measures the ranker alone over the whole corpus and
        the served two-stage list (exact retrieval -> ranker -> re-ranking
        with `rerank`, tfx_recsys/serving/two_stage.py) on the same users; the
        blessing still judges the retrieval model.
      rerank: the served model's re-ranking settings.
      max_eval_users: at most this many eval users are scored, a sample
        drawn by a seeded hash of the user id (the same users in every run);
        0 = all. Scoring a user costs a pass over the whole corpus per model.
    """

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 items: types.BaseChannel,
                 baseline_model: Optional[types.BaseChannel] = None,
                 top_ks: Sequence[int] = config.TOP_KS,
                 blessing: config.BlessingConfig = config.BlessingConfig(),
                 diversity_feature: str = "",
                 ranking_model: Optional[types.BaseChannel] = None,
                 rerank: config.RerankConfig = config.RerankConfig(),
                 max_eval_users: int = config.MAX_EVAL_USERS,
                 serving_dir: Optional[Union[str, data_types.RuntimeParameter]] = None):
        if baseline_model is not None and serving_dir is not None:
            raise ValueError("give the no-regression reference as baseline_model (a "
                             "resolver) or serving_dir (the served model), not both")
        if max_eval_users < 0:
            raise ValueError(f"max_eval_users must be >= 0 (0 = all), got {max_eval_users}")
        fixed = {f.name: getattr(blessing, f.name) for f in dataclasses.fields(blessing)}
        runtime = {name: fixed.pop(name) for name in list(fixed)
                   if isinstance(fixed[name], data_types.RuntimeParameter)}
        not_runtime = sorted(set(runtime) - set(evaluation.GATE_PROPERTIES))
        if not_runtime:
            raise ValueError(
                f"a RuntimeParameter can stand for {', '.join(evaluation.GATE_PROPERTIES)} "
                f"of the blessing gate, not for {', '.join(not_runtime)}")
        if "metric" not in runtime:  # else the executor checks it at run time
            config.check_metric_name(blessing.metric, top_ks)
        unknown = set(blessing.beat_baselines) - set(evaluation.BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)} in beat_baselines; "
                             f"choose from {list(evaluation.BASELINES)}")
        spec = RetrievalEvaluatorSpec(
            model=model, baseline_model=baseline_model, examples=examples,
            items=items, top_ks=json.dumps(list(top_ks)),
            blessing_config=json.dumps(fixed),
            **{evaluation.GATE_PROPERTIES[name]: parameter
               for name, parameter in runtime.items()},
            diversity_feature=diversity_feature,
            ranking_model=ranking_model,
            rerank=json.dumps(dataclasses.asdict(rerank), sort_keys=True),
            max_eval_users=max_eval_users,
            serving_dir=serving_dir,
            code_fingerprint=fingerprint.component_fingerprint(executor.Executor),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        super().__init__(spec=spec)
