"""Request and response bodies: V1 (TF Serving's REST API) and V2 (Open Inference).

A request body becomes a `Batch`: the signature it names and one NumPy array
per input, `[rows, ...]`, checked against the signature's tensor specs. The
signature's outputs for those rows become a response body. Anything a
client can get wrong raises `RequestError` with a 4xx status and a message
naming the field, in the terms of the format the client used
(`instances[1]['age']`, `inputs['age'][1]`, `inputs[2] ('age')`).

V1 (`POST /v1/models/<name>[/versions/<v>]:predict`):
  {"signature_name": "...", "instances": [{input: value, ...}, ...]}  rows
  {"signature_name": "...", "inputs": {input: [value per row], ...}}  columns
  -> {"predictions": [{output: value, ...} per row]} or {"outputs": {output: [...]}}
V2 (`POST /v2/models/<name>[/versions/<v>]/infer`):
  {"id": "...", "parameters": {"signature_name": "..."},
   "inputs": [{"name": ..., "shape": [...], "datatype": "BYTES"|"FP32"|..., "data": [...]}],
   "outputs": [{"name": ...}]}        (optional: which outputs to return)
  -> {"model_name", "model_version", "id", "parameters", "outputs": [tensors]}

Strings are UTF-8 text, or {"b64": "..."} in V1 as TF Serving writes binary
strings. An input of shape [batch, None] of strings (history, exclude) may
be given as lists of different lengths in V1: they are padded with "", the
serving contract's padding. NaN, which JSON cannot hold, is written null.
This module imports NumPy and orjson; TensorFlow only for the names of
dtypes in TF Serving's metadata, once a model is loaded.
"""

import base64
import dataclasses
import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import orjson

DEFAULT_SIGNATURE = "serving_default"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

# V2 datatypes and the signature dtypes each can feed.
_V2_FLOAT = ("FP16", "FP32", "FP64")
_V2_INT = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_V2_ACCEPTED = {"string": ("BYTES",), "bool": ("BOOL",)}
_V2_OF_DTYPE = {"string": "BYTES", "bool": "BOOL", "float16": "FP16", "float32": "FP32",
                "float64": "FP64", "int8": "INT8", "int16": "INT16", "int32": "INT32",
                "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16",
                "uint32": "UINT32", "uint64": "UINT64"}


class RequestError(Exception):
    """A request the server refuses: HTTP status plus a message for the client."""

    def __init__(self, status: int, message: str,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclasses.dataclass
class Batch:
    """One request's rows for one signature: inputs as arrays of [rows, ...]."""

    signature_name: str
    inputs: Dict[str, np.ndarray]
    rows: int
    row_format: bool = False                     # V1 "instances"
    request_id: Optional[str] = None             # V2 "id"
    requested_outputs: Optional[List[str]] = None  # V2 "outputs"


# --------------------------------------------------------------------------
# JSON


def parse_json(body: bytes) -> Any:
    """The body as JSON. orjson first (fast); the standard library where it
    refuses, which takes integers of any size, NaN and Infinity (as TF
    Serving does), so that such values reach the check that names their
    field."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, "malformed JSON body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        if not body.strip():
            raise RequestError(400, "the request body is empty: send a JSON object") \
                from None
        raise RequestError(400, f"malformed JSON body: {e}") from None


def _show(value: Any, limit: int = 40) -> str:
    """A value as the client wrote it, shortened for an error message."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    except Exception:  # e.g. an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(names) -> str:
    return ", ".join(repr(n) for n in sorted(names))


# --------------------------------------------------------------------------
# Values -> arrays


def _dtype_name(spec) -> str:
    return spec.dtype.name


_CONVERTERS: Dict[Tuple[str, bool], Callable[[Any], Any]] = {}


def _converter(spec, b64_strings: bool) -> Callable[[Any], Any]:
    """`_new_converter`, made once per dtype."""
    key = (spec.dtype.name, b64_strings)
    convert = _CONVERTERS.get(key)
    if convert is None:
        convert = _CONVERTERS[key] = _new_converter(spec, b64_strings)
    return convert


def _new_converter(spec, b64_strings: bool) -> Callable[[Any], Any]:
    """A function from one JSON value to a value of the spec's dtype.

    It raises ValueError naming what was expected. JSON types are taken as
    they are: the string "24" is not a number, true is not a number.
    """
    name = _dtype_name(spec)
    if name == "string":
        def to_bytes(value):
            if isinstance(value, str):
                try:
                    return value.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
                    raise ValueError("not valid Unicode text") from None
            if (b64_strings and isinstance(value, dict) and set(value) == {"b64"}
                    and isinstance(value["b64"], str)):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except ValueError:
                    raise ValueError('invalid base64 in {"b64": ...}') from None
            raise ValueError('expected a string (or {"b64": "..."})' if b64_strings
                             else "expected a string")
        return to_bytes
    if name == "bool":
        def to_bool(value):
            if isinstance(value, bool):
                return value
            raise ValueError("expected true or false")
        return to_bool
    numpy_dtype = np.dtype(spec.dtype.as_numpy_dtype)
    if numpy_dtype.kind in "iu":
        info = np.iinfo(numpy_dtype)

        def to_int(value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer ({name})")
            if not info.min <= value <= info.max:
                raise ValueError(f"integer out of range for {name}")
            return value
        return to_int
    if numpy_dtype.kind == "f":
        largest = float(np.finfo(numpy_dtype).max)

        def to_float(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number ({name})")
            # NaN passes: it is the serving contract's "missing" marker. The
            # comparison is exact for integers of any size (no overflow).
            if not (isinstance(value, float) and math.isnan(value)) and abs(value) > largest:
                raise ValueError(f"number out of range for {name}")
            return value
        return to_float
    raise RequestError(500, f"the signature takes dtype {name}, which this server "
                            "cannot feed from JSON")


def _empty_value(spec):
    return b"" if _dtype_name(spec) == "string" else 0


def _array(values: list, spec, shape: Tuple[int, ...]) -> np.ndarray:
    if _dtype_name(spec) == "string":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=spec.dtype.as_numpy_dtype).reshape(shape)


def _column(name: str, examples: Sequence[Any], spec, where: Callable[[int], str],
            b64_strings: bool) -> np.ndarray:
    """One input's values, one per example, as an array [rows, ...].

    `where(i)` names example i in the client's terms. An example of an input
    of rank 2 is a list; lists of strings of different lengths are padded
    with "" where the signature's dimension is variable.
    """
    convert = _converter(spec, b64_strings)
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is None or len(dims) == 1:
        values = []
        for i, value in enumerate(examples):
            try:
                values.append(convert(value))
            except ValueError as e:
                raise RequestError(400, f"{where(i)}: {e}, got {_show(value)}") from None
        return _array(values, spec, (len(values),))
    if len(dims) == 2:
        rows = []
        for i, value in enumerate(examples):
            if not isinstance(value, list):
                raise RequestError(400, f"{where(i)}: expected a list (the input "
                                        f"{name!r} is {_shape_text(dims)}), got "
                                        f"{_show(value)}")
            row = []
            for j, leaf in enumerate(value):
                try:
                    row.append(convert(leaf))
                except ValueError as e:
                    raise RequestError(400, f"{where(i)}[{j}]: {e}, got {_show(leaf)}") \
                        from None
            rows.append(row)
        width = max((len(r) for r in rows), default=0)
        if dims[1] is not None:
            for i, row in enumerate(rows):
                if len(row) != dims[1]:
                    raise RequestError(400, f"{where(i)}: {len(row)} values; the input "
                                            f"{name!r} is {_shape_text(dims)}")
        elif _dtype_name(spec) != "string" and any(len(r) != width for r in rows):
            raise RequestError(400, f"input {name!r}: lists of different lengths; "
                                    "every example must have the same number of values")
        array = np.full((len(rows), width), _empty_value(spec),
                        dtype=object if _dtype_name(spec) == "string"
                        else spec.dtype.as_numpy_dtype)
        for i, row in enumerate(rows):
            array[i, :len(row)] = row
        return array
    # Higher ranks: rectangular nested lists only.
    values, shapes = [], set()
    for i, value in enumerate(examples):
        try:
            shape = _nested_shape(value)
        except ValueError:
            raise RequestError(400, f"{where(i)}: ragged lists") from None
        shapes.add(shape)
        for index, leaf in _leaves(value):
            try:
                values.append(convert(leaf))
            except ValueError as e:
                raise RequestError(400, f"{where(i)}{''.join(f'[{k}]' for k in index)}: "
                                        f"{e}, got {_show(leaf)}") from None
    if len(shapes) > 1:
        raise RequestError(400, f"input {name!r}: examples of different shapes")
    shape = (len(examples),) + (shapes.pop() if shapes else ())
    if not spec.shape.is_compatible_with(shape):
        raise RequestError(400, f"input {name!r}: shape {list(shape)} does not fit the "
                                f"signature's {_shape_text(dims)}")
    return _array(values, spec, shape)


def _nested_shape(value: Any) -> Tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_nested_shape(v) for v in value}
    if len(shapes) > 1:
        raise ValueError("ragged")
    return (len(value),) + shapes.pop()


def _leaves(value: Any, index: Tuple[int, ...] = ()):
    if isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, index + (i,))
    else:
        yield index, value


def _shape_text(dims) -> str:
    if dims is None:
        return "of unknown shape"
    return "[" + ", ".join("batch" if i == 0 and d is None else "?" if d is None else str(d)
                           for i, d in enumerate(dims)) + "]"


def _check_names(given, expected, where: str) -> None:
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing:
        raise RequestError(400, f"{where}: missing input(s) {_names(missing)}; "
                                f"the signature takes {_names(expected)}")
    if unknown:
        raise RequestError(400, f"{where}: unknown input(s) {_names(unknown)}; "
                                f"the signature takes {_names(expected)}")


def _signature(name: Any, signatures: Dict[str, Any], field: str):
    if not isinstance(name, str) or name not in signatures:
        raise RequestError(400, f"unknown {field} {_show(name)}; the model has "
                                f"{_names(signatures)}")
    return signatures[name]


def _check_rows(rows: int, max_rows: int, what: str) -> None:
    if rows == 0:
        raise RequestError(400, f"{what} is empty: send at least one example")
    if rows > max_rows:
        raise RequestError(413, f"{what}: a batch of {rows} examples exceeds the "
                                f"limit of {max_rows}")


# --------------------------------------------------------------------------
# V1


def parse_v1(request: Any, signatures: Dict[str, Any], max_rows: int) -> Batch:
    """A V1 :predict body (parsed JSON) as a Batch for one of `signatures`
    ({name: versions.Signature})."""
    if not isinstance(request, dict):
        raise RequestError(400, 'the request body must be a JSON object with "instances" '
                                'or "inputs"')
    unknown = set(request) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise RequestError(400, f"unknown request field(s) {_names(unknown)}; expected "
                                '"instances" or "inputs", and optionally "signature_name"')
    signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
    specs = _signature(signature_name, signatures, "signature_name").inputs
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(400, 'the request must have exactly one of "instances" '
                                '(row format) or "inputs" (columnar format)')
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise RequestError(400, "'instances' must be a list of objects, one per example")
        _check_rows(len(instances), max_rows, "'instances'")
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(400, f"instances[{i}] must be an object mapping input "
                                        f"names to values, got {_show(instance)}")
            _check_names(instance, specs, f"instances[{i}]")
        inputs = {name: _column(name, [x[name] for x in instances], spec,
                                lambda i, name=name: f"instances[{i}][{name!r}]", True)
                  for name, spec in specs.items()}
        return Batch(signature_name, inputs, len(instances), row_format=True)
    columns = request["inputs"]
    if not isinstance(columns, dict):
        raise RequestError(400, "'inputs' must be an object mapping input names to lists "
                                "of values, one per example")
    _check_names(columns, specs, "'inputs'")
    for name in sorted(columns):
        if not isinstance(columns[name], list):
            raise RequestError(400, f"inputs[{name!r}] must be a list of values, one per "
                                    f"example, got {_show(columns[name])}")
    sizes = {name: len(column) for name, column in columns.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n} has {s}" for n, s in sorted(sizes.items()))
        raise RequestError(400, f"'inputs' have different batch sizes ({listed})")
    rows = next(iter(sizes.values()))
    _check_rows(rows, max_rows, "'inputs'")
    inputs = {name: _column(name, columns[name], spec,
                            lambda i, name=name: f"inputs[{name!r}][{i}]", True)
              for name, spec in specs.items()}
    return Batch(signature_name, inputs, rows)


def _jsonable(value: Any) -> Any:
    """Strings as UTF-8 text, else {"b64": ...} like TF Serving."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _texts(values: Any) -> Any:
    """Nested lists of bytes (an object array's tolist()) as text."""
    if values and isinstance(values[0], list):
        return [_texts(v) for v in values]
    try:
        return [v.decode("utf-8") for v in values]
    except (UnicodeDecodeError, AttributeError):
        return [_jsonable(v) for v in values]


def _output_value(array: np.ndarray) -> Any:
    """An output array (or row) in a form orjson writes: numbers stay NumPy,
    strings become (lists of) text."""
    if array.dtype == object:
        return _jsonable(array.item()) if array.ndim == 0 else _texts(array.tolist())
    if array.dtype.kind == "b" or array.ndim == 0:
        return array.tolist()
    return np.ascontiguousarray(array)


def v1_response(batch: Batch, outputs: Dict[str, np.ndarray]) -> bytes:
    """The V1 answer for a batch: rows ("predictions") or columns ("outputs")."""
    names = sorted(outputs)
    if batch.row_format:
        if len(names) == 1:  # TF Serving drops the name of a lone output
            predictions = [_output_value(row) for row in outputs[names[0]]]
        else:
            predictions = [{n: _output_value(outputs[n][i]) for n in names}
                           for i in range(batch.rows)]
        return orjson.dumps({"predictions": predictions}, option=_ORJSON_OPTIONS)
    if len(names) == 1:
        return orjson.dumps({"outputs": _output_value(outputs[names[0]])},
                            option=_ORJSON_OPTIONS)
    return orjson.dumps({"outputs": {n: _output_value(outputs[n]) for n in names}},
                        option=_ORJSON_OPTIONS)


# --------------------------------------------------------------------------
# V2


def _flatten(data: Any) -> Optional[list]:
    """Nested lists flattened row-major; None where they are ragged."""
    if not any(isinstance(d, list) for d in data):
        return data
    try:
        _nested_shape(data)
    except ValueError:
        return None
    return [leaf for _, leaf in _leaves(data)]


def _v2_tensor(i: int, tensor: Any, specs: Dict[str, Any], seen: set) -> Tuple[str, np.ndarray]:
    where = f"inputs[{i}]"
    if not isinstance(tensor, dict):
        raise RequestError(400, f"{where} must be an object with \"name\", \"shape\", "
                                f"\"datatype\" and \"data\", got {_show(tensor)}")
    missing = {"name", "shape", "datatype", "data"} - set(tensor)
    if missing:
        raise RequestError(400, f"{where}: missing field(s) {_names(missing)}")
    unknown = set(tensor) - {"name", "shape", "datatype", "data", "parameters"}
    if unknown:
        raise RequestError(400, f"{where}: unknown field(s) {_names(unknown)}")
    name = tensor["name"]
    if not isinstance(name, str) or name not in specs:
        raise RequestError(400, f"{where}: unknown input name {_show(name)}; the signature "
                                f"takes {_names(specs)}")
    if name in seen:
        raise RequestError(400, f"{where}: input {name!r} is given twice")
    seen.add(name)
    where = f"inputs[{i}] ({name!r})"
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(400, f"{where}: 'parameters' must be an object")
    if parameters and "binary_data_size" in parameters:
        raise RequestError(415, f"{where}: binary tensor data is not supported; send the "
                                "values in \"data\"")
    spec = specs[name]
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31
            for d in shape):
        raise RequestError(400, f"{where}: 'shape' must be a list of non-negative "
                                f"integers, got {_show(shape)}")
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is not None and (len(shape) != len(dims) or any(
            d is not None and d != s for d, s in zip(dims, shape))):
        raise RequestError(400, f"{where}: shape {shape} does not fit the signature's "
                                f"{_shape_text(dims)}")
    datatype = tensor["datatype"]
    dtype = _dtype_name(spec)
    accepted = _V2_ACCEPTED.get(dtype) or (
        _V2_FLOAT + _V2_INT if dtype.startswith("float") else _V2_INT)
    if datatype not in accepted:
        raise RequestError(400, f"{where}: datatype {_show(datatype)} cannot feed the "
                                f"signature's {dtype} input; use {' or '.join(accepted[:3])}")
    data = tensor["data"]
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: 'data' must be a list, got {_show(data)}")
    flat = _flatten(data)
    if flat is None:
        raise RequestError(400, f"{where}: 'data' holds ragged lists")
    size = math.prod(shape)
    if len(flat) != size:
        raise RequestError(400, f"{where}: 'data' holds {len(flat)} values, the shape "
                                f"{shape} needs {size}")
    convert = _converter(spec, b64_strings=False)
    values = []
    for j, value in enumerate(flat):
        try:
            values.append(convert(value))
        except ValueError as e:
            raise RequestError(400, f"{where}: data[{j}]: {e}, got {_show(value)}") from None
    return name, _array(values, spec, tuple(shape))


def parse_v2(request: Any, signatures: Dict[str, Any], max_rows: int) -> Batch:
    """A V2 infer body (parsed JSON) as a Batch for one of `signatures`."""
    if not isinstance(request, dict):
        raise RequestError(400, 'the request body must be a JSON object with "inputs"')
    unknown = set(request) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise RequestError(400, f"unknown request field(s) {_names(unknown)}; expected "
                                '"inputs", and optionally "id", "parameters", "outputs"')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, f"'id' must be a string, got {_show(request_id)}")
    parameters = request.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise RequestError(400, f"'parameters' must be an object, got {_show(parameters)}")
    signature_name = parameters.get("signature_name", DEFAULT_SIGNATURE)
    signature = _signature(signature_name, signatures, "parameters.signature_name")
    specs = signature.inputs
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise RequestError(400, "'inputs' must be a non-empty list of tensors "
                                '({"name", "shape", "datatype", "data"})')
    seen: set = set()
    inputs = dict(_v2_tensor(i, t, specs, seen) for i, t in enumerate(tensors))
    _check_names(inputs, specs, "'inputs'")
    sizes = {name: array.shape[0] if array.ndim else None for name, array in inputs.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n} has {s}" for n, s in sorted(sizes.items()))
        raise RequestError(400, f"'inputs' have different batch sizes (first dimension: "
                                f"{listed})")
    rows = next(iter(sizes.values()))
    _check_rows(rows or 0, max_rows, "'inputs'")
    requested = None
    if request.get("outputs") is not None:
        outputs = request["outputs"]
        if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise RequestError(400, "'outputs' must be a list of objects with a \"name\"")
        requested = [o["name"] for o in outputs]
        unknown = set(requested) - set(signature.outputs)
        if unknown:
            raise RequestError(400, f"'outputs': unknown output(s) {_names(unknown)}; the "
                                    f"signature returns {_names(signature.outputs)}")
    return Batch(signature_name, inputs, rows, request_id=request_id,
                 requested_outputs=requested)


def _v2_output(name: str, array: np.ndarray) -> Dict[str, Any]:
    if array.dtype == object:
        datatype = "BYTES"
        data = _texts(array.ravel().tolist()) if array.size else []
    else:
        datatype = _V2_OF_DTYPE.get(array.dtype.name, array.dtype.name.upper())
        data = np.ascontiguousarray(array).ravel() if array.dtype.kind != "b" \
            else array.ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def v2_response(batch: Batch, outputs: Dict[str, np.ndarray], model_name: str,
                version: int) -> bytes:
    names = batch.requested_outputs or sorted(outputs)
    body = {"model_name": model_name, "model_version": str(version),
            "parameters": {"signature_name": batch.signature_name},
            "outputs": [_v2_output(n, outputs[n]) for n in names]}
    if batch.request_id is not None:
        body["id"] = batch.request_id
    return orjson.dumps(body, option=_ORJSON_OPTIONS)


# --------------------------------------------------------------------------
# Metadata


def _tensor_info(spec) -> dict:
    """A TensorSpec as TF Serving's metadata writes a TensorInfo."""
    dtype = spec.dtype.as_datatype_enum
    from tensorflow.core.framework import types_pb2  # loaded with the model already

    info = {"dtype": types_pb2.DataType.Name(dtype)}
    if spec.shape.rank is None:
        info["tensor_shape"] = {"dim": [], "unknown_rank": True}
    else:
        info["tensor_shape"] = {
            "dim": [{"size": str(-1 if d is None else d), "name": ""}
                    for d in spec.shape.as_list()],
            "unknown_rank": False}
    return info


def v1_metadata(model_name: str, version: int, signatures: Dict[str, Any]) -> dict:
    """GET /v1/models/<name>/metadata, in TF Serving's layout."""
    signature_defs = {
        name: {"inputs": {k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
               "outputs": {k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
               "method_name": "tensorflow/serving/predict"}
        for name, sig in sorted(signatures.items())}
    return {"model_spec": {"name": model_name, "signature_name": "",
                           "version": str(version)},
            "metadata": {"signature_def": {"signature_def": signature_defs}}}


def _v2_tensor_metadata(name: str, spec) -> dict:
    dims = spec.shape.as_list() if spec.shape.rank is not None else []
    return {"name": name, "datatype": _V2_OF_DTYPE.get(_dtype_name(spec), "BYTES"),
            "shape": [-1 if d is None else d for d in dims]}


def v2_metadata(model_name: str, version: int, signatures: Dict[str, Any]) -> dict:
    """GET /v2/models/<name>: serving_default's tensors; every signature's under
    "parameters" (the signature a request names in its parameters)."""
    def tensors(specs):
        return [_v2_tensor_metadata(n, s) for n, s in sorted(specs.items())]

    default = signatures.get(DEFAULT_SIGNATURE) or next(iter(signatures.values()))
    return {"name": model_name, "versions": [str(version)],
            "platform": "tensorflow_savedmodel",
            "inputs": tensors(default.inputs), "outputs": tensors(default.outputs),
            "parameters": {"signatures": {
                name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
                for name, sig in sorted(signatures.items())}}}
