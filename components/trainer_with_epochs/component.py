"""The Trainer with an int `epochs` property (see the package docstring).

The class is named `Trainer`, like TFX's, on purpose: a node's default id and
the last part of its ML Metadata execution type are the class name, and the
pipeline's node id `Trainer`, the KFP task of that name and lineage's facts per
execution type (lineage.py) all go by it.
"""

from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.components.trainer import component as trainer_component
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils

from tfx_recsys import fingerprint
from tfx_recsys.components.trainer_with_epochs import epochs as epochs_lib
from tfx_recsys.components.trainer_with_epochs import executor

class TrainerWithEpochsSpec(standard_component_specs.TrainerSpec):
    """TrainerSpec plus `epochs` and the executor's code fingerprint."""

    PARAMETERS = {
        **standard_component_specs.TrainerSpec.PARAMETERS,
        # Optional int: a RuntimeParameter(ptype=int) may stand for it, and
        # unset it leaves custom_config's epochs in charge.
        epochs_lib.EPOCHS_KEY: ExecutionParameter(type=int, optional=True),
        # Hash of the executor package (fingerprint.py): part of the cache
        # key. The model code's hash travels in custom_config, as before.
        fingerprint.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }


class Trainer(trainer_component.Trainer):
    """TFX's Trainer (GenericExecutor, a run_fn by dotted path) with `epochs`.

    Args:
      examples: the (transformed) examples to train and evaluate on.
      run_fn: dotted path of the training function.
      transform_graph, schema: optional, as for TFX's Trainer.
      train_args, eval_args: TrainArgs / EvalArgs (default: empty, TFX's
        defaults).
      custom_config: the dict handed to run_fn as fn_args.custom_config, or a
        RuntimeParameter (str) that stands for its JSON.
      epochs: None (custom_config's "epochs" holds), an int >= 1, or a
        RuntimeParameter(ptype=int); when set, the executor writes it into
        custom_config's "epochs" before run_fn reads it.
      base_model: a Model to warm-start from (fn_args.base_model), as for
        TFX's Trainer.
    """

    SPEC_CLASS = TrainerWithEpochsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(  # pylint: disable=super-init-not-called
            self,
            examples: types.BaseChannel,
            run_fn: Union[str, data_types.RuntimeParameter],
            transform_graph: Optional[types.BaseChannel] = None,
            schema: Optional[types.BaseChannel] = None,
            train_args: Optional[trainer_pb2.TrainArgs] = None,
            eval_args: Optional[trainer_pb2.EvalArgs] = None,
            custom_config: Optional[Union[Dict[str, Any],
                                          data_types.RuntimeParameter]] = None,
            epochs: Optional[Union[int, data_types.RuntimeParameter]] = None,
            base_model: Optional[types.BaseChannel] = None):
        # TFX's Trainer.__init__ builds a plain TrainerSpec, which
        # BaseComponent refuses for a SPEC_CLASS that extends it; so the spec
        # is built here, for the arguments this project uses, and handed to
        # BaseComponent directly.
        if epochs is not None and not isinstance(epochs, data_types.RuntimeParameter):
            epochs = epochs_lib.check_epochs(epochs)  # fail when building, not training
        spec = TrainerWithEpochsSpec(
            examples=examples,
            transform_graph=transform_graph,
            schema=schema,
            base_model=base_model,
            run_fn=run_fn,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(),
            # A JSON string, as fn_args reads it back; a RuntimeParameter is
            # that string already.
            custom_config=(custom_config
                           if isinstance(custom_config, data_types.RuntimeParameter)
                           else json_utils.dumps(custom_config)),
            epochs=epochs,
            code_fingerprint=fingerprint.component_fingerprint(executor.Executor),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun))
        base_component.BaseComponent.__init__(self, spec=spec)
