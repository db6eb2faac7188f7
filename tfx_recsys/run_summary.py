"""What a pipeline run left in ML Metadata, read back for people.

Used by the CLI (the table at the end of `recsys run`, `recsys recommend`)
and by tests. MLMD 1.21 has no filter queries, so everything walks types,
executions and events.
"""

import json
import os
from typing import Dict, List, Optional

from tfx_recsys.serving import contract


def open_store(root: str):
    """The run root's ML Metadata store (read-write, never created): its
    metadata.sqlite, or the MySQL/MariaDB store the root's runs recorded."""
    from ml_metadata.metadata_store import metadata_store

    from tfx_recsys.pipeline import metadata_store as store_location

    return metadata_store.MetadataStore(store_location.connection_config(root))


def executions_of(store, component: str) -> List:
    """Executions of the pipeline node with id `component` (e.g. "Trainer",
    "RankingTrainer"), oldest first; for ids that name no node, executions
    whose type name ends with it (a component class)."""
    nodes = [c for c in store.get_contexts_by_type("node")
             if c.name.rsplit(".", 1)[-1] == component]
    if nodes:
        executions = {e.id: e for node in nodes
                      for e in store.get_executions_by_context(node.id)}
        return sorted(executions.values(), key=lambda e: e.id)
    type_ids = {t.id for t in store.get_execution_types()
                if t.name.split(".")[-1] == component}
    return sorted((e for e in store.get_executions() if e.type_id in type_ids),
                  key=lambda e: e.id)


def node_id(store, execution) -> str:
    """The pipeline node an execution ran for (e.g. "RankingTrainer"), or
    its type's class name when MLMD has no node context for it."""
    node_type = store.get_context_type("node")
    for context in store.get_contexts_by_execution(execution.id):
        if context.type_id == node_type.id:
            return context.name.rsplit(".", 1)[-1]
    return store.get_execution_types_by_id([execution.type_id])[0].name.split(".")[-1]


def latest_execution(store, component_class: str):
    executions = executions_of(store, component_class)
    return executions[-1] if executions else None


def output_artifacts(store, execution, key: Optional[str] = None) -> List:
    """Artifacts an execution wrote, optionally only those under `key`."""
    from ml_metadata.proto import metadata_store_pb2

    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.OUTPUT
              and (key is None or any(s.key == key for s in e.path.steps))]
    return store.get_artifacts_by_id([e.artifact_id for e in events])


def input_artifacts(store, execution) -> List:
    from ml_metadata.proto import metadata_store_pb2

    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    return store.get_artifacts_by_id([e.artifact_id for e in events])


def _value(value_proto):
    kind = value_proto.WhichOneof("value")
    return getattr(value_proto, kind) if kind else None


def property_value(entity, name: str, default=None):
    """A property or custom property of an MLMD artifact or execution."""
    for props in (entity.properties, entity.custom_properties):
        if name in props:
            return _value(props[name])
    return default


def data_path(store) -> Optional[str]:
    """The dataset directory the latest ExampleGen execution read."""
    execution = latest_execution(store, "InteractionsExampleGen")
    return property_value(execution, "input_base") if execution else None


def anomalies(store) -> Dict[str, List[str]]:
    """ExampleValidator's findings of its latest execution: {split: [lines]}."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    execution = latest_execution(store, "ExampleValidator")
    found: Dict[str, List[str]] = {}
    if execution is None:
        return found
    for artifact in output_artifacts(store, execution, "anomalies"):
        for split in sorted(os.listdir(artifact.uri)):
            path = os.path.join(artifact.uri, split, "SchemaDiff.pb")
            if not os.path.exists(path):
                continue
            report = anomalies_pb2.Anomalies()
            with open(path, "rb") as f:
                report.ParseFromString(f.read())
            lines = [f"{feature}: {info.short_description}"
                     for feature, info in sorted(report.anomaly_info.items())]
            if report.HasField("dataset_anomaly_info"):
                lines.append(report.dataset_anomaly_info.short_description)
            if lines:
                found[split.replace("Split-", "")] = lines
    return found


def ingestion(store) -> Dict:
    """What the latest ExampleGen execution did with the rows it read: per
    table, rows read = accepted + rejected + duplicates + filtered
    ("tables", {table: {"file", "rows", ...}}; {} for runs before it was
    recorded); rejected rows (by file and reason, and the file listing
    them), exact duplicates removed and rows filtered by the
    implicit-feedback rule."""
    execution = latest_execution(store, "InteractionsExampleGen")
    if execution is None:
        return {}
    for artifact in output_artifacts(store, execution, "examples"):
        summary_json = property_value(artifact, "rejected_summary")
        accounting_json = property_value(artifact, "row_accounting")
        return {
            "tables": json.loads(accounting_json) if accounting_json else {},
            "rejected_rows": int(property_value(artifact, "rejected_rows", 0) or 0),
            "rejected_summary": json.loads(summary_json) if summary_json else {},
            "rejected_file": os.path.join(artifact.uri, "rejected_rows.csv"),
            "duplicates_removed": int(
                property_value(artifact, "duplicates_removed", 0) or 0),
            "filtered_below_min_rating": int(
                property_value(artifact, "filtered_below_min_rating", 0) or 0),
        }
    return {}


def summary(root: str) -> Dict:
    """Metrics, blessing and push of the latest evaluation and push."""
    store = open_store(root)
    result: Dict = {"data_path": data_path(store), "anomalies": anomalies(store),
                    "ingestion": ingestion(store)}
    evaluator = latest_execution(store, "RetrievalEvaluator")
    if evaluator is not None:
        for artifact in output_artifacts(store, evaluator, "evaluation"):
            with open(os.path.join(artifact.uri, "metrics.json")) as f:
                result["evaluation"] = json.load(f)
    pusher = latest_execution(store, "ScannPusher")
    if pusher is not None:
        for artifact in output_artifacts(store, pusher, "pushed_model"):
            result["pushed"] = bool(property_value(artifact, "pushed", 0))
            result["pushed_destination"] = property_value(artifact,
                                                          "pushed_destination")
            for name in PUSHED_PROPERTIES:
                result[name] = property_value(artifact, name)
    return result


# What summary() reads of the PushedModel beside whether and where it pushed.
PUSHED_PROPERTIES = tuple(name for name in contract.PUSHED_PROPERTIES
                          if name not in ("pushed", "pushed_version", "pushed_destination"))


def served_line(result: Dict) -> str:
    """Which model a push serves, in words (empty when nothing was pushed)."""
    if not result.get("pushed"):
        return ""
    if result.get("served_model") == "refresh":
        return ("the served models, refreshed with new data (items embedded, user "
                "state and index rebuilt; no training)")
    if result.get("served_model") != "refit":
        return "the evaluated model (trained on the train split; --no-refit)"
    line = ("the final fit: the evaluated model's settings retrained on every "
            "interaction")
    if result.get("refit_check_k"):
        line += (f" (refit check, recall@{result['refit_check_k']} on the eval split: "
                 f"evaluated {result['refit_check_evaluated_recall']:.4f}, refit "
                 f"{result['refit_check_refit_recall']:.4f})")
    return line


def format_table(result: Dict, ks=(10, 50, 100), model_label: str = "model") -> str:
    """Overall metrics as plain text: one row per metric, one column per model
    (the trained one under `model_label`, then the baselines)."""
    evaluation = result.get("evaluation")
    if not evaluation:
        return "no evaluation found"
    columns = {model_label: evaluation["model"]["overall"]}
    ranking = evaluation.get("ranking")
    if ranking:  # the served list first, then the ranker over the whole corpus
        columns = {"two-stage": ranking["two_stage"]["overall"], **columns,
                   "ranker": ranking["ranker"]["overall"]}
    columns.update({name: b["overall"] for name, b in evaluation["baselines"].items()})
    if evaluation.get("last_blessed"):
        columns["last blessed"] = evaluation["last_blessed"]["overall"]
    metric_names = ([f"{name}@{k}" for name in ("recall", "ndcg", "hit_rate")
                     for k in ks] + [f"mrr@{ks[0]}"]
                    + [f"top_k_accuracy@{k}" for k in ks]
                    + [f"coverage@{ks[0]}", f"coverage@{ks[-1]}", "novelty@10",
                       "diversity@10"])
    if any("sampled_hit_rate@10" in values for values in columns.values()):
        metric_names += ["sampled_hit_rate@10", "sampled_ndcg@10"]
    width = max(max(len(n) for n in columns) + 2, 9)
    lines = ["metric".ljust(20) + "".join(n.rjust(width) for n in columns)]
    for metric in metric_names:
        lines.append(metric.ljust(20) + "".join(
            f"{values.get(metric, float('nan')):{width}.4f}" for values in columns.values()))
    return "\n".join(lines)
