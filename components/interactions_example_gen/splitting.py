"""Pure logic of InteractionsExampleGen: typed rows, the temporal split, joins.

No TFX or Beam here, so each rule is unit-tested on plain Python values.

The split rule (documented in the README): for each user, order their
interactions by (timestamp, item_id) and put the latest
floor(eval_fraction * n) of them into `eval`, the rest into `train`. Evaluation
therefore never sees a user's future in training; ties on the timestamp are
broken by item_id so the split is deterministic.
"""

import math
from typing import Dict, Iterable, List, Tuple

from tfx_recsys.data import native

Row = Dict[str, object]


def _parse_number(raw: str, kind, path: str, line: int, column: str,
                  optional: bool = False):
    if raw == "" and optional:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise native.DataError(
            f"{native.location(path, line, column)}: expected "
            f"{'an integer' if kind is int else 'a number'}, got {raw!r}. "
            "Fix or remove the row.") from None


def _require(raw: str, path: str, line: int, column: str) -> str:
    if raw == "":
        raise native.DataError(
            f"{native.location(path, line, column)} is empty; every row "
            "needs a value there.")
    return raw


def parse_interaction(row: Dict[str, str], path: str, line: int) -> Row:
    return {
        "user_id": _require(row["user_id"], path, line, "user_id"),
        "item_id": _require(row["item_id"], path, line, "item_id"),
        "rating": _parse_number(row["rating"], float, path, line, "rating"),
        "timestamp": _parse_number(row["timestamp"], int, path, line,
                                   "timestamp"),
    }


def parse_user(row: Dict[str, str], path: str, line: int) -> Row:
    return {
        "user_id": _require(row["user_id"], path, line, "user_id"),
        "age": _parse_number(row["age"], int, path, line, "age"),
        "gender": row["gender"],
        "occupation": row["occupation"],
        "zip_code": row["zip_code"],
    }


def parse_item(row: Dict[str, str], path: str, line: int) -> Row:
    genres = [g for g in row["genres"].split(native.GENRE_SEPARATOR) if g]
    return {
        "item_id": _require(row["item_id"], path, line, "item_id"),
        "title": row["title"],
        "release_year": _parse_number(row["release_year"], int, path, line,
                                      "release_year", optional=True),
        "genres": genres,
    }


def split_user_history(interactions: Iterable[Row],
                       eval_fraction: float) -> List[Tuple[str, Row]]:
    """Assigns one user's interactions to 'train' or 'eval' by time.

    Returns (split_name, interaction) pairs in time order.
    """
    ordered = sorted(interactions,
                     key=lambda r: (r["timestamp"], str(r["item_id"])))
    num_eval = math.floor(eval_fraction * len(ordered))
    first_eval = len(ordered) - num_eval
    return [("train" if i < first_eval else "eval", row)
            for i, row in enumerate(ordered)]


def join_features(interaction: Row, users: Dict[str, Row],
                  items: Dict[str, Row], path: str) -> Row:
    """The interaction with its user's and item's feature columns."""
    user = _feature_row(users, "user_id", interaction, native.USERS_FILE, path)
    item = _feature_row(items, "item_id", interaction, native.ITEMS_FILE, path)
    return {**interaction, **user, **item}


def _feature_row(table: Dict[str, Row], key: str, interaction: Row,
                 table_file: str, path: str) -> Row:
    row = table.get(interaction[key])
    if row is None:
        raise native.DataError(
            f"{path}: {key} {interaction[key]!r} has no row in {table_file}. "
            "Add its features or drop its interactions.")
    return row


def feature_values(row: Row) -> Dict[str, Tuple[str, list]]:
    """Maps each column to (tf.Example list kind, values); None is left out.

    Kinds: 'bytes', 'int64', 'float'. Lists let genres carry many values; an
    unknown release_year or an empty genre list leaves the feature absent.
    """
    kinds = {"rating": "float", "timestamp": "int64", "age": "int64",
             "release_year": "int64"}
    features = {}
    for name, value in row.items():
        if value is None or value == []:
            continue
        values = value if isinstance(value, list) else [value]
        kind = kinds.get(name, "bytes")
        if kind == "bytes":
            values = [str(v).encode("utf-8") for v in values]
        features[name] = (kind, values)
    return features


def to_tf_example(row: Row) -> bytes:
    """Serialises a row as a tf.Example (features from `feature_values`)."""
    from tensorflow.core.example import example_pb2  # proto only, no TF runtime

    example = example_pb2.Example()
    for name, (kind, values) in feature_values(row).items():
        feature = example.features.feature[name]
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        elif kind == "int64":
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example.SerializeToString()
