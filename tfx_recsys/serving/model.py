"""The pushed two-stage SavedModel as a KServe model.

`RecommenderModel` is a `kserve.Model`: KServe's data plane calls it as
preprocess (the body -> a checked `protocol.Batch` and the version it runs
on), predict (the batch through the micro-batcher, `batching.py`) and
postprocess (its rows -> the response body), timing each step in KServe's
Prometheus histograms. The versions come from a `VersionManager`
(`versions.py`): the newest complete version of the model directory.

What it takes, from `recsys serve`'s routes (`server.py`): a
`PredictRequest` (protocol, body, version in the path). From KServe's own
routes too, so it also runs in a stock `kserve.ModelServer`: a parsed V1
body (dict), a V1 body KServe did not parse (bytes: sent without
Content-Type: application/json, as `curl -d` does), or a V2 `InferRequest`.
"""

import dataclasses
import threading
import time
from typing import Any, Dict, Optional, Union

import kserve
from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest

from tfx_recsys.serving import protocol
from tfx_recsys.serving.batching import BatchingSettings, MicroBatcher
from tfx_recsys.serving.protocol import Batch, RequestError
from tfx_recsys.serving.versions import LoadedVersion, VersionManager

V1, V2 = "v1", "v2"


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    """A predict call as the server's routes hand it over."""

    protocol: str                    # V1 or V2
    body: Any                        # the body: bytes, or parsed JSON
    version: Optional[int] = None    # the version the path names, if any


@dataclasses.dataclass(frozen=True)
class _Prepared:
    protocol: str
    version: LoadedVersion
    batch: Batch
    as_bytes: bool                   # answer encoded JSON (our routes) or a dict


class RecommenderModel(kserve.Model):
    """Serves the newest loadable version of one model directory.

    Args:
      name: the model name in the URLs (`/v1/models/<name>`).
      model_dir: the version directories' parent (TF Serving's base path).
      batching: the micro-batcher's settings.
      max_rows: the most examples one request may carry (413 beyond).
      versions: a VersionManager to use instead of one on `model_dir`.
    """

    def __init__(self, name: str, model_dir: str,
                 batching: BatchingSettings = BatchingSettings(), max_rows: int = 1024,
                 versions: Optional[VersionManager] = None):
        super().__init__(name)
        self.model_dir = model_dir
        self.max_rows = max_rows
        self.versions = versions or VersionManager(model_dir)
        self.batcher = MicroBatcher(batching, model_name=name)
        labels = get_labels(name)
        self._timers = (PRE_HIST_TIME.labels(**labels), PREDICT_HIST_TIME.labels(**labels),
                        POST_HIST_TIME.labels(**labels))
        self._started = False
        self._load_lock = threading.Lock()

    # -- lifecycle (KServe calls load() when a request finds the model not ready)

    def load(self) -> bool:
        """Loads the newest version there is and starts watching for new ones.
        Only the first call does work; later ones, also while it runs (KServe
        calls load() on its event loop when a request finds the model not
        ready), report readiness at once."""
        if self._load_lock.acquire(blocking=False):
            try:
                if not self._started:
                    self._started = True
                    self.versions.start()
            finally:
                self._load_lock.release()
        self.ready = self.versions.current is not None
        return self.ready

    async def healthy(self) -> bool:
        self.ready = self.versions.current is not None
        return self.ready

    def start(self):
        self.load()

    def stop(self):
        self.versions.stop()
        self.batcher.close()
        self.ready = False

    # -- which version a request runs on

    def version_for(self, requested: Optional[int]) -> LoadedVersion:
        """The served version, which must be the one requested if any."""
        loaded = self.versions.current
        if loaded is None:
            failures = self.versions.failures()
            detail = (f"; version {failures[0].version} failed to load: {failures[0].error}"
                      if failures else "")
            raise RequestError(503, f"model {self.name!r} has no version loaded yet "
                                    f"(watching {self.model_dir}{detail})")
        if requested is not None and requested != loaded.version:
            raise RequestError(404, f"version {requested} of model {self.name!r} is not "
                                    f"served; the served version is {loaded.version}")
        return loaded

    # -- KServe's handlers

    async def __call__(self, body, headers: Optional[Dict[str, str]] = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        """KServe's `Model.__call__` for a prediction, the same steps and the
        same Prometheus histograms, without its per-request lookups (the
        histograms' labels, which steps are coroutines, the request id for a
        latency log this server does not write)."""
        if verb != InferenceVerb.PREDICT or self.enable_latency_logging:
            return await super().__call__(body, headers, verb)
        pre, predict, post = self._timers
        # Each step is timed also when it raises, as KServe's timers do.
        started = time.perf_counter()
        try:
            prepared = self.preprocess(body, headers)
        finally:
            pre.observe(time.perf_counter() - started)
        prepared = self.validate(prepared)
        started = time.perf_counter()
        try:
            result = await self.predict(prepared, headers)
        finally:
            predict.observe(time.perf_counter() - started)
        started = time.perf_counter()
        try:
            response = self.postprocess(result, headers)
        finally:
            post.observe(time.perf_counter() - started)
        return response, {}

    def validate(self, payload):
        return payload  # preprocess has checked everything

    def preprocess(self, payload: Union[PredictRequest, dict, bytes, InferRequest],
                   headers: Optional[Dict[str, str]] = None) -> _Prepared:
        as_bytes = isinstance(payload, PredictRequest)
        if not as_bytes:
            payload = _from_kserve(payload)
        loaded = self.version_for(payload.version)
        body = payload.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = protocol.parse_json(bytes(body))
        parse = protocol.parse_v1 if payload.protocol == V1 else protocol.parse_v2
        batch = parse(body, loaded.signatures, self.max_rows)
        return _Prepared(payload.protocol, loaded, batch, as_bytes)

    async def predict(self, prepared: _Prepared, headers=None, response_headers=None):
        outputs = await self.batcher.run(prepared.version, prepared.batch)
        return prepared, outputs

    def postprocess(self, result, headers=None, response_headers=None):
        prepared, outputs = result
        if prepared.protocol == V1:
            body = protocol.v1_response(prepared.batch, outputs)
        else:
            body = protocol.v2_response(prepared.batch, outputs, self.name,
                                        prepared.version.version)
        if prepared.as_bytes:
            return body
        import orjson

        return orjson.loads(body)  # KServe's own routes encode it again

    # -- status

    def status(self) -> Dict[str, Any]:
        """The served version and every failed newer one, TF Serving's way
        (`model_version_status`), plus KServe's `name` and `ready`."""
        entries = []
        loaded = self.versions.current
        if loaded is not None:
            entries.append({"version": str(loaded.version), "state": "AVAILABLE",
                            "status": {"error_code": "OK", "error_message": ""}})
        now = time.monotonic()
        for failure in self.versions.failures():
            retry = max(0.0, failure.retry_at - now)
            entries.append({
                "version": str(failure.version), "state": "LOADING",
                "status": {"error_code": "UNKNOWN", "error_message": (
                    f"failed to load ({failure.attempts} attempt"
                    f"{'s' if failure.attempts > 1 else ''}, next in {retry:.0f} s): "
                    f"{failure.error}")}})
        entries.sort(key=lambda e: -int(e["version"]))
        return {"name": self.name, "ready": loaded is not None,
                "model_version_status": entries}


def _from_kserve(payload) -> PredictRequest:
    """A body as KServe's stock routes hand it to a model."""
    if isinstance(payload, InferRequest):
        body, _ = payload.to_rest()
        if isinstance(body, (bytes, bytearray)):
            raise RequestError(415, "binary tensor data is not supported; send JSON")
        return PredictRequest(V2, body)
    return PredictRequest(V1, payload)
