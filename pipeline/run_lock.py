"""One run at a time per run root, and the cleanup of what a killed run
left behind (its executions RUNNING for ever, its partial outputs)."""

import json
import os
import shutil
from typing import Dict, List

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


class RunLock:
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
