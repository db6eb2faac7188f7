"""The models served now, as a TFX resolver: what `recsys refresh` re-pushes.

A refresh pushes the served retrieval model (and ranker) again with new
data: new items embedded by its candidate tower, the user state of the new
interactions, a new ScaNN index. Which models are served is what the newest
version in the serving directory says it was made from
(publishing.read_source; a rollback copies that record with the version),
so a rolled-back version is the one refreshed. The blessing is the one the
pusher that first shipped the model took with it.
"""

from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.utils import path_utils

from tfx_recsys.components.scann_pusher import publishing

MODEL_KEY, RANKING_MODEL_KEY, BLESSING_KEY = "model", "ranking_model", "model_blessing"


def _by_serving_path(models: List[types.Artifact], path: Optional[str]
                     ) -> Optional[types.Artifact]:
    """The Model artifact whose serving directory is `path` (newest first)."""
    if not path:
        return None
    for model in sorted(models, key=lambda m: -m.id):
        if path_utils.serving_model_path(model.uri) == path:
            return model
    return None


def _blessing_pushed_with(store, model: types.Artifact,
                          blessings: List[types.Artifact]) -> Optional[types.Artifact]:
    """The blessing a pusher execution took beside `model` (its newest)."""
    by_id = {b.id: b for b in blessings}
    events = store.get_events_by_artifact_ids([model.id])
    executions = sorted({e.execution_id for e in events
                         if e.type == metadata_store_pb2.Event.INPUT}, reverse=True)
    for execution in executions:
        for event in store.get_events_by_execution_ids([execution]):
            if (event.type == metadata_store_pb2.Event.INPUT
                    and any(step.key == BLESSING_KEY for step in event.path.steps)
                    and event.artifact_id in by_id):
                return by_id[event.artifact_id]
    return None


class ServedModelsStrategy(tfx.dsl.experimental.ResolverStrategy):
    """Resolves `model`, `ranking_model` (possibly empty) and
    `model_blessing` to those of the version served from `serving_dir`;
    None (nothing to refresh) when no version is served or its models are
    not in this store."""

    def __init__(self, serving_dir: str):
        self._serving_dir = serving_dir

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        served = publishing.latest_version_dir(self._serving_dir)
        source = publishing.read_source(served) if served else None
        if not source:
            return None
        models = list(input_dict.get(MODEL_KEY, [])) + list(
            input_dict.get(RANKING_MODEL_KEY, []))
        model = _by_serving_path(models, source.get("model_path"))
        ranker = _by_serving_path(models, source.get("ranking_model_path"))
        if model is None or (source.get("ranking_model_path") and ranker is None):
            return None
        blessing = _blessing_pushed_with(store, model, input_dict.get(BLESSING_KEY, []))
        if blessing is None:
            return None
        return {MODEL_KEY: [model], RANKING_MODEL_KEY: [ranker] if ranker else [],
                BLESSING_KEY: [blessing]}


def served_models_resolver(serving_dir: str) -> tfx.dsl.Resolver:
    """The resolver node: outputs `model`, `ranking_model`, `model_blessing`."""
    return tfx.dsl.Resolver(
        strategy_class=ServedModelsStrategy, config={"serving_dir": serving_dir},
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        ranking_model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("served_models_resolver")
