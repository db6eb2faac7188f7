"""`recsys serve`: KServe's model server for the pushed model, on one port.

The server is KServe's: its `ModelServer` (model registry, data plane),
its REST server (FastAPI on uvicorn, HTTP/1.1 keep-alive), its routes for
health and readiness (`/`, `/v2/health/live`, `/v2/health/ready`,
`/v2/models`, `/v1/models`) and Prometheus metrics (`/metrics`), and the
model is a `kserve.Model` (`model.py`). In front of KServe's model routes
sit this module's, which keep TF Serving's REST API whole and make every
client mistake a 4xx:

  GET  /v1/models/<name>[/versions/<v>]            status (TF Serving's
       model_version_status, with failed loads; KServe's name and ready)
  GET  /v1/models/<name>[/versions/<v>]/metadata   every signature's tensors
  POST /v1/models/<name>[/versions/<v>]:predict    V1: instances or inputs
  GET  /v2/models/<name>[/versions/<v>]            V2 model metadata
  GET  /v2/models/<name>[/versions/<v>]/ready      V2 model readiness
  POST /v2/models/<name>[/versions/<v>]/infer      V2 inference

uvicorn runs `ModelFastPath`: requests to the model routes go straight to
them, the rest (KServe's routes, unknown paths) through the FastAPI app.

A body is read with a size limit (413 before a byte is read when
Content-Length says too much) and a time limit (408 when the body does not
arrive, e.g. a Content-Length larger than what is sent), and is taken as
JSON whatever its Content-Type, as TF Serving does (plain `curl -d` sends
application/x-www-form-urlencoded). Errors are `{"error": "..."}`.
"""

import asyncio
import contextlib
import dataclasses
import logging
import re
import signal
import socket
import threading
from typing import Dict, Optional, Tuple

import fastapi
import kserve
import uvicorn
from fastapi.exceptions import RequestValidationError
from kserve.protocol.rest.server import RESTServer, metrics_handler
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from prometheus_client import Counter, Gauge
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tfx_recsys.serving import registry
from tfx_recsys.serving.batching import BatchingSettings
from tfx_recsys.serving.model import V1, V2, PredictRequest, RecommenderModel
from tfx_recsys.serving.protocol import RequestError, v1_metadata, v2_metadata
from tfx_recsys.serving.versions import VersionManager, configure_tensorflow, first_line

logger = logging.getLogger(__name__)

REQUESTS = Counter("recsys_requests", "model requests answered, by route and status",
                   ["model_name", "route", "code"])
SERVED_VERSION = Gauge("recsys_served_version", "the version being served (0: none)",
                       ["model_name"])
FAILED_VERSIONS = Gauge("recsys_failed_versions",
                        "newer versions that failed to load and are being retried",
                        ["model_name"])

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
_METHOD_SET = frozenset(_METHODS)
_JSON = "application/json"
# A version in a path: TF Serving's versions are int64.
_MAX_VERSION_DIGITS = 18
# A refused body up to this size is read and dropped, so that the client
# gets the answer (closing a socket with unread data makes the kernel send a
# reset, which can destroy the answer before the client reads it).
DRAIN_LIMIT_BYTES = 64 << 20
_CLOSE = {"Connection": "close"}


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8501
    max_body_bytes: int = 1 << 20
    body_timeout_seconds: float = 10.0
    backlog: int = 2048
    timeout_keep_alive: int = 65
    access_log: bool = False


# --------------------------------------------------------------------------
# Paths


_V1_PATH = re.compile(r"(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                      r"(?P<action>/metadata|:predict)?")
_V2_PATH = re.compile(r"(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                      r"(?P<action>/ready|/infer)?")
_V1_ACTIONS = {None: ("status", "GET"), "/metadata": ("metadata", "GET"),
               ":predict": ("predict", "POST")}
_V2_ACTIONS = {None: ("metadata", "GET"), "/ready": ("ready", "GET"),
               "/infer": ("infer", "POST")}


def _parse_path(prefix: str, rest: str, pattern, actions) -> Tuple[str, Optional[int], str, str]:
    """(model name, version or None, action, method) of a model path."""
    match = pattern.fullmatch(rest)
    if match is None:
        api = ("/v1/models/<name>[/versions/<v>][/metadata | :predict]" if prefix == "v1"
               else "/v2/models/<name>[/versions/<v>][/ready | /infer]")
        raise RequestError(404, f"unknown path /{prefix}/models/{_short(rest)}; the API is "
                                f"{api}")
    version = match.group("version")
    if version is not None:
        if not version.isdigit() or len(version) > _MAX_VERSION_DIGITS:
            raise RequestError(404 if version.isdigit() else 400,
                               f"version {_short(version)!r} in the path: a version is a "
                               f"number of at most {_MAX_VERSION_DIGITS} digits")
        version = int(version)
    action, method = actions[match.group("action")]
    return match.group("name"), version, action, method


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------
# Bodies


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body, refused if larger than `max_bytes` or slower than
    `timeout` seconds.

    A body refused for its size is left unread and the connection kept:
    uvicorn reads and drops the rest after the answer, so the client, still
    sending, gets the 413 instead of a reset. Past DRAIN_LIMIT_BYTES (a
    Content-Length not worth waiting for) and for a body that stalls, the
    answer closes the connection instead.
    """
    declared = request.headers.get("content-length")
    expected = None
    if declared is not None:
        # uvicorn has refused a Content-Length that is not a number already.
        expected = int(declared) if declared.isdigit() and len(declared) < 20 else None
        if expected is None:
            raise RequestError(400, f"invalid Content-Length {_short(declared)!r}", _CLOSE)
        if expected > max_bytes:
            raise RequestError(413, f"request body of {expected} bytes exceeds the limit "
                                    f"of {max_bytes} bytes",
                               _CLOSE if expected > DRAIN_LIMIT_BYTES else None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    chunks, size = [], 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):  # no task per read, unlike wait_for
                message = await request.receive()
        except TimeoutError:
            of = f" of the {expected} bytes its Content-Length announces" \
                if expected is not None else ""
            raise RequestError(408, f"the request body did not arrive: {size} bytes{of} "
                                    f"came within {timeout:g} s", _CLOSE) from None
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client closed the connection before the whole "
                                    "body arrived", _CLOSE)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# --------------------------------------------------------------------------
# The app


def _error(status: int, message: str,
           headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ModelRoutes:
    """The model routes of one server (see the module doc)."""

    def __init__(self, model: RecommenderModel, dataplane, settings: ServerSettings):
        self.model = model
        self.dataplane = dataplane
        self.settings = settings
        versions = model.versions
        # Read when /metrics is scraped.
        SERVED_VERSION.labels(model_name=model.name).set_function(
            lambda: versions.current.version if versions.current else 0)
        FAILED_VERSIONS.labels(model_name=model.name).set_function(
            lambda: len(versions.failures()))
        self._counters = {}

    def _count(self, route: str, code: int) -> None:
        key = (route, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(
                model_name=self.model.name, route=route, code=str(code))
        counter.inc()

    async def v1(self, request: Request) -> Response:
        return await self._handle(request, "v1", _V1_PATH, _V1_ACTIONS)

    async def v2(self, request: Request) -> Response:
        return await self._handle(request, "v2", _V2_PATH, _V2_ACTIONS)

    async def _handle(self, request: Request, prefix: str, pattern, actions) -> Response:
        route = f"{prefix}-unknown"
        try:
            name, version, action, method = _parse_path(
                prefix, request.path_params["rest"], pattern, actions)
            route = f"{prefix}-{action}"
            if request.method != method:
                raise RequestError(405, f"{request.method} is not allowed here; use "
                                        f"{method}", {"Allow": method})
            if name != self.model.name:
                raise RequestError(404, f"unknown model {_short(name)!r}; this server "
                                        f"serves {self.model.name!r}")
            response = await getattr(self, f"_{prefix}_{action}")(request, version)
        except RequestError as e:
            response = _error(e.status, e.message, e.headers)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a model or server bug: log it, answer briefly
            logger.exception("%s %s failed", request.method, request.url.path)
            response = _error(500, f"internal error: {type(e).__name__}: "
                                   f"{first_line(str(e), 200)}")
        self._count(route, response.status_code)
        return response

    # -- V1

    async def _v1_status(self, request: Request, version: Optional[int]) -> Response:
        status = self.model.status()
        if version is not None:
            entries = [e for e in status["model_version_status"]
                       if e["version"] == str(version)]
            if not entries:
                known = [e["version"] for e in status["model_version_status"]]
                raise RequestError(404, f"version {version} of model {self.model.name!r} "
                                        f"is neither served nor loading (versions: "
                                        f"{', '.join(known) or 'none'})")
            return JSONResponse(dict(status, model_version_status=entries))
        if not status["ready"]:
            return JSONResponse(dict(status, error=f"model {self.model.name!r} has no "
                                     f"version loaded yet (watching {self.model.model_dir})"),
                                status_code=503)
        return JSONResponse(status)

    async def _v1_metadata(self, request: Request, version: Optional[int]) -> Response:
        loaded = self.model.version_for(version)
        return JSONResponse(v1_metadata(self.model.name, loaded.version, loaded.signatures))

    async def _v1_predict(self, request: Request, version: Optional[int]) -> Response:
        return await self._infer(request, V1, version)

    # -- V2

    async def _v2_metadata(self, request: Request, version: Optional[int]) -> Response:
        loaded = self.model.version_for(version)
        return JSONResponse(v2_metadata(self.model.name, loaded.version, loaded.signatures))

    async def _v2_ready(self, request: Request, version: Optional[int]) -> Response:
        loaded = self.model.versions.current
        ready = loaded is not None and version in (None, loaded.version)
        body = {"name": self.model.name, "ready": ready}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _v2_infer(self, request: Request, version: Optional[int]) -> Response:
        return await self._infer(request, V2, version)

    # -- both

    async def _infer(self, request: Request, protocol: str,
                     version: Optional[int]) -> Response:
        # Fail fast, before the body is read, when nothing can answer.
        self.model.version_for(version)
        body = await read_body(request, self.settings.max_body_bytes,
                               self.settings.body_timeout_seconds)
        headers = dict(request.headers)
        answer, response_headers = await self.dataplane.infer(
            self.model.name, PredictRequest(protocol, body, version), headers)
        response_headers.pop("content-length", None)
        response_headers.pop("content-type", None)
        return Response(answer, media_type=_JSON, headers=response_headers or None)


def _add_kserve_routes(app: fastapi.FastAPI, dataplane, repository_extension) -> None:
    """KServe's own handlers for liveness, readiness, listings and metrics
    (not its model repository routes, which would let any client unload the
    model)."""
    v1 = V1Endpoints(dataplane, repository_extension)
    v2 = V2Endpoints(dataplane, repository_extension)
    for path, handler in (("/", dataplane.live), ("/metrics", metrics_handler),
                          ("/v1/models", v1.models), ("/v2", v2.metadata),
                          ("/v2/health/live", v2.live), ("/v2/health/ready", v2.ready),
                          ("/v2/models", v2.models)):
        app.add_api_route(path, handler, methods=["GET"])


def create_app(model: RecommenderModel, dataplane, settings: ServerSettings,
               rest_server: RESTServer) -> fastapi.FastAPI:
    """The FastAPI app: our model routes first, then KServe's routes."""
    # FastAPI's OpenTelemetry hooks cost a check of the global providers on
    # every request; this server exports Prometheus metrics instead.
    app = fastapi.FastAPI(title="tfx-recsys model server", docs_url=None, redoc_url=None,
                          openapi_url=None,
                          telemetry={"tracing": False, "metrics": False, "logs": False})
    routes = app.state.model_routes = ModelRoutes(model, dataplane, settings)
    app.add_route("/v1/models/{rest:path}", routes.v1, methods=_METHODS,
                  include_in_schema=False)
    app.add_route("/v2/models/{rest:path}", routes.v2, methods=_METHODS,
                  include_in_schema=False)
    _add_kserve_routes(app, dataplane, rest_server.model_repository_extension)
    rest_server._add_exception_handlers(app)
    app.add_exception_handler(RequestError, _request_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    return app


class ModelFastPath:
    """The ASGI app uvicorn runs: the model routes straight, the rest through
    FastAPI.

    A request to `/v1/models/...` or `/v2/models/...` with a method those
    routes take goes directly to `ModelRoutes`, which answers every outcome
    itself (4xx, 5xx and all); FastAPI's middleware and Starlette's router,
    which would find the same handler, cost a fifth of the server's own
    work on a predict request. Anything else is the FastAPI app's.
    """

    def __init__(self, app: fastapi.FastAPI):
        self.app = app
        routes = app.state.model_routes
        self._handlers = {"/v1/models/": routes.v1, "/v2/models/": routes.v2}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in _METHOD_SET \
                and not scope.get("root_path"):
            handler = self._handlers.get(scope["path"][:11])
            if handler is not None:
                scope["app"] = self.app
                scope["path_params"] = {"rest": scope["path"][11:]}
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _request_error_handler(request: Request, exc: RequestError) -> Response:
    return _error(exc.status, exc.message, exc.headers)


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        message = f"unknown path {_short(request.url.path)}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {_short(request.url.path)}"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error_handler(request: Request, exc: RequestValidationError):
    first = (exc.errors() or [{}])[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return _error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}")


# --------------------------------------------------------------------------
# The server


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGINT and SIGTERM without
    raising the signal again once stopped (uvicorn's own does, which ends
    the process by SIGTERM, or by KeyboardInterrupt out of the event loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _RESTServer(RESTServer):
    """KServe's REST server on our app and socket (KServe's own binds
    0.0.0.0 and builds its app from a module-level global)."""

    def __init__(self, dataplane, repository_extension, settings: ServerSettings):
        super().__init__(app="unused", data_plane=dataplane,
                         model_repository_extension=repository_extension,
                         http_port=settings.port, workers=1,
                         timeout_keep_alive=settings.timeout_keep_alive)
        self.config.host = settings.host
        self.config.backlog = settings.backlog
        self.config.access_log = settings.access_log
        if not settings.access_log:  # uvicorn logs a request when its logger has handlers
            access = logging.getLogger("uvicorn.access")
            access.handlers = []
            access.propagate = False
        self.config.loop = "uvloop"
        self.config.http = "httptools"
        # No startup or shutdown handlers to run; and a second Ctrl-C (a
        # wrapper forwarding the signal too) would leave the lifespan task
        # pending and log its cancellation as an error.
        self.config.lifespan = "off"
        self._server = _Uvicorn(self.config)

    def create_application(self):  # our app is built and set before serving
        pass


class Server:
    """A bound `recsys serve`: `serve()` runs until stopped (`stop()`, or
    SIGINT/SIGTERM when run on the main thread)."""

    def __init__(self, model: RecommenderModel, settings: ServerSettings):
        self.model = model
        self.settings = settings
        self._kserve = kserve.ModelServer(http_port=settings.port, enable_grpc=False,
                                          workers=1, enable_latency_logging=False)
        self._kserve.register_model(model)
        self._rest = _RESTServer(self._kserve.dataplane,
                                 self._kserve.model_repository_extension, settings)
        self.app = create_app(model, self._kserve.dataplane, settings, self._rest)
        self._rest.config.app = ModelFastPath(self.app)
        self._uvicorn = self._rest._server
        # Bind now, so that a taken port fails before any model is loaded and
        # port 0 gives a real port to print.
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((settings.host, settings.port))
            self.socket.listen(settings.backlog)
        except OSError:
            self.socket.close()
            raise

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def serve(self) -> None:
        """Serves on the bound socket until stopped; closes it after."""
        import uvloop

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._uvicorn.serve(sockets=[self.socket]))
        finally:
            self.socket.close()

    @property
    def started(self) -> bool:
        return self._uvicorn.started

    def stop(self) -> None:
        """Asks the server to finish (from any thread); `serve()` returns."""
        self._uvicorn.should_exit = True


def run_server(model_dir: str, model_name: str, settings: ServerSettings = ServerSettings(),
               batching: BatchingSettings = BatchingSettings(), max_rows: int = 1024,
               poll_seconds: float = 2.0, tf_threads: int = 1) -> None:
    """Serves `model_dir` until Ctrl-C (SIGINT) or SIGTERM. Raises OSError if
    it cannot bind.

    The server answers at once (liveness), while the newest version loads
    beside it (readiness and predictions: 503 until then, as TF Serving
    does), so that a large model loading is not taken for a dead server;
    one line with the URL and version is printed once it is loaded.
    """
    # A process started in the background by a non-interactive shell (nohup
    # ... &, some CI runners) inherits SIGINT ignored, and Python then keeps
    # it ignored: Ctrl-C would never stop the server. Stop on both signals.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    versions = VersionManager(model_dir, poll_seconds=poll_seconds, freeze_heap=True)
    model = RecommenderModel(model_name, model_dir, batching, max_rows, versions=versions)
    server = Server(model, settings)  # binds first: a taken port fails at once

    registered = []

    def load() -> None:
        configure_tensorflow(tf_threads)
        model.load()
        loaded = versions.current
        what = (f"version {loaded.version}" if loaded
                else f"no version yet (watching {model_dir})")
        print(f"serving {model_name!r} {what} at {server.url}/v1/models/{model_name} "
              f"(V2: {server.url}/v2/models/{model_name}; Ctrl-C to stop)", flush=True)
        # `recsys recommend` on this model dir now asks this server.
        registered.append(registry.register(server.url, model_name, model_dir))

    threading.Thread(target=load, daemon=True, name="first-load").start()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        for path in registered:
            registry.unregister(path)
        server.socket.close()
        model.stop()
