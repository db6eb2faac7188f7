"""Trainer with epochs: TFX's Trainer plus an int `epochs` property.

The models read their epochs from the Trainer's custom_config (the "epochs"
entry of the model's config class, config.TwoTowerConfig / SoftmaxConfig /
NcfConfig). On Kubeflow a `data_types.RuntimeParameter` is substituted only
where it is a whole, primitive-typed execution property, and TFX's Trainer
has none that carries a number of passes (`TrainArgs.num_steps` sits inside
a proto, which compiles to a constant). This Trainer adds one: an optional
int `epochs` property which, when set, replaces the "epochs" entry of
custom_config before run_fn sees it. Unset (a local run), the Trainer runs
exactly as TFX's with the same custom_config.

  epochs.py     the rule (no TFX): check a value, merge it into custom_config
  executor.py   GenericExecutor that applies the rule before training
  component.py  the component: TrainerSpec + `epochs` (+ the code fingerprint)
"""
