"""Model versions as TF Serving handles them: the newest one that loads is served.

A model directory (TF Serving's "base path") holds one integer-named
directory per version. `VersionManager` keeps the newest version that loads
and answers loaded, and keeps it until a newer one does:

- a version directory is a candidate once its `saved_model.pb` exists; it is
  loaded and each of its signatures called once on a one-row request before
  it replaces the served version, so a version that fails either way (a
  half-copied directory, a broken file) never replaces a good one;
- a failed load is retried with exponential back-off (1 s, 2 s, 4 s, ... up
  to a minute), because the cause may be a copy still in progress; each
  failure is kept, with its message and the next try, for the status call;
- older versions than the served one are never loaded (a rollback publishes
  the old model again under a new, higher number);
- a request takes the served version once and finishes on it, whatever
  swaps meanwhile.

TensorFlow (and ScaNN, whose custom op the pushed model uses) is imported
only when a version is loaded.
"""

import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

logger = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
# Version numbers are int64 in TF Serving; a longer name is not a version.
MAX_VERSION_DIGITS = 18


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of a loaded version: the function and its tensor specs."""

    function: Any                # a ConcreteFunction taking keyword tensors
    inputs: Dict[str, Any]       # input name -> tf.TensorSpec
    outputs: Dict[str, Any]      # output name -> tf.TensorSpec


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedVersion:
    """One loaded version. Immutable, so requests and batches share it freely."""

    version: int
    path: str
    signatures: Dict[str, Signature]
    # The loaded object owns the variables and resources the signatures use:
    # holding it keeps them alive as long as any request holds the version.
    model: Any = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class LoadFailure:
    """The last failed load of a version, and when it is tried again."""

    version: int
    attempts: int
    error: str
    retry_at: float              # on the manager's clock


def import_tensorflow():
    """TensorFlow with the ScaNN op registered, imported on first use.

    The model was trained with Keras 2 (TFRS); the variable only counts if it
    is set before TensorFlow's first import, hence the guard.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import scann  # noqa: F401  registers the ScaNN op before a model loads
    import tensorflow as tf

    return tf


def _warm_up_inputs(spec) -> Any:
    """A one-row tensor for `spec`: "" for strings, zeros otherwise."""
    tf = import_tensorflow()
    shape = [1 if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
        return tf.fill(shape, "")
    return tf.zeros(shape, dtype=spec.dtype)


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads one version directory and calls each signature once on one row.

    Raises if it is not a SavedModel that loads, has no signatures, or a
    signature fails on a request of the shapes it declares. Input names and
    dtypes are read from the model, so the server follows the serving
    contract wherever it goes.
    """
    tf = import_tensorflow()
    model = tf.saved_model.load(path)
    signatures = {}
    for name, function in model.signatures.items():
        _, inputs = function.structured_input_signature
        outputs = function.structured_outputs
        if not isinstance(inputs, dict) or not isinstance(outputs, dict):
            raise ValueError(f"signature {name!r} does not take and return named tensors")
        function(**{n: _warm_up_inputs(s) for n, s in inputs.items()})
        signatures[name] = Signature(function=function, inputs=dict(inputs),
                                     outputs=dict(outputs))
    if not signatures:
        raise ValueError("the SavedModel has no signatures")
    return LoadedVersion(version=version, path=path, signatures=signatures, model=model)


def candidate_versions(model_dir: str) -> List[int]:
    """Versions under `model_dir` holding a saved_model.pb, newest first."""
    try:
        names = os.listdir(model_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((int(name) for name in names
                   if name.isdigit() and len(name) <= MAX_VERSION_DIGITS
                   and os.path.isfile(os.path.join(model_dir, name, SAVED_MODEL_FILE))),
                  reverse=True)


def configure_tensorflow(threads: int) -> None:
    """TensorFlow's intra- and inter-op threads, before anything runs.

    One thread per signature call is the cheapest on few cores (the served
    model's ops are small: spreading them over threads costs more than it
    saves); the server runs calls side by side instead (batch threads).
    0 keeps TensorFlow's own choice. Has no effect, with a warning, once
    TensorFlow has run something.
    """
    if threads < 0:
        raise ValueError(f"TensorFlow threads must be >= 0, got {threads}")
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:
        logger.warning("TensorFlow threads left as they are: %s", e)


def first_line(text: str, limit: int = 300) -> str:
    return (text.strip().splitlines() or [""])[0][:limit]


class VersionManager:
    """Keeps the newest version of one model directory that loads.

    `start()` loads what is there, then a daemon thread polls every
    `poll_seconds`. `loader` is `load_version` unless a test says otherwise.

    With `freeze_heap`, the objects alive once a version is served (the
    model, TensorFlow's modules: millions of them) are moved to the garbage
    collector's permanent generation (`gc.freeze`), at the start and at the
    first poll after each swap (by then requests on the old version are
    done). Otherwise every full collection walks them all: about half a
    second during which no request is answered.
    """

    def __init__(self, model_dir: str, poll_seconds: float = 2.0,
                 retry_initial_seconds: float = 1.0, retry_max_seconds: float = 60.0,
                 loader: Callable[[str, int], LoadedVersion] = load_version,
                 clock: Callable[[], float] = time.monotonic, freeze_heap: bool = False):
        self.model_dir = model_dir
        self.poll_seconds = poll_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self._loader = loader
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Optional[LoadedVersion] = None
        self._failures: Dict[int, LoadFailure] = {}
        self._listeners: List[Callable[[LoadedVersion], None]] = []
        self._freeze_heap = freeze_heap
        self._heap_settled = True
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def current(self) -> Optional[LoadedVersion]:
        """The version serving now, or None before one loads."""
        with self._lock:
            return self._current

    def failures(self) -> List[LoadFailure]:
        """Failed versions newer than the served one, newest first."""
        with self._lock:
            return sorted(self._failures.values(), key=lambda f: -f.version)

    def on_swap(self, listener: Callable[[LoadedVersion], None]) -> None:
        """Calls `listener(new_version)` after each swap (in the polling thread)."""
        self._listeners.append(listener)

    def poll(self) -> bool:
        """Loads the newest candidate newer than the served version.

        Candidates are tried newest first, each when its retry is due, so a
        broken push does not hide an older good one. Returns whether a
        version was swapped in.
        """
        current = self.current
        served = current.version if current is not None else -1
        candidates = [v for v in candidate_versions(self.model_dir) if v > served]
        with self._lock:  # forget failures of versions gone or now older
            for version in list(self._failures):
                if version not in candidates:
                    del self._failures[version]
        for version in candidates:
            failure = self._failures.get(version)
            if failure is not None and self._clock() < failure.retry_at:
                continue
            if self._try_load(version, failure):
                return True
        return False

    def _try_load(self, version: int, failure: Optional[LoadFailure]) -> bool:
        path = os.path.join(self.model_dir, str(version))
        try:
            loaded = self._loader(path, version)
        except Exception as e:  # any failure: keep serving what we have
            attempts = (failure.attempts if failure else 0) + 1
            delay = min(self.retry_max_seconds,
                        self.retry_initial_seconds * 2 ** (attempts - 1))
            error = f"{type(e).__name__}: {first_line(str(e))}"
            with self._lock:
                self._failures[version] = LoadFailure(version, attempts, error,
                                                      self._clock() + delay)
            log = logger.warning if attempts == 1 else logger.info
            log("version %d of %s failed to load (attempt %d, next in %.0f s): %s",
                version, self.model_dir, attempts, delay, error)
            logger.debug("load failure of %s", path, exc_info=True)
            return False
        with self._lock:
            previous, self._current = self._current, loaded
            for older in [v for v in self._failures if v <= version]:
                del self._failures[older]
            self._heap_settled = False
        logger.info("serving version %d from %s%s", version, path,
                    f" (was {previous.version})" if previous else "")
        del previous
        for listener in self._listeners:
            listener(loaded)
        return True

    def start(self) -> None:
        """Loads what is there now, then watches in the background."""
        if self._thread is not None:
            return
        self.poll()
        self.settle_heap()
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"VersionManager({self.model_dir})")
        self._thread.start()

    def settle_heap(self) -> None:
        """gc.freeze() what is alive, if asked to and a swap happened since."""
        if not self._freeze_heap or self._heap_settled:
            return
        self._heap_settled = True
        started = time.monotonic()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        logger.info("heap frozen after the swap (%.2f s)", time.monotonic() - started)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                if not self.poll():
                    self.settle_heap()
            except Exception:  # the watcher must outlive any one bad scan
                logger.exception("polling %s failed", self.model_dir)

    def stop(self) -> None:
        """Stops watching; the served version stays usable. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
