"""Plain settings of the pipeline: names, defaults, thresholds.

This module imports no TensorFlow and does no work at import time, so the CLI
starts fast. Every value here is a default: `create_pipeline()` takes each one
as a parameter.
"""

import dataclasses
import os
from typing import Optional, Tuple

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
# The evaluator scores at most this many eval users (a seeded sample, the
# same in every run) against the whole corpus; 0 = all of them.
MAX_EVAL_USERS = 10_000
# A local run puts each component in a process of its own (as Kubeflow puts
# each in a container) when its input data reach this size, so that memory
# one component used is free for the next; smaller runs keep one process,
# which saves 5-15 s of start-up per component.
PROCESS_PER_COMPONENT_MIN_BYTES = 256 << 20


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
    epochs: passes over the train split.
    warm_start_epochs: passes when the Trainer starts from the last blessed
      model's weights (models/warm_start.py); None: half of `epochs`, at
      least 1 (the carried weights need fewer passes to settle).
    id_dropout: the share of training examples whose user id and item id are
      replaced by their vocabulary's OOV id, so that the OOV rows learn what
      a user or item never seen looks like from its features (new users,
      items added by `recsys refresh`); 0: off. Hash-bucket ids, which have
      no OOV row, are kept. Off by default: on MovieLens it lifts the new
      items' recall but costs overall recall (docs/continuous.md).
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
    warm_start_epochs: Optional[int] = None
    id_dropout: float = 0.0
    batch_size: int = 1024
    seed: int = 42

    def __post_init__(self):
        _check_warm_start_epochs(self.warm_start_epochs)
        _check_id_dropout(self.id_dropout)


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
    epochs, warm_start_epochs: as in TwoTowerConfig.
    id_dropout: as in TwoTowerConfig, for the user id only (the item id is
      the softmax's class).
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
    warm_start_epochs: Optional[int] = None
    id_dropout: float = 0.0
    batch_size: int = 1024
    seed: int = 42

    def __post_init__(self):
        _check_warm_start_epochs(self.warm_start_epochs)
        _check_id_dropout(self.id_dropout)


def _check_id_dropout(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"id_dropout must be a number in [0, 1), got {value!r}")


def _check_warm_start_epochs(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"warm_start_epochs must be None (half of epochs) or an "
                         f"int >= 1, got {value!r}")


def warm_start_epochs(hparams) -> int:
    """Passes a warm-started retrieval Trainer runs (TwoTowerConfig or
    SoftmaxConfig): warm_start_epochs, else half of epochs, at least 1."""
    return hparams.warm_start_epochs or max(1, hparams.epochs // 2)


# Retrieval models the Trainer can run (`recsys run --model NAME`):
# name -> (dotted path of run_fn, hyperparameters class).
DEFAULT_MODEL = "two_tower"
MODELS = {"two_tower": (TWO_TOWER_RUN_FN, TwoTowerConfig),
          "softmax": (SOFTMAX_RUN_FN, SoftmaxConfig)}


# --------------------------------------------------------------------------
# Ranking stage: Neural Collaborative Filtering (models/ncf.py) and the
# re-ranking inside the served model (tfx_recsys/serving/reranking.py).

NCF_RUN_FN = "tfx_recsys.models.ncf.run_fn"
NCF_VARIANTS = ("mf", "gmf", "mlp", "neumf")


@dataclasses.dataclass(frozen=True)
class NcfConfig(_Hyperparameters):
    """Hyperparameters of the NCF ranker (He et al. 2017), implicit feedback.

    variant: "gmf" (element-wise product of user and item embeddings, then a
      learned output weight), "mlp" (concatenated embeddings through
      mlp_layers), "neumf" (GMF and MLP with their own embeddings, their last
      layers concatenated into one output), or "mf" (the baseline: a plain
      dot product of user and item embeddings plus biases).
    factors: GMF / MF embedding size (the paper's "predictive factors").
    mlp_layers: MLP widths; the user and item MLP embeddings are each
      mlp_layers[0] / 2 wide.
    pretrain: NeuMF only: first train GMF and MLP alone (`epochs` each), then
      start NeuMF from their weights, the output layer being
      [alpha * h_gmf, (1 - alpha) * h_mlp], and fine-tune it with plain SGD
      at `pretrain_learning_rate`.
    negatives: uniformly sampled unobserved items per positive, resampled
      every epoch (deterministic for `seed`).
    l2: L2 penalty on the embeddings.
    """

    # Chosen on a validation split carved from MovieLens-100K's train part
    # (each user's latest 10% of train interactions), never on eval.
    variant: str = "neumf"
    factors: int = 32
    mlp_layers: Tuple[int, ...] = (128, 64, 32)
    pretrain: bool = True
    alpha: float = 0.5
    negatives: int = 4
    l2: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 0.003
    pretrain_learning_rate: float = 0.01
    epochs: int = 10
    batch_size: int = 1024
    seed: int = 42

    def __post_init__(self):
        if self.variant not in NCF_VARIANTS:
            raise ValueError(f"unknown NCF variant {self.variant!r}; use one of "
                             f"{', '.join(NCF_VARIANTS)}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be positive, got {self.negatives}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


@dataclasses.dataclass(frozen=True)
class RerankConfig:
    """The served model's last stage: retrieval top-N -> ranker -> re-ranking.

    candidates: N, the retrieval candidates the ranker scores.
    ranker_weight: final score = (1 - w) * z(retrieval score) + w *
      z(ranker logit), z-scored within each user's candidates; 1 = the
      ranker alone, 0 = retrieval order.
    exclude_seen: never return items the user interacted with in the
      training data.
    dislike_below: also never return items the user rated below this (only
      matters with exclude_seen off, e.g. for re-consumable items); None: off.
    freshness_weight: adds w * freshness, freshness in [0, 1] being the
      item's percentile by `freshness_feature` (a numeric item feature such
      as a release year; "" = the item's first appearance in the training
      data).
    diversity: "none", "mmr" (maximal marginal relevance over the retrieval
      model's item embeddings, trading relevance for novelty with
      mmr_lambda: 1 = relevance only) or "genre_cap" (at most genre_cap items
      per value of the diversity feature, e.g. genres, in the top list).
    """

    candidates: int = 200
    # Chosen on the validation split (models retrained on MovieLens-100K's
    # train part, each user's latest 20% of it held out): NDCG@10 0.2498 at
    # w = 0 (retrieval order), 0.2526 at 0.1, 0.2563 at 0.2 and 0.3 (0.3 has
    # the higher recall@100), 0.2538 at 0.5, 0.1861 at 1.
    ranker_weight: float = 0.3
    exclude_seen: bool = True
    dislike_below: Optional[float] = None
    freshness_weight: float = 0.0
    freshness_feature: str = ""
    diversity: str = "none"
    mmr_lambda: float = 0.8
    genre_cap: int = 3

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"rerank.candidates must be positive, got {self.candidates}")
        if not 0.0 <= self.ranker_weight <= 1.0:
            raise ValueError(f"rerank.ranker_weight must be in [0, 1], got {self.ranker_weight}")
        if self.diversity not in ("none", "mmr", "genre_cap"):
            raise ValueError(f"rerank.diversity must be none, mmr or genre_cap, "
                             f"got {self.diversity!r}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"rerank.mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.genre_cap < 1:
            raise ValueError(f"rerank.genre_cap must be positive, got {self.genre_cap}")
