"""Training throughput: the pipeline's Trainer input path against a bare TFRS loop.

`make bench-throughput` measures, in one process and on the same model and
data (MovieLens-100K's transformed train split, the two-tower of
models/two_tower.py with its default hyperparameters):

* **pipeline**: `model.fit` on the dataset the Trainer's run_fn builds
  (`training.train_dataset`: gzipped TFRecords of transformed examples,
  parsed by tfx_bsl with the Transform schema, shuffled, batched);
* **bare TFRS**: the way a TFRS tutorial script trains, `model.fit` on
  `tf.data.Dataset.from_tensor_slices` of the same transformed features held
  in memory (`.shuffle().batch()`), nothing read from disk;
* **cached batches**: `model.fit` on the pipeline's batches cached in memory
  after the first epoch: the training step alone, input cost about zero;
  pipeline / cached shows how much the input pipeline slows training;
* **input only**: one pass over the pipeline's dataset without training.

Each training path runs `--epochs` epochs (default 4) on a fresh model with
the same seed; the first epoch (tracing) is left out and the median of the
others is reported, as examples per second. The target: the pipeline within
20% of the bare loop (ratio >= 0.8). The data comes from a pipeline run on
MovieLens-100K under runs/bench-throughput (reused from cache when it exists).

Output: a table on stdout, bench/results/throughput.md and throughput.json.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, List  # noqa: E402

import tensorflow as tf  # noqa: E402

from tfx_recsys import config, dataset_config, run_summary  # noqa: E402
from tfx_recsys.models import training, two_tower  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROOT = os.path.join(os.path.dirname(HERE), "runs", "bench-throughput")
TARGET_RATIO = 0.8


class _EpochTimer(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds: List[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def pipeline_fn_args(root: str):
    """FnArgs as the Trainer built them for the latest run under `root`."""
    from tfx.components.trainer import fn_args_utils
    from tfx.types import artifact_utils, standard_artifacts

    store = run_summary.open_store(root)
    trainer = run_summary.latest_execution(store, "Trainer")

    def inputs(key, kind):
        events = [e for e in store.get_events_by_execution_ids([trainer.id])
                  if e.type == e.INPUT and any(s.key == key for s in e.path.steps)]
        result = []
        for mlmd in store.get_artifacts_by_id([e.artifact_id for e in events]):
            artifact = kind()
            artifact.set_mlmd_artifact(mlmd)
            result.append(artifact)
        return result

    input_dict = {"examples": inputs("examples", standard_artifacts.Examples),
                  "transform_graph": inputs("transform_graph",
                                            standard_artifacts.TransformGraph)}
    exec_properties = {
        "train_args": '{"splits": ["train"]}', "eval_args": '{"splits": ["eval"]}',
        "custom_config": json.dumps(json.loads(run_summary.property_value(
            trainer, "custom_config")))}
    fn_args = fn_args_utils.get_common_fn_args(input_dict, exec_properties)
    fn_args.custom_config = json.loads(exec_properties["custom_config"])
    fn_args.transform_output = artifact_utils.get_single_uri(
        input_dict["transform_graph"])
    return fn_args


def fit_rate(dataset: tf.data.Dataset, hparams, inputs, epochs: int,
             num_examples: int) -> Dict[str, float]:
    """Median examples/s over epochs 2..epochs of a fresh, seeded model."""
    training.set_seed(hparams.seed)
    model = two_tower.build_model(hparams, inputs)
    model.compile(optimizer=training.optimizer(hparams.optimizer,
                                               hparams.learning_rate))
    timer = _EpochTimer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    steady = timer.seconds[1:] or timer.seconds
    return {"examples_per_s": num_examples / statistics.median(steady),
            "epoch_seconds": timer.seconds}


def in_memory(dataset: tf.data.Dataset, batch_size: int, seed: int
              ) -> tf.data.Dataset:
    """The same transformed examples as tensors in memory, re-batched: what a
    bare TFRS script feeds `fit`."""
    batches = list(dataset)
    columns = {}
    for name in batches[0]:
        parts = [b[name] for b in batches]
        if isinstance(parts[0], tf.SparseTensor):
            width = max(int(p.dense_shape[1]) for p in parts)
            parts = [tf.sparse.reset_shape(p, [p.dense_shape[0], width]) for p in parts]
            columns[name] = tf.sparse.concat(0, parts)
        else:
            columns[name] = tf.concat(parts, 0)
    count = int(next(iter(columns.values())).shape[0])
    return (tf.data.Dataset.from_tensor_slices(columns)
            .shuffle(count, seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)

    from tfx_recsys.data import movielens
    from tfx_recsys.pipeline import local_runner

    dataset = dataset_config.load(dataset_config.builtin_path("movielens-100k"))
    print("pipeline run on MovieLens-100K (cached when unchanged) ...", flush=True)
    local_runner.run(movielens.fetch_movielens_100k(), args.root, dataset=dataset)

    fn_args = pipeline_fn_args(args.root)
    hparams = config.TwoTowerConfig.from_custom_config(fn_args.custom_config)
    inputs = training.training_inputs(fn_args, hparams.use_history, hparams.use_recency)
    pipeline_data = training.train_dataset(fn_args, inputs, hparams.batch_size,
                                           hparams.seed)

    started = time.perf_counter()
    num_examples = sum(int(tf.shape(next(iter(b.values())))[0]) for b in pipeline_data)
    input_seconds = time.perf_counter() - started
    bare_data = in_memory(pipeline_data, hparams.batch_size, hparams.seed)

    print(f"{num_examples} train examples, batch {hparams.batch_size}, "
          f"{args.epochs} epochs per path", flush=True)
    pipeline = fit_rate(pipeline_data, hparams, inputs, args.epochs, num_examples)
    bare = fit_rate(bare_data, hparams, inputs, args.epochs, num_examples)
    cached = fit_rate(pipeline_data.cache(), hparams, inputs, args.epochs, num_examples)
    input_rate = num_examples / input_seconds
    ratio = pipeline["examples_per_s"] / bare["examples_per_s"]
    input_cost = pipeline["examples_per_s"] / cached["examples_per_s"]

    rows = [("pipeline (run_fn's TFRecord dataset)", pipeline["examples_per_s"]),
            ("bare TFRS (from_tensor_slices in memory)", bare["examples_per_s"]),
            ("cached batches (training step alone)", cached["examples_per_s"]),
            ("input only (pipeline dataset, no training)", input_rate)]
    lines = ["| path | examples/s |", "|---|---:|",
             *[f"| {name} | {rate:,.0f} |" for name, rate in rows], "",
             f"- pipeline / bare TFRS = **{ratio:.2f}** (target >= {TARGET_RATIO}: "
             f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'})",
             f"- pipeline / cached batches = {input_cost:.2f}: reading and parsing "
             f"the TFRecords costs {max(0.0, 1 - input_cost):.0%} of training speed "
             "on these 2 cores, where input and training share the CPU",
             "",
             f"Two-tower defaults (embedding {hparams.embedding_dim}, batch "
             f"{hparams.batch_size}), {num_examples} MovieLens-100K train examples, "
             f"median of epochs 2-{args.epochs}. Generated by `make bench-throughput` "
             f"on {datetime.date.today().isoformat()} ({os.cpu_count()} cores, "
             f"{platform.machine()})."]
    text = "\n".join(lines)
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "throughput.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(RESULTS_DIR, "throughput.json"), "w") as f:
        json.dump({"pipeline": pipeline, "bare": bare, "cached": cached,
                   "input_only_examples_per_s":
                   input_rate, "ratio": ratio, "num_examples": num_examples},
                  f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
