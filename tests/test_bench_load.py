"""bench/load.py's load generator and verdict, on a small local HTTP server."""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import load  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, like the new server

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        user = json.loads(body)["instances"][0]["user_id"]
        status = 500 if user == "bad" else 200
        answer = json.dumps({"predictions": [{"item_ids": ["1", "2"]}]}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        if user == "close":
            self.send_header("Connection", "close")   # the old server's way
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _requests(*users):
    path, body = load.PROTOCOLS["v1"]
    return [load.http_request("POST", path, body({"user_id": u, "age": 1.0})) for u in users]


def test_keep_alive_and_reconnecting_clients_are_counted(port):
    result = load.run_load(port, _requests("a", "close", "b"), clients=3, per_client=20,
                           seconds=30, check=load._checker("v1"))
    assert result["requests"] == result["ok"] == 60 and result["errors"] == 0
    assert result["p50_ms"] > 0 and result["p99_ms"] >= result["p50_ms"]
    assert result["requests_per_s"] > 0


def test_errors_are_counted_by_kind(port):
    result = load.run_load(port, _requests("a", "bad"), clients=1, per_client=10,
                           seconds=30, check=load._checker("v1"))
    assert result["ok"] == 5 and result["errors"] == 5
    assert result["error_kinds"] == {"status 500": 5}


def test_refused_connections_are_errors_not_crashes():
    result = load.run_load(load.free_port(), _requests("a"), clients=2, per_client=3,
                           seconds=5, check=load._checker("v1"))
    assert result["ok"] == 0 and result["errors"] == 6


def test_the_verdict_reads_the_rows():
    def row(server, protocol, clients, rps, p50, p99, errors=0):
        return {"server": server, "protocol": protocol, "clients": clients,
                "requests": 100, "requests_per_s": rps, "p50_ms": p50, "p99_ms": p99,
                "errors": errors, "error_kinds": {}}

    results = {"reference": {"signature_ms_p50": 2.0, "empty_round_trip_ms_p50": 0.3},
               "servers": [
                   {"server": "before (http.server)",
                    "rows": [row("before (http.server)", "v1", 50, 100, 30, 900)]},
                   {"server": "kserve (ScaNN)",
                    "rows": [row("kserve (ScaNN)", "v1", 1, 250, 3.0, 6),
                             row("kserve (ScaNN)", "v1", 50, 900, 40, 80),
                             row("kserve (ScaNN)", "v2", 50, 400, 40, 80),
                             row("kserve (ScaNN)", "v1", 200, 900, 150, 300, errors=2)]}]}
    verdicts = {c["target"].split(":")[0]: c["verdict"] for c in load.verdict(results)}
    assert verdicts["kserve (ScaNN) v1"] == "NOT met"        # 2 errors at 200 clients
    assert verdicts["v1 at 50 clients"] == "met"             # 9x, p99 80 ms
    assert verdicts["v2 at 50 clients"] == "NOT met"         # 4x
    assert verdicts["one client, v1"] == "met"               # 3.0 <= 1.5 x 2.3


def test_the_one_client_verdict_reads_the_interleaved_comparison():
    one = {"server": "kserve (ScaNN)", "protocol": "v1", "clients": 1, "requests": 100,
           "requests_per_s": 250, "p50_ms": 9.0, "p99_ms": 12, "errors": 0,
           "error_kinds": {}}
    results = {"reference": {"signature_ms_p50": 1.0, "empty_round_trip_ms_p50": 0.2,
                             "interleaved": {"signature_ms_p50": 2.0,
                                             "empty_round_trip_ms_p50": 0.3,
                                             "one_client_ms_p50": {"kserve (ScaNN) v1": 3.0}}},
               "servers": [{"server": "kserve (ScaNN)", "rows": [one]}]}
    (check,) = [c for c in load.verdict(results) if c["target"].startswith("one client")]
    # The interleaved p50s, not the separate ones (9 ms against 1.2 ms).
    assert check["verdict"] == "met" and "ratio 1.30" in check["measured"], check
    results["reference"]["interleaved"]["one_client_ms_p50"]["kserve (ScaNN) v1"] = 3.5
    (check,) = [c for c in load.verdict(results) if c["target"].startswith("one client")]
    assert check["verdict"] == "NOT met"
