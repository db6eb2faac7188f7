"""The `recsys` command as a user runs it: a real process, real exit codes."""

import os
import shutil
import subprocess
import sys

import pytest

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
                          "unknown user 'nobody'", "users.csv")


def test_recommend_prints_top_k_with_titles(tiny_run):
    proc = recsys("recommend", "--root", tiny_run.root, "--user", "u1", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("top 3 for user u1")
    assert [l.split(".")[0].strip() for l in lines[1:]] == ["1", "2", "3"]
    assert all("Item " in l and "score" in l for l in lines[1:])


def test_run_on_a_directory_missing_a_file(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    os.remove(data / "users.csv")
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "missing users.csv")


def test_run_stops_at_a_malformed_row_with_file_and_line(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with open(data / "items.csv", "a") as f:
        f.write("i999,Broken,nineteen-ninety,Drama\n")
    line = len(open(data / "items.csv").read().splitlines())
    proc = recsys("run", "--data", str(data), "--root", str(tmp_path / "r"))
    assert_one_line_error(proc, f"items.csv, line {line}, column 'release_year'")
