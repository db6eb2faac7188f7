"""The data contract: one YAML file per dataset says where its tables are and
what each column is.

No TensorFlow here (the CLI reads configs and must start fast). The config is
parsed into frozen dataclasses, checked with errors that name the file and
the field, and travels to the components as plain JSON (`to_dict`), so
ExampleGen, Transform, both trainers and the evaluator all read one contract
instead of hard-coded column names.

Example (datasets/movielens-100k.yaml is the full one):

    name: movielens-100k
    format: csv                    # csv | parquet | tfrecord
    interactions:
      path: interactions.csv       # relative to the data directory
      user: user_id                # column names in *your* file
      item: item_id
      timestamp: timestamp         # integer seconds since the epoch
      rating: rating               # optional
      min_rating: 4                # optional implicit-feedback rule
      keep_duplicates: false       # exact repeats are dropped and counted
    users:
      path: users.csv
      key: user_id
      features:
        age: {kind: numeric, buckets: 8}
        gender: {kind: categorical}
    items:
      path: items.csv
      key: item_id
      features:
        genres: {kind: multi_categorical, separator: "|"}
        title: {kind: text}
    split: {kind: per_user_temporal, eval_fraction: 0.2}
    history: {length: 50}
    csv: {delimiter: ",", encoding: utf-8}   # optional, csv only

Data that arrives in spans (data/spans.py): a table path may hold TFX's
`{SPAN}` pattern, e.g. `interactions: {path: spans/{SPAN}/interactions.csv}`;
a run reads the latest span (or `recsys run --span N`), and with `window: W`
the interactions of the last W spans. User and item tables are static or per
span (the latest file at or before the span is the table).

A config stays in its folder: table paths are relative to the data
directory and must resolve inside it (no absolute path, no `..`, no symlink
out), unless `allow_paths_outside_data: true` says otherwise; `name` is an
identifier (it names the schema file). Duplicate YAML keys are errors.

What ExampleGen writes (the examples every later component reads): one
tf.Example per interaction with the canonical columns `user_id`, `item_id`
(bytes), `timestamp` (int64), `rating` (float, when configured), every user
and item feature under its own name (value type: KIND_DTYPES; missing
values: see Feature), and the behaviour features `history` and
`seconds_since_previous` (see HISTORY / SECONDS_SINCE_PREVIOUS); one example
per item (the `items` output) with `item_id` and the item features; one
example per user (the `users` output) with `user_id` and the user features.
`DatasetConfig.interaction_columns()`, `item_columns()` and `user_columns()`
list these features with their types and shapes; the schema in schemas/ is
generated from them (tfx_recsys/data/schema.py).
"""

import codecs
import dataclasses
import difflib
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from tfx_recsys.errors import UserError, os_problem

# Canonical names in the examples ExampleGen writes.
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"
# Item ids of the user's *training* interactions strictly before this one's
# timestamp, oldest first, the last `history.length` of them (bytes list;
# absent when there are none). Never an eval interaction, never the future.
HISTORY = "history"
# This interaction's timestamp minus that of the user's latest training
# interaction strictly before it (int64 seconds; absent when none).
SECONDS_SINCE_PREVIOUS = "seconds_since_previous"
RESERVED_NAMES = (USER_ID, ITEM_ID, TIMESTAMP, RATING, HISTORY,
                  SECONDS_SINCE_PREVIOUS)

FORMATS = ("csv", "parquet", "tfrecord")

# Feature kinds and how Transform encodes them (models/features.py):
#   id                 vocabulary (or hashing) -> one id
#   categorical        vocabulary + OOV bucket -> one id
#   multi_categorical  split on `separator`, vocabulary -> a bag of ids
#   numeric            quantile buckets (`buckets`), missing -> own bucket
#   text               lower-cased word tokens, vocabulary -> a bag of ids
#   timestamp          integer seconds, quantile buckets like numeric
KINDS = ("id", "categorical", "multi_categorical", "numeric", "text", "timestamp")
# Example value type of each kind: 'bytes', 'float' or 'int64'.
KIND_DTYPES = {"id": "bytes", "categorical": "bytes", "multi_categorical": "bytes",
               "numeric": "float", "text": "bytes", "timestamp": "int64"}

# TFX's span placeholder in a table path: the digits of a span number.
SPAN_PATTERN = "{SPAN}"

SPLIT_KINDS = ("per_user_temporal", "global_time", "leave_last_out", "random")


class ConfigError(UserError, ValueError):
    """A dataset config that cannot be used; the message names file and field."""


# A dataset name: it names the schema file (schemas/<name>.pbtxt), so no
# path separators and no leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One user or item feature column.

    name: the column name (in the file and in the examples).
    kind: one of KINDS.
    separator: multi_categorical only: splits the value into categories.
    buckets: numeric and timestamp only: number of quantile buckets.
    hash_buckets: id and categorical only: hash into this many buckets
      instead of a vocabulary (for vocabularies too large to store).
    max_tokens: text only: keep the most frequent tokens.
    column: the file's column when it differs from `name` (for a column
      whose own name is reserved or clashes with a feature of the other
      table); None reads the column called `name`.

    Missing values: id, categorical and text features are written as the
    empty string (they always have one value); a missing numeric or
    timestamp value and an empty multi_categorical bag leave the feature
    absent from that example.
    """

    name: str
    kind: str
    separator: str = "|"
    buckets: int = 10
    hash_buckets: int = 0
    max_tokens: int = 5000
    column: Optional[str] = None

    @property
    def dtype(self) -> str:
        return KIND_DTYPES[self.kind]

    @property
    def source_column(self) -> str:
        """The column of the file this feature is read from."""
        return self.column or self.name

    @property
    def required(self) -> bool:
        """Exactly one value in every example (see Missing values above)."""
        return self.kind in ("id", "categorical", "text")

    @property
    def is_bag(self) -> bool:
        """Multi-valued in the transformed output (a SparseTensor of ids)."""
        return self.kind in ("multi_categorical", "text")


@dataclasses.dataclass(frozen=True)
class ExampleColumn:
    """One feature of the tf.Examples that ExampleGen writes.

    dtype: 'bytes', 'int64' or 'float'.
    required: exactly one value in every example (fixed shape [1]);
      otherwise the feature may be absent from an example.
    max_values: the most values one example holds: 1 for scalars, None for
      an unbounded bag (multi_categorical), `history_length` for history.
    """

    name: str
    dtype: str
    required: bool
    max_values: Optional[int] = 1

    @property
    def multivalued(self) -> bool:
        return self.max_values != 1


@dataclasses.dataclass(frozen=True)
class Table:
    """A user or item feature table: its file, key column and features."""

    path: str
    key: str
    features: Tuple[Feature, ...] = ()
    # The key column's own encoding (vocabulary unless hash_buckets > 0).
    hash_buckets: int = 0

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class Interactions:
    """The interactions table: who did what, when.

    min_rating: implicit-feedback rule; when set, only interactions with
      rating >= min_rating are positives (the others are counted and kept out
      of the examples, but remain known as the user's dislikes).
    """

    path: str
    user: str
    item: str
    timestamp: str
    rating: Optional[str] = None
    min_rating: Optional[float] = None
    # Exact repeats (same user, item, timestamp and rating) are dropped and
    # counted unless this is true (data where a repeat is a second event).
    keep_duplicates: bool = False


@dataclasses.dataclass(frozen=True)
class Split:
    """How interactions are split into train and eval.

    per_user_temporal: each user's latest floor(eval_fraction * n)
      interactions by (timestamp, item) -> eval (the default).
    global_time: interactions at or after one cut time -> eval; the cut is
      `cut_timestamp`, or the eval_fraction quantile of all timestamps.
    leave_last_out: each user's latest interaction -> eval (users with one
      interaction stay in train).
    random: each interaction -> eval with probability eval_fraction, from a
      seeded hash (the TFRS tutorial protocol; leaks the future, for
      comparison only).
    """

    kind: str = "per_user_temporal"
    eval_fraction: float = 0.2
    cut_timestamp: Optional[int] = None
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class Csv:
    """How CSV tables are written: one-character field delimiter, and the
    text encoding (one that keeps ASCII as is, e.g. utf-8, latin-1, cp1252;
    utf-8 also reads a leading byte-order mark)."""

    delimiter: str = ","
    encoding: str = "utf-8"


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str
    format: str
    interactions: Interactions
    users: Table
    items: Table
    split: Split = Split()
    history_length: int = 50
    # Row-level problems (malformed rows, bad values, unknown users/items,
    # duplicate keys) are skipped, counted and written to a rejected-rows
    # file; more than this share of any table's rows fails the run instead.
    max_rejected_fraction: float = 0.01
    csv: Csv = Csv()
    # Table paths may be absolute or lead out of the data directory.
    allow_paths_outside_data: bool = False
    # With `{SPAN}` in interactions.path: how many of the latest spans are
    # the data (data/spans.py).
    window: int = 1

    # ---- conversion -----------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """The config in the YAML file's shape: `from_dict` reads it back."""

        def table(t: Table) -> Dict[str, Any]:
            return {"path": t.path, "key": t.key, "hash_buckets": t.hash_buckets,
                    "features": {f.name: {k: v for k, v in dataclasses.asdict(f).items()
                                          if k != "name"} for f in t.features}}

        interactions = dataclasses.asdict(self.interactions)
        # Options added later appear only when set, so the JSON (a cache
        # key of ExampleGen) of a config without them stays the same.
        if not self.interactions.keep_duplicates:
            del interactions["keep_duplicates"]
        result = {"name": self.name, "format": self.format,
                  "interactions": interactions,
                  "users": table(self.users), "items": table(self.items),
                  "split": dataclasses.asdict(self.split),
                  "history": {"length": self.history_length},
                  "max_rejected_fraction": self.max_rejected_fraction}
        if self.csv != Csv():
            result["csv"] = dataclasses.asdict(self.csv)
        if self.allow_paths_outside_data:
            result["allow_paths_outside_data"] = True
        if self.window != 1:
            result["window"] = self.window
        return result

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "DatasetConfig":
        return from_dict(json.loads(text), source="<json>")

    # ---- convenience ----------------------------------------------------

    @property
    def user_features(self) -> Tuple[Feature, ...]:
        return self.users.features

    @property
    def item_features(self) -> Tuple[Feature, ...]:
        return self.items.features

    # ---- the examples ExampleGen writes ----------------------------------

    def interaction_columns(self) -> Tuple[ExampleColumn, ...]:
        """Features of the interaction examples (output `examples`), in order.

        The canonical columns, every user then item feature, then the
        behaviour features (history only when history_length > 0).
        """
        columns = [ExampleColumn(USER_ID, "bytes", True),
                   ExampleColumn(ITEM_ID, "bytes", True),
                   ExampleColumn(TIMESTAMP, "int64", True)]
        if self.interactions.rating is not None:
            columns.append(ExampleColumn(RATING, "float", True))
        columns += [_feature_column(f) for f in self.user_features + self.item_features]
        if self.history_length > 0:
            columns.append(ExampleColumn(HISTORY, "bytes", False,
                                         max_values=self.history_length))
        columns.append(ExampleColumn(SECONDS_SINCE_PREVIOUS, "int64", False))
        return tuple(columns)

    def user_columns(self) -> Tuple[ExampleColumn, ...]:
        """Features of the user examples (output `users`): user_id + features."""
        return (ExampleColumn(USER_ID, "bytes", True),
                *(_feature_column(f) for f in self.user_features))

    def item_columns(self) -> Tuple[ExampleColumn, ...]:
        """Features of the item examples (output `items`): item_id + features."""
        return (ExampleColumn(ITEM_ID, "bytes", True),
                *(_feature_column(f) for f in self.item_features))


def _feature_column(feature: Feature) -> ExampleColumn:
    return ExampleColumn(feature.name, feature.dtype, feature.required,
                         max_values=None if feature.kind == "multi_categorical" else 1)


# --------------------------------------------------------------------------
# Parsing and checking


def load(path: str) -> DatasetConfig:
    """Reads and checks a dataset config YAML file.

    Every problem is a ConfigError naming the file: missing, unreadable
    (permissions, a symlink loop, a directory), not YAML, a key given twice
    in one mapping (with both lines), or a field that does not check out.
    Messages never quote the file's text.
    """
    import yaml

    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        problem = os_problem(e)
        if problem == "no such file":
            problem = "no such dataset config file"
        raise ConfigError(f"{path}: {problem}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text; a dataset "
                          "config is a UTF-8 YAML file.") from None
    try:
        raw = yaml.load(text, Loader=_unique_key_loader())
    except _DuplicateKey as e:
        raise ConfigError(f"{path}, line {e.line}: duplicate key {e.key!r} (first "
                          f"on line {e.first_line}); give each key once.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)}).") from None
    return from_dict(raw, source=path)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


def _unique_key_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """safe_load that refuses a key given twice in one mapping (PyYAML
        silently keeps the last value)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                first = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in first:
                            raise _DuplicateKey(key, line, first[key])
                        first[key] = line
                    except TypeError:
                        pass  # an unhashable key: SafeLoader's own error follows
            return super().construct_mapping(node, deep)

    return Loader


def _yaml_problem(error) -> str:
    """A YAML error as one line, with its position but without the text
    around it."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        problem += f" at line {mark.line + 1}, column {mark.column + 1}"
    return problem


def from_dict(raw: Any, source: str = "<config>") -> DatasetConfig:
    """Builds a DatasetConfig from plain data, checking every field."""
    _expect_mapping(raw, source, "the top level")
    top = _Fields(raw, source, "")
    interactions = top.mapping("interactions")
    users = top.mapping("users")
    items = top.mapping("items")
    split = top.mapping("split", required=False) or {}
    history = top.mapping("history", required=False) or {}
    csv_options = top.mapping("csv", required=False)
    top.done({"name", "format", "interactions", "users", "items", "split",
              "history", "max_rejected_fraction", "csv",
              "allow_paths_outside_data", "window"})

    config = DatasetConfig(
        name=_name(top),
        format=top.choice("format", FORMATS),
        interactions=_interactions(interactions, source),
        users=_table(users, source, "users"),
        items=_table(items, source, "items"),
        split=_split(split, source),
        history_length=_Fields(history, source, "history").integer(
            "length", default=50, minimum=0),
        max_rejected_fraction=top.number("max_rejected_fraction", default=0.01,
                                         minimum=0.0, maximum=1.0),
        csv=_csv(csv_options or {}, source),
        allow_paths_outside_data=top.boolean("allow_paths_outside_data",
                                             default=False),
        window=top.integer("window", default=1, minimum=1),
    )
    if csv_options is not None and config.format != "csv":
        raise ConfigError(f"{source}: csv: applies only to `format: csv`, not "
                          f"{config.format}; remove it.")
    _check_names(config, source)
    _check_spans(config, source)
    if not config.allow_paths_outside_data:
        for where in ("interactions", "users", "items"):
            _check_relative(getattr(config, where).path, source, f"{where}.path")
    return config


def _check_spans(config: DatasetConfig, source: str) -> None:
    """`{SPAN}` (TFX's span pattern) may stand in table paths, in the
    interactions' whenever in a user or item table's; `window` needs it."""
    for where in ("interactions", "users", "items"):
        path = getattr(config, where).path
        if path.count(SPAN_PATTERN) > 1 or re.search(r"\{(?!SPAN\})[A-Z]+[^}]*\}", path):
            raise ConfigError(
                f"{source}: {where}.path: {path!r}: the only pattern a table path "
                f"may hold is one {SPAN_PATTERN} (a directory or file name of "
                "digits per span, e.g. spans/{SPAN}/interactions.csv).")
    spans = SPAN_PATTERN in config.interactions.path
    for where in ("users", "items"):
        if SPAN_PATTERN in getattr(config, where).path and not spans:
            raise ConfigError(
                f"{source}: {where}.path has {SPAN_PATTERN} but interactions.path "
                "has not: spans are the interactions' first; add "
                f"{SPAN_PATTERN} to interactions.path or remove it from {where}.path.")
    if config.window != 1 and not spans:
        raise ConfigError(
            f"{source}: window: {config.window} needs spans: put {SPAN_PATTERN} in "
            "interactions.path (e.g. spans/{SPAN}/interactions.csv), or remove window.")


def _name(top: "_Fields") -> str:
    name = top.string("name")
    if not _NAME.match(name):
        raise top._error("name", f"{name!r} is not a dataset name: it names the "
                         "schema file (schemas/<name>.pbtxt), so use letters, "
                         "digits, '-', '_' and '.', starting with a letter or digit.")
    return name


def _check_relative(path: str, source: str, where: str) -> None:
    """A table path stays in the data directory: relative, without `..`."""
    if os.path.isabs(path):
        problem = "is absolute"
    elif ".." in path.replace("\\", "/").split("/"):
        problem = "leads out with '..'"
    elif not path.strip() or os.path.normpath(path) == ".":
        problem = "names no file"
    else:
        return
    raise ConfigError(
        f"{source}: {where}: {path!r} {problem}; table paths are relative to the "
        "data directory (--data) and stay inside it. Move the file there, or set "
        "`allow_paths_outside_data: true` to read files elsewhere.")


def _csv(raw: Mapping, source: str) -> Csv:
    fields = _Fields(raw, source, "csv")
    result = Csv(delimiter=fields.string("delimiter", required=False) or ",",
                 encoding=fields.string("encoding", required=False) or "utf-8")
    fields.done({"delimiter", "encoding"})
    if len(result.delimiter) != 1 or result.delimiter in "\"\r\n":
        raise fields._error("delimiter", f"{result.delimiter!r} must be one "
                            "character, not a quote or a line break (e.g. ';' or "
                            "'\\t').")
    try:
        codec = codecs.lookup(result.encoding)
    except LookupError:
        raise fields._error("encoding", f"{result.encoding!r} is not a known text "
                            "encoding (e.g. utf-8, latin-1, cp1252).") from None
    if "\n,;\"a".encode(codec.name, errors="replace") != b"\n,;\"a":
        raise fields._error("encoding", f"{result.encoding!r} is not read line by "
                            "line like ASCII (UTF-16 and UTF-32 are not supported); "
                            "re-save the files as UTF-8.")
    return result


def _interactions(raw: Mapping, source: str) -> Interactions:
    fields = _Fields(raw, source, "interactions")
    result = Interactions(
        path=fields.string("path"), user=fields.string("user"),
        item=fields.string("item"), timestamp=fields.string("timestamp"),
        rating=fields.string("rating", required=False),
        min_rating=fields.number("min_rating", default=None),
        keep_duplicates=fields.boolean("keep_duplicates", default=False))
    fields.done({"path", "user", "item", "timestamp", "rating", "min_rating",
                 "keep_duplicates"})
    if result.min_rating is not None and result.rating is None:
        raise ConfigError(f"{source}: interactions.min_rating needs "
                          "interactions.rating (the column it applies to).")
    return result


def _table(raw: Mapping, source: str, where: str) -> Table:
    fields = _Fields(raw, source, where)
    features_raw = fields.mapping("features", required=False) or {}
    table = Table(
        path=fields.string("path"), key=fields.string("key"),
        features=tuple(_feature(name, spec, source, f"{where}.features.{name}")
                       for name, spec in features_raw.items()),
        hash_buckets=fields.integer("hash_buckets", default=0, minimum=0))
    fields.done({"path", "key", "features", "hash_buckets"})
    return table


def _feature(name: Any, spec: Any, source: str, where: str) -> Feature:
    if isinstance(spec, str):  # shorthand: `gender: categorical`
        spec = {"kind": spec}
    _expect_mapping(spec, source, where)
    fields = _Fields(spec, source, where)
    feature = Feature(
        name=str(name), kind=fields.choice("kind", KINDS),
        separator=fields.string("separator", required=False) or "|",
        buckets=fields.integer("buckets", default=10, minimum=1),
        hash_buckets=fields.integer("hash_buckets", default=0, minimum=0),
        max_tokens=fields.integer("max_tokens", default=5000, minimum=1),
        column=fields.string("column", required=False))
    fields.done({"kind", "separator", "buckets", "hash_buckets", "max_tokens",
                 "column"})
    return feature


def _split(raw: Mapping, source: str) -> Split:
    fields = _Fields(raw, source, "split")
    split = Split(
        kind=fields.choice("kind", SPLIT_KINDS, default="per_user_temporal"),
        eval_fraction=fields.number("eval_fraction", default=0.2,
                                    minimum=0.0, maximum=1.0),
        cut_timestamp=fields.integer("cut_timestamp", default=None),
        seed=fields.integer("seed", default=42))
    fields.done({"kind", "eval_fraction", "cut_timestamp", "seed"})
    if not 0.0 < split.eval_fraction < 1.0:
        raise ConfigError(f"{source}: split.eval_fraction must be between 0 "
                          f"and 1 (exclusive), got {split.eval_fraction}.")
    if split.cut_timestamp is not None and split.kind != "global_time":
        raise ConfigError(f"{source}: split.cut_timestamp applies only to "
                          f"kind global_time, not {split.kind}.")
    return split


def _check_names(config: DatasetConfig, source: str) -> None:
    """Feature names become example columns: no clashes, nothing reserved."""
    seen = {}
    for where, table in (("users", config.users), ("items", config.items)):
        for feature in table.features:
            if feature.name in RESERVED_NAMES:
                raise ConfigError(
                    f"{source}: {where}.features.{feature.name}: the name is "
                    f"reserved ({', '.join(RESERVED_NAMES)}); give the feature "
                    "another name and read the file's column with "
                    f"`column: {feature.source_column}`.")
            if feature.name in seen:
                raise ConfigError(
                    f"{source}: feature {feature.name!r} appears in both "
                    f"{seen[feature.name]} and {where}; names must be unique (rename "
                    "one and read its column with `column: <file column>`).")
            seen[feature.name] = where


def _expect_mapping(value: Any, source: str, where: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where or 'the file'} must be a mapping "
                          f"(key: value lines), got {type(value).__name__}.")


class _Fields:
    """Typed access to one mapping of the config, with located errors."""

    _MISSING = object()

    def __init__(self, raw: Mapping, source: str, where: str):
        _expect_mapping(raw, source, where)
        self._raw, self._source, self._where = raw, source, where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._source}: {self._name(key)}: {problem}")

    def _get(self, key: str, required: bool, default=None):
        if key in self._raw and self._raw[key] is not None:
            return self._raw[key]
        if required:
            raise self._error(key, "missing; it is required.")
        return default

    def string(self, key: str, required: bool = True) -> Optional[str]:
        value = self._get(key, required)
        if value is not None and not isinstance(value, str):
            raise self._error(key, f"expected text, got {value!r}.")
        return value

    def mapping(self, key: str, required: bool = True) -> Optional[Mapping]:
        value = self._get(key, required)
        if value is not None:
            _expect_mapping(value, self._source, self._name(key))
        return value

    def choice(self, key: str, choices, default=None) -> str:
        value = self._get(key, default is None, default)
        if value not in choices:
            raise self._error(key, f"{value!r} is not one of "
                              f"{', '.join(choices)}{_suggestion(value, choices)}.")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, False, default)
        if not isinstance(value, bool):
            raise self._error(key, f"expected true or false, got {value!r}.")
        return value

    def integer(self, key: str, default=None, minimum=None) -> Optional[int]:
        value = self._get(key, False, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"expected an integer, got {value!r}.")
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be at least {minimum}, got {value}.")
        return value

    def number(self, key: str, default=None, minimum=None,
               maximum=None) -> Optional[float]:
        value = self._get(key, False, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(key, f"expected a number, got {value!r}.")
        if (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise self._error(key, f"must be between {minimum} and {maximum}, "
                              f"got {value}.")
        return float(value)

    def done(self, known) -> None:
        """Unknown keys are errors: a misspelled option must not be ignored."""
        for key in self._raw:
            if key not in known:
                raise self._error(
                    str(key), f"unknown option{_suggestion(key, known)}; "
                    f"known: {', '.join(sorted(known))}.")


def _suggestion(value: Any, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------
# The checked-in configs

DATASETS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "datasets")


def builtin_path(name: str) -> str:
    """datasets/<name>.yaml of this repository."""
    return os.path.join(DATASETS_DIR, f"{name}.yaml")
