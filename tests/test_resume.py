"""A run killed with SIGKILL mid-component, then run again in a fresh process.

What TFX 1.21's LocalDagRunner does (see run_lock's notes): the killed
component's execution stays RUNNING in ML Metadata and its output directory
stays on disk, but its outputs were never published, so the next run cannot
use them; it registers a new execution under its own pipeline_run context and
takes the finished components from the cache. run_lock then marks the
dead run's RUNNING execution FAILED and removes its partial outputs.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_recsys.pipeline import metadata_store as store_location, run_lock

pytestmark = pytest.mark.integration
State = metadata_store_pb2.Execution
KILL_AT = "Trainer"  # killed once its executor has started
RESOLVER = "latest_blessed_model_resolver"  # system node: runs, never cached

# The tiny_run fixture's settings (tests/conftest.py), in a fresh process.
RUN = """
import sys
from tfx_recsys import config
from tfx_recsys.pipeline import local_runner
local_runner.run(sys.argv[1], sys.argv[2],
                 training=config.TwoTowerConfig(epochs=5, batch_size=256),
                 top_ks=(5, 10, 50), blessing=config.BlessingConfig(metric="recall@10"))
"""


def _start(data_dir, root, log_path):
    log = open(log_path, "w")
    # Own process group: the kill takes anything the run started with it.
    return subprocess.Popen([sys.executable, "-c", RUN, data_dir, root],
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True), log


def _tail(path, chars=4000):
    with open(path) as f:
        return f.read()[-chars:]


def _kill_once_started(proc, root, log_path, node_id, timeout=420):
    """SIGKILL the run as soon as `node_id`'s executor has started: TFX made
    its output directories, which it does after registering the execution
    RUNNING and right before calling the executor. Watches the file system,
    not the SQLite store, so as not to lock the database under the run."""
    pattern = os.path.join(root, "pipeline", node_id, "*", "[0-9]*")
    deadline = time.monotonic() + timeout
    while not glob.glob(pattern):
        assert proc.poll() is None, (f"the run ended (rc {proc.returncode}) before "
                                     f"{node_id} started:\n{_tail(log_path)}")
        assert time.monotonic() < deadline, f"{node_id} never started:\n{_tail(log_path)}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return sorted(glob.glob(pattern))


def _runs(store):
    """{run id: {node id: [executions, oldest first]}}, runs oldest first."""
    node_names = {}
    node_type = store.get_context_type("node")
    for context in store.get_contexts_by_type(node_type.name):
        for execution in store.get_executions_by_context(context.id):
            node_names[execution.id] = context.name.split(".", 1)[1]
    result = {}
    for run in sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id):
        nodes = {}
        for execution in sorted(store.get_executions_by_context(run.id),
                                key=lambda e: e.id):
            nodes.setdefault(node_names[execution.id], []).append(execution)
        result[run.name] = nodes
    return result


def _producer(store, artifact_id):
    [event] = [e for e in store.get_events_by_artifact_ids([artifact_id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    return event.execution_id


def test_a_run_killed_mid_component_resumes_from_the_cache(tiny_data, tmp_path):
    root = str(tmp_path / "root")
    proc, log = _start(tiny_data, root, tmp_path / "killed.log")
    try:
        partial_outputs = _kill_once_started(proc, root, tmp_path / "killed.log", KILL_AT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    connection = store_location.connection_config(root)

    # What the kill left: the component RUNNING, its output directories, the
    # lock file naming the dead run, and the components before it COMPLETE.
    store = metadata_store.MetadataStore(connection)
    [(killed_run, nodes)] = _runs(store).items()
    [killed] = nodes[KILL_AT]
    assert killed.last_known_state == State.RUNNING
    assert not [e for e in store.get_events_by_execution_ids([killed.id])
                if e.type == metadata_store_pb2.Event.OUTPUT]  # nothing published
    assert partial_outputs and all(p.endswith(f"/{killed.id}") for p in partial_outputs)
    with open(os.path.join(root, run_lock.LOCK_FILE)) as f:
        assert json.load(f)["run_id"] == killed_run
    finished = sorted(node for node, [e] in nodes.items()
                      if e.last_known_state == State.COMPLETE)
    assert {"InteractionsExampleGen", "Transform"} <= set(finished)

    # The same run again, in a fresh process.
    proc, log = _start(tiny_data, root, tmp_path / "again.log")
    try:
        assert proc.wait(timeout=600) == 0, _tail(tmp_path / "again.log")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    store = metadata_store.MetadataStore(connection)
    runs = _runs(store)
    assert list(runs)[0] == killed_run and len(runs) == 2
    first, second = runs.values()

    # The dead run's execution is FAILED, saying why; its partial outputs are gone.
    [killed] = first[KILL_AT]
    assert killed.last_known_state == State.FAILED
    assert "abandoned" in killed.custom_properties[run_lock.ABANDONED_PROPERTY].string_value
    assert not any(os.path.exists(p) for p in partial_outputs)

    # Every component that had finished is reused from the cache...
    for node in finished:
        [execution] = second[node]
        expected = State.COMPLETE if node == RESOLVER else State.CACHED
        assert execution.last_known_state == expected, node
    # ...the killed one ran again, and so did everything after it.
    assert set(first) < set(second) and {"RetrievalEvaluator", "ScannPusher"} <= set(second)
    for node in set(second) - set(finished):
        [execution] = second[node]
        assert execution.last_known_state == State.COMPLETE, node
    [trainer] = second[KILL_AT]
    assert trainer.id != killed.id

    # Downstream read the new Trainer's model, never the killed one's.
    evaluator_inputs = store.get_artifacts_by_id(
        [e.artifact_id for e in store.get_events_by_execution_ids(
            [second["RetrievalEvaluator"][0].id])
         if e.type == metadata_store_pb2.Event.INPUT])
    models = [a for a in evaluator_inputs if f"/{KILL_AT}/model/" in a.uri]
    assert models and all(_producer(store, m.id) == trainer.id for m in models)
    assert not any(a.uri.endswith(f"/{killed.id}") for a in evaluator_inputs)

    # Nothing is left RUNNING, and the lock file says no run is in progress.
    assert not [e for e in store.get_executions()
                if e.last_known_state in (State.NEW, State.RUNNING)]
    with open(os.path.join(root, run_lock.LOCK_FILE)) as f:
        assert json.load(f) == {}


# --------------------------------------------------------------------------
# The pieces, on a hand-made store: fast


def _fake_run(store, run_id, node_id, state):
    """An execution of `node_id` in pipeline run `run_id`, as TFX registers it."""
    types = {name: store.put_context_type(metadata_store_pb2.ContextType(name=name))
             for name in ("pipeline", "pipeline_run", "node")}
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name=node_id))
    contexts = {}
    for kind, name in (("pipeline", "p"), ("pipeline_run", run_id), ("node", f"p.{node_id}")):
        existing = store.get_context_by_type_and_name(kind, name)
        contexts[kind] = existing.id if existing else store.put_contexts(
            [metadata_store_pb2.Context(type_id=types[kind], name=name)])[0]
    [execution_id] = store.put_executions(
        [metadata_store_pb2.Execution(type_id=execution_type, last_known_state=state)])
    store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(context_id=c, execution_id=execution_id)
             for c in contexts.values()])
    return execution_id


def test_only_the_dead_runs_unfinished_executions_are_failed(tmp_path):
    connection = store_location.connection_config(str(tmp_path), create=True)
    store = metadata_store.MetadataStore(connection)
    done = _fake_run(store, "dead", "Transform", State.COMPLETE)
    dead = _fake_run(store, "dead", "Trainer", State.RUNNING)
    alive = _fake_run(store, "alive", "Trainer", State.RUNNING)  # another run's
    pipeline_root = tmp_path / "pipeline"
    for execution_id in (dead, alive):
        for path in (f"Trainer/model/{execution_id}/Format-Serving",
                     f"Trainer/.system/executor_execution/{execution_id}/.temp"):
            (pipeline_root / path).mkdir(parents=True)

    assert run_lock.fail_abandoned_executions(
        connection, "dead", str(pipeline_root), "abandoned: test") == [dead]
    states = {e.id: e.last_known_state for e in store.get_executions()}
    assert states == {done: State.COMPLETE, dead: State.FAILED, alive: State.RUNNING}
    [failed] = store.get_executions_by_id([dead])
    assert failed.custom_properties[run_lock.ABANDONED_PROPERTY].string_value == \
        "abandoned: test"
    assert sorted(p.name for p in (pipeline_root / "Trainer/model").iterdir()) == [str(alive)]
    assert not (pipeline_root / f"Trainer/.system/executor_execution/{dead}").exists()
    # A run that is not in the store, or a second call: nothing to do.
    assert run_lock.fail_abandoned_executions(connection, "never", str(pipeline_root)) == []
    assert run_lock.fail_abandoned_executions(connection, "dead", str(pipeline_root)) == []


def test_one_run_at_a_time_per_root(tmp_path):
    with run_lock.RunLock(str(tmp_path)) as lock:
        lock.write({"run_id": "r1", "pid": 123, "host": "h"})
        with pytest.raises(RuntimeError,
                           match=r"another pipeline run is using .* \(run r1, process 123"):
            with run_lock.RunLock(str(tmp_path)):
                pass
    # Released with the first one; what it recorded stays for the next run.
    with run_lock.RunLock(str(tmp_path)) as lock:
        assert lock.read() == {"run_id": "r1", "pid": 123, "host": "h"}
