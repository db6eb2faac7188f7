"""Starts one Beam Python SDK worker with the packages its job staged, as
Beam's container boot program does on a remote host.

Beam's SDK worker pool (apache_beam.runners.worker.worker_pool_main) runs
this for each worker Flink asks for (`--container_executable`, see
flink_cluster): it asks the job's provision service for the pipeline options
and the staged files, fetches them from the artifact service, installs the
staged packages (the sdist of this package that --setup_file built) into a
directory of their own under --work_dir, shared by the job's workers and
installed once, and then runs Beam's SDK harness with that directory first
on the path. So the workers import the submitted code, not whatever the
host's environment holds; the rest (TensorFlow, TFX, Beam) comes from the
host's environment, as it would from a worker image.

    python -m tfx_recsys.pipeline.flink_worker_boot --work_dir=DIR --id=ID \\
        --provision_endpoint=H:P --artifact_endpoint=H:P \\
        --control_endpoint=H:P --logging_endpoint=H:P
"""

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from typing import List

# Staged files that are Python packages to install (the rest, e.g. Beam's
# submission_environment_dependencies.txt, are not).
PACKAGE_SUFFIXES = (".tar.gz", ".whl", ".zip")


def _fetch(artifact_stub, metadata, dependencies, directory: str) -> List[str]:
    """Fetches the staged packages into `directory`; returns their paths,
    each named <sha256>-<staged name>."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_artifact_api_pb2, beam_runner_api_pb2

    resolved = artifact_stub.ResolveArtifacts(
        beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=dependencies),
        metadata=metadata).replacements
    paths = []
    for artifact in resolved:
        if artifact.role_urn != common_urns.artifact_roles.STAGING_TO.urn:
            continue
        name = os.path.basename(beam_runner_api_pb2.ArtifactStagingToRolePayload
                                .FromString(artifact.role_payload).staged_name)
        if not name.endswith(PACKAGE_SUFFIXES):
            continue
        hasher = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as f:
            for chunk in artifact_stub.GetArtifact(
                    beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact),
                    metadata=metadata):
                hasher.update(chunk.data)
                f.write(chunk.data)
        path = os.path.join(directory, f"{hasher.hexdigest()}-{name}")
        os.replace(f.name, path)
        paths.append(path)
    return sorted(paths)


def install(packages: List[str], work_dir: str) -> str:
    """Installs `packages` (no dependencies: the host has them) into a
    directory named after their hashes, once; returns it."""
    key = hashlib.sha256("\n".join(os.path.basename(p) for p in packages)
                         .encode()).hexdigest()[:16]
    target = os.path.join(work_dir, f"site-{key}")
    with open(os.path.join(work_dir, f"site-{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(target, ".complete")):
            if packages:
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                "--no-deps", "--no-build-isolation",
                                "--disable-pip-version-check", "--no-warn-script-location",
                                "--target", target, *packages],
                               check=True, stdout=sys.stderr)
            os.makedirs(target, exist_ok=True)
            open(os.path.join(target, ".complete"), "w").close()
    return target


def main(argv=None) -> None:
    import grpc
    from google.protobuf import json_format, text_format

    from apache_beam.portability.api import (beam_artifact_api_pb2_grpc,
                                             beam_provision_api_pb2,
                                             beam_provision_api_pb2_grpc, endpoints_pb2)

    parser = argparse.ArgumentParser()
    for name in ("id", "provision_endpoint", "artifact_endpoint", "control_endpoint",
                 "logging_endpoint", "work_dir"):
        parser.add_argument(f"--{name}", required=True)
    args, _ = parser.parse_known_args(argv)
    metadata = [("worker_id", args.id)]
    info = beam_provision_api_pb2_grpc.ProvisionServiceStub(
        grpc.insecure_channel(args.provision_endpoint)).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=metadata).info
    downloads = os.path.join(args.work_dir, "staged")
    os.makedirs(downloads, exist_ok=True)
    packages = _fetch(beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(
        grpc.insecure_channel(args.artifact_endpoint)), metadata, info.dependencies,
        downloads)
    site = install(packages, args.work_dir)

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    semi_persistent = os.path.join(args.work_dir, f"worker-{args.id}")
    os.makedirs(semi_persistent, exist_ok=True)
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])),
               WORKER_ID=args.id,
               PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
               SEMI_PERSISTENT_DIRECTORY=semi_persistent,
               LOGGING_API_SERVICE_DESCRIPTOR=descriptor(args.logging_endpoint),
               CONTROL_API_SERVICE_DESCRIPTOR=descriptor(args.control_endpoint),
               RUNNER_CAPABILITIES=" ".join(info.runner_capabilities))
    if info.status_endpoint.url:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = descriptor(info.status_endpoint.url)
    os.execve(sys.executable, [sys.executable, "-m",
                               "apache_beam.runners.worker.sdk_worker_main"], env)


if __name__ == "__main__":
    main()
