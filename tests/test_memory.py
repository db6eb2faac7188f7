"""tfx_recsys/memory.py: the helpers the evaluator and pusher log with."""

import numpy as np

from tfx_recsys import memory


def test_resident_memory_grows_with_a_touched_array_and_trim_runs():
    before = memory.resident_gib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
    during = memory.resident_gib()
    assert 0 < before and during - before > 0.04
    del block
    memory.release_free_memory()
    assert memory.resident_gib() < during
