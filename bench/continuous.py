"""Replay: MovieLens-100K arriving in spans, a model that follows it.

`make bench-continuous`. The interactions are cut by global time into
SPANS spans of equal count (`native.write_spans`; users.csv and items.csv
stay static: the catalogue is known from the start). The dataset config is
MovieLens-100K's with `interactions.path: spans/{SPAN}/interactions.csv` and
`window: W`. Then, in one root that lives like a team's (the "daily" root):

  span 1        `recsys run --span 1` (cold: nothing blessed yet)
  span k >= 2   `recsys refresh --span k`: the model of span k-1 with span k's
                data (new items embedded, user state and index rebuilt);
                scored; then `recsys run --span k`, warm-started from the
                last blessed model; scored

and for each k >= 2, in a fresh root, `recsys run --span k --cold`; scored.

Each is scored the way backtest.py scores: the newest pushed version, in a
fresh process with only TensorFlow and ScaNN, through `serving_default`,
for every user with an interaction in span k+1 (the future), against the
items of their span k+1 interactions: recall@100, NDCG@10; and recall@100
on items first seen in span k (none of their interactions earlier), where
most-popular (fitted on the window) is scored on the same users and items.
Trainer time is the retrieval Trainers' (Trainer and RefitTrainer) wall
time from ML Metadata; run time is the whole `recsys` command's.

Output: a table on stdout, bench/results/continuous.md and .json.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import backtest  # noqa: E402  (bench/ is not a package)

RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROOT = os.path.join(REPO, "runs", "bench-continuous")
SPANS = 8
WINDOW = 3
KINDS = ("warm", "cold", "refresh")
# The targets, as ratios to the cold run of the same span.
TARGETS = {"warm recall@100 / cold": 0.99, "warm trainer s / cold": 0.5,
           "refresh recall@100 / cold": 0.95}


# --------------------------------------------------------------------------
# Data


def write_replay(source_dir: str, data_dir: str, spans: int, window: int) -> str:
    """The spans and their dataset config; returns the config's path."""
    from tfx_recsys import dataset_config
    from tfx_recsys.data import native

    native.write_spans(source_dir, data_dir, spans)
    raw = dataset_config.load(dataset_config.builtin_path("movielens-100k")).to_dict()
    raw["interactions"]["path"] = native.SPAN_INTERACTIONS_PATH
    raw["window"] = window
    dataset_config.from_dict(raw)  # checks it
    path = os.path.join(data_dir, "movielens-100k-spans.yaml")
    with open(path, "w") as f:
        json.dump(raw, f, indent=1)  # JSON is YAML
    return path


def span_rows(data_dir: str, span: int) -> List[Dict[str, str]]:
    with open(os.path.join(data_dir, "spans", str(span), "interactions.csv"),
              newline="") as f:
        return list(csv.DictReader(f))


def new_items(data_dir: str, span: int) -> Set[str]:
    """Items whose first interaction is in `span`."""
    earlier = {r["item_id"] for k in range(1, span) for r in span_rows(data_dir, k)}
    return {r["item_id"] for r in span_rows(data_dir, span)} - earlier


# --------------------------------------------------------------------------
# Runs


def recsys(command: str, data_dir: str, dataset: str, root: str,
           flags: Sequence[str]) -> float:
    """One `recsys` command in a fresh process; wall seconds. Output goes to
    <root>-<command>-<time>.log; a failure stops the bench."""
    argv = [sys.executable, "-m", "tfx_recsys.cli", command, "--data", data_dir,
            "--dataset", dataset, "--root", root, *flags]
    print(f"$ recsys {command} --root {root} {' '.join(flags)}", flush=True)
    log = f"{root}-{command}-{int(time.time())}.log"
    started = time.monotonic()
    with open(log, "w") as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                              env=dict(os.environ, TF_USE_LEGACY_KERAS="1")).returncode
    seconds = time.monotonic() - started
    if code != 0:
        sys.exit(f"recsys {command} failed ({code}); see {log}")
    print(f"  {seconds:.0f} s", flush=True)
    return seconds


def trainer_seconds(root: str) -> float:
    """Wall time of the retrieval Trainers of the root's latest run (0 when
    cached or absent), from their MLMD executions."""
    from tfx_recsys import run_summary

    store = run_summary.open_store(root)
    run_type = store.get_context_type("pipeline_run")
    latest = max(store.get_contexts_by_type(run_type.name), key=lambda c: c.id)
    total = 0.0
    for execution in store.get_executions_by_context(latest.id):
        node = run_summary.property_value(execution, "run_fn") or ""
        if node.endswith(("two_tower.run_fn", "softmax.run_fn")):
            total += (execution.last_update_time_since_epoch
                      - execution.create_time_since_epoch) / 1000
    return total


def start_lines(root: str) -> List[str]:
    """How each retrieval model of the root started (the Trainers'
    warm_start lines), oldest first."""
    from tfx_recsys import run_summary

    store = run_summary.open_store(root)
    models = sorted(store.get_artifacts_by_type("Model"), key=lambda m: m.id)
    return [line for line in (run_summary.property_value(m, "warm_start") for m in models)
            if line]


def epochs_of(line: str) -> int:
    """The epoch count at the end of a warm_start line ("...; 5 epochs")."""
    return int(line.rsplit(";", 1)[1].split()[0])


def cold_roots(root: str) -> List[str]:
    """The cold runs' roots (cold-<span>), not their logs beside them
    (cold-<span>-run-<time>.log)."""
    return sorted(os.path.join(root, d) for d in os.listdir(root)
                  if d.startswith("cold-") and os.path.isdir(os.path.join(root, d)))


def starts_summary(root: str) -> Dict:
    """Of the daily root's runs after the first: how many retrieval Trainers
    warm-started, and the epochs of warm starts; the epochs of the cold runs."""
    lines = start_lines(os.path.join(root, "daily"))[2:]  # the first run's two Trainers
    warm = [l for l in lines if l.startswith("warm start")]
    return {"trainers": len(lines), "warm": len(warm),
            "warm_epochs": sorted({epochs_of(l) for l in warm}),
            "cold_epochs": sorted({epochs_of(l) for cold in cold_roots(root)
                                   for l in start_lines(cold)}),
            "cold_lines": [l for l in lines if not l.startswith("warm start")]}


def score(root: str, data_dir: str, span: int, window: int, work_dir: str) -> Dict:
    """The served version of `root` scored on span+1 (see the module doc)."""
    model_dir = backtest.served_model_dir(root)
    if model_dir is None:
        sys.exit(f"nothing pushed under {root}")
    future_rows = span_rows(data_dir, span + 1)
    past_rows = [r for k in range(max(1, span - window + 1), span + 1)
                 for r in span_rows(data_dir, k)]
    future, past = backtest.items_by_user(future_rows), backtest.items_by_user(past_rows)
    fresh = new_items(data_dir, span)
    future_new = {u: items & fresh for u, items in future.items() if items & fresh}
    with open(os.path.join(data_dir, "users.csv"), newline="") as f:
        reader = csv.DictReader(f)
        users = {row["user_id"]: row for row in reader}
    first = {}
    for row in future_rows:
        first[row["user_id"]] = min(first.get(row["user_id"], 1 << 62), int(row["timestamp"]))
    requests = [{**users[u], "user_id": u, "timestamp": first[u]} for u in sorted(future)]
    os.makedirs(work_dir, exist_ok=True)
    lists = backtest.query_served(model_dir, requests, work_dir)["lists"]
    served = backtest.score_lists(lists, future, past)
    result = {"version": os.path.basename(model_dir), "users": served["users"],
              "recall@100": served["recall@100"], "ndcg@10": served["ndcg@10"],
              "new_items": len(fresh), "new_item_users": len(future_new),
              "new_recall@100": backtest.score_lists(lists, future_new, past)["recall@100"]}
    with open(os.path.join(data_dir, "items.csv"), newline="") as f:
        item_ids = [row["item_id"] for row in csv.DictReader(f)]
    popular = backtest.baseline_lists(past, sorted(future_new), item_ids)["most_popular"]
    result["most_popular_new_recall@100"] = backtest.score_lists(
        popular, future_new, past)["recall@100"]
    return result


def replay(root: str, spans: int, window: int, first: int, last: int,
           flags: Sequence[str]) -> Dict:
    from tfx_recsys.data import movielens

    data_dir = os.path.join(root, "data")
    dataset = write_replay(movielens.fetch_movielens_100k(), data_dir, spans, window)
    daily = os.path.join(root, "daily")
    rows: Dict[str, Dict[str, Dict]] = {}
    if not backtest.served_model_dir(daily):
        recsys("run", data_dir, dataset, daily, ["--span", str(first - 1), *flags])
    for span in range(first, last + 1):
        row = rows.setdefault(str(span), {})
        work = os.path.join(root, "work", str(span))
        seconds = recsys("refresh", data_dir, dataset, daily, ["--span", str(span)])
        row["refresh"] = {**score(daily, data_dir, span, window, work),
                          "run_seconds": seconds, "trainer_seconds": 0.0}
        seconds = recsys("run", data_dir, dataset, daily, ["--span", str(span), *flags])
        row["warm"] = {**score(daily, data_dir, span, window, work),
                       "run_seconds": seconds, "trainer_seconds": trainer_seconds(daily)}
        cold = os.path.join(root, f"cold-{span}")
        backtest.shutil.rmtree(cold, ignore_errors=True)
        seconds = recsys("run", data_dir, dataset, cold,
                         ["--span", str(span), "--cold", *flags])
        row["cold"] = {**score(cold, data_dir, span, window, work),
                       "run_seconds": seconds, "trainer_seconds": trainer_seconds(cold)}
        print(markdown({"spans": rows, "window": window}), flush=True)
    return {"spans": rows, "window": window, "num_spans": spans, "flags": list(flags),
            "starts": starts_summary(root), **backtest.provenance()}


# --------------------------------------------------------------------------
# Output


def ratios(rows: Dict[str, Dict[str, Dict]]) -> Dict[str, float]:
    """Mean over spans of each TARGETS ratio."""
    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else float("nan")

    def ratio(a, b):
        return a / b if b else None

    return {
        "warm recall@100 / cold": mean(ratio(r["warm"]["recall@100"], r["cold"]["recall@100"])
                                       for r in rows.values()),
        "warm trainer s / cold": mean(ratio(r["warm"]["trainer_seconds"],
                                            r["cold"]["trainer_seconds"])
                                      for r in rows.values()),
        "refresh recall@100 / cold": mean(ratio(r["refresh"]["recall@100"],
                                                r["cold"]["recall@100"])
                                          for r in rows.values()),
    }


def fewer_epochs(result: Dict, means: Dict[str, float]) -> bool:
    """The issue's alternative to half the Trainer time: warm runs train fewer
    epochs than cold runs and reach at least the cold runs' quality."""
    starts = result.get("starts") or {}
    return bool(starts.get("warm_epochs") and starts.get("cold_epochs")
                and max(starts["warm_epochs"]) < min(starts["cold_epochs"])
                and means["warm recall@100 / cold"] >= TARGETS["warm recall@100 / cold"])


def new_item_verdict(rows: Dict[str, Dict[str, Dict]]) -> Tuple[int, List[str], int]:
    """(spans where warm, cold and refresh each find more of the new items
    than most-popular, spans where no list finds any (a tie at 0), spans)."""
    beaten, ties = 0, []
    for span, row in sorted(rows.items(), key=lambda p: int(p[0])):
        kinds = [row[k] for k in KINDS if k in row]
        if all(v["new_recall@100"] > v["most_popular_new_recall@100"] for v in kinds):
            beaten += 1
        elif not any(v["new_recall@100"] or v["most_popular_new_recall@100"] for v in kinds):
            ties.append(span)
    return beaten, ties, len(rows)


def new_item_met(beaten: int, ties: List[str], spans: int) -> str:
    if beaten == spans:
        return "met"
    if beaten and beaten + len(ties) == spans:
        return "met where any list finds one"
    return "NOT met"


def markdown(result: Dict) -> str:
    lines = ["| span | scored on | kind | recall@100 | ndcg@10 | new-item recall@100 "
             "(most-popular) | trainer s | run s |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for span, row in sorted(result["spans"].items(), key=lambda p: int(p[0])):
        for kind in KINDS:
            if kind not in row:
                continue
            v = row[kind]
            lines.append(
                f"| {span} | {int(span) + 1} | {kind} | {v['recall@100']:.4f} | "
                f"{v['ndcg@10']:.4f} | {v['new_recall@100']:.4f} "
                f"({v['most_popular_new_recall@100']:.4f}, {v['new_item_users']} users) | "
                f"{v['trainer_seconds']:.0f} | {v['run_seconds']:.0f} |")
    means = ratios(result["spans"])
    lines += ["", "| target (mean over spans) | value | target | |", "|---|---:|---:|---|"]
    for name, target in TARGETS.items():
        value = means[name]
        met = value <= target if "trainer" in name else value >= target
        verdict = "met" if met else "NOT met"
        if "trainer" in name and not met and fewer_epochs(result, means):
            starts = result["starts"]
            verdict = (f"met by fewer epochs: {max(starts['warm_epochs'])} instead of "
                       f"{min(starts['cold_epochs'])}, recall@100 at least the cold run's")
        lines.append(f"| {name} | {value:.3f} | {'<=' if 'trainer' in name else '>='} "
                     f"{target} | {verdict} |")
    beaten, ties, spans = new_item_verdict(result["spans"])
    tied = f"; no list finds a new item at span(s) {', '.join(ties)}" if ties else ""
    lines.append(f"| new-item recall@100 > most-popular's (warm, cold and refresh) | "
                 f"{beaten} of {spans} spans{tied} | every span | "
                 f"{new_item_met(beaten, ties, spans)} |")
    starts = result.get("starts")
    if starts:
        cold_epochs = ", ".join(map(str, starts.get("cold_epochs") or ["the configured"]))
        lines += ["", f"Warm starts: {starts['warm']} of the {starts['trainers']} retrieval "
                      f"Trainers (Trainer and RefitTrainer) of the daily runs after the first "
                      f"started warm, with {', '.join(map(str, starts['warm_epochs']))} "
                      f"epoch(s); cold runs train {cold_epochs} epoch(s)."]
        lines += [f"- not warm: {line}" for line in starts["cold_lines"]]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--spans", type=int, default=SPANS)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--first", type=int, default=2,
                        help="first span with a warm, cold and refresh row")
    parser.add_argument("--last", type=int, help="last such span (default: spans - 1)")
    parser.add_argument("--render", action="store_true",
                        help="only write the table again from results/continuous.json "
                             "(and the roots, when they are there)")
    parser.add_argument("--run-arg", action="append", default=[],
                        help="a flag for every `recsys run`, e.g. --run-arg=--ranker=none")
    args = parser.parse_args(argv)
    last = args.last or args.spans - 1
    if not 2 <= args.first <= last < args.spans:
        parser.error("need 2 <= first <= last < spans (span last + 1 is the future)")
    root = os.path.abspath(args.root)
    if args.render:
        with open(os.path.join(RESULTS_DIR, "continuous.json")) as f:
            result = json.load(f)
        if os.path.isdir(os.path.join(root, "daily")):  # else keep the recorded starts
            result["starts"] = starts_summary(root)
    else:
        result = replay(root, args.spans, args.window, args.first, last, args.run_arg)
    text = (f"Replay of MovieLens-100K as {args.spans} spans by global time, window "
            f"{args.window}; each row scored on the next span through the pushed "
            "model in a fresh process.\n\n" + markdown(result)
            + f"\n\nGenerated by `make bench-continuous` on {result['date']} "
            f"({result['machine']}, commit {result['commit']}).")
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "continuous.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(RESULTS_DIR, "continuous.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
