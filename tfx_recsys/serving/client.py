"""Asking a running `recsys serve` for one user's recommendations, the way
any client would: its V1 REST API, a request built from the signature's
metadata. Standard library only (no TensorFlow), so that `recsys recommend`
answers in a fraction of a second when a server is up.
"""

import json
import urllib.error
import urllib.request
from typing import Dict, List, Optional

from tfx_recsys.serving.contract import SERVING_SIGNATURE, missing_value_of
from tfx_recsys.serving.registry import ServerEntry

TIMEOUT_SECONDS = 10.0


class ServerUnavailable(Exception):
    """The server did not answer, or not for the version asked for."""


def _call(url: str, body: Optional[dict] = None, timeout: float = TIMEOUT_SECONDS) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:200]
        raise ServerUnavailable(f"{url}: HTTP {e.code} {detail}") from None
    except (OSError, ValueError) as e:
        raise ServerUnavailable(f"{url}: {e}") from None


def instance(row: Dict[str, list], inputs: Dict[str, dict]) -> dict:
    """One V1 instance for a signature from an example row ({feature: values}):
    each input (TF Serving metadata: {"dtype": "DT_STRING", "tensor_shape":
    {"dim": [...]}}) from the row's feature of that name; a [batch, None]
    input gets the row's whole list, a [batch] one its value or the missing
    value of its dtype."""
    values = {}
    for name, info in inputs.items():
        row_values = list(row.get(name) or [])
        if len(info["tensor_shape"]["dim"]) == 2:
            values[name] = row_values
        elif row_values:
            values[name] = row_values[0]
        else:
            values[name] = missing_value_of(info["dtype"].removeprefix("DT_").lower())
    return values


def recommend(server: ServerEntry, version: int, rows: List[Dict[str, list]],
              signature: str = SERVING_SIGNATURE) -> List[dict]:
    """The outputs of `signature` of the server's model `version` for each
    row, as V1 predictions ({output: values}); ServerUnavailable if the server
    does not answer or serves another version."""
    base = f"{server.url}/v1/models/{server.model_name}/versions/{version}"
    metadata = _call(f"{base}/metadata")
    try:
        inputs = metadata["metadata"]["signature_def"]["signature_def"][signature]["inputs"]
    except KeyError:
        raise ServerUnavailable(f"{base}: no signature {signature!r}") from None
    answer = _call(f"{base}:predict", {"signature_name": signature,
                                      "instances": [instance(r, inputs) for r in rows]})
    return answer["predictions"]
