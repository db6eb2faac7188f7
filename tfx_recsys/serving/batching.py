"""Micro-batching: concurrent requests to one signature answered by one call.

A signature call on 64 users costs far less than 64 calls on one (the
per-call work of TensorFlow and the index is shared), so under load the
server gathers requests and calls each signature once per batch:

- requests queue per (loaded version, signature): a batch never mixes
  versions or signatures;
- a batch starts when a worker thread is free and either `timeout_ms` has
  passed since its oldest request arrived or it holds `max_batch_size`
  rows. With the default timeout of 0 nothing waits: requests that arrive
  while the previous batch runs form the next one, so one client alone
  pays no delay and many clients get large batches;
- the batch's inputs are the requests' rows stacked in arrival order; an
  input of shape [batch, None] is padded to the widest request with "" for
  strings (the serving contract's padding, which the model ignores) or 0;
  the outputs are split back by rows, so each request gets exactly its own
  rows. A batch that the model rejects is re-run one request at a time, so
  one bad request fails alone;
- padding is bounded: a request whose lists are much wider than the others'
  does not join a batch that padding would blow past `max_padded_cells`.

The signature runs in `threads` worker threads (default 1: TensorFlow
already spreads one call over the cores), never on the event loop (see
docs/serving.md for why, measured: on a busy machine a call on the loop's
thread waits much longer for a core), and is called directly, through its
function's flat call (`_direct_call`), not its public keyword call.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
from prometheus_client import Histogram

from tfx_recsys.serving.protocol import Batch, RequestError
from tfx_recsys.serving.versions import LoadedVersion, first_line, import_tensorflow

logger = logging.getLogger(__name__)

BATCH_ROWS = Histogram("recsys_batch_rows", "rows (users) per signature call",
                       ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
BATCH_REQUESTS = Histogram("recsys_batch_requests", "requests gathered per signature call",
                           ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
QUEUE_SECONDS = Histogram("recsys_batch_queue_seconds",
                          "time a request waits for its batch to start", ["model_name"],
                          buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1))


@dataclasses.dataclass(frozen=True)
class BatchingSettings:
    max_batch_size: int = 64        # rows per signature call (a larger request runs alone)
    timeout_ms: float = 0.0         # how long a batch may wait to fill
    threads: int = 1                # signature calls running at once
    max_padded_cells: int = 1 << 16  # rows x widest list a batch may pad to

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {self.timeout_ms}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclasses.dataclass(eq=False)
class _Pending:
    batch: Batch
    width: int                      # widest list of any input (1 for scalars)
    arrived: float
    future: asyncio.Future


def _width(batch: Batch) -> int:
    return max((int(np.prod(a.shape[1:])) for a in batch.inputs.values() if a.ndim > 1),
               default=1)


def stack(batches: List[Batch], specs: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The inputs of `batches` stacked row-wise, padded where lists differ."""
    stacked = {}
    for name in specs:
        arrays = [b.inputs[name] for b in batches]
        if len(arrays) == 1:
            stacked[name] = arrays[0]
            continue
        if arrays[0].ndim > 1:
            target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
            pad = b"" if arrays[0].dtype == object else 0
            arrays = [a if a.shape[1:] == target else _padded(a, target, pad)
                      for a in arrays]
        stacked[name] = np.concatenate(arrays)
    return stacked


def _padded(array: np.ndarray, target: Tuple[int, ...], pad) -> np.ndarray:
    out = np.full((array.shape[0],) + target, pad, dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def call_signature(version: LoadedVersion, signature_name: str,
                   inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs one signature on NumPy inputs; the model's own complaints about
    them (InvalidArgumentError) become 400s."""
    tf = import_tensorflow()
    signature = version.signatures[signature_name]
    tensors = {name: tf.constant(inputs[name], dtype=spec.dtype)
               for name, spec in signature.inputs.items()}
    try:
        outputs = _direct_call(signature, tensors)
    except tf.errors.InvalidArgumentError as e:
        raise RequestError(400, "the model rejected the inputs: "
                                f"{first_line(e.message)}") from None
    return {name: tensor.numpy() for name, tensor in outputs.items()}


# Per signature function: (its inputs in its flat order, its captured
# tensors), or None where the direct call is not used. Weak keys: a version
# that is no longer served takes its entries along.
_DIRECT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_DIRECT_LOCK = threading.Lock()


def _direct_call(signature, tensors: Dict[str, Any]) -> Dict[str, Any]:
    """The signature's function called on `tensors` (of its specs' dtypes
    already), the way its own call ends up calling it, minus the Python
    work that call repeats on every request: binding the keyword arguments
    to its input specs and checking them, and mapping each of the model's
    captured variables (152 in the tiny test model) through the
    distribution-strategy wrapper of a loaded SavedModel, which the server
    never runs under. On the tiny test model that work is 0.2-0.4 ms of a
    1.3-1.5 ms call.

    It uses TensorFlow's `ConcreteFunction._call_flat` (not public API): the
    first call of each function also runs the public call on the same
    inputs and compares; if the direct call fails or answers differently
    (another TensorFlow), that function keeps the public call.
    """
    function = signature.function
    try:
        plan = _DIRECT.get(function, _UNKNOWN)
    except TypeError:  # a function that cannot be weakly referenced
        plan = None
    if plan is _UNKNOWN:
        with _DIRECT_LOCK:
            plan = _DIRECT.get(function, _UNKNOWN)
            if plan is _UNKNOWN:
                plan, outputs = _direct_plan(signature, tensors)
                _DIRECT[function] = plan
                return outputs
    if plan is None:
        return function(**tensors)
    names, captured = plan
    return _CALL_FLAT(function, [tensors[name] for name in names], captured)


_UNKNOWN = object()
_CALL_FLAT: Any = None


def _direct_plan(signature, tensors: Dict[str, Any]):
    """((input names in flat order, captured tensors) if the direct call
    answers as the public one does on `tensors`, else None; the outputs)."""
    global _CALL_FLAT
    function = signature.function
    expected = function(**tensors)
    try:
        from tensorflow.python.eager.polymorphic_function.concrete_function import (
            ConcreteFunction)

        _CALL_FLAT = ConcreteFunction._call_flat
        if any(callable(c) for c in function._captured_inputs):
            return None, expected  # captures resolved per call: TensorFlow's business
        captured = function.captured_inputs
        placeholders = function.inputs[:len(function.inputs) - len(captured)]
        names = [p.name.split(":")[0] for p in placeholders]
        if sorted(names) != sorted(signature.inputs):
            return None, expected
        got = _CALL_FLAT(function, [tensors[name] for name in names], captured)
        same = (isinstance(got, dict) and set(got) == set(expected)
                and all(_same(got[k].numpy(), expected[k].numpy()) for k in expected))
    except Exception as e:  # another TensorFlow: keep the public call
        logger.info("signature called through its public API (%s)", first_line(str(e)))
        return None, expected
    if not same:
        logger.info("signature called through its public API (the direct call answers "
                    "differently)")
        return None, expected
    return (names, captured), expected


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


class MicroBatcher:
    """Gathers concurrent requests into signature calls; see the module doc.

    `await run(version, batch)` returns {output name: array} holding exactly
    the batch's rows. Used from one event loop.
    """

    def __init__(self, settings: BatchingSettings = BatchingSettings(),
                 model_name: str = ""):
        self.settings = settings
        self._queue_seconds = QUEUE_SECONDS.labels(model_name=model_name)
        self._batch_requests = BATCH_REQUESTS.labels(model_name=model_name)
        self._batch_rows = BATCH_ROWS.labels(model_name=model_name)
        self._queues: Dict[Tuple[LoadedVersion, str], Deque[_Pending]] = {}
        self._running = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="recsys-batch")

    async def run(self, version: LoadedVersion, batch: Batch) -> Dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        pending = _Pending(batch, _width(batch), loop.time(), loop.create_future())
        key = (version, batch.signature_name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
        queue.append(pending)
        self._dispatch()
        return await pending.future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- on the event loop

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeout_ms / 1000
        while self._running < self.settings.threads and self._queues:
            now, ready, next_due = loop.time(), None, None
            queues = self._queues.items()
            if len(self._queues) > 1:
                queues = sorted(queues, key=lambda kv: kv[1][0].arrived)
            for key, queue in queues:
                due = queue[0].arrived + timeout
                if now >= due or sum(p.batch.rows for p in queue) >= \
                        self.settings.max_batch_size:
                    ready = key
                    break
                next_due = due if next_due is None else min(next_due, due)
            if ready is None:
                if self._timer is None or self._timer.when() > next_due:
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer = loop.call_at(next_due, self._on_timer)
                return
            queue = self._queues[ready]
            taken = self._take(queue)
            if not queue:
                del self._queues[ready]
            self._start(loop, ready[0], ready[1], taken)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self, queue: Deque[_Pending]) -> List[_Pending]:
        """The oldest requests of a queue that fit one batch (at least one)."""
        taken = [queue.popleft()]
        rows, width = taken[0].batch.rows, taken[0].width
        limit = max(self.settings.max_padded_cells, rows * width)
        while queue:
            nxt = queue[0]
            new_rows, new_width = rows + nxt.batch.rows, max(width, nxt.width)
            if new_rows > self.settings.max_batch_size or new_rows * new_width > limit:
                break
            taken.append(queue.popleft())
            rows, width = new_rows, new_width
        return taken

    def _observe(self, taken: List[_Pending], now: float) -> None:
        for p in taken:
            self._queue_seconds.observe(now - p.arrived)
        self._batch_requests.observe(len(taken))
        self._batch_rows.observe(sum(p.batch.rows for p in taken))

    def _start(self, loop, version: LoadedVersion, signature_name: str,
               taken: List[_Pending]) -> None:
        self._running += 1
        self._observe(taken, loop.time())
        try:
            work = self._executor.submit(self._run_batch, version, signature_name,
                                         [p.batch for p in taken])
        except RuntimeError as e:  # the executor is shut down
            self._running -= 1
            self._resolve(taken, [e] * len(taken))
            return
        # Back to the loop straight from the worker, one hop (no asyncio
        # future wrapping the concurrent one in between).
        work.add_done_callback(lambda done: self._back_to_loop(loop, taken, done))

    def _back_to_loop(self, loop, taken: List[_Pending],
                      done: concurrent.futures.Future) -> None:
        try:
            loop.call_soon_threadsafe(self._finish, taken, done)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass

    def _finish(self, taken: List[_Pending], done: concurrent.futures.Future) -> None:
        self._running -= 1
        try:
            results = done.result()
        except BaseException as e:  # cancelled (shut down) or the executor failed
            results = [e] * len(taken)
        self._resolve(taken, results)
        if self._queues:
            self._dispatch()

    @staticmethod
    def _resolve(taken: List[_Pending], results: List[Any]) -> None:
        for pending, result in zip(taken, results):
            if pending.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    # -- in a worker thread

    @staticmethod
    def _run_batch(version: LoadedVersion, signature_name: str,
                   batches: List[Batch]) -> List[Any]:
        """Each batch's outputs (or exception), from one call if it succeeds."""
        specs = version.signatures[signature_name].inputs
        try:
            outputs = call_signature(version, signature_name, stack(batches, specs))
        except Exception as e:
            if len(batches) == 1:
                return [e]
            started = time.monotonic()
            alone = [MicroBatcher._run_batch(version, signature_name, [b])[0]
                     for b in batches]
            logger.info("a batch of %d requests failed (%s); ran them one by one in "
                        "%.3f s", len(batches), first_line(str(e)),
                        time.monotonic() - started)
            return alone
        results, start = [], 0
        for b in batches:
            end = start + b.rows
            results.append({name: array[start:end] for name, array in outputs.items()})
            start = end
        return results
