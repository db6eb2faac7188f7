"""The data fingerprint task of the open-source Kubeflow Pipelines spec.

On Vertex AI, TFX's ExampleGen driver runs as the ExampleGen task's
`lifecycle.preCacheCheck` hook: it fingerprints the input files (names,
sizes, modification times) before the cache is consulted, so new data misses
the cache. The open-source KFP v2 backend runs no lifecycle hooks. There this
module runs as a task of its own before ExampleGen, never cached, and hands
the same fingerprint (TFX's `FileBasedInputProcessor`, as the driver
computes it) to ExampleGen as its `input_fingerprint` input parameter: a
parameter is part of KFP's cache key, so changed data reruns ExampleGen and,
through its new artifacts, everything after it; unchanged data is a cache hit.

Container contract, as TFX's entry points: `--json_serialized_invocation_args`
is the task's ExecutorInput (`{{$}}`) with the input parameters `input_base`
and `input_config` (and optional `range_config`) of ExampleGen; the
fingerprint goes to the ExecutorOutput's parameter `input_fingerprint`,
written to `outputs.outputFile`. Other arguments (Beam's) are ignored.

  python -m tfx_recsys.pipeline.data_fingerprint --json_serialized_invocation_args '{{$}}'
"""

import argparse
import os
import sys
from typing import Dict, List, Optional

# The task's output parameter (and ExampleGen's input parameter).
OUTPUT_KEY = "input_fingerprint"


def fingerprint(input_base: str, input_config_json: str,
                range_config_json: Optional[str] = None) -> Dict[str, object]:
    """{"span", "version", "input_fingerprint"} of the files ExampleGen reads,
    exactly as TFX's ExampleGen driver computes them."""
    from tfx.components.example_gen import input_processor
    from tfx.proto import example_gen_pb2, range_config_pb2
    from tfx.utils import proto_utils

    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(input_config_json, input_config)
    range_config = None
    if range_config_json:
        range_config = range_config_pb2.RangeConfig()
        proto_utils.json_to_proto(range_config_json, range_config)
    processor = input_processor.FileBasedInputProcessor(
        input_base, input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    return {"span": span, "version": version,
            OUTPUT_KEY: processor.get_input_fingerprint(span, version)}


def run(executor_input_json: str) -> str:
    """Reads the ExecutorInput, writes the ExecutorOutput; returns the fingerprint."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.dsl.io import fileio

    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(executor_input_json, executor_input, ignore_unknown_fields=True)
    values = executor_input.inputs.parameter_values

    def value(name: str) -> Optional[str]:
        return values[name].string_value if name in values else None

    if not value("input_base") or value("input_config") is None:
        raise ValueError("the task needs the input parameters input_base and input_config")
    result = fingerprint(value("input_base"), value("input_config"), value("range_config"))
    output = pipeline_spec_pb2.ExecutorOutput()
    output.parameter_values[OUTPUT_KEY].string_value = result[OUTPUT_KEY]
    path = executor_input.outputs.output_file
    fileio.makedirs(os.path.dirname(path))
    with fileio.open(path, "w") as f:
        f.write(json_format.MessageToJson(output, sort_keys=True))
    print(f"span {result['span']}, version {result['version']}: "
          f"{result[OUTPUT_KEY]}", file=sys.stderr)
    return str(result[OUTPUT_KEY])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json_serialized_invocation_args", required=True,
                        help="the task's ExecutorInput as JSON ({{$}})")
    args, _ = parser.parse_known_args(argv)
    run(args.json_serialized_invocation_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
