"""`recsys compile` and `recsys submit`: the command-line side of
pipeline/kubeflow_runner.py (which compiles the spec and submits runs)."""

import argparse
import sys

from tfx_recsys import config
from tfx_recsys.pipeline.beam_options import DEFAULT_BEAM_ARGS
from tfx_recsys.pipeline.kubeflow_runner import (
    EXTENSIONS, DEFAULT_DATA_PATH, DEFAULT_IMAGE, DEFAULT_PIPELINE_ROOT, DEFAULT_SERVING_DIR,
    TARGETS, compile_pipeline, submit)


def _error(message: str) -> int:
    print(f"recsys: error: {message}", file=sys.stderr)
    return 1


def cmd_compile(args) -> int:
    output = args.output or f"{config.PIPELINE_NAME}{EXTENSIONS[args.target][0]}"
    try:
        path = compile_pipeline(
            output, image=args.image, pipeline_root=args.pipeline_root,
            data_path=args.data, serving_dir=args.serving_dir, target=args.target,
            beam_pipeline_args=args.beam_arg or None)
    except (ValueError, OSError) as e:
        return _error(str(e))
    print(path)
    return 0


def cmd_submit(args) -> int:
    import kfp_server_api
    import urllib3

    try:
        run_id = submit(args.host, args.spec, run_name=args.run_name,
                        params=dict(args.param or []))
    except (ValueError, OSError) as e:
        return _error(str(e))
    except urllib3.exceptions.HTTPError as e:
        return _error(f"cannot reach Kubeflow Pipelines at {args.host} "
                      f"({type(e).__name__})")
    except kfp_server_api.exceptions.ApiException as e:
        return _error(f"Kubeflow Pipelines at {args.host} refused the run: "
                      f"{e.status} {e.reason}")
    print(run_id)
    return 0


def _name_value(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_commands(subparsers) -> None:
    """Registers `compile` and `submit` on an argparse subparsers object.

    Each sets `func`: takes the parsed args, prints one line (the written
    file, the run id) and returns the exit code.
    """
    comp = subparsers.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines or Vertex AI")
    comp.add_argument("--target", choices=TARGETS, default="kubeflow",
                      help="kubeflow: KFP v2 pipeline spec (.yaml) for the open-source "
                           "backend (container tasks only: the served model is the "
                           "regression reference, a DataFingerprint task stands in "
                           "for the ExampleGen driver); vertex: Vertex AI PipelineJob "
                           "(.json), TFX's resolver and driver included "
                           "(default: %(default)s)")
    comp.add_argument("--image", default=DEFAULT_IMAGE,
                      help="image of every task, built from kubeflow/Dockerfile "
                           "and pushed (default: %(default)s, a placeholder)")
    comp.add_argument("--output",
                      help="file to write: .yaml for kubeflow, .json for vertex "
                           f"(default: {config.PIPELINE_NAME}.yaml or .json)")
    comp.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT,
                      help="artifact root of the runs (default: %(default)s)")
    comp.add_argument("--data", default=DEFAULT_DATA_PATH,
                      help="default of the data_path runtime parameter, a path "
                           "mounted in the pods (default: %(default)s)")
    comp.add_argument("--serving-dir", default=DEFAULT_SERVING_DIR,
                      help="default of the serving_dir runtime parameter "
                           "(default: %(default)s)")
    comp.add_argument("--beam-arg", action="append", metavar="ARG",
                      help="a Beam pipeline option for the components, "
                           "repeatable; write it as --beam-arg=--option=value "
                           "(default: " + " ".join(DEFAULT_BEAM_ARGS) + ")")
    comp.set_defaults(func=cmd_compile)

    sub = subparsers.add_parser(
        "submit", help="start a run of a compiled .yaml spec on Kubeflow Pipelines")
    sub.add_argument("--host", required=True,
                     help="KFP API endpoint, e.g. http://localhost:8080")
    sub.add_argument("--spec", required=True, help="the compiled .yaml spec")
    sub.add_argument("--run-name", help="name of the run (default: kfp's)")
    sub.add_argument("--param", action="append", type=_name_value,
                     metavar="NAME=VALUE",
                     help="set a runtime parameter, repeatable (e.g. "
                          "data_path=/gcs/bucket/data, epochs=20); unset ones "
                          "keep the spec's defaults")
    sub.set_defaults(func=cmd_submit)
