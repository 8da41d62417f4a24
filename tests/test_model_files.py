"""Model files a user could hand in: damaged, tampered with, or pickles. Refused, clearly, unexecuted.

Every test here runs with pickle and torch.load booby-trapped (they raise), and the pickles the tests
write carry a canary that would create a file if anything ever unpickled them.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from face_emotion.inference.backends import OnnxRuntimeBackend
from face_emotion.inference.loading import open_backend
from face_emotion.inference.predictor import Predictor
from face_emotion.models.files import SPEC_METADATA_KEY, ModelLoadError
from face_emotion.models.store import load_model, read_spec
from support.models import TINY_CLASSES


class Canary:
    """Unpickling this creates ``marker``: proof that something ran code from a model file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def nothing_is_unpickled(monkeypatch):
    import torch

    def trap(*args, **kwargs):
        raise AssertionError("a model file was about to be unpickled")

    monkeypatch.setattr(torch, "load", trap)
    monkeypatch.setattr(pickle, "load", trap)
    monkeypatch.setattr(pickle, "loads", trap)
    # (pickle.Unpickler stays: modules imported during a test subclass it. The canary covers it.)


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model, free to damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "run"))


def header_of(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8:8 + length])


def rewrite_spec(path: Path, change) -> None:
    """Keep the weights, replace the description in the safetensors header (what a tamperer would do)."""
    from safetensors.torch import load_file, save_file

    _, header = header_of(path)
    spec = json.loads(header["__metadata__"][SPEC_METADATA_KEY])
    change(spec)
    metadata = dict(header["__metadata__"], **{SPEC_METADATA_KEY: json.dumps(spec)})
    save_file(load_file(str(path)), str(path), metadata=metadata)


def refused(path, *fragments: str) -> str:
    """Every way into a model refuses ``path`` with a ModelLoadError naming the fragments."""
    messages = []
    for load in (lambda p: Predictor.load(p, detector="none"), open_backend, load_model):
        with pytest.raises(ModelLoadError) as caught:
            load(path)
        messages.append(str(caught.value))
    for message in messages:
        assert str(Path(path).name) in message or str(path) in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
    return messages[0]


def write_pickle_models(folder: Path, marker: Path) -> dict[str, Path]:
    """What torch.save and plain pickle write, each carrying the canary, under names users might pass."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"fc.weight": torch.zeros(3, 4)}, "hyper_parameters": Canary(marker)}
    files = {}
    for name in ("model.pt", "model.pth", "epoch=3-step=40.ckpt", "last.ckpt", "weights.bin"):
        torch.save(payload, folder / name)
        files[name] = folder / name
    files["raw.pkl"] = folder / "raw.pkl"
    files["raw.pkl"].write_bytes(pickle.dumps(payload, protocol=2))
    return files


# ---- damaged safetensors -----------------------------------------------------------------

def test_the_pristine_copy_loads(model_dir):
    predictor = Predictor.load(model_dir, detector="none")
    assert predictor.classes == TINY_CLASSES


@pytest.mark.parametrize("damage", ["huge header length", "header length past the end", "garbled header json",
                                    "header not an object", "eight bytes", "empty file"])
def test_a_damaged_safetensors_header_is_refused(model_dir, damage):
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    length, _ = header_of(path)
    if damage == "huge header length":
        data[:8] = struct.pack("<Q", 2**62)
    elif damage == "header length past the end":
        data[:8] = struct.pack("<Q", len(data) + 100)
    elif damage == "garbled header json":
        data[8 + length // 2: 8 + length // 2 + 16] = b"\x00\xff{[\"}:garbage!!"
    elif damage == "header not an object":
        data = bytearray(struct.pack("<Q", 2) + b"[]" + bytes(data[8 + length:]))
    elif damage == "eight bytes":
        data = data[:8]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    message = refused(path, "truncated or tampered")
    assert "Traceback" not in message


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_truncated_safetensors_file_is_refused(model_dir, keep):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    refused(path, "truncated or tampered")


def test_flipped_weight_bytes_that_make_nan_are_refused(model_dir):
    path = model_dir / "model.safetensors"
    length, header = header_of(path)
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    start = 8 + length + header[name]["data_offsets"][0]
    data = bytearray(path.read_bytes())
    data[start:start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(data))
    refused(path, "NaN or infinity")


# ---- a description that does not match the weights ------------------------------------------

@pytest.mark.parametrize("classes", [("anger", "happiness", "sadness", "fear"), ("anger", "happiness")])
def test_a_spec_altered_to_another_class_count_is_refused(model_dir, classes):
    path = model_dir / "model.safetensors"
    rewrite_spec(path, lambda spec: spec.update(classes=list(classes)))
    assert read_spec(path).classes == classes  # the header itself is well-formed...
    refused(path, "weights do not match")  # ...but it lies about the weights


def test_a_spec_altered_to_another_architecture_is_refused(model_dir):
    rewrite_spec(model_dir / "model.safetensors", lambda spec: spec.update(architecture="resnet50"))
    refused(model_dir / "model.safetensors", "weights do not match the described resnet50")


@pytest.mark.parametrize("change, fragment", [
    (lambda spec: spec.update(architecture="not_a_net"), "not_a_net"),
    (lambda spec: spec.pop("classes"), "bad model description"),
    (lambda spec: spec.update(format_version=99), "newer"),
    (lambda spec: spec["preprocess"].update(color_mode="infrared"), "color_mode"),
    (lambda spec: spec["preprocess"].update(image_size=10**6), "image_size"),
])
def test_a_spec_with_impossible_values_is_refused(model_dir, change, fragment):
    rewrite_spec(model_dir / "model.safetensors", change)
    refused(model_dir / "model.safetensors", fragment)


def test_a_spec_that_is_not_json_or_missing_is_refused(model_dir):
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(str(path))
    save_file(weights, str(path), metadata={SPEC_METADATA_KEY: "{not json"})
    refused(path, "bad model description")
    save_file(weights, str(path), metadata={"something": "else"})
    refused(path, "not written by face-emotion")


def test_the_readable_model_json_cannot_change_what_is_loaded(model_dir):
    """model.json is a copy for people; the description in the weights file's header is what counts."""
    spec = json.loads((model_dir / "model.json").read_text())
    spec["classes"] = ["x", "y", "z", "w"]
    spec["architecture"] = "resnet50"
    (model_dir / "model.json").write_text(json.dumps(spec))
    predictor = Predictor.load(model_dir, detector="none")
    assert predictor.classes == TINY_CLASSES and predictor.spec.architecture == "resnet18"


# ---- pickles ---------------------------------------------------------------------------------

def test_a_pickle_renamed_safetensors_is_refused_unopened(tmp_path):
    marker = tmp_path / "PWNED"
    files = write_pickle_models(tmp_path / "pickles", marker)
    for source in (files["model.pt"], files["raw.pkl"]):
        disguised = tmp_path / source.stem / "model.safetensors"
        disguised.parent.mkdir()
        shutil.copy(source, disguised)
        refused(disguised, "not a readable safetensors model")
        refused(disguised.parent, "not a readable safetensors model")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "epoch=3-step=40.ckpt", "last.ckpt", "weights.bin",
                                  "raw.pkl"])
def test_a_pickle_passed_as_the_model_is_refused_by_name(tmp_path, name):
    marker = tmp_path / "PWNED"
    path = write_pickle_models(tmp_path / "run", marker)[name]
    message = refused(path, "pickle", "never")
    assert "model.safetensors" in message  # says what to pass instead
    assert not marker.exists()


def test_a_run_folder_with_only_lightning_checkpoints_is_not_a_model(tmp_path):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    write_pickle_models(run / "checkpoints", marker)
    shutil.copy(run / "checkpoints" / "last.ckpt", run / "last.ckpt")
    refused(run, "no model at")
    assert not marker.exists()


@pytest.mark.parametrize("verb", ["serve", "predict", "evaluate", "export"])
def test_every_command_refuses_a_pickle_model_with_a_clear_message(tmp_path, verb, monkeypatch):
    from face_emotion.cli import main
    from face_emotion.server import runner

    started = []
    monkeypatch.setattr(runner, "run_gunicorn", lambda *args: started.append(args))
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    checkpoint = write_pickle_models(tmp_path / "run", marker)["last.ckpt"]
    image = tmp_path / "face.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (90, 90, 90)).save(image)
    data = tmp_path / "data"
    for label in TINY_CLASSES:
        (data / label).mkdir(parents=True)
        shutil.copy(image, data / label / "a.png")
    arguments = {
        "serve": ["serve", "--model", str(checkpoint), "--port", "5999"],
        "predict": ["predict", str(image), "--model", str(checkpoint), "--no-detect"],
        "evaluate": ["evaluate", str(data), "--model", str(checkpoint), "--no-detect"],
        "export": ["export", "--model", str(checkpoint), "--output", str(tmp_path / "out.onnx")],
    }[verb]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code != 0
    assert "pickle" in result.output and "last.ckpt" in result.output, result.output
    assert "Traceback" not in result.output
    assert not started and not marker.exists()
    assert not (tmp_path / "out.onnx").exists()


def test_serve_refuses_a_damaged_header_before_starting_workers(model_dir, monkeypatch):
    from face_emotion.cli import main
    from face_emotion.server import runner

    started = []
    monkeypatch.setattr(runner, "run_gunicorn", lambda *args: started.append(args))
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["serve", "--model", str(model_dir)])
    assert result.exit_code == 1 and not started
    assert "truncated or tampered" in result.output and "Traceback" not in result.output


# ---- ONNX files whose description lies ----------------------------------------------------

def tiny_onnx(path: Path, *, outputs: int = 3, image_size: int = 32, spec_classes=TINY_CLASSES,
              spec_image_size: int = 32, symbolic_output: bool = False, metadata: bool = True) -> Path:
    """A hand-built ONNX classifier: mean colour per channel -> a (3 x outputs) matrix -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from face_emotion.models.files import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, ONNX_SPEC_KEY
    from face_emotion.models.spec import ModelSpec, PreprocessSpec

    weights = numpy_helper.from_array(np.arange(3 * outputs, dtype=np.float32).reshape(3, outputs) / 10, "w")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    initializers = [weights, axes]
    nodes = [helper.make_node("ReduceMean", [ONNX_INPUT_NAME, "axes"], ["pooled"], keepdims=0)]
    if symbolic_output:
        # Gather the logits through data-dependent indices (NonZero), so that no shape inference can
        # know the class count: only running the graph tells.
        initializers.append(numpy_helper.from_array(np.ones(outputs, dtype=np.float32), "mask"))
        nodes += [
            helper.make_node("MatMul", ["pooled", "w"], ["all"]),
            helper.make_node("NonZero", ["mask"], ["nonzero"]),
            helper.make_node("Squeeze", ["nonzero"], ["index"]),
            helper.make_node("Gather", ["all", "index"], [ONNX_OUTPUT_NAME], axis=1),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["pooled", "w"], [ONNX_OUTPUT_NAME]))
    output_dims = ["batch", "classes" if symbolic_output else outputs]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(ONNX_INPUT_NAME, TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        [helper.make_tensor_value_info(ONNX_OUTPUT_NAME, TensorProto.FLOAT, output_dims)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if metadata:
        spec = ModelSpec(architecture="resnet18", classes=tuple(spec_classes), name="onnx-test",
                         preprocess=PreprocessSpec(image_size=spec_image_size))
        helper.set_model_props(model, {ONNX_SPEC_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("symbolic_output", [False, True])
def test_an_honest_onnx_file_loads_and_predicts(tmp_path, symbolic_output):
    from PIL import Image

    predictor = Predictor.load(tiny_onnx(tmp_path / "ok.onnx", symbolic_output=symbolic_output), detector="none")
    (face,) = predictor.predict(Image.new("RGB", (20, 20), (200, 10, 10)))
    assert set(face.probabilities) == set(TINY_CLASSES)
    assert sum(face.probabilities.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"outputs": 2}, "output has shape"),  # metadata: 3 classes; graph: 2 logits
    ({"outputs": 5}, "output has shape"),
    ({"spec_classes": ("a", "b", "c", "d")}, "output has shape"),
    ({"spec_image_size": 64}, "input has shape"),  # metadata: 64 px; graph: 32 px
    ({"outputs": 2, "symbolic_output": True}, "trial run failed"),  # only a run can tell
])
def test_an_onnx_file_whose_metadata_lies_is_refused(tmp_path, kwargs, fragment):
    path = tiny_onnx(tmp_path / "liar.onnx", **kwargs)
    with pytest.raises(ModelLoadError, match=fragment) as caught:
        OnnxRuntimeBackend(path)
    assert "description" in str(caught.value)
    with pytest.raises(ModelLoadError, match=fragment):
        Predictor.load(path, detector="none")


def test_an_onnx_file_without_description_or_truncated_is_refused(tmp_path):
    bare = tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ModelLoadError, match="no face-emotion description"):
        Predictor.load(bare, detector="none")
    whole = tiny_onnx(tmp_path / "whole.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        Predictor.load(cut, detector="none")
    pickled = tmp_path / "pickled.onnx"
    marker = tmp_path / "PWNED"
    shutil.copy(write_pickle_models(tmp_path / "p", marker)["model.pt"], pickled)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        Predictor.load(pickled, detector="none")
    assert not marker.exists()


def test_the_loaders_never_reach_for_pickle():
    """Belt and braces: the modules that open model files do not call torch.load or pickle at all."""
    from face_emotion.inference import backends, loading, onnx_cache
    from face_emotion.models import files, store

    for module in (files, store, backends, loading, onnx_cache):
        source = Path(module.__file__).read_text()
        assert "torch.load" not in source and "import pickle" not in source, module.__name__


@pytest.mark.parametrize("verb", ["serve", "predict", "evaluate", "export"])
@pytest.mark.parametrize("missing", ["empty-run", "gone.onnx", "gone.safetensors"])
def test_every_command_says_the_same_thing_for_a_missing_model(tmp_path, verb, missing, monkeypatch):
    """One resolver, one message: each verb names the path and how to get a model."""
    from face_emotion.cli import main
    from face_emotion.server import runner

    monkeypatch.setattr(runner, "run_gunicorn", lambda *args: pytest.fail("started without a model"))
    model = tmp_path / missing
    if missing == "empty-run":
        model.mkdir()
    image = tmp_path / "data" / "anger" / "a.png"
    image.parent.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (16, 16), (90, 90, 90)).save(image)
    arguments = {
        "serve": ["serve", "--model", str(model)],
        "predict": ["predict", str(image), "--model", str(model), "--no-detect"],
        "evaluate": ["evaluate", str(tmp_path / "data"), "--model", str(model), "--no-detect"],
        "export": ["export", "--model", str(model), "--output", str(tmp_path / "out.onnx")],
    }[verb]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if "no model at" in line]
    assert line.startswith(f"Error: no model at {model}")
    assert line.endswith("train one with `face-emotion train DATA_DIR --out RUN_DIR` and pass --model RUN_DIR")
