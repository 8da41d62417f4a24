"""inference/compact_onnx.py: the same network with its weights stored in fewer bytes."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model(seed: int = 0, *, float_data: bool = False) -> bytes:
    """x (1x8x12x12) -> Conv 64x8x3x3 (4608 weights) + bias -> Relu -> Conv 16x64x1x1 (1024: stays
    float32) -> y; the first kernel's channels differ in scale, as BatchNorm-folded ones do.
    ``float_data``: the large kernel's values in the float_data field instead of raw_data."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    big = (rng.normal(size=(64, 8, 3, 3)) * rng.uniform(0.01, 3.0, size=(64, 1, 1, 1))).astype(np.float32)
    bias = rng.normal(size=64).astype(np.float32)
    small = rng.normal(size=(16, 64, 1, 1)).astype(np.float32)
    big_tensor = (helper.make_tensor("big", TensorProto.FLOAT, big.shape, big.ravel().tolist()) if float_data
                  else numpy_helper.from_array(big, "big"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "big", "bias"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Conv", ["r", "small"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 12, 12])],
        [big_tensor, numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(small, "small")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"face_emotion_spec": "{}"})
    return model.SerializeToString()


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _weights(model: bytes) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(model).graph.initializer}


@pytest.mark.parametrize("float_data", [False, True])
@pytest.mark.parametrize("int8_min_elements", [None, 4096])
def test_compact_files_compute_the_same_network_with_rounded_weights(int8_min_elements, float_data):
    from face_emotion.inference.compact_onnx import compact_onnx

    original = _model(float_data=float_data)
    compact = compact_onnx(original, int8_min_elements=int8_min_elements)
    assert compact == compact_onnx(original, int8_min_elements=int8_min_elements)  # same bytes, same hash
    stored = _weights(compact)
    big = _weights(original)["big"]
    if int8_min_elements is None:
        assert stored["big__fp16"].dtype == np.float16
        rebuilt = stored["big__fp16"].astype(np.float32)
        assert np.abs(rebuilt - big).max() <= np.abs(big).max() * 2**-11  # fp16: 11 significant bits
    else:
        assert stored["big__int8"].dtype == np.int8 and stored["big__scale"].shape == (64, 1, 1, 1)
        rebuilt = stored["big__int8"].astype(np.float32) * stored["big__scale"]
        # Per channel: a narrow channel keeps its own precision (a tensor-wide scale would zero it).
        error = np.abs(rebuilt - big).reshape(64, -1).max(axis=1)
        assert np.all(error <= stored["big__scale"].reshape(64) / 2 + 1e-7)
    # Bias and the small kernel stay float32, bit for bit; inputs, outputs and metadata are kept.
    assert np.array_equal(stored["bias"], _weights(original)["bias"])
    assert np.array_equal(stored["small"], _weights(original)["small"])
    loaded = onnx.load_from_string(compact)
    assert [i.name for i in loaded.graph.input] == ["x"] and [o.name for o in loaded.graph.output] == ["y"]
    assert {p.key: p.value for p in loaded.metadata_props} == {"face_emotion_spec": "{}"}
    # 2 bytes saved per weight of the large kernel in fp16, 3 in int8, less a few hundred bytes of
    # Cast/Mul nodes and scales.
    saved = 4608 * (2 if int8_min_elements is None else 3)
    assert saved - 600 <= len(original) - len(compact) <= saved

    x = np.random.default_rng(1).normal(size=(2, 8, 12, 12)).astype(np.float32)
    expected = _run(original, x)
    # What the rounded weights compute in float32: the compact file must give exactly that (its
    # Casts and Muls are folded into float32 weights, the network is unchanged).
    with_rounded = _weights(original)
    with_rounded["big"] = rebuilt.astype(np.float32)
    np.testing.assert_allclose(_run(compact, x), _run(_replace_weights(original, with_rounded), x), atol=1e-5)
    spread = np.abs(expected).max()
    difference = np.abs(_run(compact, x) - expected).max()
    assert 0 < difference < (0.002 if int8_min_elements is None else 0.05) * spread


def _replace_weights(model: bytes, weights: dict[str, np.ndarray]) -> bytes:
    from onnx import numpy_helper

    loaded = onnx.load_from_string(model)
    del loaded.graph.initializer[:]
    loaded.graph.initializer.extend(numpy_helper.from_array(w, n) for n, w in weights.items())
    return loaded.SerializeToString()


def test_a_weight_that_is_also_a_graph_input_is_left_alone():
    from onnx import TensorProto, helper

    from face_emotion.inference.compact_onnx import compact_onnx

    loaded = onnx.load_from_string(_model())
    loaded.graph.input.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, [64, 8, 3, 3]))
    compact = compact_onnx(loaded.SerializeToString())
    assert "big" in _weights(compact) and "big__fp16" not in _weights(compact)


def test_bytes_that_are_not_an_onnx_model_are_refused():
    from face_emotion.inference.compact_onnx import CompactError, compact_onnx

    for junk in (b"", b"not a model at all", _model()[:1000]):
        with pytest.raises(CompactError):
            compact_onnx(junk)
