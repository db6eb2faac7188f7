"""Where a pushed model came from, and what each run did, read from ML Metadata.

`model_lineage` walks back from a PushedModel through the executions that
produced each artifact (events: MLMD 1.21 has no filter queries) to the
ExampleGen's examples, collecting the facts a person asks about at each step:
the data path and fingerprint, the schema, the Transform graph, the trainer's
hyperparameters and code fingerprint, the evaluation and blessing, the index
figures. `format_tree` prints it; `to_svg` draws it. `runs` summarises every
pipeline run in one line each.
"""

import dataclasses
import html
import json
import os
from typing import Dict, List, Optional

from tfx_recsys import run_summary

# Facts worth showing, per artifact type and per execution type (class name).
_ARTIFACT_FACTS = {
    "Examples": ("input_fingerprint", "span", "spans"),
    "PushedModel": ("pushed_version", "pushed_destination", "served_model",
                    "refit_check_evaluated_recall", "refit_check_refit_recall",
                    "index_recall_k", "index_recall", "index_latency_ms_p50",
                    "serving_latency_ms_p50", "reason"),
    "ModelBlessing": ("blessed", "reason"),
    "ModelEvaluation": ("recall@10", "recall@100", "ndcg@10"),
}
_EXECUTION_FACTS = {
    "InteractionsExampleGen": ("input_base", "dataset"),
    "ImportSchemaGen": ("schema_file",),
    "Trainer": ("custom_config",),
    "Transform": ("custom_config",),
    "ScannPusher": ("top_k", "index_gate"),
    "RetrievalEvaluator": ("blessing_config",),
}


@dataclasses.dataclass
class Node:
    """One artifact, the execution that produced it, and that execution's inputs."""

    artifact_id: int
    artifact_type: str
    uri: str
    facts: Dict[str, object]
    producer: Optional[str] = None  # execution type (component class)
    producer_facts: Dict[str, object] = dataclasses.field(default_factory=dict)
    inputs: List["Node"] = dataclasses.field(default_factory=list)


def _type_name(entity, getter) -> str:
    return getter([entity.type_id])[0].name.split(".")[-1]


def _facts(entity, names) -> Dict[str, object]:
    facts = {}
    for name in names:
        value = run_summary.property_value(entity, name)
        if value is not None:
            facts[name] = value
    return facts


def _node(store, artifact, seen: Dict[int, Node]) -> Node:
    from ml_metadata.proto import metadata_store_pb2

    if artifact.id in seen:
        return seen[artifact.id]
    kind = _type_name(artifact, store.get_artifact_types_by_id)
    node = Node(artifact.id, kind, artifact.uri,
                _facts(artifact, _ARTIFACT_FACTS.get(kind, ())))
    seen[artifact.id] = node
    producers = [e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
                 if e.type == metadata_store_pb2.Event.OUTPUT]
    if producers:
        [execution] = store.get_executions_by_id([producers[0]])
        kind = _type_name(execution, store.get_execution_types_by_id)
        node.producer = run_summary.node_id(store, execution)  # e.g. RankingTrainer
        node.producer_facts = _facts(execution, _EXECUTION_FACTS.get(kind, ()))
        if kind == "RetrievalEvaluator":  # the metrics behind a blessing
            for evaluation in run_summary.output_artifacts(store, execution, "evaluation"):
                node.producer_facts.update(
                    _facts(evaluation, _ARTIFACT_FACTS["ModelEvaluation"]))
        node.inputs = [_node(store, a, seen)
                       for a in run_summary.input_artifacts(store, execution)]
    return node


def pushed_models(store) -> List:
    """PushedModel artifacts that were pushed, oldest first."""
    return [a for a in sorted(store.get_artifacts_by_type("PushedModel"), key=lambda a: a.id)
            if run_summary.property_value(a, "pushed", 0)]


def model_lineage(store, version: Optional[str] = None) -> Node:
    """The lineage tree of the pushed model `version` (default: the newest)."""
    pushed = pushed_models(store)
    if version is not None:
        pushed = [a for a in pushed
                  if run_summary.property_value(a, "pushed_version") == str(version)]
    if not pushed:
        raise LookupError("no pushed model" + (f" with version {version}" if version else ""))
    return _node(store, pushed[-1], {})


def learned_spans(node: Node) -> List[int]:
    """The spans of every Examples artifact in the tree: what the pushed
    model learned from ([0] for a dataset without spans)."""
    found = set()

    def visit(n: Node) -> None:
        spans = n.facts.get("spans") if n.artifact_type == "Examples" else None
        if spans:
            found.update(int(s) for s in str(spans).split(","))
        for child in n.inputs:
            visit(child)

    visit(node)
    return sorted(found)


def _nested(value) -> str:
    """A setting inside JSON settings: a nested config by its name (the
    dataset config is long; its name says which one)."""
    if isinstance(value, dict):
        return str(value.get("name", "{...}"))
    return str(value)


def _short(value, limit: int = 90) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    if text.startswith("{"):
        try:  # JSON settings: drop the braces and quotes, keep key=value
            settings = json.loads(text)
            text = ", ".join(f"{k}={_nested(v)}" for k, v in settings.items())
            if {"name", "format", "split"} <= set(settings):  # a dataset config
                text = (f"{settings['name']} ({settings['format']}, "
                        f"{settings['split']['kind']} split)")
        except ValueError:
            pass
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_tree(node: Node) -> str:
    """An indented text tree, newest artifact first; repeats are referenced."""
    lines: List[str] = []
    printed = set()

    def visit(n: Node, depth: int) -> None:
        pad = "  " * depth
        head = f"{pad}{n.artifact_type} #{n.artifact_id}"
        if n.producer:
            head += f"  <- {n.producer}"
        if n.artifact_id in printed:
            lines.append(head + "  (see above)")
            return
        printed.add(n.artifact_id)
        lines.append(head)
        for name, value in {**n.facts, **n.producer_facts}.items():
            lines.append(f"{pad}    {name}: {_short(value)}")
        lines.append(f"{pad}    uri: {n.uri}")
        for child in n.inputs:
            visit(child, depth + 1)

    visit(node, 0)
    spans = learned_spans(node)
    if spans and spans != [0]:
        lines.insert(0, f"learned from spans: {', '.join(map(str, spans))}")
    return "\n".join(lines)


def to_svg(node: Node) -> str:
    """The lineage as an SVG picture: one column per step back from the push."""
    columns: Dict[int, List[Node]] = {}
    depth_of: Dict[int, int] = {}

    def place(n: Node, depth: int) -> None:
        if depth_of.get(n.artifact_id, -1) >= depth:
            return
        depth_of[n.artifact_id] = depth
        for child in n.inputs:
            place(child, depth + 1)

    place(node, 0)
    nodes = {}

    def collect(n: Node) -> None:
        if n.artifact_id not in nodes:
            nodes[n.artifact_id] = n
            for child in n.inputs:
                collect(child)

    collect(node)
    for artifact_id, depth in depth_of.items():
        columns.setdefault(depth, []).append(nodes[artifact_id])
    width, height, gap_x, gap_y = 200, 46, 60, 18
    position = {}
    for depth, members in columns.items():
        for row, n in enumerate(sorted(members, key=lambda m: m.artifact_id)):
            # Newest (the push) on the right, data on the left.
            x = (max(columns) - depth) * (width + gap_x) + 10
            position[n.artifact_id] = (x, row * (height + gap_y) + 10)
    total_w = (max(columns) + 1) * (width + gap_x)
    total_h = max(len(m) for m in columns.values()) * (height + gap_y) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" '
             f'height="{total_h}" font-family="sans-serif" font-size="11">']
    for n in nodes.values():
        x, y = position[n.artifact_id]
        for child in n.inputs:
            cx, cy = position[child.artifact_id]
            parts.append(f'<line x1="{cx + width}" y1="{cy + height / 2}" x2="{x}" '
                         f'y2="{y + height / 2}" stroke="#888"/>')
    for n in nodes.values():
        x, y = position[n.artifact_id]
        label = html.escape(f"{n.artifact_type} #{n.artifact_id}")
        sub = html.escape(n.producer or "")
        parts.append(f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="6" '
                     f'fill="#eef3fb" stroke="#36c"/>')
        parts.append(f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{label}</text>')
        parts.append(f'<text x="{x + 8}" y="{y + 36}" fill="#555">{sub}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def runs(store) -> List[Dict[str, object]]:
    """One summary per pipeline run, oldest first.

    Each: run name, kind ("full", or "refresh": `recsys refresh`), the spans
    read, how many components ran and how many were reused from cache, the
    evaluation's recall@100 and blessing, the pushed version.
    """
    from ml_metadata.proto import metadata_store_pb2

    state = metadata_store_pb2.Execution.State
    result = []
    run_type = store.get_context_type("pipeline_run")
    for context in sorted(store.get_contexts_by_type(run_type.name), key=lambda c: c.id):
        executions = store.get_executions_by_context(context.id)
        summary: Dict[str, object] = {
            "run": context.name,
            "ran": sum(e.last_known_state == state.COMPLETE for e in executions),
            "cached": sum(e.last_known_state == state.CACHED for e in executions),
            "failed": sum(e.last_known_state == state.FAILED for e in executions),
            "kind": "full",
        }
        for execution in executions:
            kind = _type_name(execution, store.get_execution_types_by_id)
            if kind == "RetrievalEvaluator":
                for artifact in run_summary.output_artifacts(store, execution):
                    for name in ("recall@100", "ndcg@10", "blessed"):
                        value = run_summary.property_value(artifact, name)
                        if value is not None:
                            summary[name] = value
            if kind == "InteractionsExampleGen":
                for artifact in run_summary.output_artifacts(store, execution):
                    spans = run_summary.property_value(artifact, "spans")
                    if spans:
                        summary["spans"] = spans
            if kind == "ScannPusher":
                if run_summary.property_value(execution, "refresh"):
                    summary["kind"] = "refresh"
                for artifact in run_summary.output_artifacts(store, execution):
                    summary["pushed_version"] = run_summary.property_value(
                        artifact, "pushed_version")
        result.append(summary)
    return result


def format_runs(summaries: List[Dict[str, object]]) -> str:
    lines = [f"{'run':<28}{'kind':>8}{'spans':>8}{'ran':>5}{'cached':>8}{'failed':>8}"
             f"{'recall@100':>12}{'ndcg@10':>9}{'blessed':>9}  pushed"]
    for s in summaries:
        def number(name):
            value = s.get(name)
            return f"{value:.4f}" if isinstance(value, float) else "-"
        blessed = {1: "yes", 0: "no"}.get(s.get("blessed"), "-")
        spans = "-" if s.get("spans") in (None, "0") else s["spans"]
        lines.append(f"{s['run']:<28}{s.get('kind', 'full'):>8}{spans:>8}{s['ran']:>5}{s['cached']:>8}{s['failed']:>8}"
                     f"{number('recall@100'):>12}{number('ndcg@10'):>9}{blessed:>9}  "
                     f"{s.get('pushed_version') or '-'}")
    return "\n".join(lines)


def write_svg(root: str, node: Node) -> str:
    version = node.facts.get("pushed_version", "latest")
    path = os.path.join(root, f"lineage-{version}.svg")
    with open(path, "w") as f:
        f.write(to_svg(node))
    return path
