"""The driver of InteractionsExampleGen: which spans a run reads, and their
fingerprint (the cache key of new data).

TFX's FileBasedDriver resolves one span, and only when every split's pattern
has `{SPAN}`; a dataset here has static user and item tables beside per-span
interactions, and a window of several spans. This driver resolves the files
with `spans.select`, the rule the executor follows too, and fingerprints
each one as TFX does (`io_utils.generate_fingerprint`: names, sizes, times),
so a new span or a changed file misses the cache and nothing else does.
"""

import os
from typing import Any, Dict

from tfx.components.example_gen import driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils

from tfx_recsys import dataset_config as dc
from tfx_recsys.components.interactions_example_gen import executor
from tfx_recsys.data import spans


def files_fingerprint(input_base: str, selection: spans.SpanSelection) -> str:
    """One line per file read (TFX's fingerprint of it), tables in order."""
    return "\n".join(
        io_utils.generate_fingerprint(
            table if span is None else f"{table}-{span}", os.path.join(input_base, path))
        for table in spans.TABLES for span, path in selection.files[table])


class SpanWindowDriver(driver.FileBasedDriver):
    """Sets `span`, `version` (None) and `input_fingerprint` of the run from
    the dataset config's tables; TFX's driver code records them on the
    examples artifact."""

    def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                                pipeline_info, component_info) -> Dict[str, Any]:
        del pipeline_info, component_info
        config = dc.DatasetConfig.from_json(exec_properties[executor.DATASET_KEY])
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        selection = spans.select(config, input_base,
                                 executor.requested_span(exec_properties))
        exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = selection.span
        exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = None
        exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = (
            files_fingerprint(input_base, selection))
        return exec_properties
