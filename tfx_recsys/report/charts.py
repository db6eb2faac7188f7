"""The report's SVG charts, written as text.

Inline SVG needs no plotting library and nothing fetched by the browser (the
page's Content-Security-Policy blocks any fetch), and with coordinates
printed to fixed decimals the same data always gives the same bytes. Pure
functions of plain data: the metrics bar chart, the ScaNN tuning chart
(recall against latency per setting) and a viewBox for the lineage graph.
"""

import html
import math
import re
from typing import Dict, List, Optional, Sequence

# Bar colours: the model first, then the baselines and the last blessed model.
_MODEL_COLOR = "#2563eb"
_SERIES_COLORS = {"most_popular": "#9ca3af", "item_knn": "#f59e0b", "ease": "#10b981",
                  "ranker": "#0ea5e9",
                  "last blessed": "#8b5cf6"}
_OTHER_COLORS = ("#ec4899", "#14b8a6", "#f97316", "#64748b")
_CHOSEN_COLOR = "#dc2626"


def escape(value) -> str:
    """`value` as HTML or SVG text: None as empty, quotes escaped."""
    return html.escape("" if value is None else str(value), quote=True)


_e = escape  # short, for the many f-strings below


def _color(label: str, index: int) -> str:
    if index == 0:
        return _MODEL_COLOR
    return _SERIES_COLORS.get(label, _OTHER_COLORS[index % len(_OTHER_COLORS)])


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value`: 1, 2, 2.5 or 5 times a power of 10."""
    if not value > 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def bar_chart(columns: Dict[str, Dict], metrics: Sequence[str]) -> str:
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


def _trial_label(trial: Dict) -> str:
    s = trial.get("settings") or {}
    return f'{s.get("num_leaves_to_search")}/{s.get("num_leaves")} leaves'


def is_chosen(trial: Dict, chosen: Optional[Dict]) -> bool:
    return bool(chosen) and trial.get("settings") == chosen.get("settings")


def tuning_chart(tuning: Dict) -> str:
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
        if is_chosen(t, chosen):
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


def scalable(svg: str) -> str:
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


