"""Epochs as a property of its own: the check and the merge into custom_config.

Pure logic, no TFX, so the executor, the pipeline and `recsys submit` apply
the same rule (and it is tested without a Trainer).
"""

import numbers
from typing import Any, Dict, Mapping, Optional

# The execution property, and the custom_config entry every model's config
# class reads (config._Hyperparameters.from_custom_config).
EPOCHS_KEY = "epochs"


def check_epochs(value: Any, name: str = EPOCHS_KEY) -> int:
    """`value` as an int if it is an integer >= 1; else ValueError naming `name`
    (the property or runtime parameter the value came in)."""
    # bool is an int in Python, but True epochs is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 (passes over the train "
                         f"split), got {value!r}")
    return int(value)


def merge_epochs(custom_config: Optional[Mapping[str, Any]], epochs: Optional[Any],
                 name: str = EPOCHS_KEY) -> Dict[str, Any]:
    """A copy of the Trainer's custom_config with its "epochs" entry set to
    `epochs` (checked with check_epochs); unchanged when `epochs` is None.

    custom_config may be None (a Trainer built without one); anything else
    that is not a mapping is a TypeError, as run_fn could not read it.
    """
    if custom_config is not None and not isinstance(custom_config, Mapping):
        raise TypeError(f"custom_config must be a JSON object to set {name} in it, "
                        f"got {type(custom_config).__name__}")
    merged = dict(custom_config or {})
    if epochs is not None:
        merged[EPOCHS_KEY] = check_epochs(epochs, name)
    return merged
