"""Runs the pipeline on this machine: LocalDagRunner, Beam, SQLite ML Metadata.

Everything a run writes lives under one root directory:
  <root>/pipeline/          artifacts of every component execution
  <root>/metadata.sqlite    the ML Metadata store (lineage, cache)
  <root>/serving/<model>/   pushed models, one numbered version each
"""

import dataclasses
import os
from typing import List, Optional

from tfx_recsys import config


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.root, "serving", config.MODEL_NAME)


# In-memory Beam on the FnApiRunner. Not "DirectRunner": since Beam 2.68 it
# first tries the Prism runner, which it downloads from the internet at run
# time. In-memory suits data that fits on one machine.
DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_running_mode=in_memory",
                     "--direct_num_workers=1")


def run(data_path: str, root: str,
        training: Optional[config.TwoTowerConfig] = None,
        beam_pipeline_args: Optional[List[str]] = None,
        enable_cache: bool = True, **pipeline_settings) -> RunPaths:
    """Builds and runs the pipeline on `data_path`; returns the run's paths.

    `pipeline_settings` go to create_pipeline() as they are (e.g. top_ks,
    blessing, index_gate, serving_top_k).
    """
    from tfx import v1 as tfx

    from tfx_recsys.fingerprint import code_fingerprint
    from tfx_recsys.pipeline.pipeline import create_pipeline

    paths = RunPaths(os.path.abspath(root))
    os.makedirs(paths.root, exist_ok=True)
    pipeline = create_pipeline(
        pipeline_name=config.PIPELINE_NAME,
        pipeline_root=paths.pipeline_root,
        data_path=os.path.abspath(data_path),
        schema_path=config.INTERACTIONS_SCHEMA,
        serving_dir=paths.serving_dir,
        training=(training or config.TwoTowerConfig()).to_custom_config(),
        code_fingerprint=code_fingerprint(),
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(
                paths.metadata_path)),
        beam_pipeline_args=list(beam_pipeline_args or DEFAULT_BEAM_ARGS),
        enable_cache=enable_cache,
        **pipeline_settings)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return paths
