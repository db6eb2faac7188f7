"""The pipeline's Beam components on a local Apache Flink cluster (--beam
flink), compared with the in-memory run (tiny_run).

A local standalone cluster (JobManager and TaskManager processes), Beam's
Flink job server and an SDK worker pool (environment EXTERNAL) run tiny_run's
pipeline; this package reaches the workers as the sdist --setup_file builds
(pipeline/flink_worker_boot.py installs it). Needs Java and Maven (`make
flink` fetches Flink and the job server's jars). The run takes about 25
minutes on two cores, so it runs with `make test-flink`
(RECSYS_TEST_FLINK=1), not in `make test`.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from typing import List

import pytest
from conftest import evaluation_metrics

from tfx_recsys import examples_io, run_summary
from tfx_recsys.pipeline import flink_cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The components whose executors run Beam pipelines: each must have run as
# Flink jobs.
BEAM_COMPONENTS = ("InteractionsExampleGen", "StatisticsGen", "Transform",
                   "RetrievalEvaluator", "RefitTransform")



def integration(test):
    """Uses the Flink run (see conftest.INTEGRATION_FIXTURES): only with
    RECSYS_TEST_FLINK=1 (make test-flink)."""
    test = pytest.mark.integration(test)
    return pytest.mark.skipif(os.environ.get("RECSYS_TEST_FLINK") != "1",
                              reason="about 25 min on two cores: make test-flink")(test)


pytestmark = pytest.mark.skipif(
    not (shutil.which("java") and shutil.which("mvn")),
    reason="Flink needs Java and Maven (Debian: openjdk-17-jre-headless maven)")


@dataclasses.dataclass
class FlinkRun:
    root: str
    log_dir: str
    jobs: List[dict]
    pids: List[int]
    seconds: float


@pytest.fixture(scope="module")
def flink_run(tiny_data, tmp_path_factory):
    from tfx_recsys import config
    from tfx_recsys.pipeline import local_runner

    if flink_cluster.missing():
        subprocess.run(["make", "-C", REPO, "flink"], check=True)
    root = str(tmp_path_factory.mktemp("flink_run") / "root")
    log_dir = os.path.join(root, "flink")
    started = time.monotonic()
    with flink_cluster.FlinkCluster(log_dir) as flink:
        local_runner.run(tiny_data, root, beam_pipeline_args=flink.beam_args(),
                         training=config.TwoTowerConfig(epochs=5, batch_size=256),
                         top_ks=(5, 10, 50),
                         blessing=config.BlessingConfig(metric="recall@10"))
        jobs, pids = flink.jobs(), flink.pids()
    return FlinkRun(root, log_dir, jobs, pids, time.monotonic() - started)


def _examples(store, split):
    [execution] = run_summary.executions_of(store, "InteractionsExampleGen")
    [artifact] = run_summary.output_artifacts(store, execution, "examples")
    return [json.dumps(row, sort_keys=True) for row in examples_io.read_rows(artifact.uri, split)]


def _processes_mentioning(text: str) -> List[int]:
    """Live processes other than this one whose command line or environment
    contains `text` (an SDK worker's command line names no path, its
    SEMI_PERSISTENT_DIRECTORY does)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        for name in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(pid))
                        break
            except OSError:
                pass
    return found


@integration
def test_every_beam_component_ran_as_finished_flink_jobs(flink_run):
    print(f"\nFlink run: {flink_run.seconds:.0f} s, {len(flink_run.jobs)} Flink jobs, "
          + ", ".join(f"{j['duration'] / 1000:.0f} s" for j in
                      sorted(flink_run.jobs, key=lambda j: j["start-time"])))
    assert flink_run.jobs and {j["state"] for j in flink_run.jobs} == {"FINISHED"}
    store = run_summary.open_store(flink_run.root)
    from ml_metadata.proto import metadata_store_pb2

    for execution in store.get_executions():
        assert execution.last_known_state == metadata_store_pb2.Execution.COMPLETE
    # Each Beam component's execution saw a Flink job start and finish.
    for component in BEAM_COMPONENTS:
        [execution] = run_summary.executions_of(store, component)
        inside = [j for j in flink_run.jobs
                  if execution.create_time_since_epoch <= j["start-time"]
                  and j["end-time"] <= execution.last_update_time_since_epoch]
        assert inside, f"{component}: no Flink job ran while it executed"
    assert run_summary.latest_execution(store, "ScannPusher") is not None


@integration
def test_the_workers_ran_the_staged_package(flink_run):
    """The pool's workers installed the sdist of setup.py (not the host's
    editable install) before running."""
    work_dir = os.path.join(flink_run.log_dir, "workers")
    sites = [d for d in os.listdir(work_dir) if d.startswith("site-")
             and os.path.isdir(os.path.join(work_dir, d))]
    assert sites
    for site in sites:
        assert os.path.isfile(os.path.join(work_dir, site, "tfx_recsys", "pipeline",
                                           "flink_worker_boot.py"))


@integration
def test_no_flink_or_worker_process_is_left(flink_run):
    for pid in flink_run.pids:
        assert not os.path.exists(f"/proc/{pid}"), pid
    assert _processes_mentioning(flink_run.log_dir) == []


@integration
def test_flink_writes_the_same_examples_and_baselines_as_in_memory(flink_run, tiny_run):
    in_memory = run_summary.open_store(tiny_run.root)
    flink = run_summary.open_store(flink_run.root)
    for split in ("train", "eval"):
        assert sorted(_examples(flink, split)) == sorted(_examples(in_memory, split)), split
    expected, got = evaluation_metrics(in_memory), evaluation_metrics(flink)
    for name, baseline in expected["baselines"].items():
        assert baseline["overall"] == pytest.approx(
            got["baselines"][name]["overall"], rel=1e-9, abs=1e-12), name
        for slice_name, values in baseline["slices"].items():
            assert values == pytest.approx(got["baselines"][name]["slices"][slice_name],
                                           rel=1e-9, abs=1e-12), (name, slice_name)
    # The multi-process runner's rule: the same train records in the same
    # order give the same model; reordered records another (seeded shuffle).
    if _examples(flink, "train") == _examples(in_memory, "train"):
        assert got["model"] == expected["model"]
    else:
        print("\nrecords reordered by Flink's workers; the model's metrics differ")
    assert all(math.isfinite(v) for v in got["model"]["overall"].values())


def test_flink_config_binds_everything_to_localhost():
    config = flink_cluster.flink_config({"rest": 1, "rpc": 2, "blob": 3}, slots=2,
                                        java_opts="", tmp_dir="/x/tmp")
    assert "bind-host: 127.0.0.1" in config and "bind-address: 127.0.0.1" in config
    assert "numberOfTaskSlots: 2" in config
    assert "localhost" not in config


class _Cluster:
    """Stands for a FlinkCluster in beam_args (its options, its slots)."""
    slots = 2

    def beam_args(self):
        return ["--runner=PortableRunner", "--job_endpoint=127.0.0.1:1",
                "--environment_type=EXTERNAL", "--environment_config=127.0.0.1:2",
                "--parallelism=2"]


def test_flink_beam_args_are_the_clusters_plus_extra():
    from tfx_recsys.pipeline.beam_options import beam_args

    assert beam_args("flink", extra=["--max_num_records=5"], flink=_Cluster()) == \
        _Cluster().beam_args() + ["--max_num_records=5"]
    with pytest.raises(ValueError, match="flink needs the cluster"):
        beam_args("flink")
    with pytest.raises(ValueError, match="flink sets --runner, --job_endpoint itself"):
        beam_args("flink", extra=["--runner=FlinkRunner", "--job_endpoint=x:1"],
                  flink=_Cluster())
    with pytest.raises(ValueError, match="cluster's 2 slots, not workers=3"):
        beam_args("flink", workers=3, flink=_Cluster())
    with pytest.raises(ValueError, match="applies to mode='flink'"):
        beam_args("in_memory", flink=_Cluster())


def test_cluster_options_stage_this_package_and_use_the_pool(tmp_path):
    cluster = flink_cluster.FlinkCluster(str(tmp_path), slots=3)
    args = dict(a.split("=", 1) for a in cluster.beam_args())
    assert args["--runner"] == "PortableRunner"
    assert args["--environment_type"] == "EXTERNAL"
    assert args["--environment_config"] == f"127.0.0.1:{cluster.worker_pool_port}"
    assert args["--parallelism"] == "3"
    assert args["--setup_file"] == os.path.join(REPO, "setup.py")
    remote = flink_cluster.FlinkCluster(str(tmp_path), flink_master="flink.example:8081")
    assert remote.rest_address == "flink.example:8081"
    assert remote.worker_pool_port == flink_cluster.WORKER_POOL_PORT


def test_cli_refuses_flink_master_without_beam_flink(tiny_data, tmp_path):
    from test_cli import assert_one_line_error, recsys

    assert_one_line_error(recsys("run", "--data", tiny_data, "--root", str(tmp_path),
                                 "--flink-master", "h:8081"),
                          "--flink-master needs --beam flink")
