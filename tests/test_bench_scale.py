"""bench/scale.py's measuring parts: progress-line windows, process-tree
memory and the table (the runs themselves are `make bench-scale`)."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import bench_module


@pytest.fixture(scope="module")
def scale():
    return bench_module("scale")


def test_component_windows_pair_running_and_done_lines(scale):
    lines = [(1.0, "  ExampleGen                 running ..."),
             (2.0, "noise"),
             (5.0, "  ExampleGen                 done in    3.9 s"),
             (5.5, "  Trainer                    running ..."),
             (9.0, "  Trainer                    done in    3.4 s")]
    assert scale.component_windows(lines) == [("ExampleGen", 1.0, 5.0, 3.9),
                                             ("Trainer", 5.5, 9.0, 3.4)]


def test_tree_memory_counts_child_processes(scale):
    child = subprocess.Popen([sys.executable, "-c",
                              "x = bytearray(200 << 20); import time; time.sleep(30)"])
    try:
        own = scale.tree_memory(os.getpid())
        deadline = time.monotonic() + 20
        while scale.tree_memory(os.getpid())["pss"] < own["pss"] + (150 << 20):
            assert time.monotonic() < deadline, "the child's 200 MiB never showed"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()


def test_sampler_peak_is_within_the_window(scale):
    sampler = scale.MemorySampler(os.getpid())
    sampler.samples = [(t, {"pss": pss, "rss": 2 * pss, "largest_rss": pss})
                       for t, pss in ((0.0, 10), (1.0, 50), (2.0, 20))]
    assert sampler.peak() == 50
    assert sampler.peak("rss", 1.5, 3.0) == 40
    assert sampler.peaks_gib(1.5, 3.0)["largest_process_rss_gib"] == 20 / scale.GIB


def test_shared_pages_count_once_in_pss_and_twice_in_rss(scale):
    """A forked child shares its parent's pages: the tree's PSS barely
    grows, its RSS sum doubles them."""
    code = ("import os, time; x = bytearray(300 << 20); pid = os.fork()\n"
            "time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while True:
            memory = scale.tree_memory(parent.pid)
            if memory["rss"] > (550 << 20) and len(scale._children(parent.pid)) == 1:
                break
            assert time.monotonic() < deadline, memory
            time.sleep(0.1)
        assert memory["pss"] < memory["rss"] - (250 << 20)
        assert memory["largest_rss"] > (300 << 20)
    finally:
        for child in scale._children(parent.pid):
            os.kill(child, 9)
        parent.kill()
        parent.wait()


def test_markdown_has_a_row_per_component_and_the_verdict(scale):
    memory = {"peak_pss_gib": 2.5, "peak_rss_gib": 3.0, "largest_process_rss_gib": 2.0}
    component = {"component": "Transform", "seconds": 12.0, **memory}
    result = {"sizes": scale.SIZES["10M"], "generate_seconds": 20.0,
              "wall_seconds": 100.0, "peak_pss_gib": 7.5, "peak_rss_gib": 8.5,
              "largest_process_rss_gib": 6.0, "data_bytes": 2 ** 30,
              "components": [component]}
    text = scale.markdown({"10M": result})
    assert "| Transform | 12 s / 2.50 (3.00) GiB |" in text
    assert "**100 s / 7.50 (8.50) GiB**" in text
    assert "peak memory 7.50 GiB (PSS summed over the run's processes) vs target " \
           "<= 8 GiB: met; RSS summed 8.50 GiB, largest single process 6.00 GiB" in text


def test_cost_table_gives_each_ratio_and_names_those_over_the_target(scale):
    result = {"components": [{"component": "Transform", "seconds": 100.0},
                             {"component": "Trainer", "seconds": 30.0}],
              "bare_seconds": {"Transform": 10.0, "Trainer": 20.0}}
    text = scale.cost_markdown({"1M": result})
    assert "| Transform | 100 s / 10.0 s = 10.0x |" in text
    assert "| Trainer | 30 s / 20.0 s = 1.5x |" in text
    assert "not met: Transform at 1M (10.0x)" in text
    assert scale.cost_markdown({"1M": dict(result, bare_seconds={})}) == ""


def test_trainer_bare_cost_is_the_epochs_keras_logged():
    costs = bench_module("costs")
    lines = ["Epoch 1/2", "79/79 - 4s - loss: 2585.9 - 4s/epoch - 56ms/step", "Epoch 2/2",
             "79/79 - 3s - loss: 2001.0", "  Trainer done in 20.0 s"]
    assert costs.trainer_epochs(lines) == 7.0
