"""Smaller ONNX files for the browser: the same graph with its weights stored in fewer bytes.

A browser downloads the models before its first answer. Here every float32 weight tensor of at
least ``MIN_ELEMENTS`` values is stored as float16, and, when ``int8_min_elements`` is given, each
tensor of at least that many values as int8 instead, with one float32 scale per output channel
(symmetric, round to nearest). Each stored tensor is turned back into the float32 tensor of the
original name by a Cast (and, for int8, a Mul by its scales) of constants, which ONNX Runtime
folds when it opens the file: the network then computes in float32 as before, its weights
rounded once. Nothing else of the graph (nodes, names, inputs, outputs, metadata) changes, so
whatever reads the original file reads this one.

Why sizes decide: in the bundled EfficientNet-Lite0, turning one tensor at a time into int8 moved
the answers most for the early, narrow layers, and least per byte saved for the wide 1x1
convolutions at the end, which hold most of the weights; small tensors (biases) weigh nothing and
a rounded bias shifts every output of its channel, so they stay float32.
(benchmarks/light_models.py measures the variants against fp32; docs/first-visit.md.)

The file is rewritten at the protobuf wire level, not through the ``onnx`` package: the base
install (which serves the page) has ONNX Runtime but not ``onnx``. Only the graph's weight
records and its list of nodes change; every other byte is copied as it is.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from face_emotion.errors import FaceEmotionError

# Smaller tensors stay float32: 4096 values (16 kB) is past any bias or BatchNorm vector of these
# networks.
MIN_ELEMENTS = 4096
# The browser's classifier: int8 for tensors of 2**17 values and more (the bundled classifier's
# last wide 1x1 convolutions, 69 % of its weights), float16 below.
BROWSER_INT8_MIN_ELEMENTS = 2**17

# Field numbers and enums of onnx/onnx.proto that this rewrite touches.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT = 1, 5, 11
_VALUE_INFO_NAME = 1
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 4, 8, 9
_TENSOR_DATA_LOCATION = 14  # EXTERNAL data lives in another file: left alone
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 3, 4, 5
_ATTRIBUTE_NAME, _ATTRIBUTE_I, _ATTRIBUTE_TYPE = 1, 3, 20
_ATTRIBUTE_INT = 2
_FLOAT, _INT8, _FLOAT16 = 1, 3, 10
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class CompactError(FaceEmotionError, ValueError):
    """The bytes are not an ONNX model this rewrite can read."""

    code = "unreadable_model"


def compact_onnx(model: bytes, *, int8_min_elements: int | None = None, min_elements: int = MIN_ELEMENTS) -> bytes:
    """``model`` (a serialized ONNX file) with its float32 weights of ``min_elements`` values or more
    stored as float16, or as int8 from ``int8_min_elements`` values (None: no int8).

    Deterministic: the same bytes in give the same bytes out, so every server worker names the
    result by the same hash.
    """
    out = bytearray()
    found = False
    for field, wire, value, record in _fields(model):
        if field == _MODEL_GRAPH and wire == _LEN:
            found = True
            out += _record(_MODEL_GRAPH, _compact_graph(value, int8_min_elements, min_elements))
        else:
            out += record
    if not found:
        raise CompactError("no graph in this ONNX file")
    return bytes(out)


def _compact_graph(graph: bytes, int8_min_elements: int | None, min_elements: int) -> bytes:
    fields = list(_fields(graph))
    # A weight that is also a graph input may be replaced by the caller: it stays as it is.
    inputs = {_string(info, _VALUE_INFO_NAME) for f, w, info, _ in fields if f == _GRAPH_INPUT and w == _LEN}
    prologue, rest = bytearray(), bytearray()
    for field, wire, value, record in fields:
        if field != _GRAPH_INITIALIZER or wire != _LEN:
            rest += record
            continue
        tensor = _float_tensor(value)
        if tensor is None or tensor[0] in inputs or tensor[1].size < min_elements:
            rest += record
            continue
        name, weights = tensor
        if int8_min_elements is None or weights.size < int8_min_elements:
            rest += _record(_GRAPH_INITIALIZER, _tensor(f"{name}__fp16", _FLOAT16, weights.shape,
                                                        weights.astype("<f2").tobytes()))
            prologue += _record(_GRAPH_NODE, _cast(f"{name}__fp16", name))
            continue
        quantized, scales = int8_per_channel(weights)
        rest += _record(_GRAPH_INITIALIZER, _tensor(f"{name}__int8", _INT8, quantized.shape, quantized.tobytes()))
        rest += _record(_GRAPH_INITIALIZER, _tensor(f"{name}__scale", _FLOAT, scales.shape,
                                                    scales.astype("<f4").tobytes()))
        prologue += _record(_GRAPH_NODE, _cast(f"{name}__int8", f"{name}__float"))
        prologue += _record(_GRAPH_NODE, _node("Mul", [f"{name}__float", f"{name}__scale"], name, f"{name}__scaled"))
    # The new nodes first: ONNX wants nodes in an order where each input exists before it is used,
    # and repeated fields keep the order of their records.
    return bytes(prologue + rest)


def int8_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales (broadcastable to ``weights``), one scale per index of axis 0
    (Conv's output channels; Gemm's rows)."""
    channels = weights.shape[0] if weights.ndim > 1 else 1
    flat = weights.reshape(channels, -1)
    largest = np.abs(flat).max(axis=1)
    scales = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(flat / scales[:, None]), -127, 127).astype(np.int8).reshape(weights.shape)
    return quantized, scales.reshape((channels,) + (1,) * (weights.ndim - 1) if weights.ndim > 1 else (1,))


# ---------------------------------------------------------------- tensors and nodes
def _float_tensor(tensor: bytes) -> tuple[str, np.ndarray] | None:
    """(name, values) of a float32 TensorProto whose data is in the file; None for any other."""
    dims, data_type, name, raw, floats, external = [], 0, "", None, [], False
    for field, wire, value, _ in _fields(tensor):
        if field == _TENSOR_DIMS:
            dims += list(_packed_varints(value)) if wire == _LEN else [value]
        elif field == _TENSOR_DATA_TYPE and wire == _VARINT:
            data_type = value
        elif field == _TENSOR_NAME and wire == _LEN:
            name = bytes(value).decode("utf-8")
        elif field == _TENSOR_RAW_DATA and wire == _LEN:
            raw = bytes(value)
        elif field == _TENSOR_FLOAT_DATA:
            floats.append(np.frombuffer(bytes(value), "<f4") if wire == _LEN else
                          np.array([struct.unpack("<f", struct.pack("<I", value))[0]], np.float32))
        elif field == _TENSOR_DATA_LOCATION and wire == _VARINT:
            external = value == 1
    if data_type != _FLOAT or external or not name:
        return None
    values = np.frombuffer(raw, "<f4") if raw is not None else (np.concatenate(floats) if floats else None)
    size = int(np.prod(dims)) if dims else 1
    if values is None or values.size != size:
        return None
    return name, values.astype(np.float32).reshape(dims)


def _tensor(name: str, data_type: int, shape: tuple[int, ...], raw: bytes) -> bytes:
    out = bytearray()
    for dim in shape:
        out += _key(_TENSOR_DIMS, _VARINT) + _varint(dim)
    out += _key(_TENSOR_DATA_TYPE, _VARINT) + _varint(data_type)
    out += _record(_TENSOR_NAME, name.encode())
    out += _record(_TENSOR_RAW_DATA, raw)
    return bytes(out)


def _cast(source: str, target: str) -> bytes:
    to = _record(_ATTRIBUTE_NAME, b"to") + _key(_ATTRIBUTE_I, _VARINT) + _varint(_FLOAT)
    to += _key(_ATTRIBUTE_TYPE, _VARINT) + _varint(_ATTRIBUTE_INT)
    return _node("Cast", [source], target, f"{source}__cast") + _record(_NODE_ATTRIBUTE, to)


def _node(op_type: str, inputs: list[str], output: str, name: str) -> bytes:
    out = bytearray()
    for item in inputs:
        out += _record(_NODE_INPUT, item.encode())
    out += _record(_NODE_OUTPUT, output.encode())
    out += _record(_NODE_NAME, name.encode())
    out += _record(_NODE_OP_TYPE, op_type.encode())
    return bytes(out)


def _string(message: bytes, number: int) -> str:
    for field, wire, value, _ in _fields(message):
        if field == number and wire == _LEN:
            return bytes(value).decode("utf-8")
    return ""


# ---------------------------------------------------------------- protobuf wire format
def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, object, memoryview]]:
    """(field number, wire type, value, the record's bytes) of each record of a message: value is an
    int for varint and fixed-width records, a memoryview for length-delimited ones."""
    view = memoryview(data)
    at, end = 0, len(view)
    while at < end:
        start = at
        key, at = _read_varint(view, at)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, at = _read_varint(view, at)
        elif wire == _I64:
            value, at = int.from_bytes(view[at:at + 8], "little"), at + 8
        elif wire == _I32:
            value, at = int.from_bytes(view[at:at + 4], "little"), at + 4
        elif wire == _LEN:
            size, at = _read_varint(view, at)
            value, at = view[at:at + size], at + size
        else:
            raise CompactError(f"unsupported protobuf wire type {wire} (field {field})")
        if at > end or field == 0:
            raise CompactError("truncated or not an ONNX file")
        yield field, wire, value, view[start:at]


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(view) or shift > 63:
            raise CompactError("truncated or not an ONNX file")
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _packed_varints(view: memoryview) -> Iterator[int]:
    at = 0
    while at < len(view):
        value, at = _read_varint(view, at)
        yield value


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as protobuf writes it (ten bytes)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _record(field: int, payload: bytes | memoryview) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + bytes(payload)
