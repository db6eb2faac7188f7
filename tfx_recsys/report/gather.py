"""The report's facts: what one pipeline run left, read into plain data.

Reads ML Metadata (the run's executions and artifacts), the evaluator's
metrics.json, the pusher's index_tuning.json, the lineage, and asks the
pushed SavedModel for the top-k of a few eval users. Everything that touches
a store, a file or a model is here, so rendering (render.py) is a pure
function of the dicts and lists this returns (JSON-serialisable); the page
can then be tested on hand-made data.

The data (every key optional unless said otherwise):

    {"run": {"id" (required), "date", "root", "data_path", "dataset", "spans",
             "ran", "cached", "failed"},
     "model_name": "two_tower",
     "evaluation": metrics.json as the evaluator writes it, or None,
     "push": {"ran": bool, "pushed": bool, "version", "destination", "reason",
              "served" (which model: run_summary.served_line),
              "figures": {name: number}, "tuning": index_tuning.json or None,
              "tuning_note", "model_dir"} or None (no push step in the run),
     "lineage_svg": SVG markup from lineage.to_svg (trusted, not escaped),
     "recommendations": {"model_dir", "k", "users": [{"user_id", "features":
              {name: value}, "held_out": int, "items": [{"item_id", "title",
              "score", "hit"}]}], "error"} or None}
"""

import datetime
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from tfx_recsys import run_summary

# What the pusher writes into its PushedModel artifact (executor.TUNING_FILE;
# not imported: that module loads TFX and the serving model code).
TUNING_FILE = "index_tuning.json"
NUM_USERS = 3  # sample users on the page
TOP_K = 10  # recommendations shown per user


def gather_report_data(root: str, run_id: Optional[str] = None,
                       num_users: int = NUM_USERS, k: int = TOP_K) -> Dict:
    """Everything the page shows about one pipeline run (default: the newest).

    Raises FileNotFoundError without a metadata store and LookupError for an
    unknown run id.
    """
    root = os.path.abspath(root)
    store = run_summary.open_store(root)
    context = _run_context(store, run_id)
    executions = _run_executions(store, context)
    example_gen = executions.get("InteractionsExampleGen")
    data: Dict = {"run": _run_facts(store, root, context, executions, example_gen),
                  "model_name": _model_name(executions.get("Trainer")),
                  "evaluation": _evaluation(store, executions.get("RetrievalEvaluator")),
                  "push": _push(store, executions.get("ScannPusher")),
                  "lineage_svg": None, "recommendations": None}
    push = data["push"]
    if push and push.get("pushed"):
        data["lineage_svg"] = _lineage_svg(store, push.get("version"))
        data["recommendations"] = _recommendations(
            store, example_gen, push.get("model_dir"), num_users, k,
            _dataset_config(example_gen))
    return data


def _run_context(store, run_id: Optional[str]):
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    if not runs:
        raise LookupError("no pipeline run recorded")
    if run_id is None:
        return runs[-1]
    for context in runs:
        if context.name == run_id:
            return context
    newest = ", ".join(c.name for c in runs[-5:])
    raise LookupError(f"no pipeline run {run_id!r} (newest runs: {newest})")


def _run_executions(store, context) -> Dict:
    """The run's executions by pipeline node id (the last one of each)."""
    by_class = {}
    for execution in sorted(store.get_executions_by_context(context.id),
                            key=lambda e: e.id):
        by_class[run_summary.node_id(store, execution)] = execution
    return by_class


def _format_time(ms_since_epoch: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms_since_epoch / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _dataset_config(example_gen) -> Dict:
    """The data contract ExampleGen ran with (JSON exec property), or {}."""
    text = run_summary.property_value(example_gen, "dataset") if example_gen else None
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _run_facts(store, root: str, context, executions: Dict, example_gen) -> Dict:
    from ml_metadata.proto import metadata_store_pb2

    state = metadata_store_pb2.Execution.State
    states = [e.last_known_state for e in executions.values()]
    data_path = (run_summary.property_value(example_gen, "input_base")
                 if example_gen else None)
    dataset = _dataset_config(example_gen).get("name") or (
        os.path.basename(os.path.normpath(data_path)) if data_path else None)
    return {"id": context.name, "date": _format_time(context.create_time_since_epoch),
            "root": root, "data_path": data_path, "dataset": dataset,
            "spans": _spans(store, example_gen),
            "ran": states.count(state.COMPLETE), "cached": states.count(state.CACHED),
            "failed": states.count(state.FAILED)}


def _spans(store, example_gen) -> Optional[str]:
    """The spans the run's examples hold ("3,4"); None without spans."""
    if example_gen is None:
        return None
    for artifact in run_summary.output_artifacts(store, example_gen, "examples"):
        spans = run_summary.property_value(artifact, "spans")
        if spans and spans != "0":
            return spans
    return None


def _model_name(trainer) -> Optional[str]:
    """`two_tower` from the Trainer's run_fn `tfx_recsys.models.two_tower.run_fn`."""
    run_fn = run_summary.property_value(trainer, "run_fn") if trainer else None
    parts = (run_fn or "").split(".")
    return parts[-2] if len(parts) >= 2 else None


def _evaluation(store, execution) -> Optional[Dict]:
    if execution is None:
        return None
    for artifact in run_summary.output_artifacts(store, execution, "evaluation"):
        path = os.path.join(artifact.uri, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None


_PUSH_FIGURES = ("index_recall", "index_recall_k", "index_latency_ms_p50",
                 "exact_search_latency_ms_p50", "serving_latency_ms_p50",
                 "serving_latency_ms_p99", "index_num_leaves", "index_num_leaves_to_search",
                 "index_num_reordering_candidates", "num_items", "top_k")


def _facts(artifact, names) -> Dict:
    """The artifact's properties among `names` that are set."""
    values = {n: run_summary.property_value(artifact, n) for n in names}
    return {n: v for n, v in values.items() if v is not None}


def _read_tuning(uri: str) -> Optional[Dict]:
    path = os.path.join(uri, TUNING_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _push(store, execution) -> Optional[Dict]:
    """What the run's pusher did: the push, its figures and tuning trials."""
    if execution is None:
        return None
    artifacts = run_summary.output_artifacts(store, execution, "pushed_model")
    if not artifacts:
        return {"ran": False, "pushed": False}
    artifact = artifacts[0]
    facts = _facts(artifact, ("pushed", "pushed_version", "pushed_destination", "reason"))
    served = _facts(artifact, ("served_model", "refit_check_k",
                               "refit_check_evaluated_recall", "refit_check_refit_recall"))
    push = {"ran": True, "pushed": bool(facts.get("pushed")),
            "version": facts.get("pushed_version"),
            "destination": facts.get("pushed_destination"), "reason": facts.get("reason"),
            "served": run_summary.served_line({"pushed": bool(facts.get("pushed")),
                                               **served}),
            "figures": _facts(artifact, _PUSH_FIGURES), "tuning": _read_tuning(artifact.uri),
            "tuning_note": None, "model_dir": None}
    if push["pushed"] and push["tuning"] is None:
        # "Already serving this model": the figures are on the earlier push.
        earlier = _earlier_push(store, artifact, push["version"])
        if earlier is not None:
            push["tuning"] = _read_tuning(earlier.uri)
            push["figures"] = _facts(earlier, _PUSH_FIGURES)
            push["tuning_note"] = (f"measured when version {push['version']} was first "
                                   f"pushed (PushedModel #{earlier.id})")
    # The run's own copy of the pushed model survives pruning of old versions.
    for candidate in (os.path.join(artifact.uri, "model"), push["destination"]):
        if candidate and os.path.exists(os.path.join(candidate, "saved_model.pb")):
            push["model_dir"] = candidate
            break
    return push


def _earlier_push(store, artifact, version):
    for other in sorted(store.get_artifacts_by_type("PushedModel"), key=lambda a: -a.id):
        if (other.id < artifact.id
                and run_summary.property_value(other, "pushed_version") == version
                and _read_tuning(other.uri) is not None):
            return other
    return None


def _lineage_svg(store, version) -> Optional[str]:
    from tfx_recsys import lineage

    try:
        return lineage.to_svg(lineage.model_lineage(store, version))
    except LookupError:
        return None


# --------------------------------------------------------------------------
# Sample recommendations from the pushed SavedModel


def _recommendations(store, example_gen, model_dir: Optional[str], num_users: int,
                     k: int, dataset: Dict) -> Dict:
    result: Dict = {"model_dir": model_dir, "k": k, "users": [], "error": None}
    if model_dir is None:
        result["error"] = "the pushed model is no longer on disk"
        return result
    artifacts = {}
    for key in ("examples", "items"):
        found = run_summary.output_artifacts(store, example_gen, key) if example_gen else []
        artifacts[key] = found[0].uri if found else None
    if None in artifacts.values():
        result["error"] = "the run's examples are not recorded"
        return result
    try:
        result["users"] = _recommend(model_dir, artifacts["examples"], artifacts["items"],
                                     num_users, k, _title_feature(dataset))
    except Exception as e:  # a broken model must not cost the rest of the page
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def _title_feature(dataset: Dict) -> str:
    """The item feature that names an item: `title`, else the config's first text."""
    features = (dataset.get("items") or {}).get("features") or {}
    if "title" in features or not features:
        return "title"
    texts = [name for name, spec in features.items()
             if isinstance(spec, dict) and spec.get("kind") == "text"]
    return texts[0] if texts else "title"


def _sample_users(examples_uri: str, num_users: int):
    """The first eval users by id (u2 before u10): their first eval row and eval items."""
    from tfx_recsys import config, examples_io

    rows, held_out = {}, {}
    for row in examples_io.read_rows(examples_uri, config.EVAL_SPLIT):
        user = examples_io.scalar(row, "user_id")
        rows.setdefault(user, row)
        held_out.setdefault(user, set()).add(examples_io.scalar(row, "item_id"))
    order = sorted(rows, key=lambda u: (len(u), u))
    return [(rows[u], held_out[u]) for u in order[:num_users]]


# Request values meaning "missing" (the serving contract): "", NaN, int64 min.
_MISSING_INT = -2 ** 63


def _missing_value(dtype):
    if dtype.is_integer:
        return _MISSING_INT
    return math.nan if dtype.is_floating else ""


def _is_list_input(spec) -> bool:
    return spec.shape.rank is not None and spec.shape.rank >= 2


def _request_value(row: Dict[str, list], name: str, spec):
    """The user's value of one signature input, in the input's dtype and rank."""
    convert = int if spec.dtype.is_integer else float if spec.dtype.is_floating else str
    values = [convert(v) for v in row.get(name) or []]
    if _is_list_input(spec):
        return values  # a list feature (e.g. history): one list per user
    return values[0] if values else _missing_value(spec.dtype)


def _request(signature, rows: Sequence[Dict[str, list]]) -> Dict:
    """Signature inputs built from raw example rows: one batch, in the signature's dtypes."""
    import tensorflow as tf

    _, specs = signature.structured_input_signature
    request = {}
    for name, spec in specs.items():
        values = [_request_value(row, name, spec) for row in rows]
        if _is_list_input(spec):  # padded to the longest
            width = max([len(v) for v in values] + [1])
            values = [v + [_missing_value(spec.dtype)] * (width - len(v)) for v in values]
        request[name] = tf.constant(values, spec.dtype)
    return request


def _recommend(model_dir: str, examples_uri: str, items_uri: str, num_users: int,
               k: int, title_feature: str) -> List[Dict]:
    import scann  # noqa: F401  registers the ScaNN op the SavedModel uses
    import tensorflow as tf

    from tfx_recsys import config, examples_io

    users = _sample_users(examples_uri, num_users)
    if not users:
        return []
    titles = {examples_io.scalar(r, "item_id"): examples_io.scalar(r, title_feature)
              for r in examples_io.read_rows(items_uri, config.ITEMS_SPLIT)}
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    request = _request(serve, [row for row, _ in users])
    outputs = serve(**request)
    item_ids = outputs["item_ids"].numpy()
    scores = outputs["scores"].numpy()
    result = []
    for i, (row, held_out) in enumerate(users):
        features = {name: _display_value(values.numpy()[i])
                    for name, values in request.items()}
        items = []
        for item, score in zip(item_ids[i][:k], scores[i][:k]):
            item = item.decode() if isinstance(item, bytes) else str(item)
            if not math.isfinite(float(score)):
                continue  # padding of a short result
            items.append({"item_id": item, "title": titles.get(item),
                          "score": float(score), "hit": item in held_out})
        result.append({"user_id": examples_io.scalar(row, "user_id"), "features": features,
                       "held_out": len(held_out), "items": items})
    return result


def _display_value(value):
    """A request value for people: text, a number, or None when missing."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list):
        shown = [_display_value(v) for v in value]
        return ", ".join(str(v) for v in shown if v is not None) or None
    if value == "" or value == _MISSING_INT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value

