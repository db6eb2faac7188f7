"""Executor of the Trainer with epochs (TFX glue; the rule is in epochs.py).

After training it records how the model started (models/warm_start.py: warm
from the base model, or cold and why) as the Model artifact's `warm_start`
custom property, from the line run_fn left in the artifact.
"""

from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils, path_utils

from tfx_recsys.components.trainer_with_epochs import epochs as epochs_lib
from tfx_recsys.models import warm_start


def with_epochs(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    """The execution properties GenericExecutor should see: when `epochs` is
    set, custom_config with its "epochs" entry replaced; else as they are.

    custom_config travels as a JSON string (the component serialises the
    dict; on Kubeflow it may be the trainer_custom_config parameter's value),
    and TFX's fn_args reads it back with json_utils, so it is decoded and
    re-encoded the same way.
    """
    epochs = exec_properties.get(epochs_lib.EPOCHS_KEY)
    if epochs is None:
        return exec_properties
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    custom_config = json_utils.loads(exec_properties.get(key) or "null")
    merged = epochs_lib.merge_epochs(custom_config, epochs)
    # Say so when the two disagree: the run then trains other epochs than
    # the custom_config recorded with it shows.
    previous = (custom_config or {}).get(epochs_lib.EPOCHS_KEY)
    if previous != merged[epochs_lib.EPOCHS_KEY]:
        logging.info("the epochs property (%d) replaces custom_config's epochs (%r)",
                     merged[epochs_lib.EPOCHS_KEY], previous)
    return {**exec_properties, key: json_utils.dumps(merged)}


class Executor(trainer_executor.GenericExecutor):
    """TFX's GenericExecutor (run_fn), with the `epochs` property applied to
    custom_config first and the warm-start outcome recorded after."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, with_epochs(exec_properties))
        record_warm_start(artifact_utils.get_single_instance(
            output_dict[standard_component_specs.MODEL_KEY]))


def record_warm_start(model: types.Artifact) -> None:
    """Sets the Model artifact's `warm_start` property to the line run_fn
    wrote (the retrieval models do); leaves it unset without one (NCF)."""
    outcome = warm_start.read_outcome(path_utils.serving_model_dir(model.uri))
    if outcome is not None:
        model.set_string_custom_property(warm_start.OUTCOME_PROPERTY, outcome)
