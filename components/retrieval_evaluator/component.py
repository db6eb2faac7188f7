"""RetrievalEvaluator: factorized top-K over the whole item corpus.

TFMA's Evaluator scores one example at a time and cannot rank a whole
corpus, so this component does: it embeds every item of the corpus and every
eval user with the Trainer's SavedModel, ranks the corpus per user (excluding
their train items) and computes the metrics of `tfx_recsys.metrics` for the
model and a most-popular baseline on the same split. The model is blessed
only if it beats the baseline on `blessing_metric`.

Outputs: `evaluation` (ModelEvaluation) holds `metrics.json`; `blessing`
(ModelBlessing) carries the `blessed` custom property that Pusher checks.
"""

import json
from typing import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import config
from tfx_recsys.components.retrieval_evaluator import executor

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
ITEMS_KEY = "items"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
TOP_KS_KEY = "top_ks"
BLESSING_METRIC_KEY = "blessing_metric"


class RetrievalEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        TOP_KS_KEY: ExecutionParameter(type=str),  # JSON list of ints
        BLESSING_METRIC_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ITEMS_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class RetrievalEvaluator(base_component.BaseComponent):
    """Evaluates a retrieval model against the corpus and blesses it."""

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 items: types.BaseChannel,
                 top_ks: Sequence[int] = config.TOP_KS,
                 blessing_metric: str = config.BLESSING_METRIC):
        spec = RetrievalEvaluatorSpec(
            model=model, examples=examples, items=items,
            top_ks=json.dumps(list(top_ks)), blessing_metric=blessing_metric,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        super().__init__(spec=spec)
