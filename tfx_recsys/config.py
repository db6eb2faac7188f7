"""Plain settings of the pipeline: names, defaults, thresholds.

This module imports no TensorFlow and does no work at import time, so the CLI
starts fast. Every value here is a default: `create_pipeline()` takes each one
as a parameter.
"""

import dataclasses
import os
from typing import Tuple

PIPELINE_NAME = "tfx-recsys"
MODEL_NAME = "retrieval"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_DIR = os.path.join(REPO_ROOT, "schemas")
DEFAULT_ROOT = os.path.join(REPO_ROOT, "runs", "default")

# Dotted paths of the model code (template style: importable from the
# installed package, so they also resolve inside a Kubeflow container).
PREPROCESSING_FN = "tfx_recsys.models.features.preprocessing_fn"
TWO_TOWER_RUN_FN = "tfx_recsys.models.two_tower.run_fn"

# Split names of the examples (the split rule is in the dataset config).
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
ITEMS_SPLIT = "items"

# Evaluation: factorized top-K over the whole item corpus.
TOP_KS: Tuple[int, ...] = (1, 5, 10, 50, 100)
SERVING_TOP_K = 100


# Per-K metrics of the evaluator (tfx_recsys/metrics.py), usable as "<name>@K".
RANKING_METRICS = ("recall", "ndcg", "hit_rate", "mrr", "top_k_accuracy", "coverage")


def check_metric_name(metric: str, top_ks=TOP_KS) -> None:
    """Raises ValueError unless `metric` is "<ranking metric>@<K in top_ks>"."""
    name, _, k = metric.partition("@")
    if name not in RANKING_METRICS or not k.isdigit() or int(k) not in top_ks:
        raise ValueError(f"unknown metric {metric!r}: use one of "
                         f"{', '.join(RANKING_METRICS)} followed by @K with K in "
                         f"{', '.join(map(str, top_ks))}, e.g. recall@100")


@dataclasses.dataclass(frozen=True)
class BlessingConfig:
    """When the evaluator blesses a model (every check must hold).

    metric: the overall metric the checks compare.
    min_value: absolute threshold: metric >= min_value.
    beat_baselines: baselines the model must beat strictly on `metric`.
    max_regression: against the last blessed model, the metric may drop by
      at most this much (absolute); 0 means no regression at all.
    """

    metric: str = "recall@100"
    min_value: float = 0.0
    beat_baselines: Tuple[str, ...] = ("most_popular",)
    max_regression: float = 0.0


@dataclasses.dataclass(frozen=True)
class IndexGateConfig:
    """When the pusher ships a ScaNN index (tuned on held-out queries).

    recall_k, target_recall: recall@recall_k against exact search that the
      chosen index settings must reach.
    max_latency_ms: bound on the median single-query search time of the index.
    keep_versions: pushed versions kept on disk (older ones are removed).
    """

    recall_k: int = 10
    target_recall: float = 0.95
    max_latency_ms: float = 10.0
    keep_versions: int = 5

# Dotted path of the DNN softmax candidate generator's Trainer code.
SOFTMAX_RUN_FN = "tfx_recsys.models.softmax.run_fn"


class _Hyperparameters:
    """Conversion of a model's hyperparameters to and from Trainer custom_config.

    The Trainer's custom_config is {"dataset": DatasetConfig.to_dict(),
    **hyperparameters, "code_fingerprint": ...}; keys that are not fields of
    the dataclass are ignored, JSON lists become tuples again.
    """

    def to_custom_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, custom_config: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in (custom_config or {}).items() if k in fields}
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig(_Hyperparameters):
    """Hyperparameters of the two-tower retrieval model (models/two_tower.py).

    embedding_dim: output size of both towers, and of the user id, item id
      and history embeddings.
    feature_dim: embedding size of every other feature.
    hidden_layers: widths of each tower's ReLU layers before its output layer.
    temperature: in-batch logits are divided by it (below 1 with normalize).
    logq_weight: the logQ correction subtracts logq_weight * log(the item's
      sampling probability) from its logits: 1 = the full correction, 0 =
      none (popular items are then pushed down as over-sampled negatives).
    normalize: L2-normalise both towers' outputs (cosine scores).
    use_history: the query tower reads the user's history bag.
    use_recency: the query tower reads the seconds_since_previous bucket (the
      query signature then takes the request `timestamp`).
    share_item_embeddings: history and the candidate's item id share a table.
    """

    embedding_dim: int = 64
    feature_dim: int = 16
    hidden_layers: Tuple[int, ...] = (128,)
    temperature: float = 0.2
    logq_weight: float = 1.0
    normalize: bool = True
    use_history: bool = True
    use_recency: bool = False
    share_item_embeddings: bool = True
    optimizer: str = "adam"
    learning_rate: float = 0.001
    epochs: int = 10
    batch_size: int = 1024
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class SoftmaxConfig(_Hyperparameters):
    """Hyperparameters of the DNN softmax candidate generator (models/softmax.py).

    embedding_dim: the query vector's size = the item table's width.
    feature_dim: embedding size of the user features other than the id.
    hidden_layers: widths of the query tower's ReLU layers.
    use_history, use_recency: as in TwoTowerConfig.
    share_item_embeddings: the history bag is embedded with the softmax
      weights themselves (else with its own table).
    max_full_softmax_items: full softmax up to this many item rows, sampled
      softmax above.
    num_sampled: sampled negatives per batch (drawn by train frequency,
      logQ-corrected) when the softmax is sampled.
    """

    embedding_dim: int = 64
    feature_dim: int = 16
    hidden_layers: Tuple[int, ...] = (256,)
    use_history: bool = True
    use_recency: bool = False
    share_item_embeddings: bool = False
    max_full_softmax_items: int = 50_000
    num_sampled: int = 2_000
    optimizer: str = "adam"
    learning_rate: float = 0.001
    epochs: int = 20
    batch_size: int = 1024
    seed: int = 42


# Retrieval models the Trainer can run (`recsys run --model NAME`):
# name -> (dotted path of run_fn, hyperparameters class).
DEFAULT_MODEL = "two_tower"
MODELS = {"two_tower": (TWO_TOWER_RUN_FN, TwoTowerConfig),
          "softmax": (SOFTMAX_RUN_FN, SoftmaxConfig)}
