"""The KServe InferenceService that serves the pushed model on a cluster.

KServe's stock TensorFlow runtime is TF Serving, which cannot load the
pushed model: its retrieval index is a ScaNN custom op that TF Serving's
images do not carry. So the InferenceService runs a custom predictor: the
project's image (kubeflow/Dockerfile) running `recsys serve` on the model's
storage URI. KServe's storage initializer copies the URI (the model's base
directory, one subdirectory per version) to /mnt/models before the
container starts; the container is named `kserve-container` and carries the
URI in `STORAGE_URI`, which is how KServe finds a custom container's model.

The object is built from the kserve SDK's own classes
(`V1beta1InferenceService` and the Kubernetes client's `V1Container`), so
what is written is what the SDK would send (`KServeClient.create`).
"""

import dataclasses
import json
from typing import List, Optional, Sequence

MODEL_MOUNT = "/mnt/models"        # where KServe's storage initializer puts the model
CONTAINER_NAME = "kserve-container"  # the container KServe reads STORAGE_URI from
PORT = 8080                        # KServe's HTTP port


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    name: str = "tfx-recsys"
    storage_uri: str = "gs://YOUR_BUCKET/tfx-recsys/serving/retrieval"
    image: str = "tfx-recsys:latest"
    model_name: str = "retrieval"
    namespace: Optional[str] = None
    cpu: str = "2"
    memory: str = "4Gi"
    min_replicas: int = 1
    max_replicas: Optional[int] = None
    serve_args: Sequence[str] = ()   # further `recsys serve` options


def serve_command(settings: DeploySettings) -> List[str]:
    """The container's command: `recsys serve` on the mounted model."""
    return ["recsys", "serve", "--model-dir", MODEL_MOUNT, "--model-name",
            settings.model_name, "--host", "0.0.0.0", "--port", str(PORT),
            *settings.serve_args]


def inference_service(settings: DeploySettings):
    """A kserve.V1beta1InferenceService with one custom predictor container."""
    from kserve import (V1beta1InferenceService, V1beta1InferenceServiceSpec,
                        V1beta1PredictorSpec, constants)
    from kubernetes.client import (V1Container, V1ContainerPort, V1EnvVar,
                                   V1HTTPGetAction, V1ObjectMeta, V1Probe,
                                   V1ResourceRequirements)

    if not settings.storage_uri:
        raise ValueError("a storage URI is needed: where the pushed model's versions are")
    command = serve_command(settings)

    def probe(path: str, period: int) -> V1Probe:
        return V1Probe(http_get=V1HTTPGetAction(path=path, port=PORT),
                       period_seconds=period, failure_threshold=3)

    container = V1Container(
        name=CONTAINER_NAME,
        image=settings.image,
        command=command[:2],
        args=command[2:],
        env=[V1EnvVar(name="STORAGE_URI", value=settings.storage_uri),
             V1EnvVar(name="TF_USE_LEGACY_KERAS", value="1")],
        ports=[V1ContainerPort(container_port=PORT, protocol="TCP")],
        # Ready once a version is loaded and answering (the server loads and
        # calls each signature before it serves a version).
        readiness_probe=probe(f"/v2/models/{settings.model_name}/ready", 5),
        liveness_probe=probe("/v2/health/live", 15),
        resources=V1ResourceRequirements(
            requests={"cpu": settings.cpu, "memory": settings.memory},
            limits={"memory": settings.memory}),
    )
    predictor = V1beta1PredictorSpec(
        containers=[container],
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        annotations={"prometheus.kserve.io/port": str(PORT),
                     "prometheus.kserve.io/path": "/metrics"},
    )
    return V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(
            name=settings.name, namespace=settings.namespace,
            annotations={"serving.kserve.io/enable-prometheus-scraping": "true"}),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def to_dict(isvc) -> dict:
    """The object as Kubernetes takes it (camelCase keys, no empty fields)."""
    from kserve import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


class _Response:
    """What an SDK ApiClient's deserialize reads: a body in `.data`."""

    def __init__(self, data: str):
        self.data = data


def _sdk_client():
    """kserve's ApiClient, handing the Kubernetes types inside an
    InferenceService (V1ObjectMeta, V1Container, ...) to the Kubernetes
    client's ApiClient, which defines them."""
    import kserve
    import kubernetes.client

    class Client(kserve.ApiClient):
        def _ApiClient__deserialize(self, data, klass):
            if (isinstance(klass, str) and not klass.startswith(("list[", "dict("))
                    and klass not in self.NATIVE_TYPES_MAPPING
                    and not hasattr(kserve.models, klass)):
                return kubernetes.client.ApiClient().deserialize(
                    _Response(json.dumps(data)), klass)
            return super()._ApiClient__deserialize(data, klass)

    return Client()


def from_dict(data: dict):
    """A V1beta1InferenceService from its Kubernetes form, through the SDK."""
    return _sdk_client().deserialize(_Response(json.dumps(data)), "V1beta1InferenceService")


def to_yaml(isvc) -> str:
    import yaml

    return yaml.safe_dump(to_dict(isvc), sort_keys=False, default_flow_style=False)


def write(isvc, path: str) -> None:
    """Writes the InferenceService as YAML (or JSON for a .json path)."""
    text = (json.dumps(to_dict(isvc), indent=2) + "\n" if path.endswith(".json")
            else to_yaml(isvc))
    with open(path, "w") as f:
        f.write(text)
