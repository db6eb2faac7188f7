"""The cost model of `make bench-scale`: what each component's work costs
bare, measured on this machine right after the run, on the run's own data.

Each component's time in the run, divided by its bare cost, names its
overhead: a ratio near 1 means the component does little besides its work;
a large one, that its time goes elsewhere (Beam's per-element Python,
writing what nobody reads, a model loaded per worker, ...).

What "bare" is, per component (the outputs it decodes first are not timed):
- InteractionsExampleGen: parse the three CSV tables (pyarrow), sort the
  interactions by user and time, and serialise and gzip-write every record
  it wrote (tfx_bsl's Arrow encoder);
- StatisticsGen: read and decode its input splits to Arrow, and per column
  count, min/max, mean and distinct values (pyarrow.compute);
- Transform, RefitTransform: read and decode its input splits, count the
  values of each string column (its vocabularies), serialise and write its
  output records;
- the Trainers (retrieval and ranking, evaluated and refit): the epoch
  times the component itself logs (its training loop, input pipeline
  included);
- RetrievalEvaluator: exact top-100 over the whole corpus for each eval
  user (matrix product and partial sort, numpy), once per list it scores
  (the model, each baseline, the ranker and the two-stage list): every list
  costed as one dense pass;
- ScannPusher: one build of the ScaNN index it serves, on the pushed item
  embeddings.
"""

import glob
import json
import os
import re
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

COMPONENTS = ("InteractionsExampleGen", "StatisticsGen", "Transform", "RefitTransform",
              "RankingTrainer", "Trainer", "RefitRankingTrainer", "RefitTrainer",
              "RetrievalEvaluator", "ScannPusher")
_BATCH = 50_000
# An epoch as Keras prints it (stdout) and as the NCF trainer logs it (the run's log).
_EPOCH = (re.compile(r"^\s*\d+/\d+ - (\d+)s - "),
          re.compile(r"ncf \w+ epoch \d+/\d+: loss \S+, ([\d.]+)s"))
_COMPONENT = re.compile(r"Component (\S+) is (running|finished)\.")


def _files(uri: str, splits: Optional[Sequence[str]] = None) -> List[str]:
    return sorted(f for d in sorted(glob.glob(os.path.join(uri, "Split-*")))
                  if splits is None or os.path.basename(d)[6:] in splits
                  for f in glob.glob(os.path.join(d, "*")))


def _record_batches(files: List[str]) -> Iterator[list]:
    """Serialized records, _BATCH at a time."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(_BATCH)
    for batch in dataset.as_numpy_iterator():
        yield list(batch)


def _decoder():
    from tfx_bsl.coders import example_coder

    return example_coder.ExamplesToRecordBatchDecoder()


def _encode_and_write(files: List[str], scratch: str) -> float:
    """Seconds to serialise and gzip-write the records of `files` again
    (decoding them first is not timed)."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    decoder, encoder = _decoder(), example_coder.RecordBatchToExamplesEncoder()
    seconds = 0.0
    path = os.path.join(scratch, "out.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for records in _record_batches(files):
            batch = decoder.DecodeBatch(records)
            started = time.perf_counter()
            for record in encoder.encode(batch):
                writer.write(record)
            seconds += time.perf_counter() - started
    os.remove(path)
    return seconds


def _read_and_decode(files: List[str]) -> Iterator:
    decoder = _decoder()
    for records in _record_batches(files):
        yield decoder.DecodeBatch(records)


def _flat(column):
    import pyarrow.compute as pc

    return pc.list_flatten(column)


def example_gen(data_dir: str, outputs: List[str], scratch: str) -> float:
    import pyarrow.csv as pv

    started = time.perf_counter()
    tables = {name: pv.read_csv(os.path.join(data_dir, f"{name}.csv"))
              for name in ("interactions", "users", "items")}
    tables["interactions"].sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    parsed = time.perf_counter() - started
    return parsed + sum(_encode_and_write(_files(uri), scratch) for uri in outputs)


def statistics_gen(examples_uri: str) -> float:
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    for batch in _read_and_decode(_files(examples_uri)):
        for column in batch.columns:
            values = _flat(column)
            pc.count(values)
            if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
                pc.min_max(values)
                pc.mean(values)
            else:
                pc.count_distinct(values)
    return time.perf_counter() - started


def transform(examples_uri: str, transformed_uri: str, scratch: str) -> float:
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    for batch in _read_and_decode(_files(examples_uri)):
        for column in batch.columns:
            values = _flat(column)
            if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
                pc.value_counts(values)
    analysed = time.perf_counter() - started
    return analysed + _encode_and_write(_files(transformed_uri), scratch)


def trainer_epochs(lines: List[str]) -> float:
    """Seconds of the training epochs in a component's output: Keras'
    ("79/79 - 4s - ...") and the NCF trainer's ("ncf gmf epoch 1/1: loss
    0.35, 22.73s ...")."""
    return float(sum(float(m.group(1)) for line in lines for pattern in _EPOCH
                     for m in [pattern.search(line)] if m))


def log_lines_by_component(log_path: str) -> Dict[str, List[str]]:
    """The run log's lines, by the component that was running (TFX's
    "Component X is running." ... "is finished." lines)."""
    by_component: Dict[str, List[str]] = {}
    running = None
    with open(log_path, errors="replace") as f:
        for line in f:
            marker = _COMPONENT.search(line)
            if marker:
                running = marker.group(1) if marker.group(2) == "running" else None
            elif running:
                by_component.setdefault(running, []).append(line)
    return by_component


def evaluator(item_embeddings: np.ndarray, users: int, lists: int, k: int = 100) -> float:
    from tfx_recsys.components.scann_pusher import tuning

    queries = np.random.default_rng(0).standard_normal(
        (users, item_embeddings.shape[1])).astype(np.float32)
    started = time.perf_counter()
    tuning.exact_top_k(queries, item_embeddings, min(k, len(item_embeddings)))
    return (time.perf_counter() - started) * lists


def pusher(item_embeddings: np.ndarray, serving_k: int) -> float:
    from tfx_recsys.components.scann_pusher import tuning

    settings = tuning.candidate_settings(len(item_embeddings), serving_k)[-1]
    started = time.perf_counter()
    tuning.build_searcher(item_embeddings, serving_k, settings)
    return time.perf_counter() - started


def _output_uri(store, component: str, key: str) -> Optional[str]:
    from tfx_recsys import run_summary

    execution = run_summary.latest_execution(store, component)
    if execution is None:
        return None
    artifacts = run_summary.output_artifacts(store, execution, key)
    return artifacts[0].uri if artifacts else None


def bare_costs(data_dir: str, root: str, component_lines: Dict[str, List[str]]
               ) -> Dict[str, float]:
    """{component: bare seconds} for the run under `root` on `data_dir`;
    `component_lines` holds each component's log lines (for the epochs)."""
    from tfx_recsys import config, run_summary

    store = run_summary.open_store(root)
    component_lines = dict(component_lines)
    for log in sorted(glob.glob(os.path.join(root, "logs", "run-*.log")))[-1:]:
        for name, lines in log_lines_by_component(log).items():
            component_lines[name] = component_lines.get(name, []) + lines
    examples = _output_uri(store, "InteractionsExampleGen", "examples")
    refit_examples = _output_uri(store, "InteractionsExampleGen", "refit_examples")
    outputs = [u for u in (_output_uri(store, "InteractionsExampleGen", key)
                           for key in ("examples", "refit_examples", "users", "items")) if u]
    costs: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        costs["InteractionsExampleGen"] = example_gen(data_dir, outputs, scratch)
        costs["StatisticsGen"] = statistics_gen(examples)
        for name, source in (("Transform", examples), ("RefitTransform", refit_examples)):
            transformed = _output_uri(store, name, "transformed_examples")
            if source and transformed:
                costs[name] = transform(source, transformed, scratch)
    for name in ("Trainer", "RankingTrainer", "RefitTrainer", "RefitRankingTrainer"):
        epochs = trainer_epochs(component_lines.get(name, []))
        if epochs:
            costs[name] = epochs
    embeddings_dir = os.path.join(root, "serving", f"{config.MODEL_NAME}_embeddings")
    versions = sorted(glob.glob(os.path.join(embeddings_dir, "*", "item_embeddings.npy")))
    if versions:
        items = np.load(versions[-1])
        metrics_uri = _output_uri(store, "RetrievalEvaluator", "evaluation")
        with open(os.path.join(metrics_uri, "metrics.json")) as f:
            metrics = json.load(f)
        ranking = metrics.get("ranking") or {}
        lists = (1 + len(metrics["baselines"]) + int(bool(ranking.get("ranker_full_corpus")))
                 + int("two_stage" in ranking))
        costs["RetrievalEvaluator"] = evaluator(items, metrics["num_eval_users"], lists)
        costs["ScannPusher"] = pusher(items, config.SERVING_TOP_K)
    return costs
