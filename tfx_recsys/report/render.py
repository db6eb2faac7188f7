"""The report's HTML: plain data (gather.py) -> one self-contained page.

Pure: no store, file or model is read here except the stylesheet
(report.css, package data, inlined), so the page is tested on hand-made
data. The page has no scripts, fonts or links to fetch (a
Content-Security-Policy says so to the browser) and every piece of text is
escaped; the charts come from charts.py.
"""

import functools
import importlib.resources
import math
from typing import Dict, List, Sequence

from tfx_recsys.report.charts import bar_chart, escape as _e, is_chosen, scalable, tuning_chart

# Slices in reading order: activity buckets by size, cold before warm, head
# to tail. Slices not listed here follow, sorted.
_SLICE_ORDER = ("user_activity:0", "user_activity:1-4", "user_activity:5-19",
                "user_activity:20-99", "user_activity:100+", "user:cold", "user:warm",
                "item_popularity:head", "item_popularity:torso", "item_popularity:tail")
_BASELINE_ORDER = ("most_popular", "item_knn", "ease")

# No scripts, no fetches: anything but inline styles and data: images is blocked.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@functools.lru_cache(maxsize=None)
def _css() -> str:
    """The stylesheet inlined into every page (report.css, package data)."""
    return (importlib.resources.files(__package__).joinpath("report.css")
            .read_text(encoding="utf-8"))


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
            f'<style>\n{_css()}</style></head>\n<body><main>\n{body}\n'
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
             *([("spans", _e(run["spans"]))] if run.get("spans") else []),
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
    body = (bar_chart(columns, _chart_metrics(top_ks))
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


def _trials_table(tuning: Dict) -> str:
    chosen = tuning.get("chosen")
    rows = []
    for t in tuning.get("trials") or []:
        s = t.get("settings") or {}
        cls = ' class="chosen"' if is_chosen(t, chosen) else ""
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
            + tuning_chart(tuning) + _trials_table(tuning))
    return _section("scann", title, body, note)


# --------------------------------------------------------------------------
# Lineage


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
                    f'<div class="lineage scroll">{scalable(svg)}</div>', note)


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
