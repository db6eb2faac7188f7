"""The Trainer with an int `epochs` property: the rule, the executor, the component.

The rule (epochs.py) is checked without TFX; the executor runs TFX's
GenericExecutor for real, with a run_fn of this module that records what it
was handed; the model configs are the very readers the run_fns use.
"""

import json
import os

import numpy as np
import pytest

from tfx_recsys import config, fingerprint
from tfx_recsys.components.trainer_with_epochs import epochs as epochs_lib
from tfx_recsys.components.trainer_with_epochs import executor

CUSTOM_CONFIG = {"dataset": {"name": "synthetic"}, "code_fingerprint": "abc",
                 "epochs": 10, "learning_rate": 0.001}


# --------------------------------------------------------------------------
# The rule


def test_merge_replaces_epochs_and_keeps_the_rest():
    merged = epochs_lib.merge_epochs(CUSTOM_CONFIG, 3)
    assert merged == {**CUSTOM_CONFIG, "epochs": 3}
    assert CUSTOM_CONFIG["epochs"] == 10  # a copy: the input is untouched


def test_merge_without_epochs_leaves_custom_config_as_it_is():
    merged = epochs_lib.merge_epochs(CUSTOM_CONFIG, None)
    assert merged == CUSTOM_CONFIG and merged is not CUSTOM_CONFIG
    assert epochs_lib.merge_epochs(None, None) == {}


def test_merge_adds_epochs_where_custom_config_has_none():
    assert epochs_lib.merge_epochs(None, 4) == {"epochs": 4}
    assert epochs_lib.merge_epochs({"dataset": {}}, 4) == {"dataset": {}, "epochs": 4}


def test_numpy_integers_count_as_ints():
    merged = epochs_lib.merge_epochs(CUSTOM_CONFIG, np.int64(4))
    assert merged["epochs"] == 4 and type(merged["epochs"]) is int


@pytest.mark.parametrize("bad", [0, -1, 2.5, 3.0, "3", True, [3]])
def test_epochs_must_be_an_int_of_at_least_one_and_the_error_names_it(bad):
    with pytest.raises(ValueError, match=r"^ranker_epochs must be an int >= 1 .*got "):
        epochs_lib.merge_epochs(CUSTOM_CONFIG, bad, name="ranker_epochs")
    with pytest.raises(ValueError, match=r"^epochs must be an int >= 1"):
        epochs_lib.check_epochs(bad)


def test_custom_config_must_be_a_json_object():
    with pytest.raises(TypeError, match="custom_config must be a JSON object.*list"):
        epochs_lib.merge_epochs([1, 2], 3)


@pytest.mark.parametrize("config_class", [config.TwoTowerConfig, config.SoftmaxConfig,
                                          config.NcfConfig])
def test_the_models_train_the_merged_epochs(config_class):
    """Each run_fn reads its hyperparameters with from_custom_config(): the
    merged entry is the one they train with (NCF: per stage)."""
    default = config_class().to_custom_config()
    merged = epochs_lib.merge_epochs({**default, "dataset": {}}, 3)
    assert config_class.from_custom_config(merged).epochs == 3
    assert config_class.from_custom_config(merged) == config_class(epochs=3)


def test_ncf_trains_the_merged_epochs_in_each_stage():
    """NeuMF with pretraining: GMF, MLP, then NeuMF, `epochs` passes each."""
    from tfx_recsys.models import ncf

    hparams = config.NcfConfig.from_custom_config(epochs_lib.merge_epochs(
        {**config.NcfConfig(factors=4, mlp_layers=(8, 4)).to_custom_config(),
         "epochs": 10}, 2))
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 8, 60), rng.integers(0, 12, 60)
    lines = []
    ncf.fit(hparams, users, items, 8, 12, log=lines.append)
    stages = [line.split(" epoch ")[0] for line in lines]
    assert stages == ["ncf gmf"] * 2 + ["ncf mlp"] * 2 + ["ncf neumf"] * 2
    assert all("/2:" in line for line in lines)


# --------------------------------------------------------------------------
# The executor


def test_with_epochs_rewrites_the_custom_config_json():
    from tfx_recsys.components.trainer_with_epochs import executor

    properties = {"custom_config": json.dumps(CUSTOM_CONFIG), "run_fn": "m.run_fn",
                  "epochs": 3}
    rewritten = executor.with_epochs(properties)
    assert json.loads(rewritten["custom_config"]) == {**CUSTOM_CONFIG, "epochs": 3}
    assert {k: v for k, v in rewritten.items() if k != "custom_config"} == \
        {k: v for k, v in properties.items() if k != "custom_config"}
    # Unset (a local run): untouched, the very same properties.
    unset = {"custom_config": json.dumps(CUSTOM_CONFIG)}
    assert executor.with_epochs(unset) is unset
    # A Trainer built without custom_config has "null" there.
    assert json.loads(executor.with_epochs(
        {"custom_config": "null", "epochs": 2})["custom_config"]) == {"epochs": 2}
    with pytest.raises(ValueError, match="epochs must be an int >= 1.*got -2"):
        executor.with_epochs({"custom_config": "{}", "epochs": -2})


def test_kubeflow_hands_the_executor_an_int():
    """On the cluster the property arrives as a protobuf number (a double);
    TFX's v2 entry point makes it an int by the component's declared
    NUMBER_INTEGER type, which the executor takes."""
    from google.protobuf import struct_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils

    from tfx_recsys.components.trainer_with_epochs import executor

    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    inputs_spec.parameters["epochs"].parameter_type = \
        pipeline_spec_pb2.ParameterType.NUMBER_INTEGER
    inputs_spec.parameters["custom_config"].parameter_type = \
        pipeline_spec_pb2.ParameterType.STRING
    values = {"epochs": struct_pb2.Value(number_value=5),
              "custom_config": struct_pb2.Value(string_value=json.dumps(CUSTOM_CONFIG))}
    properties = kubeflow_v2_entrypoint_utils.parse_execution_properties(
        values, {}, inputs_spec)
    assert properties["epochs"] == 5 and type(properties["epochs"]) is int
    assert json.loads(executor.with_epochs(properties)["custom_config"])["epochs"] == 5


def record_run_fn(fn_args):
    """A run_fn that saves the custom_config it got as its 'model'."""
    os.makedirs(fn_args.serving_model_dir)
    with open(os.path.join(fn_args.serving_model_dir, "custom_config.json"), "w") as f:
        json.dump(fn_args.custom_config, f)


def _run_executor(tmp_path, exec_properties):
    """Runs the executor (TFX's GenericExecutor underneath) with record_run_fn;
    returns the custom_config run_fn saw."""
    from tfx.types import artifact_utils, standard_artifacts

    from tfx_recsys.components.trainer_with_epochs import executor

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, model_run.uri = str(tmp_path / "model"), str(tmp_path / "model_run")
    executor.Executor().Do(
        {"examples": [examples]}, {"model": [model], "model_run": [model_run]},
        {"run_fn": f"{__name__}.record_run_fn", "train_args": "{}", "eval_args": "{}",
         **exec_properties})
    [saved] = [os.path.join(root, name) for root, _, names in os.walk(model.uri)
               for name in names if name == "custom_config.json"]
    with open(saved) as f:
        return json.load(f)


def test_executor_hands_run_fn_the_epochs_property(tmp_path):
    seen = _run_executor(tmp_path / "set", {
        "custom_config": json.dumps(CUSTOM_CONFIG), "epochs": 3})
    assert seen == {**CUSTOM_CONFIG, "epochs": 3}
    unset = _run_executor(tmp_path / "unset", {"custom_config": json.dumps(CUSTOM_CONFIG)})
    assert unset == CUSTOM_CONFIG


# --------------------------------------------------------------------------
# The component, in the pipeline


def _trainer(**kwargs):
    from tfx import types
    from tfx.types import standard_artifacts

    from tfx_recsys.components.trainer_with_epochs.component import Trainer

    return Trainer(examples=types.Channel(type=standard_artifacts.Examples),
                   run_fn="m.run_fn", custom_config=CUSTOM_CONFIG, **kwargs)


def test_component_takes_an_int_or_a_runtime_parameter():
    from tfx.orchestration import data_types

    assert _trainer(epochs=4).exec_properties["epochs"] == 4
    assert _trainer().exec_properties["epochs"] is None  # not compiled at all
    parameter = data_types.RuntimeParameter(name="epochs", ptype=int, default=4)
    assert _trainer(epochs=parameter).exec_properties["epochs"] is parameter
    with pytest.raises(ValueError, match="epochs must be an int >= 1.*got 0"):
        _trainer(epochs=0)
    with pytest.raises(TypeError):  # the spec's type check: an int property
        _trainer(epochs=data_types.RuntimeParameter(name="e", ptype=str, default="4"))


def test_component_is_tfx_trainer_by_name_id_and_custom_config():
    from tfx import v1 as tfx

    trainer = _trainer(epochs=2)
    assert isinstance(trainer, tfx.components.Trainer)
    # Node id and the execution type's last part (lineage.py) stay "Trainer".
    assert trainer.id == "Trainer" and trainer.type.endswith(".Trainer")
    assert json.loads(trainer.exec_properties["custom_config"]) == CUSTOM_CONFIG
    assert set(trainer.outputs) == {"model", "model_run"}
    assert trainer.exec_properties[fingerprint.CODE_FINGERPRINT_KEY] == \
        fingerprint.component_fingerprint(executor.Executor)


def test_the_executor_code_is_in_the_trainers_fingerprint():
    closure = fingerprint.module_closure([executor.Executor.__module__])
    assert "tfx_recsys.components.trainer_with_epochs.executor" in closure
    assert "tfx_recsys.components.trainer_with_epochs.epochs" in closure


def test_local_pipeline_trainers_take_epochs_from_custom_config(tmp_path):
    from tfx_recsys import dataset_config
    from tfx_recsys.components.trainer_with_epochs.component import Trainer
    from tfx_recsys.pipeline import pipeline

    dataset = dataset_config.load(dataset_config.builtin_path("synthetic"))
    built = pipeline.create_pipeline(
        "p", str(tmp_path), str(tmp_path), dataset.to_dict(), str(tmp_path / "schema"),
        str(tmp_path / "serving"),
        training=config.TwoTowerConfig(epochs=7).to_custom_config(),
        ranking=config.NcfConfig(epochs=2).to_custom_config())
    trainers = {c.id: c for c in built.components if isinstance(c, Trainer)}
    # The final fit's Trainers take the same settings.
    assert set(trainers) == {"Trainer", "RankingTrainer", "RefitTrainer",
                             "RefitRankingTrainer"}
    for trainer in trainers.values():
        assert trainer.exec_properties["epochs"] is None
    for name, epochs in (("Trainer", 7), ("RankingTrainer", 2), ("RefitTrainer", 7),
                         ("RefitRankingTrainer", 2)):
        assert json.loads(trainers[name].exec_properties["custom_config"])["epochs"] == epochs
