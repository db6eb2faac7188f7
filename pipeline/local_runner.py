"""Runs the pipeline on this machine: TFX's launcher, node by node as
LocalDagRunner runs them, with Beam and an ML Metadata store.

Everything a run writes lives under one root directory:
  <root>/pipeline/          artifacts of every component execution
  <root>/metadata.sqlite    the ML Metadata store (lineage, cache), unless the
                            run used a MySQL/MariaDB store: then
  <root>/metadata.url       names it (never with its password)
  <root>/serving/<model>/   pushed models, one numbered version each
  <root>/.run.lock          held while a run is in progress

The parts, each in a module of its own: the Beam options (beam_options),
the metadata store (metadata_store), the run lock and the cleanup after a
killed run (run_lock), and the process-per-component mode
(component_processes).
"""

import dataclasses
import datetime
import os
import socket
from typing import Dict, List, Optional

from tfx_recsys import config, dataset_config
from tfx_recsys.pipeline import component_processes, metadata_store
from tfx_recsys.pipeline.beam_options import DEFAULT_BEAM_ARGS
from tfx_recsys.pipeline.run_lock import RunLock, fail_abandoned_executions


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, metadata_store.METADATA_FILE)

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.root, "serving", config.MODEL_NAME)


# In-memory Beam on the FnApiRunner. Not "DirectRunner": since Beam 2.68 it

def run(data_path: str, root: str,
        dataset: Optional["dataset_config.DatasetConfig"] = None,
        model: str = config.DEFAULT_MODEL,
        training: Optional[object] = None,
        ranking: Optional[config.NcfConfig] = None,
        beam_pipeline_args: Optional[List[str]] = None,
        enable_cache: bool = True, metadata: Optional[str] = None,
        schema: Optional[str] = None,
        process_per_component: Optional[bool] = None,
        progress: Optional[component_processes.Progress] = None,
        **pipeline_settings) -> RunPaths:
    """Builds and runs the pipeline on `data_path`; returns the run's paths.

    dataset: the data contract (default: the synthetic/native config).
    model: a key of config.MODELS (which Trainer code and hyperparameters).
    training: hyperparameters, an instance of the model's config class.
    ranking: the NCF ranker's hyperparameters (default NcfConfig()); pass
      ranking_run_fn=None in `pipeline_settings` for no ranking stage.
    beam_pipeline_args: see beam_options.beam_args() (default: in-memory, one worker).
    metadata: the ML Metadata store, see metadata_store.parse_metadata(): a SQLite file or a
      mysql:// URL; default: the one this root used before (recorded in
      <root>/metadata.url), else <root>/metadata.sqlite.
    schema: a raw-example schema file to validate against instead of the one
      the dataset config implies (schema_path()), e.g. one with value domains.
    process_per_component: run each component in a process of its own, so
      that the memory one component used is free for the next (as on
      Kubeflow); costs 5-15 s of start-up per component. None (default):
      only when the data under `data_path` reach
      config.PROCESS_PER_COMPONENT_MIN_BYTES.
    progress: called as progress(node id, event) as each component is
      "running", "cached" (reused from TFX's cache), "finished" or "skipped".
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
    store = metadata_store.metadata_location(paths.root, metadata)
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
    with RunLock(paths.root) as lock:
        metadata_store.check_store(store, connection)
        if metadata is not None:
            metadata_store.record_location(paths.root, store)
        if process_per_component is None:
            process_per_component = (data_size_bytes(data_path)
                                     >= config.PROCESS_PER_COMPONENT_MIN_BYTES)
        _run_local_dag(pipeline_args, connection, lock, process_per_component, progress)
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


def _run_local_dag(pipeline_args: Dict, connection, lock: RunLock,
                   process_per_component: bool = False,
                   progress: Optional[component_processes.Progress] = None) -> None:
    """Runs create_pipeline(**pipeline_args) as LocalDagRunner.run does, with
    its run id recorded in the lock, each component in this process or, with
    process_per_component, in a process of its own (component_processes)."""
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
            component_processes.run_nodes_in_processes(
                pipeline_args, run_id, os.path.dirname(lock.path), progress)
        else:
            from tfx_recsys.pipeline import beam_staging

            ir = node_process.compile_pipeline(pipeline_args, run_id)
            with beam_staging.tfx_sdist_only_for_remote_runners():
                component_processes.run_nodes(
                    ir, lambda node_id: node_process.launch_node(ir, node_id), progress)
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
