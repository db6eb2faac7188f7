"""The serving contract in one place: the signature names of the exported
and the pushed models, how a request says a value is missing, and the facts
the pusher records on its PushedModel artifact.

Plain constants, no TensorFlow: the model code, the pusher, the server, the
CLI and the report all read them from here.
"""

import math

# The pushed two-stage model's signatures (tfx_recsys.serving.two_stage).
SERVING_SIGNATURE = "serving_default"                   # a user id
SERVING_WITH_HISTORY_SIGNATURE = "serving_with_history"  # the request's own history
SERVING_WITH_EXCLUSIONS_SIGNATURE = "serving_with_exclusions"  # + items to leave out
SERVED_SIGNATURES = (SERVING_SIGNATURE, SERVING_WITH_HISTORY_SIGNATURE,
                     SERVING_WITH_EXCLUSIONS_SIGNATURE)

# The Trainer's retrieval model's signatures (tfx_recsys.models.export), which
# the evaluator and the pusher call; and the ranker's.
QUERY_SIGNATURE = "query_embedding"
QUERY_WITH_HISTORY_SIGNATURE = "query_embedding_with_history"
CANDIDATE_SIGNATURE = "candidate_embedding"
RETRIEVAL_SIGNATURES = (QUERY_SIGNATURE, QUERY_WITH_HISTORY_SIGNATURE, CANDIDATE_SIGNATURE)
RANKER_SIGNATURE = "score"

# A request leaves a feature out with "" (strings), NaN (floats) or this
# int64 (integers), at ingest as at serving.
MISSING_INT = -(2 ** 63)


def missing_value_of(dtype_name: str):
    """What a request holds where a feature is absent, by the input's dtype
    name (TensorFlow's "string", "float32", "int64"; TF Serving's "float")."""
    if dtype_name == "string":
        return ""
    if dtype_name.startswith(("float", "double", "half", "bfloat")):
        return math.nan
    return MISSING_INT


def is_missing(value) -> bool:
    """Whether a raw request or table value stands for "absent"."""
    if isinstance(value, (bytes, str)):
        return len(value) == 0
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or value == MISSING_INT


# What the pusher records on its PushedModel (custom properties), which
# `recsys run`, the report and `recsys lineage` read.
PUSHED_PROPERTIES = (
    "pushed", "pushed_version", "pushed_destination",
    "reason",                       # why nothing was pushed (absent on a push)
    "served_model",                 # "refit", "evaluated" or "refresh"
    "refit_check_k", "refit_check_evaluated_recall", "refit_check_refit_recall",
    "index_recall", "index_recall_k", "index_latency_ms_p50",
    "exact_search_latency_ms_p50", "serving_latency_ms_p50", "num_items")
