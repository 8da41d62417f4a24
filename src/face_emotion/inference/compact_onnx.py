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
(benchmarks/light_models.py measures the variants against fp32.)
"""

from __future__ import annotations

import numpy as np

# Smaller tensors stay float32: 4096 values (16 kB) is past any bias or BatchNorm vector of these
# networks.
MIN_ELEMENTS = 4096
# The browser's classifier: int8 for tensors of 2**17 values and more (the bundled classifier's
# last wide 1x1 convolutions, 69 % of its weights), float16 below.
BROWSER_INT8_MIN_ELEMENTS = 2**17


def compact_onnx(model: bytes, *, int8_min_elements: int | None = None, min_elements: int = MIN_ELEMENTS) -> bytes:
    """``model`` (a serialized ONNX file) with its float32 weights of ``min_elements`` values or more
    stored as float16, or as int8 from ``int8_min_elements`` values (None: no int8).

    Deterministic: the same bytes in give the same bytes out, so every server worker names the
    result by the same hash.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph_model = onnx.load_from_string(model)
    graph = graph_model.graph
    # A weight that is also a graph input may be replaced by the caller: it stays as it is.
    inputs = {i.name for i in graph.input}
    kept, prologue = [], []
    for init in graph.initializer:
        size = int(np.prod(init.dims)) if len(init.dims) else 1
        if init.data_type != TensorProto.FLOAT or size < min_elements or init.name in inputs:
            kept.append(init)
            continue
        weights = numpy_helper.to_array(init)
        name = init.name
        if int8_min_elements is None or size < int8_min_elements:
            kept.append(numpy_helper.from_array(weights.astype(np.float16), f"{name}__fp16"))
            prologue.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT,
                                             name=f"{name}__from_fp16"))
            continue
        quantized, scales = int8_per_channel(weights)
        kept.append(numpy_helper.from_array(quantized, f"{name}__int8"))
        kept.append(numpy_helper.from_array(scales, f"{name}__scale"))
        prologue.append(helper.make_node("Cast", [f"{name}__int8"], [f"{name}__float"], to=TensorProto.FLOAT,
                                         name=f"{name}__from_int8"))
        prologue.append(helper.make_node("Mul", [f"{name}__float", f"{name}__scale"], [name],
                                         name=f"{name}__scaled"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Constants first: ONNX requires nodes in topological order.
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(prologue + nodes)
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()


def int8_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales (broadcastable to ``weights``), one scale per index of axis 0
    (Conv's output channels; Gemm's rows)."""
    channels = weights.shape[0] if weights.ndim > 1 else 1
    flat = weights.reshape(channels, -1)
    largest = np.abs(flat).max(axis=1)
    scales = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(flat / scales[:, None]), -127, 127).astype(np.int8).reshape(weights.shape)
    return quantized, scales.reshape((channels,) + (1,) * (weights.ndim - 1) if weights.ndim > 1 else (1,))
