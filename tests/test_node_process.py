"""The local runner's process-per-component mode, piece by piece (the
whole mode runs in test_pipeline and test_cli)."""

import os
import pickle
import subprocess
import sys
import time

import pytest

from tfx_recsys.pipeline import component_processes, local_runner, node_process, run_lock


def test_auto_mode_goes_by_the_size_of_the_data(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.csv").write_bytes(b"y" * 24)
    assert local_runner.data_size_bytes(str(tmp_path)) == 1024
    assert local_runner.data_size_bytes(str(tmp_path / "a.csv")) == 1000


@pytest.mark.integration
def test_a_pipeline_that_does_not_compile_fails_with_its_own_error(tiny_data, tmp_path):
    # create_pipeline() runs in the compiling child; its error crosses back.
    with pytest.raises(TypeError, match="not_a_setting"):
        local_runner.run(tiny_data, str(tmp_path), process_per_component=True,
                         not_a_setting=1)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".nodes-")]
    assert (tmp_path / run_lock.LOCK_FILE).read_text().strip() == "{}"  # run over


def test_a_component_process_that_leaves_no_result_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="Trainer ended without a result"):
        component_processes.read_node_result(str(tmp_path / "missing"), "Trainer")


def test_errors_cross_the_process_boundary_as_they_were():
    from tfx_recsys.errors import DataError

    error = DataError("items.csv: 1 of 81 rows rejected")
    assert node_process._picklable(error) is error

    class Local(Exception):  # not importable by name: cannot be unpickled
        pass

    crossed = node_process._picklable(Local("boom"))
    assert isinstance(crossed, RuntimeError) and str(crossed) == "Local: boom"
    pickle.loads(pickle.dumps(crossed))


def test_a_child_dies_with_its_parent(tmp_path):
    """A run killed hard (SIGKILL) must not leave a component running on."""
    marker = tmp_path / "child.pid"
    parent_code = (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, %s=str(os.getpid()))\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import os, sys, time; "
        "from tfx_recsys.pipeline import node_process; node_process._die_with_parent(); "
        "open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(120)', sys.argv[1]],"
        " env=env)\n"
        "time.sleep(120)\n" % node_process.PARENT_PID_ENV)
    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(marker)])
    try:
        for _ in range(600):
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.1)
        child_pid = int(marker.read_text())
        parent.kill()
        parent.wait()
        for _ in range(100):
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            # A zombie (already dead, not yet reaped by init) also counts.
            with open(f"/proc/{child_pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the child outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
