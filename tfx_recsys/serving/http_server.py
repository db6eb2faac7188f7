"""A local model server that speaks TF Serving's REST API.

It serves the versions the pipeline pushes to `<root>/serving/<model_name>/`
(TF Serving's layout: one integer directory per version, complete once its
`saved_model.pb` exists), so a client written against this server works
unchanged against TF Serving, and the other way round:

  GET  /v1/models/<name>[/versions/<v>]            version status
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature inputs, outputs
  POST /v1/models/<name>[/versions/<v>]:predict    row ("instances") or
                                                   columnar ("inputs") format

A background thread picks up newly pushed versions without a restart. It is
the standard library's threading HTTP server: meant for one machine and
modest traffic (development, demos, tests), not for production load.

TensorFlow (and ScaNN, whose custom op the SavedModel uses) are imported only
when a model is loaded, so importing this module stays cheap.
"""

import base64
import dataclasses
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
_PREDICT_METHOD = "tensorflow/serving/predict"

# Reading and dropping the unread body of a refused request lets the client
# receive our answer: closing a socket with unread data makes the kernel send
# a reset, which can destroy the response before the client reads it. Past
# this size the client is not worth waiting for and we just close.
_DRAIN_LIMIT_BYTES = 64 << 20
_DRAIN_CHUNK_BYTES = 64 << 10


class RequestError(Exception):
    """A request the server refuses: HTTP status plus a message for the client."""

    def __init__(self, status: int, message: str,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------------------
# Loaded versions and the watcher that keeps the newest one loaded


@dataclasses.dataclass(frozen=True)
class Signature:
    """One callable signature, with its tensor specs read from the model."""

    function: Any                # a ConcreteFunction taking keyword tensors
    inputs: Dict[str, Any]       # input name -> tf.TensorSpec
    outputs: Dict[str, Any]      # output name -> tf.TensorSpec


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One loaded model version. Immutable, so requests can share it freely."""

    version: int
    path: str
    signatures: Dict[str, Signature]
    # The loaded object owns the variables and resources the signatures use:
    # holding it here keeps them alive as long as any request holds us.
    model: Any = dataclasses.field(repr=False)


def _import_tensorflow():
    """TensorFlow with the ScaNN op registered, imported on first use.

    The model was trained with Keras 2 (TFRS); the variable only counts if it
    is set before TensorFlow's first import, hence the guard.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import scann  # noqa: F401  registers the ScaNN op before the model loads
    import tensorflow as tf

    return tf


def _as_spec_dict(structure, what: str) -> Dict[str, Any]:
    if not isinstance(structure, dict):
        raise ValueError(f"signature {what} are not named tensors: {structure!r}")
    return dict(structure)


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads one version directory; raises if it is not a usable SavedModel.

    Input names and dtypes come from the model itself, so the server keeps
    working when the serving contract gains or changes features.
    """
    tf = _import_tensorflow()
    model = tf.saved_model.load(path)
    signatures = {}
    for name, function in model.signatures.items():
        _, kwargs = function.structured_input_signature
        signatures[name] = Signature(
            function=function,
            inputs=_as_spec_dict(kwargs, "inputs"),
            outputs=_as_spec_dict(function.structured_outputs, "outputs"))
    if not signatures:
        raise ValueError("the SavedModel has no signatures")
    return LoadedVersion(version=version, path=path, signatures=signatures,
                         model=model)


def complete_versions(serving_dir: str) -> List[int]:
    """Versions under `serving_dir` whose saved_model.pb exists, newest first.

    A pusher writes saved_model.pb last, so a version without it is still
    being written and must not be loaded yet.
    """
    try:
        names = os.listdir(serving_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    versions = [int(name) for name in names if name.isdigit()
                and os.path.isfile(os.path.join(serving_dir, name, "saved_model.pb"))]
    return sorted(versions, reverse=True)


def _file_identity(path: str) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ModelWatcher:
    """Keeps the newest complete version of one model loaded.

    `start()` loads the newest version there is, then a daemon thread polls
    the directory every `poll_seconds` and loads newer ones as they appear.
    The swap is one reference assignment: a request takes `current` once and
    finishes on that version, however many swaps happen meanwhile.

    A version that fails to load is logged and skipped; the current one keeps
    serving. It is retried only once its saved_model.pb changes (it may have
    been caught mid-write), so a broken push does not flood the log.
    """

    def __init__(self, serving_dir: str, poll_seconds: float = 2.0,
                 loader: Callable[[str, int], LoadedVersion] = load_version):
        self.serving_dir = serving_dir
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._lock = threading.Lock()
        self._current: Optional[LoadedVersion] = None
        self._failed: Dict[int, Optional[Tuple[int, int]]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def current(self) -> Optional[LoadedVersion]:
        """The version serving now, or None before the first one loads."""
        with self._lock:
            return self._current

    def poll(self) -> bool:
        """Loads the newest complete version newer than the current one.

        Returns whether a new version was swapped in. Candidates are tried
        newest first, so one broken push does not hide an older good one.
        """
        current = self.current
        for version in complete_versions(self.serving_dir):
            if current is not None and version <= current.version:
                break
            if self._load_and_swap(version):
                return True
        return False

    def _load_and_swap(self, version: int) -> bool:
        path = os.path.join(self.serving_dir, str(version))
        pb_identity = _file_identity(os.path.join(path, "saved_model.pb"))
        if version in self._failed and self._failed[version] == pb_identity:
            return False
        try:
            loaded = self._loader(path, version)
        except Exception as e:  # any failure: keep serving what we have
            self._failed[version] = pb_identity
            logger.warning("skipping version %d of %s: it failed to load (%s: %s)",
                           version, self.serving_dir, type(e).__name__,
                           _first_line(str(e)))
            logger.debug("load failure of %s", path, exc_info=True)
            return False
        self._failed.pop(version, None)
        with self._lock:
            previous, self._current = self._current, loaded
        logger.info("serving version %d from %s%s", version, path,
                    f" (was {previous.version})" if previous else "")
        return True

    def start(self) -> None:
        """Loads what is there now, then watches in the background."""
        if self._thread is not None:
            return
        self.poll()
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"ModelWatcher({self.serving_dir})")
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad scan
                logger.exception("polling %s failed", self.serving_dir)

    def stop(self) -> None:
        """Stops watching; the loaded version stays usable. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


# ---------------------------------------------------------------------------
# Status and metadata bodies


def status_body(loaded: LoadedVersion) -> dict:
    """GET /v1/models/<name>: the one version this server has loaded."""
    return {"model_version_status": [{
        "version": str(loaded.version),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }]}


def _tensor_info(spec) -> dict:
    """A TensorSpec as TF Serving's metadata writes a TensorInfo."""
    from tensorflow.core.framework import types_pb2

    info = {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum)}
    if spec.shape.rank is None:
        info["tensor_shape"] = {"dim": [], "unknown_rank": True}
    else:
        info["tensor_shape"] = {
            "dim": [{"size": str(-1 if d is None else d), "name": ""}
                    for d in spec.shape.as_list()],
            "unknown_rank": False}
    return info


def metadata_body(model_name: str, loaded: LoadedVersion) -> dict:
    """GET /v1/models/<name>/metadata, in TF Serving's layout."""
    signature_defs = {
        name: {"inputs": {k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
               "outputs": {k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
               "method_name": _PREDICT_METHOD}
        for name, sig in sorted(loaded.signatures.items())}
    return {
        "model_spec": {"name": model_name, "signature_name": "",
                       "version": str(loaded.version)},
        "metadata": {"signature_def": {"signature_def": signature_defs}},
    }


# ---------------------------------------------------------------------------
# Predict: JSON request -> tensors -> JSON response


def _show(value: Any, limit: int = 40) -> str:
    """A value as the client wrote it, shortened for an error message."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(names) -> str:
    return ", ".join(repr(n) for n in sorted(names))


def _check_input_names(given, expected, where: str) -> None:
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing:
        raise RequestError(400, f"{where}: missing input(s) {_names(missing)}; "
                                f"the signature takes {_names(expected)}")
    if unknown:
        raise RequestError(400, f"{where}: unknown input(s) {_names(unknown)}; "
                                f"the signature takes {_names(expected)}")


def _columns_from_instances(instances: Any, input_names, max_batch: int) -> Dict[str, list]:
    """Row format: a list of {input: value} objects, one per example."""
    if not isinstance(instances, list):
        raise RequestError(400, "'instances' must be a list of objects, one per example")
    if not instances:
        raise RequestError(400, "'instances' is empty: send at least one example")
    if len(instances) > max_batch:
        raise RequestError(413, f"batch of {len(instances)} instances exceeds "
                                f"the limit of {max_batch}")
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RequestError(400, f"instances[{i}] must be an object mapping "
                                    f"input names to values, got {_show(instance)}")
        _check_input_names(instance, input_names, f"instances[{i}]")
    return {name: [instance[name] for instance in instances] for name in input_names}


def _columns_from_inputs(inputs: Any, input_names, max_batch: int) -> Dict[str, Any]:
    """Columnar format: {input: [value per example]}."""
    if not isinstance(inputs, dict):
        raise RequestError(400, "'inputs' must be an object mapping input names "
                                "to lists of values")
    _check_input_names(inputs, input_names, "'inputs'")
    for name, column in inputs.items():
        if isinstance(column, list) and len(column) > max_batch:
            raise RequestError(413, f"input {name!r}: batch of {len(column)} "
                                    f"exceeds the limit of {max_batch}")
    return dict(inputs)


def _nested_shape(value: Any) -> Tuple[int, ...]:
    """The shape of nested JSON lists; ValueError where they are ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_nested_shape(v) for v in value}
    if len(shapes) > 1:
        raise ValueError("ragged")
    return (len(value),) + shapes.pop()


def _leaves(value: Any, index: Tuple[int, ...] = ()) -> Iterator[Tuple[Tuple[int, ...], Any]]:
    if isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, index + (i,))
    else:
        yield index, value


def _leaf_converter(dtype) -> Callable[[Any], Any]:
    """A function from one JSON value to a value of `dtype`.

    It raises ValueError naming what was expected. JSON types are taken as
    they are: the string "24" is not an integer, true is not a number.
    """
    import numpy as np

    if dtype.name == "string":
        def to_bytes(value):
            if isinstance(value, str):
                return value.encode("utf-8")
            if (isinstance(value, dict) and set(value) == {"b64"}
                    and isinstance(value["b64"], str)):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except ValueError:
                    raise ValueError("invalid base64 in {\"b64\": ...}") from None
            raise ValueError('expected a string (or {"b64": "..."})')
        return to_bytes
    if dtype.is_bool:
        def to_bool(value):
            if isinstance(value, bool):
                return value
            raise ValueError("expected true or false")
        return to_bool
    if dtype.is_integer:
        limits = np.iinfo(dtype.as_numpy_dtype)

        def to_int(value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer ({dtype.name})")
            if not limits.min <= value <= limits.max:
                raise ValueError(f"integer out of range for {dtype.name}")
            return value
        return to_int
    if dtype.is_floating:
        largest = float(np.finfo(dtype.as_numpy_dtype).max)

        def to_float(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number ({dtype.name})")
            # NaN passes: it is the serving contract's "missing" marker.
            if abs(float(value)) > largest:
                raise ValueError(f"number out of range for {dtype.name}")
            return float(value)
        return to_float
    raise RequestError(500, f"the signature takes dtype {dtype.name}, which "
                            "this server cannot feed from JSON")


def _position(name: str, index: Tuple[int, ...], row_format: bool) -> str:
    """Where a value sits, in the terms of the request format the client used."""
    if row_format and index:
        return f"instances[{index[0]}][{name!r}]" + "".join(f"[{i}]" for i in index[1:])
    return f"inputs[{name!r}]" + "".join(f"[{i}]" for i in index)


def _to_tensor(name: str, column: Any, spec, row_format: bool):
    """One input's JSON values as a tensor of the signature's dtype and shape."""
    import numpy as np
    import tensorflow as tf

    try:
        shape = _nested_shape(column)
    except ValueError:
        raise RequestError(400, f"input {name!r}: ragged lists; every example "
                                "must have the same shape") from None
    convert = _leaf_converter(spec.dtype)
    values = []
    for index, leaf in _leaves(column):
        try:
            values.append(convert(leaf))
        except ValueError as e:
            raise RequestError(400, f"{_position(name, index, row_format)}: {e}, "
                                    f"got {_show(leaf)}") from None
    if not spec.shape.is_compatible_with(shape):
        raise RequestError(400, f"input {name!r}: shape {list(shape)} does not fit "
                                f"the signature's {_shape_text(spec.shape)}")
    numpy_dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
    array = np.empty(len(values), dtype=numpy_dtype)
    array[:] = values
    return tf.constant(array.reshape(shape), dtype=spec.dtype)


def _shape_text(shape) -> str:
    if shape.rank is None:
        return "unknown shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _batch_size(tensors: Dict[str, Any]) -> int:
    """The shared first dimension of all inputs; 400 if they disagree."""
    sizes = {name: (t.shape[0] if t.shape.rank else None) for name, t in tensors.items()}
    distinct = set(sizes.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{n} has {s}" for n, s in sorted(sizes.items()))
        raise RequestError(400, f"inputs have different batch sizes ({listed})")
    size = distinct.pop()
    if size == 0:
        raise RequestError(400, "the batch is empty: send at least one example")
    return size


def _call_signature(signature: Signature, tensors: Dict[str, Any]) -> Dict[str, Any]:
    """Runs the model; its own complaints about inputs become 400s."""
    tf = _import_tensorflow()
    try:
        outputs = signature.function(**tensors)
    except tf.errors.InvalidArgumentError as e:
        raise RequestError(400, "the model rejected the inputs: "
                                f"{_first_line(e.message)}") from None
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def _jsonable(value: Any) -> Any:
    """Numpy values as JSON; bytes as UTF-8 text, else {"b64": ...} like TF
    Serving; NaN and infinities (which JSON cannot hold) as null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _rows(outputs: Dict[str, Any], batch: int) -> List[Any]:
    """Outputs split per example, for the row format's "predictions"."""
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != batch:
            raise RequestError(500, f"model output {name!r} has shape {list(array.shape)}, "
                                    f"not one row per example of the batch of {batch}; "
                                    "ask with \"inputs\" instead")
    names = sorted(outputs)
    if len(names) == 1:  # TF Serving drops the name of a lone output
        return [_jsonable(outputs[names[0]][i]) for i in range(batch)]
    return [{n: _jsonable(outputs[n][i]) for n in names} for i in range(batch)]


def predict(loaded: LoadedVersion, request: Any, max_batch: int) -> dict:
    """The :predict call on a parsed JSON body; RequestError on bad requests."""
    if not isinstance(request, dict):
        raise RequestError(400, "the request body must be a JSON object with "
                                "\"instances\" or \"inputs\"")
    unknown = set(request) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise RequestError(400, f"unknown request field(s) {_names(unknown)}; expected "
                                "\"instances\" or \"inputs\", and optionally "
                                "\"signature_name\"")
    signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str) or signature_name not in loaded.signatures:
        raise RequestError(400, f"unknown signature_name {_show(signature_name)}; the "
                                f"model has {_names(loaded.signatures)}")
    signature = loaded.signatures[signature_name]
    row_format = "instances" in request
    if row_format == ("inputs" in request):
        raise RequestError(400, "the request must have exactly one of \"instances\" "
                                "(row format) or \"inputs\" (columnar format)")
    if row_format:
        columns = _columns_from_instances(request["instances"], signature.inputs, max_batch)
    else:
        columns = _columns_from_inputs(request["inputs"], signature.inputs, max_batch)
    tensors = {name: _to_tensor(name, columns[name], spec, row_format)
               for name, spec in signature.inputs.items()}
    batch = _batch_size(tensors)
    outputs = _call_signature(signature, tensors)
    if row_format:
        return {"predictions": _rows(outputs, batch)}
    names = sorted(outputs)
    if len(names) == 1:
        return {"outputs": _jsonable(outputs[names[0]])}
    return {"outputs": {n: _jsonable(outputs[n]) for n in names}}


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


# ---------------------------------------------------------------------------
# HTTP


@dataclasses.dataclass(frozen=True)
class _Route:
    model_name: str
    version: Optional[int]
    action: str          # "status", "metadata" or "predict"

    @property
    def method(self) -> str:
        return "POST" if self.action == "predict" else "GET"


_ROUTE = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                    r"(?P<action>/metadata|:predict)?")
_ACTIONS = {None: "status", "/metadata": "metadata", ":predict": "predict"}


def _parse_route(raw_path: str) -> _Route:
    path = urllib.parse.urlsplit(raw_path).path
    match = _ROUTE.fullmatch(path)
    if match is None:
        raise RequestError(404, f"unknown path {path!r}; the API is /v1/models/<name>"
                                "[/versions/<v>][/metadata | :predict]")
    version = match.group("version")
    return _Route(model_name=urllib.parse.unquote(match.group("name")),
                  version=int(version) if version is not None else None,
                  action=_ACTIONS[match.group("action")])


class _Handler(BaseHTTPRequestHandler):
    """One request: route it, answer JSON, never let an exception escape."""

    server: "ModelServer"
    server_version = "tfx-recsys-model-server"
    # Socket timeout: a client that stalls mid-request frees its thread.
    timeout = 30

    def do_GET(self):
        self._respond("GET")

    def do_POST(self):
        self._respond("POST")

    def do_PUT(self):
        self._respond("PUT")

    def do_DELETE(self):
        self._respond("DELETE")

    def do_PATCH(self):
        self._respond("PATCH")

    def _respond(self, method: str) -> None:
        self._body_read = False
        headers: Dict[str, str] = {}
        try:
            status, payload = 200, self._dispatch(method)
        except RequestError as e:
            status, payload, headers = e.status, {"error": e.message}, e.headers
        except RecursionError:
            status, payload = 400, {"error": "the request is nested too deeply"}
        except Exception as e:  # a model or server bug: log it, answer briefly
            logger.exception("%s %s failed", method, self.path)
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: "
                                             f"{_first_line(str(e))}"}
        self._discard_unread_body()
        self._send_json(status, payload, headers)

    def _dispatch(self, method: str) -> dict:
        route = _parse_route(self.path)
        if method != route.method:
            raise RequestError(405, f"{method} is not allowed here; use {route.method}",
                               headers={"Allow": route.method})
        server = self.server
        if route.model_name != server.model_name:
            raise RequestError(404, f"unknown model {route.model_name!r}; this server "
                                    f"serves {server.model_name!r}")
        loaded = server.watcher.current  # this request's version, whatever swaps next
        if loaded is None:
            raise RequestError(503, f"model {server.model_name!r} has no version loaded "
                                    f"yet; waiting for one under {server.watcher.serving_dir}")
        if route.version is not None and route.version != loaded.version:
            raise RequestError(404, f"version {route.version} of model {server.model_name!r} "
                                    f"is not loaded; the server has version {loaded.version}")
        if route.action == "status":
            return status_body(loaded)
        if route.action == "metadata":
            return metadata_body(server.model_name, loaded)
        return predict(loaded, self._read_json_body(), server.max_batch)

    def _content_length(self) -> Optional[int]:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            length = int(value)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(400, f"invalid Content-Length {value!r}")
        return length

    def _read_json_body(self) -> Any:
        """The body as JSON; its size is checked before a byte is read."""
        length = self._content_length()
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        limit = self.server.max_body_bytes
        if length > limit:
            raise RequestError(413, f"request body of {length} bytes exceeds the "
                                    f"limit of {limit} bytes")
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:
            raise RequestError(400, f"request body ended after {len(body)} of "
                                    f"{length} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise RequestError(400, f"malformed JSON body: {e}") from None

    def _discard_unread_body(self) -> None:
        """Reads and drops a body we refused, so the client gets our answer."""
        if self._body_read:
            return
        try:
            remaining = self._content_length() or 0
        except RequestError:
            return
        if remaining > _DRAIN_LIMIT_BYTES:
            return
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK_BYTES))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:  # the client gave up or stalled; we close anyway
            pass

    def _send_json(self, status: int, payload: Any,
                   headers: Optional[Dict[str, str]] = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client hung up first; nothing left to tell it
            logger.debug("client went away before the response", exc_info=True)

    def send_error(self, code, message=None, explain=None):
        """The base class's own errors (bad request line, unknown method) as JSON."""
        self._body_read = True  # nothing of such a request is worth reading
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        if self.command == "HEAD" or code < 200 or code in (204, 304):
            super().send_error(code, message, explain)
            return
        self._send_json(code, {"error": text})

    def log_message(self, format, *args):
        """Access log at DEBUG: quiet unless the application asks for it."""
        logger.debug("%s - %s", self.address_string(), format % args)


class ModelServer(ThreadingHTTPServer):
    """The HTTP server plus what its handlers need: watcher, name, limits."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], watcher: ModelWatcher,
                 model_name: str, max_body_bytes: int, max_batch: int):
        # Set before binding: a failed bind calls server_close(), which needs them.
        self.watcher = watcher
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        """Closes the socket and stops watching for new versions."""
        super().server_close()
        self.watcher.stop()


def make_server(serving_dir: str, model_name: str, host: str = "127.0.0.1",
                port: int = 8501, poll_seconds: float = 2.0,
                max_body_bytes: int = 1 << 20,
                max_batch: int = 1024) -> Tuple[ModelServer, ModelWatcher]:
    """A bound server, newest version loaded, watcher running; not yet serving.

    `serving_dir` holds the version directories (TF Serving's model base
    path, `<root>/serving/<model_name>`); `model_name` is the name in the
    URLs. port=0 binds a free port: read it from `server.server_address`.
    The caller runs `server.serve_forever()` and later `server.shutdown()`
    and `server.server_close()` (which also stops the watcher).
    """
    watcher = ModelWatcher(serving_dir, poll_seconds=poll_seconds)
    # Bind first: a taken port fails before any model is loaded.
    server = ModelServer((host, port), watcher, model_name,
                         max_body_bytes=max_body_bytes, max_batch=max_batch)
    try:
        watcher.start()
    except BaseException:
        server.server_close()
        raise
    return server, watcher


def run_server(serving_dir: str, model_name: str, host: str = "127.0.0.1",
               port: int = 8501, poll_seconds: float = 2.0,
               max_body_bytes: int = 1 << 20, max_batch: int = 1024) -> None:
    """Serves until Ctrl-C (SIGINT) or SIGTERM, after printing one line with
    the URL and version."""
    # A process started in the background by a non-interactive shell (nohup
    # ... &, some CI runners) inherits SIGINT ignored, and Python then keeps
    # it ignored: Ctrl-C would never stop the server. Stop on both signals.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server, watcher = make_server(serving_dir, model_name, host=host, port=port,
                                  poll_seconds=poll_seconds,
                                  max_body_bytes=max_body_bytes, max_batch=max_batch)
    loaded = watcher.current
    version = (f"version {loaded.version}" if loaded
               else f"no version yet (watching {serving_dir})")
    print(f"serving {model_name!r} {version} at {server.url}/v1/models/{model_name} "
          "(Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
