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
INTERACTIONS_SCHEMA = os.path.join(SCHEMA_DIR, "interactions.pbtxt")
DEFAULT_ROOT = os.path.join(REPO_ROOT, "runs", "default")

# Dotted paths of the model code (template style: importable from the
# installed package, so they also resolve inside a Kubeflow container).
PREPROCESSING_FN = "tfx_recsys.models.features.preprocessing_fn"
TWO_TOWER_RUN_FN = "tfx_recsys.models.two_tower.run_fn"

# Split rule (see README "Splits"): per user, interactions ordered by
# (timestamp, item_id); the latest floor(EVAL_FRACTION * n) form `eval`.
EVAL_FRACTION = 0.2
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

# Raw request features of the serving signature (the users.csv columns).
USER_STRING_FEATURES = ("user_id", "gender", "occupation", "zip_code")
USER_INT_FEATURES = ("age",)


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
    """Hyperparameters of the two-tower retrieval model."""

    embedding_dim: int = 64
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 0.1
    seed: int = 42

    def to_custom_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, custom_config: dict) -> "TwoTowerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (custom_config or {}).items() if k in names})
