"""The Beam options of a run: in-memory, several worker processes on this
machine, an Apache Flink cluster (flink_cluster), or another runner's own
arguments passed through (beam_args())."""

import os
from typing import List, Optional, Sequence

# In-memory Beam on the FnApiRunner. Not "DirectRunner": since Beam 2.68 it
# first tries the Prism runner, which it downloads from the internet at run
# time. In-memory suits data that fits on one machine.
DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_running_mode=in_memory",
                     "--direct_num_workers=1")

BEAM_MODES = ("in_memory", "multi_processing", "flink", "pass_through")
_DIRECT_RUNNER_FLAGS = ("--runner", "--direct_running_mode", "--direct_num_workers")
# What flink_cluster.FlinkCluster.beam_args() sets.
_FLINK_FLAGS = ("--runner", "--job_endpoint", "--environment_type",
                "--environment_config", "--parallelism")


def beam_args(mode: str = "in_memory", workers: Optional[int] = None,
              extra: Sequence[str] = (), flink=None) -> List[str]:
    """The `beam_pipeline_args` of a run.

    in_memory: one worker inside this process (DEFAULT_BEAM_ARGS); for data
      that fits on one machine, and the fastest for small data.
    multi_processing: the same FnApiRunner with `workers` worker processes
      (default: one per CPU). Each Beam pipeline starts its own workers, fresh
      Python processes that inherit the environment (TF_USE_LEGACY_KERAS must
      be in os.environ) and import TensorFlow again (about 10-20 s per Beam
      component), so this pays off only for data that keeps several cores
      busy. Outputs come in `workers` shards, their records in another order
      than in-memory, so the model trained on them differs from the
      in-memory run's (runs with the same worker count agree).
    flink: the Beam components on Apache Flink: `flink` (a
      flink_cluster.FlinkCluster, started or not) gives the portable runner's
      options (its job server, its SDK worker pool, parallelism = its slots,
      this package staged by --setup_file); `extra` is appended and may not
      set those. The cluster's slots stand for `workers`.
    pass_through: `extra` as it is, for another runner, e.g.
      ["--runner=DataflowRunner", "--project=P", "--region=R",
       "--temp_location=gs://B/tmp"] or ["--runner=SparkRunner",
      "--spark_master_url=spark://HOST:7077"] (neither has been run here).
      Such runners need the pipeline root and data on storage their workers
      can read, and their workers need this package installed.

    In the two local modes `extra` is appended; it may not set the runner,
    the running mode or the number of workers, which the mode sets.
    """
    extra = list(extra)
    if mode == "flink":
        if flink is None:
            raise ValueError("beam_args: flink needs the cluster: "
                             "flink=flink_cluster.FlinkCluster(...)")
        if workers is not None and workers != flink.slots:
            raise ValueError(f"beam_args: flink runs on the cluster's {flink.slots} "
                             f"slots, not workers={workers}")
        taken = [a.split("=", 1)[0] for a in extra if a.split("=", 1)[0] in _FLINK_FLAGS]
        if taken:
            raise ValueError(f"beam_args: flink sets {', '.join(taken)} itself")
        return flink.beam_args() + extra
    if flink is not None:
        raise ValueError(f"beam_args: flink= applies to mode='flink', not {mode!r}")
    runner_flags = [a.split("=", 1)[0] for a in extra
                    if a.split("=", 1)[0] in _DIRECT_RUNNER_FLAGS]
    if mode == "pass_through":
        if workers is not None:
            raise ValueError("beam_args: workers applies to multi_processing only; "
                             "give the runner's own flag in extra")
        if not any(a.split("=", 1)[0] == "--runner" for a in extra):
            raise ValueError("beam_args: pass_through needs --runner=... in extra, "
                             "e.g. --runner=DataflowRunner")
        return extra
    if runner_flags:
        raise ValueError(f"beam_args: mode {mode!r} sets {', '.join(runner_flags)} "
                         f"itself; use mode='pass_through' to choose the runner")
    if mode == "in_memory":
        if workers not in (None, 1):
            raise ValueError(f"beam_args: in_memory runs one worker, not {workers}; "
                             f"use mode='multi_processing' for several")
        return list(DEFAULT_BEAM_ARGS) + extra
    if mode == "multi_processing":
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"beam_args: workers must be a whole number >= 1, "
                             f"not {workers!r}")
        return ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                f"--direct_num_workers={workers}"] + extra
    raise ValueError(f"beam_args: unknown mode {mode!r}; one of {', '.join(BEAM_MODES)}")
