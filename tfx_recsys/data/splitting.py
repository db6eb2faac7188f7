"""The temporal splits, behaviour features and examples of the interactions:
the rules InteractionsExampleGen applies, and the baselines and benchmarks
reuse.

No TFX or Beam here, so each rule is unit-tested on plain Python values. An
interaction is a row {user_id, item_id, timestamp, ...} (typed by
`tfx_recsys.data.ingest`). Interactions are ordered by (timestamp, item_id)
everywhere, so ties on the timestamp are broken the same way in every rule
and every split is deterministic.

The split kinds (`split.kind` of the dataset config):

* per_user_temporal: for each user, the latest floor(eval_fraction * n)
  interactions -> eval, the rest -> train (users with fewer than
  1 / eval_fraction interactions are only in train);
* global_time: interactions at or after one cut time -> eval; the cut is
  `cut_timestamp`, or `global_time_cut` of all timestamps;
* leave_last_out: each user's latest interaction -> eval (users with one
  interaction stay in train);
* random: eval when a seeded hash of (user, item, timestamp, seed) falls
  below eval_fraction (deterministic; leaks the future: for comparison).

Behaviour features (`add_behaviour_features`), the same rule for train and
eval examples: `history` = the item ids of the user's *train* interactions
with a timestamp strictly before this one's, oldest first, the last
`history_length` of them; `seconds_since_previous` = this timestamp minus
the latest of those timestamps (absent when there is none). An eval
interaction is therefore never in any history, and no history holds the
future or the interaction itself.
"""

import hashlib
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tfx_recsys import config as pipeline_config
from tfx_recsys import dataset_config as dc

Row = Dict[str, object]
TRAIN = pipeline_config.TRAIN_SPLIT
EVAL = pipeline_config.EVAL_SPLIT


def order_key(row: Row) -> Tuple[int, str]:
    """The order of interactions in every rule: (timestamp, item_id)."""
    return row[dc.TIMESTAMP], str(row[dc.ITEM_ID])


# --------------------------------------------------------------------------
# Splits: each takes one user's interactions and returns (split, row) pairs
# in time order.


def split_user_history(interactions: Iterable[Row],
                       eval_fraction: float) -> List[Tuple[str, Row]]:
    """per_user_temporal: the latest floor(eval_fraction * n) -> eval."""
    ordered = sorted(interactions, key=order_key)
    first_eval = len(ordered) - math.floor(eval_fraction * len(ordered))
    return [(TRAIN if i < first_eval else EVAL, row)
            for i, row in enumerate(ordered)]


def split_leave_last_out(interactions: Iterable[Row]) -> List[Tuple[str, Row]]:
    """leave_last_out: the latest interaction -> eval, unless it is the only one."""
    ordered = sorted(interactions, key=order_key)
    first_eval = len(ordered) - 1 if len(ordered) > 1 else len(ordered)
    return [(TRAIN if i < first_eval else EVAL, row)
            for i, row in enumerate(ordered)]


def split_at_time(interactions: Iterable[Row], cut: int) -> List[Tuple[str, Row]]:
    """global_time: timestamp >= cut -> eval."""
    return [(EVAL if row[dc.TIMESTAMP] >= cut else TRAIN, row)
            for row in sorted(interactions, key=order_key)]


def global_time_cut(timestamps: Iterable[int], eval_fraction: float) -> int:
    """The cut of global_time when the config gives none: the timestamp of
    the floor(eval_fraction * n)-th latest interaction, so that (ties aside)
    that many interactions are at or after it; one past the latest timestamp
    (no eval) when that number is 0. Raises ValueError for no timestamps."""
    ordered = sorted(timestamps)
    if not ordered:
        raise ValueError("global_time_cut needs at least one timestamp")
    num_eval = math.floor(eval_fraction * len(ordered))
    if num_eval == 0:
        return ordered[-1] + 1
    return ordered[len(ordered) - num_eval]


def in_random_eval(user_id: str, item_id: str, timestamp: int, seed: int,
                   eval_fraction: float) -> bool:
    """random: a hash of (user, item, timestamp, seed), uniform in [0, 1),
    below eval_fraction. sha256 rather than hash(), which is salted per
    process."""
    key = "\x1f".join((str(seed), str(user_id), str(item_id), str(timestamp)))
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < eval_fraction


def split_random(interactions: Iterable[Row], eval_fraction: float,
                 seed: int) -> List[Tuple[str, Row]]:
    """random: each interaction by `in_random_eval`."""
    return [(EVAL if in_random_eval(row[dc.USER_ID], row[dc.ITEM_ID],
                                    row[dc.TIMESTAMP], seed, eval_fraction)
             else TRAIN, row)
            for row in sorted(interactions, key=order_key)]


def split_user(interactions: Iterable[Row], split: dc.Split,
               cut: Optional[int] = None) -> List[Tuple[str, Row]]:
    """One user's interactions split by `split.kind`, in time order.

    cut: global_time only: the cut time (split.cut_timestamp, or
      global_time_cut of all interactions, computed by the caller).
    """
    if split.kind == "per_user_temporal":
        return split_user_history(interactions, split.eval_fraction)
    if split.kind == "leave_last_out":
        return split_leave_last_out(interactions)
    if split.kind == "random":
        return split_random(interactions, split.eval_fraction, split.seed)
    if split.kind == "global_time":
        if cut is None:
            raise ValueError("the global_time split needs the cut time")
        return split_at_time(interactions, cut)
    raise ValueError(f"unknown split kind {split.kind!r}")


# --------------------------------------------------------------------------
# Behaviour features


def add_behaviour_features(assigned: Iterable[Tuple[str, Row]],
                           history_length: int) -> List[Tuple[str, Row]]:
    """Adds `history` and `seconds_since_previous` to one user's rows.

    assigned: (split, row) pairs of one user, any order.
    Returns the pairs in time order, each row a copy with
    HISTORY: list of item ids (oldest first, at most history_length; [] when
    none) and SECONDS_SINCE_PREVIOUS: int, or None when no train
    interaction precedes (see the module docstring).
    """
    ordered = sorted(assigned, key=lambda pair: order_key(pair[1]))
    train = [row for split, row in ordered if split == TRAIN]
    result = []
    before = 0  # train interactions strictly before the current timestamp
    for split, row in ordered:
        timestamp = row[dc.TIMESTAMP]
        while before < len(train) and train[before][dc.TIMESTAMP] < timestamp:
            before += 1
        earlier = train[max(0, before - history_length):before]
        result.append((split, {
            **row,
            dc.HISTORY: [r[dc.ITEM_ID] for r in earlier],
            dc.SECONDS_SINCE_PREVIOUS: (
                timestamp - train[before - 1][dc.TIMESTAMP] if before else None),
        }))
    return result


def user_examples(interactions: Iterable[Row], split: dc.Split,
                  history_length: int, cut: Optional[int] = None
                  ) -> List[Tuple[str, Row]]:
    """One user's (split, row) pairs with behaviour features, in time order."""
    return add_behaviour_features(split_user(interactions, split, cut),
                                  history_length)


def refit_examples(interactions: Iterable[Row], history_length: int) -> List[Row]:
    """One user's rows for the final fit (the model refit on every
    interaction once one is blessed): all of them as train, in time order,
    with the behaviour features of a split that holds nothing out, so each
    history runs up to the interaction before (as the served history does)."""
    return [row for _, row in add_behaviour_features(
        [(TRAIN, row) for row in interactions], history_length)]


# --------------------------------------------------------------------------
# tf.Examples


def to_tf_example(row: Row, columns: Sequence[dc.ExampleColumn]) -> bytes:
    """Serialises `row` as a tf.Example holding `columns`.

    Each column's value is a scalar or a list; None or an empty list leaves
    the feature absent. Values are written as the column's dtype: 'bytes'
    (UTF-8 text), 'int64' or 'float'. Names in `row` that are not columns
    are not written.
    """
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for column in columns:
        value = row.get(column.name)
        if value is None or (isinstance(value, list) and not value):
            continue
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[column.name]
        if column.dtype == "bytes":
            feature.bytes_list.value.extend(str(v).encode("utf-8") for v in values)
        elif column.dtype == "int64":
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return example.SerializeToString()
