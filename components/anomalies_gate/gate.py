"""Pure logic of AnomaliesGate: ExampleValidator's findings as readable lines.

No TFX here: each function takes tensorflow_metadata Anomalies protos.
"""

from typing import Dict, List

from tfx_recsys.errors import DataError


def anomaly_lines(anomalies) -> List[str]:
    """One line per anomaly of one split: "feature 'age': <description>"."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        detail = info.description or info.short_description
        lines.append(f"feature '{feature}': {info.short_description}"
                     + (f" ({detail})" if detail != info.short_description else ""))
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"dataset: {info.short_description} ({info.description})")
    return lines


def check(anomalies_by_split: Dict[str, object], schema_path: str = "",
          anomalies_uri: str = "") -> None:
    """Raises DataError listing every anomaly, split by split; returns if none.

    The message says what to fix: the data, or the schema when the data is
    right and the schema (generated from the dataset config) is too strict.
    """
    found = {split: anomaly_lines(a) for split, a in sorted(anomalies_by_split.items())}
    found = {split: lines for split, lines in found.items() if lines}
    if not found:
        return
    parts = [f"ExampleValidator found {sum(map(len, found.values()))} "
             "anomal(ies) in the examples; the run stops before training:"]
    for split, lines in found.items():
        parts += [f"  split '{split}': {line}" for line in lines]
    parts.append("Fix the data (or the dataset config" + (
        f" and the schema {schema_path}" if schema_path else "")
        + ") and run again." + (f" Full report: {anomalies_uri}" if anomalies_uri else ""))
    raise DataError("\n".join(parts))
