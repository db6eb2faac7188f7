"""Load bench: the model server under concurrent keep-alive clients.

`make bench-load` starts `recsys serve` on 127.0.0.1 in a process of its
own, on the newest pushed model of a run (the ScaNN model, then its
exact-retrieval twin `retrieval_bruteforce`), and drives it from this
process with 1, 10, 50 and 200 concurrent clients, each holding one
keep-alive connection and sending one request at a time:

- V1 (TF Serving's `POST /v1/models/<name>:predict`, `{"instances": [user]}`)
  and V2 (the Open Inference Protocol, `POST /v2/models/<name>/infer`),
  one user per request, users taken in turn from MovieLens-100K's
  users.csv (all 943, so the server sees different users at once);
- each load is bounded twice: a number of requests per client and a number
  of seconds, whichever ends first;
- measured: requests/s (answered 200 over the load's wall time), p50 and p99
  latency of those, and errors: any other status, a connection reset or
  closed early, a timeout (each listed by kind).

With `--before FILE` it also measures the server that `recsys serve` used
to be (the hand-written `http.server` module, given as a file, e.g. one
copied from an older commit) on the same model in the same run: V1 only, it
has no V2. Its rows are kept in bench/results/load.json and shown beside
the new server's in later runs, marked with the run they come from.

References for one client: the signature called in-process (the model
loaded in a process of its own that imports only TensorFlow and ScaNN, one
user per call) and the HTTP round trip of an empty route (`GET
/v2/health/live`) on the same server. The target is that one client's p50
stays within 1.5x of their sum. The three are measured interleaved, in
short blocks in turn (signature, empty route, each server and protocol with
one client), so that the ratio compares latencies taken under the same
conditions: on a shared machine the signature alone moves by 2-4x within a
minute. The rounds also time the signature called the way the server calls
it (its function's flat call, `batching._direct_call`, which skips the
public call's Python work): reported beside the verdict, not part of it.

All traffic goes to 127.0.0.1. Output: a table on stdout,
bench/results/load.md and load.json.
"""

import argparse
import asyncio
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_ROOT = os.path.join(REPO, "runs", "default")
MODEL_NAME = "retrieval"
HOST = "127.0.0.1"  # never anything else: this bench talks to this machine only

CLIENTS = (1, 10, 50, 200)
# Requests per client for each load: every load ends after this many
# requests per client or MAX_SECONDS, whichever comes first.
REQUESTS_PER_CLIENT = {1: 400, 10: 150, 50: 60, 200: 25}
MAX_SECONDS = 30.0
WARMUP_REQUESTS = 200
REQUEST_TIMEOUT_S = 30.0
SERVER_START_TIMEOUT_S = 180.0
SERVER_TF_THREADS = 1      # recsys serve's default --tf-threads

# The verdict.
ERRORS_AT = 200            # clients: no error at all
SPEEDUP_AT = 50            # clients: at least SPEEDUP x the old server's requests/s ...
SPEEDUP = 5.0
P99_LIMIT_MS = 100.0       # ... with p99 at most this
ONE_CLIENT_FACTOR = 1.5    # one client's p50 <= this x (signature + empty round trip)
INTERLEAVED_ROUNDS = 12    # the one-client comparison: rounds of ...
INTERLEAVED_BLOCK = 40     # ... this many calls of each, in turn


# --------------------------------------------------------------------------
# Requests


def load_users(path: Optional[str]) -> List[Dict[str, object]]:
    """MovieLens-100K's users (users.csv), or synthetic ones if it is absent."""
    if path and os.path.exists(path):
        with open(path, newline="") as f:
            return [{"user_id": row["user_id"], "age": float(row["age"]),
                     "gender": row["gender"], "occupation": row["occupation"],
                     "zip_code": row["zip_code"]} for row in csv.DictReader(f)]
    occupations = ("technician", "other", "writer", "executive", "student")
    return [{"user_id": str(i), "age": float(18 + i % 50), "gender": "MF"[i % 2],
             "occupation": occupations[i % len(occupations)],
             "zip_code": f"{10000 + 37 * i:05d}"} for i in range(1, 944)]


def v1_body(user: Dict[str, object]) -> bytes:
    return json.dumps({"instances": [user]}).encode()


def v2_body(user: Dict[str, object]) -> bytes:
    inputs = [{"name": name, "shape": [1],
               "datatype": "FP32" if isinstance(value, float) else "BYTES",
               "data": [value]} for name, value in user.items()]
    return json.dumps({"inputs": inputs}).encode()


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


PROTOCOLS = {
    "v1": (f"/v1/models/{MODEL_NAME}:predict", v1_body),
    "v2": (f"/v2/models/{MODEL_NAME}/infer", v2_body),
}


# --------------------------------------------------------------------------
# The load generator: asyncio clients on raw keep-alive connections


class _Closed(Exception):
    """The server closed the connection before a whole response."""


async def _read_response(reader: asyncio.StreamReader) -> Tuple[int, bool, bytes]:
    """(status, whether the connection stays open, body) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    keep_alive = (version == "HTTP/1.1"
                  and headers.get("connection", "").lower() != "close")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # delimited by the end of the connection
        body = await reader.read()
        keep_alive = False
    return int(status), keep_alive, body


async def _client(port: int, requests: Sequence[bytes], offset: int, count: int,
                  deadline: float, latencies: List[float], errors: Dict[str, int],
                  check) -> None:
    reader = writer = None
    for i in range(count):
        if time.monotonic() >= deadline:
            break
        request = requests[(offset + i) % len(requests)]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(request)
                status, keep_alive, body = await _read_response(reader)
        except TimeoutError:
            kind = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            kind = "connection reset"
        except (asyncio.IncompleteReadError, _Closed, ConnectionError, OSError):
            kind = "connection closed early"
        else:
            elapsed = time.perf_counter() - started
            # Every 20th answer is parsed whole; the others only looked at,
            # so that the client takes little of the CPU it shares with the
            # server.
            if status == 200 and check(body, full=i % 20 == 0):
                latencies.append(elapsed)
            else:
                kind = f"status {status}" if status != 200 else "malformed answer"
                errors[kind] = errors.get(kind, 0) + 1
            if not keep_alive:
                writer.close()
                reader = writer = None
            continue
        errors[kind] = errors.get(kind, 0) + 1
        if writer is not None:
            writer.close()
        reader = writer = None
    if writer is not None:
        writer.close()


def _checker(protocol: str):
    """A check that a 200 answer holds one list of item ids: a glance, or
    (`full`) the whole answer parsed."""
    marker = b'"item_ids"'

    def check(body: bytes, full: bool = True) -> bool:
        if not full:
            return marker in body
        try:
            answer = json.loads(body)
            if protocol == "v1":
                return len(answer["predictions"][0]["item_ids"]) > 0
            outputs = {o["name"]: o for o in answer["outputs"]}
            return outputs["item_ids"]["shape"][0] == 1
        except (ValueError, KeyError, IndexError, TypeError):
            return False
    return check


async def _load(port: int, requests: Sequence[bytes], clients: int, per_client: int,
                seconds: float, check) -> Dict[str, object]:
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    step = max(1, len(requests) // clients)
    await asyncio.gather(*(
        _client(port, requests, c * step, per_client, deadline, latencies, errors, check)
        for c in range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": _ms(_quantile(latencies, 0.50)),
        "p99_ms": _ms(_quantile(latencies, 0.99)),
    }


def _quantile(sorted_values: List[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 3)


def run_load(port: int, requests: Sequence[bytes], clients: int, per_client: int,
             seconds: float, check) -> Dict[str, object]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_load(port, requests, clients, per_client, seconds, check))


def empty_round_trip_ms(port: int, repeats: int = 300) -> float:
    """p50 of `GET /v2/health/live` on one keep-alive connection."""
    def ok(body, full=True):
        return b"live" in body
    result = run_load(port, [http_request("GET", "/v2/health/live")], 1, repeats,
                      MAX_SECONDS, ok)
    return result["p50_ms"]


# --------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


OLD_SERVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("old_http_server", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.run_server(sys.argv[2], sys.argv[3], host=sys.argv[4], port=int(sys.argv[5]))
"""


def server_command(kind: str, model_dir: str, port: int, before: Optional[str],
                   extra: Sequence[str]) -> List[str]:
    if kind == "before":
        return [sys.executable, "-c", OLD_SERVER, before, model_dir, MODEL_NAME, HOST,
                str(port)]
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    return [recsys, "serve", "--model-dir", model_dir, "--model-name", MODEL_NAME,
            "--host", HOST, "--port", str(port), *extra]


class Server:
    """A server process on a free port of 127.0.0.1, ready once started."""

    def __init__(self, command_of_port, log_path: str, kind: str = "kserve"):
        self.kind = kind
        self.port = free_port()
        self.log = open(log_path, "w")
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(command_of_port(self.port), stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def wait_ready(self) -> None:
        status = f"/v1/models/{MODEL_NAME}".encode()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; "
                                   f"see {self.log.name}")
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    s.sendall(b"GET " + status + b" HTTP/1.0\r\nHost: x\r\n\r\n")
                    if s.recv(64).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not become ready; see {self.log.name}")

    def peak_rss_mib(self) -> Optional[float]:
        """The server process's peak resident memory (VmHWM), in MiB."""
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --------------------------------------------------------------------------
# The in-process reference


SIGNATURE_PROBE = """
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import scann  # noqa: F401
import tensorflow as tf
threads = int(sys.argv[4])
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
users = json.loads(sys.argv[2])
specs = serve.structured_input_signature[1]
def calls(count, offset=0):
    times = []
    for i in range(offset, offset + count):
        user = users[i % len(users)]
        started = time.perf_counter()
        out = serve(**{n: tf.constant([user[n]], s.dtype) for n, s in specs.items()})
        out["item_ids"].numpy()
        times.append(time.perf_counter() - started)
    return times
def direct_calls(count, offset=0):
    # The same call the way the server makes it (batching._direct_call):
    # the function's flat call, without the public call's Python work.
    from tensorflow.python.eager.polymorphic_function.concrete_function import (
        ConcreteFunction)
    captured = serve.captured_inputs
    names = [p.name.split(":")[0] for p in serve.inputs[:len(serve.inputs) - len(captured)]]
    times = []
    for i in range(offset, offset + count):
        user = users[i % len(users)]
        started = time.perf_counter()
        tensors = {n: tf.constant([user[n]], s.dtype) for n, s in specs.items()}
        out = ConcreteFunction._call_flat(serve, [tensors[n] for n in names], captured)
        out["item_ids"].numpy()
        times.append(time.perf_counter() - started)
    return times
if sys.argv[3] == "blocks":  # a block of calls per line read: its latencies
    calls(50)
    direct_calls(10)
    print("ready", flush=True)
    for line in sys.stdin:
        count, offset, *how = line.split()
        run = direct_calls if how == ["direct"] else calls
        print(json.dumps(run(int(count), int(offset))), flush=True)
    raise SystemExit
times = sorted(calls(int(sys.argv[3]))[20:])
print(json.dumps({"p50_ms": 1000 * times[len(times) // 2]}))
"""


class SignatureProbe:
    """The signature in a process of its own (the server's TensorFlow
    threads), called in blocks on demand, for the interleaved comparison."""

    def __init__(self, version_dir: str, users, threads: int = SERVER_TF_THREADS):
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SIGNATURE_PROBE, version_dir, json.dumps(users[:100]),
             "blocks", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the signature probe did not start")

    def block(self, count: int, offset: int, direct: bool = False) -> List[float]:
        """Latencies of `count` calls; `direct`: called the way the server
        calls the signature (its function's flat call), not the public way."""
        self.process.stdin.write(f"{count} {offset}{' direct' if direct else ''}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def one_client_interleaved(probe: SignatureProbe, empty_port: int, loads,
                           rounds: int = INTERLEAVED_ROUNDS,
                           block: int = INTERLEAVED_BLOCK) -> Dict[str, object]:
    """p50 of the signature in-process, of the empty route and of one
    client on each (label, port, protocol, requests, check) of `loads`,
    measured in blocks taken in turn, so that all see the same conditions."""
    import uvloop

    latencies: Dict[str, List[float]] = {"signature": [], "signature_direct": [], "empty": []}
    empty = [http_request("GET", "/v2/health/live")]

    def client(port, requests, offset, check, into):
        errors: Dict[str, int] = {}
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_client(port, requests, offset, block, time.monotonic() + MAX_SECONDS,
                               into, errors, check))
        return sum(errors.values())

    errors = 0
    for r in range(rounds):
        latencies["signature"] += probe.block(block, r * block)
        latencies["signature_direct"] += probe.block(block, r * block, direct=True)
        errors += client(empty_port, empty, 0, lambda body, full=True: b"live" in body,
                         latencies["empty"])
        for label, port, protocol, requests, check in loads:
            errors += client(port, requests, r * block, check,
                             latencies.setdefault(f"{label} {protocol}", []))
    result = {"rounds": rounds, "block": block, "errors": errors,
              "signature_ms_p50": _ms(_quantile(sorted(latencies.pop("signature")), 0.5)),
              "signature_direct_ms_p50": _ms(_quantile(
                  sorted(latencies.pop("signature_direct")), 0.5)),
              "empty_round_trip_ms_p50": _ms(_quantile(sorted(latencies.pop("empty")), 0.5)),
              "one_client_ms_p50": {k: _ms(_quantile(sorted(v), 0.5))
                                    for k, v in latencies.items()}}
    print(f"one client, interleaved: signature {result['signature_ms_p50']:.2f} ms "
          f"(direct {result['signature_direct_ms_p50']:.2f} ms), empty "
          f"route {result['empty_round_trip_ms_p50']:.2f} ms, "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in result["one_client_ms_p50"].items()),
          flush=True)
    return result


def measure_reference(version_dir: str, users) -> Dict[str, float]:
    """The signature in-process with the server's TensorFlow threads (1) and
    with TensorFlow's default, for comparison."""
    reference = {
        "signature_ms_p50": signature_p50_ms(version_dir, users, SERVER_TF_THREADS),
        "signature_default_threads_ms_p50": signature_p50_ms(version_dir, users, 0)}
    print(f"signature in-process: {reference['signature_ms_p50']:.2f} ms p50 "
          f"({reference['signature_default_threads_ms_p50']:.2f} ms with TensorFlow's "
          "default threads)", flush=True)
    return reference


def signature_p50_ms(version_dir: str, users: List[Dict[str, object]], threads: int,
                     calls: int = 500) -> float:
    """p50 of one serving_default call on one user, in a fresh process with
    `threads` TensorFlow threads (0: TensorFlow's default)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SIGNATURE_PROBE, version_dir,
                           json.dumps(users[:100]), str(calls), str(threads)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["p50_ms"]


# --------------------------------------------------------------------------
# Driving one server through the loads


def measure_servers(plan, users, clients: Sequence[int], args, log_dir: str,
                    reference: Dict[str, object],
                    reference_dir: Optional[str]) -> List[Dict[str, object]]:
    """Starts every server of `plan` ((label, kind, model dir, protocols)) at
    once, then runs each load on each (server, protocol) in turn, one client
    count after the other: what else runs on the machine meanwhile weighs on
    all of them alike, not on whichever server came last. Fills in
    `reference` (the one-client references; the signature's only with a
    `reference_dir`)."""
    extra = args.server_arg or []
    servers, results = [], []
    try:
        for label, kind, model_dir, protocols in plan:
            servers.append(Server(
                lambda port, kind=kind, model_dir=model_dir:
                server_command(kind, model_dir, port, args.before, extra),
                os.path.join(log_dir, f"{label.split()[0]}-{len(servers)}.log"), kind))
            results.append({"server": label, "kind": kind, "model_dir": model_dir,
                            "rows": []})
        for server in servers:
            server.wait_ready()
        loads = []
        for (label, _, _, protocols), server, result in zip(plan, servers, results):
            for protocol in protocols:
                path, body = PROTOCOLS[protocol]
                requests = [http_request("POST", path, body(u)) for u in users]
                check = _checker(protocol)
                run_load(server.port, requests, min(10, max(clients)),
                         WARMUP_REQUESTS // 10, MAX_SECONDS, check)
                loads.append((server, result, label, protocol, requests, check))
        # The one-client references, taken now, in the conditions of the
        # loads that follow (servers started and idle): the signature in a
        # process of its own, and the empty route's round trip; then the
        # three interleaved (the verdict's comparison).
        if reference_dir is not None:
            reference.update(measure_reference(reference_dir, users))
        first_kserve = next((s for (_, kind, _, _), s in zip(plan, servers)
                             if kind == "kserve"), None)
        if first_kserve is not None:
            reference["empty_round_trip_ms_p50"] = empty_round_trip_ms(first_kserve.port)
        if reference_dir is not None and first_kserve is not None:
            probe = SignatureProbe(reference_dir, users)
            try:
                reference["interleaved"] = one_client_interleaved(
                    probe, first_kserve.port,
                    [(label, server.port, protocol, requests, check)
                     for server, _, label, protocol, requests, check in loads
                     if server.kind == "kserve"])
            finally:
                probe.close()
        for n in clients:
            for server, result, label, protocol, requests, check in loads:
                row = run_load(server.port, requests, n, REQUESTS_PER_CLIENT.get(n, 20),
                               args.seconds, check)
                row.update(server=label, protocol=protocol)
                result["rows"].append(row)
                print(_row_line(row), flush=True)
        for server, result in zip(servers, results):
            result["peak_rss_mib"] = server.peak_rss_mib()
    finally:
        for server in servers:
            server.stop()
    for result in results:  # rows in table order: by protocol, then clients
        result["rows"].sort(key=lambda r: (r["protocol"], r["clients"]))
    return results


def _row_line(row: Dict[str, object]) -> str:
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(row["error_kinds"].items()))
    return (f"  {row['server']:<24} {row['protocol']}  {row['clients']:>3} clients  "
            f"{row['requests_per_s']:>8.1f} req/s  p50 {_fmt(row['p50_ms'])} ms  "
            f"p99 {_fmt(row['p99_ms'])} ms  errors {row['errors']}"
            + (f" ({kinds})" if kinds else ""))


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


# --------------------------------------------------------------------------
# Verdict and report


def verdict(results: Dict[str, object]) -> List[Dict[str, str]]:
    rows = [r for s in results["servers"] for r in s["rows"]]

    def find(server, protocol, clients):
        return next((r for r in rows if r["server"] == server and r["protocol"] == protocol
                     and r["clients"] == clients), None)

    checks = []
    for server in ("kserve (ScaNN)", "kserve (exact)"):
        for protocol in ("v1", "v2"):
            r = find(server, protocol, ERRORS_AT)
            if r:
                checks.append({
                    "target": f"{server} {protocol}: 0 errors at {ERRORS_AT} clients",
                    "measured": f"{r['errors']} of {r['requests']}",
                    "verdict": "met" if r["errors"] == 0 else "NOT met"})
    before = find("before (http.server)", "v1", SPEEDUP_AT)
    for protocol in ("v1", "v2"):
        after = find("kserve (ScaNN)", protocol, SPEEDUP_AT)
        if before and after and before["requests_per_s"]:
            ratio = after["requests_per_s"] / before["requests_per_s"]
            ok = ratio >= SPEEDUP and (after["p99_ms"] or 1e9) <= P99_LIMIT_MS
            checks.append({
                "target": f"{protocol} at {SPEEDUP_AT} clients: >= {SPEEDUP:.0f}x the old "
                          f"server's requests/s, p99 <= {P99_LIMIT_MS:.0f} ms",
                "measured": f"{ratio:.1f}x ({after['requests_per_s']:.0f} vs "
                            f"{before['requests_per_s']:.0f} req/s), p99 "
                            f"{_fmt(after['p99_ms'])} ms",
                "verdict": "met" if ok else "NOT met"})
    reference = results.get("reference") or {}
    interleaved = reference.get("interleaved") or {}
    one_p50 = (interleaved.get("one_client_ms_p50") or {}).get("kserve (ScaNN) v1")
    if one_p50 is not None:
        base = interleaved["signature_ms_p50"] + interleaved["empty_round_trip_ms_p50"]
        checks.append({
            "target": f"one client, v1: p50 <= {ONE_CLIENT_FACTOR}x (signature in-process "
                      "+ empty route round trip), measured interleaved",
            "measured": f"{_fmt(one_p50)} ms vs {ONE_CLIENT_FACTOR} x "
                        f"({_fmt(interleaved['signature_ms_p50'])} + "
                        f"{_fmt(interleaved['empty_round_trip_ms_p50'])}) = "
                        f"{_fmt(ONE_CLIENT_FACTOR * base)} ms (ratio {one_p50 / base:.2f})",
            "verdict": "met" if one_p50 <= ONE_CLIENT_FACTOR * base else "NOT met"})
        return checks
    one = find("kserve (ScaNN)", "v1", 1)
    if one and reference.get("signature_ms_p50") is not None \
            and reference.get("empty_round_trip_ms_p50") is not None:
        bound = ONE_CLIENT_FACTOR * (reference["signature_ms_p50"]
                                     + reference["empty_round_trip_ms_p50"])
        checks.append({
            "target": f"one client, v1: p50 <= {ONE_CLIENT_FACTOR}x (signature in-process "
                      "+ empty route round trip)",
            "measured": f"{_fmt(one['p50_ms'])} ms vs {ONE_CLIENT_FACTOR} x "
                        f"({_fmt(reference['signature_ms_p50'])} + "
                        f"{_fmt(reference['empty_round_trip_ms_p50'])}) = {_fmt(bound)} ms",
            "verdict": "met" if one["p50_ms"] <= bound else "NOT met"})
    return checks


def summary_table(results: Dict[str, object]) -> List[str]:
    """Before and after side by side: requests/s, p50 / p99 and errors per load."""
    columns = [(s["server"], r["protocol"]) for s in results["servers"] for r in s["rows"]]
    columns = list(dict.fromkeys(columns))
    rows = {(r["server"], r["protocol"], r["clients"]): r
            for s in results["servers"] for r in s["rows"]}
    clients = sorted({r["clients"] for s in results["servers"] for r in s["rows"]})
    lines = ["| clients | " + " | ".join(f"{s} {p}" for s, p in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for n in clients:
        cells = []
        for server, protocol in columns:
            r = rows.get((server, protocol, n))
            cells.append("-" if r is None else
                         f"{r['requests_per_s']:.0f} req/s, {_fmt(r['p50_ms'])} / "
                         f"{_fmt(r['p99_ms'])} ms"
                         + (f", **{r['errors']} errors**" if r["errors"] else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def report(results: Dict[str, object]) -> List[str]:
    env = results["environment"]
    lines = [
        "## Load bench: `recsys serve` under concurrent clients",
        "",
        f"{results['started']}, {env['cpus']} CPU cores ({env['machine']}), load average "
        f"{env['load_start']} at the start and {env['load_end']} at the end, "
        f"{results['seconds']:.0f} s in all (`{results['command']}`). Model: "
        f"`{results['model']}`, one user per request (MovieLens-100K's users in turn); "
        "each client holds one keep-alive connection (the old server closes it after "
        "every answer: its clients reconnect) and sends one request at a time. A load "
        f"ends after a set number of requests per client or {results['max_seconds']:.0f} s. "
        "Latency of the answered requests, in ms; requests/s counts answers with "
        "status 200.",
        "",
    ]
    lines += ["Requests/s, p50 / p99 latency and errors of each load:", ""]
    lines += summary_table(results)
    lines += [
        "",
        "Every load:",
        "",
        "| server | protocol | clients | requests | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for server in results["servers"]:
        note = f" (run of {server['measured_at']})" if server.get("measured_at") else ""
        for r in server["rows"]:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r["error_kinds"].items()))
            lines.append(
                f"| {r['server']}{note} | {r['protocol']} | {r['clients']} | {r['requests']} "
                f"| {r['requests_per_s']:.1f} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} "
                f"| {r['errors']}{f' ({kinds})' if kinds else ''} |")
    reference = results.get("reference") or {}
    default = reference.get("signature_default_threads_ms_p50")
    lines += ["", "One-client reference: serving_default called in-process on one user, "
              f"in a fresh process, {_fmt(reference.get('signature_ms_p50'))} ms p50 with "
              "the server's TensorFlow threads (1)"
              + (f", {_fmt(default)} ms with TensorFlow's default" if default else "")
              + "; the HTTP round trip of an empty route (`GET /v2/health/live`) "
              f"{_fmt(reference.get('empty_round_trip_ms_p50'))} ms p50.", ""]
    interleaved = reference.get("interleaved")
    if interleaved:
        ones = interleaved["one_client_ms_p50"]
        lines += [f"One client, interleaved ({interleaved['rounds']} rounds of "
                  f"{interleaved['block']} calls of each in turn; the verdict's "
                  f"comparison): signature in-process {_fmt(interleaved['signature_ms_p50'])} "
                  f"ms p50, empty route {_fmt(interleaved['empty_round_trip_ms_p50'])} ms, "
                  + ", ".join(f"{k} {_fmt(v)} ms" for k, v in ones.items())
                  + (f"; {interleaved['errors']} errors" if interleaved["errors"] else "")
                  + ".", ""]
        direct = interleaved.get("signature_direct_ms_p50")
        one_v1 = ones.get("kserve (ScaNN) v1")
        if direct and one_v1:
            lines += ["Not the verdict's baseline, for what the server itself adds: the "
                      "server calls the signature's function directly (its flat call, "
                      "without the public call's Python work; `batching._direct_call`), "
                      f"which took {_fmt(direct)} ms p50 in-process in the same rounds; "
                      f"against that + the empty route, kserve (ScaNN) v1's ratio is "
                      f"{one_v1 / (direct + interleaved['empty_round_trip_ms_p50']):.2f}.",
                      ""]
    lines += ["Targets:", ""]
    lines += [f"- {c['verdict']}: {c['target']}: {c['measured']}"
              for c in results["verdict"]]
    memory = [f"{s['server']} {s['peak_rss_mib']:.0f} MiB" for s in results["servers"]
              if s.get("peak_rss_mib")]
    if memory:
        lines += ["", "Server peak resident memory (VmHWM): " + ", ".join(memory) + "."]
    if results.get("nice"):
        lines += ["", f"Run with nice {results['nice']:+d} (the bench and its servers "
                      "alike), so that other work on the machine disturbs it less."]
    settings = results.get("server_args")
    if settings:
        lines += ["", f"Server settings: `{' '.join(settings)}`."]
    return lines


# --------------------------------------------------------------------------


def find_model_dirs(root: str) -> Tuple[str, str, int]:
    """(ScaNN model dir, exact twin's model dir, version) under <root>/serving/."""
    scann_dir = os.path.join(root, "serving", MODEL_NAME)
    exact_dir = scann_dir + "_bruteforce"
    versions = sorted(int(v) for v in os.listdir(scann_dir) if v.isdigit()
                      and os.path.exists(os.path.join(scann_dir, v, "saved_model.pb")))
    if not versions:
        raise SystemExit(f"no pushed model under {scann_dir}")
    return scann_dir, exact_dir, versions[-1]


def single_version_copy(model_dir: str, version: int, destination: str) -> str:
    """A model dir holding only `version`, so every server serves the same one."""
    target = os.path.join(destination, os.path.basename(model_dir))
    shutil.copytree(os.path.join(model_dir, str(version)), os.path.join(target, str(version)))
    return target


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help="a run root with a pushed model (default: runs/default; "
                             "`recsys run` makes one there if it has none)")
    parser.add_argument("--before", help="the old server's module file (http_server.py "
                                         "of an older commit): measure it too")
    parser.add_argument("--only", choices=("before", "scann", "exact"), action="append",
                        help="measure only these servers (repeatable); kept results "
                             "fill in the rest")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--seconds", type=float, default=MAX_SECONDS,
                        help="time bound of each load (default %(default)s)")
    parser.add_argument("--server-arg", action="append",
                        help="an option passed to `recsys serve` (repeatable)")
    parser.add_argument("--users", default=os.path.join(
        os.path.expanduser("~"), ".cache", "tfx-recsys", "movielens-100k", "users.csv"))
    parser.add_argument("--nice", type=int, default=0,
                        help="add this to the bench's and its servers' nice value "
                             "(negative, as root: less disturbed by other work on the "
                             "machine; both servers alike)")
    parser.add_argument("--out", default=RESULTS_DIR)
    return parser.parse_args(argv)


def ensure_model(root: str) -> None:
    if os.path.isdir(os.path.join(root, "serving", MODEL_NAME)):
        return
    print(f"no pushed model under {root}: running the pipeline first (about 5 min)")
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    subprocess.run([recsys, "run", "--root", root], check=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # the servers, started from here, inherit it
    started = time.time()
    load_start = os.getloadavg()[0]
    ensure_model(args.root)
    scann_dir, exact_dir, version = find_model_dirs(args.root)
    users = load_users(args.users)
    clients = [int(c) for c in args.clients.split(",")]
    wanted = set(args.only or (["before"] if args.before else []) + ["scann", "exact"])
    if "before" in wanted and not args.before:
        raise SystemExit("--only before needs --before FILE")

    json_path = os.path.join(args.out, "load.json")
    kept = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            previous = json.load(f)
        for server in previous.get("servers", []):
            server.setdefault("measured_at", previous["started"])
            kept[server["server"]] = server
        reference = previous.get("reference")
    else:
        reference = None

    servers: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as work:
        scann_copy = single_version_copy(scann_dir, version, work)
        exact_copy = single_version_copy(exact_dir, version, work)
        print(f"model: {scann_dir}/{version} (exact twin: {exact_dir}/{version})")
        reference_dir = None
        if "scann" in wanted or reference is None:
            reference, reference_dir = {}, os.path.join(scann_copy, str(version))
        plan = [("before", "before (http.server)", "before", scann_copy, ["v1"]),
                ("scann", "kserve (ScaNN)", "kserve", scann_copy, ["v1", "v2"]),
                ("exact", "kserve (exact)", "kserve", exact_copy, ["v1", "v2"])]
        to_measure = [(label, kind, model_dir, protocols)
                      for key, label, kind, model_dir, protocols in plan if key in wanted]
        print("servers: " + ", ".join(p[0] for p in to_measure), flush=True)
        measured = {r["server"]: r for r in measure_servers(
            to_measure, users, clients, args, work, reference, reference_dir)}
        for key, label, _, _, _ in plan:
            if label in measured:
                servers.append(measured[label])
            elif label in kept:
                servers.append(kept[label])
        for result in servers:
            result["model_dir"] = os.path.basename(result["model_dir"])

    results = {
        "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": time.time() - started,
        "command": "python bench/load.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "model": f"{os.path.relpath(scann_dir, REPO)}/{version}",
        "max_seconds": args.seconds,
        "server_args": args.server_arg or [],
        "nice": args.nice,
        "environment": {"cpus": os.cpu_count(), "machine": platform.machine(),
                        "python": platform.python_version(),
                        "load_start": round(load_start, 1),
                        "load_end": round(os.getloadavg()[0], 1)},
        "reference": reference,
        "servers": servers,
    }
    results["verdict"] = verdict(results)
    os.makedirs(args.out, exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
    lines = report(results)
    with open(os.path.join(args.out, "load.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
