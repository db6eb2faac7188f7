"""The `recsys` command as a user runs it: a real process, real exit codes."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import copy_with_extra_row

RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")


def recsys(*args, timeout=600):
    return subprocess.run([RECSYS, *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("recsys: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_cli_module_imports_no_tensorflow():
    code = ("import sys, tfx_recsys.cli, tfx_recsys.config, tfx_recsys.data.native; "
            "heavy = [m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recommend_without_a_root(tmp_path):
    assert_one_line_error(recsys("recommend", "--root", str(tmp_path / "nope"), "--user", "1"),
                          "does not exist")


def test_recommend_without_a_pushed_model(tmp_path):
    assert_one_line_error(recsys("recommend", "--root", str(tmp_path), "--user", "1"),
                          "no pushed model")


def test_recommend_for_an_unknown_user(tiny_run):
    assert_one_line_error(recsys("recommend", "--root", tiny_run.root, "--user", "nobody"),
                          "unknown user 'nobody'", "not among the 60 users")


def test_recommend_prints_top_k_with_titles(tiny_run):
    proc = recsys("recommend", "--root", tiny_run.root, "--user", "u1", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("top 3 for user u1")
    assert [l.split(".")[0].strip() for l in lines[1:]] == ["1", "2", "3"]
    assert all("Item " in l and "score" in l for l in lines[1:])


def _item_lines(stdout: str) -> list:
    return stdout.strip().splitlines()[1:]


def test_recommend_asks_a_running_server_and_answers_the_same(tiny_run, tmp_path):
    """With `recsys serve` up on the run's model, recommend answers from it,
    without TensorFlow, the same list as the SavedModel loaded here; after
    the server stops, it loads the model again."""
    env = dict(os.environ, RECSYS_SERVER_REGISTRY=str(tmp_path / "servers"))
    loaded = recsys("recommend", "--root", tiny_run.root, "--user", "u1", "-k", "5")
    assert loaded.returncode == 0, loaded.stderr
    assert "answered by the server" not in loaded.stdout
    server = subprocess.Popen([RECSYS, "serve", "--root", tiny_run.root, "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
    try:
        line = server.stdout.readline()
        assert "serving" in line, line + server.stderr.read()
        url = line.split(" at ")[1].split("/v1/")[0]
        code = ("import sys; from tfx_recsys import cli; "
                f"rc = cli.main(['recommend', '--root', {tiny_run.root!r}, '--user', 'u1', "
                "'-k', '5']); assert rc == 0; "
                "assert 'tensorflow' not in sys.modules, 'imported TensorFlow'")
        asked = subprocess.run([sys.executable, "-c", code], capture_output=True,
                               text=True, env=env, timeout=120)
        assert asked.returncode == 0, asked.stderr
        assert f"(answered by the server at {url}):" in asked.stdout.splitlines()[0]
        assert _item_lines(asked.stdout) == _item_lines(loaded.stdout)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    assert os.listdir(tmp_path / "servers") == []  # the server unregistered
    after = subprocess.run([RECSYS, "recommend", "--root", tiny_run.root, "--user", "u1",
                            "-k", "5"], capture_output=True, text=True, env=env)
    assert after.returncode == 0 and "answered by" not in after.stdout
    assert _item_lines(after.stdout) == _item_lines(loaded.stdout)


def test_run_on_a_directory_missing_a_file(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    os.remove(data / "users.csv")
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "missing users.csv")


@pytest.mark.integration
@pytest.mark.parametrize("process_per_component", ["off", "on"])
def test_run_stops_when_too_many_rows_are_rejected_naming_file_and_row(
        tiny_data, tmp_path, process_per_component):
    # One bad row of 81 is over the default 1% limit: the run stops and says
    # which file, which row and why, and where the full list is; also when
    # ExampleGen fails in a process of its own.
    data, line = copy_with_extra_row(tiny_data, tmp_path / "data", "items.csv",
                                     "i999,Broken,nineteen-ninety,Drama")
    proc = recsys("run", "--data", data, "--root", str(tmp_path / "r"),
                  "--process-per-component", process_per_component)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "items.csv: 1 of 81 rows rejected" in proc.stderr
    assert f"row {line}" in proc.stderr and "release_year" in proc.stderr
    assert "rejected_rows.csv" in proc.stderr and "max_rejected_fraction" in proc.stderr


def test_rollback_serves_an_older_version_again(tiny_run, tmp_path):
    serving = tmp_path / "serving"
    [version] = os.listdir(tiny_run.serving_dir)
    for model in ("retrieval", "retrieval_bruteforce", "retrieval_embeddings"):
        source = os.path.join(os.path.dirname(tiny_run.serving_dir), model, version)
        for number in ("100", "200"):
            shutil.copytree(source, serving / model / number)
    (serving / "retrieval" / "200" / "marker").write_text("the bad one")
    proc = recsys("rollback", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    newest = max(int(v) for v in os.listdir(serving / "retrieval"))
    assert newest > 200 and f"version 100 is now served again as version {newest}" in proc.stdout
    assert not (serving / "retrieval" / str(newest) / "marker").exists()
    assert (serving / "retrieval_bruteforce" / str(newest) / "saved_model.pb").exists()
    assert_one_line_error(recsys("rollback", "--root", str(tmp_path), "--to", "5"),
                          "no version 5")


def test_rollback_with_a_single_version(tiny_run, tmp_path):
    shutil.copytree(tiny_run.root, tmp_path / "root")
    assert_one_line_error(recsys("rollback", "--root", str(tmp_path / "root")),
                          "nothing to roll back to")


def test_serve_answers_a_real_http_client(tiny_run):
    import json
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:  # a free port for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([RECSYS, "serve", "--root", tiny_run.root, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/retrieval:predict"
        body = json.dumps({"instances": [{"user_id": "u1", "age": 30, "gender": "F",
                                          "occupation": "writer", "zip_code": "1"}]})
        deadline = time.time() + 120
        while True:
            try:
                request = urllib.request.Request(url, body.encode(), method="POST")
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "server did not come up"
                time.sleep(0.5)
        [prediction] = answer["predictions"]
        assert len(prediction["item_ids"]) == len(prediction["scores"]) > 0
        assert prediction["scores"] == sorted(prediction["scores"], reverse=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0


def test_run_refuses_an_unknown_blessing_metric(tmp_path):
    assert_one_line_error(recsys("run", "--root", str(tmp_path), "--blessing-metric", "recall@7"),
                          "--blessing-metric", "recall@100")


def test_runs_prints_one_line_per_pipeline_run(tiny_run):
    proc = recsys("runs", "--root", tiny_run.root)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split()[:6] == ["run", "kind", "spans", "ran", "cached", "failed"]
    assert len(rows) >= 1
    [version] = os.listdir(tiny_run.serving_dir)
    assert any(row.split()[-2:] == ["yes", version] for row in rows)


def test_lineage_leads_from_the_pushed_model_to_the_data_and_draws_it(tiny_run, tiny_data):
    import xml.dom.minidom

    proc = recsys("lineage", "--root", tiny_run.root)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for fact in ("PushedModel", "<- ScannPusher", "<- Trainer", "<- Transform",
                 "<- InteractionsExampleGen", f"input_base: {tiny_data}",
                 "input_fingerprint:", "code_fingerprint=", "blessed: 1",
                 "index_recall:", "schema_file:"):
        assert fact in text, fact
    svg = text.strip().splitlines()[-1].split("picture: ")[1]
    drawing = xml.dom.minidom.parse(svg)
    labels = [t.firstChild.data for t in drawing.getElementsByTagName("text")]
    assert any(label.startswith("PushedModel") for label in labels)
    assert any(label == "InteractionsExampleGen" for label in labels)
    assert_one_line_error(recsys("lineage", "--root", tiny_run.root, "--version", "1"),
                          "no pushed model with version 1")


def test_run_refuses_impossible_synthetic_sizes(tmp_path):
    assert_one_line_error(recsys("run", "--data", "synthetic", "--root", str(tmp_path),
                                 "--num-users", "0"), "synthetic data:")


def test_serve_on_a_port_in_use(tiny_run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(recsys("serve", "--root", tiny_run.root, "--port", str(port)),
                              f"cannot listen on 127.0.0.1:{port}")
