"""`recsys serve` (KServe's model server) spoken to over real sockets, on the
model the tiny pipeline run pushed: both protocols, all three signatures,
micro-batching, versions appearing while it runs, and every malformed
request a 4xx."""

import concurrent.futures
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tfx_recsys.serving.batching import BatchingSettings
from tfx_recsys.serving.model import RecommenderModel
from tfx_recsys.serving.server import Server, ServerSettings
from tfx_recsys.serving.versions import VersionManager, candidate_versions

MODEL = "retrieval"
V1 = f"/v1/models/{MODEL}"
PREDICT = f"{V1}:predict"
INFER = f"/v2/models/{MODEL}/infer"
USER = {"user_id": "u1", "age": 24, "gender": "M", "occupation": "engineer",
        "zip_code": "12345"}
OTHER_USER = {"user_id": "u2", "age": 51, "gender": "F", "occupation": "writer",
              "zip_code": "98765"}
SIGNATURES = ("serving_default", "serving_with_history", "serving_with_exclusions")
OUTPUTS = {"item_ids", "scores", "retrieval_scores", "ranker_scores"}
MAX_BODY = 64 << 10
MAX_ROWS = 8
BODY_TIMEOUT = 1.0


# --------------------------------------------------------------------------
# Helpers


def request(server, method, path, body=None, headers=None, timeout=30):
    """(status, parsed JSON body, response headers) of one HTTP request."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    host, port = server.socket.getsockname()[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    assert "Traceback" not in data.decode("utf-8", "replace")
    try:
        parsed = json.loads(data, parse_constant=_not_json)
    except ValueError:
        parsed = data.decode("utf-8", "replace")
    return response.status, parsed, dict(response.getheaders())


def _not_json(constant):
    raise AssertionError(f"the answer holds {constant}, which is not JSON")


def raw_exchange(server, data: bytes, timeout=10) -> bytes:
    """Sends raw bytes, returns everything the server sends before closing
    (or until `timeout`)."""
    host, port = server.socket.getsockname()[:2]
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except socket.timeout:
            pass
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def served_version(server):
    status, body, _ = request(server, "GET", V1)
    if status != 200:
        return None
    return int(next(e["version"] for e in body["model_version_status"]
                    if e["state"] == "AVAILABLE"))


def wait_for(condition, seconds=30.0, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {seconds} s")


def copy_version(source_dir, serving_dir, version, ignore=None):
    destination = os.path.join(serving_dir, str(version))
    shutil.copytree(source_dir, destination,
                    ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return destination


@contextlib.contextmanager
def running(model_dir, batching=BatchingSettings(), **settings):
    """A server on a free port of 127.0.0.1 in a thread, on `model_dir`."""
    versions = VersionManager(model_dir, poll_seconds=0.1, retry_initial_seconds=0.2,
                              retry_max_seconds=0.5)
    model = RecommenderModel(MODEL, model_dir, batching, max_rows=MAX_ROWS,
                             versions=versions)
    settings = dict(dict(port=0, max_body_bytes=MAX_BODY,
                         body_timeout_seconds=BODY_TIMEOUT), **settings)
    server = Server(model, ServerSettings(**settings))
    model.load()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "server start")
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=30)
        model.stop()


def assert_error(response, status, *fragments):
    got_status, body, _ = response
    assert got_status == status, body
    assert isinstance(body, dict) and "error" in body, body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


def v2_tensors(columns):
    """V2 input tensors for {input: [value per row]} (lists of lists: [b, n])."""
    tensors = []
    for name, values in columns.items():
        if values and isinstance(values[0], list):
            width = max(len(v) for v in values)
            padded = [v + [""] * (width - len(v)) for v in values]
            tensors.append({"name": name, "shape": [len(values), width],
                            "datatype": "BYTES", "data": padded})
        else:
            tensors.append({"name": name, "shape": [len(values)],
                            "datatype": "FP32" if name == "age" else "BYTES",
                            "data": values})
    return tensors


def v2_outputs(body):
    return {o["name"]: o for o in body["outputs"]}


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def pushed(tiny_run):
    """(version, directory) of the newest model the tiny run pushed."""
    versions = candidate_versions(tiny_run.serving_dir)
    assert versions, f"nothing pushed under {tiny_run.serving_dir}"
    return versions[0], os.path.join(tiny_run.serving_dir, str(versions[0]))


@pytest.fixture(scope="module")
def items(pushed):
    """Some item ids the model knows (from its answer for USER)."""
    import tensorflow as tf

    model = tf.saved_model.load(pushed[1])
    out = model.signatures["serving_default"](
        **{k: tf.constant([float(v) if k == "age" else v]) for k, v in USER.items()})
    return [i.decode() for i in out["item_ids"].numpy()[0] if i]


@pytest.fixture(scope="module")
def direct(pushed):
    """Calls a signature of the pushed model in-process: the reference answer."""
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(pushed[1])

    def call(signature, rows):
        specs = model.signatures[signature].structured_input_signature[1]
        inputs = {}
        for name, spec in specs.items():
            values = [row[name] for row in rows]
            if spec.shape.rank == 2:
                width = max(len(v) for v in values)
                values = [v + [""] * (width - len(v)) for v in values]
            inputs[name] = tf.constant(np.array(values, dtype=object if spec.dtype == tf.string
                                                else np.float32), dtype=spec.dtype)
        out = model.signatures[signature](**inputs)
        return {k: v.numpy() for k, v in out.items()}
    return call


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """One server for the read-only tests, on a copy of the pushed model."""
    serving_dir = str(tmp_path_factory.mktemp("serving") / MODEL)
    shutil.copytree(tiny_run.serving_dir, serving_dir)
    with running(serving_dir) as s:
        yield s


@pytest.fixture
def serving_dir(pushed, tmp_path):
    """A private model dir holding the pushed version, for version tests."""
    directory = str(tmp_path / MODEL)
    os.makedirs(directory)
    copy_version(pushed[1], directory, pushed[0])
    return directory


def same_answer(got, expected, row=0):
    """An HTTP answer's row equals the in-process one (NaN as null)."""
    assert got["item_ids"] == [i.decode() for i in expected["item_ids"][row]]
    for name in ("scores", "retrieval_scores", "ranker_scores"):
        want = [None if math.isnan(x) else pytest.approx(float(x), rel=1e-5, abs=1e-6)
                for x in expected[name][row]]
        assert got[name] == want, name


def request_row(signature, user, extra):
    row = dict(user)
    if signature == "serving_with_history":
        row["history"] = extra
    if signature == "serving_with_exclusions":
        row["exclude"] = extra
    return row


# --------------------------------------------------------------------------
# Status, health, metadata


def test_the_server_module_imports_no_tensorflow():
    code = ("import sys, tfx_recsys.serving.server; "
            "heavy = [m for m in ('tensorflow', 'scann') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_status_health_and_metrics(server, pushed):
    version = str(pushed[0])
    status, body, _ = request(server, "GET", V1)
    assert status == 200
    assert body == {"name": MODEL, "ready": True, "model_version_status": [{
        "version": version, "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    assert request(server, "GET", f"{V1}/versions/{version}")[:2] == (200, body)
    assert request(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert request(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert request(server, "GET", f"/v2/models/{MODEL}/ready")[:2] == \
        (200, {"name": MODEL, "ready": True})
    assert request(server, "GET", f"/v2/models/{MODEL}/versions/{version}/ready")[0] == 200
    assert request(server, "GET", "/v1/models")[:2] == (200, {"models": [MODEL]})
    request(server, "POST", PREDICT, {"instances": [USER]})
    status, text, headers = request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for metric in ("request_preprocess_seconds_count", "request_predict_seconds_count",
                   "request_postprocess_seconds_count", "recsys_batch_rows_count",
                   "recsys_requests_total", "recsys_served_version"):
        assert metric in text, metric


def test_metadata_of_both_protocols(server, pushed):
    status, body, _ = request(server, "GET", f"{V1}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "",
                                  "version": str(pushed[0])}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) >= set(SIGNATURES)
    assert {n: i["dtype"] for n, i in defs["serving_default"]["inputs"].items()} == {
        "user_id": "DT_STRING", "age": "DT_FLOAT", "gender": "DT_STRING",
        "occupation": "DT_STRING", "zip_code": "DT_STRING"}
    assert defs["serving_with_history"]["inputs"]["history"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""}, {"size": "-1", "name": ""}]
    assert set(defs["serving_default"]["outputs"]) == OUTPUTS
    status, v2, _ = request(server, "GET", f"/v2/models/{MODEL}")
    assert status == 200
    assert v2["name"] == MODEL and v2["versions"] == [str(pushed[0])]
    assert {t["name"]: t["datatype"] for t in v2["inputs"]}["age"] == "FP32"
    exclude = {t["name"]: t for t in
               v2["parameters"]["signatures"]["serving_with_exclusions"]["inputs"]}
    assert exclude["exclude"] == {"name": "exclude", "datatype": "BYTES", "shape": [-1, -1]}


# --------------------------------------------------------------------------
# Predict: both protocols, every signature, the same answers as in-process


@pytest.mark.parametrize("signature", SIGNATURES)
def test_v1_rows_and_columns_answer_as_the_model_does(server, direct, items, signature):
    rows = [request_row(signature, USER, items[:2]),
            request_row(signature, dict(OTHER_USER, user_id="never-seen"), items[3:8])]
    expected = direct(signature, rows)
    status, body, headers = request(server, "POST", PREDICT,
                                    {"signature_name": signature, "instances": rows})
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert [set(p) for p in body["predictions"]] == [OUTPUTS, OUTPUTS]
    for i, prediction in enumerate(body["predictions"]):
        same_answer(prediction, expected, i)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    status, body, _ = request(server, "POST", PREDICT,
                              {"signature_name": signature, "inputs": columns})
    assert status == 200, body
    for i in range(2):
        same_answer({k: v[i] for k, v in body["outputs"].items()}, expected, i)
    if signature == "serving_with_exclusions":
        assert not set(items[:2]) & set(body["outputs"]["item_ids"][0])


@pytest.mark.parametrize("signature", SIGNATURES)
def test_v2_answers_as_the_model_does(server, direct, items, pushed, signature):
    rows = [request_row(signature, USER, items[:3]),
            request_row(signature, OTHER_USER, items[5:6])]
    expected = direct(signature, rows)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    payload = {"id": "req-7", "inputs": v2_tensors(columns)}
    if signature != "serving_default":
        payload["parameters"] = {"signature_name": signature}
    status, body, _ = request(server, "POST", INFER, payload)
    assert status == 200, body
    assert body["model_name"] == MODEL and body["model_version"] == str(pushed[0])
    assert body["id"] == "req-7"
    assert body["parameters"] == {"signature_name": signature}
    outputs = v2_outputs(body)
    assert set(outputs) == OUTPUTS
    k = outputs["item_ids"]["shape"][1]
    assert outputs["item_ids"]["datatype"] == "BYTES"
    assert outputs["scores"]["datatype"] == "FP32" and outputs["scores"]["shape"] == [2, k]
    for i in range(2):
        same_answer({n: o["data"][i * k:(i + 1) * k] for n, o in outputs.items()},
                    expected, i)
    # Only the outputs asked for; the versioned path.
    status, body, _ = request(server, "POST",
                              f"/v2/models/{MODEL}/versions/{pushed[0]}/infer",
                              dict(payload, outputs=[{"name": "item_ids"}]))
    assert status == 200, body
    assert [o["name"] for o in body["outputs"]] == ["item_ids"]


def test_a_body_without_a_json_content_type_is_read_as_json(server, direct):
    """Plain `curl -d` sends application/x-www-form-urlencoded; TF Serving
    reads the body as JSON anyway, and so does this server."""
    expected = direct("serving_default", [USER])
    body = json.dumps({"instances": [USER]})
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "text/plain"}, {}):
        status, answer, _ = request(server, "POST", PREDICT, body, headers)
        assert status == 200, (headers, answer)
        same_answer(answer["predictions"][0], expected)


def test_base64_strings_and_the_versioned_path(server, pushed):
    encoded = dict(USER, user_id={"b64": "dTE="})  # "u1"
    _, plain, _ = request(server, "POST", PREDICT, {"instances": [USER]})
    status, body, _ = request(server, "POST", f"{V1}/versions/{pushed[0]}:predict",
                              {"instances": [encoded]})
    assert status == 200, body
    assert body["predictions"] == plain["predictions"]


def test_ragged_lists_are_padded_per_request(server, direct, items):
    rows = [dict(USER, history=items[:1]), dict(OTHER_USER, history=items[2:9]),
            dict(USER, user_id="u3", history=[])]
    status, body, _ = request(server, "POST", PREDICT,
                              {"signature_name": "serving_with_history", "instances": rows})
    assert status == 200, body
    for i, row in enumerate(rows):
        same_answer(body["predictions"][i], direct("serving_with_history", [row]))


# --------------------------------------------------------------------------
# Micro-batching: gathered into one call, each request answered with its own


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
        tiny_run, tmp_path, direct, items):
    serving_dir = str(tmp_path / MODEL)
    shutil.copytree(tiny_run.serving_dir, serving_dir)
    users = [dict(USER, user_id=f"u{i}", age=20 + i) for i in range(1, 13)]
    jobs = []  # (protocol, signature, row): different users, exclusions, histories
    for i, user in enumerate(users):
        signature = SIGNATURES[i % 3]
        extra = items[i % 5:(i % 5) + 1 + i % 4]  # 1 to 4 ids, different per request
        jobs.append(("v1" if i % 2 else "v2", signature,
                     request_row(signature, user, extra)))
    expected = [direct(signature, [row]) for _, signature, row in jobs]

    def send(server, job):
        protocol, signature, row = job
        if protocol == "v1":
            status, body, _ = request(server, "POST", PREDICT,
                                      {"signature_name": signature, "instances": [row]})
            return status, body["predictions"][0] if status == 200 else body
        payload = {"inputs": v2_tensors({k: [v] for k, v in row.items()}),
                   "parameters": {"signature_name": signature}}
        status, body, _ = request(server, "POST", INFER, payload)
        if status != 200:
            return status, body
        return status, {n: o["data"] for n, o in v2_outputs(body).items()}

    def batch_counts(srv):
        _, metrics, _ = request(srv, "GET", "/metrics")
        label = f'{{model_name="{MODEL}"}}'
        counts = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                  if line.startswith("recsys_batch_requests_")}
        return (counts[f"recsys_batch_requests_count{label}"],
                counts[f"recsys_batch_requests_sum{label}"])

    # A window long enough for the requests sent at once to meet.
    with running(serving_dir, BatchingSettings(timeout_ms=300, max_batch_size=64)) as srv:
        calls_before, requests_before = batch_counts(srv)
        start = threading.Barrier(len(jobs))

        def at_once(job):
            start.wait()
            return send(srv, job)

        for _ in range(2):
            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                answers = list(pool.map(at_once, jobs))
            for (status, answer), want, (_, signature, row) in zip(answers, expected, jobs):
                assert status == 200, answer
                same_answer(answer, want)
                if signature == "serving_with_exclusions":
                    assert not set(row["exclude"]) & set(answer["item_ids"])
        calls, gathered = batch_counts(srv)
    # 24 requests to 3 signatures: fewer calls than requests means batches.
    calls, gathered = calls - calls_before, gathered - requests_before
    assert gathered == 2 * len(jobs) and calls < gathered / 2, (calls, gathered)


def test_a_request_the_model_rejects_fails_alone(tiny_run, tmp_path, monkeypatch):
    """A batch the model refuses is re-run one request at a time."""
    from tfx_recsys.serving import batching
    from tfx_recsys.serving.protocol import RequestError

    real = batching.call_signature

    def picky(version, name, inputs):
        if b"poison" in list(inputs["user_id"]):
            raise RequestError(400, "the model rejected the inputs: poison")
        return real(version, name, inputs)

    monkeypatch.setattr(batching, "call_signature", picky)
    serving_dir = str(tmp_path / MODEL)
    shutil.copytree(tiny_run.serving_dir, serving_dir)
    with running(serving_dir, BatchingSettings(timeout_ms=300)) as srv:
        users = [USER, dict(USER, user_id="poison"), OTHER_USER]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(
                lambda u: request(srv, "POST", PREDICT, {"instances": [u]}), users))
    assert [a[0] for a in answers] == [200, 400, 200]
    assert "poison" in answers[1][1]["error"]


# --------------------------------------------------------------------------
# Versions appearing while the server runs


def test_no_version_yet_is_503_until_one_arrives(pushed, tmp_path):
    version, version_dir = pushed
    serving_dir = str(tmp_path / MODEL)  # does not even exist yet
    with running(serving_dir) as srv:
        status, body, _ = request(srv, "GET", V1)
        assert status == 503 and "no version loaded" in body["error"]
        assert body["ready"] is False and body["model_version_status"] == []
        assert_error(request(srv, "POST", PREDICT, {"instances": [USER]}), 503,
                     "no version loaded")
        assert request(srv, "GET", f"/v2/models/{MODEL}/ready")[0] == 503
        os.makedirs(serving_dir)
        copy_version(version_dir, serving_dir, version)
        wait_for(lambda: served_version(srv) == version, what="the first version")
        assert request(srv, "POST", PREDICT, {"instances": [USER]})[0] == 200


def test_a_version_copied_in_two_halves_is_served_once_complete(pushed, serving_dir):
    """saved_model.pb first, variables/ later (a plain `cp -r` can do that):
    the first load fails, is retried, and the version goes live once whole;
    requests keep succeeding all along."""
    version, version_dir = pushed
    with running(serving_dir) as srv:
        assert served_version(srv) == version
        failures, stop = [], threading.Event()

        def keep_predicting():
            while not stop.is_set():
                status, body, _ = request(srv, "POST", PREDICT, {"instances": [USER]})
                if status != 200:
                    failures.append(body)

        clients = [threading.Thread(target=keep_predicting) for _ in range(2)]
        for client in clients:
            client.start()
        try:
            half = copy_version(version_dir, serving_dir, version + 1, ignore=["variables"])

            def failed_once():
                _, body, _ = request(srv, "GET", V1)
                return any(e["version"] == str(version + 1) and e["state"] == "LOADING"
                           for e in body["model_version_status"])

            wait_for(failed_once, what="the failed load showing")
            assert served_version(srv) == version
            _, body, _ = request(srv, "GET", f"{V1}/versions/{version + 1}")
            [entry] = body["model_version_status"]
            assert entry["status"]["error_code"] == "UNKNOWN"
            assert "failed to load" in entry["status"]["error_message"]
            shutil.copytree(os.path.join(version_dir, "variables"),
                            os.path.join(half, "variables"))
            wait_for(lambda: served_version(srv) == version + 1, what="the second half")
        finally:
            stop.set()
            for client in clients:
                client.join()
        assert not failures
        status, body, _ = request(srv, "GET", V1)
        assert [e["version"] for e in body["model_version_status"]] == [str(version + 1)]
        assert_error(request(srv, "POST", f"{V1}/versions/{version}:predict",
                             {"instances": [USER]}), 404, f"version {version}", "not served")


def test_a_broken_version_is_never_served_and_shows_as_failed(pushed, serving_dir):
    version, version_dir = pushed
    with running(serving_dir) as srv:
        broken = os.path.join(serving_dir, str(version + 1))
        os.makedirs(broken)
        with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
            f.write(b"not a SavedModel")

        def attempts():
            _, body, _ = request(srv, "GET", f"{V1}/versions/{version + 1}")
            if "model_version_status" not in body:
                return 0
            message = body["model_version_status"][0]["status"]["error_message"]
            return int(message.split("(")[1].split()[0])

        wait_for(lambda: attempts() >= 3, what="three load attempts")  # retried
        assert served_version(srv) == version
        assert request(srv, "POST", PREDICT, {"instances": [USER]})[0] == 200
        assert_error(request(srv, "POST", f"{V1}/versions/{version + 1}:predict",
                             {"instances": [USER]}), 404, "not served")
        assert request(srv, "GET", f"/v2/models/{MODEL}/versions/{version + 1}/ready")[0] \
            == 503
        # A good newer version goes live; the broken one, now older, is dropped.
        copy_version(version_dir, serving_dir, version + 2)
        wait_for(lambda: served_version(srv) == version + 2, what="the good version")
        _, body, _ = request(srv, "GET", V1)
        assert [e["version"] for e in body["model_version_status"]] == [str(version + 2)]


# --------------------------------------------------------------------------
# Malformed requests: every one a 4xx naming what is wrong, the server unharmed


def _v2(**changes):
    inputs = v2_tensors({k: [v] for k, v in USER.items()})
    body = {"inputs": inputs}
    body.update(changes)
    return body


def _v2_input(index, **changes):
    body = _v2()
    body["inputs"][index] = dict(body["inputs"][index], **changes)
    return body


BAD_V1 = [
    (b"{not json", 400, ["malformed JSON"]),
    (b"", 400, ["empty"]),
    (b"\xff\xfe", 400, ["malformed JSON"]),
    (b"[" * 50000, 400, ["JSON"]),
    ('{"instances": [{"user_id": "\\ud800", "age": 1, "gender": "M", "occupation": "x",'
     ' "zip_code": "1"}]}', 400, ["instances[0]['user_id']", "Unicode"]),
    ('{"instances": [{"user_id": "u1", "age": 1' + "0" * 400 + ', "gender": "M",'
     ' "occupation": "x", "zip_code": "1"}]}', 400, ["instances[0]['age']", "out of range"]),
    ('{"instances": [{"user_id": "u1", "age": 1' + "0" * 5000 + '}]}', 400, ["JSON"]),
    ('{"instances": [{"user_id": "u1", "age": 1e400, "gender": "M", "occupation": "x",'
     ' "zip_code": "1"}]}', 400, ["'age'", "out of range"]),
    ([USER], 400, ["JSON object", "instances"]),
    ({}, 400, ["exactly one of", "instances", "inputs"]),
    ({"instances": [USER], "inputs": {}}, 400, ["exactly one of"]),
    ({"instances": [USER], "extra": 1}, 400, ["unknown request field", "'extra'"]),
    ({"instances": []}, 400, ["'instances' is empty"]),
    ({"instances": USER}, 400, ["'instances' must be a list"]),
    ({"instances": ["u1"]}, 400, ["instances[0] must be an object"]),
    ({"instances": [{k: v for k, v in USER.items() if k != "age"}]}, 400,
     ["instances[0]", "missing", "'age'"]),
    ({"instances": [USER, dict(USER, hobby="chess")]}, 400,
     ["instances[1]", "unknown", "'hobby'"]),
    ({"instances": [USER, dict(USER, age="abc")]}, 400,
     ["instances[1]['age']", "number", '"abc"']),
    ({"instances": [dict(USER, age=True)]}, 400, ["'age'", "number", "true"]),
    ({"instances": [dict(USER, age=None)]}, 400, ["'age'", "number", "null"]),
    ({"instances": [dict(USER, user_id=7)]}, 400, ["'user_id'", "expected a string", "7"]),
    ({"instances": [dict(USER, user_id={"b64": "%%%"})]}, 400, ["'user_id'", "base64"]),
    ({"instances": [dict(USER, age=[24, 25])]}, 400, ["'age'", "number"]),
    ({"signature_name": "serving_with_history", "instances": [dict(USER, history="i1")]},
     400, ["instances[0]['history']", "expected a list"]),
    ({"signature_name": "serving_with_history", "instances": [dict(USER, history=[1])]},
     400, ["instances[0]['history'][0]", "string"]),
    ({"inputs": {**{k: [v] for k, v in USER.items()}, "age": [24, 25]}}, 400,
     ["different batch sizes", "age has 2", "user_id has 1"]),
    ({"inputs": {k: [] for k in USER}}, 400, ["empty"]),
    ({"inputs": {k: v for k, v in USER.items() if k != "zip_code"}}, 400,
     ["'inputs'", "missing", "'zip_code'"]),
    ({"inputs": {**{k: [v] for k, v in USER.items()}, "age": 24}}, 400,
     ["inputs['age'] must be a list"]),
    ({"inputs": [USER]}, 400, ["'inputs' must be an object"]),
    ({"instances": [USER], "signature_name": "nope"}, 400, ["signature_name", "nope"]),
    ({"instances": [USER], "signature_name": 3}, 400, ["signature_name"]),
    ({"instances": [USER] * (MAX_ROWS + 1)}, 413, [f"{MAX_ROWS + 1} examples",
                                                   f"limit of {MAX_ROWS}"]),
    ({"inputs": {k: [v] * (MAX_ROWS + 1) for k, v in USER.items()}}, 413,
     [f"limit of {MAX_ROWS}"]),
    (json.dumps({"instances": [USER], "pad": "x" * MAX_BODY}), 413,
     ["exceeds the limit", str(MAX_BODY)]),
]

BAD_V2 = [
    (b"{", 400, ["malformed JSON"]),
    ([], 400, ["JSON object", "inputs"]),
    ({}, 400, ["'inputs'"]),
    ({"inputs": []}, 400, ["'inputs'", "non-empty"]),
    (_v2(extra=1), 400, ["unknown request field", "'extra'"]),
    (_v2(id=5), 400, ["'id' must be a string"]),
    (_v2(parameters=[]), 400, ["'parameters' must be an object"]),
    (_v2(parameters={"signature_name": "nope"}), 400,
     ["parameters.signature_name", "nope"]),
    ({"inputs": ["user_id"]}, 400, ["inputs[0] must be an object"]),
    (_v2_input(0, name="hobby"), 400, ["inputs[0]", "unknown input name", "hobby"]),
    (_v2(inputs=_v2()["inputs"] + [_v2()["inputs"][0]]), 400, ["given twice"]),
    (_v2(inputs=_v2()["inputs"][:-1]), 400, ["missing input", "zip_code"]),
    (_v2_input(0, shape="1"), 400, ["inputs[0]", "'shape'"]),
    (_v2_input(0, shape=[-1]), 400, ["inputs[0]", "'shape'"]),
    (_v2_input(0, shape=[1, 1]), 400, ["inputs[0]", "does not fit"]),
    (_v2_input(0, shape=[2]), 400, ["inputs[0]", "holds 1 values", "needs 2"]),
    (_v2_input(1, datatype="BYTES"), 400, ["inputs[1] ('age')", "datatype", "BYTES"]),
    (_v2_input(0, datatype="FP32"), 400, ["inputs[0] ('user_id')", "datatype"]),
    (_v2_input(1, data=["24"]), 400, ["inputs[1] ('age')", "data[0]", "number"]),
    (_v2_input(1, data=[1e39]), 400, ["inputs[1] ('age')", "out of range"]),
    (_v2_input(0, data="u1"), 400, ["inputs[0]", "'data' must be a list"]),
    (_v2_input(0, data=[[["u1"]], ["u2"]], shape=[2]), 400, ["inputs[0]", "ragged"]),
    (_v2_input(0, parameters={"binary_data_size": 4}), 415, ["binary"]),
    (_v2_input(0, extra=1), 400, ["inputs[0]", "unknown field", "extra"]),
    ({"inputs": [{"name": "user_id"}]}, 400, ["inputs[0]", "missing field", "data"]),
    (_v2(inputs=[dict(t, shape=[2], data=t["data"] * 2) if t["name"] == "age" else t
                 for t in _v2()["inputs"]]), 400, ["different batch sizes"]),
    (_v2(outputs=[{"name": "nope"}]), 400, ["'outputs'", "unknown output", "nope"]),
    (_v2(outputs="item_ids"), 400, ["'outputs' must be a list"]),
]


def _short_id(value):
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else repr(value)[2:-1]
        return text if len(text) <= 40 else text[:37] + "..."
    return None


def _ids(cases):
    return [f"{i}-{fragments[0][:30]}" for i, (_, _, fragments) in enumerate(cases)]


@pytest.mark.parametrize("body, status, fragments", BAD_V1, ids=_ids(BAD_V1))
def test_malformed_v1_requests_are_4xx(server, body, status, fragments):
    assert_error(request(server, "POST", PREDICT, body), status, *fragments)


@pytest.mark.parametrize("body, status, fragments", BAD_V2, ids=_ids(BAD_V2))
def test_malformed_v2_requests_are_4xx(server, body, status, fragments):
    assert_error(request(server, "POST", INFER, body), status, *fragments)


@pytest.mark.parametrize("method, path, status, fragments", [
    ("GET", "/v1/models/other", 404, ["unknown model 'other'"]),
    ("POST", "/v1/models/other:predict", 404, ["unknown model 'other'"]),
    ("POST", "/v2/models/other/infer", 404, ["unknown model 'other'"]),
    ("GET", f"{V1}/versions/1", 404, ["version 1", "neither served nor loading"]),
    ("POST", f"{V1}/versions/1:predict", 404, ["version 1", "not served"]),
    ("POST", f"/v2/models/{MODEL}/versions/1/infer", 404, ["version 1", "not served"]),
    ("GET", f"{V1}/versions/1/metadata", 404, ["version 1"]),
    ("POST", f"{V1}/versions/{'9' * 5000}:predict", 404, ["version", "at most 18 digits"]),
    ("GET", f"{V1}/versions/{'9' * 5000}", 404, ["version", "at most 18 digits"]),
    ("GET", f"{V1}/versions/latest", 400, ["version 'latest'"]),
    ("GET", f"{V1}/labels/stable", 404, ["unknown path"]),
    ("GET", "/", 200, []),
    ("GET", "/nope", 404, ["unknown path /nope"]),
    ("GET", f"/v2/models/{MODEL}/explain", 404, ["unknown path"]),
    ("POST", f"{V1}:classify", 404, ["unknown path"]),
    ("POST", f"{V1}:explain", 404, ["unknown path"]),
    ("POST", f"/v2/repository/models/{MODEL}/unload", 404, ["unknown path"]),
    ("GET", PREDICT, 405, ["GET", "POST"]),
    ("POST", V1, 405, ["POST", "GET"]),
    ("PUT", f"{V1}/metadata", 405, ["PUT", "GET"]),
    ("DELETE", INFER, 405, ["DELETE", "POST"]),
    ("POST", "/v2/health/live", 405, ["POST"]),
], ids=_short_id)
def test_unknown_paths_models_versions_and_methods(server, method, path, status, fragments):
    body = {"instances": [USER]} if method in ("POST", "PUT") else None
    response = request(server, method, path, body)
    if status == 200:
        assert response[0] == 200
        return
    assert_error(response, status, *fragments)
    if status == 405 and path.startswith("/v"):
        assert response[2]["allow"] in ("GET", "POST")


def test_a_content_length_larger_than_the_body_is_408_without_waiting_long(server):
    body = json.dumps({"instances": [USER]}).encode()
    started = time.monotonic()
    raw = raw_exchange(server, f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                               f"{len(body) + 50}\r\n\r\n".encode() + body)
    assert status_of(raw) == 408, raw
    assert b"Content-Length" in raw and b"did not arrive" in raw
    assert time.monotonic() - started < BODY_TIMEOUT + 5


def test_a_huge_content_length_is_refused_before_reading(server):
    raw = raw_exchange(server, f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                               f"{10 ** 12}\r\n\r\n".encode())
    assert status_of(raw) == 413 and b"exceeds the limit" in raw


def test_a_chunked_body_over_the_limit_is_413(server):
    chunk = b"x" * (MAX_BODY // 2)
    data = (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .encode() + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
    raw = raw_exchange(server, data)
    assert status_of(raw) == 413, raw[:200]


def test_a_chunked_body_is_accepted(server):
    body = json.dumps({"instances": [USER]}).encode()
    data = (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    raw = raw_exchange(server, data)
    assert status_of(raw) == 200, raw[:200]


@pytest.mark.parametrize("head", [
    b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"BREW /v1/models/retrieval HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/models/retrieval HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
], ids=["bad-length", "negative-length", "unknown-method", "http-9.9", "tls-hello"])
def test_broken_http_is_4xx(server, head):
    raw = raw_exchange(server, head)
    assert 400 <= status_of(raw) < 500, raw[:200]


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND"])
def test_a_method_no_route_takes_is_405_on_the_model_paths_too(server, method):
    # ModelFastPath passes these to the FastAPI app, whose router answers them.
    for path in (PREDICT, INFER):
        status, body, _ = request(server, method, path)
        assert status == 405 and method in body["error"], (path, status, body)


def test_the_server_is_unharmed_after_all_that(server):
    assert request(server, "POST", PREDICT, {"instances": [USER]})[0] == 200


# --------------------------------------------------------------------------
# `recsys serve`: the command


def _recsys(*args, **kwargs):
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    return subprocess.Popen([recsys, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("how", ["SIGINT while ignored by the parent", "SIGTERM"])
def test_serve_prints_its_url_and_stops_cleanly(pushed, tmp_path, how):
    """`recsys serve` on a run root, over HTTP/1.1 keep-alive, then stopped
    by Ctrl-C (also when started in the background with SIGINT ignored) or
    by Kubernetes' SIGTERM: exit 0, no traceback."""
    root = tmp_path / "root"
    copy_version(pushed[1], str(root / "serving" / MODEL), pushed[0])
    ignore = ((lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
              if "ignored" in how else None)
    proc = _recsys("serve", "--root", str(root), "--port", "0", preexec_fn=ignore)
    try:
        line = proc.stdout.readline()
        assert f"version {pushed[0]}" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        assert host == "127.0.0.1"
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for _ in range(3):  # one connection, kept alive
            conn.request("POST", PREDICT, body=json.dumps({"instances": [USER]}))
            response = conn.getresponse()
            assert response.status == 200 and response.version == 11
            response.read()
        conn.close()
        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        code = proc.wait(timeout=60)
        stderr = proc.stderr.read()
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_a_model_dir_under_another_name(pushed, tmp_path):
    model_dir = tmp_path / "exact"
    copy_version(pushed[1], str(model_dir), pushed[0])
    proc = _recsys("serve", "--model-dir", str(model_dir), "--model-name", "twin",
                   "--port", "0", "--max-batch-size", "16", "--batch-timeout-ms", "2")
    try:
        line = proc.stdout.readline()
        assert "'twin'" in line and "/v1/models/twin" in line, line + proc.stderr.read()
        host, port = line.split(" at ")[1].split()[0].removeprefix("http://") \
            .split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/v2/models/twin/infer",
                     body=json.dumps({"inputs": v2_tensors({k: [v] for k, v in USER.items()})}))
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_serve_refuses_bad_settings(tmp_path):
    proc = _recsys("serve", "--model-dir", str(tmp_path), "--max-batch-size", "0")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "--max-batch-size must be at least 1, got 0" in stderr
    assert "Traceback" not in stderr
