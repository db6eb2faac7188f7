"""What the served model was blessed with, kept beside it in the serving dir.

The no-regression check compares a new model with the model served now. In
a local run (and on Vertex) TFX's resolver finds the last blessed model in ML
Metadata. The open-source Kubeflow Pipelines backend runs no resolver, so
there the record travels with the served model instead:

  1. the evaluator writes an `EvaluationRecord` of the model it judged (its
     SavedModel path, overall metrics, gate) into its ModelBlessing
     (`BLESSING_RECORD`);
  2. the pusher copies it into each version it publishes
     (`<version>/VERSION_RECORD`, under assets.extra/, which servers ignore;
     a rollback's copy of a version carries it along);
  3. the next evaluator, given the serving dir, reads the newest version's
     record (`newest_served`): the model servers load now, the path of the
     model it was evaluated as, and the metrics it was blessed with.

All I/O goes through TFX's fileio, so the serving dir may be a gs:// prefix;
fileio (and with it TensorFlow) is imported only when called.
"""

import dataclasses
import json
import os
from typing import Dict, Optional

# In the ModelBlessing's directory.
BLESSING_RECORD = "evaluation_record.json"
# In a published version's directory.
VERSION_RECORD = os.path.join("assets.extra", "tfx_recsys_evaluation.json")


@dataclasses.dataclass(frozen=True)
class EvaluationRecord:
    """An evaluated model and the overall metrics it was blessed with.

    model_path: the evaluated model's SavedModel directory (the Trainer's
      serving model dir; with the final fit, the model the refit replaced).
    overall: overall metrics of that model ({"recall@10": 0.31, ...}).
    metric: the metric the gate compared.
    blessed: whether the gate blessed it.
    """

    model_path: str
    overall: Dict[str, float]
    metric: str
    blessed: bool

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "EvaluationRecord":
        data = json.loads(text)
        return cls(model_path=str(data["model_path"]),
                   overall={k: float(v) for k, v in data["overall"].items()},
                   metric=str(data["metric"]), blessed=bool(data["blessed"]))


@dataclasses.dataclass(frozen=True)
class ServedRecord:
    """The newest published version and the record it carries."""

    version: int
    version_dir: str
    record: EvaluationRecord


def _fileio():
    from tfx.dsl.io import fileio

    return fileio


def write_blessing_record(blessing_uri: str, record: EvaluationRecord) -> None:
    """The evaluator's step: the record into its ModelBlessing."""
    fileio = _fileio()
    fileio.makedirs(blessing_uri)
    with fileio.open(os.path.join(blessing_uri, BLESSING_RECORD), "w") as f:
        f.write(record.to_json())


def copy_to_version(blessing_uri: str, version_dir: str) -> bool:
    """The pusher's step: the blessing's record into a (staged) version.
    False if the blessing has none (an evaluator older than the record)."""
    fileio = _fileio()
    source = os.path.join(blessing_uri, BLESSING_RECORD)
    if not fileio.exists(source):
        return False
    destination = os.path.join(version_dir, VERSION_RECORD)
    fileio.makedirs(os.path.dirname(destination))
    fileio.copy(source, destination, overwrite=True)
    return True


def _versions(serving_dir: str):
    """Published version numbers under serving_dir, newest first."""
    fileio = _fileio()
    if not fileio.isdir(serving_dir):
        return []
    # Object stores list directories with a trailing "/".
    names = (name.rstrip("/") for name in fileio.listdir(serving_dir))
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


def newest_served(serving_dir: str) -> Optional[ServedRecord]:
    """The record of the version servers load now (the highest number), or
    None: nothing published yet, or that version carries no record (pushed
    before records were written). Only the newest counts: an older version
    is not what is served."""
    fileio = _fileio()
    versions = _versions(serving_dir)
    if not versions:
        return None
    version_dir = os.path.join(serving_dir, str(versions[0]))
    path = os.path.join(version_dir, VERSION_RECORD)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        record = EvaluationRecord.from_json(f.read())
    return ServedRecord(version=versions[0], version_dir=version_dir, record=record)
