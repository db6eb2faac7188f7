"""bench/recommend.py's table: medians against the targets (the timed runs
themselves are `make bench-recommend`)."""

from tests.conftest import bench_module


def test_the_table_gives_medians_and_verdicts():
    recommend = bench_module("recommend")
    results = {"user": "1", "root_name": "default", "repeats": 3, "items": 10,
               "load": 1.0, "date": "2026-12-08", "machine": "vm, 2 cores",
               "seconds": {"cold": [9.0, 8.0, 30.0], "server": [0.3, 0.9, 0.2],
                           "import_tensorflow": [6.0, 7.0, 6.5],
                           "import_cli": [0.2, 0.2, 0.3]}}
    rows = {line.split(" | ")[0].lstrip("| "): line
            for line in recommend.render(results).splitlines() if line.startswith("| ")}
    cold = rows["recommend, no server (loads the SavedModel)"]
    assert "| 9.00 | 8.00 | 30.00 | not met (<= 5 s) |" in cold
    assert "| 0.30 | 0.20 | 0.90 | met (<= 0.5 s) |" in rows["recommend, `recsys serve` up"]
    assert rows["floor: `python -c 'import tensorflow'`"].endswith("| floor |")
