"""InteractionsExampleGen: a dataset described by its config, as TFX Examples.

A FileBasedExampleGen whose executor reads the three tables the dataset
config names (CSV, Parquet or TFRecord), types and checks every row,
joins each interaction with its user's and item's features, splits by the
config's rule and adds the behaviour features (see `splitting.py`). Outputs:

* `examples`: splits train and eval, one example per interaction;
  custom properties `rejected_rows` (int), `rejected_summary` (JSON
  {"<file>: <reason>": count}) and `filtered_below_min_rating` (int);
  `rejected_rows.csv` and `ingest_report.json` beside the splits;
* `items`: split items, one example per accepted row of the items table
  (the candidate corpus: every item, not only those in a split);
* `users`: split users, one example per accepted row of the users table;
* `refit_examples`: with `with_refit_examples`, split train holding every
  accepted interaction, each history running up to the interaction before
  (the final fit's data: splitting.refit_examples); else an empty split.

Spans (data/spans.py): with `{SPAN}` in the config's interactions path the
run reads the latest span and its window, or the span a static
`range_config` names (`recsys run --span N`). The driver (driver.py)
resolves the files and fingerprints exactly them for caching; every output
records `span` and `spans` (the window). The dataset config itself is an
execution property, so changing it reruns the component.
"""

from typing import Optional, Union

from tfx import types
from tfx.components.example_gen import component as example_gen_component
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tfx_recsys import dataset_config, fingerprint
from tfx_recsys.components.interactions_example_gen import driver, executor
from tfx_recsys.data import spans, tables

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
ITEMS_KEY = executor.ITEMS_KEY
USERS_KEY = executor.USERS_KEY
REFIT_EXAMPLES_KEY = executor.REFIT_EXAMPLES_KEY
DATASET_KEY = executor.DATASET_KEY
WITH_REFIT_KEY = executor.WITH_REFIT_KEY


class InteractionsExampleGenSpec(types.ComponentSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        DATASET_KEY: ExecutionParameter(type=str),
        WITH_REFIT_KEY: ExecutionParameter(type=int, optional=True),
        # Hash of the executor's code (fingerprint.py): part of the cache key.
        fingerprint.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ITEMS_KEY: ChannelParameter(type=standard_artifacts.Examples),
        USERS_KEY: ChannelParameter(type=standard_artifacts.Examples),
        REFIT_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


def input_config(config: dataset_config.DatasetConfig) -> example_gen_pb2.Input:
    """One input split per table, its pattern the configured path (relative
    to input_base). The executor assigns interactions to train and eval
    itself and reads the dataset config's tables, not these patterns; they are
    what TFX's own driver fingerprints where it runs instead of ours (the
    Kubeflow specs). With spans only the interactions' pattern is listed:
    TFX's driver needs `{SPAN}` in every split or none, and a new span is
    what new data means there."""
    with_spans = spans.has_spans(config)
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=table,
                                    pattern=tables.table_spec(config, table).path)
        for table in tables.TABLES if table == "interactions" or not with_spans])


def span_range(span: int) -> range_config_pb2.RangeConfig:
    """The range_config that reads span `span` (and its window) instead of
    the latest."""
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))


class InteractionsExampleGen(example_gen_component.FileBasedExampleGen):
    """Ingests a dataset; outputs `examples`, `items` and `users`.

    Args:
      input_base: the data directory; the config's paths are relative to it.
      dataset: the dataset config as JSON (`DatasetConfig.to_json()`); a
        DatasetConfig is accepted too. Checked here, so a bad config fails
        when the pipeline is built.
      range_config: a static range of one span (`span_range`): read that
        span and its window instead of the latest.
      with_refit_examples: also write `refit_examples` (for the final fit).
    """

    SPEC_CLASS = InteractionsExampleGenSpec
    DRIVER_CLASS = driver.SpanWindowDriver
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str,
                 dataset: Union[str, dataset_config.DatasetConfig],
                 range_config: Optional[object] = None,
                 with_refit_examples: bool = False):
        if isinstance(dataset, dataset_config.DatasetConfig):
            config = dataset
        else:
            config = dataset_config.DatasetConfig.from_json(dataset)
        spec = InteractionsExampleGenSpec(
            input_base=input_base,
            input_config=input_config(config),
            output_config=example_gen_pb2.Output(),
            custom_config=None,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            dataset=config.to_json(),
            with_refit_examples=int(with_refit_examples),
            code_fingerprint=fingerprint.component_fingerprint(executor.Executor),
            examples=types.Channel(type=standard_artifacts.Examples),
            items=types.Channel(type=standard_artifacts.Examples),
            users=types.Channel(type=standard_artifacts.Examples),
            refit_examples=types.Channel(type=standard_artifacts.Examples))
        # Skip FileBasedExampleGen.__init__, which builds its own spec.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
