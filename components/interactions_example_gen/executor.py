"""Beam executor of InteractionsExampleGen (TFX glue; the rules are in
`tfx_recsys/data/ingest.py` and `splitting.py`).

The pipeline, per table: read and type the rows in file order (one worker
per file: `ingest.parse_table`), rejected rows to a side output; then group
the interactions by user and, per user, check each one's user and item
against their tables (side inputs), drop exact duplicates
(`ingest.drop_duplicates`), split, add the behaviour and user/item
features, serialise and write. A last step gathers the
rejected rows, removed duplicates and counts into `rejected_rows.csv` and
`ingest_report.json` under the examples artifact; `Do` reads the report
back, records it on the artifact (the properties below, and
`row_accounting`: per table, rows read = accepted + rejected + duplicates +
filtered, with accepted counted from the examples written), fails loudly if
that identity does not hold, and fails the run if too many rows were
rejected.

It replaces the ExampleGen base executor's Do: that one writes through TFX's
WriteSplit, which reshuffles the records randomly, so two runs on the same
data would write them in different orders and train different models.
"""

import dataclasses
import json
import os
import pickle
import time
from typing import Any, Dict, List, Optional

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from tfx_recsys import config as pipeline_config
from tfx_recsys import dataset_config as dc
from tfx_recsys.data import splitting
from tfx_recsys.data import ingest, spans, tables

# Keys of the component (component.py imports them from here).
DATASET_KEY = "dataset"
ITEMS_KEY = "items"
USERS_KEY = "users"
USERS_SPLIT = "users"
REFIT_EXAMPLES_KEY = "refit_examples"
WITH_REFIT_KEY = "with_refit_examples"
REPORT_FILE = "ingest_report.json"

# Custom properties of the examples artifact.
REJECTED_ROWS_PROPERTY = "rejected_rows"
REJECTED_SUMMARY_PROPERTY = "rejected_summary"
FILTERED_PROPERTY = "filtered_below_min_rating"
DUPLICATES_PROPERTY = "duplicates_removed"
# JSON {table: {"file", "rows", "accepted", "rejected", "duplicates", "filtered"}}.
ACCOUNTING_PROPERTY = "row_accounting"
# The target span (TFX's property name) and the window's spans ("3,4,5").
SPAN_PROPERTY = example_gen_utils.SPAN_PROPERTY_NAME
SPANS_PROPERTY = "spans"

_REJECTED = "rejected"
_COUNTS = "counts"
_TRAIN, _EVAL = pipeline_config.TRAIN_SPLIT, pipeline_config.EVAL_SPLIT
_REFIT = "refit"  # the tag of refit rows; written as the train split of refit_examples


class _ReadTable(beam.DoFn):
    """Reads and types one table file, in file order.

    Input: (table, span, config whose paths are single files); span is None
    unless the run reads spans. Main output: typed rows (interactions as (row
    number, row), the number an ingest.Position with spans; others as rows);
    `rejected`: Rejects; `counts`: one (table, rows read, rows filtered below
    min_rating).
    """

    def __init__(self, data_dir: str, now: float):
        super().__init__()
        self._data_dir, self._now = data_dir, now

    def process(self, element):
        table, span, config = element
        file = tables.table_spec(config, table).path
        rows = filtered = 0
        for number, row in ingest.parse_table(config, table, self._data_dir, self._now):
            rows += 1
            if isinstance(row, ingest.Reject):
                yield beam.pvalue.TaggedOutput(_REJECTED, row)
            elif table != "interactions":
                yield row
            elif ingest.below_min_rating(row, config):
                filtered += 1
            else:
                yield (number if span is None else ingest.Position(span, number, file)), row
        yield beam.pvalue.TaggedOutput(_COUNTS, (table, rows, filtered))


def _pack(numbered) -> bytes:
    """(row number, interaction) as one small bytes object for the
    group-by-user. Beam's in-memory runner keeps every grouped value until
    its group is read, so values are kept small: a pickled tuple of the
    number and the values without the user id (the group's key), about 40
    bytes against 360 for the row's dict."""
    number, interaction = numbered
    unknown = set(interaction) - {dc.USER_ID, *_PACKED_KEYS}
    if unknown:
        raise ValueError(f"_pack: interaction field(s) {sorted(unknown)} would be lost")
    values = tuple(interaction[key] for key in _PACKED_KEYS if key in interaction)
    return pickle.dumps((number,) + values, protocol=pickle.HIGHEST_PROTOCOL)


# Item and timestamp are in every interaction, the rating when configured.
_PACKED_KEYS = (dc.ITEM_ID, dc.TIMESTAMP, dc.RATING)


def _unpack(user_id: str, packed: bytes):
    """_pack's inverse: (row number, interaction)."""
    number, *values = pickle.loads(packed)
    return number, {dc.USER_ID: user_id, **dict(zip(_PACKED_KEYS, values))}


def _user_examples(group, users, items, config: dc.DatasetConfig, cut, refit: bool):
    """One user's packed interactions -> (split, example row) pairs with
    behaviour and user/item features, and with `refit` also ("refit", row)
    pairs (splitting.refit_examples); an interaction whose user or item has
    no accepted row, or that repeats an earlier one exactly, goes to the
    `rejected` output instead (as a Reject; duplicates have their reason).

    Keys are checked here, after the grouping, so that the users and items
    tables are held once (in this step's side inputs), not once for a check
    before the grouping and again for the feature join after it."""
    user_id, packed = group
    numbered = []
    for number, interaction in sorted((_unpack(user_id, p) for p in packed),
                                      key=lambda pair: pair[0]):
        reject = ingest.unknown_key(number, interaction, users, items, config)
        if reject is not None:
            yield beam.pvalue.TaggedOutput(_REJECTED, reject)
        else:
            numbered.append((number, interaction))
    numbered, duplicates = ingest.drop_duplicates(numbered, config)
    for duplicate in duplicates:
        yield beam.pvalue.TaggedOutput(_REJECTED, duplicate)
    known = [interaction for _, interaction in numbered]
    for split, row in splitting.user_examples(known, config.split, config.history_length,
                                              cut):
        yield split, ingest.with_features(row, users, items)
    if refit:
        for row in splitting.refit_examples(known, config.history_length):
            yield _REFIT, ingest.with_features(row, users, items)


def _known_interaction(numbered, users, items, config: dc.DatasetConfig):
    """[the interaction's duplicate key] when its user and item are known,
    else [] (ingest.duplicate_key: it holds the timestamp)."""
    number, interaction = numbered
    if ingest.unknown_key(number, interaction, users, items, config) is not None:
        return []
    return [ingest.duplicate_key(interaction)]


class _WriteRecords(beam.PTransform):
    """Writes serialized examples as gzipped TFRecords, in arrival order.

    Unlike TFX's WriteSplit this does not reshuffle: the split is already
    deterministic, and keeping the order makes a run on the same data write
    the same files, so training on them is reproducible.
    """

    def __init__(self, split_uri: str):
        super().__init__()
        self._prefix = os.path.join(split_uri, "data_tfrecord")

    def expand(self, records):
        return records | "Write" >> beam.io.WriteToTFRecord(
            self._prefix, file_name_suffix=".gz",
            compression_type=beam.io.filesystem.CompressionTypes.GZIP)


def _write_report(_, rejects, counts, examples, config: dc.DatasetConfig,
                  examples_uri: str) -> None:
    """Writes rejected_rows.csv and ingest_report.json under examples_uri."""
    examples = dict(examples)
    totals = {}
    for table, rows, filtered in counts:  # one entry per file read
        read, below = totals.get(table, (0, 0))
        totals[table] = (read + rows, below + filtered)
    accepted = {"interactions": examples.get(_TRAIN, 0) + examples.get(_EVAL, 0),
                "users": examples.get(USERS_SPLIT, 0),
                "items": examples.get(pipeline_config.ITEMS_SPLIT, 0)}
    report = ingest.build_report(config, rejects, totals, examples, accepted)
    with fileio.open(os.path.join(examples_uri, ingest.REJECTED_ROWS_FILE), "w") as f:
        f.write(ingest.rejected_rows_csv(rejects))
    with fileio.open(os.path.join(examples_uri, REPORT_FILE), "w") as f:
        f.write(ingest.report_json(report))


def _ingest(pipeline: beam.Pipeline, config: dc.DatasetConfig, data_dir: str,
            now: float, examples_uri: str, refit: bool = False,
            selection: Optional[spans.SpanSelection] = None
            ) -> Dict[str, beam.pvalue.PCollection]:
    """Serialized tf.Examples per split (train, eval, items, users, and with
    `refit` the final fit's rows under "refit"); also writes the report (see
    `_write_report`), which counts the other splits.

    selection: the files to read (spans.select); None: the config's files."""
    selection = selection or spans.select(config, data_dir)
    file_configs = selection.configs(config)
    with_spans = spans.has_spans(config)
    # The users and items tables are one file; their config is any file's.
    config = _reported(config, selection)
    elements = {
        "users": [("users", None, file_configs[-1][1])],
        "items": [("items", None, file_configs[-1][1])],
        "interactions": [("interactions", span if with_spans else None, file_config)
                         for span, file_config in file_configs]}
    read = {table: (pipeline
                    | f"Table[{table}]" >> beam.Create(elements[table])
                    | f"Read[{table}]" >> beam.ParDo(
                        _ReadTable(data_dir, now)).with_outputs(
                            _REJECTED, _COUNTS, main="rows"))
            for table in ("users", "items", "interactions")}
    users = read["users"].rows | "KeyUsers" >> beam.Map(lambda r: (r[dc.USER_ID], r))
    items = read["items"].rows | "KeyItems" >> beam.Map(lambda r: (r[dc.ITEM_ID], r))
    users, items = beam.pvalue.AsDict(users), beam.pvalue.AsDict(items)
    interactions = read["interactions"].rows

    split = config.split
    cut = split.cut_timestamp
    if split.kind == "global_time" and cut is None:
        known = interactions | "Known" >> beam.FlatMap(
            _known_interaction, users=users, items=items, config=config)
        if not config.interactions.keep_duplicates:
            # The cut is a quantile of the interactions kept, not of repeats.
            known = known | "WithoutDuplicates" >> beam.Distinct()
        cut = beam.pvalue.AsSingleton(
            known
            | "Timestamps" >> beam.Map(lambda key: key[2])
            | "AllTimestamps" >> beam.combiners.ToList()
            # No interaction left: no cut (check_report then explains why).
            | "Cut" >> beam.Map(lambda timestamps: splitting.global_time_cut(
                timestamps, split.eval_fraction) if timestamps else None))
    examples_by_user = (
        interactions
        | "Pack" >> beam.Map(lambda numbered: (numbered[1][dc.USER_ID], _pack(numbered)))
        | "GroupByUser" >> beam.GroupByKey()
        | "Split" >> beam.FlatMap(_user_examples, users=users, items=items,
                                  config=config, cut=cut, refit=refit).with_outputs(
                                      _REJECTED, main="rows"))
    parts = (_TRAIN, _EVAL, _REFIT)
    train, evaluation, refit_rows = (
        examples_by_user.rows
        | "Partition" >> beam.Partition(lambda pair, _: parts.index(pair[0]), len(parts)))

    def serialize(rows, name, columns):
        return rows | f"ToExample[{name}]" >> beam.Map(splitting.to_tf_example, columns)

    interaction_columns = config.interaction_columns()
    records = {
        _TRAIN: serialize(train | "TrainRows" >> beam.Values(), _TRAIN,
                          interaction_columns),
        _EVAL: serialize(evaluation | "EvalRows" >> beam.Values(), _EVAL,
                         interaction_columns),
        pipeline_config.ITEMS_SPLIT: serialize(read["items"].rows, "items",
                                               config.item_columns()),
        USERS_SPLIT: serialize(read["users"].rows, "users", config.user_columns()),
    }

    rejects = ([r[_REJECTED] for r in read.values()] + [examples_by_user[_REJECTED]]
               | "AllRejects" >> beam.Flatten())
    counts = [r[_COUNTS] for r in read.values()] | "AllCounts" >> beam.Flatten()
    examples = ([pcoll
                 | f"Count[{name}]" >> beam.combiners.Count.Globally()
                 | f"Name[{name}]" >> beam.Map(lambda n, name=name: (name, n))
                 for name, pcoll in records.items()]
                | "AllExampleCounts" >> beam.Flatten())
    _ = (pipeline
         | "Report" >> beam.Create([None])
         | "WriteReport" >> beam.Map(
             _write_report, rejects=beam.pvalue.AsList(rejects),
             counts=beam.pvalue.AsList(counts),
             examples=beam.pvalue.AsList(examples), config=config,
             examples_uri=examples_uri))
    if refit:
        records[_REFIT] = serialize(refit_rows | "RefitRows" >> beam.Values(), _REFIT,
                                    interaction_columns)
    return records


def _reported(config: dc.DatasetConfig, selection: spans.SpanSelection
              ) -> dc.DatasetConfig:
    """The config as reports and rejects name it: each table's path the file
    (or files) read; unchanged without spans."""
    return dataclasses.replace(config, **{
        table: dataclasses.replace(getattr(config, table),
                                   path=selection.describe(table))
        for table in spans.TABLES})


def requested_span(exec_properties: Dict[str, Any]) -> Optional[int]:
    """The span to read: the driver's resolution when it ran (local runs,
    Vertex), else the range_config's static span (`--span N`), else None
    (the latest)."""
    resolved = exec_properties.get(SPAN_PROPERTY)
    if resolved is not None:
        return int(resolved)
    range_json = exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY)
    if range_json:
        range_config = proto_utils.json_to_proto(range_json,
                                                 range_config_pb2.RangeConfig())
        if range_config.HasField("static_range"):
            return range_config.static_range.end_span_number
    return None


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads, checks, joins and splits a configured dataset (see module doc)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = dc.DatasetConfig.from_json(exec_properties[DATASET_KEY])
        data_dir = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        # Structural problems fail here, before Beam starts, with one message.
        selection = spans.select(config, data_dir, requested_span(exec_properties))
        for _, file_config in selection.configs(config):
            tables.validate_dataset(file_config, data_dir)

        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        items = artifact_utils.get_single_instance(output_dict[ITEMS_KEY])
        users = artifact_utils.get_single_instance(output_dict[USERS_KEY])
        refit = artifact_utils.get_single_instance(output_dict[REFIT_EXAMPLES_KEY])
        with_refit = bool(exec_properties.get(WITH_REFIT_KEY))
        outputs = {_TRAIN: examples, _EVAL: examples,
                   pipeline_config.ITEMS_SPLIT: items, USERS_SPLIT: users}
        examples.split_names = artifact_utils.encode_split_names([_TRAIN, _EVAL])
        items.split_names = artifact_utils.encode_split_names(
            [pipeline_config.ITEMS_SPLIT])
        users.split_names = artifact_utils.encode_split_names([USERS_SPLIT])
        # The final fit trains on one split, every interaction: its train
        # split (empty unless asked for, as nothing reads it then).
        refit.split_names = artifact_utils.encode_split_names([_TRAIN])
        split_uris = {split: artifact_utils.get_split_uri([artifact], split)
                      for split, artifact in outputs.items()}
        split_uris[_REFIT] = artifact_utils.get_split_uri([refit], _TRAIN)
        fileio.makedirs(split_uris[_REFIT])

        with self._make_beam_pipeline() as pipeline:
            records = _ingest(pipeline, config, data_dir, time.time(), examples.uri,
                              with_refit, selection)
            for split, pcoll in records.items():
                _ = pcoll | f"Write[{split}]" >> _WriteRecords(split_uris[split])

        with fileio.open(os.path.join(examples.uri, REPORT_FILE)) as f:
            report = json.load(f)
        examples.set_int_custom_property(REJECTED_ROWS_PROPERTY,
                                         report["rejected_rows"])
        examples.set_string_custom_property(
            REJECTED_SUMMARY_PROPERTY,
            json.dumps(report["rejected_summary"], sort_keys=True))
        examples.set_int_custom_property(FILTERED_PROPERTY,
                                         report["filtered_below_min_rating"])
        examples.set_int_custom_property(DUPLICATES_PROPERTY,
                                         report["duplicates_removed"])
        examples.set_string_custom_property(
            ACCOUNTING_PROPERTY, json.dumps(ingest.accounting(report), sort_keys=True))
        ingest.check_accounting(report)
        ingest.check_report(report, _reported(config, selection), data_dir,
                            os.path.join(examples.uri, ingest.REJECTED_ROWS_FILE))
        refit.set_int_custom_property(WITH_REFIT_KEY, int(with_refit))
        for artifact in (examples, items, users, refit):
            # What the data is: TFX's span property, and the window's spans.
            artifact.set_int_custom_property(SPAN_PROPERTY, selection.span)
            artifact.set_string_custom_property(SPANS_PROPERTY,
                                                ",".join(map(str, selection.spans)))
            examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
            examples_utils.set_file_format(
                artifact,
                write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
