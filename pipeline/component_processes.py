"""Runs the components of a compiled pipeline in order, as LocalDagRunner
does: each in this process (run_nodes), or each in a process of its own
(run_nodes_in_processes; node_process.py is the child), so that what one
component allocated is returned to the system before the next starts, as on
Kubeflow. Progress goes to a callback, not only to the log."""

import os
import shutil
import subprocess
from typing import Callable, Dict, Optional

# progress(node id, event), event one of PROGRESS_EVENTS.
Progress = Callable[[str, str], None]
PROGRESS_EVENTS = ("running", "cached", "finished", "skipped")


def run_nodes(ir, launch: Callable[[str], Optional[int]],
              progress: Optional[Progress] = None) -> None:
    """Launches the nodes of pipeline IR `ir` (a pipeline_pb2.Pipeline, run id
    substituted) in the compiler's topological order, as
    LocalDagRunner.run_with_ir does; launch(node id) runs one and returns
    the id of the cached execution it reused, or None."""
    from absl import logging

    def report(node_id: str, event: str) -> None:
        if progress is not None:
            progress(node_id, event)

    for node in ir.nodes:
        node_id = node.pipeline_node.node_info.id
        if node.pipeline_node.execution_options.HasField("skip"):
            logging.info("Skipping component %s.", node_id)
            report(node_id, "skipped")
            continue
        logging.info("Component %s is running.", node_id)
        report(node_id, "running")
        cached_execution = launch(node_id)
        if cached_execution is not None:
            logging.info("Component %s reused cached execution %d.", node_id,
                         cached_execution)
            report(node_id, "cached")
        logging.info("Component %s is finished.", node_id)
        report(node_id, "finished")

def run_nodes_in_processes(pipeline_args: Dict, run_id: str, root: str,
                           progress: Optional[Progress] = None) -> None:
    """What LocalDagRunner.run_with_ir does, with the pipeline compiled and
    each component run in a child process (node_process.py) that ends when
    it does.

    This process imports neither TensorFlow nor TFX's runtime (about 1 GiB
    with TensorFlow): it only starts the children, one at a time, and logs
    their progress, as Kubeflow's orchestrator starts containers. The same
    launcher and store, so caching, lineage and the run id are as in one
    process; what a component allocated is returned to the system before the
    next one starts. Costs a Python start and a TensorFlow import (5-15 s)
    per component.
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
            result = read_node_result(result_path, name)
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
        run_nodes(ir, lambda node_id: run_child(node_id, ir_path, node_id)["cached_execution"],
                  progress)
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


def read_node_result(path: str, node_id: str) -> Dict:
    import pickle

    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        raise RuntimeError(
            f"component {node_id} ended without a result (killed, e.g. by the "
            f"out-of-memory killer?); see the run's log") from None
