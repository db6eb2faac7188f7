"""Shared test setup: environment as TFX's own tests set it, tiny data."""

import os

# Before TensorFlow is imported anywhere: Keras 2 for TFRS, quiet C++ logs,
# no gRPC fork handlers (Beam), few threads on a 2-core machine.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest  # noqa: E402

from tfx_recsys.data import synthetic  # noqa: E402

TINY = dict(num_users=60, num_items=80, num_interactions=1200, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A seeded synthetic dataset in the native format (60 users, 80 items)."""
    directory = str(tmp_path_factory.mktemp("tiny_data"))
    synthetic.generate_synthetic(directory, **TINY)
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data):
    """One in-process pipeline run on the tiny dataset; returns its RunPaths."""
    from tfx_recsys import config
    from tfx_recsys.pipeline import local_runner

    root = str(tmp_path_factory.mktemp("tiny_run"))
    # recall@100 cannot separate models on an 80-item corpus: gate on @10.
    return local_runner.run(tiny_data, root,
                            training=config.TwoTowerConfig(epochs=5, batch_size=256),
                            top_ks=(5, 10, 50),
                            blessing=config.BlessingConfig(metric="recall@10"))


def copy_with_extra_row(data_dir, destination, file_name: str, row: str):
    """A copy of a native dataset with `row` appended to one of its files.

    Returns (the copy's directory, the 1-based line number of that row).
    """
    import shutil

    shutil.copytree(data_dir, destination)
    path = os.path.join(destination, file_name)
    with open(path, "a") as f:
        f.write(row + "\n")
    with open(path) as f:
        return str(destination), len(f.read().splitlines())
