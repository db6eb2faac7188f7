"""A config stays in its folder, and every way ingestion can fail is one line.

The first half checks `tables` directly (paths resolved inside the data
directory, symlink loops, unreadable files); the second runs `recsys run`
as a user would and checks that each case ends in exactly one
"recsys: error:" line and no traceback, before any pipeline work where the
check allows it.
"""

import dataclasses
import errno
import fcntl
import os
import shutil
import subprocess
import sys

import pytest

from tfx_recsys import cli
from tfx_recsys import dataset_config as dc
from tfx_recsys.data import tables
from tfx_recsys.errors import DataError

RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")
SYNTHETIC = dc.load(dc.builtin_path("synthetic"))
SECRET = "root:TOPSECRET:0:0"


def with_paths(config=SYNTHETIC, allow=False, **paths):
    return dataclasses.replace(config, allow_paths_outside_data=allow, **{
        table: dataclasses.replace(getattr(config, table), path=path)
        for table, path in paths.items()})


@pytest.fixture
def data(tiny_data, tmp_path):
    """A writable copy of the tiny dataset, and a secret file beside it."""
    directory = tmp_path / "data"
    shutil.copytree(tiny_data, directory)
    (tmp_path / "secret.csv").write_text(f"{SECRET}\nx\n")
    return directory


# --------------------------------------------------------------------------
# tables: paths, links, permissions


def test_a_symlink_out_of_the_data_directory_is_refused_without_quoting_the_file(data):
    os.remove(data / "users.csv")
    os.symlink(data.parent / "secret.csv", data / "users.csv")
    with pytest.raises(DataError) as error:
        tables.validate_dataset(SYNTHETIC, str(data))
    message = str(error.value)
    assert message.startswith(f"{data / 'users.csv'}: users.path 'users.csv' leads outside "
                              f"the data directory {data} (it resolves to "
                              f"{data.parent / 'secret.csv'})")
    assert "allow_paths_outside_data: true" in message and SECRET not in message


def test_allow_paths_outside_data_reads_the_file_it_names(data):
    shutil.move(str(data / "users.csv"), str(data.parent / "users.csv"))
    config = with_paths(users="../users.csv", allow=True)
    assert tables.validate_dataset(config, str(data))["users"] == str(
        data.parent / "users.csv")
    with pytest.raises(DataError, match="leads outside the data directory"):
        tables.validate_dataset(dataclasses.replace(config, allow_paths_outside_data=False),
                                str(data))


def test_a_symlink_loop_is_reported_as_such_not_as_missing(data):
    os.remove(data / "items.csv")
    os.symlink(data / "items.csv", data / "items.csv")
    with pytest.raises(DataError, match=f"{data / 'items.csv'}: cannot be read: a symlink "
                                        "loop"):
        tables.validate_dataset(SYNTHETIC, str(data))
    loop = data.parent / "loop"
    os.symlink(loop, loop)
    with pytest.raises(DataError, match=f"{loop}: the data directory cannot be used: a "
                                        "symlink loop"):
        tables.validate_dataset(SYNTHETIC, str(loop))


def test_an_unreadable_file_is_one_line(data, monkeypatch):
    real_open = open

    def open_denied(path, *args, **kwargs):
        if os.fspath(path).endswith("users.csv"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tables, "open", open_denied, raising=False)
    with pytest.raises(DataError) as error:
        tables.validate_dataset(SYNTHETIC, str(data))
    assert str(error.value) == (
        f"{data / 'users.csv'}: cannot be read: permission denied. Make the file "
        "readable by the user running the pipeline, or fix users.path.")


def test_a_directory_where_a_file_is_expected_is_one_line(data):
    os.remove(data / "users.csv")
    os.mkdir(data / "users.csv")
    with pytest.raises(DataError, match="users.csv: is a directory; users.path must name "
                                        "one csv file"):
        tables.validate_dataset(SYNTHETIC, str(data))


# --------------------------------------------------------------------------
# recsys run: one line each, never a traceback


def recsys(*args, timeout=600):
    return subprocess.run([RECSYS, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments, absent=()):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("recsys: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    for fragment in absent:
        assert fragment not in proc.stderr + proc.stdout


def config_file(tmp_path, text=None, **changes):
    """datasets/synthetic.yaml with lines replaced ({old line: new line})."""
    with open(dc.builtin_path("synthetic")) as f:
        yaml_text = f.read() if text is None else text
    for old, new in changes.items():
        assert old in yaml_text
        yaml_text = yaml_text.replace(old, new)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml_text)
    return str(path)


def run(data, tmp_path, dataset):
    return recsys("run", "--data", str(data), "--dataset", dataset,
                  "--root", str(tmp_path / "root"))


@pytest.mark.parametrize("path, fragment", [
    ("../secret.csv", "users.path: '../secret.csv' leads out with '..'"),
    ("/etc/shadow", "users.path: '/etc/shadow' is absolute"),
])
def test_run_with_a_table_path_out_of_the_data_directory(data, tmp_path, path, fragment):
    dataset = config_file(tmp_path, **{"  path: users.csv": f"  path: {path}"})
    assert_one_line_error(run(data, tmp_path, dataset), fragment,
                          "allow_paths_outside_data", absent=[SECRET])


def test_run_with_a_name_that_is_a_path(data, tmp_path):
    dataset = config_file(tmp_path, **{"name: synthetic": "name: ../../x"})
    assert_one_line_error(run(data, tmp_path, dataset),
                          "name: '../../x' is not a dataset name")
    assert not os.path.exists(tmp_path / "x.pbtxt")


def test_run_with_a_duplicate_yaml_key(data, tmp_path):
    dataset = config_file(tmp_path, **{"  path: users.csv": "  path: users.csv\n  path: u.csv"})
    assert_one_line_error(run(data, tmp_path, dataset), "duplicate key 'path' (first on line")


def test_run_with_a_symlink_loop(data, tmp_path):
    os.remove(data / "users.csv")
    os.symlink(data / "users.csv", data / "users.csv")
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "users.csv: cannot be read: a symlink loop", absent=["no such file"])


def test_run_with_a_symlink_out_of_the_data_directory(data, tmp_path):
    os.remove(data / "users.csv")
    os.symlink(data.parent / "secret.csv", data / "users.csv")
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "leads outside the data directory", absent=[SECRET])


def test_run_with_a_directory_for_a_file(data, tmp_path):
    os.remove(data / "items.csv")
    os.mkdir(data / "items.csv")
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "items.csv: is a directory")


def test_run_with_a_semicolon_delimited_file(data, tmp_path):
    text = (data / "items.csv").read_text().replace(",", ";")
    (data / "items.csv").write_text(text)
    assert_one_line_error(recsys("run", "--data", str(data), "--root", str(tmp_path / "r")),
                          "the file looks ';'-delimited",
                          'set `csv: {delimiter: ";"}` in the dataset config')


def test_run_with_an_unreadable_file(data, tmp_path, monkeypatch, capsys):
    # Tests run as root, who reads any file: the refusal is simulated.
    real_open = open

    def open_denied(path, *args, **kwargs):
        if os.fspath(path).endswith("users.csv"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tables, "open", open_denied, raising=False)
    assert cli.main(["run", "--data", str(data), "--root", str(tmp_path / "r")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"recsys: error: {data / 'users.csv'}: cannot be read: permission "
                      "denied. Make the file readable by the user running the pipeline, "
                      "or fix users.path."]


def test_a_second_run_on_the_same_root_is_one_line(tiny_data, tmp_path):
    from tfx_recsys.pipeline import run_lock

    root = tmp_path / "root"
    root.mkdir()
    with open(root / run_lock.LOCK_FILE, "w") as lock:
        lock.write('{"run_id": "r1", "pid": 123, "host": "h"}\n')
        lock.flush()
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = recsys("run", "--data", tiny_data, "--root", str(root))
    assert_one_line_error(proc, f"another pipeline run is using {root} (run r1, "
                                "process 123 on h): wait for it to end")
