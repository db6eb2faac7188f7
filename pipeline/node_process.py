"""Runs one component of a compiled pipeline in a process of its own.

The child side of the process-per-component mode (component_processes.py): the parent,
which imports neither TensorFlow nor TFX's runtime, first starts
`python -m tfx_recsys.pipeline.node_process --compile ARGS RUN_ID IR RESULT`
to build the pipeline from create_pipeline()'s pickled arguments and write
its IR (run id substituted), then `... node_process IR NODE RESULT` for each
component in turn, as Kubeflow starts one container per component.
What a component allocates (Beam's buffers, TensorFlow's heap, a corpus of a
million items) then goes back to the system when it ends, instead of adding
up in one long-lived process.

The child launches the node exactly as LocalDagRunner would (same launcher,
same ML Metadata store, so caching and lineage do not change) and writes to
RESULT a pickle of {"cached_execution": id or None, "error": exception or
None}; the parent re-raises the error, so a DataError that names a file and
row reaches the user unchanged.
"""

import logging
import os
import pickle
import signal
import sys
from typing import Any, Dict, Optional

# Set by the parent: where to append log records (its log file), and its pid.
LOG_FILE_ENV = "RECSYS_NODE_LOG_FILE"
PARENT_PID_ENV = "RECSYS_NODE_PARENT_PID"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# First argument of the child that compiles the pipeline instead of running a node.
COMPILE = "--compile"


def compile_pipeline(pipeline_args: Dict[str, Any], run_id: str):
    """The IR (pipeline_pb2.Pipeline) of create_pipeline(**pipeline_args),
    with run id `run_id` substituted, as LocalDagRunner.run compiles it."""
    from tfx.dsl.compiler import compiler, constants
    from tfx.orchestration.portable import runtime_parameter_utils

    from tfx_recsys.pipeline.pipeline import create_pipeline

    # TFX's compiler, as LocalDagRunner.run uses it (our components declare
    # no pip dependencies, the one other thing run() resolves first).
    ir = compiler.Compiler().compile(create_pipeline(**pipeline_args))
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return ir


def _compile_to(args_path: str, run_id: str, ir_path: str) -> None:
    """compile_pipeline() of the pickled arguments in `args_path`, written
    to `ir_path`."""
    with open(args_path, "rb") as f:
        pipeline_args = pickle.load(f)
    ir = compile_pipeline(pipeline_args, run_id)
    with open(ir_path, "wb") as f:
        f.write(ir.SerializeToString())


def launch_node(ir, node_id: str) -> Optional[int]:
    """Launches node `node_id` of pipeline IR `ir` (a pipeline_pb2.Pipeline
    whose run id is substituted) in this process, as LocalDagRunner does;
    returns the id of the cached execution it reused, or None."""
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher

    [node] = [n.pipeline_node for n in ir.nodes
              if n.pipeline_node.node_info.id == node_id]
    deployment_config = runner_utils.extract_local_deployment_config(ir)
    connection = deployment_config.metadata_connection_config
    connection_config = getattr(connection, connection.WhichOneof("connection_config"))
    from ml_metadata.proto import metadata_store_pb2

    info = launcher.Launcher(
        pipeline_node=node,
        mlmd_connection=metadata.Metadata(connection_config),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(
            deployment_config, node_id)).launch()
    if info is None or not info.execution_id:
        return None
    # A cache hit is an execution ML Metadata records as CACHED.
    with metadata.Metadata(connection_config) as store:
        [execution] = store.store.get_executions_by_id([info.execution_id])
    cached = execution.last_known_state == metadata_store_pb2.Execution.CACHED
    return info.execution_id if cached else None


def _die_with_parent() -> None:
    """SIGKILL this process when the parent dies, however it dies: a run
    killed hard must not leave a component running on without it."""
    parent = int(os.environ.get(PARENT_PID_ENV, "0"))
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the call above
        os._exit(1)


def _configure_logging() -> None:
    """The parent's log file if it has one, else stderr; INFO, as TFX logs."""
    from absl import logging as absl_logging

    path = os.environ.get(LOG_FILE_ENV)
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)


def _picklable(error: BaseException) -> BaseException:
    """`error` if it survives a pickle round trip, else a RuntimeError with
    its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # pylint: disable=broad-except
        return RuntimeError(f"{type(error).__name__}: {error}")


def main(argv) -> int:
    """`IR NODE RESULT`: launches one node; `--compile ARGS RUN_ID IR RESULT`:
    compiles the pipeline. Either writes RESULT (see the module docstring)."""
    _die_with_parent()
    _configure_logging()
    compiling = argv[0] == COMPILE
    step = "Compiling the pipeline" if compiling else f"Component {argv[1]}"
    result_path = argv[-1]
    result = {"cached_execution": None, "error": None}
    try:
        if compiling:
            _, args_path, run_id, ir_path, _ = argv
            _compile_to(args_path, run_id, ir_path)
        else:
            ir_path, node_id, _ = argv
            result["cached_execution"] = _launch_from_file(ir_path, node_id)
    except BaseException as e:  # pylint: disable=broad-except
        logging.exception("%s failed", step)
        result["error"] = _picklable(e)
    with open(result_path, "wb") as f:
        pickle.dump(result, f)
    return 1 if result["error"] is not None else 0


def _launch_from_file(ir_path: str, node_id: str) -> Optional[int]:
    from tfx.proto.orchestration import pipeline_pb2

    from tfx_recsys.pipeline import beam_staging

    ir = pipeline_pb2.Pipeline()
    with open(ir_path, "rb") as f:
        ir.ParseFromString(f.read())
    with beam_staging.tfx_sdist_only_for_remote_runners():
        return launch_node(ir, node_id)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: the result is written, and TensorFlow's
    # and Beam's threads can abort a process at exit, which would read as a
    # crash of a component that succeeded.
    os._exit(code)
