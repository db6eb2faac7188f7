"""The Beam components on Apache Flink: a local standalone cluster, Beam's
Flink job server and the Python SDK worker pools, started and stopped as one.

    with flink_cluster.FlinkCluster(log_dir) as flink:
        run(..., beam_pipeline_args=flink.beam_args())

With no `flink_master`, FlinkCluster starts, each as a process of its own
bound to 127.0.0.1: a JobManager and a TaskManager (bin/jobmanager.sh,
bin/taskmanager.sh in the foreground; slots = cores), Beam's job server
(FlinkJobServerDriver, which turns each Beam pipeline into a Flink job) and
a Python SDK worker pool beside the TaskManager (environment EXTERNAL: Flink
asks the pool for workers, as each host of a multi-host cluster would). With
`flink_master="HOST:PORT"` (a JobManager's REST address) it starts only the
job server and uses that cluster, whose TaskManager hosts must each run a
worker pool on WORKER_POOL_PORT (see docs/operations.md).

Workers get this package the way remote ones would: the Beam options stage
it as an sdist (--setup_file), and the pool starts each worker through
`flink_worker_boot` (the role of Beam's container boot program), which
fetches the staged packages from the job server and installs them into the
worker's own directory before it runs Beam's SDK harness.

What runs it, installed by `make flink` into build/flink/ (RECSYS_FLINK_DIR
overrides): Flink 1.19.3 from PyPI (python/pyflink: scripts and jars) and the
job server's classpath from Maven (jobserver/*.jar, flink/pom.xml: Beam's
beam-runners-flink-1.19 2.62.0, the newest whose jars Maven Central serves;
the Python SDK of the lock, 2.77, submits to it). Java 11+ on the PATH.

Logs, configuration and each process's output go to `log_dir` (a run puts it
under its root). Everything is stopped on leaving the block, on an error or
Ctrl-C too; every process dies with this one (PR_SET_PDEATHSIG) if it is
killed outright.
"""

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
# Where a remote cluster's TaskManager hosts run their worker pools.
WORKER_POOL_PORT = 50000
START_TIMEOUT_S = 180


def log_dir(root: str) -> str:
    """Where a run under `root` keeps its Flink configuration and logs."""
    return os.path.join(root, "flink")


def flink_dir() -> str:
    """What `make flink` installed: python/pyflink (Flink) and jobserver/."""
    return os.environ.get("RECSYS_FLINK_DIR") or os.path.join(_REPO, "build", "flink")


def flink_home() -> str:
    return os.path.join(flink_dir(), "python", "pyflink")


def job_server_jars() -> str:
    return os.path.join(flink_dir(), "jobserver")


def missing(cluster: bool = True) -> Optional[str]:
    """Why a local Flink cluster (cluster=False: only the job server) cannot
    start here; None when it can."""
    if not shutil.which("java"):
        return "no java on the PATH (Debian: openjdk-17-jre-headless)"
    if cluster and not os.path.isfile(os.path.join(flink_home(), "bin", "jobmanager.sh")):
        return f"no Flink under {flink_home()}: run `make flink`"
    jars = job_server_jars()
    if not os.path.isdir(jars) or not any(n.startswith("beam-runners-flink")
                                          for n in os.listdir(jars)):
        return f"no Beam Flink job server under {jars}: run `make flink`"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _java_opts(home: str) -> str:
    """The --add-opens/--add-exports Flink's own config.yaml gives Java 17."""
    with open(os.path.join(home, "conf", "config.yaml")) as f:
        for line in f:
            if line.strip().startswith("all: --add-"):
                return line.split("all:", 1)[1].strip()
    return ""


def flink_config(ports: Dict[str, int], slots: int, java_opts: str, tmp_dir: str) -> str:
    """config.yaml of the local cluster: everything on 127.0.0.1; memory for
    a 2-core machine; spill and cache files under `tmp_dir`; enough network
    buffers for the wide batch jobs TFX's components make: with Flink's
    defaults (10% of a small TaskManager, 512 buffers per sort-shuffle
    partition) InteractionsExampleGen's job fails with 'Insufficient number
    of network buffers'."""
    return f"""\
env:
  java:
    opts:
      all: {java_opts}
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: {ports['rpc']}
  memory:
    process:
      size: 1024m
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: {slots}
  network:
    sort-shuffle:
      min-buffers: 64
  memory:
    process:
      size: 2048m
    network:
      fraction: 0.3
      min: 256mb
      max: 1gb
parallelism:
  default: {slots}
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: {ports['rest']}
blob:
  server:
    port: "{ports['blob']}"
io:
  tmp:
    dirs: {tmp_dir}
web:
  tmpdir: {tmp_dir}
"""


class FlinkCluster:
    """A local Flink cluster (or a given one), Beam's job server and the SDK
    worker pool; a context manager (see the module docstring)."""

    def __init__(self, log_dir: str, slots: Optional[int] = None,
                 flink_master: Optional[str] = None):
        self.log_dir = os.path.abspath(log_dir)
        self.slots = slots or os.cpu_count() or 1
        self.flink_master = flink_master
        self.job_port = free_port()
        self.worker_pool_port = WORKER_POOL_PORT if flink_master else free_port()
        self._processes: List[subprocess.Popen] = []
        self._ports: Dict[str, int] = {}

    # -- addresses ----------------------------------------------------------

    @property
    def rest_address(self) -> str:
        """host:port of the JobManager's REST API (the job server's master)."""
        return self.flink_master or f"127.0.0.1:{self._ports['rest']}"

    def beam_args(self) -> List[str]:
        """Beam options that run a pipeline on this cluster: the portable
        runner through the job server, workers from the pool (EXTERNAL),
        this package staged as an sdist of setup.py."""
        return ["--runner=PortableRunner",
                f"--job_endpoint=127.0.0.1:{self.job_port}",
                "--environment_type=EXTERNAL",
                f"--environment_config=127.0.0.1:{self.worker_pool_port}",
                f"--parallelism={self.slots}",
                # Keep a job's workers for its next stages: each new one
                # imports TensorFlow again (10-20 s).
                "--environment_cache_millis=60000",
                f"--setup_file={os.path.join(_REPO, 'setup.py')}"]

    def rest(self, path: str):
        """GET the JobManager's REST API, e.g. rest("/jobs/overview")."""
        with urllib.request.urlopen(f"http://{self.rest_address}{path}", timeout=10) as r:
            return json.load(r)

    def jobs(self) -> List[dict]:
        """Every job the cluster knows: name, state, duration..."""
        return self.rest("/jobs/overview")["jobs"]

    def pids(self) -> List[int]:
        return [p.pid for p in self._processes]

    # -- start and stop -----------------------------------------------------

    def __enter__(self) -> "FlinkCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        reason = missing(cluster=not self.flink_master)
        if reason:
            raise RuntimeError(f"cannot start Flink: {reason}")
        os.makedirs(self.log_dir, exist_ok=True)
        if not self.flink_master:
            self._start_cluster()
        self._start_job_server()
        if not self.flink_master:
            self._start_worker_pool()

    def _spawn(self, name: str, command: List[str], env: Optional[dict] = None):
        out = open(os.path.join(self.log_dir, f"{name}.out"), "ab")
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        process.name = name
        self._processes.append(process)
        return process

    def _start_cluster(self) -> None:
        home = flink_home()
        self._ports = {"rest": free_port(), "rpc": free_port(), "blob": free_port()}
        conf = os.path.join(self.log_dir, "conf")
        os.makedirs(conf, exist_ok=True)
        for name in os.listdir(os.path.join(home, "conf")):
            if name.startswith(("log4j", "logback")):
                shutil.copy(os.path.join(home, "conf", name), conf)
        with open(os.path.join(conf, "config.yaml"), "w") as f:
            f.write(flink_config(self._ports, self.slots, _java_opts(home),
                                 os.path.join(self.log_dir, "tmp")))
        env = dict(os.environ, FLINK_CONF_DIR=conf, FLINK_LOG_DIR=self.log_dir,
                   FLINK_PID_DIR=self.log_dir, FLINK_HOME=home)
        self._spawn("jobmanager", [os.path.join(home, "bin", "jobmanager.sh"),
                                   "start-foreground"], env)
        self._wait(lambda: self.rest("/overview"), "the JobManager's REST API")
        self._spawn("taskmanager", [os.path.join(home, "bin", "taskmanager.sh"),
                                    "start-foreground"], env)
        self._wait(lambda: self.rest("/overview")["slots-total"] >= self.slots,
                   f"a TaskManager with {self.slots} slots")

    def _start_job_server(self) -> None:
        # Flink's log4j jars give the job server a logger (it has none).
        flink_lib = os.path.join(flink_home(), "lib")
        classpath = [os.path.join(job_server_jars(), "*")]
        if os.path.isdir(flink_lib):
            classpath += [os.path.join(flink_lib, n) for n in sorted(os.listdir(flink_lib))
                          if n.startswith("log4j")]
        log_config = os.path.join(flink_home(), "conf", "log4j-console.properties")
        self._spawn("jobserver", [
            # The config's rolling file appender writes to ${sys:log.file}:
            # name it, or log4j creates a file of that literal name in the cwd.
            "java", f"-Dlog4j.configurationFile=file:{log_config}",
            f"-Dlog.file={os.path.join(self.log_dir, 'jobserver.log')}",
            "-cp", ":".join(classpath), JOB_SERVER_MAIN,
            f"--flink-master={self.rest_address}", "--job-host=127.0.0.1",
            f"--job-port={self.job_port}", "--artifact-port=0", "--expansion-port=0",
            f"--artifacts-dir={os.path.join(self.log_dir, 'artifacts')}"])
        self._wait(lambda: _listening(self.job_port), "the Beam job server")

    def _start_worker_pool(self) -> None:
        """One pool per TaskManager; it starts a worker (a Python process
        that imports TensorFlow) for each Flink task that runs Python code,
        through flink_worker_boot."""
        boot = os.path.join(self.log_dir, "worker_boot")
        with open(boot, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} -m tfx_recsys.pipeline.flink_worker_boot "
                    f"--work_dir={os.path.join(self.log_dir, 'workers')} \"$@\"\n")
        os.chmod(boot, 0o755)
        self._spawn("workerpool", [sys.executable, "-m",
                                   "apache_beam.runners.worker.worker_pool_main",
                                   f"--service_port={self.worker_pool_port}",
                                   f"--container_executable={boot}"])
        self._wait(lambda: _listening(self.worker_pool_port), "the SDK worker pool")

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for p in self._processes:
                if p.poll() is not None:
                    raise RuntimeError(f"Flink: {p.name} exited ({p.returncode}) while "
                                       f"waiting for {what}; see {self.log_dir}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Flink: no {what} after {START_TIMEOUT_S} s; "
                                   f"see {self.log_dir}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stops every process this started (latest first): SIGTERM to its
        process group, SIGKILL after 20 s."""
        while self._processes:
            process = self._processes.pop()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # Its group may outlive it (a worker the pool started).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
