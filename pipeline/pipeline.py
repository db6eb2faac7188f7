"""The tfx-recsys pipeline: raw CSVs to a pushed ScaNN-indexed SavedModel.

`create_pipeline()` takes every path and setting as a parameter; the runners
(`local_runner.py`, `kubeflow_runner.py`) only choose the orchestrator, the
paths and the metadata store, and (Kubeflow) which settings become runtime
parameters.
"""

import dataclasses
import json
from typing import Dict, List, Mapping, Optional, Sequence

from tfx import v1 as tfx
from tfx.orchestration import data_types
from tfx.proto import transform_pb2

from tfx_recsys import config
from tfx_recsys.components.anomalies_gate.component import AnomaliesGate
from tfx_recsys.components.interactions_example_gen import (
    component as example_gen_component)
from tfx_recsys.components.interactions_example_gen.component import (
    InteractionsExampleGen)
from tfx_recsys.components.retrieval_evaluator.component import RetrievalEvaluator
from tfx_recsys.components.scann_pusher import served_models
from tfx_recsys.components.scann_pusher.component import ScannPusher
from tfx_recsys.components.trainer_with_epochs import component as trainer_with_epochs

# Settings a data_types.RuntimeParameter may stand for (create_pipeline's
# `runtime_parameters`), with the type the parameter must have.
RUNTIME_SETTINGS = {
    "data_path": str,
    "serving_dir": str,
    "trainer_custom_config": str,  # JSON of trainer_custom_config()
    "epochs": int,                 # the Trainer's `epochs` property
    "ranker_epochs": int,          # the RankingTrainer's `epochs` property
    "blessing_metric": str,
    "blessing_min_value": float,
    "max_regression": float,
}
# Where the no-regression check finds the model to compare against
# (create_pipeline's `regression_baseline`).
REGRESSION_BASELINES = ("resolver", "served")
# Of those, the fields of `blessing`.
_BLESSING_FIELDS = {"blessing_metric": "metric", "blessing_min_value": "min_value",
                    "max_regression": "max_regression"}


def trainer_custom_config(training: Optional[Dict], dataset: Dict,
                          code_fingerprint: str) -> Dict:
    """The Trainer's custom_config: hyperparameters, the data contract and the
    fingerprint of the model code (which makes it part of the cache key)."""
    return {**(training or {}), "dataset": dataset, "code_fingerprint": code_fingerprint}


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_path: str,
    dataset: Dict,
    schema_path: str,
    serving_dir: str,
    preprocessing_fn: str = config.PREPROCESSING_FN,
    run_fn: str = config.TWO_TOWER_RUN_FN,
    training: Optional[Dict] = None,
    ranking_run_fn: Optional[str] = config.NCF_RUN_FN,
    ranking: Optional[Dict] = None,
    rerank: config.RerankConfig = config.RerankConfig(),
    code_fingerprint: str = "",
    top_ks: Sequence[int] = config.TOP_KS,
    blessing: config.BlessingConfig = config.BlessingConfig(),
    index_gate: config.IndexGateConfig = config.IndexGateConfig(),
    serving_top_k: int = config.SERVING_TOP_K,
    max_eval_users: int = config.MAX_EVAL_USERS,
    refit: bool = True,
    regression_baseline: str = "resolver",
    span: Optional[int] = None,
    warm_start: bool = False,
    refresh: bool = False,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
    runtime_parameters: Optional[Mapping[str, data_types.RuntimeParameter]] = None,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name, pipeline_root: TFX pipeline identity and artifact root.
      data_path: the dataset directory; the config's table paths are
        relative to it.
      dataset: the data contract, `DatasetConfig.to_dict()` (tables, columns,
        feature kinds, split, history length); every component reads it.
      schema_path: the raw-example schema that follows the config
        (schemas/<dataset>.pbtxt).
      serving_dir: where pushed models go, one numbered version per push.
      preprocessing_fn, run_fn: dotted paths of the Transform and Trainer code
        (config.TWO_TOWER_RUN_FN or config.SOFTMAX_RUN_FN).
      training: Trainer hyperparameters (fields of the model's config class).
      ranking_run_fn: dotted path of the ranking Trainer's code
        (config.NCF_RUN_FN); None: no ranking stage (the served model is
        retrieval and re-ranking only).
      ranking: ranking Trainer hyperparameters (config.NcfConfig fields).
      rerank: the served model's last stage (config.RerankConfig): how many
        retrieval candidates the ranker sees, the blend, exclusions,
        freshness, diversity.
      code_fingerprint: hash of the model code; part of the Transform and
        Trainer cache keys, since dotted paths alone do not change with code.
      top_ks: evaluation cut-offs.
      blessing: the evaluator's gate (thresholds, baselines, no regression).
      index_gate: the pusher's gate (ScaNN recall target, latency bound) and
        how many pushed versions to keep.
      serving_top_k: how many items the served model returns.
      max_eval_users: the evaluator scores at most this many eval users (a
        seeded sample, the same every run); 0 = all.
      refit: the final fit: retrain the models with the same settings on
        every interaction (a second Transform, vocabularies included, and
        Trainers) and push those once the evaluator blesses the models
        trained on the train split; False: push the evaluated models.
      regression_baseline: what the evaluator's no-regression check compares
        against. "resolver": the last blessed model, found in ML Metadata by
        TFX's latest-blessed-model resolver (local runs, Vertex AI).
        "served": the model served from `serving_dir` now, by the evaluation
        record the pusher keeps with each version (no resolver node: for
        the open-source Kubeflow Pipelines backend, which runs none).
      span: with `{SPAN}` in the dataset's interactions path, the span to
        read (with its window) instead of the latest; None: the latest.
      warm_start: the retrieval Trainers start from the last blessed model
        (TFX's resolver into `base_model`; models/warm_start.py carries its
        embedding rows over by id), falling back to a fresh start, with one
        line why, when it is incompatible. Needs regression_baseline
        "resolver". A warm-started Trainer reruns whenever a new model is
        blessed, also on unchanged data.
      refresh: build the refresh pipeline instead (`recsys refresh`): the
        data is ingested and validated as in a full run, then the models
        served from `serving_dir` now are pushed again with it (new items
        embedded, the user state and the ScaNN index rebuilt, the index gate
        run), without training or evaluation.
      metadata_connection_config: ML Metadata store (None: the runner's).
      beam_pipeline_args: options of the Beam pipelines components run.
      enable_cache: reuse results of unchanged components.
      runtime_parameters: Kubeflow only: RuntimeParameters that stand for
        settings, by the names of RUNTIME_SETTINGS: `data_path`,
        `serving_dir`; `trainer_custom_config`, the Trainer's whole
        custom_config as a JSON string, which replaces what
        trainer_custom_config() makes of `training`, `dataset` and
        `code_fingerprint` (KubeflowV2DagRunner substitutes a parameter only
        for a whole property); `epochs` and `ranker_epochs`, the `epochs`
        property of the Trainer and the RankingTrainer, which replaces the
        "epochs" entry of their custom_config at run time (NCF: epochs per
        stage); and `blessing_metric`, `blessing_min_value`,
        `max_regression`, which replace those fields of `blessing`. Each
        parameter's default should be the value it replaces. Without them
        (a local run) the Trainers' epochs come from custom_config.
    """
    runtime = dict(runtime_parameters or {})
    for name, parameter in runtime.items():
        if name not in RUNTIME_SETTINGS:
            raise ValueError(f"no runtime parameter can stand for {name!r}: choose "
                             f"from {', '.join(RUNTIME_SETTINGS)}")
        if not (isinstance(parameter, data_types.RuntimeParameter)
                and parameter.ptype is RUNTIME_SETTINGS[name]):
            raise TypeError(f"runtime_parameters[{name!r}] must be a RuntimeParameter "
                            f"with ptype {RUNTIME_SETTINGS[name].__name__}")
    if regression_baseline not in REGRESSION_BASELINES:
        raise ValueError(f"regression_baseline must be one of "
                         f"{', '.join(REGRESSION_BASELINES)}, got {regression_baseline!r}")
    if warm_start and regression_baseline != "resolver":
        raise ValueError("warm_start needs regression_baseline='resolver': the last "
                         "blessed model is found by TFX's resolver")
    if "ranker_epochs" in runtime and not ranking_run_fn:
        raise ValueError("runtime parameter ranker_epochs needs the ranking stage "
                         "(ranking_run_fn is None)")
    data_path = runtime.get("data_path", data_path)
    serving_dir = runtime.get("serving_dir", serving_dir)
    blessing = dataclasses.replace(blessing, **{
        field: runtime[name] for name, field in _BLESSING_FIELDS.items() if name in runtime})

    dataset_json = json.dumps(dataset)
    # Interactions joined with user and item features and the user's earlier
    # history, split as the config says; bad rows counted and set aside.
    example_gen = InteractionsExampleGen(
        input_base=data_path, dataset=dataset_json, with_refit_examples=refit,
        range_config=None if span is None else example_gen_component.span_range(span))

    # Statistics of every split, the checked-in schema, and the check of one
    # against the other: a refresh validates new data as a full run does.
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"])
    # Anomalies stop the run here, with a readable summary.
    anomalies_gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"], schema_path=schema_path)

    data_nodes = [example_gen, statistics_gen, schema_gen, example_validator,
                  anomalies_gate]
    if refresh:
        # The models served now, and their blessing, pushed with the new data.
        served = served_models.served_models_resolver(serving_dir)
        pusher = ScannPusher(
            model=served.outputs["model"], model_blessing=served.outputs["model_blessing"],
            ranking_model=served.outputs["ranking_model"],
            items=example_gen.outputs["items"], examples=example_gen.outputs["examples"],
            users=example_gen.outputs["users"], serving_dir=serving_dir,
            top_k=serving_top_k, index_gate=index_gate, rerank=rerank,
            diversity_feature=_diversity_feature(dataset), refresh=True)
        pusher.add_upstream_node(anomalies_gate)
        return tfx.dsl.Pipeline(
            pipeline_name=pipeline_name, pipeline_root=pipeline_root,
            components=[*data_nodes, served, pusher], enable_cache=enable_cache,
            metadata_connection_config=metadata_connection_config,
            beam_pipeline_args=beam_pipeline_args or [])

    def transform_of(examples, analyze: List[str], transform_splits: List[str]):
        # One feature contract (preprocessing_fn) over the splits given; no
        # pre-/post-transform statistics: StatisticsGen already describes the
        # raw data, nothing reads them, and they are two more passes of TFDV
        # over every example.
        return tfx.components.Transform(
            examples=examples,
            schema=schema_gen.outputs["schema"],
            preprocessing_fn=preprocessing_fn,
            splits_config=transform_pb2.SplitsConfig(
                analyze=analyze, transform=transform_splits),
            disable_statistics=True,
            custom_config={"dataset": dataset, "code_fingerprint": code_fingerprint})

    def trainers_on(transform, eval_split: str):
        # The retrieval model (two-tower or DNN softmax) and the ranking
        # model (NCF, or None) on the same transformed examples: TFX's
        # Trainer plus an `epochs` property (a RuntimeParameter on Kubeflow,
        # None locally: custom_config's epochs then hold).
        def trainer(run_fn_path: str, custom_config, epochs, base_model=None):
            return trainer_with_epochs.Trainer(
                run_fn=run_fn_path,
                examples=transform.outputs["transformed_examples"],
                transform_graph=transform.outputs["transform_graph"],
                schema=schema_gen.outputs["schema"],
                train_args=tfx.proto.TrainArgs(splits=[config.TRAIN_SPLIT]),
                eval_args=tfx.proto.EvalArgs(splits=[eval_split]),
                custom_config=custom_config,
                epochs=epochs,
                base_model=base_model)

        retrieval = trainer(
            run_fn,
            runtime.get("trainer_custom_config",
                        trainer_custom_config(training, dataset, code_fingerprint)),
            runtime.get("epochs"),
            latest_blessed.outputs["model"] if warm_start else None)
        ranking_trainer = (trainer(ranking_run_fn,
                                   trainer_custom_config(ranking, dataset, code_fingerprint),
                                   runtime.get("ranker_epochs"))
                           if ranking_run_fn else None)
        return retrieval, ranking_trainer

    # The last blessed model, if any, from ML Metadata: the no-regression
    # reference, and with warm_start the Trainers' starting point; or (no
    # resolver) the model served now, read by the evaluator itself.
    latest_blessed = None
    if regression_baseline == "resolver":
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")

    # Vocabularies and buckets, fitted on the train split only.
    transform = transform_of(example_gen.outputs["examples"], [config.TRAIN_SPLIT],
                             [config.TRAIN_SPLIT, config.EVAL_SPLIT])
    transform.add_upstream_node(anomalies_gate)
    trainer, ranking_trainer = trainers_on(transform, config.EVAL_SPLIT)
    if ranking_trainer:
        ranking_trainer = ranking_trainer.with_id("RankingTrainer")
    ranking_model = ranking_trainer.outputs["model"] if ranking_trainer else None

    reference = ({"baseline_model": latest_blessed.outputs["model"]} if latest_blessed
                 else {"serving_dir": serving_dir})

    # Top-K over the whole corpus against baselines and the last blessed model.
    evaluator = RetrievalEvaluator(
        model=trainer.outputs["model"], **reference,
        examples=example_gen.outputs["examples"],
        items=example_gen.outputs["items"],
        top_ks=top_ks, blessing=blessing,
        diversity_feature=_diversity_feature(dataset),
        ranking_model=ranking_model, rerank=rerank, max_eval_users=max_eval_users)

    def pusher_of(model, ranker, **evaluated) -> ScannPusher:
        # A blessed model with a proven ScaNN index goes out, with its
        # fallbacks and the user state of every accepted interaction.
        return ScannPusher(
            model=model, model_blessing=evaluator.outputs["blessing"],
            items=example_gen.outputs["items"],
            examples=example_gen.outputs["examples"], users=example_gen.outputs["users"],
            serving_dir=serving_dir, top_k=serving_top_k, index_gate=index_gate,
            ranking_model=ranker, rerank=rerank,
            diversity_feature=_diversity_feature(dataset), **evaluated)

    refit_nodes = []
    if refit:
        # The final fit: the same settings on every interaction (vocabularies
        # refitted, so users and items of the eval period are known); the
        # pusher ships it if the evaluated models are blessed. It does not
        # wait for the blessing (a condition on it would make each new
        # blessing an input of the refit, which would then never be cached).
        refit_transform = transform_of(example_gen.outputs["refit_examples"],
                                       [config.TRAIN_SPLIT],
                                       [config.TRAIN_SPLIT]).with_id("RefitTransform")
        refit_transform.add_upstream_node(anomalies_gate)
        refit_trainer, refit_ranking_trainer = trainers_on(refit_transform,
                                                           config.TRAIN_SPLIT)
        refit_trainer = refit_trainer.with_id("RefitTrainer")
        if refit_ranking_trainer:
            refit_ranking_trainer = refit_ranking_trainer.with_id("RefitRankingTrainer")
        pusher = pusher_of(
            refit_trainer.outputs["model"],
            refit_ranking_trainer.outputs["model"] if refit_ranking_trainer else None,
            evaluated_model=trainer.outputs["model"],
            evaluated_ranking_model=ranking_model)
        refit_nodes = [refit_transform, refit_trainer,
                       *([refit_ranking_trainer] if refit_ranking_trainer else [])]
    else:
        pusher = pusher_of(trainer.outputs["model"], ranking_model)

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[*data_nodes, transform, trainer,
                    *([ranking_trainer] if ranking_trainer else []),
                    *refit_nodes, *([latest_blessed] if latest_blessed else []),
                    evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])


def _diversity_feature(dataset: Dict) -> str:
    """The first multi-valued categorical item feature (e.g. genres), or ""."""
    for name, spec in dataset["items"]["features"].items():
        if spec["kind"] == "multi_categorical":
            return name
    return ""
