"""The `recsys` command: run the pipeline, ask, serve and roll back the pushed model.

  recsys run [--data movielens-100k|synthetic|DIR] [--root DIR]
  recsys recommend --root DIR --user USER_ID [-k 10]
  recsys serve --root DIR | --model-dir DIR [--port 8501]
  recsys rollback --root DIR [--to VERSION]
  recsys deploy --target kserve --output FILE [--storage-uri URI] [--image IMAGE]
  recsys lineage --root DIR [--version V]
  recsys runs --root DIR
  recsys compile --target kubeflow|vertex [--image IMAGE] [--output FILE]
  recsys submit --host URL --spec FILE [--param NAME=VALUE]

Heavy imports (TensorFlow, TFX) happen inside the commands, so `--help` and
argument errors are instant. Expected failures (bad data, missing root, no
pushed model, unknown user) print one line and exit 1; the full log of a run
is kept under <root>/logs/.
"""

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import time
from typing import List, Optional

from tfx_recsys import config, dataset_config

MOVIELENS = "movielens-100k"
SYNTHETIC = "synthetic"


class UserError(Exception):
    """A failure the user can fix; printed as one line, no traceback."""


def _prepare_environment() -> None:
    # TFRS needs Keras 2; must be set before TensorFlow is first imported.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


# --------------------------------------------------------------------------
# recsys run


class _ComponentProgress:
    """Prints one line as each component starts and ends, with its duration
    (local_runner.run's progress callback)."""

    def __init__(self, stream):
        self._stream = stream
        self._started = {}

    def __call__(self, name: str, event: str) -> None:
        if event == "running":
            self._started[name] = time.monotonic()
            print(f"  {name:<26} running ...", file=self._stream, flush=True)
        elif event == "finished":
            seconds = time.monotonic() - self._started.get(name, time.monotonic())
            print(f"  {name:<26} done in {seconds:6.1f} s", file=self._stream,
                  flush=True)
        elif event == "cached":
            print("    (reused from cache)", file=self._stream, flush=True)


def _log_to_file(root: str) -> str:
    """Sends all library logging to <root>/logs/run-<time>.log."""
    log_dir = os.path.join(root, "logs")
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, time.strftime("run-%Y%m%d-%H%M%S.log"))
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    for old in list(root_logger.handlers):
        root_logger.removeHandler(old)
        old.close()
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    return path


@contextlib.contextmanager
def _stderr_to(path: str):
    """Sends file descriptor 2 to `path` for a while.

    TensorFlow's and ScaNN's C++ logging write straight to fd 2, past Python's
    logging; during a run it belongs in the log file, not on the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _resolve_data(args) -> str:
    """The data directory of `--data`, fetched or generated if needed."""
    from tfx_recsys.data import movielens, native, synthetic

    if args.data == MOVIELENS:
        print(f"data: MovieLens-100K (cache: {movielens.default_cache_dir()})")
        return movielens.fetch_movielens_100k()
    if args.data == SYNTHETIC:
        directory = os.path.join(
            args.root, "data", f"synthetic-u{args.num_users}-i{args.num_items}"
            f"-n{args.num_interactions}-s{args.data_seed}")
        if not os.path.exists(os.path.join(directory, native.ITEMS_FILE)):
            try:
                synthetic.generate_synthetic(
                    directory, num_users=args.num_users, num_items=args.num_items,
                    num_interactions=args.num_interactions, seed=args.data_seed)
            except ValueError as e:
                raise UserError(f"synthetic data: {e}") from None
        print(f"data: synthetic, {args.num_interactions} interactions "
              f"({directory})")
        return directory
    print(f"data: {os.path.abspath(args.data)}")
    return args.data


def _resolve_dataset(args, data_dir: str):
    """The dataset config of `--dataset` (a name in datasets/ or a YAML path),
    with `--split` applied, checked against the files in `data_dir`, and the
    spans the run reads (`--span`; data/spans.py).

    Without --dataset: MovieLens-100K's config for its data, else the
    synthetic one, which describes the native three-CSV format.
    """
    import dataclasses

    from tfx_recsys.data import tables

    dataset = _load_dataset(
        args.dataset or (MOVIELENS if args.data == MOVIELENS else SYNTHETIC))
    if args.split:
        dataset = dataclasses.replace(
            dataset, split=dataclasses.replace(dataset.split, kind=args.split))
    selection = _resolve_spans(dataset, data_dir, getattr(args, "span", None))
    for _, files in selection.configs(dataset):
        tables.validate_dataset(files, data_dir)
    print(f"dataset: {dataset.name} (split: {dataset.split.kind})")
    return dataset, selection


def _load_dataset(name: str):
    """A dataset config by built-in name (datasets/<name>.yaml) or YAML path."""
    path = name if name.endswith((".yaml", ".yml")) else dataset_config.builtin_path(name)
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(dataset_config.DATASETS_DIR)
                       if f.endswith(".yaml"))
        raise UserError(f"--dataset {name}: no such config file or built-in "
                        f"dataset (built-in: {', '.join(known)})")
    try:
        return dataset_config.load(path)
    except dataset_config.ConfigError as e:
        raise UserError(str(e)) from None


def _resolve_spans(dataset, data_dir: str, span):
    """The spans the run reads (data/spans.py), said in a line when the
    dataset has spans: a missing span fails here, before TensorFlow loads."""
    from tfx_recsys.data import spans

    selection = spans.select(dataset, data_dir, span)  # a DataError is one line
    if spans.has_spans(dataset):
        print(f"span {selection.span}: interactions of span(s) "
              f"{', '.join(map(str, selection.spans))} (window {dataset.window})")
    return selection


def _flink_cluster(args):
    """The Flink cluster of `--beam flink` (not started yet), else None."""
    if args.beam != "flink":
        if args.flink_master:
            raise ValueError("--flink-master needs --beam flink")
        return None
    from tfx_recsys.pipeline import flink_cluster

    reason = flink_cluster.missing(cluster=not args.flink_master)
    if reason:
        raise ValueError(f"--beam flink: {reason}")
    if args.flink_master and not re.fullmatch(r"[^:\s]+:\d+", args.flink_master):
        raise ValueError(f"--flink-master: HOST:PORT, not {args.flink_master!r}")
    return flink_cluster.FlinkCluster(flink_cluster.log_dir(args.root), slots=args.workers,
                                      flink_master=args.flink_master)


def cmd_run(args) -> int:
    from tfx_recsys import run_summary

    args.root = os.path.abspath(args.root)
    try:
        config.check_metric_name(args.blessing_metric)
    except ValueError as e:
        raise UserError(f"--blessing-metric: {e}") from None
    data_dir = _resolve_data(args)
    dataset, _ = _resolve_dataset(args, data_dir)
    log_path = _log_to_file(args.root)
    print(f"root: {args.root}\nlog:  {log_path}\nloading TensorFlow and TFX ...")
    with _stderr_to(log_path):
        from absl import logging as absl_logging

        from tfx_recsys.pipeline import beam_options, local_runner
    # The log file gets TFX's INFO lines: the absl verbosity flag (not just
    # the logger level) must say INFO, or a later flag parse resets it.
    absl_logging.set_verbosity(absl_logging.INFO)
    progress = _ComponentProgress(sys.stdout)

    _, hyperparameters_class = config.MODELS[args.model]
    training = hyperparameters_class(
        **{k: v for k, v in (("epochs", args.epochs), ("seed", args.seed))
           if v is not None})
    blessing = config.BlessingConfig(
        metric=args.blessing_metric, min_value=args.min_value,
        max_regression=args.max_regression)
    ranking_settings = {"ranking_run_fn": None} if args.ranker == "none" else {}
    try:
        ranking = config.NcfConfig(**{k: v for k, v in (
            ("variant", None if args.ranker == "none" else args.ranker),
            ("epochs", args.ranker_epochs), ("seed", args.seed),
            ("factors", args.ranker_factors),
            ("pretrain", False if args.no_pretrain else None)) if v is not None})
        rerank = config.RerankConfig(
            candidates=args.candidates, ranker_weight=args.ranker_weight,
            exclude_seen=not args.keep_seen, dislike_below=args.dislike_below,
            freshness_weight=args.freshness_weight,
            freshness_feature=args.freshness_feature, diversity=args.diversity,
            mmr_lambda=args.mmr_lambda, genre_cap=args.genre_cap)
        flink = _flink_cluster(args)
        beam = beam_options.beam_args(args.beam, None if flink else args.workers,
                                      args.beam_arg or (), flink=flink)
        if args.max_eval_users < 0:
            raise ValueError(f"--max-eval-users must be >= 0 (0 = all), got "
                             f"{args.max_eval_users}")
    except ValueError as e:
        raise UserError(str(e)) from None
    started = time.monotonic()
    with _stderr_to(log_path), (flink or contextlib.nullcontext()):
        local_runner.run(data_dir, args.root, dataset=dataset,
                         model=args.model, training=training, ranking=ranking,
                         beam_pipeline_args=beam, metadata=args.metadata,
                         enable_cache=not args.no_cache, blessing=blessing,
                         rerank=rerank, max_eval_users=args.max_eval_users,
                         refit=not args.no_refit, span=args.span,
                         # Spans are data that keeps arriving: each run
                         # starts from the last blessed model unless --cold.
                         warm_start=dataset_config.SPAN_PATTERN in dataset.interactions.path
                         and not args.cold,
                         process_per_component={"auto": None, "on": True, "off": False}[
                             args.process_per_component],
                         progress=progress, **ranking_settings)
    total = time.monotonic() - started

    result = run_summary.summary(args.root)
    print(f"\npipeline finished in {total:.0f} s\n")
    print(run_summary.format_table(result, model_label=args.model.replace("_", "-")))
    print(f"\ndata anomalies: none (ExampleValidator, against {dataset.name}'s schema)")
    _print_ingestion(result.get("ingestion") or {})
    blessing = result.get("evaluation", {}).get("blessing", {})
    print(f"\nblessed: {'yes' if blessing.get('blessed') else 'no'} "
          f"({blessing.get('reason', 'no evaluation')})")
    if result.get("pushed") and result.get("index_recall") is None:
        print(f"pushed:  {result['pushed_destination']} ({result.get('reason')})")
    elif result.get("pushed"):
        print(f"pushed:  {result['pushed_destination']}\n"
              f"         ScaNN recall@{result['index_recall_k']} vs exact "
              f"{result['index_recall']:.3f}, "
              f"search {result['index_latency_ms_p50']:.3f} ms (exact "
              f"{result['exact_search_latency_ms_p50']:.3f} ms), whole signature "
              f"{result['serving_latency_ms_p50']:.2f} ms (p50, one user)")
        print(f"served:  {run_summary.served_line(result)}")
        print(f"try:     recsys recommend --root {args.root} --user <user_id>")
    else:
        print(f"pushed:  no ({result.get('reason') or 'see the log'})")
    return 0


def cmd_refresh(args) -> int:
    """The served models pushed again with the latest data, no training."""
    import json

    from tfx_recsys import run_summary
    from tfx_recsys.components.scann_pusher import publishing

    args.root = os.path.abspath(args.root)
    serving_dir = os.path.join(args.root, "serving", config.MODEL_NAME)
    served = publishing.latest_version_dir(serving_dir)
    source = publishing.read_source(served) if served else None
    if not source:
        raise UserError(f"{args.root}: no version is served there to refresh; "
                        "`recsys run` pushes one first.")
    data_dir = _resolve_data(args)
    dataset, _ = _resolve_dataset(args, data_dir)
    print(f"refreshing version {os.path.basename(served)} "
          f"(model {source['model_path']})")
    log_path = _log_to_file(args.root)
    print(f"log:  {log_path}\nloading TensorFlow and TFX ...")
    with _stderr_to(log_path):
        from absl import logging as absl_logging

        from tfx_recsys.pipeline import local_runner
    absl_logging.set_verbosity(absl_logging.INFO)
    # The served version's re-ranking settings, so that only the data changes.
    rerank = config.RerankConfig(**json.loads(source.get("rerank") or "{}"))
    started = time.monotonic()
    with _stderr_to(log_path):
        local_runner.run(data_dir, args.root, dataset=dataset, metadata=args.metadata,
                         rerank=rerank, span=args.span, refresh=True,
                         progress=_ComponentProgress(sys.stdout))
    result = run_summary.summary(args.root)
    print(f"\nrefresh finished in {time.monotonic() - started:.0f} s")
    _print_ingestion(result.get("ingestion") or {})
    if result.get("pushed") and result.get("index_recall") is not None:
        print(f"pushed:  {result['pushed_destination']}\n"
              f"         ScaNN recall@{result['index_recall_k']} vs exact "
              f"{result['index_recall']:.3f}, {result.get('num_items')} items")
        print(f"served:  {run_summary.served_line(result)}")
        return 0
    print(f"pushed:  no ({result.get('reason') or 'see the log'})")
    return 1


def _print_ingestion(ingestion: dict) -> None:
    """Every row ExampleGen read, accounted for per table (read = accepted +
    rejected + duplicates + below min_rating), then the rows it set aside:
    counted by file and reason, never silent."""
    tables = ingestion.get("tables") or {}
    counted = []
    for table in ("interactions", "users", "items"):
        if table not in tables:
            continue
        entry = tables[table]
        parts = [f"{entry[key]} {label}" for key, label in (
            ("rejected", "rejected"), ("duplicates", "duplicates"),
            ("filtered", "below min_rating")) if entry.get(key)]
        counted.append(f"{entry['file']} {entry['rows']}"
                       + (f" = {entry['accepted']} accepted + " + " + ".join(parts)
                          if parts else " accepted"))
    if counted:
        print(f"rows read: {', '.join(counted)}")
    rejected = ingestion.get("rejected_rows", 0)
    if rejected:
        print(f"skipped rows: {rejected}, listed in {ingestion['rejected_file']}")
        for reason, count in sorted(ingestion.get("rejected_summary", {}).items()):
            print(f"  {count:6d}  {reason}")
    else:
        print("skipped rows: none")
    duplicates = ingestion.get("duplicates_removed", 0)
    if duplicates:
        print(f"exact duplicates removed: {duplicates} (listed there too; "
              "interactions.keep_duplicates: true keeps them)")
    filtered = ingestion.get("filtered_below_min_rating", 0)
    if filtered:
        print(f"below min_rating (not positives, kept out of the examples): {filtered}")


# --------------------------------------------------------------------------
# recsys recommend


def _latest_rows(store, output_key: str, split: str) -> list:
    """Rows ({feature: values}) of the latest ExampleGen output `output_key`."""
    from tfx_recsys import examples_io, run_summary

    execution = run_summary.latest_execution(store, "InteractionsExampleGen")
    if execution is None:
        return []
    [artifact] = run_summary.output_artifacts(store, execution, output_key)
    return list(examples_io.read_rows(artifact.uri, split))


def _users_and_items(root: str, source: dict):
    """The user rows and item rows (iterables) the served version was made
    from: read without TensorFlow or ML Metadata from the URIs its source
    records; from the run's latest ExampleGen for versions pushed before
    the source named the users."""
    from tfx_recsys.examples_io import read_rows_without_tensorflow

    if source.get("users") and source.get("items"):
        return (read_rows_without_tensorflow(source["users"], "users"),
                read_rows_without_tensorflow(source["items"], config.ITEMS_SPLIT))
    store = _open_store(root)
    with _stderr_to(os.devnull):
        return (_latest_rows(store, "users", "users"),
                _latest_rows(store, "items", config.ITEMS_SPLIT))


def _find_user(users, user_id: str, root: str) -> dict:
    """The row of `user_id` among `users`, read no further than it; a
    UserError naming how many users there are if it is not there."""
    from tfx_recsys.examples_io import scalar

    count = 0
    for count, row in enumerate(users, 1):
        if scalar(row, "user_id") == user_id:
            return row
    raise UserError(f"unknown user {user_id!r}: not among the {count} users of "
                    f"the run in {root}")


def _titles(items, wanted: set) -> dict:
    """{item id: title} of the `wanted` items, read no further than the last."""
    from tfx_recsys.examples_io import scalar

    titles = {}
    for row in items:
        item = scalar(row, "item_id")
        if item in wanted:
            titles[item] = scalar(row, "title", "")
            if len(titles) == len(wanted):
                break
    return titles


def _recommend_from_server(serving_dir: str, model_dir: str, user: dict):
    """The serving signature's outputs for `user` from a running `recsys
    serve` of `serving_dir` that serves `model_dir`'s version, and its URL;
    None when there is none (or it fails: the caller loads the model)."""
    from tfx_recsys.serving import client, registry

    for server in registry.servers(serving_dir):
        try:
            [outputs] = client.recommend(server, int(os.path.basename(model_dir)), [user])
        except client.ServerUnavailable as e:
            print(f"not asking the server at {server.url}: {e}", file=sys.stderr)
            continue
        return outputs, server.url
    return None


def _recommend_locally(model_dir: str, user: dict) -> dict:
    """The serving signature's outputs for `user` from the SavedModel."""
    with _stderr_to(os.devnull):
        import scann  # noqa: F401  registers the ScaNN op the SavedModel uses

        from tfx_recsys import embedding

        model = embedding.load(model_dir)
        outputs = model.signatures["serving_default"](
            **embedding.request(model, "serving_default", [user]))
    return {name: [v.decode() if isinstance(v, bytes) else v for v in value.numpy()[0]]
            for name, value in outputs.items()}


def cmd_recommend(args) -> int:
    from tfx_recsys.components.scann_pusher import publishing

    serving_dir = _serving_dir(args.root)
    model_dir = publishing.latest_version_dir(serving_dir)
    if model_dir is None:
        raise UserError(f"no pushed model under {serving_dir}; run "
                        f"`recsys run --root {args.root}` (the model must be "
                        "blessed to be pushed)")
    if args.k < 1:
        raise UserError("-k must be at least 1")
    # The users and items as the run ingested them (its `users` and `items`
    # outputs), whatever format the dataset came in.
    users, items = _users_and_items(args.root, publishing.read_source(model_dir) or {})
    user = _find_user(users, args.user, args.root)
    answered = _recommend_from_server(serving_dir, model_dir, user)
    outputs, via = answered or (_recommend_locally(model_dir, user), None)
    # "" pads the list when exclusions leave fewer items than it holds.
    item_ids = [i for i in outputs["item_ids"] if i]
    scores = outputs["scores"]
    # NaN (a stage that did not score an item) comes back from a server as null.
    stages = {name: [math.nan if v is None else v for v in outputs[name]]
              for name in ("retrieval_scores", "ranker_scores") if name in outputs}
    if args.k > len(item_ids):
        raise UserError(f"-k {args.k} exceeds the {len(item_ids)} items the "
                        "served model returns")
    titles = _titles(items, set(item_ids[:args.k]))
    described = ", ".join(f"{name} {values[0] if len(values) == 1 else values}"
                          for name, values in sorted(user.items())
                          if name != "user_id" and values)
    print(f"top {args.k} for user {args.user} ({described}) from {model_dir}"
          + (f" (answered by the server at {via})" if via else "") + ":")
    for rank, (item, score) in enumerate(zip(item_ids[:args.k], scores), 1):
        detail = "".join(f", {name.split('_')[0]} {values[rank - 1]:.3f}"
                         for name, values in stages.items()
                         if not math.isnan(values[rank - 1]))
        print(f"{rank:3d}. {titles.get(item) or '?'}  [item {item}, score "
              f"{score:.3f}{detail}]")
    return 0


# --------------------------------------------------------------------------
# recsys serve, recsys rollback


def _serving_dir(root: str) -> str:
    from tfx_recsys.pipeline.local_runner import RunPaths

    paths = RunPaths(os.path.abspath(root))
    if not os.path.isdir(paths.root):
        raise UserError(f"root {paths.root} does not exist; run `recsys run "
                        f"--root {root}` first")
    return paths.serving_dir


def _model_dir(args) -> str:
    """The model directory `recsys serve` serves: --model-dir, else the run's."""
    if args.model_dir:
        return os.path.abspath(args.model_dir)
    return _serving_dir(args.root)


def cmd_serve(args) -> int:
    from tfx_recsys.serving import server

    model_dir = _model_dir(args)
    for option, value, least in (("--max-batch-size", args.max_batch_size, 1),
                                 ("--batch-timeout-ms", args.batch_timeout_ms, 0),
                                 ("--batch-threads", args.batch_threads, 1),
                                 ("--tf-threads", args.tf_threads, 0),
                                 ("--max-body-bytes", args.max_body_bytes, 1),
                                 ("--max-request-rows", args.max_request_rows, 1),
                                 ("--body-timeout", args.body_timeout, 0.001),
                                 ("--poll-seconds", args.poll_seconds, 0.01)):
        if not value >= least:
            raise UserError(f"{option} must be at least {least:g}, got {value:g}")
    try:
        settings = server.ServerSettings(
            host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
            body_timeout_seconds=args.body_timeout, access_log=args.access_log)
        batching = server.BatchingSettings(
            max_batch_size=args.max_batch_size, timeout_ms=args.batch_timeout_ms,
            threads=args.batch_threads)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        server.run_server(model_dir, args.model_name, settings, batching,
                          max_rows=args.max_request_rows, poll_seconds=args.poll_seconds,
                          tf_threads=args.tf_threads)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: "
                        f"{e.strerror or e}") from None
    # Stopped cleanly (socket closed, watcher joined): end here, not in the
    # interpreter's teardown, which once aborted (SIGABRT) after a clean stop
    # in CI; the cause was not found (40 local repeats did not reproduce it).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def _check_loads(dirs: dict, target: int) -> None:
    """Loads (and calls) `target` of every served model dir that has it, as
    the server would; a UserError naming what failed if one does not."""
    from tfx_recsys.components.scann_pusher import publishing
    from tfx_recsys.serving import versions

    for role in ("scann", "brute_force"):
        if target not in publishing.versions(dirs[role]):
            continue
        path = os.path.join(dirs[role], str(target))
        try:
            with _stderr_to(os.devnull):
                versions.load_version(path, target)
        except Exception as e:  # whatever the reason, no server could serve it
            raise UserError(f"version {target} does not load, so it cannot be served "
                            f"again ({path}: {type(e).__name__}: "
                            f"{versions.first_line(str(e), 200)}); nothing was "
                            "changed") from None


def cmd_rollback(args) -> int:
    """Re-publishes an older version as the newest, in every sibling model dir,
    all or nothing, once it is known to load."""
    from tfx_recsys.components.scann_pusher import publishing

    dirs = publishing.sibling_dirs(_serving_dir(args.root))
    published = publishing.versions(dirs["scann"])
    if len(published) < 2 and args.to is None:
        raise UserError(f"nothing to roll back to: {dirs['scann']} has "
                        f"{len(published)} version(s)")
    target = args.to if args.to is not None else published[-2]
    if target not in published:
        raise UserError(f"no version {target} in {dirs['scann']}; there are {published}")
    _check_loads(dirs, target)
    version = publishing.new_version(list(dirs.values()))
    try:
        publishing.republish_together(dirs, target, version)
    except OSError as e:
        raise UserError(f"rolling back to version {target} failed, nothing was changed: "
                        f"{_os_error_text(e)}") from None
    print(f"version {target} is now served again as version {version} "
          f"(in {os.path.dirname(dirs['scann'])})")
    return 0


def _os_error_text(e: OSError) -> str:
    """An OSError in a line; shutil.copytree's Error holds a list of them."""
    import shutil

    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        source, destination, why = e.args[0][0]
        more = len(e.args[0]) - 1
        return f"{why}{f' (and {more} more)' if more else ''}"
    text = e.strerror or str(e)
    return f"{text} ({e.filename})" if e.filename else text


def cmd_deploy(args) -> int:
    """Writes the KServe InferenceService that serves the pushed model."""
    from tfx_recsys.serving import deploy

    settings = deploy.DeploySettings(
        name=args.name, storage_uri=args.storage_uri, image=args.image,
        model_name=args.model_name, namespace=args.namespace, cpu=args.cpu,
        memory=args.memory, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, serve_args=tuple(args.serve_arg or ()))
    try:
        isvc = deploy.inference_service(settings)
    except ValueError as e:
        raise UserError(str(e)) from None
    output = os.path.abspath(args.output)
    deploy.write(isvc, output)
    print(f"wrote {output} (kubectl apply -f {args.output})")
    return 0


def _open_store(root: str):
    from tfx_recsys import run_summary

    try:
        return run_summary.open_store(os.path.abspath(root))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    except RuntimeError as e:  # MLMD cannot connect (server down, bad password)
        raise UserError(f"cannot open the ML Metadata store of {root}: {e}") from None


def cmd_lineage(args) -> int:
    from tfx_recsys import lineage

    try:
        tree = lineage.model_lineage(_open_store(args.root), args.version)
    except LookupError as e:
        raise UserError(f"{e} in {os.path.abspath(args.root)}") from None
    print(lineage.format_tree(tree))
    print(f"\npicture: {lineage.write_svg(os.path.abspath(args.root), tree)}")
    return 0


def cmd_schema(args) -> int:
    from tfx_recsys.data import schema

    dataset = _load_dataset(args.dataset)
    text = schema.schema_text(dataset)
    if args.output:
        schema.write_schema(dataset, args.output)
        print(f"wrote {os.path.abspath(args.output)}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args) -> int:
    from tfx_recsys import report

    root = os.path.abspath(args.root)
    try:
        with _stderr_to(os.devnull):
            path = report.write_report(root, args.run)
    except (FileNotFoundError, LookupError) as e:
        raise UserError(str(e)) from None
    print(f"report: {path}")
    return 0


def cmd_runs(args) -> int:
    from tfx_recsys import lineage

    print(lineage.format_runs(lineage.runs(_open_store(args.root))))
    return 0


# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the pipeline end to end")
    run.add_argument("--data", default=MOVIELENS,
                     help=f"{MOVIELENS} (default), {SYNTHETIC}, or a directory "
                          "holding the tables the dataset config names")
    run.add_argument("--dataset",
                     help="dataset config: a name in datasets/ or a YAML file "
                          f"(default: {MOVIELENS} for its data, else {SYNTHETIC}, "
                          "the native three-CSV format)")
    run.add_argument("--split", choices=dataset_config.SPLIT_KINDS,
                     help="override the config's split kind")
    run.add_argument("--model", default=config.DEFAULT_MODEL,
                     choices=sorted(config.MODELS),
                     help="retrieval model to train (default: %(default)s)")
    run.add_argument("--root", default=config.DEFAULT_ROOT,
                     help="where the run writes everything (default: %(default)s)")
    run.add_argument("--epochs", type=int, help="training epochs")
    run.add_argument("--seed", type=int, default=None,
                     help="training seed (default: the model config's seed)")
    run.add_argument("--no-cache", action="store_true",
                     help="re-run every component")
    spans_group = run.add_argument_group(
        "spans (a dataset whose interactions.path holds {SPAN})")
    spans_group.add_argument("--span", type=int, metavar="N",
                             help="read span N and its window instead of the latest")
    spans_group.add_argument("--cold", action="store_true",
                             help="train from scratch instead of starting from the "
                                  "last blessed model")
    run.add_argument("--no-refit", action="store_true",
                     help="push the evaluated models (trained on the train split) "
                          "instead of refitting them on every interaction once blessed")
    run.add_argument("--metadata",
                     help="ML Metadata store: a SQLite file (default: "
                          "<root>/metadata.sqlite) or mysql://USER@HOST[:PORT]/DB "
                          "(password in $RECSYS_METADATA_PASSWORD); the root "
                          "remembers it for runs, lineage, recommend, report")
    beam = run.add_argument_group("Beam (the data-parallel components)")
    beam.add_argument("--beam", default="in_memory",
                      choices=("in_memory", "multi_processing", "flink", "pass_through"),
                      help="in_memory (default); multi_processing: N local worker "
                           "processes; flink: Apache Flink (a local cluster started "
                           "for the run unless --flink-master; `make flink` first); "
                           "pass_through: only the --beam-arg options "
                           "(e.g. --runner=DataflowRunner ...)")
    beam.add_argument("--workers", type=int,
                      help="worker processes of multi_processing, task slots of "
                           "flink's local cluster (default: CPUs)")
    beam.add_argument("--flink-master", metavar="HOST:PORT",
                      help="with --beam flink: a running Flink cluster's JobManager "
                           "(REST address) instead of a local one; its TaskManagers "
                           "need SDK worker pools (docs/operations.md)")
    beam.add_argument("--beam-arg", action="append", metavar="OPTION",
                      help="a Beam pipeline option, passed through (repeatable)")
    run.add_argument("--process-per-component", default="auto",
                     choices=("auto", "on", "off"),
                     help="run each component in a process of its own, so the memory "
                          "one used is free for the next (5-15 s of start-up each); "
                          "auto (default): when the data reach "
                          f"{config.PROCESS_PER_COMPONENT_MIN_BYTES >> 20} MiB")
    gate = run.add_argument_group("blessing (every check must hold)")
    defaults = config.BlessingConfig()
    gate.add_argument("--blessing-metric", default=defaults.metric,
                      help="overall metric the checks use (default: %(default)s)")
    gate.add_argument("--min-value", type=float, default=defaults.min_value,
                      help="absolute threshold on it (default: %(default)s)")
    gate.add_argument("--max-regression", type=float, default=defaults.max_regression,
                      help="allowed drop below the last blessed model (default: %(default)s)")
    gate.add_argument("--max-eval-users", type=int, default=config.MAX_EVAL_USERS,
                      help="evaluate on at most this many eval users, a seeded sample "
                           "(default: %(default)s; 0 = all)")
    ranking = run.add_argument_group("ranking stage (NCF) and re-ranking")
    rerank = config.RerankConfig()
    ranking.add_argument("--ranker", default=config.NcfConfig.variant,
                         choices=config.NCF_VARIANTS + ("none",),
                         help="the ranking model (default %(default)s); none: "
                              "retrieval and re-ranking only")
    ranking.add_argument("--ranker-epochs", type=int,
                         help="ranker training epochs (per stage with pretraining)")
    ranking.add_argument("--ranker-factors", type=int,
                         help="GMF / MF embedding size (default "
                              f"{config.NcfConfig.factors})")
    ranking.add_argument("--no-pretrain", action="store_true",
                         help="NeuMF from scratch, not from pretrained GMF and MLP")
    ranking.add_argument("--candidates", type=int, default=rerank.candidates,
                         help="retrieval candidates the ranker scores (%(default)s)")
    ranking.add_argument("--ranker-weight", type=float, default=rerank.ranker_weight,
                         help="blend: 0 = retrieval order, 1 = the ranker alone "
                              "(%(default)s)")
    ranking.add_argument("--keep-seen", action="store_true",
                         help="may recommend items the user already interacted with")
    ranking.add_argument("--dislike-below", type=float, default=rerank.dislike_below,
                         help="never recommend items the user rated below this")
    ranking.add_argument("--freshness-weight", type=float,
                         default=rerank.freshness_weight,
                         help="boost of fresher items (%(default)s)")
    ranking.add_argument("--freshness-feature", default=rerank.freshness_feature,
                         help="numeric item feature that says how fresh an item is "
                              "(default: its first appearance in the data)")
    ranking.add_argument("--diversity", default=rerank.diversity,
                         choices=("none", "mmr", "genre_cap"),
                         help="diversification of the top list (%(default)s)")
    ranking.add_argument("--mmr-lambda", type=float, default=rerank.mmr_lambda,
                         help="MMR: 1 = relevance only (%(default)s)")
    ranking.add_argument("--genre-cap", type=int, default=rerank.genre_cap,
                         help="genre_cap: most items per genre (%(default)s)")
    synthetic = run.add_argument_group("synthetic data (--data synthetic)")
    synthetic.add_argument("--num-users", type=int, default=200)
    synthetic.add_argument("--num-items", type=int, default=300)
    synthetic.add_argument("--num-interactions", type=int, default=5000)
    synthetic.add_argument("--data-seed", type=int, default=0)
    run.set_defaults(func=cmd_run)

    recommend = commands.add_parser("recommend", help="top-k from the pushed model")
    recommend.add_argument("--root", default=config.DEFAULT_ROOT)
    recommend.add_argument("--user", required=True, help="a user_id of users.csv")
    recommend.add_argument("-k", type=int, default=10)
    recommend.set_defaults(func=cmd_recommend)

    serve = commands.add_parser(
        "serve", help="serve the newest pushed model over HTTP (KServe: TF Serving's "
                      "REST API and the V2 inference protocol)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--root", default=config.DEFAULT_ROOT,
                       help="a run root: serves <root>/serving/retrieval")
    where.add_argument("--model-dir",
                       help="a model directory of numbered versions instead (e.g. "
                            "<root>/serving/retrieval_bruteforce, or /mnt/models on KServe)")
    serve.add_argument("--model-name", default=config.MODEL_NAME,
                       help="the name in the URLs (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=8501)
    batching = serve.add_argument_group("micro-batching")
    batching.add_argument("--max-batch-size", type=int, default=64,
                          help="most users per signature call (default: %(default)s)")
    batching.add_argument("--batch-timeout-ms", type=float, default=0.0,
                          help="how long a batch may wait to fill; 0 (default): only "
                               "requests that arrive while the previous batch runs")
    batching.add_argument("--batch-threads", type=int, default=1,
                          help="signature calls running at once (default: %(default)s)")
    batching.add_argument("--tf-threads", type=int, default=1,
                          help="TensorFlow threads per signature call (default: "
                               "%(default)s; 0: TensorFlow's own choice)")
    limits = serve.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20,
                        help="largest request body (default: %(default)s)")
    limits.add_argument("--max-request-rows", type=int, default=1024,
                        help="most examples in one request (default: %(default)s)")
    limits.add_argument("--body-timeout", type=float, default=10.0,
                        help="seconds a request body may take to arrive (default: "
                             "%(default)s)")
    serve.add_argument("--poll-seconds", type=float, default=2.0,
                       help="how often to look for new versions (default: %(default)s)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=cmd_serve)

    refresh = commands.add_parser(
        "refresh", help="push the served models again with the latest data "
                        "(new items, user state, index; no training)")
    refresh.add_argument("--data", default=MOVIELENS,
                         help="the data directory (as for run)")
    refresh.add_argument("--dataset", help="dataset config (as for run)")
    refresh.add_argument("--root", default=config.DEFAULT_ROOT)
    refresh.add_argument("--span", type=int, metavar="N",
                         help="read span N and its window instead of the latest")
    refresh.add_argument("--metadata", help="ML Metadata store (as for run)")
    refresh.set_defaults(func=cmd_refresh, split=None, num_users=200, num_items=300,
                         num_interactions=5000, data_seed=0)

    rollback = commands.add_parser(
        "rollback", help="serve an older pushed version again (as a new version)")
    rollback.add_argument("--root", default=config.DEFAULT_ROOT)
    rollback.add_argument("--to", type=int, help="version to restore "
                          "(default: the one before the newest)")
    rollback.set_defaults(func=cmd_rollback)

    deploy = commands.add_parser(
        "deploy", help="write the KServe InferenceService that serves the pushed model")
    deploy.add_argument("--target", required=True, choices=("kserve",))
    deploy.add_argument("--output", required=True, help="the YAML (or .json) file to write")
    deploy.add_argument("--storage-uri", default="gs://YOUR_BUCKET/tfx-recsys/serving/retrieval",
                        help="where the model's versions are (gs://, s3://, pvc://...; "
                             "default: %(default)s)")
    deploy.add_argument("--image", default="tfx-recsys:latest",
                        help="the project's image, kubeflow/Dockerfile (default: %(default)s)")
    deploy.add_argument("--name", default="tfx-recsys",
                        help="the InferenceService's name (default: %(default)s)")
    deploy.add_argument("--namespace")
    deploy.add_argument("--model-name", default=config.MODEL_NAME)
    deploy.add_argument("--cpu", default="2", help="CPU request (default: %(default)s)")
    deploy.add_argument("--memory", default="4Gi",
                        help="memory request and limit (default: %(default)s)")
    deploy.add_argument("--min-replicas", type=int, default=1)
    deploy.add_argument("--max-replicas", type=int)
    deploy.add_argument("--serve-arg", action="append", metavar="OPTION",
                        help="a `recsys serve` option for the container (repeatable), "
                             "e.g. --serve-arg=--max-batch-size=128")
    deploy.set_defaults(func=cmd_deploy)

    lineage = commands.add_parser(
        "lineage", help="where a pushed model came from (ML Metadata), as text and SVG")
    lineage.add_argument("--root", default=config.DEFAULT_ROOT)
    lineage.add_argument("--version", help="pushed version (default: the newest)")
    lineage.set_defaults(func=cmd_lineage)

    schema = commands.add_parser(
        "schema", help="print the raw-example schema a dataset config implies")
    schema.add_argument("--dataset", required=True,
                        help="a name in datasets/ or a YAML file")
    schema.add_argument("--output", help="write it to this file instead")
    schema.set_defaults(func=cmd_schema)

    report = commands.add_parser(
        "report", help="write a self-contained HTML page about a run")
    report.add_argument("--root", default=config.DEFAULT_ROOT)
    report.add_argument("--run", help="pipeline run id (default: the newest)")
    report.set_defaults(func=cmd_report)

    runs = commands.add_parser("runs", help="one line per pipeline run")
    runs.add_argument("--root", default=config.DEFAULT_ROOT)
    runs.set_defaults(func=cmd_runs)

    from tfx_recsys import kubeflow_commands  # light: no TFX at import

    kubeflow_commands.add_commands(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_environment()
    from tfx_recsys import errors

    try:
        return args.func(args)
    # errors.UserError: bad data (DataError), a bad dataset config, a failed
    # download, a run already in progress on the root.
    except (UserError, errors.UserError) as e:
        print(f"recsys: error: {_without_beam_suffix(str(e))}", file=sys.stderr)
        return 1


def _without_beam_suffix(message: str) -> str:
    """Drops the " [while running 'Step']" Beam appends to a DoFn's error."""
    return re.sub(r" \[while running '[^']*'\]$", "", message.strip())


if __name__ == "__main__":
    sys.exit(main())
