"""`recsys report`: one self-contained HTML page per pipeline run.

Two steps, so the page can be tested without a pipeline:

* `gather_report_data(root, run_id)` reads what the run left (ML Metadata,
  the evaluator's metrics.json, the pusher's index_tuning.json, the lineage,
  and top-k lists from the pushed SavedModel for a few eval users) into plain
  dicts and lists (JSON-serialisable);
* `render_report(data)` turns that into HTML: inline CSS and inline SVG charts,
  no scripts, fonts or links to fetch (a Content-Security-Policy says so to
  the browser), every piece of text escaped.

`write_report(root, run_id)` does both and writes `<root>/reports/<run>.html`.

The data (every key optional unless said otherwise):

    {"run": {"id" (required), "date", "root", "data_path", "dataset",
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
import html
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence

from tfx_recsys import run_summary

REPORTS_DIR = "reports"
# What the pusher writes into its PushedModel artifact (executor.TUNING_FILE;
# not imported: that module loads TFX and the serving model code).
TUNING_FILE = "index_tuning.json"
NUM_USERS = 3  # sample users on the page
TOP_K = 10  # recommendations shown per user

# Slices in reading order: activity buckets by size, cold before warm, head
# to tail. Slices not listed here follow, sorted.
_SLICE_ORDER = ("user_activity:0", "user_activity:1-4", "user_activity:5-19",
                "user_activity:20-99", "user_activity:100+", "user:cold", "user:warm",
                "item_popularity:head", "item_popularity:torso", "item_popularity:tail")
# Bar colours: the model first, then the baselines and the last blessed model.
_MODEL_COLOR = "#2563eb"
_SERIES_COLORS = {"most_popular": "#9ca3af", "item_knn": "#f59e0b", "ease": "#10b981",
                  "ranker": "#0ea5e9",
                  "last blessed": "#8b5cf6"}
_BASELINE_ORDER = ("most_popular", "item_knn", "ease")
_OTHER_COLORS = ("#ec4899", "#14b8a6", "#f97316", "#64748b")
_CHOSEN_COLOR = "#dc2626"


# ==========================================================================
# Gathering: ML Metadata and files -> plain data


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
    data: Dict = {"run": _run_facts(root, context, executions, example_gen),
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


def _run_facts(root: str, context, executions: Dict, example_gen) -> Dict:
    from ml_metadata.proto import metadata_store_pb2

    state = metadata_store_pb2.Execution.State
    states = [e.last_known_state for e in executions.values()]
    data_path = (run_summary.property_value(example_gen, "input_base")
                 if example_gen else None)
    dataset = _dataset_config(example_gen).get("name") or (
        os.path.basename(os.path.normpath(data_path)) if data_path else None)
    return {"id": context.name, "date": _format_time(context.create_time_since_epoch),
            "root": root, "data_path": data_path, "dataset": dataset,
            "ran": states.count(state.COMPLETE), "cached": states.count(state.CACHED),
            "failed": states.count(state.FAILED)}


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


# ==========================================================================
# Writing


def report_path(root: str, run_id: str) -> str:
    """`<root>/reports/<run id>.html`, with characters unsafe in file names as '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", run_id)
    return os.path.join(os.path.abspath(root), REPORTS_DIR, f"{name}.html")


def write_report(root: str, run_id: Optional[str] = None) -> str:
    """Writes the page of one run (default: the newest); returns its path."""
    data = gather_report_data(root, run_id)
    path = report_path(root, data["run"]["id"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staged = path + ".tmp"
    with open(staged, "w", encoding="utf-8") as f:
        f.write(render_report(data))
    os.replace(staged, path)
    return path


# ==========================================================================
# Rendering: plain data -> HTML (pure)

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #111827;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 40px; }
header.page { background: #1e293b; color: #f8fafc; border-radius: 10px; padding: 18px 22px;
  margin-bottom: 18px; }
header.page h1 { margin: 0 0 10px; font-size: 20px; font-weight: 600; }
header.page h1 .run { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-weight: 400; color: #cbd5e1; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; }
dl.facts dt { color: #94a3b8; }
dl.facts dd { margin: 0; word-break: break-all; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-weight: 600;
  font-size: 12px; }
.badge.yes { background: #dcfce7; color: #166534; }
.badge.no { background: #fee2e2; color: #991b1b; }
ul.checks { margin: 4px 0 0; padding-left: 0; list-style: none; }
ul.checks li { padding-left: 20px; position: relative; }
ul.checks li::before { position: absolute; left: 0; font-weight: 700; }
ul.checks li.ok::before { content: "\\2713"; color: #4ade80; }
ul.checks li.failed::before { content: "\\2717"; color: #f87171; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px;
  padding: 16px 20px; margin-bottom: 18px; }
section h2 { margin: 0 0 4px; font-size: 16px; }
p.note { color: #6b7280; margin: 2px 0 12px; font-size: 13px; }
p.missing { color: #6b7280; font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eef0f3; text-align: right;
  white-space: nowrap; }
th { background: #f9fafb; font-weight: 600; color: #374151; }
th:first-child, td:first-child { text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; color: #1d4ed8; }
td.na { color: #9ca3af; }
tr.group td { background: #f9fafb; color: #6b7280; font-size: 12px; text-align: left; }
tr.chosen td { background: #fef2f2; font-weight: 600; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.lineage svg { max-width: 100%; height: auto; }
.users { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 14px; }
.user { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px; }
.user h3 { margin: 0 0 2px; font-size: 14px; }
.user .features { color: #6b7280; font-size: 12px; margin-bottom: 6px; }
.user ol { margin: 0; padding-left: 22px; }
.user li { padding: 1px 0; }
.user li > span:first-child { display: inline-flex; gap: 6px; align-items: baseline;
  width: calc(100% - 60px); }
.user li .id { color: #9ca3af; font-size: 11px; }
.user li .score { color: #6b7280; font-size: 11px; float: right; line-height: 21px; }
.user li.hit { color: #166534; font-weight: 600; }
.legend-hit { color: #166534; font-weight: 600; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
footer { color: #9ca3af; font-size: 12px; text-align: center; }
"""

# No scripts, no fetches: anything but inline styles and data: images is blocked.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _section(section_id: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{_e(note)}</p>' if note else ""
    return (f'<section id="{section_id}"><h2>{_e(title)}</h2>{note_html}\n'
            f'{body}</section>\n')


def _absent(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def render_report(data: Dict) -> str:
    """The whole page, from the plain data `gather_report_data` returns."""
    run = data.get("run") or {}
    body = "\n".join([
        _header(data),
        _metrics_section(data),
        _slices_section(data),
        _scann_section(data),
        _lineage_section(data),
        _recommendations_section(data),
    ])
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>tfx-recsys run {_e(run.get("id"))}</title>\n'
            f'<style>{_CSS}</style></head>\n<body><main>\n{body}\n'
            f'<footer>tfx-recsys run report · {_e(run.get("root"))}</footer>\n'
            '</main></body></html>\n')


# --------------------------------------------------------------------------
# Header


def _model_label(data: Dict) -> str:
    name = data.get("model_name")
    return name.replace("_", "-") if name else "model"


def _check_item(check: str) -> str:
    ok = check.startswith("ok")
    return f'<li class="{"ok" if ok else "failed"}">{_e(check)}</li>'


def _header(data: Dict) -> str:
    run = data.get("run") or {}
    evaluation = data.get("evaluation") or {}
    blessing = evaluation.get("blessing")
    if blessing is None:
        blessed_html = "no evaluation in this run"
    else:
        yes = bool(blessing.get("blessed"))
        checks = "".join(_check_item(c) for c in blessing.get("checks") or [])
        blessed_html = (f'<span class="badge {"yes" if yes else "no"}">'
                        f'{"blessed" if yes else "not blessed"}</span>'
                        + (f'<ul class="checks">{checks}</ul>' if checks else ""))
    push = data.get("push")
    if push is None:
        pushed_html = "no push step in this run"
    elif push.get("pushed"):
        pushed_html = (f'version <b>{_e(push.get("version"))}</b> '
                       f'<code>{_e(push.get("destination"))}</code>'
                       + (f' ({_e(push["reason"])})' if push.get("reason") else ""))
    else:
        pushed_html = f'not pushed: {_e(push.get("reason") or "see the log")}'
    components = ", ".join(f"{run[n]} {n}" for n in ("ran", "cached", "failed")
                           if run.get(n))
    facts = [("date", _e(run.get("date"))),
             ("dataset", _e(run.get("dataset"))),
             ("data", f'<code>{_e(run.get("data_path"))}</code>'),
             ("model", _e(_model_label(data))),
             ("components", _e(components or "–")),
             ("blessing", blessed_html),
             ("pushed", pushed_html)]
    if push and push.get("served"):
        facts.append(("served", _e(push["served"])))
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (f'<header class="page" id="header"><h1>Run report '
            f'<span class="run">{_e(run.get("id"))}</span></h1>'
            f'<dl class="facts">{rows}</dl></header>')


# --------------------------------------------------------------------------
# Metrics vs baselines


def _columns(data: Dict, part: str = "overall") -> Dict[str, Dict]:
    """Model, baselines, last blessed: {column label: metrics of `part`};
    with a ranking stage the served two-stage list first and the ranker
    alone after the model."""
    evaluation = data.get("evaluation") or {}
    columns = {_model_label(data): (evaluation.get("model") or {}).get(part) or {}}
    ranking = evaluation.get("ranking")
    if ranking:
        columns = {"two-stage (served)": (ranking.get("two_stage") or {}).get(part) or {},
                   **columns,
                   "ranker": (ranking.get("ranker") or {}).get(part) or {}}
    baselines = evaluation.get("baselines") or {}
    for name in sorted(baselines, key=lambda n: (_BASELINE_ORDER.index(n)
                                                 if n in _BASELINE_ORDER else 99, n)):
        columns[name] = (baselines[name] or {}).get(part) or {}
    if evaluation.get("last_blessed"):
        columns["last blessed"] = evaluation["last_blessed"].get(part) or {}
    return columns


def _color(label: str, index: int) -> str:
    if index == 0:
        return _MODEL_COLOR
    return _SERIES_COLORS.get(label, _OTHER_COLORS[index % len(_OTHER_COLORS)])


def _metric_names(top_ks: Sequence[int]) -> List[str]:
    ks = list(top_ks)
    ten = 10 if 10 in ks else ks[0]
    names = [f"{m}@{k}" for m in ("recall", "ndcg", "hit_rate") for k in ks]
    names += [f"mrr@{ten}"] + [f"top_k_accuracy@{k}" for k in ks]
    names += [f"coverage@{ks[-1]}", "novelty@10", "diversity@10"]
    return names


def _chart_metrics(top_ks: Sequence[int]) -> List[str]:
    ten = 10 if 10 in top_ks else top_ks[0]
    return [f"recall@{k}" for k in top_ks] + [f"ndcg@{ten}"]


# Higher is better for these; novelty and diversity are descriptive.
_RANKED = ("recall", "ndcg", "hit_rate", "mrr", "top_k_accuracy", "coverage")


def _value_cells(values: List, best: bool) -> str:
    numbers = [v for v in values if isinstance(v, (int, float))]
    top = max(numbers) if (best and numbers) else None
    cells = []
    for v in values:
        if not isinstance(v, (int, float)):
            cells.append('<td class="num na">–</td>')
        else:
            cls = "num best" if (top is not None and v == top and len(numbers) > 1) else "num"
            cells.append(f'<td class="{cls}">{_number(v)}</td>')
    return "".join(cells)


def _metrics_table(columns: Dict[str, Dict], metric_names: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(label)}</th>" for label in columns)
    rows = []
    for metric in metric_names:
        values = [c.get(metric) for c in columns.values()]
        if all(v is None for v in values):
            continue
        ranked = metric.split("@")[0] in _RANKED
        rows.append(f"<tr><td>{_e(metric)}</td>{_value_cells(values, ranked)}</tr>")
    return (f'<div class="scroll"><table class="metrics"><thead><tr><th>metric</th>{head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value`: 1, 2, 2.5 or 5 times a power of 10."""
    if not value > 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def _bar_chart(columns: Dict[str, Dict], metrics: Sequence[str]) -> str:
    """Grouped bars: one group per metric, one bar per model, with a legend."""
    labels = list(columns)
    values = [[columns[label].get(m) for label in labels] for m in metrics]
    numbers = [v for group in values for v in group if isinstance(v, (int, float))]
    if not numbers:
        return ""
    width, height = 960, 330
    left, right, top, bottom = 48, 16, 36, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max(numbers))
    y = lambda v: top + plot_h * (1 - v / y_max)  # noqa: E731
    parts = [f'<svg class="chart" id="metrics-chart" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-family="sans-serif" font-size="11" role="img" '
             f'aria-label="model and baselines on {_e(", ".join(metrics))}">']
    for i in range(6):
        tick = y_max * i / 5
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'fill="#6b7280">{tick:.2f}</text>')
    group_w = plot_w / len(metrics)
    bar_w = min(36.0, group_w * 0.8 / len(labels))
    for g, (metric, group) in enumerate(zip(metrics, values)):
        x0 = left + g * group_w + (group_w - bar_w * len(labels)) / 2
        for s, value in enumerate(group):
            if not isinstance(value, (int, float)):
                continue
            x = x0 + s * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w - 3:.1f}" '
                         f'height="{max(0.0, top + plot_h - y(value)):.1f}" '
                         f'fill="{_color(labels[s], s)}"><title>{_e(labels[s])} '
                         f'{_e(metric)} {value:.4f}</title></rect>')
            parts.append(f'<text x="{x + (bar_w - 3) / 2:.1f}" y="{y(value) - 4:.1f}" '
                         f'text-anchor="middle" font-size="9" fill="#374151">'
                         f'{value:.3f}</text>')
        parts.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{height - bottom + 18}" '
                     f'text-anchor="middle" font-weight="bold" fill="#111827">'
                     f'{_e(metric)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}" stroke="#9ca3af"/>')
    x = left
    for s, label in enumerate(labels):  # legend, one row above the plot
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" rx="2" '
                     f'fill="{_color(label, s)}"/><text x="{x + 17}" y="18" '
                     f'fill="#111827">{_e(label)}</text>')
        x += 30 + 7 * len(label)
    parts.append("</svg>")
    return "\n".join(parts)


def _metrics_section(data: Dict) -> str:
    evaluation = data.get("evaluation")
    title = "Metrics vs baselines"
    if not evaluation:
        return _section("metrics", title, _absent("No evaluation in this run."))
    columns = _columns(data)
    top_ks = evaluation.get("top_ks") or [10]
    note = (f"{_number(evaluation.get('num_eval_users'))} eval users, "
            f"{_number(evaluation.get('num_items'))} items; each user's train items "
            "excluded from their ranking. Bold: best per row.")
    extra = []
    if not evaluation.get("last_blessed"):
        extra.append("No previously blessed model to compare with.")
    for name, reason in sorted((evaluation.get("baselines_skipped") or {}).items()):
        extra.append(f"Baseline {name} skipped: {reason}.")
    body = (_bar_chart(columns, _chart_metrics(top_ks))
            + _metrics_table(columns, _metric_names(top_ks))
            + "".join(f'<p class="note">{_e(t)}</p>' for t in extra))
    return _section("metrics", title, body, note)


# --------------------------------------------------------------------------
# Slices


_SLICE_GROUPS = {"user_activity": "users by train interactions",
                 "user": "cold and warm users", "item_popularity": "items by train popularity"}


def _slice_key(name: str):
    return (_SLICE_ORDER.index(name) if name in _SLICE_ORDER else len(_SLICE_ORDER), name)


def _slices_section(data: Dict) -> str:
    evaluation = data.get("evaluation") or {}
    title = "Per-slice metrics"
    slices = _columns(data, "slices")
    model_slices = next(iter(slices.values()), {})
    if not model_slices:
        return _section("slices", title, _absent("No sliced metrics in this run."))
    top_ks = evaluation.get("top_ks") or [10]
    headline = ((evaluation.get("blessing") or {}).get("gate") or {}).get("metric") \
        or f"recall@{top_ks[-1]}"
    model = next(iter(slices))
    own = [f"recall@{k}" for k in top_ks if f"recall@{k}" != headline] + _chart_metrics(top_ks)[-1:]
    head = ("<tr><th rowspan=2>slice</th><th rowspan=2>users</th><th rowspan=2>pairs</th>"
            f'<th colspan="{len(slices)}" style="text-align:center">{_e(headline)}</th>'
            f'<th colspan="{len(own)}" style="text-align:center">{_e(model)}</th></tr><tr>'
            + "".join(f"<th>{_e(label)}</th>" for label in slices)
            + "".join(f"<th>{_e(m)}</th>" for m in own) + "</tr>")
    rows, group = [], None
    for name in sorted(model_slices, key=_slice_key):
        kind = name.split(":")[0]
        if kind != group:
            group = kind
            rows.append(f'<tr class="group"><td colspan="{3 + len(slices) + len(own)}">'
                        f'{_e(_SLICE_GROUPS.get(kind, kind))}</td></tr>')
        metrics = model_slices[name]
        across = [(s.get(name) or {}).get(headline) for s in slices.values()]
        rows.append(f"<tr><td>{_e(name.split(':', 1)[-1])}</td>"
                    f'<td class="num">{_number(metrics.get("num_users"))}</td>'
                    f'<td class="num">{_number(metrics.get("num_pairs"))}</td>'
                    + _value_cells(across, True)
                    + _value_cells([metrics.get(m) for m in own], False) + "</tr>")
    note = ("Users by train interactions (activity), cold (no train interactions) or "
            "warm; items by train popularity (head, torso, tail: thirds of the train "
            "interactions; recall only, per pair).")
    body = (f'<div class="scroll"><table class="slices"><thead>{head}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
    return _section("slices", title, body, note)


# --------------------------------------------------------------------------
# ScaNN tuning


def _trial_label(trial: Dict) -> str:
    s = trial.get("settings") or {}
    return f'{s.get("num_leaves_to_search")}/{s.get("num_leaves")} leaves'


def _is_chosen(trial: Dict, chosen: Optional[Dict]) -> bool:
    return bool(chosen) and trial.get("settings") == chosen.get("settings")


def _tuning_chart(tuning: Dict) -> str:
    """Recall vs single-query latency of each trial; the chosen one in red."""
    trials = sorted(tuning.get("trials") or [],
                    key=lambda t: (t.get("settings") or {}).get("num_leaves_to_search", 0))
    if not trials:
        return ""
    chosen = tuning.get("chosen")
    gate = tuning.get("gate") or {}
    target = gate.get("target_recall")
    exact = tuning.get("exact_latency_ms_p50")
    width, height = 960, 340
    left, right, top, bottom = 56, 150, 20, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    latencies = [t["latency_ms_p50"] for t in trials] + ([exact] if exact else [])
    x_max = _nice_max(max(latencies) * 1.1)
    x = lambda v: left + plot_w * v / x_max  # noqa: E731
    y = lambda v: top + plot_h * (1 - v / 1.05)  # noqa: E731  headroom above 1
    recall_k = gate.get("recall_k", 10)
    parts = [f'<svg class="chart" id="scann-chart" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-family="sans-serif" font-size="11" role="img" '
             f'aria-label="ScaNN recall vs latency per setting">']
    for i in range(6):
        tick_y, tick_x = i / 5, x_max * i / 5
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick_y):.1f}" '
                     f'y2="{y(tick_y):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y(tick_y) + 4:.1f}" text-anchor="end" '
                     f'fill="#6b7280">{tick_y:.1f}</text>'
                     f'<line x1="{x(tick_x):.1f}" x2="{x(tick_x):.1f}" y1="{top}" '
                     f'y2="{top + plot_h}" stroke="#f3f4f6"/>'
                     f'<text x="{x(tick_x):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'fill="#6b7280">{_axis_number(tick_x)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                 f'fill="#374151">single-query search latency, p50 (ms)</text>'
                 f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle" fill="#374151">recall@{_e(recall_k)} vs exact</text>')
    if isinstance(target, (int, float)):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" '
                     f'y2="{y(target):.1f}" stroke="{_CHOSEN_COLOR}" stroke-dasharray="5 4" '
                     f'opacity="0.6"/><text x="{left + plot_w + 6}" y="{y(target) + 4:.1f}" '
                     f'fill="{_CHOSEN_COLOR}">target {target:g}</text>')
    points = " ".join(f'{x(t["latency_ms_p50"]):.1f},{y(t["recall"]):.1f}' for t in trials)
    parts.append(f'<polyline points="{points}" fill="none" stroke="{_MODEL_COLOR}" '
                 f'stroke-width="1.5" opacity="0.6"/>')
    label_y = _spread([y(t["recall"]) + 4 for t in trials], gap=13)
    for t, ly in zip(trials, label_y):
        cx, cy = x(t["latency_ms_p50"]), y(t["recall"])
        tip = (f'{_trial_label(t)}: recall {t["recall"]:.3f}, '
               f'p50 {t["latency_ms_p50"]:.4f} ms')
        mark = ""
        if _is_chosen(t, chosen):
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="none" '
                         f'stroke="{_CHOSEN_COLOR}" stroke-width="2.5"/>')
            mark = f' <tspan fill="{_CHOSEN_COLOR}" font-weight="bold">chosen</tspan>'
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{_MODEL_COLOR}">'
                     f'<title>{_e(tip)}</title></circle>'
                     f'<text x="{cx + 12:.1f}" y="{ly:.1f}" fill="#374151">'
                     f'{_e(_trial_label(t))}{mark}</text>')
    if exact:
        ex, ey = x(exact), y(1.0)
        parts.append(f'<rect x="{ex - 5:.1f}" y="{ey - 5:.1f}" width="10" height="10" '
                     f'transform="rotate(45 {ex:.1f} {ey:.1f})" fill="#6b7280">'
                     f'<title>exact search p50 {exact:.4f} ms</title></rect>'
                     f'<text x="{ex + 11:.1f}" y="{ey + 4:.1f}" '
                     f'fill="#6b7280">exact search</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
                 f'fill="none" stroke="#9ca3af"/></svg>')
    return "\n".join(parts)


def _spread(positions: Sequence[float], gap: float) -> List[float]:
    """Label positions moved down just enough to be `gap` apart, order kept."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    result = list(positions)
    for previous, current in zip(order, order[1:]):
        result[current] = max(result[current], result[previous] + gap)
    return result


def _axis_number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _trials_table(tuning: Dict) -> str:
    chosen = tuning.get("chosen")
    rows = []
    for t in tuning.get("trials") or []:
        s = t.get("settings") or {}
        cls = ' class="chosen"' if _is_chosen(t, chosen) else ""
        rows.append(f"<tr{cls}><td>{_e(s.get('num_leaves_to_search'))} of "
                    f"{_e(s.get('num_leaves'))}"
                    + (" (chosen)" if cls else "") + "</td>"
                    f'<td class="num">{_number(s.get("num_reordering_candidates"))}</td>'
                    f'<td class="num">{_number(t.get("recall"), 3)}</td>'
                    f'<td class="num">{_number(t.get("latency_ms_p50"))}</td>'
                    f'<td class="num">{_number(t.get("latency_ms_p99"))}</td>'
                    f'<td class="num">{_number(t.get("full_share"), 3)}</td></tr>')
    return ('<div class="scroll"><table class="trials"><thead><tr><th>leaves searched</th>'
            '<th>re-scored</th><th>recall</th><th>p50 ms</th><th>p99 ms</th>'
            '<th>full results</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _push_figures(push: Dict, tuning: Dict) -> str:
    f = push.get("figures") or {}
    gate = tuning.get("gate") or {}
    lines = []
    if f.get("index_recall") is not None:
        lines.append(f"recall@{_e(f.get('index_recall_k'))} vs exact on check queries: "
                     f"<b>{_number(f['index_recall'], 3)}</b> "
                     f"(target {_e(gate.get('target_recall'))})")
    if f.get("index_latency_ms_p50") is not None:
        lines.append(f"search p50 <b>{_number(f['index_latency_ms_p50'])} ms</b>, exact "
                     f"search {_number(f.get('exact_search_latency_ms_p50'))} ms "
                     f"(bound {_e(gate.get('max_latency_ms'))} ms)")
    if f.get("serving_latency_ms_p50") is not None:
        lines.append(f"whole serving signature, one user: p50 "
                     f"{_number(f['serving_latency_ms_p50'], 3)} ms, p99 "
                     f"{_number(f.get('serving_latency_ms_p99'), 3)} ms")
    if f.get("num_items") is not None:
        lines.append(f"{_number(f['num_items'])} items indexed, top {_e(f.get('top_k'))} "
                     f"served; tuned on {_number(tuning.get('num_queries'))} queries")
    return "".join(f"<li>{line}</li>" for line in lines)


def _scann_section(data: Dict) -> str:
    title = "ScaNN index: recall vs latency"
    push = data.get("push")
    if push is None or not push.get("ran"):
        return _section("scann", title, _absent("No push step in this run: nothing "
                                                 "was pushed, no index was tuned."))
    tuning = push.get("tuning")
    status = ("" if push.get("pushed") else
              _absent(f"Nothing was pushed: {push.get('reason') or 'see the log'}."))
    if not tuning:
        return _section("scann", title, status or _absent("No tuning figures recorded."))
    figures = _push_figures(push, tuning) if push.get("pushed") else ""
    note = ("Each point: one setting (leaves searched of the tree), its recall against "
            "exact search and its single-query search latency on held-out users. The "
            "pusher keeps the fastest setting that reaches the target.")
    body = (status + (f'<ul class="figures">{figures}</ul>' if figures else "")
            + (f'<p class="note">{_e(push["tuning_note"])}</p>'
               if push.get("tuning_note") else "")
            + _tuning_chart(tuning) + _trials_table(tuning))
    return _section("scann", title, body, note)


# --------------------------------------------------------------------------
# Lineage


def _scalable(svg: str) -> str:
    """Gives an SVG a viewBox from its width and height, so CSS can shrink it."""
    match = re.match(r'\s*<svg\b([^>]*)>', svg)
    if not match or "viewBox" in match.group(1):
        return svg
    width = re.search(r'\swidth="([\d.]+)"', match.group(1))
    height = re.search(r'\sheight="([\d.]+)"', match.group(1))
    if not (width and height):
        return svg
    tag = f'<svg viewBox="0 0 {width.group(1)} {height.group(1)}"{match.group(1)}>'
    return tag + svg[match.end():]


def _lineage_section(data: Dict) -> str:
    title = "Lineage of the pushed model"
    push = data.get("push") or {}
    svg = data.get("lineage_svg")
    if not push.get("pushed"):
        return _section("lineage", title, _absent("No model was pushed in this run."))
    if not svg or not svg.lstrip().startswith("<svg"):
        return _section("lineage", title, _absent("No lineage recorded for the pushed "
                                                   "model."))
    note = ("From the data (left) to the push (right), as ML Metadata recorded it; "
            "recsys lineage prints the facts of each step.")
    return _section("lineage", title,
                    f'<div class="lineage scroll">{_scalable(svg)}</div>', note)


# --------------------------------------------------------------------------
# Sample recommendations


def _feature_line(features: Dict) -> str:
    shown = [f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
             for name, value in sorted(features.items())
             if name != "user_id" and value not in (None, "")]
    return " · ".join(shown)


def _user_card(user: Dict) -> str:
    items = []
    for item in user.get("items") or []:
        title = item.get("title") or item.get("item_id")
        score = item.get("score")
        hit = ' class="hit"' if item.get("hit") else ""
        items.append(f'<li{hit}><span>{_e(title)} '
                     f'<span class="id">{_e(item.get("item_id"))}</span></span>'
                     + (f'<span class="score">{score:.3f}</span>'
                        if isinstance(score, (int, float)) else "") + "</li>")
    hits = sum(bool(i.get("hit")) for i in user.get("items") or [])
    return (f'<div class="user"><h3>user {_e(user.get("user_id"))}</h3>'
            f'<div class="features">{_e(_feature_line(user.get("features") or {}))}<br>'
            f'{hits} of {_number(user.get("held_out"))} held-out items in this list</div>'
            f'<ol>{"".join(items)}</ol></div>')


def _recommendations_section(data: Dict) -> str:
    title = "Sample recommendations"
    push = data.get("push") or {}
    recs = data.get("recommendations")
    if not push.get("pushed"):
        return _section("recommendations", title,
                        _absent("No model was pushed in this run: no recommendations."))
    if not recs:
        return _section("recommendations", title, _absent("No recommendations gathered."))
    if recs.get("error"):
        return _section("recommendations", title, _absent(
            f"Could not ask the pushed model: {recs['error']}"))
    users = recs.get("users") or []
    if not users:
        return _section("recommendations", title, _absent("No eval users to show."))
    note = (f"Top {recs.get('k')} from the pushed serving model ({recs.get('model_dir')}), "
            "asked with each user's raw features; train items are not excluded.")
    body = ('<p class="note"><span class="legend-hit">Green</span>: an item the user '
            'interacted with in the eval split.</p>'
            f'<div class="users">{"".join(_user_card(u) for u in users)}</div>')
    return _section("recommendations", title, body, note)
