"""Runs the pipeline on this machine: LocalDagRunner, Beam, ML Metadata.

Everything a run writes lives under one root directory:
  <root>/pipeline/          artifacts of every component execution
  <root>/metadata.sqlite    the ML Metadata store (lineage, cache), unless the
                            run used a MySQL/MariaDB store: then
  <root>/metadata.url       names it (never with its password)
  <root>/serving/<model>/   pushed models, one numbered version each
  <root>/.run.lock          held while a run is in progress

Beam: in-memory by default, several worker processes with beam_args(), or
any runner's own arguments passed through (see beam_args()).
"""

import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from typing import Dict, List, Mapping, Optional, Sequence

from tfx_recsys import config, dataset_config


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.root, "serving", config.MODEL_NAME)


# In-memory Beam on the FnApiRunner. Not "DirectRunner": since Beam 2.68 it
# first tries the Prism runner, which it downloads from the internet at run
# time. In-memory suits data that fits on one machine.
DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_running_mode=in_memory",
                     "--direct_num_workers=1")


def run(data_path: str, root: str,
        dataset: Optional["dataset_config.DatasetConfig"] = None,
        model: str = config.DEFAULT_MODEL,
        training: Optional[object] = None,
        ranking: Optional[config.NcfConfig] = None,
        beam_pipeline_args: Optional[List[str]] = None,
        enable_cache: bool = True, metadata: Optional[str] = None,
        schema: Optional[str] = None,
        process_per_component: Optional[bool] = None,
        **pipeline_settings) -> RunPaths:
    """Builds and runs the pipeline on `data_path`; returns the run's paths.

    dataset: the data contract (default: the synthetic/native config).
    model: a key of config.MODELS (which Trainer code and hyperparameters).
    training: hyperparameters, an instance of the model's config class.
    ranking: the NCF ranker's hyperparameters (default NcfConfig()); pass
      ranking_run_fn=None in `pipeline_settings` for no ranking stage.
    beam_pipeline_args: see beam_args() (default: in-memory, one worker).
    metadata: the ML Metadata store, see parse_metadata(): a SQLite file or a
      mysql:// URL; default: the one this root used before (recorded in
      <root>/metadata.url), else <root>/metadata.sqlite.
    schema: a raw-example schema file to validate against instead of the one
      the dataset config implies (schema_path()), e.g. one with value domains.
    process_per_component: run each component in a process of its own, so
      that the memory one component used is free for the next (as on
      Kubeflow); costs 5-15 s of start-up per component. None (default):
      only when the data under `data_path` reach
      config.PROCESS_PER_COMPONENT_MIN_BYTES.
    `pipeline_settings` go to create_pipeline() as they are (e.g. top_ks,
    blessing, index_gate, serving_top_k, rerank, ranking_run_fn).

    One run at a time per root (a lock file); a run first marks FAILED the
    executions a killed earlier run left RUNNING (see fail_abandoned_executions).
    """
    from tfx_recsys.fingerprint import code_fingerprint

    dataset = dataset or dataset_config.load(dataset_config.builtin_path("synthetic"))
    run_fn, hyperparameters_class = config.MODELS[model]
    paths = RunPaths(os.path.abspath(root))
    os.makedirs(paths.root, exist_ok=True)
    store = metadata_location(paths.root, metadata)
    connection = store.connection_config(create=True)
    # create_pipeline()'s arguments: the pipeline is built (TFX, TensorFlow)
    # where it runs, in this process or, per component, in a child.
    pipeline_args = dict(
        pipeline_name=config.PIPELINE_NAME,
        pipeline_root=paths.pipeline_root,
        data_path=os.path.abspath(data_path),
        dataset=dataset.to_dict(),
        schema_path=schema or schema_path(dataset, paths.root),
        serving_dir=paths.serving_dir,
        run_fn=run_fn,
        training=(training or hyperparameters_class()).to_custom_config(),
        ranking=(ranking or config.NcfConfig()).to_custom_config(),
        code_fingerprint=code_fingerprint(),
        metadata_connection_config=connection,
        beam_pipeline_args=list(beam_pipeline_args or DEFAULT_BEAM_ARGS),
        enable_cache=enable_cache,
        **pipeline_settings)
    with _RunLock(paths.root) as lock:
        _check_store(store, connection)
        if metadata is not None:
            _record_metadata_location(paths.root, store)
        if process_per_component is None:
            process_per_component = (data_size_bytes(data_path)
                                     >= config.PROCESS_PER_COMPONENT_MIN_BYTES)
        _run_local_dag(pipeline_args, connection, lock, process_per_component)
    return paths


def data_size_bytes(data_path: str) -> int:
    """Bytes in the file `data_path`, or in the files under the directory."""
    if os.path.isfile(data_path):
        return os.path.getsize(data_path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(data_path) for name in names)


def schema_path(dataset: "dataset_config.DatasetConfig", root: str) -> str:
    """The raw-example schema of `dataset`: schemas/<name>.pbtxt when that
    checked-in file is what the config generates, else a generated copy
    under <root>/schema/ (a user's own config)."""
    from tfx_recsys.data import schema

    checked_in = os.path.join(config.SCHEMA_DIR, f"{dataset.name}.pbtxt")
    text = schema.schema_text(dataset)
    if os.path.exists(checked_in):
        with open(checked_in) as f:
            if f.read() == text:
                return checked_in
    generated = os.path.join(root, "schema", f"{dataset.name}.pbtxt")
    os.makedirs(os.path.dirname(generated), exist_ok=True)
    schema.write_schema(dataset, generated)
    return generated


# --------------------------------------------------------------------------
# Beam: in-memory, several worker processes, or another runner's arguments

BEAM_MODES = ("in_memory", "multi_processing", "pass_through")
_DIRECT_RUNNER_FLAGS = ("--runner", "--direct_running_mode", "--direct_num_workers")


def beam_args(mode: str = "in_memory", workers: Optional[int] = None,
              extra: Sequence[str] = ()) -> List[str]:
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
    pass_through: `extra` as it is, for another runner, e.g.
      ["--runner=DataflowRunner", "--project=P", "--region=R",
       "--temp_location=gs://B/tmp"], ["--runner=FlinkRunner",
       "--flink_master=HOST:8081", "--environment_type=LOOPBACK"] or
      ["--runner=SparkRunner", "--spark_master_url=spark://HOST:7077"].
      Such runners need the pipeline root and data on storage their workers
      can read, and their workers need this package installed.

    In the two local modes `extra` is appended; it may not set the runner,
    the running mode or the number of workers, which the mode sets.
    """
    extra = list(extra)
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


# --------------------------------------------------------------------------
# The ML Metadata store: a SQLite file, or a database on a MySQL/MariaDB server

METADATA_URL_FILE = "metadata.url"
# Where a MySQL password comes from when the URL has none (the URL recorded in
# <root>/metadata.url never has one).
PASSWORD_ENV = "RECSYS_METADATA_PASSWORD"
_MYSQL_SCHEMES = ("mysql", "mariadb")
_FORMS = ("a SQLite file path, sqlite:///PATH, mysql://USER[:PASSWORD]@HOST[:PORT]/"
          "DATABASE or mysql://USER@localhost/DATABASE?unix_socket=PATH")


@dataclasses.dataclass(frozen=True)
class MetadataLocation:
    """Where an ML Metadata store is (see parse_metadata)."""

    kind: str  # "sqlite" or "mysql"
    path: str = ""  # sqlite: the database file
    database: str = ""  # mysql, with user, password and host/port or socket
    user: str = ""
    password: str = ""
    host: str = ""
    port: int = 0
    socket: str = ""

    def url(self) -> str:
        """This location as a URL, without the password: safe to log and keep."""
        if self.kind == "sqlite":
            return "sqlite://" + os.path.abspath(self.path)
        user = urllib.parse.quote(self.user, safe="")
        if self.socket:
            return (f"mysql://{user}@localhost/{self.database}?unix_socket="
                    f"{urllib.parse.quote(self.socket, safe='/')}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mysql://{user}@{host}:{self.port}/{self.database}"

    def connection_config(self, create: bool = False,
                          environ: Optional[Mapping[str, str]] = None):
        """The metadata_store_pb2.ConnectionConfig of this store.

        create=False (readers such as `recsys runs`) never creates anything: a
        missing SQLite file raises FileNotFoundError, a missing MySQL database
        fails to connect. create=True (a pipeline run) creates either, and the
        SQLite file's directory.
        """
        from ml_metadata.proto import metadata_store_pb2

        connection = metadata_store_pb2.ConnectionConfig()
        if self.kind == "sqlite":
            path = os.path.abspath(self.path)
            modes = metadata_store_pb2.SqliteMetadataSourceConfig
            if create:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            elif not os.path.isfile(path):
                raise FileNotFoundError(f"no ML Metadata store at {path}: has a "
                                        f"pipeline run used this root?")
            connection.sqlite.filename_uri = path
            connection.sqlite.connection_mode = (
                modes.READWRITE_OPENCREATE if create else modes.READWRITE)
            return connection
        mysql = connection.mysql
        mysql.database = self.database
        mysql.user = self.user
        mysql.password = self.password or (
            os.environ if environ is None else environ).get(PASSWORD_ENV, "")
        if self.socket:
            mysql.socket = self.socket
        else:
            mysql.host, mysql.port = self.host, self.port
        mysql.skip_db_creation = not create
        return connection


def parse_metadata(spec: str) -> MetadataLocation:
    """Parses where the ML Metadata store is; touches nothing.

      /path/to/metadata.sqlite or sqlite:///path/to/metadata.sqlite
      mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE           (port 3306)
      mysql://USER[:PASSWORD]@localhost/DATABASE?unix_socket=/run/mysqld/mysqld.sock
    (mariadb:// is the same). User, password and socket may be %-escaped.
    Without a password in the URL, connection_config() takes
    $RECSYS_METADATA_PASSWORD (PASSWORD_ENV).
    """
    if not spec:
        raise ValueError(f"empty metadata store: give {_FORMS}")
    scheme, separator, rest = spec.partition("://")
    if not separator:
        return MetadataLocation("sqlite", path=spec)
    try:
        parts = urllib.parse.urlsplit(spec)
    except ValueError as e:
        raise ValueError(f"bad metadata store URL ({e}): give {_FORMS}") from None
    shown = _without_password(spec, parts)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"{shown!r}: write a SQLite URL with an absolute path, "
                             f"sqlite:///PATH")
        return MetadataLocation("sqlite", path=rest)
    if scheme not in _MYSQL_SCHEMES:
        raise ValueError(f"{shown!r}: unsupported metadata store {scheme!r}; give {_FORMS}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535") from None
    if parts.fragment:
        raise ValueError(f"{shown!r}: unexpected '#{parts.fragment}'")
    if not parts.username:
        raise ValueError(f"{shown!r}: name the user, mysql://USER@HOST/DATABASE")
    database = parts.path[1:]
    if not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", database):
        raise ValueError(f"{shown!r}: the database name must be 1-64 letters, digits, "
                         f"'_' or '$' after the host, mysql://USER@HOST/DATABASE")
    options = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"unix_socket"})
    if unknown:
        raise ValueError(f"{shown!r}: unknown option(s) {', '.join(unknown)}; "
                         f"the only one is unix_socket=PATH")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    if "unix_socket" in options:
        [socket_path] = options["unix_socket"][-1:]
        if not socket_path.startswith("/"):
            raise ValueError(f"{shown!r}: unix_socket must be an absolute path")
        if parts.hostname not in (None, "localhost") or port is not None:
            raise ValueError(f"{shown!r}: give either HOST[:PORT] or unix_socket, "
                             f"not both (write localhost as the host)")
        return MetadataLocation("mysql", database=database, user=user,
                                password=password, socket=socket_path)
    if not parts.hostname:
        raise ValueError(f"{shown!r}: name the host, mysql://USER@HOST[:PORT]/DATABASE, "
                         f"or the server's socket, ?unix_socket=PATH")
    if port == 0:
        raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535")
    return MetadataLocation("mysql", database=database, user=user, password=password,
                            host=parts.hostname, port=port or 3306)


def _without_password(spec: str, parts: urllib.parse.SplitResult) -> str:
    """`spec` fit for an error message: the password replaced by ***."""
    if parts.password is None:
        return spec
    user_info, _, host = parts.netloc.rpartition("@")
    return spec.replace(parts.netloc, f"{user_info.split(':', 1)[0]}:***@{host}", 1)


def metadata_location(root: str, metadata: Optional[str] = None) -> MetadataLocation:
    """The store of run root `root`: `metadata` if given, else the store the
    root recorded (<root>/metadata.url), else <root>/metadata.sqlite."""
    if metadata is not None:
        return parse_metadata(metadata)
    recorded = os.path.join(root, METADATA_URL_FILE)
    if os.path.exists(recorded):
        with open(recorded) as f:
            return parse_metadata(f.read().strip())
    return MetadataLocation("sqlite", path=RunPaths(os.path.abspath(root)).metadata_path)


def connection_config(root_or_url: str, create: bool = False):
    """The ConnectionConfig for reading a store: a run root (its recorded
    store or its metadata.sqlite), a SQLite file, or a URL (parse_metadata).

    For `recsys runs/lineage/recommend`: with create=False it never creates a
    store; a missing SQLite file raises FileNotFoundError.
    """
    if "://" in root_or_url or os.path.isfile(root_or_url):
        location = parse_metadata(root_or_url)
    else:
        location = metadata_location(root_or_url)
    return location.connection_config(create=create)


def _check_store(location: MetadataLocation, connection) -> None:
    """Opens the store once, so that a wrong password or an unreachable
    server fails here, clearly, not inside the first component."""
    from ml_metadata.metadata_store import metadata_store

    try:
        metadata_store.MetadataStore(connection)
    except Exception as e:  # MLMD raises RuntimeError with its C++ log text
        hint = ("; check the user, the password (in the URL or $" + PASSWORD_ENV +
                "), the host and port or socket, and that the server is running"
                if location.kind == "mysql" else "")
        raise RuntimeError(f"cannot open the ML Metadata store {location.url()}"
                           f"{hint}: {e}") from None


def _record_metadata_location(root: str, location: MetadataLocation) -> None:
    with open(os.path.join(root, METADATA_URL_FILE), "w") as f:
        f.write(location.url() + "\n")


# --------------------------------------------------------------------------
# One run at a time per root, and what a killed run leaves behind
#
# LocalDagRunner (TFX 1.21) registers a component's execution as RUNNING,
# runs the executor, then publishes the outputs and COMPLETE (or FAILED on an
# exception). A process killed in between (SIGKILL, OOM killer, power loss;
# also Ctrl-C, a KeyboardInterrupt the launcher does not catch) leaves the
# execution RUNNING for ever, and its partial output directories on disk. TFX
# never reuses them: outputs are registered in MLMD only when published, each
# run has its own pipeline_run context, so the next run registers a new
# execution with new output directories, and the cache only holds completed
# executions. But `recsys runs` would count the dead run's RUNNING executions
# as neither run nor failed, and the partial outputs would stay on disk. So
# each run records its run id in <root>/.run.lock while it holds that file
# locked (the kernel drops the lock when the process dies, however it dies);
# the next run finds the id, marks that run's unfinished executions FAILED and
# removes their output directories.

LOCK_FILE = ".run.lock"
ABANDONED_PROPERTY = "abandoned"


class _RunLock:
    """An exclusive lock on <root>/.run.lock, which holds the run in progress."""

    def __init__(self, root: str):
        self.path = os.path.join(root, LOCK_FILE)
        self._fd = -1

    def __enter__(self):
        import fcntl

        from tfx_recsys.errors import RunInProgressError

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.read()
            os.close(self._fd)
            # The user's to resolve (wait, or use another --root): one line.
            raise RunInProgressError(
                f"another pipeline run is using {os.path.dirname(self.path)} "
                f"(run {holder.get('run_id', '?')}, process {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}): wait for it to end") from None
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)  # releases the lock

    def read(self) -> Dict:
        """The run recorded in the file: the one in progress, or one that was
        killed ({} when the last run ended)."""
        with open(self.path) as f:
            text = f.read().strip()
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    def write(self, record: Dict) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(self._fd)


def _run_local_dag(pipeline_args: Dict, connection, lock: _RunLock,
                   process_per_component: bool = False) -> None:
    """Runs create_pipeline(**pipeline_args) as LocalDagRunner.run does, with
    its run id recorded in the lock; with process_per_component, each
    component in a process of its own (_run_nodes_in_processes)."""
    from absl import logging

    from tfx_recsys.pipeline import node_process

    killed = lock.read()
    if killed.get("run_id"):
        failed = fail_abandoned_executions(
            connection, killed["run_id"], pipeline_args["pipeline_root"],
            f"abandoned: run {killed['run_id']} (process {killed.get('pid')} on "
            f"{killed.get('host')}) ended before this execution finished")
        logging.warning("Run %s did not finish (killed?); its unfinished executions "
                        "%s are now FAILED", killed["run_id"], failed)
    # LocalDagRunner.run's run id format, chosen here so that this process
    # knows it.
    run_id = datetime.datetime.now().isoformat()
    lock.write({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()})
    try:
        if process_per_component:
            _run_nodes_in_processes(pipeline_args, run_id, os.path.dirname(lock.path))
        else:
            from tfx.orchestration.local import local_dag_runner

            from tfx_recsys.pipeline import beam_staging

            ir = node_process.compile_pipeline(pipeline_args, run_id)
            with beam_staging.tfx_sdist_only_for_remote_runners():
                local_dag_runner.LocalDagRunner().run_with_ir(ir)
    finally:
        # Executions an exception left RUNNING (e.g. KeyboardInterrupt).
        try:
            fail_abandoned_executions(
                connection, run_id, pipeline_args["pipeline_root"],
                f"abandoned: run {run_id} stopped before this execution finished")
        except Exception:  # pylint: disable=broad-except
            logging.exception("Could not mark the unfinished executions of run %s "
                              "FAILED; the next run in this root will", run_id)
        else:
            lock.write({})


def _run_nodes_in_processes(pipeline_args: Dict, run_id: str, root: str) -> None:
    """What LocalDagRunner.run_with_ir does, with the pipeline compiled and
    each component run in a child process (node_process.py) that ends when
    it does.

    This process imports neither TensorFlow nor TFX's runtime (about 1 GiB
    with TensorFlow): it only starts the children, one at a time, and logs
    their progress, as Kubeflow's orchestrator starts containers. The same
    launcher and store, so caching, lineage and the run id are as in one
    process; what a component allocated is returned to the system before the
    next one starts. Costs a Python start and a TensorFlow import (5-15 s)
    per component. Progress is logged here, with LocalDagRunner's own
    messages, so the CLI's progress lines do not change.
    """
    import logging as std_logging
    import pickle
    import sys
    import tempfile

    from absl import logging
    from tfx.proto.orchestration import pipeline_pb2

    from tfx_recsys.pipeline import node_process

    for stale in os.listdir(root):  # of a killed run (this one holds the lock)
        if stale.startswith(_NODES_DIR_PREFIX):
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    work_dir = tempfile.mkdtemp(prefix=_NODES_DIR_PREFIX, dir=root)
    try:
        env = dict(os.environ)
        # The child imports what this process can: the package, and any
        # module a test or a user put on sys.path for a run_fn.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env[node_process.PARENT_PID_ENV] = str(os.getpid())
        # The children end with os._exit (see node_process), which skips the
        # atexit handlers that delete their temp files (TensorFlow's
        # autograph sources): give them a temp dir that goes with work_dir.
        env["TMPDIR"] = os.path.join(work_dir, "tmp")
        os.mkdir(env["TMPDIR"])
        log_files = [h.baseFilename for h in std_logging.getLogger().handlers
                     if isinstance(h, std_logging.FileHandler)]
        env.pop(node_process.LOG_FILE_ENV, None)
        if log_files:
            env[node_process.LOG_FILE_ENV] = log_files[0]

        def run_child(name: str, *argv: str) -> Dict:
            result_path = os.path.join(work_dir, f"{name}.result")
            child = subprocess.Popen([sys.executable, "-m", node_process.__name__,
                                      *argv, result_path], env=env)
            logging.info(CHILD_PROCESS_MESSAGE, name, child.pid)
            _wait_for_child(child)
            result = _read_node_result(result_path, name)
            if result["error"] is not None:
                raise result["error"]
            return result

        ir_path = os.path.join(work_dir, "pipeline.pb")
        args_path = os.path.join(work_dir, "pipeline_args.pickle")
        with open(args_path, "wb") as f:
            pickle.dump(pipeline_args, f)
        run_child(COMPILE_STEP, node_process.COMPILE, args_path, run_id, ir_path)
        ir = pipeline_pb2.Pipeline()
        with open(ir_path, "rb") as f:
            ir.ParseFromString(f.read())
        for node in ir.nodes:
            node_id = node.pipeline_node.node_info.id
            if node.pipeline_node.execution_options.HasField("skip"):
                logging.info("Skipping component %s.", node_id)
                continue
            logging.info("Component %s is running.", node_id)
            result = run_child(node_id, ir_path, node_id)
            if result["cached_execution"] is not None:
                logging.info("A cached execution %d is used.", result["cached_execution"])
            logging.info("Component %s is finished.", node_id)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


CHILD_PROCESS_MESSAGE = "Component %s runs in process %d."
COMPILE_STEP = "compile"  # the child that builds and compiles the pipeline
_NODES_DIR_PREFIX = ".nodes-"  # <root>/.nodes-*: the IR and the children's results


def _wait_for_child(child) -> None:
    """Waits for a component's process; if this one is interrupted first
    (Ctrl-C, SIGTERM as an exception), stops the child before going on."""
    try:
        child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _read_node_result(path: str, node_id: str) -> Dict:
    import pickle

    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        raise RuntimeError(
            f"component {node_id} ended without a result (killed, e.g. by the "
            f"out-of-memory killer?); see the run's log") from None


def fail_abandoned_executions(connection, run_id: str, pipeline_root: str,
                              reason: str = "abandoned") -> List[int]:
    """Marks FAILED the executions of pipeline run `run_id` still NEW or
    RUNNING, and removes their output directories under `pipeline_root`.

    Only for a run that is over: its process is gone. Returns their ids.
    """
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.dsl.compiler import constants

    state = metadata_store_pb2.Execution
    store = metadata_store.MetadataStore(connection)
    run = store.get_context_by_type_and_name(
        constants.PIPELINE_RUN_CONTEXT_TYPE_NAME, run_id)
    if run is None:
        return []
    active = [e for e in store.get_executions_by_context(run.id)
              if e.last_known_state in (state.NEW, state.RUNNING)]
    for execution in active:
        execution.last_known_state = state.FAILED
        execution.custom_properties[ABANDONED_PROPERTY].string_value = reason
    if active:
        store.put_executions(active)
    for execution in active:  # unpublished, so nothing refers to them
        for node_dir in _node_dirs(store, execution, pipeline_root):
            _remove_partial_outputs(node_dir, execution)
    return [e.id for e in active]


def _node_dirs(store, execution, pipeline_root: str) -> List[str]:
    """<pipeline_root>/<node id> of an execution, from its node context
    (named "<pipeline name>.<node id>")."""
    from tfx.dsl.compiler import constants

    names: Dict[str, List[str]] = {}
    for context in store.get_contexts_by_execution(execution.id):
        kind = store.get_context_types_by_id([context.type_id])[0].name
        names.setdefault(kind, []).append(context.name)
    return [os.path.join(pipeline_root, node[len(pipeline) + 1:])
            for pipeline in names.get(constants.PIPELINE_CONTEXT_TYPE_NAME, [])
            for node in names.get(constants.NODE_CONTEXT_TYPE_NAME, [])
            if node.startswith(pipeline + ".") and len(node) > len(pipeline) + 1]


def _remove_partial_outputs(node_dir: str, execution) -> None:
    """Where TFX's launcher put the execution's outputs and scratch space:
    <node>/<output key>/<execution id>, <node>/.system/executor_execution/<id>
    and, if the execution names it, its stateful working dir."""
    execution_id = str(execution.id)
    doomed = []
    if os.path.isdir(node_dir):
        doomed += [os.path.join(node_dir, key, execution_id)
                   for key in os.listdir(node_dir) if not key.startswith(".")]
    doomed.append(os.path.join(node_dir, ".system", "executor_execution", execution_id))
    index = execution.custom_properties.get("__stateful_working_dir_index__")
    if index is not None and index.string_value:
        doomed.append(os.path.join(node_dir, ".system", "stateful_working_dir",
                                   index.string_value))
    for path in doomed:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
