"""Backtest: what users get from the pushed model, scored on what they did next.

The pipeline's own evaluator scores its models in-process on its own split.
This benchmark measures the artifact instead, from the outside, the way a
client sees it (`make bench-backtest`):

1. **Cut** MovieLens-100K's interactions into a past and a future, two ways:
   - `per_user_temporal`: each user's latest floor(0.2 * n) interactions,
     ordered by (timestamp, item_id), are their future (users with fewer
     than 5 interactions have no future), as
     `splitting.split_user_history`;
   - `global_time`: every interaction at or after one cut time is future,
     the cut being the timestamp of the floor(0.2 * N)-th latest interaction
     (`splitting.global_time_cut`); users first seen after it are cold.
   The past is written as `<root>/<cut>/data/interactions.csv`; users.csv
   and items.csv are copied unchanged: the user table and the catalogue are
   known at cut time, so future items can be recommended and cold users
   have features.
2. **Run** the whole pipeline on the past in a fresh process (`recsys run
   --no-cache`, `--no-refit` for the "no refit" setting), each setting in a
   fresh root of its own (`<root>/<cut>/<setting>`), so no earlier blessed
   model gates or shadows it. Its wall time is recorded.
3. **Query** the served model, the newest complete version under
   `<run root>/serving/retrieval/`, through its `serving_default` signature
   in a fresh process that imports only TensorFlow, ScaNN and NumPy (no
   project code): one request per user with a future interaction, cold
   users included, carrying user_id and the user's raw features from
   users.csv (and `timestamp`, the user's first future timestamp, if the
   signature asks for one). The lists come back as served, padding dropped.
4. **Score** each list against the user's distinct future items, averaged
   over users with at least one: recall@10, recall@100, ndcg@10 and
   hit_rate@10 (`metrics.user_accuracy`, the pipeline's definitions), and
   seen@10, the number of the user's *past* items in the top 10 (a served
   list should hold none).
5. **Baselines** (most-popular, item-kNN, EASE with their defaults) are
   fitted on the same past, rank the whole catalogue with each user's past
   items excluded, and are scored on the same users the same way.

Results of cuts and settings not run this time are kept from the last
bench/results/backtest.json, so one setting can be run at a time.
Output: a table per cut on stdout, bench/results/backtest.md and .json.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROOT = os.path.join(REPO, "runs", "bench-backtest")

CUTS = ("per_user_temporal", "global_time")
SETTINGS = {"refit": [], "no-refit": ["--no-refit"]}   # setting -> `recsys run` flags
SERVED_LABELS = {"refit": "served (refit)", "no-refit": "served (no refit)"}
BASELINE_LABELS = {"ease": "EASE", "item_knn": "item-kNN", "most_popular": "most-popular"}
EVAL_FRACTION = 0.2
METRICS = ("recall@10", "recall@100", "ndcg@10", "hit_rate@10", "seen@10")
# The verdict: per_user_temporal, served (refit).
TARGETS = {"seen@10": ("==", 0.0), "ndcg@10": (">=", 0.25), "recall@100": (">=", 0.58)}
QUERY_BATCH = 256
QUERY_COMMAND = "query-served"   # argv[1] of the child process


# --------------------------------------------------------------------------
# 1. The cuts


def read_interactions(path: str) -> Tuple[List[str], List[Dict[str, str]]]:
    """(header, rows as read: every value a string) of an interactions.csv."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def cut_interactions(rows: Sequence[Dict[str, str]], cut: str
                     ) -> Tuple[List[Dict[str, str]], List[Dict[str, str]]]:
    """(past, future): each row in exactly one, both in the rows' order.

    Uses InteractionsExampleGen's own split rules, so "future" means what
    the pipeline's eval split means.
    """
    from tfx_recsys.data import splitting

    typed = [{"user_id": r["user_id"], "item_id": r["item_id"],
              "timestamp": int(r["timestamp"]), "row": i} for i, r in enumerate(rows)]
    if cut == "per_user_temporal":
        by_user: Dict[str, list] = {}
        for row in typed:
            by_user.setdefault(row["user_id"], []).append(row)
        future = {row["row"] for history in by_user.values()
                  for split, row in splitting.split_user_history(history, EVAL_FRACTION)
                  if split == splitting.EVAL}
    elif cut == "global_time":
        at = splitting.global_time_cut([r["timestamp"] for r in typed], EVAL_FRACTION)
        future = {row["row"] for row in typed if row["timestamp"] >= at}
    else:
        raise ValueError(f"unknown cut {cut!r}; known: {', '.join(CUTS)}")
    return ([r for i, r in enumerate(rows) if i not in future],
            [r for i, r in enumerate(rows) if i in future])


def write_past(source_dir: str, data_dir: str, header: List[str],
               past: Sequence[Dict[str, str]]) -> None:
    """A dataset directory holding the past interactions and the full
    users.csv and items.csv."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "interactions.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(past)
    for name in ("users.csv", "items.csv"):
        shutil.copyfile(os.path.join(source_dir, name), os.path.join(data_dir, name))


# --------------------------------------------------------------------------
# 2-3. The pipeline run and the served model


def served_model_dir(run_root: str) -> Optional[str]:
    """The version a server loads: the highest integer-named directory under
    <run_root>/serving/retrieval holding a saved_model.pb (a staging or
    half-copied directory is not a version); None when there is none."""
    model_dir = os.path.join(run_root, "serving", "retrieval")
    if not os.path.isdir(model_dir):
        return None
    complete = [int(name) for name in os.listdir(model_dir) if name.isdigit()
                and os.path.isfile(os.path.join(model_dir, name, "saved_model.pb"))]
    return os.path.join(model_dir, str(max(complete))) if complete else None


def trained_by(model_dir: str) -> Optional[str]:
    """The Trainer that made the served retrieval model (e.g. "Trainer" or
    "RefitTrainer"), from the source file the pusher writes beside it."""
    path = os.path.join(model_dir, "assets.extra", "tfx_recsys_source.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        model_path = json.load(f).get("model_path", "")
    parts = os.path.normpath(model_path).split(os.sep)
    return parts[parts.index("model") - 1] if "model" in parts[1:] else model_path


def run_pipeline(data_dir: str, run_root: str, flags: List[str]) -> float:
    """`recsys run` on `data_dir` in a fresh process and a fresh root; wall
    seconds. Its output goes to <run_root>.log."""
    shutil.rmtree(run_root, ignore_errors=True)
    command = [sys.executable, "-m", "tfx_recsys.cli", "run", "--data", data_dir,
               "--dataset", "movielens-100k", "--root", run_root, "--no-cache", *flags]
    print(f"$ {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    with open(run_root + ".log", "w") as log:
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                    env=dict(os.environ, TF_USE_LEGACY_KERAS="1")).returncode
    seconds = time.monotonic() - started
    if returncode != 0:
        sys.exit(f"run failed ({returncode}); see {run_root}.log")
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def query_served(model_dir: str, requests: List[Dict[str, str]], work_dir: str) -> Dict:
    """Asks the model in a fresh process (this file's `query_child`);
    returns {"lists": {user_id: [item ids]}, "signature": ...}."""
    paths = [os.path.join(work_dir, name) for name in ("requests.json", "lists.json")]
    with open(paths[0], "w") as f:
        json.dump(requests, f)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), QUERY_COMMAND, model_dir, *paths],
        capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        sys.exit(f"querying {model_dir} failed:\n{completed.stderr[-4000:]}")
    with open(paths[1]) as f:
        return json.load(f)


def query_child(model_dir: str, requests_path: str, output_path: str) -> None:
    """The child process: serving_default on every request, in batches.

    Requests are raw rows ({"user_id", users.csv's columns, "timestamp"});
    each signature input is built from the column of its name by its dtype
    (string, float with NaN for a missing value, int64). Unknown inputs
    fail loudly rather than being guessed.
    """
    import scann  # noqa: F401  registers the ScaNN op before loading
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    serve = model.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    with open(requests_path) as f:
        requests = json.load(f)

    def column(name, spec, rows):
        if spec.shape.rank != 1 or name not in rows[0]:
            raise SystemExit(f"serving_default input {name} {spec} has no "
                             "column in the requests")
        values = [row[name] for row in rows]
        if spec.dtype == tf.string:
            return tf.constant(values, tf.string)
        if spec.dtype.is_floating:
            return tf.constant([float(v) if v != "" else np.nan for v in values], spec.dtype)
        return tf.constant([int(v) for v in values], spec.dtype)

    lists = {}
    for start in range(0, len(requests), QUERY_BATCH):
        rows = requests[start:start + QUERY_BATCH]
        outputs = serve(**{name: column(name, spec, rows) for name, spec in specs.items()})
        for row, ids in zip(rows, outputs["item_ids"].numpy()):
            lists[row["user_id"]] = [i.decode() for i in ids if i]   # "" pads
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "tfx_recsys")
    if leaked:
        raise SystemExit(f"the query process imported project code: {leaked}")
    signature = {"inputs": {n: f"{s.dtype.name}{s.shape}" for n, s in specs.items()},
                 "outputs": {n: f"{s.dtype.name}{s.shape}"
                             for n, s in serve.structured_outputs.items()},
                 "signatures": sorted(model.signatures)}
    with open(output_path, "w") as f:
        json.dump({"lists": lists, "signature": signature}, f)


# --------------------------------------------------------------------------
# 4-5. Scores and baselines


def score_lists(lists: Dict[str, Sequence[str]], future: Dict[str, Set[str]],
                past: Dict[str, Set[str]]) -> Dict[str, float]:
    """Mean metrics over the users of `future` (users with a future item):
    the pipeline's recall/ndcg/hit_rate of each user's list against their
    future items, and seen@10 = how many of the top 10 are past items. A
    user without a list counts as an empty list."""
    from tfx_recsys import metrics

    totals = dict.fromkeys(METRICS, 0.0)
    for user, relevant in future.items():
        ranked = list(lists.get(user, []))
        # user_accuracy takes item indices: number this user's ids.
        index = {item: i for i, item in enumerate(dict.fromkeys(ranked + sorted(relevant)))}
        values = metrics.user_accuracy(np.asarray([index[i] for i in ranked], np.int64),
                                       [index[i] for i in relevant], (10, 100))
        values["seen@10"] = sum(item in past.get(user, ()) for item in ranked[:10])
        for name in METRICS:
            totals[name] += values[name]
    return {"users": len(future), **{n: v / max(len(future), 1) for n, v in totals.items()}}


def baseline_lists(past: Dict[str, Set[str]], users: Sequence[str],
                   item_ids: Sequence[str], k: int = 100) -> Dict[str, Dict[str, List[str]]]:
    """{baseline: {user: top-k item ids}}: each baseline fitted on the past,
    ranking every catalogue item except the user's past items. A user with
    no past has an empty row: most-popular still ranks by popularity, while
    item-kNN and EASE score every item 0 (ties: catalogue order)."""
    from tfx_recsys import baselines, metrics

    item_index = {item: i for i, item in enumerate(item_ids)}
    row_of = {user: r for r, user in enumerate(sorted(set(past) | set(users)))}
    pairs = [(row_of[u], item_index[i]) for u, items in past.items() for i in items]
    train = baselines.interaction_matrix([p[0] for p in pairs], [p[1] for p in pairs],
                                         len(row_of), len(item_ids))
    rows = train[[row_of[u] for u in users]]
    seen = [rows.indices[rows.indptr[r]:rows.indptr[r + 1]] for r in range(len(users))]
    result = {}
    for name, model in (("ease", baselines.Ease()), ("item_knn", baselines.ItemKnn()),
                        ("most_popular", baselines.MostPopular())):
        ranked = metrics.top_k_items(model.fit(train).scores(rows), k, exclude=seen)
        # top_k_items ranks excluded items last (score -inf); a list drops them.
        result[name] = {u: [item_ids[i] for i in top if i not in excluded]
                        for u, top, excluded in zip(users, ranked, map(set, seen))}
    return result


def items_by_user(rows: Sequence[Dict[str, str]]) -> Dict[str, Set[str]]:
    result: Dict[str, Set[str]] = {}
    for row in rows:
        result.setdefault(row["user_id"], set()).add(row["item_id"])
    return result


# --------------------------------------------------------------------------
# One cut


def backtest_cut(cut: str, settings: Sequence[str], root: str, source_dir: str,
                 reuse: bool, saved: Dict) -> Dict:
    """Results of one cut: its baselines and the served rows of `settings`,
    beside the saved served rows of the other settings."""
    header, rows = read_interactions(os.path.join(source_dir, "interactions.csv"))
    past_rows, future_rows = cut_interactions(rows, cut)
    data_dir = os.path.join(root, cut, "data")
    write_past(source_dir, data_dir, header, past_rows)
    past, future = items_by_user(past_rows), items_by_user(future_rows)
    users = sorted(future)
    with open(os.path.join(source_dir, "users.csv"), newline="") as f:
        reader = csv.DictReader(f)
        user_rows = {row["user_id"]: row for row in reader}
        unknown_user = dict.fromkeys(reader.fieldnames, "")   # features missing
    with open(os.path.join(source_dir, "items.csv"), newline="") as f:
        item_ids = [row["item_id"] for row in csv.DictReader(f)]
    first_future = {}
    for row in future_rows:
        user, timestamp = row["user_id"], int(row["timestamp"])
        first_future[user] = min(first_future.get(user, timestamp), timestamp)
    requests = [{**user_rows.get(u, unknown_user), "user_id": u,
                 "timestamp": first_future[u]}
                for u in users]

    result = {"users": len(users), "cold_users": sum(u not in past for u in users),
              "past_interactions": len(past_rows), "future_interactions": len(future_rows),
              "served": dict(saved.get("served", {})), "baselines": {}}
    for setting in settings:
        run_root = os.path.join(root, cut, setting)
        previous = result["served"].get(setting, {})
        stamp = provenance()
        if reuse and served_model_dir(run_root):
            print(f"reusing {run_root}", flush=True)
            seconds = previous.get("wall_seconds")
            stamp = {name: previous.get(name, value) for name, value in stamp.items()}
        else:
            seconds = run_pipeline(data_dir, run_root, SETTINGS[setting])
        model_dir = served_model_dir(run_root)
        if model_dir is None:
            sys.exit(f"no pushed model under {run_root} (was it blessed? see {run_root}.log)")
        answer = query_served(model_dir, requests, os.path.join(root, cut))
        result["served"][setting] = {
            **score_lists(answer["lists"], future, past), "wall_seconds": seconds,
            "model_dir": model_dir, "trained_by": trained_by(model_dir),
            "signature": answer["signature"], **stamp}
    for name, lists in baseline_lists(past, users, item_ids).items():
        result["baselines"][name] = score_lists(lists, future, past)
    return result


# --------------------------------------------------------------------------
# Output


def provenance() -> Dict[str, str]:
    """Date, machine and commit ("+changes" when the tree has uncommitted edits)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"date": datetime.date.today().isoformat(),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
            "commit": commit + ("+changes" if dirty else "")}


def markdown(cut: str, result: Dict) -> str:
    rows = [(SERVED_LABELS[s], result["served"][s]) for s in SETTINGS
            if s in result["served"]]
    rows += [(BASELINE_LABELS[b], result["baselines"][b]) for b in BASELINE_LABELS
             if b in result["baselines"]]
    lines = [f"### {cut}",
             f"{result['users']} users with a future interaction, of whom "
             f"{result['cold_users']} cold (no past interaction); "
             f"{result['past_interactions']} past / {result['future_interactions']} "
             "future interactions.", "",
             "| | users | " + " | ".join(METRICS) + " | pipeline s |",
             "|---|---:|" + "---:|" * (len(METRICS) + 1)]
    for label, values in rows:
        seconds = values.get("wall_seconds")
        lines.append(f"| {label} | {values['users']} | "
                     + " | ".join(f"{values[m]:.4f}" for m in METRICS)
                     + f" | {'' if seconds is None else f'{seconds:.0f}'} |")
    lines.append("")
    for setting, values in result["served"].items():
        lines.append(f"- {SERVED_LABELS[setting]}: {values['model_dir']} (retrieval "
                     f"model from {values.get('trained_by')}; {values['date']}, commit "
                     f"{values['commit']}, {values['machine']})")
    return "\n".join(lines)


def verdict(results: Dict) -> str:
    served = results.get("per_user_temporal", {}).get("served", {}).get("refit")
    if served is None:
        return "verdict: per_user_temporal / refit not run yet"
    checks = []
    for name, (op, target) in TARGETS.items():
        met = served[name] == target if op == "==" else served[name] >= target
        checks.append(f"{name} {served[name]:.4f} {op} {target:g}: "
                      f"{'met' if met else 'NOT met'}")
    return "verdict (per_user_temporal, served (refit)): " + "; ".join(checks)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--cuts", default=",".join(CUTS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--reuse", action="store_true",
                        help="skip a pipeline run whose root already has a pushed model")
    args = parser.parse_args(argv)
    cuts, settings = args.cuts.split(","), args.settings.split(",")
    for name, chosen, known in (("cut", cuts, CUTS), ("setting", settings, SETTINGS)):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}; known: {', '.join(known)}")

    from tfx_recsys.data import movielens

    source_dir = movielens.fetch_movielens_100k()
    saved_path = os.path.join(RESULTS_DIR, "backtest.json")
    results = {}
    if os.path.exists(saved_path):
        with open(saved_path) as f:
            results = json.load(f).get("cuts", {})
    for cut in cuts:
        results[cut] = backtest_cut(cut, settings, os.path.abspath(args.root), source_dir,
                                    args.reuse, results.get(cut, {}))
    text = "\n\n".join([markdown(cut, results[cut]) for cut in CUTS if cut in results]
                       + [verdict(results)])
    machine = provenance()
    text += (f"\n\nGenerated by `make bench-backtest` on {machine['date']} "
             f"({machine['machine']}, commit {machine['commit']}).")
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "backtest.md"), "w") as f:
        f.write(text + "\n")
    with open(saved_path, "w") as f:
        json.dump({"cuts": results}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == [QUERY_COMMAND]:
        query_child(*sys.argv[2:5])
        sys.exit(0)
    sys.exit(main())
